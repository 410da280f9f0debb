"""Crash states of a recorded run, each checked by the user's command on the device it leaves.

A crash state is what the host files hold after a crash at some point of the run, as the
next boot would read them. Two models, with their choices named:

process (default): ubdsim (or UML) dies; the host kernel keeps every write that completed.
  The states are the prefixes of the log's host writes: the files after the first p host
  writes, for every crash point p. While the lab records, a COW unit's request makes the
  kernel's own host calls (device/unit.py _write_segments(): each 4 KiB segment's data, then
  its bitmap words, as do_io() and update_bitmap() [6.1]), so the points include every
  request boundary and every state inside a multi-segment request, data without its bit
  among them. The guest's dirty pages are not host writes: a crash loses them.

power: the host loses power; writes since the last host sync of their file may be lost.
  A write is durable when its file was opened O_SYNC (flag s) or fsynced after it (no
  profile does; `serve --flush fsync` does). At each crash point, every set of at most K
  (--max-drop, default 1) lost pieces is a state, where a piece is the part of one volatile
  host write inside one 512-byte sector of its file (sector atomicity: a sector is written
  whole or not at all; a longer write can tear between sectors). A lost piece reverts its
  sector to what the surviving writes leave there (so a lost write with a later write of the
  same sector surviving is the reordering "the later write reached the disk first"). File
  creation and a resize (whole-file records) are durable; the file keeps its length.
  Candidates are tried newest write first (a volatile cache loses the most recent writes
  first); pieces that change nothing (an identical rewrite, a sector written again later)
  are skipped, and sets of K > 1 are built from pieces that change the file alone.
  Under 6.1 with no flag s no host sync exists at all: the whole run is one epoch, and the
  report says so.

Crash points (--points): every host write (`writes`, the process default), every request
boundary (`requests`), every guest flush (`flushes`, the power default: where the guest
believes its data is safe) or mark (`marks`), or the end only (`end`); --after MARK keeps
those at or after a mark. For each state the unit's device is built (device_image.py: a
COW file merged with its backing file through the device view, or the raw file) and
`sh -c CMD` runs with {device} replaced by a private copy of it ({cow}: a copy of the COW
file, {backing}: the backing file, read-only by convention); exit status 0 passes. States
that leave the same device (same content) are checked once.
"""
from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

from ..device.api import SECTOR_SIZE
from ..device.hostio import pread_full
from ..errors import UbdError, UsageError
from ..fileio import copy_range, data_extents, shown
from .device_image import DeviceImage, UnitFiles
from .logformat import HOST_WRITE_KINDS, Log
from .replay import FileSet, ReplayError, matching_copy

MODELS = ("process", "power")
POINTS = ("writes", "requests", "flushes", "marks", "end")
DEFAULT_POINTS = {"process": "writes", "power": "flushes"}
DEFAULT_MAX = 1000
OUTPUT_TAIL = 2000
LIST_WRITES = 12


@dataclass(frozen=True)
class Piece:
    """A part of one host write inside one 512-byte sector of its file."""

    w: int
    fid: int
    offset: int
    length: int

    @property
    def sector(self) -> int:
        return self.offset // SECTOR_SIZE

    def label(self) -> str:
        return f"#{self.w}@{self.offset}+{self.length}"


@dataclass(frozen=True)
class WriteInfo:
    w: int
    text: str


@dataclass(frozen=True)
class FailedState:
    state: str
    point: int
    dropped: tuple[Piece, ...]
    status: int | None              # the check's exit status (None: timed out)
    output: str                     # the check's last output
    since_pass: int | None          # process: the last passing crash point before this one
    writes: tuple[WriteInfo, ...]   # what makes the difference (see CrashReport)
    next_write: WriteInfo | None    # process: the write the crash came just before
    same_device: int = 0            # later states that left the same device


