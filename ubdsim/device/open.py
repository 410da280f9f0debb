"""Opening units the way the driver does at boot: size, open, create, switch, check, lock.

From: `arch/um/drivers/ubd_kern.c` ubd_add() -> ubd_file_size() (device size: `add_size`),
and ubd_open() -> ubd_open_dev() -> open_ubd_file(), path_requires_switch(),
backing_file_mismatch(), create_cow_file() (`open_dev`) [6.1]; 2.4.20-4um as the spec
describes it, plus the [resize] patch (`resize.py`). When each runs (boot, every first open
of the device) is `disk.py`'s business; `open_unit` is both steps at once, for one-shot users.

Every printk goes into the unit's `messages` (and out as a `message` event) in print order;
a unit that fails to open raises UbdError whose `printed` attribute holds the lines printed.
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping

from ..cmdline.spec import UnitSpec
from ..cow import bitmap as bits
from ..cow.create import Tail, header_for_backing, write_cow
from ..cow.header import CowHeader, pack_header, read_header
from ..cow.layouts import HEADER_READ_SIZE
from ..cow.sizes import div_round
from ..errors import (BackingError, CowFormatError, MtimeMismatch, ResizeError, SizeMismatch,
                      UbdError)
from ..messages import render
from ..messages.device import UNLEVELLED
from ..profiles import Profile
from . import chain as stack
from .api import SECTOR_SIZE
from .events import EventBus, EventSink, as_bus
from .locking import lock_file
from .resize import resize_file
from .unit import CowState, Unit, load_bitmap


class _Log:
    """The kernel log of one unit's open: rendered lines, also sent out as events."""

    def __init__(self, profile: Profile, unit: int, events: EventBus) -> None:
        self.family, self.unit, self.events = profile.kernel_family, unit, events
        self.text_max = profile.device.printk_text_max
        self.lines: list[str] = []
        # open_ubd_file(): `*backing_file_out = backing_file` when the header's own backing
        # file is used; ubd_dev->cow.file keeps it for the device's next open.
        self.backing_out: str | None = None

    def __call__(self, msg_id: str, *args: object) -> None:
        text = render(msg_id, self.family, *args)
        if self.text_max is not None:
            text = text[:self.text_max + (2 if msg_id in UNLEVELLED else 0)]
        self.lines.append(text)
        if self.events.active:
            self.events.emit("message", self.unit, msg_id=msg_id, text=text)

    def own(self, text: str) -> None:
        """A line of ubdsim's own (`ubdsim: chain: ...`): no kernel prints it, none is cut."""
        self.lines.append(text)
        if self.events.active:
            self.events.emit("message", self.unit, msg_id="ubdsim.chain", text=text)


