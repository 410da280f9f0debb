"""Many guests over one backing file (`ubdsim fleet`): how much the host really holds.

The seeds' stories: 100 guests with 4 GB disks on a 100 GB host disk; more than 250 images
over one backing file. Every guest's COW file is as long as its disk (`ls -l`) and holds
almost nothing (`ls -s`): the host promises far more than it has, and finds out only when a
guest writes. `run_fleet()` makes N COW files over one backing file (created sparse when it
is missing), runs a workload for each guest through the simulator, a few at a time, and
measures what the host holds afterwards:

- per guest and in all: apparent bytes (st_size) against allocated bytes (st_blocks * 512),
  each COW file fsynced first, so st_blocks also counts the blocks the filesystem allocates
  only at writeback (ext4's extent-tree blocks);
- the overbooking ratio: the sum of the COW files' apparent sizes over the size of the host
  filesystem that holds them (statvfs f_blocks * f_frsize);
- the host space left (statvfs f_bavail, df's Avail: the reserved blocks are not counted
  on, whoever may use them depends on the mount) and the worst case: every guest fills its
  disk, each needing its apparent size less what it already holds, in guest order until the
  space left runs out;
- what a guest sees when the host fills, from what was measured (`WhenHostFills`).

Each guest is one process: the installed `ubdsim run --kernel P ubd0=COW,BACKING -- sh -c
CMD` (the same program a user runs), its stdin /dev/null, its output read through a pipe and
copied to `D/guestK.log` (a full host may refuse the log: the tail kept in memory still names
the error), its exit seen through a pidfd and its resource use taken from wait4() of that
one pid (peak RSS of `ubdsim run` and the guest tree it waited for). At most `jobs`
run at once, each pinned to its own CPU of ours (round robin when there are more jobs than
CPUs): `ubdsim run` pins its tracer and guest to the CPU it starts on, and two guests
starting on one CPU would otherwise share it for their whole run. A COW file is created (the
chosen kernel's way: ops/mkcow.py) just before its guest starts, so an interrupted fleet
leaves only the guests it started; SIGINT/SIGTERM stop the running guests (SIGTERM: `ubdsim
run` kills its guest tree) and wait for them.
"""
from __future__ import annotations

import errno as _errno
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cow.create import backing_size
from ..cow.image import CowImage
from ..errors import UbdError
from ..fileio import refuse_non_disk, shown
from ..profiles import get_profile
from .mkcow import make_cow

DEFAULT_WORKLOAD = ("dd if=/dev/urandom of={dev} bs=4k count=16 seek=$(( {n} * 37 )) "
                    "conv=notrunc")
"""64 KiB of random data at a different place on each guest's disk: the writes of a guest
that has just booted (logs, a package cache), measured in seconds for hundreds of guests."""

Progress = Callable[[int, int], None]


HOST_FULL = (_errno.ENOSPC, _errno.EDQUOT)


class FleetError(UbdError):
    """Bad input to `fleet` (one line; nothing was made)."""


@dataclass(frozen=True)
class GuestRun:
    """One guest: its COW file, how its workload ended, and what the host holds for it."""

    number: int
    cow: str
    log: str | None                  # ubdsim run's stdout and stderr (None: never started)
    status: int                      # the guest's exit status (128+N: killed by signal N)
    seconds: float
    max_rss_bytes: int               # peak RSS of `ubdsim run` and its guest tree (wait4)
    apparent_bytes: int              # st_size of the COW file
    allocated_bytes: int             # st_blocks * 512, after fsync
    sectors_marked: int
    error: str | None = None         # status not 0: its output's last line saying "error"


@dataclass(frozen=True)
class HostSpace:
    """statvfs() of the filesystem that holds the COW files, after the guests ran."""

    path: str
    filesystem_bytes: int            # f_blocks * f_frsize
    free_bytes: int                  # f_bfree * f_frsize, the reserved blocks included
    available_bytes: int             # f_bavail * f_frsize (df's Avail)
    # What the guests can still fill: f_bavail. Whether a process may dig into the reserved
    # blocks depends on the mount (resuid=, resgid=) and its capabilities, not on statvfs;
    # the reserve is not counted on, so the worst case is never rosier than the host.
    left_bytes: int
    left_basis: str


@dataclass(frozen=True)
class WorstCase:
    """Every guest fills its whole disk."""

    disks_bytes: int                 # N * size: the disks promised
    need_bytes: int                  # sum of (apparent - allocated): what filling them adds
    left_bytes: int
    guests_that_fit: int             # guests (in order) that could fill before the host is full
    shortfall_bytes: int             # need - left, 0 when every guest fits
    fits: bool


