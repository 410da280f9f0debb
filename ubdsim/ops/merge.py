"""Merging a COW file with its backing file (`ubdsim moo`), better than uml_moo at the edges.

What uml_moo (uml-utilities 20070815) does, observed and read from its source, and what
ubdsim does instead:
- It merges `size / sectorsize` sectors: a final partial sector is dropped (a 4194404-byte
  backing file becomes a 4194304-byte image). ubdsim merges every byte of `size`.
- It copies one 512-byte sector per pread/pwrite and writes the new file through creat()
  in place (a crash leaves half an image under the final name). ubdsim has the host kernel
  copy (copy_file_range, ops/merge_fast.py), visits only the backing file's data extents and
  the bitmap's data extents, writes only non-zero blocks (the new file is sparse, with the
  holes uml_moo's output has), fsyncs, and renames into place atomically.
- It tests bits as 64-bit words of a malloc'ed bitmap of exactly `bitmap_len` bytes: with
  the V1/V2 rounding bug the bits of the last `sectors % 8` sectors are read from past the
  buffer (heap bytes). ubdsim reads those sectors from the backing file, as the kernel's
  cow_sizes() view implies (no bit = clean); `ubdsim info` reports the hazard.
- `-d` merges in place; uml_moo checks the backing file's mtime first, so a second run after
  a crash refuses (the first run changed the mtime). ubdsim writes a small journal next to
  the COW file before the first write and removes it after the final fsync: a re-run finds it
  and resumes (re-writing marked sectors is idempotent).
- Neither the size/mtime check nor any lock stops uml_moo from merging a COW file that a
  running kernel holds; ubdsim takes fcntl locks and refuses (see ops/locks.py).

Other COW files over the same backing file: a `-d` merge rewrites the backing file's bytes
and mtime, so every OTHER COW file over it stops matching (its guest's disk is gone: the
kernel and every tool here refuse it). `cows_sharing()` finds them before anything is
written: the COW files in the COW file's directory (and in any `also_check` directory) whose
header names the same file (device+inode) and still matches its mtime. `merge_in_place()`
and `merge_chain_down()` take a `confirm` callable that is shown them, after every other
check and before the first write; when it says no, nothing is written (`moo -d` asks on a
terminal, refuses elsewhere unless --yes).

Chains (`--chain`, ubdsim's own: UML cannot stack, device/chain.py): a COW file whose backing
file is a COW file, and so on down to a raw file. `merge_chain_new` writes the whole chain's
device (what `ubdsim run --chain` shows a guest) to a new file; `merge_chain_down` commits
the top layer into the COW layer below it (its data area and bitmap), rebuilt beside itself
and renamed into place (fileio.rewrite_beside), so a crash leaves the old lower file or the
new one. Every link is checked first (size and mtime against the header above it; loops and
missing files refused with one line).
"""
from __future__ import annotations

import errno as _errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from ..cow import bitmap as bits
from ..cow.create import backing_size
from ..fileio import (create_private, fsync_directory, new_file_beside, open_disk_file,
                      open_own_regular, pwrite_all, refuse_non_disk, rewrite_beside, shown)
from ..cow.image import CHUNK_BYTES, CowImage, data_extents, merge_intervals, read_fully
from ..errors import (BackingError, BackingMissing, DeviceIOError, MtimeMismatch, RefusedFile,
                      SizeMismatch, UbdError)
from . import merge_fast
from .merge_fast import ZERO_BLOCK
from .inspect import backing_identity, files_in, peek_cow
from .locks import lock_file, refuse_if_locked

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MergeResult:
    """What a merge did (the `--json` summary of `ubdsim moo`)."""

    cow: str
    backing: str
    output: str                  # the new file, or the backing file for an in-place merge
    in_place: bool
    resumed: bool                # an in-place merge that found its journal from a crashed run
    size: int                    # bytes of the merged image
    backing_size: int            # bytes of the backing file (smaller for a 2.4-grown COW file)
    sectors: int
    sectors_from_cow: int
    sectors_from_backing: int
    bytes_written: int
    seconds: float
    chain: list[str] = field(default_factory=list)   # --chain: the layers, top first
    invalidated: list[str] = field(default_factory=list)   # -d: other COW files it broke

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SharedBacking:
    """The other COW files over the file a `-d` merge writes into, found before it writes."""

    cow: str
    backing: str                 # the file the merge writes into
    directories: list[str]       # where it looked: the COW file's own, then also_check
    others: list[str]            # name the same file (device+inode), header mtime matches it:
                                 # the merge invalidates them
    stale: list[str] = field(default_factory=list)        # name it, already do not match
    unreadable: list[str] = field(default_factory=list)   # could not be read: not known

    def as_dict(self) -> dict:
        return asdict(self)


