"""What a backing switch's header rewrite does to a COW file written in another header version.

ubd_kern.c open_ubd_file() rewrites the header at offset 0 with write_cow_header() when it
switches the backing file, in the profile's FormatRules.switch_version whatever the file's own
version is ([6.1] always V3). Over a V1 or V2 file the longer header covers the start of the
old bitmap (a V2 file: 4128 - 4120 = 8 bytes, the bits of sectors 0-63), and the kernel then
reads the file through the new version's geometry: its bitmap where the old bitmap's middle
(or the old data area) lies, its data area at other offsets. `switch_damage()` computes, from
the file as it is before the switch, exactly what the guest loses: the bytes overwritten, the
sectors whose data it can no longer reach, and the sectors that now read bytes that are not
theirs. Nothing is written; the bitmap is read in bounded chunks, holes skipped.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..cow import bitmap as bm
from ..cow.header import CowHeader, pack_header
from ..cow.image import read_fully
from ..fileio import data_extents, open_disk_file

CHUNK = 1 << 20          # bitmap bytes compared per step
MAX_RUNS = 64            # runs kept for display (the counts stay exact)


@dataclass(frozen=True)
class SwitchDamage:
    old_version: int
    new_version: int
    header_bytes: int                  # the new header covers [0, header_bytes)
    old_bitmap_offset: int
    old_bitmap_len: int
    old_data_offset: int
    new_bitmap_offset: int
    new_bitmap_len: int
    new_data_offset: int
    bitmap_bytes_overwritten: int      # old bitmap bytes under the new header
    bits_lost: int                     # set bits among them
    data_bytes_overwritten: int        # old data area bytes under the new header
    sectors: int
    marked: int                        # sectors the old bitmap marks (the guest's data)
    unreachable: int                   # of those, sectors the guest can no longer read
    misread: int                       # unmarked sectors that now read COW bytes not theirs
    unreachable_runs: list[tuple[int, int]] = field(default_factory=list)
    misread_runs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def harmful(self) -> bool:
        return bool(self.bitmap_bytes_overwritten or self.data_bytes_overwritten
                    or self.unreachable or self.misread)

    @property
    def sectors_lost_bits(self) -> tuple[int, int] | None:
        """The sectors whose bits were in the overwritten bitmap bytes (first, last)."""
        if not self.bitmap_bytes_overwritten:
            return None
        return 0, self.bitmap_bytes_overwritten * 8 - 1

    def as_dict(self) -> dict:
        return asdict(self)


def _add_runs(runs: list[tuple[int, int]], bits: np.ndarray, base: int) -> None:
    """Append the runs of set bits of the little-endian bit array `bits` (sector base)."""
    for allocated, start, count in bm.iter_runs(bits, 0, len(bits) * 8):
        if not allocated:
            continue
        start += base
        if runs and runs[-1][0] + runs[-1][1] == start:
            runs[-1] = (runs[-1][0], runs[-1][1] + count)
        elif len(runs) < MAX_RUNS:
            runs.append((start, count))


def _popcount(array: np.ndarray) -> int:
    return int(np.unpackbits(array).sum()) if len(array) else 0


def switch_damage(path: str, old: CowHeader, new: CowHeader) -> SwitchDamage:
    """The damage writing `new` at offset 0 of the COW file `path` (now holding `old`) does."""
    og, ng = old.geometry(), new.geometry()
    header = pack_header(new)
    hlen = len(header)
    fd = open_disk_file(path, os.O_RDONLY, "COW file")
    try:
        ob_lo, ob_hi = og.bitmap_offset, og.bitmap_offset + og.bitmap_len
        over_lo, over_hi = ob_lo, min(ob_hi, hlen)
        overwritten = max(0, over_hi - over_lo)
        bits_lost = 0
        if overwritten:
            bits_lost = _popcount(np.frombuffer(read_fully(fd, overwritten, over_lo), dtype=np.uint8))
        data_over = max(0, min(hlen, og.data_offset + old.size) - og.data_offset)
        sectors = min(og.sectors, ng.sectors)
        nbytes = (sectors + 7) // 8
        # A new bit reaches a sector's old data only at the same data offset, and not where
        # that data lay under the new header.
        same_place = ng.data_offset == og.data_offset
        first_intact = -(-max(0, hlen - og.data_offset) // og.sectorsize) if data_over else 0
        marked = unreachable = misread = 0
        unreachable_runs: list[tuple[int, int]] = []
        misread_runs: list[tuple[int, int]] = []
        for start in range(0, nbytes, CHUNK):
            stop = min(start + CHUNK, nbytes)
            if (ng.bitmap_offset + start >= hlen
                    and not _has_data(fd, ob_lo + start, min(ob_lo + stop, ob_hi))
                    and not _has_data(fd, ng.bitmap_offset + start,
                                      min(ng.bitmap_offset + stop, ng.bitmap_offset + ng.bitmap_len))):
                continue                       # both bitmaps are holes here: no bit set
            old_bits = _bytes(fd, og.bitmap_offset, og.bitmap_len, start, stop, b"")
            new_bits = _bytes(fd, ng.bitmap_offset, ng.bitmap_len, start, stop, header)
            _mask_tail(old_bits, start, sectors)
            _mask_tail(new_bits, start, sectors)
            reach = new_bits.copy() if same_place else np.zeros_like(new_bits)
            if first_intact > start * 8:
                bm.set_range(reach, 0, min(first_intact - start * 8, len(reach) * 8), value=False)
            lost = old_bits & ~reach           # the guest's data it can no longer read
            wrong = new_bits & ~old_bits       # sectors now reading COW bytes that are not theirs
            marked += _popcount(old_bits)
            unreachable += _popcount(lost)
            misread += _popcount(wrong)
            _add_runs(unreachable_runs, lost, start * 8)
            _add_runs(misread_runs, wrong, start * 8)
    finally:
        os.close(fd)
    return SwitchDamage(
        old_version=old.version, new_version=new.version, header_bytes=hlen,
        old_bitmap_offset=og.bitmap_offset, old_bitmap_len=og.bitmap_len,
        old_data_offset=og.data_offset, new_bitmap_offset=ng.bitmap_offset,
        new_bitmap_len=ng.bitmap_len, new_data_offset=ng.data_offset,
        bitmap_bytes_overwritten=overwritten, bits_lost=bits_lost,
        data_bytes_overwritten=data_over, sectors=sectors, marked=marked,
        unreachable=unreachable, misread=misread, unreachable_runs=unreachable_runs,
        misread_runs=misread_runs)


def _has_data(fd: int, start: int, end: int) -> bool:
    return end > start and next(iter(data_extents(fd, start, end)), None) is not None


def _bytes(fd: int, offset: int, length: int, start: int, stop: int,
           header: bytes) -> np.ndarray:
    """Bitmap bytes [start, stop) of a bitmap at `offset` of `length` bytes, as the file holds
    them once `header` is written at 0 (bytes past the bitmap or the file read as 0)."""
    out = np.zeros(stop - start, dtype=np.uint8)
    end = min(stop, length)
    if end > start:
        lo = offset + start
        data = np.frombuffer(read_fully(fd, end - start, lo), dtype=np.uint8).copy()
        if lo < len(header):
            cover = min(len(header) - lo, len(data))
            data[:cover] = np.frombuffer(header[lo:lo + cover], dtype=np.uint8)
        out[:end - start] = data
    return out


def _mask_tail(bits: np.ndarray, start_byte: int, sectors: int) -> None:
    """Clear the bits of sectors past the device's last one."""
    first_bit = start_byte * 8
    if first_bit + len(bits) * 8 > sectors:
        keep = max(0, sectors - first_bit)
        bm.set_range(bits, keep, len(bits) * 8 - keep, value=False)


__all__ = ["SwitchDamage", "switch_damage"]
