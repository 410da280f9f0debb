"""A registered ubd disk and its open count: when the driver opens and closes its files.

From: `arch/um/drivers/ubd_kern.c` ubd_add(), ubd_disk_register(), ubd_open(),
ubd_release(), ubd_close_dev() [6.1]; 2.4.20's ubd_add()/ubd_open() for the 2.4 rows.

The driver does not keep a unit open from boot to shutdown. ubd_add() sizes the file and
registers the disk; ubd_open() calls ubd_open_dev() whenever the unit's open count is 0, and
ubd_release() calls ubd_close_dev() when it drops back to 0. So every first open repeats the
whole open: its messages are printed again, locks retaken, header and bitmap reread (bits
that lived only in the in-memory bitmap are gone), and a failing open prints
`ubdX: Can't open "F": errno = N` again and fails the opener with that errno. At boot,
device_add_disk()'s partition scan is the first such open, and it releases the disk again.

Era differences (profile rows, `add_opens_device`): [6.1] ubd_add() only sizes, so a disk
whose scan open fails stays registered (its node exists, opening it retries); [2.4.20]
ubd_add() opens the device itself and leaves out a unit that fails to open.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from ..cmdline.spec import UnitSpec
from ..errors import UbdError
from ..profiles import Profile
from .events import EventBus, EventSink, as_bus
from .open import add_size, open_dev
from .unit import Unit


class Disk:
    """One registered unit (struct ubd + its gendisk): fixed size, an open count, and the
    opened Unit while the count is above 0.

    `messages` accumulates every line its opens printed, in order (they also go out as
    `message` events as they happen).
    """

    def __init__(self, spec: UnitSpec, profile: Profile, size: int,
                 events: EventBus | EventSink | None = None, *, resize_mode: str = "safe",
                 chain: bool = False) -> None:
        self.spec = spec
        self.profile = profile
        self.size = size
        self.events = as_bus(events)
        self.resize_mode = resize_mode
        self.chain = chain              # ubdsim's --chain (device/chain.py), not the kernel's
        self.count = 0
        self.unit: Unit | None = None
        self.messages: list[str] = []
        # set_disk_ro() runs at each successful open; until one has, the command line's flag.
        self.readonly = spec.readonly

    @property
    def number(self) -> int:
        return self.spec.unit

    def open(self) -> Unit:
        """ubd_open(): count 0 -> ubd_open_dev() (a fresh Unit, its messages printed); raises
        UbdError (errno, `printed`) when that fails, leaving the count at 0."""
        if self.count == 0:
            try:
                unit = open_dev(self.spec, self.profile, self.size, self.events,
                                resize_mode=self.resize_mode, chain=self.chain)
            except UbdError as err:
                self.messages.extend(getattr(err, "printed", ()))
                self._keep_backing(getattr(err, "backing_file", self.spec.backing))
                raise
            self.messages.extend(unit.messages)
            self._keep_backing(unit.backing_path if unit.cow is not None else self.spec.backing)
            self.unit = unit
            self.readonly = unit.readonly
        self.count += 1
        assert self.unit is not None
        return self.unit

    def release(self) -> None:
        """ubd_release(): the count drops; at 0 ubd_close_dev() closes the files (their
        fcntl locks go with them) and frees the in-memory bitmap."""
        if self.count == 0:
            return
        self.count -= 1
        if self.count == 0 and self.unit is not None:
            self.unit.close()
            self.unit = None

    def close(self) -> None:
        """Shutdown: every remaining opener goes away."""
        while self.count:
            self.release()

    def _keep_backing(self, backing: str | None) -> None:
        """ubd_dev->cow.file after open_ubd_file(): the header's path once it was used, so
        the next open compares against that path, not the command line's."""
        if backing != self.spec.backing:
            self.spec = dataclasses.replace(self.spec, backing=backing)


def boot_disks(specs: Mapping[int, UnitSpec] | Iterable[UnitSpec], profile: Profile,
               events: EventBus | EventSink | None = None, *, resize_mode: str = "safe",
               chain: bool = False) -> tuple[dict[int, Disk], list[str], dict[int, UbdError]]:
    """ubd_init() -> ubd_add() for units 0, 1, 2...: (disks, messages, failures).

    Each unit is sized, registered and opened once by the partition scan, then released:
    every disk comes back closed (count 0). `messages` are the boot's kernel log lines in
    print order; `failures` holds each unit whose sizing or boot open failed. A unit whose
    sizing failed has no disk; one whose boot open failed keeps its disk when the profile
    registers disks before opening them ([6.1]).

    `chain` is ubdsim's own --chain: a unit's backing file that is a COW file is read as a
    stack of read-only COW layers down to a raw file (device/chain.py); the kernel's messages
    stay as they are, plus `ubdsim: chain:` lines naming the layers (or refusing the unit,
    which then has no disk).
    """
    items = specs.values() if isinstance(specs, Mapping) else specs
    bus = as_bus(events)
    disks: dict[int, Disk] = {}
    failures: dict[int, UbdError] = {}
    messages: list[str] = []
    for spec in sorted(items, key=lambda s: s.unit):
        try:
            size = add_size(spec, profile, bus, chain=chain)
        except UbdError as err:
            messages.extend(getattr(err, "printed", ()))
            failures[spec.unit] = err
            continue
        disk = Disk(spec, profile, size, bus, resize_mode=resize_mode, chain=chain)
        if not profile.device.add_opens_device and size == 0:
            # block/genhd.c disk_scan_partitions() [6.1]: no scan (no open) of an empty disk.
            disks[spec.unit] = disk
            continue
        try:
            unit = disk.open()
        except UbdError as err:
            failures[spec.unit] = err
            if not profile.device.add_opens_device:
                disks[spec.unit] = disk
        else:
            if profile.device.add_opens_device:
                disk.size = unit.size       # [2.4] sized after the open ([resize] may grow it)
            disk.release()
            disks[spec.unit] = disk
        messages.extend(disk.messages)
    return disks, messages, failures


__all__ = ["Disk", "boot_disks"]