Confirm = Callable[[SharedBacking], bool]


class SharedBackingRefused(RefusedFile):
    """A `-d` merge not made because other COW files over the backing file still match it."""


def named_few(paths: Sequence[str], few: int = 3) -> str:
    """'a', 'b', 'c' and 247 more."""
    names = ", ".join(f"'{shown(p)}'" for p in paths[:few])
    return names + (f" and {len(paths) - few} more" if len(paths) > few else "")


def cows_sharing(cow: str, backing: str, also_check: Sequence[str] = ()) -> SharedBacking:
    """The COW files other than `cow` in `cow`'s directory and in `also_check` whose header
    names `backing` (the same device and inode, whatever the spelling), split into those that
    still match its mtime (a merge into it invalidates them) and those already stale."""
    target = os.stat(backing)
    own = os.stat(cow)
    directories: list[str] = []
    real: set[str] = set()
    for directory in (os.path.dirname(cow) or ".", *also_check):
        if os.path.realpath(directory) not in real:
            real.add(os.path.realpath(directory))
            directories.append(directory)
    seen = {(own.st_dev, own.st_ino), (target.st_dev, target.st_ino)}
    cache: dict[str, object] = {}
    others: list[str] = []
    stale: list[str] = []
    unreadable: list[str] = []
    for directory in directories:
        for path in files_in(directory):
            found, why = peek_cow(path)
            if found is None:
                if why is not None and not why.startswith("COW magic"):
                    unreadable.append(path)
                continue
            if (found.st.st_dev, found.st.st_ino) in seen:
                continue
            names = backing_identity(found.header.backing_path, cache)
            if not isinstance(names, os.stat_result) or not os.path.samestat(names, target):
                continue
            seen.add((found.st.st_dev, found.st.st_ino))
            matches = (int(target.st_mtime) & 0xFFFFFFFF) == found.header.mtime
            (others if matches else stale).append(path)
    return SharedBacking(cow=cow, backing=backing, directories=directories, others=others,
                         stale=stale, unreadable=unreadable)


def _confirmed(confirm: Confirm | None, cow: str, target: str,
               also_check: Sequence[str]) -> list[str]:
    """Ask `confirm` about the other COW files over `target` (when there are any); raise
    SharedBackingRefused when it says no. Returns the COW files the merge will invalidate."""
    if confirm is None:
        return []
    shared = cows_sharing(cow, target, also_check)
    if shared.others and not confirm(shared):
        n = len(shared.others)
        raise SharedBackingRefused(
            f"not merged: {n} other COW file{'s' if n != 1 else ''} over '{shown(target)}' "
            f"still match{'es' if n == 1 else ''} it ({named_few(shared.others)}): a merge "
            "into it rewrites the disk under them (their guests' disks are lost); nothing was "
            "written (use --yes to merge anyway)", errno=_errno.EBUSY)
    return shared.others


def journal_path(cow_path: str) -> str:
    """The in-place merge's journal: a hidden file next to the COW file."""
    directory, name = os.path.split(os.path.abspath(cow_path))
    return os.path.join(directory, f".{name}.ubdsim-merge")


def check_backing(image: CowImage, backing: str, *, resume_ok: bool = False) -> int:
    """The backing file's size, after refusing one that is missing or does not match the header.

    Texts follow uml_moo's `Size mismatch (%ld vs %ld) of COW header vs backing file "%s"`
    (header value first). `resume_ok` accepts an mtime mismatch (a journaled in-place merge).
    A COW file that names itself as its backing file is refused: `-d` would write its data
    over its own header and bitmap.
    """
    try:
        st = os.stat(backing)
    except FileNotFoundError:
        raise BackingMissing(f'backing file "{shown(backing)}" does not exist') from None
    except OSError as err:
        raise BackingError(f'cannot stat backing file "{shown(backing)}": {err.strerror}',
                           errno=err.errno) from None
    if os.path.samestat(st, os.fstat(image.fd)):
        raise RefusedFile(f"'{shown(image.path)}' names itself as its backing file "
                          f'("{shown(backing)}"): a loop, nothing to merge it with',
                          errno=_errno.ELOOP)
    refuse_non_disk(st, backing, "backing file")
    header = image.header
    actual = backing_size(os.fsencode(backing))
    # [resize] a COW file grown by the 2.4 patch is a larger disk over this backing file:
    # merge it (into the grown image) as profile 2.4 would open it. uml_moo and 6.1 refuse it.
    if actual != header.size and not image.grown_over(actual):
        raise SizeMismatch(f'Size mismatch ({header.size} vs {actual}) of COW header vs backing '
                           f'file "{shown(backing)}"', args=(header.size, actual))
    mtime = int(st.st_mtime)
    if (mtime & 0xFFFFFFFF) != header.mtime and not resume_ok:
        raise MtimeMismatch(f'mtime mismatch ({header.mtime} vs {mtime}) of COW header vs backing '
                            f'file "{shown(backing)}"', args=(header.mtime, mtime))
    return actual


