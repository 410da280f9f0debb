"""Fault injection (`--inject SPEC` on run, serve, vm): failing the device model's host calls.

The device model asks the bus's injector (`EventBus.injector`, None unless --inject was
given: then a unit's host call costs one attribute test) before each pread and pwrite of a
unit's file (`Unit._pread`, `Unit._pwrite`, the `_read_runs` fast path). For a call a SPEC
(inject_spec.py) picks, it does what the kernel's host would have done:
- error=E: the call fails with E and nothing is read or written. The request ends as do_io()
  ends it [6.1]: map_error() makes ENOSPC BLK_STS_NOSPC (the guest gets ENOSPC),
  ENOSYS/EOPNOTSUPP BLK_STS_NOTSUPP (EOPNOTSUPP), anything else BLK_STS_IOERR (EIO);
- torn=B: the first B bytes reach the file, then the call fails as a short pwrite does:
  do_io() sees `n != len` and map_error(-n) of a positive count is BLK_STS_IOERR (EIO);
- crash: the call completes, then ubdsim stops as a SIGKILL would stop it: the lab log is
  flushed (it holds the write and the fault), one line goes to stderr, and the process
  exits at once with CRASH_STATUS (137, 128+SIGKILL) without closing or writing anything
  else (the guest of `run` dies with it: PTRACE_O_EXITKILL; qemu of `vm`: its pdeathsig).
The failed request's kernel lines are not printed here: the front end prints them where the
kernel's block layer would (under `run`, the harness's blk_print_req_error() line for an
O_DIRECT write or a write-back; a `vm` guest's own kernel prints its lines).
Every injected fault is a `fault` event on the bus, which the lab's recorder logs.
"""
from __future__ import annotations

import errno as _errno
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..device.api import SECTOR_SIZE
from ..device.events import EventBus
from ..device.hostio import pwrite_once
from ..errors import DeviceIOError
from ..fileio import shown
from .inject_spec import CRASH_STATUS, FaultSpec

if TYPE_CHECKING:
    from ..device.unit import Unit


def map_error(host_errno: int) -> int:
    """do_io()'s map_error() [6.1], then blk_status_to_errno(): the guest's errno."""
    if host_errno == _errno.ENOSPC:
        return _errno.ENOSPC
    if host_errno in (_errno.ENOSYS, _errno.EOPNOTSUPP):
        return _errno.EOPNOTSUPP
    return _errno.EIO


class _Counter:
    """One SPEC's state: matching calls so far, bytes its matching writes wrote."""

    __slots__ = ("spec", "calls", "written")

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.calls = 0
        self.written = 0


