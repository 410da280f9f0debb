"""Pointing a COW file at another backing file (`ubdsim rebase`): the kernel's backing switch,
without booting, checked, and crash-safe.

What the kernel does (ubd_kern.c open_ubd_file(), cow_user.c write_cow_header() [6.1]):
booted with `ubd0=COW,NEW` where NEW is not the header's file, it switches only when NEW has
exactly the header's size AND mtime, and then rewrites the header at offset 0 with NEW's
absolute path (absolutize()), NEW's mtime and size, the old sector size and alignment --
always as a V3 header, which over a V1/V2 file lands on the old bitmap (the COW data is lost).
A backing file copied with plain `cp` has a new mtime, so the kernel refuses it
(`mtime mismatch`): there is no way to move a COW file to a copy of its backing file.

What rebase does instead:
- the same header values the kernel writes (path absolutized the same way, NEW's mtime and
  size, old sector size, alignment and cow_format), in the file's OWN layout: V1, V2, V3
  and the broken 64-bit V3 keep their version and offsets, so the bitmap stays where its
  readers look (a V1 header has only 256 bytes for the path: longer paths are refused);
- NEW must have the header's size, in every mode: the size fixes the bitmap's length and the
  data area's offset, and it is the disk the guest sees;
- safe mode (default) compares what the guest reads from the backing file -- the sectors the
  COW file does NOT hold -- between the old backing file and NEW, and refuses with the first
  differing byte offset. Holes in both files are equal without being read. With the old
  backing file gone (or no longer the header's size) there is nothing to compare with: that
  is refused unless `trust_new`. A new mtime alone is fine: it is what rebase is for;
- unsafe mode (`qemu-img rebase -u`) rewrites the pointer without reading any data;
- loops are refused: NEW is the COW file itself, or NEW's backing chain (ops/chain.py) leads
  back to it, or loops on its own (qemu-img rebase -u makes such chains without a word);
- a COW file another process holds fcntl-locked (a running 6.1 kernel) is refused with the
  holder's pid (ops/locks.py); NEW and the old backing file are read under shared locks.

Crash safety: the kernel writes the header with one pwrite() and no fsync; a crash can leave
it torn. Two ways were possible. A copy of the whole file (copy_file_range reflink + rename)
is atomic but is only cheap on reflink file systems: on ext4 it copies the data area (a sparse
1 TiB COW file would be written out in full), and the rename gives the file a new inode,
breaking hard links, ownership and anything holding it open. So rebase uses a journal:
`.NAME.ubdsim-rebase` beside the COW file (its real path, links followed), holding the old and
the new header bytes, the COW file's identity, NEW's identity and a sha256 of all that. It is
written and fsynced (file and directory) before the header is touched; the header is written
with one pwrite and fsynced; then the journal is removed. Any later `rebase` of that file
(or `recover()`) finds the journal first and finishes the job: it completes the new header
when NEW is still the file the journal names (same inode, size, mtime), otherwise restores
the old one. A journal whose checksum fails was cut short before the header was touched and
is just removed. So a kill at any point leaves the old header or the new one, after recovery.
"""
from __future__ import annotations

import errno as _errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..cow.header import ALL_VERSIONS, CowHeader, pack_header, read_header
from ..cow.image import CHUNK_BYTES, CowImage, data_extents, header_geometry, merge_intervals, read_fully
from ..cow.layouts import HEADER_READ_SIZE
from ..cow.paths import absolutize
from ..errors import (BackingError, BackingMissing, CowFormatError, RefusedFile, SizeMismatch,
                      UbdError)
from ..fileio import (create_private, fsync_directory, open_disk_file, open_own_regular,
                      pwrite_all, refuse_non_disk, shown)
from ..fileio.steps import Fault, FaultSteps
from .chain import Chain, walk_chain
from .locks import lock_file

Progress = Callable[[int, int], None]

JOURNAL_SUFFIX = ".ubdsim-rebase"
JOURNAL_KIND = "ubdsim rebase journal"
JOURNAL_MAX = 1 << 20


