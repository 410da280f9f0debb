"""`--inject SPEC`: the fault language, in strace's `-e inject=` style, parsed and checked.

    SPEC    = TARGET ( ":" ITEM )*
    TARGET  = read | write | data | bitmap
    ITEM    = error=ERRNO | torn=BYTES | crash          (exactly one: what happens)
            | when=EXPR | sector=N[-M] | after=SIZE | unit=N | file=cow|backing|raw

TARGET picks the unit's HOST calls (never the guest's own syscalls): `read` every pread of a
unit's COW, backing or raw file; `write` every pwrite; `data` the pwrites of guest data (a
COW file's data area, a raw file); `bitmap` only the pwrites of a COW file's bitmap words.
Matching calls are counted per SPEC, from 1, in the order ubdsim makes them, which under
--inject is the kernel's: a COW unit's request writes each 4 KiB segment's data and then its
bitmap words (do_io(), update_bitmap()), as linux.uml does (device/unit.py _write_segments()).
when=N the Nth matching call; N+ the Nth and every later one; N..M the Nth to the Mth;
N+S the Nth, N+S-th, N+2S-th... (N..M+S too); default: every matching call.
sector=N or N-M (inclusive): only calls touching those device sectors (a bitmap write
touches the sectors its words describe). after=SIZE (bytes; K, M, G suffixes, binary):
matching writes succeed until they have written SIZE bytes; each later one that would go
past it faults (a disk that fills up). unit=N, file=ROLE narrow the calls further.
error=ERRNO (a name like EIO or ENOSPC, or a number) fails the call with that errno; torn=BYTES
writes only the first BYTES bytes of the call, then fails it as a short write does (a call
of at most BYTES bytes is not torn); crash stops the world right after the call completed
(see ubdsim.lab.inject).
"""
from __future__ import annotations

import errno as _errno
import re
from dataclasses import dataclass

from ..errors import UsageError

