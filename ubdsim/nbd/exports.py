"""From `ubd` kernel options to NBD exports: parse, open the units, name and wrap them.

Shared by `ubdsim serve` and `ubdsim vm` so both print the same kernel log and export the
same devices as `ubdsim run` sees them (one device model: ubdsim.device).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..cow import bitmap as bits
from ..device.api import SECTOR_SIZE
from ..device.unit import Unit
from ..errors import UbdError
from ..profiles import Profile
from .server import Export

FLUSH_MODES = ("kernel", "fsync")

# The disk name each kernel family registers for unit N (the export is named after it):
# [6.1] ubd_kern.c ubd_disk_register(): sprintf(disk_name, "ubd%c", 'a' + unit);
# [2.4] the device nodes are /dev/ubd0../dev/ubd7 (minor = unit << UBD_SHIFT).
_DISK_NAME_STYLES: dict[str, Callable[[int], str]] = {
    "6.1": lambda unit: "ubd" + chr(ord("a") + unit),
    "2.4": lambda unit: f"ubd{unit}",
}


def disk_name(profile: Profile, unit: int) -> str:
    return _DISK_NAME_STYLES[profile.kernel_family](unit)


def disk_aliases(profile: Profile, unit: int) -> tuple[str, ...]:
    """Every other spelling of the unit's name, accepted as `ubdsim run` accepts every node
    name under every profile (ubdsim/harness/nodes.py)."""
    own = disk_name(profile, unit)
    return tuple(sorted({style(unit) for style in _DISK_NAME_STYLES.values()} - {own}))


def cow_allocation(unit: Unit) -> Callable[[int, int], Iterator[tuple[bool, int, int]]]:
    """base:allocation from the unit's in-memory bitmap: a set bit is a sector in the COW file.

    The in-memory bitmap is the kernel's authoritative copy (ubd_kern.c cowify_req() reads
    it, not the file), so extents are exact even between a data write and its bitmap write.
    """
    cow = unit.cow
    assert cow is not None

    def runs(offset: int, length: int) -> Iterator[tuple[bool, int, int]]:
        first = offset // SECTOR_SIZE
        count = -(-(offset + length) // SECTOR_SIZE) - first
        for allocated, sector, sectors in bits.iter_runs(cow.bitmap, first, count):
            start = max(sector * SECTOR_SIZE, offset)
            end = min((sector + sectors) * SECTOR_SIZE, offset + length)
            yield allocated, start, end - start
    return runs


def flusher(unit: Unit, mode: str) -> Callable[[], None]:
    """A guest flush. `kernel`: the profile's REQ_OP_FLUSH exactly (6.1 fdatasyncs the first
    fd, the BACKING file of a COW unit, so nothing the guest wrote becomes durable; 2.4 has
    no flush). `fsync`: that, then fsync of the file the guest writes (COW data + bitmap)."""
    if mode == "kernel":
        return unit.flush

    def durable() -> None:
        unit.flush()
        try:
            os.fsync(unit.fd)
        except OSError as err:
            raise UbdError(f"fsync of '{unit.path}' failed: {err.strerror}", errno=err.errno) from None
    return durable


def zero_writer(unit: Unit) -> Callable[[int, int], None] | None:
    """The unit's REQ_OP_WRITE_ZEROES when its queue has one (6.1 without flag t)."""
    if unit.profile.device.supports_discard and not unit.no_trim:
        return unit.write_zeroes
    return None


def export_for(unit: Unit, profile: Profile, flush_mode: str) -> Export:
    backing = f" over {unit.backing_path}" if unit.cow is not None else ""
    return Export(
        name=disk_name(profile, unit.number), aliases=disk_aliases(profile, unit.number),
        device=unit, flush=flusher(unit, flush_mode),
        allocation=cow_allocation(unit) if unit.cow is not None else None,
        discard=zero_writer(unit) is not None, zeroes=zero_writer(unit),
        description=f"ubdsim {profile.name} unit {unit.number}: {unit.path}{backing}")


@dataclass
class OpenedUnits:
    """The units that opened, as exports, and everything the kernel printed on the way."""

    exports: list[Export]
    units: list[Unit]
    failed: int

    def close(self) -> None:
        for unit in self.units:
            unit.close()


def open_exports(words: list[str], profile: Profile, flush_mode: str,
                 print_line: Callable[[str], None]) -> OpenedUnits:
    """Parse `words` as kernel options and open the units as the kernel boots them.

    The kernel's messages (parser first, then ubd_init()'s opens) go to `print_line`
    in print order; units that fail are left out, as the kernel boots on without them.
    """
    from ..cmdline.parse import parse_command_line
    from ..device.open import boot_units

    parsed = parse_command_line(words, profile)
    for line in parsed.messages:
        print_line(str(line))
    units, messages, failures = boot_units(parsed.units, profile)
    for line in messages:
        print_line(line)
    ordered = [units[n] for n in sorted(units)]
    return OpenedUnits([export_for(u, profile, flush_mode) for u in ordered], ordered,
                       len(failures))