@dataclass(frozen=True)
class RebaseResult:
    """What a rebase did (the `--json` summary of `ubdsim rebase`)."""

    cow: str
    version: int
    layout: str
    old_backing: str             # the header's path before
    new_backing: str             # the header's path now: absolute, directory links resolved
    old_mtime: int
    new_mtime: int
    size: int
    unsafe: bool
    check: str                   # compared | same-file | trusted | skipped | none
    compared_bytes: int          # backing bytes compared (holes in both files not counted)
    changed: bool                # False: the header already said all this
    recovered: str | None        # completed | restored | discarded: an interrupted rebase's journal
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def journal_path(cow: str | bytes) -> str:
    """`.NAME.ubdsim-rebase` beside the file `cow` names (links followed: any name finds it)."""
    directory, name = os.path.split(os.path.realpath(os.fsdecode(cow)))
    return os.path.join(directory, f".{name}{JOURNAL_SUFFIX}")


# -- the journal ---------------------------------------------------------------------------------

def _journal_bytes(body: dict) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return json.dumps({"kind": JOURNAL_KIND, "body": body, "sha256": digest},
                      sort_keys=True).encode() + b"\n"


def _parse_journal(raw: bytes) -> dict | None:
    """The journal's body, or None when it is not a whole journal (cut short by a crash)."""
    try:
        record = json.loads(raw)
        body = record["body"]
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if record.get("kind") != JOURNAL_KIND or \
                hashlib.sha256(canonical.encode()).hexdigest() != record["sha256"]:
            return None
        old, new = bytes.fromhex(body["old"]), bytes.fromhex(body["new"])
        if not old or len(old) != len(new) or len(old) > HEADER_READ_SIZE:
            return None
        body["old"], body["new"] = old, new
        return body
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _read_own(fd: int) -> bytes:
    chunks, total = [], 0
    while total <= JOURNAL_MAX:
        piece = os.read(fd, 65536)
        if not piece:
            break
        chunks.append(piece)
        total += len(piece)
    return b"".join(chunks)


def _remove_journal(journal: str) -> None:
    os.unlink(journal)
    fsync_directory(os.path.dirname(journal))


def _new_still_there(body: dict) -> bool:
    """Is NEW still the file the journal's new header describes (inode, size, mtime)?"""
    try:
        st = os.stat(bytes.fromhex(body["backing"]))
    except (OSError, ValueError):
        return False
    return ((st.st_dev, st.st_ino) == (body["backing_dev"], body["backing_ino"])
            and _size_of_path(bytes.fromhex(body["backing"]), st) == body["backing_size"]
            and (int(st.st_mtime) & 0xFFFFFFFF) == body["backing_mtime"])


def _recover(fd: int, cow: str) -> str | None:
    """Finish or undo an interrupted rebase of the (locked) COW file `fd`; None if none was."""
    journal = journal_path(cow)
    jfd = open_own_regular(journal, "rebase journal")
    if jfd is None:
        return None
    try:
        raw = _read_own(jfd)
    finally:
        os.close(jfd)
    body = _parse_journal(raw)
    if body is None:
        # Cut short while it was written: the header is written only once the journal is
        # whole and on disk, so the header was never touched.
        _remove_journal(journal)
        return "discarded"
    st = os.fstat(fd)
    old, new = body["old"], body["new"]
    current = bytes(read_fully(fd, len(old), 0))
    ours = (st.st_dev, st.st_ino) == (body.get("cow_dev"), body.get("cow_ino"))
    mixed = ours and all(c in (o, n) for c, o, n in zip(current, old, new))
    if not mixed:
        raise RefusedFile(f"'{shown(cow)}' has a rebase journal '{shown(journal)}' that does not "
                          "belong to its current header (another file, or a header changed since): "
                          "not applying it; remove it if you know it is stale", errno=_errno.EEXIST)
    complete = _new_still_there(body)
    target = new if complete else old
    if current != target:
        pwrite_all(fd, target, 0)
    os.fsync(fd)                 # the interrupted run may have died before its own fsync
    _remove_journal(journal)
    return "completed" if complete else "restored"


def recover(cow: str) -> str | None:
    """Recover an interrupted rebase of `cow` (completed, restored or discarded), or None."""
    fd = open_disk_file(cow, os.O_RDWR, "COW file")
    try:
        lock_file(fd, shown(cow), exclusive=True)
        return _recover(fd, cow)
    finally:
        os.close(fd)