@dataclass(frozen=True)
class WhenHostFills:
    """What a guest sees when a write needs host space that is not there, from measurements."""

    kernel: str                      # linux.uml 6.1, the real kernel
    ubdsim: str                      # `ubdsim run` today
    known_difference: bool
    tracked_by: str
    profile_note: str | None = None  # the chosen profile was not measured


@dataclass(frozen=True)
class FleetReport:
    """`ubdsim fleet`'s result (its `--json`)."""

    guests_asked: int
    backing: str                     # as the COW headers name it
    backing_created: bool            # it was missing and made sparse of `size`
    size: int
    kernel: str
    device: str                      # what {dev} became
    workload: str                    # the command, before {dev} and {n} are replaced
    directory: str
    jobs: int
    guests: list[GuestRun]
    failed: int                      # guests whose workload exited non-zero
    cow_apparent_bytes: int
    cow_allocated_bytes: int
    backing_apparent_bytes: int
    backing_allocated_bytes: int
    apparent_bytes: int              # COW files and the backing file, in all
    allocated_bytes: int
    backing_on_same_filesystem: bool
    overbooking: float               # cow_apparent_bytes / host.filesystem_bytes
    host: HostSpace
    worst_case: WorstCase
    when_host_fills: WhenHostFills
    seconds: float
    fleet_max_rss_bytes: int         # this process's peak RSS
    max_guest_rss_bytes: int
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


WHEN_HOST_FILLS = WhenHostFills(
    kernel=("linux.uml 6.1 (measured with the COW file on a full tmpfs): the guest's buffered "
            "writes succeed (dd exits 0, and so does sync), the console shows 'Buffer I/O error "
            "on dev ubda, logical block N, lost async page write' and the data is lost; a later "
            "fsync gets EIO once per open; an O_DIRECT write gets ENOSPC at once"),
    ubdsim=("ubdsim run: the same, line for line (its page cache is write-back: "
            "tests/harness/test_writeback.py compares both)"),
    known_difference=False,
    tracked_by="")


def ubdsim_command() -> list[str]:
    """The installed `ubdsim` beside this interpreter (as a user runs it), else `-m ubdsim`."""
    installed = Path(sys.executable).with_name("ubdsim")
    if os.access(installed, os.X_OK):
        return [str(installed)]
    return [sys.executable, "-m", "ubdsim"]


def default_jobs() -> int:
    return len(os.sched_getaffinity(0))


def _check_backing(backing: str, size: int | None) -> int | None:
    """The size of an existing backing file (a disk, of `size` when given), or None when it
    is missing and can be created (`size` given, its directory there)."""
    try:
        st = os.stat(backing)
    except FileNotFoundError:
        if os.path.islink(backing):
            raise FleetError(f"backing file '{shown(backing)}' is a dangling symbolic link: "
                             "not creating its target", errno=_errno.ENOENT) from None
        if size is None:
            raise FleetError(f"backing file '{shown(backing)}' does not exist: give --size to "
                             "create it (sparse)", errno=_errno.ENOENT) from None
        if not os.path.isdir(os.path.dirname(os.path.abspath(backing))):
            raise FleetError(f"cannot create backing file '{shown(backing)}': its directory "
                             "does not exist", errno=_errno.ENOENT) from None
        return None
    refuse_non_disk(st, backing, "backing file")
    actual = backing_size(os.fsencode(backing))
    if size is not None and actual != size:
        raise FleetError(f"backing file '{shown(backing)}' is {actual} bytes, not --size {size}: "
                         "leave --size out to use it as it is", errno=_errno.EINVAL)
    return actual