class Injector:
    """The bus's injector: counts host calls per SPEC and makes the chosen ones fail."""

    def __init__(self, specs: list[FaultSpec], bus: EventBus) -> None:
        self.counters = [_Counter(spec) for spec in specs]
        self.bus = bus
        self.before_crash: list[Callable[[], None]] = []   # the recorder's flush
        bus.injector = self

    def close(self) -> None:
        if self.bus.injector is self:
            self.bus.injector = None

    # -- the hook ------------------------------------------------------------------------
    def host_call(self, unit: "Unit", kind: str, fd: int, file_offset: int,
                  payload: "bytes | memoryview | int") -> None:
        """Called before the host call; returns to let it run, raises DeviceIOError for an
        injected failure, never returns after a crash."""
        length = payload if isinstance(payload, int) else len(payload)
        role = self._role(unit, fd)
        first, count = self._sectors(unit, kind, role, file_offset, length)
        matching = [c for c in self.counters if self._matches(c.spec, unit, kind, role, first, count)]
        chosen = None
        for counter in matching:
            spec = counter.spec
            counter.calls += 1
            fires = spec.when.hits(counter.calls)
            if spec.after is not None:
                fires = fires and counter.written + length > spec.after
            if spec.action == "torn" and length <= spec.torn:
                fires = False                   # nothing to tear: the call completes
            if chosen is None and fires:
                chosen = counter                # the first SPEC that fires wins (as strace)
        if kind != "read" and (chosen is None or chosen.spec.action == "crash"):
            for counter in matching:            # the call writes all its bytes
                counter.written += length
        if chosen is not None:
            self._fire(chosen, unit, kind, role, fd, file_offset, payload, length, first, count)

    @staticmethod
    def _matches(spec: FaultSpec, unit: "Unit", kind: str, role: str, first: int,
                 count: int) -> bool:
        return (spec.wants(kind) and (spec.unit is None or spec.unit == unit.number)
                and (spec.role is None or spec.role == role) and spec.covers(first, count))

    @staticmethod
    def _role(unit: "Unit", fd: int) -> str:
        if unit.cow is None:
            return "raw"
        return "cow" if fd == unit.fd else "backing"

    @staticmethod
    def _sectors(unit: "Unit", kind: str, role: str, file_offset: int,
                 length: int) -> tuple[int, int]:
        """The device sectors a host call touches (a bitmap write: those its words map)."""
        cow = unit.cow
        if kind == "bitmap" and cow is not None:
            byte = file_offset - cow.geometry.bitmap_offset
            return max(byte, 0) * 8, length * 8
        start = file_offset - cow.geometry.data_offset if role == "cow" and cow else file_offset
        return start // SECTOR_SIZE, -(-length // SECTOR_SIZE)

    # -- what a fault does -----------------------------------------------------------------
    def _fire(self, counter: _Counter, unit: "Unit", kind: str, role: str, fd: int,
              file_offset: int, payload: "bytes | memoryview | int", length: int,
              first: int, count: int) -> None:
        spec = counter.spec
        record: dict[str, Any] = {
            "spec": spec.text, "call": counter.calls, "host": kind, "role": role,
            "file": unit.path if role != "backing" else unit.backing_path,
            "file_offset": file_offset, "length": length, "first_sector": first,
            "sectors": count, "action": spec.action}
        if spec.action == "crash":
            self._crash(unit, fd, file_offset, payload, record)
        host = _errno.EIO if spec.action == "torn" else spec.errno
        guest = map_error(host)
        record.update(errno=_errno.errorcode.get(host, str(host)),
                      guest_errno=_errno.errorcode[guest])
        if spec.action == "torn":
            record["torn"] = spec.torn
        self.bus.emit("fault", unit.number, **record)
        if spec.action == "torn":
            assert not isinstance(payload, int)
            part = memoryview(payload)[:spec.torn]
            try:
                os.pwrite(fd, part, file_offset)
            except OSError as err:
                raise DeviceIOError(f"torn write at {file_offset} failed: {err.strerror}",
                                    errno=map_error(err.errno or _errno.EIO)) from None
            if self.bus.io_active:
                self.bus.emit("hostwrite", unit.number, file=unit.path, file_offset=file_offset,
                              data=part)
        what = f"torn after {spec.torn} bytes" if spec.action == "torn" else os.strerror(host)
        raise DeviceIOError(f"injected fault ({spec.text}): host "
                            f"{'read' if kind == 'read' else 'write'} at {file_offset} failed: "
                            f"{what}", errno=guest)

    def _crash(self, unit: "Unit", fd: int, file_offset: int,
               payload: "bytes | memoryview | int", record: dict[str, Any]) -> None:
        assert not isinstance(payload, int)
        try:
            pwrite_once(fd, payload, file_offset)
            if self.bus.io_active:
                self.bus.emit("hostwrite", unit.number, file=unit.path,
                              file_offset=file_offset, data=payload)
        except OSError as err:          # the host failed it: the world stops all the same
            record["errno"] = _errno.errorcode.get(err.errno or 0, str(err.errno))
        self.bus.emit("fault", unit.number, **record)
        for flush in self.before_crash:
            flush()
        sys.stdout.flush()
        os.write(2, (f"ubdsim: injected crash ({record['spec']}): stopped right after the "
                     f"host write it matched as call {record['call']} ({record['length']} "
                     f"bytes at {file_offset} of {shown(record['file'])}), as a SIGKILL would; "
                     f"nothing more reached the files (exit {CRASH_STATUS})\n"
                     ).encode(errors="surrogateescape"))
        os._exit(CRASH_STATUS)


def attach_injector(bus: EventBus, specs: list[FaultSpec]) -> Injector | None:
    """The bus's injector for `specs` (None, and nothing subscribed, when there are none)."""
    return Injector(specs, bus) if specs else None


__all__ = ["CRASH_STATUS", "Injector", "attach_injector", "map_error"]