def _write_header(fd: int, cow: str, old: bytes, new: bytes, body: dict, step: FaultSteps) -> None:
    """Journal, header, fsync, journal gone: each mutation preceded by step() (kill points)."""
    journal = journal_path(cow)
    directory = os.path.dirname(journal)
    payload = _journal_bytes({**body, "old": old.hex(), "new": new.hex()})
    step()
    try:
        jfd = create_private(journal, 0o600)
    except OSError as err:
        raise UbdError(f"cannot create the rebase journal '{shown(journal)}' (rebase needs write "
                       f"access to the COW file's directory): {err.strerror}; nothing changed",
                       errno=err.errno) from None
    try:
        try:
            step()
            pwrite_all(jfd, payload, 0)
            step()
            os.fsync(jfd)
        finally:
            os.close(jfd)
        step()
        fsync_directory(directory)
    except OSError as err:
        _remove_journal(journal)
        raise UbdError(f"cannot write the rebase journal '{shown(journal)}': {err.strerror}; "
                       "nothing changed", errno=err.errno) from None
    try:
        step()
        pwrite_all(fd, new, 0)
        step()
        os.fsync(fd)
    except OSError as err:
        try:
            pwrite_all(fd, old, 0)
            os.fsync(fd)
        except OSError:
            raise UbdError(f"writing the header of '{shown(cow)}' failed ({err.strerror}) and so "
                           "did restoring it: its journal is kept; run 'ubdsim rebase' on it again "
                           "to recover", errno=err.errno) from None
        _remove_journal(journal)
        raise UbdError(f"writing the header of '{shown(cow)}' failed: {err.strerror}; the old "
                       "header was put back", errno=err.errno) from None
    step()
    os.unlink(journal)
    step()
    fsync_directory(directory)


# -- checks --------------------------------------------------------------------------------------

def _size_of_path(path: bytes | str, st: os.stat_result) -> int:
    if not stat.S_ISBLK(st.st_mode):
        return st.st_size
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _size_of_fd(fd: int) -> int:
    st = os.fstat(fd)
    return os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size


def _refuse_loops(cow: str, new: str, cow_st: os.stat_result, new_st: os.stat_result) -> Chain:
    """NEW's chain, after refusing NEW = COW, a chain through COW, and a chain that loops."""
    if os.path.samestat(cow_st, new_st):
        raise RefusedFile(f"'{shown(new)}' is the COW file '{shown(cow)}' itself: a COW file "
                          "over itself is a loop", errno=_errno.ELOOP)
    chain = walk_chain(new)
    at = chain.contains(cow_st)
    if at is not None:
        path = " -> ".join(f"'{shown(layer.path)}'" for layer in chain.layers[:at + 1])
        raise RefusedFile(f"the backing chain of '{shown(new)}' leads back to '{shown(cow)}' "
                          f"({path}): rebasing onto it would make a loop", errno=_errno.ELOOP)
    if chain.loop:
        raise RefusedFile(f"'{shown(new)}' is in a looping backing chain ({chain.problem}): "
                          "refusing to rebase onto it", errno=_errno.ELOOP)
    return chain


def _absolute(new: str, header: CowHeader) -> bytes:
    """absolutize() for the header's own path field (V1: 256 bytes; V2/V3: 4096)."""
    room = header.layout.path_len
    try:
        return absolutize(os.fsencode(new), room)
    except UbdError as err:
        if err.msg_id in ("cow.name_too_long", "cow.absolutize_fit"):
            raise RefusedFile(f"the backing path '{shown(new)}' does not fit the {header.layout.name} "
                              f"header's {room}-byte path field (at most {room - 1} bytes once "
                              "made absolute); rebase keeps the header's version", errno=err.errno
                              ) from None
        raise BackingError(f"new backing file '{shown(new)}': {err.message}", errno=err.errno) from None