# What ubdsim exits with after `crash` (ubdsim.lab.inject): what a shell reports for a
# process killed by SIGKILL, which the crash stands for.
CRASH_STATUS = 137
TARGETS = ("read", "write", "data", "bitmap")
ROLES = ("cow", "backing", "raw")
_WHEN = re.compile(r"^(\d+)(?:\.\.(\d+))?(?:\+(\d*))?$")
_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_SECTOR = re.compile(r"^(\d+)(?:-(\d+))?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True)
class When:
    """strace's when=first[..last][+[step]]: which matching calls (counted from 1) fault."""

    first: int = 1
    last: int | None = None          # None: no end
    step: int = 1

    def hits(self, n: int) -> bool:
        if n < self.first or (self.last is not None and n > self.last):
            return False
        return (n - self.first) % self.step == 0


ALWAYS = When()


@dataclass(frozen=True)
class FaultSpec:
    """One parsed --inject SPEC."""

    text: str
    target: str                      # read | write | data | bitmap
    action: str                      # error | torn | crash
    errno: int = _errno.EIO          # error=: the host errno (torn: the short write's EIO)
    torn: int = 0                    # torn=: bytes that reach the file
    when: When = ALWAYS
    first_sector: int | None = None  # sector= range (inclusive), None: every sector
    last_sector: int | None = None
    after: int | None = None         # after=: bytes matching writes may write first
    unit: int | None = None
    role: str | None = None          # file=

    def wants(self, kind: str) -> bool:
        """Does a host call of `kind` ("read", "data", "bitmap") belong to the target?"""
        if self.target == "write":
            return kind != "read"
        return self.target == kind

    def covers(self, first: int, count: int) -> bool:
        """Do device sectors [first, first+count) meet the sector= range?"""
        if self.first_sector is None:
            return True
        return first <= self.last_sector and first + count > self.first_sector  # type: ignore[operator]


def _fail(spec: str, why: str) -> UsageError:
    return UsageError(f"--inject {spec!r}: {why}")


def _int(spec: str, key: str, value: str) -> int:
    if not value.isdigit():
        raise _fail(spec, f"{key}= wants a number, not {value!r}")
    return int(value)


def _errno_value(spec: str, value: str) -> int:
    if value.isdigit():
        number = int(value)
        if number == 0 or number not in _errno.errorcode:
            raise _fail(spec, f"error={value}: not an errno number")
        return number
    number = getattr(_errno, value.upper(), None)
    if not isinstance(number, int) or not value.upper().startswith("E"):
        raise _fail(spec, f"error={value}: not an errno name (EIO, ENOSPC, ...)")
    return number


def _when(spec: str, value: str) -> When:
    found = _WHEN.match(value)
    if not found:
        raise _fail(spec, f"when={value}: write N, N+, N..M or N+STEP (calls count from 1)")
    first = int(found[1])
    last = int(found[2]) if found[2] is not None else None
    plus = found[3]
    if last is None and plus is None:
        last = first                                 # when=N: that call only
    step = int(plus) if plus else 1
    if first < 1 or (last is not None and last < first) or step < 1:
        raise _fail(spec, f"when={value}: calls count from 1, N..M needs N <= M, a step >= 1")
    return When(first, last, step)


def _size(spec: str, key: str, value: str) -> int:
    found = _SIZE.match(value)
    if not found:
        raise _fail(spec, f"{key}={value}: write bytes, or a number with K, M or G")
    return int(found[1]) * _UNITS[found[2].lower()]


def parse_spec(text: str) -> FaultSpec:
    """Parse one SPEC; raises UsageError (one line naming the SPEC) when it is wrong."""
    target, *items = text.split(":")
    if target not in TARGETS:
        raise _fail(text, f"starts with {target!r}: the target is one of {', '.join(TARGETS)}")
    fields: dict = {"text": text, "target": target}
    actions = []
    seen: set[str] = set()
    for item in items:
        key, eq, value = item.partition("=")
        if key in seen:
            raise _fail(text, f"{key} is given twice")
        seen.add(key)
        if key == "crash" and not eq:
            actions.append("crash")
        elif not eq or not value:
            raise _fail(text, f"{item!r}: write KEY=VALUE (or crash)")
        elif key == "error":
            actions.append("error")
            fields["errno"] = _errno_value(text, value)
        elif key == "torn":
            actions.append("torn")
            fields["torn"] = _size(text, key, value)
            if fields["torn"] == 0:
                raise _fail(text, "torn=0 is an error=EIO: give the bytes that reach the file")
        elif key == "when":
            fields["when"] = _when(text, value)
        elif key == "sector":
            found = _SECTOR.match(value)
            if not found or (found[2] is not None and int(found[2]) < int(found[1])):
                raise _fail(text, f"sector={value}: write N or N-M with N <= M")
            fields["first_sector"] = int(found[1])
            fields["last_sector"] = int(found[2] or found[1])
        elif key == "after":
            fields["after"] = _size(text, key, value)
        elif key == "unit":
            fields["unit"] = _int(text, key, value)
        elif key == "file":
            if value not in ROLES:
                raise _fail(text, f"file={value}: one of {', '.join(ROLES)}")
            fields["role"] = value
        else:
            raise _fail(text, f"unknown item {key!r} (error=, torn=, crash, when=, sector=, "
                              "after=, unit=, file=)")
    if len(actions) != 1:
        raise _fail(text, "say what happens: exactly one of error=ERRNO, torn=BYTES, crash")
    fields["action"] = actions[0]
    if target == "read" and actions[0] != "error":
        raise _fail(text, f"{actions[0]} applies to writes (write, data, bitmap), not reads")
    if target == "read" and "after" in fields:
        raise _fail(text, "after= counts written bytes: it applies to writes, not reads")
    if target == "bitmap" and fields.get("role") not in (None, "cow"):
        raise _fail(text, "bitmap words are only in a COW file (file=cow)")
    return FaultSpec(**fields)


def parse_specs(texts: list[str] | None) -> list[FaultSpec]:
    return [parse_spec(text) for text in texts or ()]


__all__ = ["ALWAYS", "CRASH_STATUS", "FaultSpec", "ROLES", "TARGETS", "When", "parse_spec", "parse_specs"]
