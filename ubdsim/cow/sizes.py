"""Where the bitmap and the data live in a COW file: cow_sizes() and its hazards.

From: `arch/um/drivers/cow_user.c` cow_sizes(), read_cow_header() (bitmap offsets) [6.1],
identical for V1/V2 in 2.4.20.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CowFormatError
from .layouts import V1, V2, HeaderLayout


def div_round(x: int, length: int) -> int:
    """cow_user.c DIV_ROUND(): ceiling division."""
    return (x + length - 1) // length


def round_up(x: int, align: int) -> int:
    """cow_user.c ROUND_UP()."""
    return div_round(x, align) * align


def bitmap_offset_for(layout: HeaderLayout, sectorsize: int, alignment: int) -> int:
    """read_cow_header(): V1/V2 bitmaps follow the header; V3 bitmaps start at the aligned size.

    Alignment 0 makes the kernel divide by zero (after printing `align == 0`); ubdsim refuses.
    """
    if layout in (V1, V2):
        return layout.size
    if alignment <= 0:
        raise CowFormatError(f"COW header alignment is {alignment}: the bitmap cannot be placed",
                             msg_id="cow.align_zero")
    return round_up(layout.size, alignment)


@dataclass(frozen=True)
class Geometry:
    """The placement of a COW file's parts, as the kernel computes it."""

    version: int
    size: int                  # bytes covered (header `size`)
    sectorsize: int
    alignment: int
    bitmap_offset: int
    bitmap_len: int            # bytes of bitmap the kernel reads and writes
    data_offset: int           # sector s lives at data_offset + s * sectorsize

    @property
    def sectors(self) -> int:
        """Sectors the device exposes (a final partial sector counts)."""
        return div_round(self.size, self.sectorsize)

    @property
    def bitmap_bits_needed(self) -> int:
        return self.sectors

    @property
    def rounding_bug(self) -> bool:
        """V1/V2 only: the bitmap is too short to hold a bit for every sector.

        cow_sizes() computes (size + ss - 1) / (8 * ss), which drops the last partial byte
        whenever the sector count is not a multiple of 8; 2.4's unguarded word write-back can
        then spill past the bitmap into the data area.
        """
        return self.bitmap_len * 8 < self.sectors

    @property
    def file_length(self) -> int:
        """Length of a full COW file: data area end (the kernel extends to it as a hole)."""
        return self.data_offset + self.size

    def sector_offset(self, sector: int) -> int:
        return self.data_offset + sector * self.sectorsize


def cow_sizes(version: int, size: int, sectorsize: int, align: int, bitmap_offset: int
              ) -> tuple[int, int]:
    """(bitmap_len, data_offset) exactly as cow_user.c cow_sizes() computes them.

    Versions < 3 keep the rounding bug: (size + ss - 1) / (8 * ss) in integer division.
    """
    if sectorsize <= 0:
        raise CowFormatError(f"COW header sector size is {sectorsize}")
    if version < 3:
        bitmap_len = (size + sectorsize - 1) // (8 * sectorsize)
        data_offset = round_up(bitmap_offset + bitmap_len, sectorsize)
    else:
        if align <= 0:
            raise CowFormatError(f"COW header alignment is {align}: the data area cannot be placed",
                                 msg_id="cow.align_zero")
        bitmap_len = div_round(div_round(size, sectorsize), 8)
        data_offset = round_up(bitmap_offset + bitmap_len, align)
    return bitmap_len, data_offset


def geometry(layout: HeaderLayout, size: int, sectorsize: int, alignment: int) -> Geometry:
    """The full placement for a header of `layout` (V1/V2 align on the sector size)."""
    if layout in (V1, V2):
        alignment = sectorsize
    bitmap_offset = bitmap_offset_for(layout, sectorsize, alignment)
    bitmap_len, data_offset = cow_sizes(layout.version, size, sectorsize, alignment, bitmap_offset)
    return Geometry(version=layout.version, size=size, sectorsize=sectorsize, alignment=alignment,
                    bitmap_offset=bitmap_offset, bitmap_len=bitmap_len, data_offset=data_offset)


__all__ = ["Geometry", "geometry", "cow_sizes", "bitmap_offset_for", "div_round", "round_up"]