def _first_difference(image: CowImage, old_fd: int, new_fd: int, chunk: int,
                      progress: Progress | None) -> tuple[int | None, int]:
    """(first differing device offset among the sectors the COW does not hold, bytes compared).

    Only data extents of either file are read: where both files are holes both read zeros."""
    ss, size = image.geometry.sectorsize, image.geometry.size
    a = memoryview(bytearray(chunk))
    b = memoryview(bytearray(chunk))
    compared = 0
    for extent in image.extents():
        if extent.marked:
            continue
        lo, hi = extent.start * ss, min((extent.start + extent.count) * ss, size)
        for start, end in merge_intervals(data_extents(old_fd, lo, hi), data_extents(new_fd, lo, hi)):
            for offset in range(start, end, chunk):
                n = min(chunk, end - offset)
                read_fully(old_fd, n, offset, a[:n])
                read_fully(new_fd, n, offset, b[:n])
                x, y = np.frombuffer(a[:n], dtype=np.uint8), np.frombuffer(b[:n], dtype=np.uint8)
                if not np.array_equal(x, y):
                    return offset + int(np.flatnonzero(x != y)[0]), compared
                compared += n
                if progress:
                    progress(offset + n, size)
        if progress:
            progress(hi, size)
    return None, compared


def _read_cow_header(fd: int, cow: str) -> CowHeader:
    size = os.fstat(fd).st_size
    try:
        return read_header(read_fully(fd, min(HEADER_READ_SIZE, size), 0), ALL_VERSIONS)
    except CowFormatError as err:
        raise type(err)(f"'{shown(cow)}': {err.message}", errno=err.errno, msg_id=err.msg_id,
                        args=err.msg_args) from None


# -- the operation -------------------------------------------------------------------------------

def rebase(cow: str, new: str, *, unsafe: bool = False, trust_new: bool = False,
           fault: Fault | None = None, progress: Progress | None = None,
           chunk_bytes: int = CHUNK_BYTES) -> RebaseResult:
    """Rewrite `cow`'s header to name `new` (its absolute path, mtime and size), see above.

    Raises UbdError subclasses (nothing changed) for every refusal. `fault(n)` is called
    before each mutating step n (tests kill the process there).
    """
    started = time.monotonic()
    if not new:
        raise BackingMissing("the new backing file name is empty: a COW file needs a backing file")
    fd = open_disk_file(cow, os.O_RDWR, "COW file")
    image = None
    extra_fds: list[int] = []
    try:
        # The lock first: nothing is read or written while a kernel holds the file. (fcntl
        # locks go with ANY close of the file in this process, so no other fd of the COW
        # file is opened and closed while we work: the bitmap map below keeps its own.)
        lock_file(fd, shown(cow), exclusive=True)
        recovered = _recover(fd, cow)
        header = _read_cow_header(fd, cow)
        geometry = header_geometry(header)
        cow_st = os.fstat(fd)
        try:
            new_st = os.stat(new)
        except FileNotFoundError:
            raise BackingMissing(f"new backing file '{shown(new)}' does not exist") from None
        except OSError as err:
            raise BackingError(f"cannot stat new backing file '{shown(new)}': {err.strerror}",
                               errno=err.errno) from None
        chain = _refuse_loops(cow, new, cow_st, new_st)
        refuse_non_disk(new_st, new, "new backing file")
        new_fd = open_disk_file(new, os.O_RDONLY, "new backing file")
        extra_fds.append(new_fd)
        lock_file(new_fd, shown(new), exclusive=False)
        new_st = os.fstat(new_fd)
        new_size = _size_of_fd(new_fd)
        new_mtime = int(new_st.st_mtime)
        absolute = _absolute(new, header)
        if new_size != header.size:
            raise SizeMismatch(f"new backing file '{shown(new)}' has {new_size} bytes, the COW "
                               f"header says {header.size}: the guest would see a different disk "
                               "(and the bitmap and data area are laid out for the header's size)",
                               args=(header.size, new_size))
        warnings: list[str] = []
        if chain.layers[0].is_cow:
            warnings.append(f"'{shown(new)}' is itself a COW file: the kernel reads a backing "
                            "file raw, so the guest sees its header and bitmap as disk bytes")
        if header.cow_format != 0:
            warnings.append(f"cow_format is {header.cow_format} (kept); the 6.1 kernel's own "
                            "switch writes 0")
        updated = replace(header, backing_file=absolute, mtime=new_mtime & 0xFFFFFFFF,
                          size=new_size, notes=())
        result = dict(cow=cow, version=header.version, layout=header.layout.name,
                      old_backing=header.backing_path, new_backing=os.fsdecode(absolute),
                      old_mtime=header.mtime, new_mtime=updated.mtime, size=new_size,
                      unsafe=unsafe, recovered=recovered, warnings=warnings)
        if updated == header:
            return RebaseResult(**result, check="none", compared_bytes=0, changed=False,
                                seconds=round(time.monotonic() - started, 6))
        compared = 0
        if unsafe:
            check = "skipped"
        else:
            image = CowImage(cow, fd, header, geometry, writable=False)
            check, compared = _check_content(image, header, cow_st, new, new_st, new_fd, trust_new,
                                             warnings, extra_fds, chunk_bytes, progress)
        old_bytes = pack_header(header)
        current = bytes(read_fully(fd, len(old_bytes), 0))
        new_bytes = pack_header(updated)
        body = {"cow_dev": cow_st.st_dev, "cow_ino": cow_st.st_ino, "backing": absolute.hex(),
                "backing_dev": new_st.st_dev, "backing_ino": new_st.st_ino,
                "backing_size": new_size, "backing_mtime": updated.mtime}
        # The header as it is on disk (padding bytes included) is what a restore puts back.
        _write_header(fd, cow, current, new_bytes, body, FaultSteps(fault))
        return RebaseResult(**result, check=check, compared_bytes=compared, changed=True,
                            seconds=round(time.monotonic() - started, 6))
    finally:
        for extra in extra_fds:
            os.close(extra)
        if image is not None:
            image.close()        # closes fd too
        else:
            os.close(fd)


