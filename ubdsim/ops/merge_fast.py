"""The fast path of `moo COW NEWFILE`: the host kernel copies, Python only decides what to copy.

uml_moo reads and writes every sector through user space; the exact path (merge.merge_new's
chunk loop) reads every byte into a buffer to look for zero blocks before writing it. Here the
device is taken in windows of WINDOW bytes and, per window:
- the bitmap bits of its sectors are unpacked with numpy (marked: from the COW file's data
  area, else from the backing file), and the backing file's holes found with SEEK_DATA;
- whether each 4 KiB block of the merged image is all zero is decided from memory maps of the
  two files without copying them: the first 8 bytes of each sector, and the whole sector only
  when those are zero (so the new file has the same holes as the exact path's write_nonzero(),
  which are those of uml_moo's output: it skips zero sectors);
- the runs of non-zero blocks are copied from the backing file with copy_file_range() (a
  reflink where the file system shares extents: the kernel tries its remap first), a few long
  calls per window, and the marked sectors in them written over that from the COW file's map
  (one pwrite per marked run, no copy through a buffer); then the window's writeback is
  started at once (POSIX_FADV_DONTNEED), so the final fsync waits for little.
Windows that hold no backing data and no bitmap data are never visited: a 16 TiB sparse COW
file costs what its data costs. What the maps cannot cover safely (the device's last partial
block, bytes past either file's end: a 2.4-grown COW file, a truncated COW file) is left to the
exact path, as is any sector size that does not divide 4 KiB into 8-byte words and a backing
block device.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

import numpy as np

from ..cow import bitmap as bm
from ..cow.image import CowImage, merge_intervals
from ..fileio import copy_range, data_extents, pwrite_all

ZERO_BLOCK = 4096                # granularity of holes left in the new file (as write_nonzero)
WINDOW = 32 << 20                # device bytes decided per numpy step: bounded memory

Progress = Callable[[int, int], None]


def fits(image: CowImage, bfd: int) -> bool:
    """Can the fast path take these files? Sectors of whole 8-byte words tiling 4 KiB, and a
    regular backing file (a block device has no file size to map against)."""
    ss = image.geometry.sectorsize
    return ss % 8 == 0 and ZERO_BLOCK % ss == 0 and stat.S_ISREG(os.fstat(bfd).st_mode)


def mapped_end(image: CowImage, backing_size: int) -> int:
    """Where the fast path stops: the last whole block that both files fully hold."""
    g = image.geometry
    end = min(g.size, backing_size, image.file_size - g.data_offset)
    return max(0, end) // ZERO_BLOCK * ZERO_BLOCK


def _windows(image: CowImage, bfd: int, end: int) -> Iterator[int]:
    """Starts of the windows in [0, end) with backing data or non-hole bitmap bytes."""
    per_byte = 8 * image.geometry.sectorsize          # device bytes one bitmap byte covers
    bitmap = ((lo * per_byte, min(hi * per_byte, end))
              for lo, hi in image.bitmap_data_ranges(0, -(-end // per_byte)))
    last = -1
    for lo, hi in merge_intervals(data_extents(bfd, 0, end), bitmap):
        for start in range(max(lo // WINDOW, last + 1), -(-hi // WINDOW)):
            last = start
            yield start * WINDOW


def _nonzero(words: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """For the sectors `picked` (rows of `words`, one row per sector): is any byte non-zero?
    The first word settles almost every sector holding data; only the rest are read whole."""
    found = words[picked, 0] != 0
    unsure = np.flatnonzero(~found)
    if len(unsure):
        found[unsure] = words[picked[unsure]].any(axis=1)
    return found


def _sector_words(region: bm.MappedRegion, ss: int) -> np.ndarray:
    """The mapped bytes as one row of 8-byte words per sector (a view: nothing is read yet)."""
    return region.array.view(np.uint64).reshape(-1, ss // 8)


def _runs(mask: np.ndarray) -> Iterator[tuple[int, int]]:
    """(first, end) of each run of True in `mask`."""
    edges = np.flatnonzero(np.diff(mask.view(np.int8), prepend=0, append=0)).tolist()
    return zip(edges[::2], edges[1::2])


def _copy_window(image: CowImage, bfd: int, ofd: int, lo: int, hi: int) -> int:
    """Merge device bytes [lo, hi) (whole blocks) into `ofd`; returns the bytes of the
    non-zero blocks written (the marked sectors are written over some of them).

    The non-zero blocks are copied whole from the backing file (its holes read as zeros,
    which is what an unmarked sector over a hole is), in a few long copy_file_range() calls;
    then the marked sectors in them are written over that from the COW file's map."""
    g = image.geometry
    ss = g.sectorsize
    first, count = lo // ss, (hi - lo) // ss
    marked = bm.unpack(image.bitmap, first, count)
    backed = np.zeros(count, dtype=bool)
    for start, stop in data_extents(bfd, lo, hi):
        backed[(start - lo) // ss:-(-(stop - lo) // ss)] = True
    backed &= ~marked
    nonzero = np.zeros(count, dtype=bool)
    cow: bm.MappedRegion | None = None
    picked = np.flatnonzero(backed)
    if len(picked):
        with bm.MappedRegion(bfd, lo, hi - lo, writable=False) as region:
            nonzero[picked] = _nonzero(_sector_words(region, ss), picked)
    picked = np.flatnonzero(marked)
    try:
        if len(picked):
            cow = bm.MappedRegion(image.fd, g.data_offset + lo, hi - lo, writable=False)
            nonzero[picked] = _nonzero(_sector_words(cow, ss), picked)
        per_block = ZERO_BLOCK // ss
        blocks = nonzero.reshape(-1, per_block).any(axis=1)
        written = 0
        for left, right in _runs(blocks):
            length = (right - left) * ZERO_BLOCK
            copy_range(bfd, ofd, length, lo + left * ZERO_BLOCK, lo + left * ZERO_BLOCK)
            written += length
        if cow is not None:
            data = memoryview(cow.array)
            for left, right in _runs(marked & np.repeat(blocks, per_block)):
                pwrite_all(ofd, data[left * ss:right * ss], lo + left * ss)
        return written
    finally:
        if cow is not None:
            cow.close()


def copy_merged(image: CowImage, bfd: int, ofd: int, end: int,
                progress: Progress | None = None) -> int:
    """Write the merged device bytes [0, end) (end: mapped_end()) into `ofd`, holes left for
    zero blocks; returns bytes written. The caller writes [end, size) the exact way.

    Each finished window's writeback is started at once (POSIX_FADV_DONTNEED submits its
    dirty pages without waiting), so the disk writes while the next window is copied and the
    caller's fsync finds little left to do (a helper thread for it measured no better)."""
    size = image.geometry.size
    written = 0
    for lo in _windows(image, bfd, end):
        hi = min(lo + WINDOW, end)
        written += _copy_window(image, bfd, ofd, lo, hi)
        os.posix_fadvise(ofd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
        if progress:
            progress(hi, size)
    return written


__all__ = ["WINDOW", "ZERO_BLOCK", "copy_merged", "fits", "mapped_end"]