class _OpenFailed(Exception):
    """Internal: the open failed with this (positive) errno after printing its messages.

    `own_line`: the failure was reported by one line of ubdsim's own, standing in for a kernel
    that would have crashed there; the kernel's generic failure lines are not added to it."""

    def __init__(self, code: int, error: UbdError | None = None, own_line: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.error = error
        self.own_line = own_line


def file_size(path: str, log: _Log) -> int:
    """os_file_size() [6.1]: st_size, or the size of a block device; prints on a failed stat."""
    try:
        st = os.stat(path)
    except OSError as err:
        log("device.stat_failed", path, err.errno)
        raise _OpenFailed(err.errno) from None
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return st.st_size


def _read_header(fd: int, profile: Profile) -> CowHeader:
    return read_header(os.pread(fd, HEADER_READ_SIZE, 0), profile.format)


def device_size(spec: UnitSpec, profile: Profile, log: _Log, chain: bool = False) -> int:
    """ubd_add() + ubd_file_size(): the size comes from the backing file named on the command
    line, else from the backing file a COW header names (even with flag d: the header is read
    anyway), else from the file itself; then [6.1] rounded up to 512, [2.4] down to 1 KiB.

    `chain` (ubdsim's --chain): a backing file that is itself a COW file is walked down to
    its raw bottom (device/chain.py), whose size is the device's; the chain is named in one
    `ubdsim: chain:` line, or refused with one (no disk is registered then)."""
    over_backing = True
    if spec.backing is not None:
        source = spec.backing
    else:
        try:
            fd = os.open(spec.file, os.O_RDONLY)
        except OSError as err:
            raise _OpenFailed(err.errno) from None
        try:
            header = _read_header(fd, profile)
        except CowFormatError as err:
            # read_cow_header() prints why (`short header`, `invalid COW version`...).
            for msg_id in getattr(err, "printed", ()):
                log(msg_id)
            source, over_backing = spec.file, False
        else:
            for msg_id in header.notes:
                log(msg_id)
            source = header.backing_path
        finally:
            os.close(fd)
    size = file_size(source, log)
    if chain and over_backing and not spec.no_cow:
        size = _chain_size(spec, source, size, profile, log)
    rules = profile.device
    granule = rules.size_granule
    return div_round(size, granule) * granule if rules.size_rounds_up else size // granule * granule


def _chain_refused(spec: UnitSpec, profile: Profile, log: _Log, err: UbdError) -> _OpenFailed:
    """One `ubdsim: chain: ubdX: refused: ...` line; the unit fails with nothing else printed."""
    log.own(f"{stack.PREFIX} {profile.device.disk_name(spec.unit)}: refused: {err}")
    return _OpenFailed(err.errno, err, own_line=True)


def _top_stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None                 # a COW file about to be created


def _chain_size(spec: UnitSpec, backing: str, size: int, profile: Profile, log: _Log) -> int:
    """[--chain] The bottom file's size when `backing` is a COW file (else `size`, unchanged)."""
    try:
        found = stack.plan(backing, 1, spec.file, _top_stat(spec.file))
    except stack.ChainRefused as err:
        raise _chain_refused(spec, profile, log, err) from None
    if found is None:
        return size
    if profile.device.resize_patch and spec.size is not None:
        raise _chain_refused(spec, profile, log, ResizeError(
            f"a size field ({spec.size}) resizes a COW file over a raw backing file only: "
            "not with --chain", errno=errno.EINVAL))
    log.own(found.describe(profile.device.disk_name(spec.unit), spec.file))
    return found.size


def _attach_chain(fd: int, spec: UnitSpec, cow: CowState, profile: Profile, log: _Log) -> None:
    """[--chain] Where the Unit would pread the backing file, read the stack of its layers
    (walked and checked again: files may have changed since the disk was sized)."""
    try:
        found = stack.plan(cow.backing_path, 1, spec.file, os.fstat(fd))
        if found is None:
            return
        locker = (stack.device_locker if profile.device.takes_locks and not spec.shared
                  else None)
        cow.lower = stack.open_stack(found, locker)
    except UbdError as err:                 # ChainRefused, or a layer no tool may read
        raise _chain_refused(spec, profile, log, err) from None
    except OSError as err:
        raise _chain_refused(spec, profile, log, UbdError(
            f"a layer of '{spec.file}' cannot be opened: {err.strerror}"
            + (f": {err.filename}" if err.filename else ""), errno=err.errno)) from None


def _open_file(path: str, writable: bool, sync: bool, create: bool = False) -> int:
    """os_open_file(): O_RDWR or O_RDONLY, O_SYNC for flag s, O_CREAT for a COW being made."""
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    if sync:
        flags |= os.O_SYNC
    if create:
        flags |= os.O_CREAT
    return os.open(path, flags, 0o644)


def _open_with_fallback(path: str, writable: bool, sync: bool, create: bool = False
                        ) -> tuple[int, bool]:
    """open_ubd_file(): on EROFS/EACCES a writable open is retried read-only."""
    try:
        return _open_file(path, writable, sync, create), writable
    except OSError as err:
        if not writable or err.errno not in (errno.EROFS, errno.EACCES):
            raise
    return _open_file(path, False, sync, create), False


def _lock(fd: int, path: str, writable: bool, shared: bool, profile: Profile, log: _Log) -> None:
    """open_ubd_file() [6.1]: `Not locking` for flag c, else os_lock_file(); [2.4] nothing."""
    if not profile.device.takes_locks:
        return
    if shared:
        log("device.not_locking", path)
        return
    printed: list[tuple[str, tuple]] = []
    try:
        lock_file(fd, path, writable, printed)
    except UbdError as err:
        for msg_id, args in printed:
            log(msg_id, *args)
        raise _OpenFailed(err.errno, err) from None


def _same_file(requested: str, from_cow: str, cow_file: str, profile: Profile, log: _Log) -> bool:
    """not path_requires_switch(): same string, or same device and inode."""
    if requested == from_cow:
        return True
    try:
        first = os.stat(requested)
    except OSError as err:
        if profile.device.switch_if_header_unstatable:
            log("device.couldnt_stat", requested, err.errno)
        return True
    try:
        second = os.stat(from_cow)
    except OSError as err:
        # [6.1] an unreachable header path asks for the switch; [2.4] counts as "same".
        if profile.device.switch_if_header_unstatable:
            log("device.couldnt_stat", from_cow, err.errno)
            return False
        return True
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    log("device.backing_mismatch", requested, from_cow, cow_file)
    return False


def _mismatch(path: str, header: CowHeader, log: _Log, profile: Profile,
              tail_marked=None) -> BackingError | None:
    """backing_file_mismatch(): None when `path` has the header's size and mtime, else the
    error (its errno is what the kernel returns).

    [resize] profile 2.4 accepts a header size larger than the file when the mtime matches
    and `tail_marked(size)` says every sector past the file's end is marked in the bitmap.
    """
    try:
        modtime = int(os.stat(path).st_mtime)
    except OSError as err:
        log("device.stat_failed", path, err.errno)
        log("device.no_modtime", path, err.errno)
        return BackingError(f"cannot stat backing file '{path}': {err.strerror}", errno=err.errno)
    try:
        actual = file_size(path, log)
    except _OpenFailed as failed:
        log("device.no_backing_size", path, failed.code)
        return BackingError(f"cannot get the size of backing file '{path}'", errno=failed.code)
    if actual != header.size:
        grown_ok = (profile.device.accepts_grown_cow and header.size > actual
                    and modtime == header.mtime and tail_marked is not None and tail_marked(actual))
        if not grown_ok:
            log("device.size_mismatch", header.size, actual)
            return SizeMismatch(f"size mismatch: COW header says {header.size} bytes, backing file "
                                f"'{path}' has {actual}", errno=errno.EINVAL,
                                msg_id="device.size_mismatch", args=(header.size, actual))
    if modtime != header.mtime:
        log("device.mtime_mismatch", header.mtime, modtime)
        return MtimeMismatch(f"mtime mismatch: COW header says {header.mtime}, backing file "
                             f"'{path}' has {modtime}", errno=errno.EINVAL,
                             msg_id="device.mtime_mismatch", args=(header.mtime, modtime))
    return None


def _tail_checker(fd: int, header: CowHeader):
    """[resize] is every sector from the backing file's end to the header's end marked?
    (The bitmap is memory-mapped and scanned in chunks: no full read of a large bitmap.)"""

    def marked(backing_size: int) -> bool:
        if header.sectorsize <= 0:
            return False            # no sector fits: a size mismatch (cow_sizes() would divide by 0)
        geometry = header.geometry()
        first = div_round(backing_size, SECTOR_SIZE)
        last = min(geometry.sectors, geometry.bitmap_len * 8)   # the V2 rounding bug drops bits
        if first >= last:
            return True
        if os.fstat(fd).st_size < geometry.bitmap_offset + geometry.bitmap_len:
            return False
        with bits.MappedRegion(fd, geometry.bitmap_offset, geometry.bitmap_len, False) as region:
            return bits.all_set(region.array, first, last - first)
    return marked


def _write_switch_header(fd: int, cow_file: str, requested: str, header: CowHeader,
                         profile: Profile, log: _Log) -> int:
    """write_cow_header() as the switch calls it: the profile's version ([6.1] always V3, over
    whatever was there), the old sector size and alignment, the new absolute path, size, mtime.
    Returns the errno on failure, after printing the kernel's message."""
    version = profile.format.switch_version
    try:
        new = header_for_backing(requested, version=version, alignment=header.alignment,
                                 sectorsize=header.sectorsize)
        os.pwrite(fd, pack_header(new), 0)
    except UbdError as err:
        if err.msg_id:
            log(err.msg_id, *err.msg_args)
        return err.errno
    except OSError as err:
        log("cow.header_write_failed", cow_file, err.errno)
        return err.errno
    return 0


def _create(spec: UnitSpec, writable: bool, profile: Profile, log: _Log, events: EventBus
            ) -> tuple[int, bool]:
    """create_cow_file() + init_cow_file(): open with O_CREAT (no O_EXCL), lock (even with
    flag c), write the header, set the length. A read-only unit gets a 0-byte file and EBADF
    on the header write, as linux.uml does. Not crash-safe, on purpose: it is the kernel's."""
    rules = profile.device
    if rules.announce_creation_first:
        log("device.creating", spec.file, spec.backing)
    try:
        fd, writable = _open_with_fallback(spec.file, writable, spec.sync, create=True)
    except OSError as err:
        log("device.cow_open_failed", spec.file, err.errno)
        raise _OpenFailed(err.errno) from None
    try:
        _lock(fd, spec.file, writable, False, profile, log)
        fmt = profile.format
        try:
            header = header_for_backing(spec.backing, version=fmt.created_version,
                                        alignment=fmt.created_alignment or SECTOR_SIZE)
        except UbdError as err:
            if err.msg_id:
                log(err.msg_id, *err.msg_args)
            raise _OpenFailed(err.errno, err) from None
        # write_cow_header()'s own write first, so its failure gets its own message (a
        # read-only unit: EBADF, a 0-byte file left behind); write_cow() then repeats the
        # header (same bytes) and sets the length as init_cow_file() does.
        try:
            os.pwrite(fd, pack_header(header), 0)
        except OSError as err:
            log("cow.header_write_failed", spec.file, err.errno)
            raise _OpenFailed(err.errno) from None
        tail = Tail.ZERO_BYTE if rules.creation_trailing_byte else Tail.TRUNCATE
        try:
            write_cow(fd, header, tail=tail)
        except OSError as err:
            log("cow.bitmap_write_failed", spec.file, err.errno)
            raise _OpenFailed(err.errno) from None
    except _OpenFailed as failed:
        os.close(fd)
        if rules.announce_creation_first:
            log("device.creation_failed", spec.file, failed.code)
        raise
    if not rules.announce_creation_first:
        log("device.creating", spec.file, spec.backing)
    if events.active:
        events.emit("create", spec.unit, file=spec.file, backing=spec.backing,
                    version=header.version)
    return fd, writable


def _failure(failed: _OpenFailed | OSError, spec: UnitSpec, log: _Log) -> UbdError:
    """The UbdError a failed step raises: errno, and the lines printed (`printed`)."""
    if isinstance(failed, _OpenFailed):
        error = failed.error or UbdError(f"unit {spec.unit} ({spec.file}) failed to open",
                                         errno=failed.code)
    else:
        # A host failure the kernel has no message for (a directory given as a file, an I/O
        # error while reading the bitmap...): the unit fails, the boot goes on.
        error = UbdError(f"unit {spec.unit} ({spec.file}): {failed.strerror}", errno=failed.errno)
    error.printed = tuple(log.lines)  # type: ignore[attr-defined]
    return error


def add_size(spec: UnitSpec, profile: Profile, events: EventBus | EventSink | None = None,
             *, chain: bool = False) -> int:
    """ubd_add() -> ubd_file_size(): the disk's size, fixed for its life. Raises UbdError
    (`printed`: [6.1] `Failed to initialize ubd device N :...`) when it cannot be known: no
    disk is registered then. `chain`: ubdsim's --chain (see device_size())."""
    log = _Log(profile, spec.unit, as_bus(events))
    try:
        return device_size(spec, profile, log, chain)
    except _OpenFailed as failed:
        if profile.device.reports_cant_open and not failed.own_line:
            log("device.init_failed", spec.unit, render("device.no_size", profile.kernel_family))
        raise _failure(failed, spec, log) from None


def open_dev(spec: UnitSpec, profile: Profile, size: int,
             events: EventBus | EventSink | None = None, *, resize_mode: str = "safe",
             chain: bool = False) -> Unit:
    """ubd_open() -> ubd_open_dev(): one open of a registered disk of `size` bytes.

    Returns the Unit (its `messages`: the lines printed). Raises UbdError on failure, after
    [6.1] ubd_open()'s `ubdX: Can't open "F": errno = N`; its `printed` holds the lines and
    its `backing_file` ubd_dev->cow.file after this open (the header's backing path once
    open_ubd_file() used it), for the next open. A Unit's is its `backing_path`.
    `chain` (ubdsim's --chain): a backing file that is a COW file is read as a stack of
    read-only layers (device/chain.py), refused with one `ubdsim: chain:` line if it cannot be.
    """
    bus = as_bus(events)
    log = _Log(profile, spec.unit, bus)
    try:
        unit = _open(spec, profile, size, log, bus, resize_mode, chain)
    except (_OpenFailed, OSError) as failed:
        if (isinstance(failed, _OpenFailed) and profile.device.reports_cant_open
                and not failed.own_line):
            log("device.cant_open", profile.device.disk_name(spec.unit), spec.file, failed.code)
        error = _failure(failed, spec, log)
        error.backing_file = log.backing_out or spec.backing  # type: ignore[attr-defined]
        raise error from None
    unit.messages = tuple(log.lines)
    return unit


def open_unit(spec: UnitSpec, profile: Profile, events: EventBus | EventSink | None = None,
              *, resize_mode: str = "safe", chain: bool = False) -> Unit:
    """Size and open one configured unit as the kernel of `profile` would; returns a Unit.

    Raises UbdError on failure; its `printed` attribute holds the kernel log lines (the unit
    is then absent). `resize_mode` ("safe" or "in-place") applies to the [resize] patch only;
    `chain` is ubdsim's --chain (see open_dev()).
    """
    size = add_size(spec, profile, events, chain=chain)
    return open_dev(spec, profile, size, events, resize_mode=resize_mode, chain=chain)


def _open(spec: UnitSpec, profile: Profile, size: int, log: _Log, bus: EventBus,
          resize_mode: str, chain: bool = False) -> Unit:
    rules = profile.device
    writable = not spec.readonly
    fd, writable, header, backing = _open_ubd_file(spec, writable, profile, log, bus)
    cow = None
    try:
        if header is not None:
            _check_sectorsize(spec, header, log)
            cow = _attach_cow(fd, spec, header, backing, profile, log)
        if cow is not None and rules.resize_patch and spec.size is not None:
            fd, cow = _resize_on_open(fd, spec, cow, writable, profile, log, bus, resize_mode)
        if cow is not None and chain:
            _attach_chain(fd, spec, cow, profile, log)
        if (cow is not None and cow.lower is None and cow.header.size > size
                and rules.accepts_grown_cow):
            size = cow.header.size // rules.size_granule * rules.size_granule
    except _OpenFailed:
        if cow is not None:                 # a refused or failed [resize]: the old state
            os.close(cow.backing_fd)
            cow.release()
        os.close(fd)
        raise
    unit = Unit(number=spec.unit, profile=profile, path=spec.file, fd=fd, writable=writable,
                sync=spec.sync, size=size, cow=cow, no_trim=spec.no_trim, events=bus)
    if bus.active:
        bus.emit("open", spec.unit, file=spec.file, backing=unit.backing_path, readonly=not writable,
                 sync=spec.sync, cow=cow is not None, size=size)
    return unit


def _open_ubd_file(spec: UnitSpec, writable: bool, profile: Profile, log: _Log, bus: EventBus
                   ) -> tuple[int, bool, CowHeader | None, str | None]:
    """open_ubd_file() (with create_cow_file() on ENOENT) as ubd_open_dev() calls it:
    (fd, writable, header or None for a raw file, backing path to use). Any failure prints
    ubd_open_dev()'s `Failed to open` line."""
    try:
        try:
            fd, writable = _open_with_fallback(spec.file, writable, spec.sync)
        except OSError as err:
            if err.errno == errno.ENOENT and spec.backing is not None:
                fd, writable = _create(spec, writable, profile, log, bus)
                # ubd_open_dev(): after creation the geometry is init_cow_file()'s and the
                # backing file is the command line's name, with no header check.
                return fd, writable, _read_header(fd, profile), spec.backing
            raise _OpenFailed(err.errno) from None
        try:
            _lock(fd, spec.file, writable, spec.shared, profile, log)
            if spec.no_cow:
                return fd, writable, None, None
            header, backing = _check_cow(fd, spec, profile, log, bus)
        except _OpenFailed:
            os.close(fd)
            raise
        return fd, writable, header, backing
    except _OpenFailed as failed:
        log("device.open_failed", spec.file, failed.code)
        raise


def _check_cow(fd: int, spec: UnitSpec, profile: Profile, log: _Log, bus: EventBus
               ) -> tuple[CowHeader | None, str | None]:
    """open_ubd_file() after the lock: read the header, switch or check the backing file."""
    try:
        header = _read_header(fd, profile)
    except CowFormatError as err:
        for msg_id in getattr(err, "printed", ()):
            log(msg_id)
        if spec.backing is None:
            return None, None
        log("device.read_header_failed", spec.file, errno.EINVAL)
        raise _OpenFailed(errno.EINVAL, err) from None
    for msg_id in header.notes:
        log(msg_id)
    requested = spec.backing
    switch = requested is not None and not _same_file(requested, header.backing_path, spec.file,
                                                      profile, log)
    tail = _tail_checker(fd, header)
    if switch and _mismatch(requested, header, log, profile, tail) is None:
        log("device.switching", requested)
        code = _write_switch_header(fd, spec.file, requested, header, profile, log)
        if code:
            log("device.switch_failed", code)
            raise _OpenFailed(code)
        if bus.active:
            bus.emit("switch", spec.unit, file=spec.file, old_backing=header.backing_path,
                     new_backing=requested, version=profile.format.switch_version)
        # open_ubd_file() keeps the OLD version and offsets for the rest of THIS open, but the
        # switch happens in the boot's partition scan, which closes the device again; the
        # guest's first open re-reads the rewritten header (measured: after a V2 -> V3 switch
        # the guest reads through the V3 geometry). The Unit serves what the guest sees.
        return _read_header(fd, profile), requested
    backing = header.backing_path
    log.backing_out = backing
    problem = _mismatch(backing, header, log, profile, tail)
    if problem is not None:
        raise _OpenFailed(problem.errno, problem)
    return header, backing


def _check_sectorsize(spec: UnitSpec, header: CowHeader, log: _Log) -> None:
    """open_ubd_file() -> cow_sizes() after the backing checks: `(size + sectorsize - 1) /
    (8 * sectorsize)` [2.4, V1/V2] and `DIV_ROUND(size, sectorsize)` [6.1, V3] divide by the
    header's sector size, so 0 kills both kernels with a divide error. ubdsim refuses the unit
    instead, with one line of its own (the kernel prints nothing before it dies)."""
    if header.sectorsize > 0:
        return
    log("device.bad_sectorsize", spec.file, header.sectorsize)
    raise _OpenFailed(errno.EINVAL, CowFormatError(
        f"COW file '{spec.file}' has sector size {header.sectorsize} in its header",
        errno=errno.EINVAL, msg_id="device.bad_sectorsize",
        args=(spec.file, header.sectorsize)), own_line=True)


def _attach_cow(fd: int, spec: UnitSpec, header: CowHeader, backing: str, profile: Profile,
                log: _Log) -> CowState:
    """ubd_open_dev() after open_ubd_file(): read the bitmap, open the backing file read-only
    (locked F_RDLCK unless flag c). Failures here print no `Failed to open` line."""
    geometry = header.geometry()
    if geometry.bitmap_len == 0 and profile.device.empty_bitmap_fails:
        # [6.1] vmalloc(0) returns NULL (mm/vmalloc.c __vmalloc_node_range(): size 0).
        log("device.vmalloc_failed")
        raise _OpenFailed(errno.ENOMEM)
    bitmap, region = load_bitmap(fd, geometry, profile.device.bitmap_word)
    state = CowState(header=header, geometry=geometry, backing_path=backing, backing_fd=-1,
                     bitmap=bitmap, bitmap_map=region)
    del bitmap
    try:
        state.backing_fd = _open_file(backing, False, spec.sync)
    except OSError as err:
        state.release()
        raise _OpenFailed(err.errno) from None
    try:
        _lock(state.backing_fd, backing, False, spec.shared, profile, log)
    except _OpenFailed:
        os.close(state.backing_fd)
        state.release()
        raise
    return state


def _resize_on_open(fd: int, spec: UnitSpec, cow: CowState, writable: bool, profile: Profile,
                    log: _Log, bus: EventBus, mode: str) -> tuple[int, CowState]:
    """[resize] the size field asks for a larger device: grow the COW file (resize.py), print
    `*** Resizing cow file: OLD -> NEW` (file lengths), and reopen it. Equal: nothing.
    Refused (smaller, a read-only unit, a hard-linked file) or failed (ENOSPC, EFBIG...): one
    line of ubdsim's own (the patch's texts are lost), nothing changed, the unit fails to open."""
    old = cow.header.size
    if spec.size == old:
        return fd, cow
    if spec.size < old or not writable:
        msg_id, code = (("device.resize_smaller", errno.EINVAL) if spec.size < old
                        else ("device.resize_readonly", errno.EROFS))
        log(msg_id, spec.file, old, spec.size)
        raise _OpenFailed(code, ResizeError(
            f"refusing to resize '{spec.file}' from {old} to {spec.size} bytes"
            + ("" if writable else " (read-only unit)"),
            errno=code, msg_id=msg_id, args=(spec.file, old, spec.size)))
    backing_size = os.fstat(cow.backing_fd).st_size
    try:
        old_length, new_length = resize_file(spec.file, spec.size, backing_size, mode=mode)
    except (OSError, UbdError) as err:
        code = getattr(err, "errno", None) or errno.EIO
        if isinstance(err, ResizeError) and err.msg_id:
            log(err.msg_id, *err.msg_args)                   # a refusal: its own line
            problem = err
        else:
            log("device.resize_failed", spec.file, old, spec.size, os.strerror(code), code)
            problem = ResizeError(f"resizing '{spec.file}' failed: {err}", errno=code,
                                  msg_id="device.resize_failed",
                                  args=(spec.file, old, spec.size, os.strerror(code), code))
        raise _OpenFailed(code, problem) from None
    log("device.resizing", old_length, new_length)
    if bus.active:
        bus.emit("resize", spec.unit, file=spec.file, old_length=old_length, new_length=new_length,
                 old_size=old, new_size=spec.size)
    # The safe mode renamed a new inode into place: reopen the name, re-read header and bitmap.
    os.close(cow.backing_fd)
    cow.release()
    os.close(fd)
    fd = _open_file(spec.file, writable, spec.sync)
    header = _read_header(fd, profile)
    geometry = header.geometry()
    bitmap, region = load_bitmap(fd, geometry, profile.device.bitmap_word)
    backing_fd = _open_file(cow.backing_path, False, spec.sync)
    return fd, CowState(header=header, geometry=geometry, backing_path=cow.backing_path,
                        backing_fd=backing_fd, bitmap=bitmap, bitmap_map=region)


def boot_units(specs: Mapping[int, UnitSpec] | Iterable[UnitSpec], profile: Profile,
               events: EventBus | EventSink | None = None, *, resize_mode: str = "safe",
               chain: bool = False) -> tuple[dict[int, Unit], list[str], dict[int, UbdError]]:
    """`open_unit` for units 0, 1, 2... in order; returns (units, messages, failures).

    Each unit is sized and opened ONCE and stays open: the messages are those of a boot
    whose guest then holds every unit open. (`disk.boot_disks` is the driver's real
    lifecycle: closed after the boot, reopened by each first open.) `messages` are the
    kernel log lines in print order; a failed unit is absent from `units` and its error
    (errno, printed lines) is in `failures`.
    """
    items = specs.values() if isinstance(specs, Mapping) else specs
    units: dict[int, Unit] = {}
    failures: dict[int, UbdError] = {}
    messages: list[str] = []
    for spec in sorted(items, key=lambda s: s.unit):
        try:
            unit = open_unit(spec, profile, events, resize_mode=resize_mode, chain=chain)
        except UbdError as err:
            messages.extend(getattr(err, "printed", ()))
            failures[spec.unit] = err
            continue
        messages.extend(unit.messages)
        units[spec.unit] = unit
    return units, messages, failures


__all__ = ["add_size", "open_dev", "open_unit", "boot_units", "device_size", "file_size"]