def _check_content(image: CowImage, header: CowHeader, cow_st: os.stat_result, new: str,
                   new_st: os.stat_result,
                   new_fd: int, trust_new: bool, warnings: list[str], extra_fds: list[int],
                   chunk: int, progress: Progress | None) -> tuple[str, int]:
    """Safe mode: is what the guest reads from the backing file the same through NEW?"""
    old = header.backing_path
    why = None
    try:
        old_st = os.stat(old)
    except OSError as err:
        why = f"the old backing file '{shown(old)}' is gone ({err.strerror})"
    else:
        if os.path.samestat(old_st, cow_st):
            why = (f"the COW file names itself as its backing file ('{shown(old)}', a loop): "
                   "there is no old disk to compare with")
        elif os.path.samestat(old_st, new_st):
            if (int(old_st.st_mtime) & 0xFFFFFFFF) == header.mtime:
                return "same-file", 0       # same inode, unchanged since the header was written
            why = (f"'{shown(new)}' is the old backing file itself, changed since the header was "
                   f"written (mtime {header.mtime} -> {int(old_st.st_mtime)}): there is no "
                   "original left to compare it with")
        else:
            try:
                old_fd = open_disk_file(old, os.O_RDONLY, "old backing file")
            except RefusedFile as err:
                why = str(err)
            else:
                extra_fds.append(old_fd)
                lock_file(old_fd, shown(old), exclusive=False)
                old_size = _size_of_fd(old_fd)
                if old_size != header.size:
                    why = (f"the old backing file '{shown(old)}' has {old_size} bytes, not the "
                           f"header's {header.size}: it is not the disk the COW file was made over")
                else:
                    if (int(os.fstat(old_fd).st_mtime) & 0xFFFFFFFF) != header.mtime:
                        warnings.append(f"the old backing file '{shown(old)}' has another mtime "
                                        "than the header says: compared with its current content")
                    offset, compared = _first_difference(image, old_fd, new_fd, chunk, progress)
                    if offset is not None:
                        ss = header.sectorsize
                        raise BackingError(
                            f"'{shown(new)}' differs from the old backing file '{shown(old)}' at "
                            f"byte {offset} (sector {offset // ss}), which the COW file does not "
                            "hold: the guest would see different data; nothing changed "
                            "(-u rewrites the header without this check)",
                            errno=_errno.EINVAL, args=(offset,))
                    return "compared", compared
    if trust_new:
        warnings.append(f"content not checked: {why}; trusted (--trust-new)")
        return "trusted", 0
    raise BackingError(f"cannot check '{shown(new)}': {why}; use --trust-new if you know it "
                       "holds the same data (or -u to rewrite the header without any check)",
                       errno=_errno.ENOENT)


__all__ = ["RebaseResult", "journal_path", "rebase", "recover"]
