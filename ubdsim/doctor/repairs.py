"""The narrow repairs `ubdsim repair` may make, each for one finding of check, as byte edits.

A repair is planned here as a list of edits (file offset, new bytes) plus a sentence, and
applied by ops/repair.py to a copy of the file that replaces the original only when complete.
Nothing here guesses at data: a repair either restores what the kernel's own rules imply
(bits past the last sector mean nothing; a V2 file under a 6.1 switch's V3 header still has
its V2 bitmap and data at the V2 offsets), or does what the user explicitly confirmed (mark
orphan data as the guest's), and says what it could not decide.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..cow import bitmap as bm
from ..cow.header import pack_header
from ..cow.image import CowImage, read_fully
from ..cow.layouts import V2, V3
from ..fileio import data_extents
from .findings import Finding, describe_runs


@dataclass(frozen=True)
class Edit:
    offset: int
    data: bytes


@dataclass(frozen=True)
class Repair:
    """What one repair does: `action` (the id check named), the finding, a sentence, its edits."""

    action: str
    finding: str
    text: str
    edits: list[Edit] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    @property
    def bytes_changed(self) -> int:
        return sum(len(e.data) for e in self.edits)


def _bitmap_edit(image: CowImage, first_byte: int, array: np.ndarray) -> Edit:
    return Edit(image.geometry.bitmap_offset + first_byte, array.tobytes())


def clear_bits_past_end(image: CowImage, finding: Finding) -> Repair:
    g = image.geometry
    first_byte = g.sectors // 8
    array = np.array(image.bitmap[first_byte:], dtype=np.uint8)
    bm.set_range(array, g.sectors - first_byte * 8, len(array) * 8 - (g.sectors - first_byte * 8),
                 value=False)
    return Repair("clear-bits-past-end", finding.id, (
        f"cleared {image.bits_past_end()} bits of sectors past the last one ({g.sectors}); "
        "no reader ever used them"), [_bitmap_edit(image, first_byte, array)])


def mark_orphans(image: CowImage, finding: Finding) -> Repair:
    """Set the bits of orphan sectors: the guest then reads the data it wrote there."""
    edits: list[Edit] = []
    for start, count in finding.sectors:
        lo, hi = start // 8, (start + count + 7) // 8
        array = np.array(image.bitmap[lo:hi], dtype=np.uint8)
        bm.set_range(array, start - lo * 8, count)
        edits.append(_bitmap_edit(image, lo, array))
    return Repair("mark-orphans", finding.id, (
        f"marked {sum(n for _, n in finding.sectors)} orphan sectors "
        f"({describe_runs(finding.sectors)}) as living in the COW file: the guest now reads the "
        "data that was written there instead of the backing file's"), edits, [
        "the written data was never acknowledged by a completed bitmap write: if the guest's "
        "filesystem had not yet used it, e2fsck inside the guest decides what it means"])


def rebuild_v2(image: CowImage, finding: Finding) -> Repair:
    """Give a 6.1-switched V2 file its V2 header and bitmap back.

    The switch wrote 4128 bytes of V3 header over [0, 4128): the V2 header and the first
    4128 - 4120 = 8 bitmap bytes (the bits of sectors 0..63). The rest of the V2 bitmap and all
    the data are untouched at the V2 offsets. The lost bits are rebuilt from the data: a
    sector whose V2 data is allocated and not all zero was written. The header keeps what the
    switch wrote (the new backing path, its size and mtime), in the V2 layout.
    """
    header = image.header.with_layout(V2)
    old = header.geometry()
    lost_bytes = V3.size - old.bitmap_offset
    lost_sectors = min(old.sectors, lost_bytes * 8, old.bitmap_len * 8)
    recovered = np.zeros(lost_bytes, dtype=np.uint8)
    ambiguous: list[tuple[int, int]] = []
    end = old.data_offset + lost_sectors * old.sectorsize
    for lo, hi in data_extents(image.fd, old.data_offset, min(end, image.file_size)):
        first = (lo - old.data_offset) // old.sectorsize
        last = -(-(hi - old.data_offset) // old.sectorsize)
        data = read_fully(image.fd, (last - first) * old.sectorsize,
                          old.data_offset + first * old.sectorsize)
        written = np.frombuffer(data, dtype=np.uint8).reshape(-1, old.sectorsize).any(axis=1)
        for i, nonzero in enumerate(written):
            if nonzero:
                bm.set_range(recovered, first + i, 1)
            else:
                ambiguous.append((first + i, 1))
    caveats = ["repair assumes no guest wrote after the switch: such writes went to V3 offsets "
               "inside the old data area and cannot be told apart from V2 data"]
    if ambiguous:
        caveats.append(f"sectors {describe_runs(ambiguous)} are allocated but all zero: a zero "
                       "write and an unwritten neighbour look the same; left unmarked (they read "
                       "the backing file)")
    edits = [Edit(0, pack_header(header)), Edit(old.bitmap_offset, recovered.tobytes())]
    return Repair("rebuild-v2", finding.id, (
        f"rewrote the V2 header (backing '{header.backing_path}', the switch's size and mtime) "
        f"and the {lost_bytes} bitmap bytes the V3 header had overwritten, rebuilt from the data "
        f"of sectors 0..{lost_sectors - 1}"), edits, caveats)


PLANNERS = {"clear-bits-past-end": clear_bits_past_end, "mark-orphans": mark_orphans,
            "rebuild-v2": rebuild_v2}
CONFIRM = {"mark-orphans"}       # repairs the user must ask for by name (--mark-orphans)

__all__ = ["Edit", "Repair", "PLANNERS", "CONFIRM"]
