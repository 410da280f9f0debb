"""Where each byte of a device comes from (`ubdsim map`), in `qemu-img map`'s terms.

qemu-img map walks a backing chain and reports, for each run, the depth that resolves it
(0 = the top image), whether the chain has it (`present`), whether it is known to read as
zeros (`zero`), whether it is stored data (`data`), and the host `offset`. A UML unit is the
same two-level chain: the COW file (depth 0) over its backing file (depth 1). So:

| ubdsim source | what it is                                   | depth | zero / data        | offset in        |
|---------------|----------------------------------------------|-------|--------------------|------------------|
| cow           | a marked run, in the COW file's data area     | 0     | hole: zero, else data | COW file: data_offset + start |
| backing       | an unmarked run, read from the backing file   | 1     | hole: zero, else data | backing file: start |
| tail          | [resize] a grown file past the backing's end   | 0     | zero               | COW file          |
| raw           | a raw image                                   | 0     | hole: zero, else data | the image: start |

Every run is `present` (a UML unit has no deeper layer for a sector to fall through to).
Differences from qcow2 that show in the output: a COW file allocates per 512-byte sector,
qcow2 per cluster (64 KiB by default), so the same guest write gives a shorter depth-0 run
here; and a marked sector whose host blocks are a hole (never written, or written and punched)
is `zero` here, where qcow2 would show an allocated data cluster or a zero cluster.
Adjacent runs merge when qemu-img would merge them: same depth, flags and file, host offsets
contiguous.

With `chain=True` (ubdsim's own --chain: UML cannot stack) the COW file's whole backing chain
is mapped, as qemu-img map maps a qcow2 chain: `depth` is the layer that holds each run
(0 = the top COW file, 1 = its backing COW file, ..., N = the raw bottom, source `backing`),
and the device is the raw bottom's size.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .device_view import TAIL, SourceRun, open_device


@dataclass(frozen=True)
class MapEntry:
    """One line of the map: qemu-img map's JSON keys first, then ubdsim's `file` and `source`."""

    start: int
    length: int
    depth: int
    present: bool
    zero: bool
    data: bool
    offset: int
    file: str
    source: str

    def as_dict(self) -> dict:
        return asdict(self)

    def mergeable(self, nxt: "MapEntry") -> bool:
        """qemu-img.c entry_mergeable(): same flags, depth and file, contiguous offsets."""
        return (self.end == nxt.start and self.depth == nxt.depth and self.present == nxt.present
                and self.zero == nxt.zero and self.data == nxt.data and self.file == nxt.file
                and self.source == nxt.source and self.offset + self.length == nxt.offset)

    @property
    def end(self) -> int:
        return self.start + self.length


def entry_for(run: SourceRun) -> MapEntry:
    zero = run.hole or run.source == TAIL
    return MapEntry(start=run.start, length=run.length, depth=run.depth, present=True,
                    zero=zero, data=not zero, offset=run.host_offset, file=run.file,
                    source=run.source)


@dataclass(frozen=True)
class MapReport:
    """The map of one device; `records()` is the `--json` output (qemu-img map's array)."""

    device: str
    kind: str                       # "cow" or "raw"
    size: int
    backing: str | None
    data_offset: int | None         # COW files: where sector 0 lives in the data area
    entries: list[MapEntry] = field(default_factory=list)
    seconds: float = 0.0
    layers: list[str] | None = None  # --chain: every layer's file, top first

    def as_dict(self) -> dict:
        return asdict(self)

    def records(self) -> list[dict]:
        return [entry.as_dict() for entry in self.entries]


def map_device(path: str, backing: str | None = None, start: int = 0,
               length: int | None = None, *, chain: bool = False) -> MapReport:
    """Map device bytes [start, start+length) of `path` (a COW file or raw image).

    Only the bitmap's data extents and the host files' SEEK_DATA/SEEK_HOLE answers are read:
    no data byte is read at all, so any size costs what its allocation costs.
    """
    started = time.monotonic()
    with open_device(path, backing, chain=chain) as view:
        end = view.size if length is None else min(view.size, start + length)
        entries: list[MapEntry] = []
        for run in view.runs(start, end):
            entry = entry_for(run)
            if entries and entries[-1].mergeable(entry):
                last = entries[-1]
                entries[-1] = MapEntry(**{**last.as_dict(), "length": last.length + entry.length})
            else:
                entries.append(entry)
        data_offset = view.image.geometry.data_offset if view.image is not None else None
        return MapReport(device=path, kind=view.kind, size=view.size, backing=view.backing,
                         data_offset=data_offset, entries=entries,
                         seconds=round(time.monotonic() - started, 6), layers=view.layers)


__all__ = ["MapEntry", "MapReport", "entry_for", "map_device"]