def _create_backing(backing: str, size: int) -> None:
    """A new sparse file of `size` bytes (O_EXCL: never over a file that appeared meanwhile)."""
    fd = os.open(backing, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def _guest_paths(directory: str, n: int) -> list[tuple[str, str]]:
    paths = [(os.path.join(directory, f"guest{k}.cow"), os.path.join(directory, f"guest{k}.log"))
             for k in range(1, n + 1)]
    for cow, log in paths:
        for path in (cow, log):
            if os.path.lexists(path):
                raise FleetError(f"'{shown(path)}' already exists: fleet makes new COW files "
                                 "(remove the old guests, or use another --dir)",
                                 errno=_errno.EEXIST)
    return paths


def _statvfs(path: str) -> HostSpace:
    vfs = os.statvfs(path)
    avail = vfs.f_bavail * vfs.f_frsize
    return HostSpace(path=path, filesystem_bytes=vfs.f_blocks * vfs.f_frsize,
                     free_bytes=vfs.f_bfree * vfs.f_frsize, available_bytes=avail,
                     left_bytes=avail, left_basis="f_bavail")


def worst_case(guests: list[GuestRun], size: int, left: int) -> WorstCase:
    """Every guest fills its disk: who fits, in guest order, in the space left."""
    needs = [max(0, g.apparent_bytes - g.allocated_bytes) for g in guests]
    fit, used = 0, 0
    for need in needs:
        if used + need > left:
            break
        used += need
        fit += 1
    total = sum(needs)
    return WorstCase(disks_bytes=len(guests) * size, need_bytes=total, left_bytes=left,
                     guests_that_fit=fit, shortfall_bytes=max(0, total - left),
                     fits=total <= left)


def _measure(cow: str) -> tuple[int, int, int]:
    """(apparent, allocated, marked) of a COW file, after fsync (final st_blocks)."""
    fd = os.open(cow, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    with CowImage.open(cow) as image:
        marked = image.count_marked()
    return st.st_size, st.st_blocks * 512, marked


TAIL_BYTES = 4096                # of each guest's output kept in memory (its last line)


class _Running:
    """One `ubdsim run` child: its output copied to its log as it comes (a full host may
    refuse the log: its tail is still kept here), its exit seen through a pidfd."""

    def __init__(self, number: int, cow: str, log: str, slot: int, argv: list[str],
                 cpu: int) -> None:
        self.number, self.cow, self.log, self.slot = number, cow, log, slot
        self.tail = b""
        self.log_error: str | None = None
        self.eof = False
        self.exit: tuple[int, int] | None = None        # (status, peak RSS bytes)
        self.logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        except BaseException:
            os.close(self.logfd)
            raise
        self.started = time.monotonic()
        self.pidfd = os.pidfd_open(self.proc.pid)

    @property
    def out(self) -> int:
        return self.proc.stdout.fileno()          # type: ignore[union-attr]

    @property
    def finished(self) -> bool:
        return self.eof and self.exit is not None

    def feed(self) -> None:
        data = os.read(self.out, 1 << 16)
        if not data:
            self.eof = True
            return
        self.tail = (self.tail + data)[-TAIL_BYTES:]
        while data and self.log_error is None:
            try:
                data = data[os.write(self.logfd, data):]
            except OSError as err:
                self.log_error = err.strerror      # ENOSPC: the host is full for the log too

    def reap(self, block: bool = True) -> None:
        pid, wstatus, usage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(wstatus)
        self.proc.returncode = code
        self.exit = (code if code >= 0 else 128 - code, usage.ru_maxrss * 1024)

    def last_line(self) -> str | None:
        """The last line of its output that says "error" (dd's summary lines come after its
        error), else its last line."""
        lines = [line.strip() for line in self.tail.decode(errors="replace").splitlines()
                 if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or [None])[-1]

    def close(self) -> None:
        for close in (lambda: os.close(self.logfd), lambda: os.close(self.pidfd),
                      self.proc.stdout.close):                 # type: ignore[union-attr]
            try:
                close()
            except OSError:
                pass


def run_fleet(n: int, backing: str, *, size: int | None = None, workload: str = DEFAULT_WORKLOAD,
              directory: str = ".", jobs: int | None = None, kernel: str | None = None,
              progress: Progress | None = None) -> FleetReport:
    """Make `n` COW files over `backing` in `directory`, run `workload` for each guest under
    `ubdsim run`, at most `jobs` at a time, and measure what the host holds (see above)."""
    started = time.monotonic()
    if n < 1:
        raise FleetError(f"the number of guests must be at least 1, not {n}")
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise FleetError(f"--jobs must be at least 1, not {jobs}")
    profile = get_profile(kernel)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise FleetError(f"--dir '{shown(directory)}' exists and is not a directory",
                         errno=_errno.ENOTDIR)
    for name, path in (("backing file", backing), ("--dir", directory)):
        if "," in os.path.abspath(path):
            raise FleetError(f"{name} '{shown(path)}': a path with a comma cannot be named in a "
                             "ubd option (the kernel splits ubd0=COW,BACKING at commas)")
    if size is not None and size < 1:
        raise FleetError(f"--size must be at least 1 byte, not {size}")
    existing = _check_backing(backing, size)     # every refusal before anything is made
    paths = _guest_paths(directory, n)
    os.makedirs(directory, exist_ok=True)
    created = existing is None
    if created:
        _create_backing(backing, size)
    disk = size if existing is None else existing
    device = "/dev/" + profile.device.disk_name(0)
    command = ubdsim_command()
    cpus = sorted(os.sched_getaffinity(0))
    guests: dict[int, GuestRun] = {}
    running: dict[int, _Running] = {}
    warnings: list[str] = []
    header_backing = backing
    pending = list(range(1, n + 1))
    free_slots = list(range(jobs))
    selector = selectors.DefaultSelector()
    try:
        while pending or running:
            while pending and free_slots:
                k = pending.pop(0)
                cow, log = paths[k - 1]
                try:
                    made = make_cow(cow, backing, profile=profile)
                except OSError as err:
                    if err.errno not in HOST_FULL:
                        raise
                    # The host is full: that is a fleet's outcome to report, not bad input.
                    guests[k] = GuestRun(number=k, cow=cow, log=None, status=1, seconds=0.0,
                                         max_rss_bytes=0, apparent_bytes=0, allocated_bytes=0,
                                         sectors_marked=0, error="cannot create its COW file: "
                                         f"{err.strerror}")
                    if progress:
                        progress(len(guests), n)
                    continue
                if k == 1:
                    warnings += made.warnings
                    header_backing = made.backing
                slot = free_slots.pop(0)
                script = workload.replace("{dev}", device).replace("{n}", str(k))
                argv = [*command, "run", "--kernel", profile.name,
                        f"ubd0={os.path.abspath(cow)},{made.backing}", "--", "sh", "-c", script]
                entry = _Running(k, cow, log, slot, argv, cpus[slot % len(cpus)])
                running[k] = entry
                selector.register(entry.out, selectors.EVENT_READ, ("out", entry))
                selector.register(entry.pidfd, selectors.EVENT_READ, ("exit", entry))
            if not running:
                continue                             # every guest left failed to start
            for key, _ in selector.select():
                kind, entry = key.data
                if kind == "out":
                    entry.feed()
                    if entry.eof:
                        selector.unregister(key.fd)
                else:
                    entry.reap()
                    selector.unregister(key.fd)
                if not entry.finished:
                    continue
                del running[entry.number]
                entry.close()
                free_slots.append(entry.slot)
                free_slots.sort()
                status, rss = entry.exit
                apparent, allocated, marked = _measure(entry.cow)
                error = entry.last_line() if status else None
                if entry.log_error is not None:
                    error = f"{error or 'no output'} (its log is incomplete: {entry.log_error})"
                guests[entry.number] = GuestRun(
                    number=entry.number, cow=entry.cow, log=entry.log, status=status,
                    seconds=round(time.monotonic() - entry.started, 3), max_rss_bytes=rss,
                    apparent_bytes=apparent, allocated_bytes=allocated, sectors_marked=marked,
                    error=error)
                if progress:
                    progress(len(guests), n)
    finally:
        _stop(running)
        selector.close()
    ordered = [guests[k] for k in sorted(guests)]
    bst = os.stat(backing)
    host = _statvfs(os.path.abspath(directory))
    cow_apparent = sum(g.apparent_bytes for g in ordered)
    cow_allocated = sum(g.allocated_bytes for g in ordered)
    note = None
    if profile.name != "6.1":
        note = (f"profile {profile.name}: no {profile.name} kernel runs on this host, so what it "
                "does on a full host disk was not measured; the lines above are linux.uml 6.1's")
    return FleetReport(
        guests_asked=n, backing=header_backing, backing_created=created, size=disk,
        kernel=profile.name, device=device, workload=workload,
        directory=os.path.abspath(directory), jobs=jobs, guests=ordered,
        failed=sum(1 for g in ordered if g.status), cow_apparent_bytes=cow_apparent,
        cow_allocated_bytes=cow_allocated, backing_apparent_bytes=bst.st_size,
        backing_allocated_bytes=bst.st_blocks * 512,
        apparent_bytes=cow_apparent + bst.st_size,
        allocated_bytes=cow_allocated + bst.st_blocks * 512,
        backing_on_same_filesystem=bst.st_dev == os.stat(directory).st_dev,
        overbooking=cow_apparent / host.filesystem_bytes if host.filesystem_bytes else 0.0,
        host=host, worst_case=worst_case(ordered, disk, host.left_bytes),
        when_host_fills=WhenHostFills(**{**asdict(WHEN_HOST_FILLS), "profile_note": note}),
        seconds=round(time.monotonic() - started, 3),
        fleet_max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        max_guest_rss_bytes=max((g.max_rss_bytes for g in ordered), default=0),
        warnings=warnings)


def _stop(running: dict[int, _Running]) -> None:
    """Stop the guests still running (interrupted): SIGTERM, which `ubdsim run` passes on to
    its whole guest tree, then wait for each (a second Ctrl-C does not orphan them)."""
    for entry in running.values():
        if entry.exit is None:
            try:
                os.kill(entry.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for entry in running.values():
        while entry.exit is None:
            try:
                entry.reap()
            except ChildProcessError:
                break
            except KeyboardInterrupt:
                continue
        entry.close()
    running.clear()


__all__ = ["DEFAULT_WORKLOAD", "FleetError", "FleetReport", "GuestRun", "HostSpace",
           "WhenHostFills", "WorstCase", "default_jobs", "run_fleet", "ubdsim_command",
           "worst_case"]