@dataclass(frozen=True)
class CrashReport:
    """`failed`: the failing devices, smallest state first (fewest writes, then fewest lost
    pieces). Their `writes` are, for the process model, the host writes between the last
    passing crash point before them and them (what broke it); for the power model, the lost
    pieces' writes."""

    log: str
    model: str
    points: str
    after: str | None
    unit: int
    command: str
    max_drop: int
    notes: tuple[str, ...]
    host_writes: int
    crash_points: int
    states: int                     # enumerated (duplicates and no-device states included)
    checked: int                    # distinct devices checked
    duplicates: int                 # states that left a device already checked
    failed_states: int              # states whose device failed (duplicates included)
    passed: int                     # distinct devices that passed
    no_device: int                  # states in which the unit cannot be opened at all
    complete: bool                  # False: stopped by --max
    stopped_at: int | None
    elapsed: float
    failed: tuple[FailedState, ...] = field(default_factory=tuple)

    @property
    def per_second(self) -> float:
        return self.checked / self.elapsed if self.elapsed > 0 else 0.0


class CrashError(UbdError):
    """The crash states cannot be built (no such unit, a backing file that changed)."""


# -- what the log says -------------------------------------------------------------------------
def unit_table(log: Log) -> dict[int, UnitFiles]:
    units: dict[int, UnitFiles] = {}
    for r in log.records:
        if r["k"] == "open" and r["u"] not in units:
            units[r["u"]] = UnitFiles(r["u"], r["f"], bool(r.get("cow")), r.get("b"),
                                      r.get("size") or 0)
    return units


def describe_writes(log: Log) -> dict[int, str]:
    """w -> "#w c.cow pwrite 16384+4096 (data), for ubda write 8+8 sectors"."""
    from .trace import _profile_rules
    rules = _profile_rules(log.header.get("kernel"))
    names = {fid: os.path.basename(e.get("given") or e["path"]) for fid, e in log.files.items()}
    current: dict[int, dict] = {}
    out: dict[int, str] = {}
    for r in log.records:
        kind = r["k"]
        if kind == "req":
            current[r["u"]] = r
        elif kind in ("open", "close"):
            current.pop(r.get("u"), None)
        if kind not in HOST_WRITE_KINDS:
            continue
        name = names.get(r["f"], f"file{r['f']}")
        if kind == "hw":
            text = f"#{r['w']} {name} pwrite {r['o']}+{r.get('n', 0)} ({r.get('why', '?')})"
        elif kind == "hf":
            text = f"#{r['w']} {name} {r['op']} {r['o']}+{r['len']}"
        else:
            text = f"#{r['w']} {name} {r.get('why')}: whole file, {r['len']} bytes"
        req = current.get(r.get("u"))
        if req is not None and kind != "content":
            disk = rules.disk_name(req["u"]) if rules is not None else f"ubd{req['u']}"
            text += f", for {disk} {req['op']} {req['s']}+{req['c']} sectors"
        out[r["w"]] = text
    return out


def crash_points(log: Log, kind: str, after: str | None) -> list[int]:
    total = len(log.host_writes())
    if kind == "writes":
        points = set(range(total + 1))
    elif kind == "end":
        points = {total}
    else:
        points, writes = set(), 0
        for r in log.records:
            if r["k"] in HOST_WRITE_KINDS:
                writes += 1
            elif (kind == "requests" and r["k"] == "req") or (kind == "flushes" and r["k"] == "flush"):
                points.add(writes)
            elif kind == "marks" and r["k"] == "mark":
                points.add(r["after"])
        if kind in ("requests", "flushes"):
            points.add(total)
    if after is not None:
        marks = log.marks()
        if after not in marks:
            raise UsageError(f"--after {after}: no such mark in the log (marks: "
                             f"{', '.join(marks) or 'none'})")
        points = {p for p in points if p >= marks[after]}
    return sorted(points)