def write_nonzero(fd: int, data: memoryview, offset: int, block: int = ZERO_BLOCK) -> int:
    """pwrite the blocks of `data` that are not all zero; returns bytes written.

    Blocks are counted from `offset` rounded down to `block`, so holes line up with the
    file system's blocks whatever the chunk alignment.
    """
    array = np.frombuffer(data, dtype=np.uint8)
    if not array.any():
        return 0
    lead = offset % block
    if lead == 0 and len(array) % block == 0:
        nonzero = array.reshape(-1, block).any(axis=1)
    else:
        padded = np.zeros(-(-(lead + len(array)) // block) * block, dtype=np.uint8)
        padded[lead:lead + len(array)] = array
        nonzero = padded.reshape(-1, block).any(axis=1)
    written = 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], nonzero.view(np.int8), [0]))))
    for first, last in zip(edges[::2], edges[1::2]):
        lo = max(int(first) * block - lead, 0)
        hi = min(int(last) * block - lead, len(array))
        written += pwrite_all(fd, data[lo:hi], offset + lo)
    return written



def _marked_byte_ranges(image: CowImage, first: int = 0) -> Iterator[tuple[int, int]]:
    """Device byte ranges of the marked sectors from sector `first` on."""
    ss, size = image.geometry.sectorsize, image.geometry.size
    for start, count in image.marked_runs(first):
        yield start * ss, min((start + count) * ss, size)


