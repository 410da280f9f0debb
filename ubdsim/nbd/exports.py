"""From `ubd` kernel options to NBD exports: parse, boot the disks, open, name and wrap them.

Shared by `ubdsim serve` and `ubdsim vm` so both print the same kernel log and export the
same devices as `ubdsim run` sees them (one device model: ubdsim.device).

Lifecycle (ubdsim/device/disk.py): the disks boot as the kernel boots them (sized, opened by
the partition scan, released), then the server opens each registered disk ONCE and holds it
open for its whole life, as a guest holding /dev/ubdX open would: clients connecting and
disconnecting do not reopen the files. A disk whose open fails prints the kernel's messages
again (`ubdX: Can't open ...` [6.1]) and is not exported.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..cow import bitmap as bits
from ..device.api import SECTOR_SIZE
from ..device.disk import Disk
from ..device.unit import Unit
from ..errors import CmdlineError, UbdError
from ..profiles import Profile
from ..profiles.device_rules import DISK_NAME_STYLES
from .server import Export

# `kernel`: what the profile's driver does with a flush (nothing reaches the host);
# `fsync`: ubdsim's opt-in durable flush (see flusher()).
FLUSH_MODES = ("kernel", "fsync")


def disk_name(profile: Profile, unit: int) -> str:
    """The name the profile's kernel registers for unit N; the export is named after it."""
    return profile.device.disk_name(unit)


def disk_aliases(profile: Profile, unit: int) -> tuple[str, ...]:
    """Every other spelling of the unit's name, accepted as `ubdsim run` accepts every node
    name under every profile (ubdsim/harness/nodes.py)."""
    own = disk_name(profile, unit)
    return tuple(sorted({style(unit) for style in DISK_NAME_STYLES.values()} - {own}))


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
    """A client's flush (NBD_CMD_FLUSH, the guest's REQ_OP_FLUSH).

    `kernel`: the driver's REQ_OP_FLUSH exactly (Unit.flush()):
    under 6.1 and 2.4 no host call at all (ubd_kern.c ubd_submit_request()/io_thread() [6.1]
    never reach do_io()'s flush branch; 2.4 has no flush), so a flush makes nothing durable
    and a host crash can lose acknowledged, flushed writes, as with UML (only flag s, O_SYNC,
    makes each write durable).
    `fsync`: ubdsim's own, not the kernel's: the profile's flush, then fsync(2) of the file
    the guest writes (the COW file, data and bitmap, or the raw file) before the flush is
    acknowledged; the backing file is never written, so it is not synced."""
    if mode == "kernel":
        return unit.flush

    def durable() -> None:
        unit.flush()
        try:
            os.fsync(unit.fd)
            if unit.events.io_active:
                unit.events.emit("sync", unit.number, file=unit.path)
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
    """The units that opened, as exports, and the disks behind them (held open)."""

    exports: list[Export]
    disks: list[Disk]
    failed: int
    hints: object | None = None         # ubdsim.explain.hints.Hints, closed with the units
    lab: object | None = None           # ubdsim.lab.frontend.LabSession, closed after the disks

    def close(self) -> None:
        """ubd_release() of the server's open of each disk: the files are closed."""
        for disk in self.disks:
            disk.close()
        if self.hints is not None:
            self.hints.close()
        if self.lab is not None:
            self.lab.close()


def open_exports(words: list[str], profile: Profile, flush_mode: str,
                 print_line: Callable[[str], None], *, chain: bool = False,
                 hints: bool = True, record=None, tool: str = "ubdsim serve") -> OpenedUnits:
    """Parse `words` as kernel options and open the units as the kernel boots them.

    The kernel's messages (parser first, then ubd_init()'s opens) go to `print_line`
    in print order; units that fail are left out, as the kernel boots on without them.
    `chain`: ubdsim's own --chain, passed to boot_disks() (device/chain.py).
    `hints`: `ubdsim: hint: ...` lines go to `print_line` too (explain/hints.py; off with
    --quiet-hints).
    """
    from ..cmdline.parse import parse_command_line
    from ..device.disk import boot_disks
    from ..device.events import EventBus
    from ..explain.hints import attach_hints
    from ..lab.frontend import attach

    parsed = parse_command_line(words, profile)
    if parsed.refusal is not None:      # um_arch.c add_arg(): UML would exit before booting
        raise CmdlineError(parsed.refusal.text)
    for line in parsed.messages:
        print_line(str(line))
    bus = EventBus()
    listener = attach_hints(bus, profile, parsed, print_line, chain=chain) if hints else None
    bus.subscribe(lambda event: print_line(event.data["text"]), kinds={"message"})
    lab = (attach(bus, record, parsed.units.values(), print_line, tool=tool, words=list(words),
                  kernel=profile.name, announce=True) if record is not None else None)
    disks, _messages, _failures = boot_disks(parsed.units, profile, bus, chain=chain)
    held: list[Disk] = []
    units: list[Unit] = []
    for n in sorted(disks):
        try:
            units.append(disks[n].open())
        except UbdError:
            continue                    # its messages are printed; nothing to export
        held.append(disks[n])
    failed = len(parsed.units) - len(units)
    if listener is not None:
        listener.flush()
    return OpenedUnits([export_for(u, profile, flush_mode) for u in units], held, failed,
                       listener, lab)