def durability_notes(log: Log, model: str) -> tuple[list[str], dict[int, list[int]]]:
    """The report's notes on host syncs, and each file's sync points (host-write counts)."""
    syncs: dict[int, list[int]] = {}
    sync_units, writes = set(), 0
    for r in log.records:
        if r["k"] in HOST_WRITE_KINDS:
            writes += 1
        elif r["k"] == "sync":
            syncs.setdefault(r["f"], []).append(writes)
        elif r["k"] == "open" and r.get("sync"):
            sync_units.add(r["u"])
    notes = []
    if not syncs and not sync_units:
        kernel = log.header.get("kernel")
        notes.append("no host sync in this log: no unit has flag s and no unit file was fsynced"
                     + (" (under 6.1 a guest flush reaches no host file: measured)"
                        if kernel == "6.1" else "")
                     + (": the whole run is one epoch, any write may be lost" if model == "power"
                        else ""))
    if sync_units:
        notes.append("units " + ", ".join(map(str, sorted(sync_units))) + " have flag s: their "
                     "host writes are durable when they return (O_SYNC)"
                     + (": the power model can lose none of them" if model == "power" else ""))
    if syncs:
        notes.append(f"{sum(map(len, syncs.values()))} host fsyncs of unit files")
    if model == "process":
        notes.append("process model: the host keeps every completed write; states are the "
                     "prefixes of the host writes")
    return notes, syncs


