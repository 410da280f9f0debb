"""What the device model will do when it opens one unit, worked out without doing it.

The decisions are ubdsim.device.open's own functions, called here on a log that only
collects lines (open.py `_Log` over a private EventBus): device_size() (ubd_file_size()),
_same_file() (path_requires_switch()), _mismatch() (backing_file_mismatch()), _tail_checker()
([resize] grown files), _read_header() (read_cow_header() with the profile's versions), plus
header_for_backing() (write_cow_header()'s header), resize.plan() (the [resize] geometry) and
locking.holder_pid() (F_GETLK). None of them writes. What open.py does around them opens files
read-write, creates, locks, rewrites headers and resizes, so that control flow is mirrored
here step by step, each step citing the open.py function it stands for; every prediction is
cross-checked against the device model itself in tests/explain.

Files are only ever opened through fileio.open_disk_file() (O_NONBLOCK, kind checked on the
fd), after ops.chain has looked at them: a FIFO, a directory or a character device named on
the command line is reported, never opened, so explain never blocks.

Mirrored, not called (each would change the files): open.py _open_with_fallback() (the
EROFS/EACCES retry: os.access() decides), _lock() (holder_pid() says whether F_SETLK would
fail), _create() (create_cow_file(): the header header_for_backing() builds, the directory's
write permission), _write_switch_header() (the same header, the unit's writability),
_attach_cow() (the vmalloc test, the backing file's open and lock), _resize_on_open() (plan()
and resize_file()'s refusals).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import asdict, dataclass, field
from typing import Any

from ..cmdline.spec import UnitSpec
from ..cow.create import header_for_backing
from ..cow.header import CowHeader, pack_header
from ..device import resize as resize_mod
from ..device.api import SECTOR_SIZE
from ..device.events import EventBus
from ..device.locking import holder_pid
from ..device.open import (_Log, _OpenFailed, _mismatch, _read_header, _same_file, _tail_checker,
                           device_size)
from ..errors import CowFormatError, UbdError
from ..fileio import open_disk_file
from ..messages import render
from ..ops.chain import Layer, walk_chain
from ..profiles import PROFILES, Profile
from .damage import SwitchDamage, switch_damage

# outcomes
CREATE, COW, RAW, SWITCH = "create", "cow", "raw", "switch"
REFUSE, NO_DISK, UNKNOWN = "refuse", "no-disk", "unknown"
OPENING = frozenset({CREATE, COW, RAW, SWITCH})


@dataclass(frozen=True)
class Step:
    """One thing the kernel does or finds, named by a behaviour id (provenance.BEHAVIOURS),
    with the values a sentence about it needs."""

    behaviour: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitPrediction:
    unit: int
    profile: str
    disk: str                       # the gendisk's name under this profile (ubda, ubd0)
    file: str
    backing: str | None
    outcome: str                    # CREATE, COW, RAW, SWITCH, REFUSE, NO_DISK, UNKNOWN
    readonly: bool | None           # the unit after the open (None: it does not open)
    errno: int | None               # the open's errno when it fails
    size: int | None                # the device's size in bytes
    version: int | None             # the header version the unit is served with (None: raw)
    backing_used: str | None        # the backing file the unit reads (None: raw)
    lines: list[str]                # the kernel lines the boot prints for this unit, in order
    line_ids: list[str]             # their message ids
    steps: list[Step]
    deferred: bool = False          # [6.1] an empty disk: no open at boot, the outcome and
    first_open_lines: list[str] = field(default_factory=list)   # lines are the guest's first
    first_open_ids: list[str] = field(default_factory=list)
    damage: SwitchDamage | None = None
    created: dict | None = None     # version, backing (absolute), size, mtime of a new COW file
    resize: dict | None = None      # old_length, new_length, old_size, new_size
    lock_holder: int | None = None
    files: dict[str, dict] = field(default_factory=dict)   # ops.chain layers, by role

    @property
    def opens(self) -> bool:
        return self.outcome in OPENING

    def as_dict(self) -> dict:
        out = asdict(self)
        out["opens"] = self.opens
        return out


class _Predicted(Exception):
    """Internal: the prediction ends here (a failure, or a file explain will not open)."""

    def __init__(self, outcome: str, code: int | None = None) -> None:
        super().__init__(outcome)
        self.outcome, self.code = outcome, code


class _State:
    """What the mirrored open knows so far."""

    def __init__(self, spec: UnitSpec, profile: Profile) -> None:
        self.spec, self.profile = spec, profile
        self.ids: list[str] = []
        self.bus = EventBus(lambda event: self.ids.append(event.data["msg_id"]), kinds={"message"})
        self.log = _Log(profile, spec.unit, self.bus)
        self.steps: list[Step] = []
        self.size: int | None = None
        self.writable = not spec.readonly
        self.header: CowHeader | None = None
        self.backing: str | None = None
        self.damage: SwitchDamage | None = None
        self.created: dict | None = None
        self.resize: dict | None = None
        self.lock_holder: int | None = None
        self.outcome = UNKNOWN
        self.boot_lines: int | None = None      # where the boot's lines end (deferred open)

    def step(self, behaviour: str, **data: Any) -> None:
        self.steps.append(Step(behaviour, data))


def _layer(path: str | None) -> Layer | None:
    """What ops.chain sees at `path` (never blocks, never raises)."""
    if path is None:
        return None
    return walk_chain(path, max_depth=1).layers[0]


def _chain(path: str | None):
    return None if path is None else walk_chain(path)


def _unsafe(layer: Layer | None) -> bool:
    """A file explain must not open: it exists and is not a regular file or block device."""
    return layer is not None and layer.exists and layer.error is not None


def predict_unit(spec: UnitSpec, profile: Profile) -> UnitPrediction:
    """The device model's open of `spec` under `profile` (open.py open_unit(), as boot_disks()
    runs it), predicted. Reads only; never blocks."""
    state = _State(spec, profile)
    chain = _chain(spec.file)
    files: dict[str, dict] = {"file": chain.as_dict()} if chain else {}
    backing_chain = _chain(spec.backing)
    if backing_chain is not None:
        files["backing"] = backing_chain.as_dict()
    code = None
    try:
        _predict(state, chain.layers[0] if chain else None,
                 backing_chain.layers[0] if backing_chain else None)
    except _Predicted as ended:
        state.outcome, code = ended.outcome, ended.code
    except (UbdError, OSError, ValueError) as err:
        # the device model fails here without a kernel line of its own (a header no geometry
        # fits, a file that changed meanwhile): say so rather than guess
        state.step("unpredicted", why=str(err))
        state.outcome, code = UNKNOWN, getattr(err, "errno", None)
    opens = state.outcome in OPENING
    cow = opens and state.header is not None
    cut = len(state.log.lines) if state.boot_lines is None else state.boot_lines
    return UnitPrediction(
        unit=spec.unit, profile=profile.name, disk=profile.device.disk_name(spec.unit),
        file=spec.file, backing=spec.backing, outcome=state.outcome,
        readonly=(not state.writable) if opens else None, errno=code,
        size=state.size if opens else None,
        version=state.header.version if cow else None,
        backing_used=state.backing if cow else None,
        lines=state.log.lines[:cut], line_ids=state.ids[:cut], steps=state.steps,
        deferred=state.boot_lines is not None, first_open_lines=state.log.lines[cut:],
        first_open_ids=state.ids[cut:],
        damage=state.damage, created=state.created, resize=state.resize,
        lock_holder=state.lock_holder, files=files)


def _predict(s: _State, file_layer: Layer | None, backing_layer: Layer | None) -> None:
    spec, profile, rules = s.spec, s.profile, s.profile.device
    for role, layer in (("file", file_layer), ("backing", backing_layer)):
        if _unsafe(layer):
            s.step("not_a_disk", role=role, path=layer.path, kind=layer.kind)
            raise _Predicted(UNKNOWN)
    # open.py add_size() -> device_size(): ubd_file_size()
    try:
        s.size = device_size(spec, profile, s.log)
    except _OpenFailed as failed:
        if rules.reports_cant_open:
            s.log("device.init_failed", spec.unit, render("device.no_size", profile.kernel_family))
        source = _size_source(spec, profile, file_layer)
        s.step("size.none", path=source, errno=failed.code, cow_named=source != spec.file,
               by_header=spec.backing is None and source != spec.file)
        raise _Predicted(NO_DISK, failed.code) from None
    s.step("size", size=s.size, granule=rules.size_granule, rounds_up=rules.size_rounds_up,
           source=_size_source(spec, profile, file_layer))
    # disk.py boot_disks(): [6.1] an empty disk is registered but its partition scan never
    # runs: what follows is the guest's first open of it
    if not rules.add_opens_device and s.size == 0:
        s.step("not_scanned")
        s.boot_lines = len(s.log.lines)
    try:
        _open_dev(s, file_layer)
    except _OpenFailed as failed:
        # open.py open_dev(): [6.1] ubd_open()'s `Can't open` line, unless ubdsim's own line
        # stood in for a kernel crash
        if rules.reports_cant_open and not failed.own_line:
            s.log("device.cant_open", rules.disk_name(spec.unit), spec.file, failed.code)
        raise _Predicted(REFUSE, failed.code) from None


def _size_source(spec: UnitSpec, profile: Profile, layer: Layer | None) -> str:
    """The file device_size() took the size from: the command line's backing file, else the
    backing file a header (read with the profile's versions) names, else the file itself."""
    if spec.backing is not None:
        return spec.backing
    try:
        fd = open_disk_file(spec.file, os.O_RDONLY, "file")
    except OSError:
        return spec.file
    try:
        return _read_header(fd, profile).backing_path
    except CowFormatError:
        return spec.file
    finally:
        os.close(fd)


def _open_dev(s: _State, file_layer: Layer | None) -> None:
    """open.py _open()."""
    spec, rules = s.spec, s.profile.device
    _open_ubd_file(s, file_layer)
    if s.header is not None:
        # open.py _check_sectorsize(): ubdsim's own refusal where cow_sizes() divides by 0
        if s.header.sectorsize <= 0:
            s.log("device.bad_sectorsize", spec.file, s.header.sectorsize)
            s.step("refuse.sectorsize", path=spec.file, sectorsize=s.header.sectorsize)
            raise _OpenFailed(errno.EINVAL, own_line=True)
        _attach_cow(s)
        if rules.resize_patch and spec.size is not None:
            _resize(s)
        if s.header.size > s.size and rules.accepts_grown_cow:
            s.size = s.header.size // rules.size_granule * rules.size_granule
            s.step("grown", header_size=s.header.size, size=s.size)
    elif rules.resize_patch and spec.size is not None:
        s.step("resize.ignored", size=spec.size)
    if not rules.takes_locks:
        s.step("lock.none")
    if s.outcome == UNKNOWN:
        s.outcome = COW if s.header is not None else RAW
    if not s.writable:
        s.step("readonly", fails_open=rules.write_open_of_readonly_fails, flag=spec.readonly)


def _can_create_in(path: str) -> int:
    """0, or the errno open(O_CREAT) of `path` gets (its directory missing or not writable)."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except OSError as err:
        return err.errno
    if not stat.S_ISDIR(st.st_mode):
        return errno.ENOTDIR
    return 0 if os.access(directory, os.W_OK | os.X_OK) else errno.EACCES


def _open_ubd_file(s: _State, layer: Layer | None) -> None:
    """open.py _open_ubd_file(): any failure here prints `Failed to open`."""
    try:
        if layer is None or not layer.exists:
            if s.spec.backing is None:
                raise _OpenFailed(errno.ENOENT)
            _create(s)
            return
        _open_existing(s, layer)
    except _OpenFailed as failed:
        s.log("device.open_failed", s.spec.file, failed.code)
        if not any(step.behaviour.startswith(("refuse.", "create.", "switch.failed"))
                   for step in s.steps):
            s.step("refuse.open", path=s.spec.file, errno=failed.code)
        raise


def _create(s: _State) -> None:
    """open.py _create(): create_cow_file() + init_cow_file()."""
    spec, rules, fmt = s.spec, s.profile.device, s.profile.format
    if rules.announce_creation_first:
        s.log("device.creating", spec.file, spec.backing)
    code = _can_create_in(spec.file)
    if code:
        # _open_with_fallback(create=True): the read-only retry fails the same way
        s.log("device.cow_open_failed", spec.file, code)
        s.step("create.failed", path=spec.file, errno=code, why="directory")
        raise _OpenFailed(code)
    try:
        try:
            header = header_for_backing(spec.backing, version=fmt.created_version,
                                        alignment=fmt.created_alignment or SECTOR_SIZE)
            pack_header(header)
        except UbdError as err:
            if err.msg_id:
                s.log(err.msg_id, *err.msg_args)
            s.step("create.failed", path=spec.file, errno=err.errno, why=str(err))
            raise _OpenFailed(err.errno) from None
        if not s.writable:
            # a read-only unit: O_RDONLY|O_CREAT makes the file, the header write gets EBADF
            s.log("cow.header_write_failed", spec.file, errno.EBADF)
            s.step("create.readonly", path=spec.file)
            raise _OpenFailed(errno.EBADF)
    except _OpenFailed as failed:
        if rules.announce_creation_first:
            s.log("device.creation_failed", spec.file, failed.code)
        raise
    if not rules.announce_creation_first:
        s.log("device.creating", spec.file, spec.backing)
    if rules.takes_locks:      # _create() locks the new file, flag c or not
        s.step("lock", path=spec.file, role="file", kind="write")
    geometry = header.geometry()
    s.created = {"version": header.version, "backing": header.backing_path, "size": header.size,
                 "mtime": header.mtime, "sectorsize": header.sectorsize,
                 "alignment": header.alignment, "bitmap_offset": geometry.bitmap_offset,
                 "bitmap_len": geometry.bitmap_len, "data_offset": geometry.data_offset,
                 "length": geometry.file_length, "trailing_byte": rules.creation_trailing_byte}
    s.step("create", **s.created, path=spec.file, named=spec.backing,
           readable_by=_readers(header.version))
    s.header, s.backing = header, spec.backing
    s.outcome = CREATE


def _readers(version: int) -> list[str]:
    return [name for name, p in PROFILES.items() if version in p.format.readable_versions]


def _open_existing(s: _State, layer: Layer) -> None:
    spec = s.spec
    # open.py _open_with_fallback(): EROFS/EACCES on O_RDWR -> O_RDONLY, the unit read-only
    if not os.access(spec.file, os.R_OK):
        raise _OpenFailed(errno.EACCES)
    if s.writable and not os.access(spec.file, os.W_OK):
        s.writable = False
        s.step("readonly.fallback", path=spec.file)
    try:
        fd = open_disk_file(spec.file, os.O_RDONLY, "file")
    except OSError as err:
        raise _OpenFailed(err.errno or errno.EIO) from None
    try:
        _lock(s, fd, spec.file, s.writable, spec.shared, "file")
        if spec.no_cow:
            s.step("raw.flag_d", path=spec.file, size=s.size)
            return
        _check_cow(s, fd, layer)
    finally:
        os.close(fd)


def _lock(s: _State, fd: int, path: str, writable: bool, shared: bool, role: str) -> None:
    """open.py _lock(): [6.1] `Not locking` for flag c, else F_SETLK (locking.lock_file());
    [2.4] nothing."""
    if not s.profile.device.takes_locks:
        return
    if shared:
        s.log("device.not_locking", path)
        s.step("lock.shared", path=path, role=role)
        return
    pid = holder_pid(fd, writable)
    if pid:
        # locking.lock_file(): F_SETLK fails (EAGAIN on Linux), F_GETLK names the holder
        s.log("device.already_locked", pid)
        s.log("device.lock_failed", path, errno.EAGAIN)
        s.lock_holder = pid
        s.step("refuse.locked", path=path, pid=pid, role=role)
        raise _OpenFailed(errno.EAGAIN)
    s.step("lock", path=path, role=role, kind="write" if writable else "read")


def _check_cow(s: _State, fd: int, layer: Layer) -> None:
    """open.py _check_cow(): read the header, switch or check the backing file."""
    spec, profile = s.spec, s.profile
    try:
        header = _read_header(fd, profile)
    except CowFormatError as err:
        for msg_id in getattr(err, "printed", ()):
            s.log(msg_id)
        if spec.backing is None:
            if layer.is_cow or layer.header_error:
                s.step("raw.unreadable_cow", path=spec.file, size=s.size, why=err.message,
                       version=layer.header.version if layer.header else None,
                       readable=sorted(profile.format.readable_versions),
                       header_bytes=layer.header.layout.size if layer.header else None,
                       geometry=_geometry(layer.header))
            else:
                s.step("raw", path=spec.file, size=s.size)
            return
        s.log("device.read_header_failed", spec.file, errno.EINVAL)
        s.step("refuse.header", path=spec.file, backing=spec.backing, why=err.message,
               magic=bool(layer.is_cow or layer.header_error),
               version=layer.header.version if layer.header else None,
               readable=sorted(profile.format.readable_versions))
        raise _OpenFailed(errno.EINVAL) from None
    for msg_id in header.notes:
        s.log(msg_id)
    requested = spec.backing
    marks_before = len(s.ids)
    switch = requested is not None and not _same_file(requested, header.backing_path, spec.file,
                                                      profile, s.log)
    unstatable = requested is not None and _stat_fails(header.backing_path)
    tail = _tail_checker(fd, header)
    if requested is not None and unstatable:
        # would the requested file pass backing_file_mismatch()? (asked on a silent log)
        quiet = _Log(profile, spec.unit, EventBus())
        matches = not _stat_fails(requested) and _mismatch(requested, header, quiet, profile,
                                                           tail) is None
        s.step("switch.unstatable", header_path=header.backing_path, requested=requested,
               switches=profile.device.switch_if_header_unstatable, requested_matches=matches)
    if switch and _mismatch(requested, header, s.log, profile, tail) is None:
        s.log("device.switching", requested)
        old_version = header.version
        # open.py _write_switch_header()
        code = 0
        new = None
        try:
            new = header_for_backing(requested, version=profile.format.switch_version,
                                     alignment=header.alignment, sectorsize=header.sectorsize)
            pack_header(new)
        except UbdError as err:
            if err.msg_id:
                s.log(err.msg_id, *err.msg_args)
            code = err.errno
        if not code and not s.writable:
            s.log("cow.header_write_failed", spec.file, errno.EBADF)
            code = errno.EBADF
        if code:
            s.log("device.switch_failed", code)
            s.step("switch.failed", path=spec.file, errno=code, requested=requested)
            raise _OpenFailed(code)
        s.damage = switch_damage(spec.file, header, new)
        s.step("switch", path=spec.file, old_backing=header.backing_path, new_backing=requested,
               stored=new.backing_path, old_version=old_version, new_version=new.version,
               size=header.size, mtime=header.mtime, unstatable=unstatable,
               printed=s.ids[marks_before:])
        if s.damage.harmful:
            s.step("switch.damage", path=spec.file, **s.damage.as_dict())
        s.header, s.backing = new, requested
        s.outcome = SWITCH
        return
    if switch:
        s.step("switch.refused", requested=requested, header_path=header.backing_path,
               printed=s.ids[marks_before:])
    backing = header.backing_path
    problem = _mismatch(backing, header, s.log, profile, tail)
    if problem is not None:
        _refusal_step(s, backing, header, problem)
        raise _OpenFailed(problem.errno)
    s.header, s.backing = header, backing
    s.step("cow", path=spec.file, version=header.version, backing=backing, size=header.size,
           backing_size=_size_of(backing), mtime=header.mtime, named=requested,
           layout=header.layout.name,
           geometry=_geometry(header), marked=_marked(spec.file))


def _size_of(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _stat_fails(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return True
    return False


def _refusal_step(s: _State, backing: str, header: CowHeader, problem: UbdError) -> None:
    try:
        st = os.stat(backing)
    except OSError as err:
        s.step("refuse.backing", path=backing, errno=err.errno, header_size=header.size,
               header_mtime=header.mtime)
        return
    facts = dict(path=backing, header_size=header.size, header_mtime=header.mtime,
                 size=st.st_size, mtime=int(st.st_mtime), cow=s.spec.file,
                 marked=_marked(s.spec.file))
    if problem.msg_id == "device.size_mismatch":
        facts["grown"] = bool(header.size > st.st_size and _grown(s.spec.file, st.st_size))
        s.step("refuse.size", **facts)
    elif problem.msg_id == "device.mtime_mismatch":
        s.step("refuse.mtime", **facts)
    else:
        s.step("refuse.backing", path=backing, errno=problem.errno, header_size=header.size,
               header_mtime=header.mtime)


def _grown(cow: str, backing_size: int) -> bool:
    from ..cow.image import CowImage
    try:
        with CowImage.open(cow) as image:
            return image.grown_over(backing_size)
    except (UbdError, OSError):
        return False


def _marked(cow: str) -> int | None:
    """Sectors the COW file marks (None when it cannot be counted)."""
    from ..cow.image import CowImage
    try:
        with CowImage.open(cow) as image:
            return image.count_marked()
    except (UbdError, OSError, ValueError):
        return None


def _geometry(header: CowHeader | None) -> dict | None:
    if header is None:
        return None
    try:
        g = header.geometry()
    except (UbdError, ZeroDivisionError):
        return None
    return {"bitmap_offset": g.bitmap_offset, "bitmap_len": g.bitmap_len,
            "data_offset": g.data_offset, "sectors": g.sectors, "header_bytes": header.layout.size}


def _attach_cow(s: _State) -> None:
    """open.py _attach_cow(): the bitmap, then the backing file opened read-only and locked."""
    spec, profile = s.spec, s.profile
    geometry = s.header.geometry()
    if geometry.bitmap_len == 0 and profile.device.empty_bitmap_fails:
        s.log("device.vmalloc_failed")
        s.step("refuse.vmalloc", path=spec.file, backing=s.backing)
        raise _OpenFailed(errno.ENOMEM)
    layer = _layer(s.backing)
    if layer is None or not layer.exists:
        s.step("refuse.backing", path=s.backing, errno=errno.ENOENT)
        raise _OpenFailed(errno.ENOENT)
    if _unsafe(layer):
        s.step("not_a_disk", role="backing", path=s.backing, kind=layer.kind)
        raise _Predicted(UNKNOWN)
    if not os.access(s.backing, os.R_OK):
        s.step("refuse.backing", path=s.backing, errno=errno.EACCES)
        raise _OpenFailed(errno.EACCES)
    if layer.is_cow or layer.header_error:
        s.step("stacking", path=s.backing, cow=spec.file,
               version=layer.header.version if layer.header else None,
               header_bytes=layer.header.layout.size if layer.header else None,
               its_backing=layer.header.backing_path if layer.header else None)
    try:
        fd = open_disk_file(s.backing, os.O_RDONLY, "backing file")
    except OSError as err:
        s.step("refuse.backing", path=s.backing, errno=err.errno)
        raise _OpenFailed(err.errno or errno.EIO) from None
    try:
        _lock(s, fd, s.backing, False, spec.shared, "backing")
    finally:
        os.close(fd)


def _resize(s: _State) -> None:
    """open.py _resize_on_open() and resize.resize_file()'s refusals ([resize])."""
    spec, header = s.spec, s.header
    old = header.size
    if spec.size == old:
        s.step("resize.same", size=old)
        return
    if spec.size < old or not s.writable:
        msg_id = "device.resize_smaller" if spec.size < old else "device.resize_readonly"
        code = errno.EINVAL if spec.size < old else errno.EROFS
        s.log(msg_id, spec.file, old, spec.size)
        s.step("resize.refused", path=spec.file, old_size=old, new_size=spec.size,
               why="smaller" if spec.size < old else "readonly")
        raise _OpenFailed(code)
    target = os.path.realpath(spec.file)
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        s.log("device.resize_not_regular", spec.file)
        s.step("resize.refused", path=spec.file, old_size=old, new_size=spec.size,
               why="not_regular")
        raise _OpenFailed(errno.EINVAL)
    if st.st_nlink > 1:            # the default ("safe") mode renames a grown copy into place
        s.log("device.resize_linked", spec.file, st.st_nlink)
        s.step("resize.refused", path=spec.file, old_size=old, new_size=spec.size,
               why="linked", links=st.st_nlink)
        raise _OpenFailed(errno.EMLINK)
    backing_size = os.stat(s.backing).st_size
    fd = open_disk_file(target, os.O_RDONLY, "COW file")
    try:
        layout = resize_mod.plan(fd, spec.size, backing_size)
    finally:
        os.close(fd)
    s.log("device.resizing", layout.old_length, layout.new_length)
    s.resize = {"old_length": layout.old_length, "new_length": layout.new_length,
                "old_size": old, "new_size": spec.size, "shift": layout.shift,
                "marked_from": layout.marked[0], "marked_to": layout.marked[1],
                "backing_size": backing_size}
    s.step("resize", path=spec.file, **s.resize, refusers=_refusers_of_grown())
    s.header = layout.new


def _refusers_of_grown() -> list[str]:
    return [name for name, p in PROFILES.items() if not p.device.accepts_grown_cow]


__all__ = ["UnitPrediction", "Step", "predict_unit", "CREATE", "COW", "RAW", "SWITCH", "REFUSE",
           "NO_DISK", "UNKNOWN", "OPENING"]