def merge_new(cow: str, output: str, *, backing: str | None = None, force: bool = False,
              chunk_bytes: int = CHUNK_BYTES, progress: Progress | None = None,
              sync: bool = True) -> MergeResult:
    """Write the merged image to the new file `output` (uml_moo COW NEWFILE); `sync=False`
    publishes it without an fsync (moo -t unsafe: uml_moo never syncs either)."""
    started = time.monotonic()
    with CowImage.open(cow) as image:
        lock_file(image.fd, shown(cow), exclusive=False)
        backing_path = backing if backing is not None else image.header.backing_path
        backing_bytes = check_backing(image, backing_path)
        bfd = open_disk_file(backing_path, os.O_RDONLY, "backing file")
        try:
            lock_file(bfd, shown(backing_path), exclusive=False)
            refuse_output(output, force, (cow, backing_path))
            size = image.geometry.size
            written = 0
            with named_write_errors(output), \
                    new_file_beside(output, exclusive=False, sync=sync) as ofd:
                exact_from = 0           # the fast path's end: the exact loop does the rest
                if merge_fast.fits(image, bfd):
                    exact_from = merge_fast.mapped_end(image, backing_bytes)
                    written += merge_fast.copy_merged(image, bfd, ofd, exact_from, progress)
                buf = memoryview(bytearray(chunk_bytes))
                extents = merge_intervals(
                    data_extents(bfd, exact_from, size),
                    _marked_byte_ranges(image, exact_from // image.geometry.sectorsize))
                for lo, hi in extents:
                    for offset in range(lo, hi, chunk_bytes):
                        n = min(chunk_bytes, hi - offset)
                        image.read_into(buf[:n], offset, bfd)
                        written += write_nonzero(ofd, buf[:n], offset)
                        if progress:
                            progress(offset + n, size)
                os.ftruncate(ofd, size)
        finally:
            os.close(bfd)
        marked = image.count_marked()
        return MergeResult(cow=cow, backing=backing_path, output=output, in_place=False,
                           resumed=False, size=size, backing_size=backing_bytes, sectors=image.sectors, sectors_from_cow=marked,
                           sectors_from_backing=image.sectors - marked, bytes_written=written,
                           seconds=round(time.monotonic() - started, 6))


def merge_in_place(cow: str, *, backing: str | None = None, chunk_bytes: int = CHUNK_BYTES,
                   progress: Progress | None = None, confirm: Confirm | None = None,
                   also_check: Sequence[str] = ()) -> MergeResult:
    """Write the COW file's marked sectors into the backing file (uml_moo -d COW).

    Crash-safe to re-run: a journal naming the backing file (device, inode, size, header
    mtime) is fsynced before the first write and removed after the backing file's fsync.
    `confirm` (None: not asked) is shown the other COW files that still match the backing
    file (cows_sharing()), after every check and before the journal or any byte is written.
    """
    started = time.monotonic()
    with CowImage.open(cow) as image:
        lock_file(image.fd, shown(cow), exclusive=False)
        backing_path = backing if backing is not None else image.header.backing_path
        journal = journal_path(cow)
        resumed = _journal_matches(journal, image, backing_path)
        backing_bytes = check_backing(image, backing_path, resume_ok=resumed)
        bfd = open_disk_file(backing_path, os.O_RDWR, "backing file")
        try:
            lock_file(bfd, shown(backing_path), exclusive=True)
            invalidated = _confirmed(confirm, cow, backing_path, also_check)
            if not resumed:
                _write_journal(journal, image, bfd, backing_path)
            size, ss = image.geometry.size, image.geometry.sectorsize
            total = image.count_marked() * ss
            buf = memoryview(bytearray(chunk_bytes))
            other = memoryview(bytearray(chunk_bytes))
            written = done = 0
            try:
                for lo, hi in _marked_byte_ranges(image):
                    for offset in range(lo, hi, chunk_bytes):
                        n = min(chunk_bytes, hi - offset)
                        read_fully(image.fd, n, image.geometry.data_offset + offset, buf[:n])
                        # uml_moo: a zero sector in the COW file need not be written over a zero
                        # sector of the backing file (keeps holes in a sparse backing file).
                        if not np.frombuffer(buf[:n], dtype=np.uint8).any():
                            read_fully(bfd, n, offset, other[:n])
                            if not np.frombuffer(other[:n], dtype=np.uint8).any():
                                done += n
                                continue
                        written += pwrite_all(bfd, buf[:n], offset)
                        done += n
                        if progress:
                            progress(done, total)
                if os.fstat(bfd).st_size < size and stat.S_ISREG(os.fstat(bfd).st_mode):
                    os.ftruncate(bfd, size)     # [resize] a grown COW file grows its backing file
                os.fsync(bfd)
            except OSError as err:
                if err.errno not in WRITE_FAILURES:
                    raise
                raise _partly_merged(cow, backing_path, done, total, err) from None
        finally:
            os.close(bfd)
        if os.path.exists(journal):
            os.unlink(journal)
            fsync_directory(os.path.dirname(journal))
        marked = image.count_marked()
        return MergeResult(cow=cow, backing=backing_path, output=backing_path, in_place=True,
                           resumed=resumed, size=size, backing_size=backing_bytes,
                           sectors=image.sectors,
                           sectors_from_cow=marked, sectors_from_backing=image.sectors - marked,
                           bytes_written=written, seconds=round(time.monotonic() - started, 6),
                           invalidated=invalidated)


WRITE_FAILURES = (_errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG, _errno.EIO)


def _partly_merged(cow: str, backing: str, done: int, total: int, err: OSError) -> DeviceIOError:
    """The line for an in-place merge that stopped half way: what state the backing is in,
    and that a re-run resumes (the journal stays, so the changed mtime is accepted)."""
    return DeviceIOError(
        f"writing the backing file '{shown(backing)}' failed after {done} of {total} bytes: "
        f"{err.strerror}. It is now PARTLY merged; the journal keeps the merge resumable: "
        f"make room and run 'ubdsim moo -d {shown(cow)}' again to finish it",
        errno=err.errno)


@contextmanager
def named_write_errors(output: str) -> Iterator[None]:
    """A full disk while writing NEWFILE names NEWFILE (not our temporary name, not nothing)."""
    try:
        yield
    except OSError as err:
        if err.errno in WRITE_FAILURES and err.filename is None:
            raise OSError(err.errno, err.strerror, output) from None
        raise


def refuse_output(output: str, force: bool, inputs: tuple[str, ...]) -> None:
    """Never replace an input; replace another existing file only when forced, and never
    one another process holds locked (a running guest's disk: refuse_if_locked())."""
    try:
        out_st = os.stat(output)
    except FileNotFoundError:
        return
    for path in inputs:
        try:
            if os.path.samestat(out_st, os.stat(path)):
                raise UbdError(f"'{shown(output)}' is the same file as '{shown(path)}': refusing to replace an input",
                               errno=_errno.EINVAL)
        except FileNotFoundError:
            pass
    if not force:
        raise UbdError(f"'{shown(output)}' already exists (use -f to replace it)", errno=_errno.EEXIST)
    if not stat.S_ISREG(out_st.st_mode):
        raise UbdError(f"'{shown(output)}' is not a regular file; not replacing it", errno=_errno.EINVAL)
    refuse_if_locked(output, shown(output))


def _journal_record(image: CowImage, st: os.stat_result, backing: str) -> dict:
    return {"backing": os.path.abspath(backing), "dev": st.st_dev, "ino": st.st_ino,
            "size": image.header.size, "header_mtime": image.header.mtime}


def _journal_matches(journal: str, image: CowImage, backing: str) -> bool:
    """True when a crashed in-place merge of this COW file into this backing file left a journal.

    A journal that is a symlink, not a regular file, or not ours is refused (RefusedFile):
    someone may have planted it to make the merge write elsewhere.
    """
    fd = open_own_regular(journal, "merge journal")
    if fd is None:
        return False
    try:
        record = json.loads(os.read(fd, 1 << 16))
        st = os.stat(backing)
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return record == _journal_record(image, st, backing)


def _write_journal(journal: str, image: CowImage, bfd: int, backing: str) -> None:
    """Write the journal as a new private file (O_EXCL|O_NOFOLLOW: never through a link);
    an old journal of ours for another merge is replaced."""
    record = _journal_record(image, os.fstat(bfd), backing)
    if os.path.lexists(journal):
        os.unlink(journal)       # checked by _journal_matches(): ours, regular, not a link
    fd = create_private(journal, 0o644)
    try:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(os.path.dirname(journal))


# -- chains (--chain: ubdsim's own) ---------------------------------------------------------------

def open_chain(path: str):
    """The whole backing chain of the COW file `path` (layer 0) as a read-only stack
    (device/chain.py ChainStack), every layer read-locked as moo locks what it reads.

    Refuses with one line (UbdError): a file that is not a COW file, a loop, a missing or
    unusable layer, a link whose size or mtime differs from the header above it."""
    from ..device import chain as stack

    found = stack.plan(path, 0)
    if found is None:
        with CowImage.open(path):       # raises the reason: missing, not a COW file...
            pass
        raise UbdError(f"'{shown(path)}' cannot be read as a COW file", errno=_errno.EINVAL)
    return stack.open_stack(found, lambda fd, name, _n: lock_file(fd, shown(name), exclusive=False))


def _chain_counts(stk, size: int) -> tuple[int, int]:
    """(sectors held by a COW layer, sectors from the raw bottom) of a stack's device."""
    ss = stk.images[0].geometry.sectorsize
    from_cow = 0
    for layer, lo, hi in stk.sources(0, size):
        if layer < stk.depth:
            from_cow += hi - lo
    sectors = -(-size // ss)
    cow_sectors = -(-from_cow // ss)
    return cow_sectors, sectors - cow_sectors


def merge_chain_new(cow: str, output: str, *, force: bool = False, chunk_bytes: int = CHUNK_BYTES,
                    progress: Progress | None = None, sync: bool = True) -> MergeResult:
    """`moo --chain COW NEWFILE`: the whole chain's device, as `run --chain` shows it, written
    to a new file (sparse, fsynced unless not `sync`, renamed into place). Its size is the raw
    bottom's."""
    started = time.monotonic()
    with open_chain(cow) as stk:
        layers = [stk.path_of(n) for n in range(stk.depth + 1)]
        refuse_output(output, force, tuple(layers))
        size = stk.size
        written = 0
        with named_write_errors(output), new_file_beside(output, exclusive=False,
                                                         sync=sync) as ofd:
            buf = memoryview(bytearray(chunk_bytes))
            streams = [data_extents(stk.bottom_fd, 0, size)]
            for image in stk.images:
                streams.append((lo, min(hi, size)) for lo, hi in _marked_byte_ranges(image)
                               if lo < size)
            for lo, hi in merge_intervals(*streams):
                for offset in range(lo, hi, chunk_bytes):
                    n = min(chunk_bytes, hi - offset)
                    stk.read_into(buf[:n], offset)
                    written += write_nonzero(ofd, buf[:n], offset)
                    if progress:
                        progress(offset + n, size)
            os.ftruncate(ofd, size)
        from_cow, from_backing = _chain_counts(stk, size)
        return MergeResult(cow=cow, backing=stk.bottom_path, output=output, in_place=False,
                           resumed=False, size=size, backing_size=size,
                           sectors=from_cow + from_backing, sectors_from_cow=from_cow,
                           sectors_from_backing=from_backing, bytes_written=written,
                           seconds=round(time.monotonic() - started, 6), chain=layers)


def merge_chain_down(cow: str, *, chunk_bytes: int = CHUNK_BYTES,
                     progress: Progress | None = None, confirm: Confirm | None = None,
                     also_check: Sequence[str] = ()) -> MergeResult:
    """`moo -d --chain COW`: commit the top layer into the layer below it.

    Below a COW file: the top's marked sectors (those of the device, the raw bottom's size)
    are written into the lower COW file's data area and marked in its bitmap, in a copy
    rebuilt beside it and renamed over it (crash-safe: the old file or the new one). Its
    mtime changes, so the top COW file (and any other COW file over the lower one) no longer
    matches it, as after any `moo -d`. Below a raw file: an ordinary `moo -d`. `confirm` as
    for merge_in_place(), about the other COW files over the lower layer."""
    started = time.monotonic()
    from ..device import chain as stack

    found = stack.plan(cow, 0)
    if found is None:
        with CowImage.open(cow):
            pass
        raise UbdError(f"'{shown(cow)}' cannot be read as a COW file", errno=_errno.EINVAL)
    layers = [layer.path for layer in found.layers]
    if len(layers) == 2:
        result = merge_in_place(cow, chunk_bytes=chunk_bytes, progress=progress,
                                confirm=confirm, also_check=also_check)
        return MergeResult(**{**result.as_dict(), "chain": layers})
    lower_path = layers[1]
    size = found.size
    with CowImage.open(cow) as top, CowImage.open(lower_path) as lower:
        lock_file(top.fd, shown(cow), exclusive=False)
        ss = top.geometry.sectorsize
        if lower.geometry.sectorsize != ss:
            raise UbdError(f"'{shown(cow)}' has {ss}-byte sectors, '{shown(lower_path)}' "
                           f"{lower.geometry.sectorsize}: cannot merge one into the other",
                           errno=_errno.EINVAL)
        limit = -(-size // ss)
        runs = list(top.marked_runs(0, limit))
        if runs and runs[-1][0] + runs[-1][1] > lower.covered_sectors:
            raise UbdError(f"'{shown(lower_path)}' has no bitmap bit for sector "
                           f"{lower.covered_sectors} (the V1/V2 rounding bug): its data would "
                           "be invisible; refusing", errno=_errno.EINVAL)
        # A guest using the lower file (its top COW file, or reading it) must not see it
        # replaced: the rename would leave it on the old inode. Then lock our own fd.
        refuse_if_locked(lower_path, shown(lower_path))
        lock_file(lower.fd, shown(lower_path), exclusive=False)
        invalidated = _confirmed(confirm, cow, lower_path, also_check)
        total = sum(count for _, count in runs) * ss
        lower_geo = lower.geometry
        done = written = 0
        buf = memoryview(bytearray(chunk_bytes))
        with named_write_errors(lower_path), rewrite_beside(lower_path) as out:
            for start, count in runs:                       # the data first...
                lo, hi = start * ss, min((start + count) * ss, size)
                for offset in range(lo, hi, chunk_bytes):
                    n = min(chunk_bytes, hi - offset)
                    read_fully(top.fd, n, top.geometry.data_offset + offset, buf[:n])
                    written += pwrite_all(out, buf[:n], lower_geo.data_offset + offset)
                    done += n
                    if progress:
                        progress(done, total)
            for start, count in runs:                       # ...then the bits that mark it
                first, end = start >> 3, (start + count + 7) >> 3
                at = lower_geo.bitmap_offset + first
                words = bytearray(read_fully(out, end - first, at))
                bits.set_range(words, start - first * 8, count)
                pwrite_all(out, words, at)
        marked = sum(count for _, count in runs)
        sectors = -(-size // ss)
        return MergeResult(cow=cow, backing=lower_path, output=lower_path, in_place=True,
                           resumed=False, size=size, backing_size=size, sectors=sectors,
                           sectors_from_cow=marked, sectors_from_backing=sectors - marked,
                           bytes_written=written, seconds=round(time.monotonic() - started, 6),
                           chain=layers, invalidated=invalidated)
