"""A fuzz program as data: the units it sets up and the operations its guest performs.

Why symbolic offsets: an operation's position is kept as (anchor, delta), "start" or "end" of
its unit's device, and only resolved to a byte offset against the unit's device size when
the program is run. So the shrinker can make a backing file smaller and an operation "across
the last sector" stays across the last sector.

Why units are described by kind and not by files: the files are the scenario `files` specs
of kernel_ref/steps.py (the project's own builders: pattern backings, COW files of every
version built from ubdsim.cow.layouts, or the real uml_mkcow), derived from the unit here, so
a program is small JSON that the shrinker can edit (drop a flag, a pre-existing run, a unit)
and that a saved scenario spells as ordinary scenario data.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field

from .. import steps
from . import step

SECTOR = 512
# Unit kinds: a COW file from uml_mkcow, one built byte by byte (version 1, 2, 3, "3-broken",
# with pre-existing bits and data), one the kernel creates at open (missing file), a COW file
# named alone (the header's backing path), and a raw file.
KINDS = ("mkcow", "built", "create", "alone", "raw")
# Operations whose position is an (anchor, delta) pair, and the op names that read.
POSITIONED = {"pread", "pwrite", "readv", "writev", "lseek", "fadvise", "fallocate", "ioctl"}
READS = {"pread", "read", "readv"}


@dataclass
class Unit:
    kind: str
    size: int                                   # the backing (or raw) file's length
    flags: str = ""
    fill: str = "pattern"                       # steps.backing() fill
    version: int | str = 3                      # built COW files only
    alignment: int = 4096                       # built V3 files only
    written: list[list[int]] = field(default_factory=list)      # [first sector, count]
    bitmap_only: list[list[int]] = field(default_factory=list)  # bits set, no data
    sep: str = ","

    @property
    def device_size(self) -> int:
        """The disk's size: the file's, rounded up to a whole sector (ubd_kern.c
        ubd_file_size() then the gendisk capacity in sectors [6.1])."""
        return -(-self.size // SECTOR) * SECTOR

    def names(self, index: int) -> tuple[str, str]:
        """(COW or raw file, backing file) of unit `index`."""
        if self.kind == "raw":
            return f"r{index}.img", ""
        return f"c{index}.cow", f"b{index}.img"

    def files(self, index: int) -> dict[str, dict]:
        cow, back = self.names(index)
        if self.kind == "raw":
            return {cow: steps.backing(self.size, f"R{index}", self.fill)}
        out = {back: steps.backing(self.size, f"B{index}", self.fill)}
        if self.kind in ("mkcow", "alone"):
            out[cow] = steps.mkcow(back)
        elif self.kind == "built":
            out[cow] = steps.cow(self.version, back,
                                 written=[(a, n, f"P{index}") for a, n in self.written],
                                 alignment=self.alignment,
                                 bitmap_only=[(a, n) for a, n in self.bitmap_only])
        return out

    def option(self, index: int) -> str:
        cow, back = self.names(index)
        value = cow if self.kind in ("raw", "alone") else f"{cow}{self.sep}{back}"
        return f"ubd{index}{self.flags}={value}"


@dataclass
class Program:
    """Units, then one list of symbolic operations per boot."""

    name: str                                   # "SEED:INDEX", where the generator made it
    units: list[Unit]
    boots: list[list[dict]]

    def to_json(self) -> dict:
        return {"name": self.name, "units": [asdict(u) for u in self.units],
                "boots": self.boots}

    @classmethod
    def from_json(cls, data: dict) -> Program:
        return cls(name=data["name"], units=[Unit(**u) for u in data["units"]],
                   boots=data["boots"])

    def copy(self) -> Program:
        return Program.from_json(copy.deepcopy(self.to_json()))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @property
    def operations(self) -> int:
        return sum(len(ops) for ops in self.boots)

    def files(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for index, unit in enumerate(self.units):
            out.update(unit.files(index))
        return out

    def options(self) -> list[str]:
        return [unit.option(index) for index, unit in enumerate(self.units)]

    def resolved(self, boot: int) -> list[dict]:
        """The runner's operations of boot `boot` (0-based): byte offsets and device paths."""
        return [op for op, _ in self.resolved_with_modes(boot)]

    def resolved_with_modes(self, boot: int) -> list[tuple[dict, str]]:
        """Each runner operation with the I/O mode of its slot ("direct", "buffered", "-"),
        so a difference can be told by the path it took through the kernel."""
        slots: dict[int, tuple[int, list[str]]] = {}
        out = []
        for op in self.boots[boot]:
            op = dict(op)
            name = op["op"]
            if name == "open":
                unit = op.pop("unit")
                op["path"] = device_path(unit)
                slots[op["slot"]] = (unit, op["flags"])
            elif name == "close":
                slots.pop(op["slot"], None)
            unit, flags = slots.get(op.get("slot", -1), (None, []))
            mode = "-" if unit is None else ("direct" if "O_DIRECT" in flags else "buffered")
            if "at" in op:
                anchor, delta = op.pop("at")
                size = self.units[unit].device_size if unit is not None and \
                    unit < len(self.units) else 0
                relative = name == "lseek" and op["whence"] in ("CUR", "END")
                op["off"] = delta if anchor == "start" or relative else size + delta
            out.append((op, mode))
        return out

    def to_scenario(self, name: str, about: str) -> dict:
        """The program as kernel_ref scenario data: its files and options, one boot per
        program boot, each with one fuzz step (kernel_ref/fuzz/step.py)."""
        return {"name": name, "about": about, "files": self.files(), "options": self.options(),
                "boots": [{"guest": [step.fuzz_step(self.resolved(b))]}
                          for b in range(len(self.boots))]}


def device_path(unit: int) -> str:
    return f"/dev/ubd{chr(ord('a') + unit)}"