# -- the power model's memory of each sector ---------------------------------------------------
class History:
    """Every write to every file sector since the file's last whole-file record, and the
    sector's content before the first of them: what a sector holds when some are lost."""

    def __init__(self, log: Log, files: FileSet, syncs: dict[int, list[int]]) -> None:
        self.log = log
        self.files = files
        self.syncs = syncs
        self.entries: dict[tuple[int, int], list[tuple[int, int, int, dict]]] = {}
        self.base: dict[tuple[int, int], bytes] = {}

    def before(self, record: dict[str, Any]) -> None:
        fid = record["f"]
        if record["k"] == "content":
            for key in [k for k in self.base if k[0] == fid]:
                del self.base[key]
                self.entries.pop(key, None)
            return
        fd = self.files.fds.get(fid)
        for lo, hi in _sector_spans(record):
            key = (fid, lo // SECTOR_SIZE)
            if key not in self.base:
                start = key[1] * SECTOR_SIZE
                self.base[key] = (pread_full(fd, SECTOR_SIZE, start) if fd is not None
                                  else bytes(SECTOR_SIZE))

    def after(self, record: dict[str, Any]) -> None:
        if record["k"] == "content":
            return
        for lo, hi in _sector_spans(record):
            self.entries.setdefault((record["f"], lo // SECTOR_SIZE), []).append(
                (record["w"], lo, hi, record))

    def durable(self, record: dict[str, Any], point: int) -> bool:
        if record["k"] == "content" or record.get("sync"):
            return True
        return any(record["w"] <= s <= point for s in self.syncs.get(record["f"], ()))

    def content(self, fid: int, sector: int, lost: set[tuple[int, int]]) -> bytes:
        """Sector `sector` of `fid` with the pieces (w, sector) in `lost` not written."""
        data = bytearray(self.base[(fid, sector)])
        start = sector * SECTOR_SIZE
        for w, lo, hi, record in self.entries.get((fid, sector), ()):
            if (w, sector) in lost:
                continue
            if record["k"] == "hw":
                payload = self.log.payload(record)
                data[lo - start:hi - start] = payload[lo - record["o"]:hi - record["o"]]
            else:
                data[lo - start:hi - start] = bytes(hi - lo)
        return bytes(data)


def _differing(a: bytes, b: bytes) -> tuple[int, int] | None:
    """The smallest [lo, hi) outside which `a` and `b` (same length) are equal."""
    if a == b:
        return None
    lo = next(i for i in range(len(a)) if a[i] != b[i])
    hi = next(i for i in range(len(a), 0, -1) if a[i - 1] != b[i - 1])
    return lo, hi


def _sector_spans(record: dict[str, Any]) -> Iterator[tuple[int, int]]:
    lo = record["o"]
    hi = lo + (record.get("n", 0) if record["k"] == "hw" else record["len"])
    while lo < hi:
        end = min(hi, (lo // SECTOR_SIZE + 1) * SECTOR_SIZE)
        yield lo, end
        lo = end


# -- running the checks ----------------------------------------------------------------------
@dataclass
class _Job:
    key: int
    proc: subprocess.Popen
    slot: int
    deadline: float
    pidfd: int | None = None        # readable once the process has exited (no polling)


class Checker:
    """`sh -c CMD` on private copies of the device, up to `jobs` at once."""

    def __init__(self, command: str, directory: str, jobs: int, timeout: float,
                 want_cow: bool) -> None:
        self.command, self.directory, self.timeout = command, directory, timeout
        self.want_cow = want_cow
        self.free = list(range(jobs))
        self.running: list[_Job] = []
        self.results: dict[int, tuple[int | None, str]] = {}
        self.failures = 0

    def path(self, slot: int, what: str) -> str:
        return os.path.join(self.directory, f"check{slot}-{what}")

    def submit(self, key: int, image: DeviceImage, cow_path: str | None, backing: str | None,
               state: str) -> None:
        if not self.free:
            self._reap(self._next_done())
        slot = self.free.pop(0)
        device = self.path(slot, "device.img")
        fd = os.open(device, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            image.copy_to(fd)
        finally:
            os.close(fd)
        values = {"device": device, "backing": backing or ""}
        if self.want_cow:
            values["cow"] = self.path(slot, "cow")
            _sparse_copy(cow_path, values["cow"])
        command = self.command
        for name, value in values.items():
            command = command.replace("{" + name + "}", shlex.quote(value))
        out = open(self.path(slot, "output"), "wb")
        env = dict(os.environ, UBDSIM_CRASH_STATE=state)
        proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        out.close()
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None                    # Popen.wait(timeout) polls instead
        self.running.append(_Job(key, proc, slot, time.monotonic() + self.timeout, pidfd))

    def _next_done(self) -> _Job:
        """The first running check to finish (or to pass its deadline)."""
        if all(job.pidfd is not None for job in self.running):
            timeout = max(0.0, min(job.deadline for job in self.running) - time.monotonic())
            ready, _, _ = select.select([job.pidfd for job in self.running], [], [], timeout)
            if ready:
                return next(job for job in self.running if job.pidfd == ready[0])
            return min(self.running, key=lambda job: job.deadline)
        return self.running[0]

    def _reap(self, job: _Job) -> None:
        try:
            status: int | None = job.proc.wait(timeout=max(0.0, job.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(job.proc.pid, 9)
            except ProcessLookupError:
                pass
            job.proc.wait()
            status = None
        if job.pidfd is not None:
            os.close(job.pidfd)
        output = ""
        if status != 0:
            with open(self.path(job.slot, "output"), "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - OUTPUT_TAIL))
                output = f.read().decode("utf-8", "replace")
            if status is None:
                output += f"\n(timed out after {self.timeout:g} s: killed)"
        self.results[job.key] = (status, output)
        if status != 0:
            self.failures += 1
        self.running.remove(job)
        self.free.append(job.slot)

    def drain(self) -> None:
        while self.running:
            self._reap(self._next_done())

    def stop(self) -> None:
        for job in list(self.running):
            try:
                os.killpg(job.proc.pid, 9)
            except ProcessLookupError:
                pass
            job.proc.wait()
            if job.pidfd is not None:
                os.close(job.pidfd)
        self.running.clear()


def _sparse_copy(src: str | None, dst: str) -> None:
    """A sparse copy of `src` at `dst`; no `dst` at all when `src` does not exist (a crash
    state before the COW file was created)."""
    if os.path.lexists(dst):
        os.unlink(dst)
    if src is None or not os.path.exists(src):
        return
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        s = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(s).st_size
            os.ftruncate(fd, size)
            for lo, hi in data_extents(s, 0, size):
                copy_range(s, fd, hi - lo, lo, lo)
        finally:
            os.close(s)
    finally:
        os.close(fd)


# -- the enumeration -------------------------------------------------------------------------
@dataclass
class _State:
    point: int
    dropped: tuple[Piece, ...]
    key: int | None = None          # the check that judged its device (None: no device)

    @property
    def name(self) -> str:
        return f"p{self.point}" + "".join("-" + p.label() for p in self.dropped)


def check_command(command: str) -> None:
    if "{device}" not in command and "{cow}" not in command:
        raise UsageError("--check needs {device} (or {cow}) where the crash state's device goes, "
                         "e.g. --check 'e2fsck -fn {device}'")


def crash(log: Log, command: str, *, model: str = "process", points: str | None = None,
          after: str | None = None, unit: int | None = None, max_states: int = DEFAULT_MAX,
          max_drop: int = 1, jobs: int = 1, timeout: float = 60.0, from_dir: str | None = None,
          workdir: str | None = None,
          progress: Callable[[int, int, int, int], None] | None = None) -> CrashReport:
    """Enumerate the crash states of `log` and run `command` on each (see the module doc)."""
    check_command(command)
    if model not in MODELS:
        raise UsageError(f"--model {model}: process or power")
    points = points or DEFAULT_POINTS[model]
    units = unit_table(log)
    if not units:
        raise CrashError("the log records no unit being opened: no device to check")
    if unit is None:
        written = {r["f"] for r in log.records if r["k"] in HOST_WRITE_KINDS}
        unit = next((u for u, info in sorted(units.items()) if info.fid in written), min(units))
    if unit not in units:
        raise UsageError(f"--unit {unit}: the log has units {', '.join(map(str, sorted(units)))}")
    info = units[unit]
    chosen = crash_points(log, points, after)
    notes, syncs = durability_notes(log, model)
    backing_paths = _verified_backings(log, info, from_dir)
    scratch = tempfile.mkdtemp(prefix="ubdsim-crash-", dir=workdir)
    started = time.monotonic()
    try:
        os.mkdir(os.path.join(scratch, "files"))
        try:
            files = FileSet(log, os.path.join(scratch, "files"), from_dir)
        except ReplayError as err:
            raise CrashError(str(err), errno=err.errno) from None
        image = DeviceImage(info, files, os.path.join(scratch, "device.img"), backing_paths)
        history = History(log, files, syncs) if model == "power" else None
        checker = Checker(command, scratch, max(1, jobs), timeout, "{cow}" in command)
        backing = backing_paths.get(info.backing_fid) if info.backing_fid is not None else None
        try:
            run = _Run(log, files, image, history, checker, info, max_states, max_drop, backing,
                       dedupe="{cow}" not in command)
            run.go(chosen, progress)
            checker.drain()
        except BaseException:
            checker.stop()
            raise
        finally:
            image.close()
            files.close()
        return _report(log, run, checker, model, points, after, unit, command, max_drop, notes,
                       len(chosen), time.monotonic() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _verified_backings(log: Log, info: UnitFiles, from_dir: str | None) -> dict[int, str]:
    """Every backing file the unit's COW file may name, checked against the log's sha256."""
    paths: dict[int, str] = {}
    wanted = {r.get("b") for r in log.records if r["k"] == "open" and r["u"] == info.unit}
    wanted.discard(None)
    for fid in sorted(wanted):
        entry = log.files[fid]
        found = matching_copy(entry, from_dir)
        if found is None:
            raise CrashError(f"backing file '{shown(entry['path'])}' is not what the run read "
                             "(its sha256 differs from the log's, or it is gone): pass --from DIR "
                             "with a copy of the original")
        paths[fid] = found
    return paths


class _Run:
    def __init__(self, log: Log, files: FileSet, image: DeviceImage, history: History | None,
                 checker: Checker, info: UnitFiles, max_states: int, max_drop: int,
                 backing: str | None, dedupe: bool) -> None:
        self.log, self.files, self.image, self.history = log, files, image, history
        self.checker, self.info = checker, info
        self.max_states, self.max_drop, self.backing, self.dedupe = max_states, max_drop, backing, dedupe
        self.states: list[_State] = []
        self.seen: dict[int, int] = {}        # device digest -> check key
        self.checks: list[_State] = []        # the state each check key judged
        self.stopped_at: int | None = None
        self.progress = None
        self.points_done = self.total_points = 0

    def advance_to(self, point: int) -> None:
        while self.files.point < point:
            record = self.files.writes[self.files.point]
            if self.history is not None:
                self.history.before(record)
            self.files.advance()
            if self.history is not None:
                self.history.after(record)
            if record["k"] == "content":
                self.image.changed(record["f"], 0, 0, whole=True)
            else:
                end = record["o"] + (record.get("n", 0) if record["k"] == "hw" else record["len"])
                self.image.changed(record["f"], record["o"], end)

    def go(self, points: list[int], progress) -> None:
        self.progress, self.total_points = progress, len(points)
        for done, point in enumerate(points):
            self.points_done = done
            self.advance_to(point)
            if not self._state(point, ()):
                self.stopped_at = point
                return
            if self.history is not None and not self._drops(point):
                self.stopped_at = point
                return
        self.points_done = len(points)
        self._tick()

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.points_done, self.total_points, len(self.checks),
                          self.checker.failures)

    def _state(self, point: int, dropped: tuple[Piece, ...]) -> bool:
        """Record (and check, if its device is new) one state; False once --max is reached."""
        state = _State(point, dropped)
        if self.image.problem is not None:
            self.states.append(state)
            return True
        digest = self.image.digest
        if self.dedupe and digest in self.seen:
            state.key = self.seen[digest]
            self.states.append(state)
            return True
        if len(self.checks) >= self.max_states:
            return False
        state.key = len(self.checks)
        self.checks.append(state)
        if self.dedupe:
            self.seen[digest] = state.key
        self.states.append(state)
        cow = self.files.paths[self.info.fid] if self.info.cow else None
        self.checker.submit(state.key, self.image, cow, self.backing, state.name)
        self._tick()
        return True

    def _pieces(self, point: int) -> Iterator[Piece]:
        """Volatile pieces at `point`, newest write first, that change their sector alone."""
        history = self.history
        assert history is not None
        current: dict[tuple[int, int], bytes] = {}
        for record in reversed(self.files.writes[:point]):
            if record["k"] == "content" or history.durable(record, point):
                continue
            fid = record["f"]
            fd = self.files.fds.get(fid)
            if fd is None:
                continue
            for lo, hi in _sector_spans(record):
                sector = lo // SECTOR_SIZE
                now = current.get((fid, sector))
                if now is None:
                    now = current[(fid, sector)] = pread_full(fd, SECTOR_SIZE, sector * SECTOR_SIZE)
                if history.content(fid, sector, {(record["w"], sector)}) != now:
                    yield Piece(record["w"], fid, lo, hi - lo)

    def _drops(self, point: int) -> bool:
        pieces = self._pieces(point)
        if self.max_drop == 1:
            candidates: Iterator[tuple[Piece, ...]] = ((p,) for p in pieces)
        else:
            listed = list(pieces)
            candidates = (combo for k in range(1, self.max_drop + 1)
                          for combo in combinations(listed, k))
        for combo in candidates:
            if not self._patched(point, combo):
                return False
        return True

    def _patched(self, point: int, combo: tuple[Piece, ...]) -> bool:
        """The state with `combo` lost: patch the rebuilt files, judge, put them back."""
        history = self.history
        assert history is not None
        lost = {(p.w, p.sector) for p in combo}
        saved = []
        for fid, sector in sorted({(p.fid, p.sector) for p in combo}):
            fd = self.files.fds[fid]
            start = sector * SECTOR_SIZE
            size = os.fstat(fd).st_size
            length = min(SECTOR_SIZE, size - start)
            if length <= 0:
                continue
            now = pread_full(fd, length, start)
            then = history.content(fid, sector, lost)[:length]
            span = _differing(now, then)
            if span is None:
                continue
            lo, hi = start + span[0], start + span[1]
            saved.append((fid, lo, now[span[0]:span[1]]))
            os.pwrite(fd, then[span[0]:span[1]], lo)
            # only the bytes that differ: a bitmap sector's 512 bytes cover 4096 sectors
            self.image.changed(fid, lo, hi)
        try:
            return self._state(point, combo)
        finally:
            for fid, lo, now in saved:
                os.pwrite(self.files.fds[fid], now, lo)
                self.image.changed(fid, lo, lo + len(now))


def _report(log: Log, run: _Run, checker: Checker, model: str, points: str, after: str | None,
            unit: int, command: str, max_drop: int, notes: list[str], crash_points_n: int,
            elapsed: float) -> CrashReport:
    results = checker.results
    descriptions = describe_writes(log)

    def info(w: int) -> WriteInfo:
        return WriteInfo(w, descriptions.get(w, f"#{w}"))

    failed: list[tuple[int, FailedState]] = []
    failed_states = no_device = duplicates = 0
    last_pass: int | None = None
    first_state: dict[int, _State] = {}
    same: dict[int, int] = {}
    for state in run.states:
        if state.key is None:
            no_device += 1
            continue
        status, output = results[state.key]
        if run.checks[state.key] is not state:
            duplicates += 1
            if status != 0:
                failed_states += 1
                same[state.key] = same.get(state.key, 0) + 1
            elif not state.dropped:
                last_pass = state.point
            continue
        if status == 0:
            if not state.dropped:
                last_pass = state.point
            continue
        failed_states += 1
        first_state[state.key] = state
        if state.dropped:
            writes = tuple(info(p.w) for p in state.dropped)
            failed.append((state.key, FailedState(state.name, state.point, state.dropped, status,
                                                  output, None, writes, None)))
        else:
            lo = (last_pass if last_pass is not None else 0) + 1
            ws = list(range(lo, state.point + 1))
            shown_ws = ws if len(ws) <= LIST_WRITES else ws[:LIST_WRITES // 2] + ws[-LIST_WRITES // 2:]
            nxt = info(state.point + 1) if state.point < len(run.files.writes) else None
            failed.append((state.key, FailedState(state.name, state.point, (), status, output,
                                                  last_pass, tuple(info(w) for w in shown_ws),
                                                  nxt)))
    ordered = sorted((replace(f, same_device=same.get(key, 0)) for key, f in failed),
                     key=lambda f: (f.point, len(f.dropped), [-p.w for p in f.dropped]))
    passed = sum(1 for key, (status, _) in results.items() if status == 0)
    return CrashReport(
        log=log.path, model=model, points=points, after=after, unit=unit, command=command,
        max_drop=max_drop, notes=tuple(notes), host_writes=len(run.files.writes),
        crash_points=crash_points_n, states=len(run.states), checked=len(run.checks),
        duplicates=duplicates, failed_states=failed_states, passed=passed, no_device=no_device,
        complete=run.stopped_at is None, stopped_at=run.stopped_at, elapsed=elapsed,
        failed=tuple(ordered))


__all__ = ["CrashError", "CrashReport", "FailedState", "MODELS", "POINTS", "Piece", "WriteInfo",
           "crash", "crash_points", "describe_writes", "unit_table"]
