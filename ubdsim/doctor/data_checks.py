"""Findings that compare the bitmap with what the data area really holds.

The kernel writes a sector's data first and its bitmap word after (ubd_kern.c do_io() and
update_bitmap() [6.1]; the same order in 2.4), with no sync between. So a crash between the
two, or two 2.4 kernels racing on one file (each writes back its own copy of a bitmap word),
leaves *data whose bit is clear*: the guest reads the backing file there, and the written data
is a leak. The host allocates in filesystem blocks, so a lone 512-byte write also leaves its
neighbours allocated and zero: unmarked sectors are judged by their content, never by
allocation alone, so a clean file is never called leaky. Everything is found through the
file's data extents (SEEK_DATA), so a 1 TiB sparse file costs what its data costs.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..cow.image import CowImage, read_fully
from ..cow.layouts import V2, V3
from ..fileio import data_extents
from .findings import CORRUPTION, LEAK, WARNING, Finding, describe_runs, sector_count

SCAN_BYTES = 1 << 20            # data read per step when judging unmarked sectors by content
MAX_RUNS = 10_000               # runs kept per finding (the count stays exact)


def _data_sector_runs(image: CowImage) -> Iterator[tuple[int, int]]:
    """Sector runs (start, count) of the data area that the file has data for (partial
    sectors count as data)."""
    g = image.geometry
    end = min(g.data_offset + g.sectors * g.sectorsize, image.file_size)
    for lo, hi in data_extents(image.fd, g.data_offset, end):
        first = (lo - g.data_offset) // g.sectorsize
        last = -(-(hi - g.data_offset) // g.sectorsize)
        yield first, last - first


def _subtract(runs: Iterator[tuple[int, int]], cut: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The parts of `runs` outside every run of `cut` (both sorted, disjoint)."""
    i = 0
    for start, count in runs:
        end = start + count
        position = start
        while i < len(cut) and cut[i][0] + cut[i][1] <= position:
            i += 1
        j = i
        while position < end:
            if j < len(cut) and cut[j][0] < end:
                c_start, c_end = cut[j][0], cut[j][0] + cut[j][1]
                if c_start > position:
                    yield position, c_start - position
                position = max(position, c_end)
                j += 1
            else:
                yield position, end - position
                position = end


def _append_run(runs: list[tuple[int, int]], start: int, count: int) -> None:
    if runs and runs[-1][0] + runs[-1][1] == start:
        runs[-1] = (runs[-1][0], runs[-1][1] + count)
    else:
        runs.append((start, count))


def _nonzero_sectors(image: CowImage, start: int, count: int, into: list[tuple[int, int]]) -> int:
    """Append the runs of sectors in [start, start+count) whose data is not all zero."""
    g = image.geometry
    per_step = max(1, SCAN_BYTES // g.sectorsize)
    found = 0
    for first in range(start, start + count, per_step):
        n = min(per_step, start + count - first)
        data = read_fully(image.fd, n * g.sectorsize, g.data_offset + first * g.sectorsize)
        sectors = np.frombuffer(data, dtype=np.uint8).reshape(n, g.sectorsize).any(axis=1)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], sectors.view(np.int8), [0]))))
        for lo, hi in zip(edges[::2], edges[1::2]):
            found += int(hi - lo)
            if len(into) < MAX_RUNS:
                _append_run(into, first + int(lo), int(hi - lo))
    return found


def orphan_data(image: CowImage, marked: list[tuple[int, int]]) -> Finding | None:
    """Sectors with a clear bit whose data-area bytes are not zero: written, bit lost."""
    covered = image.covered_sectors          # rounding-bug sectors have no bit to lose
    unmarked = _subtract(((s, min(n, covered - s)) for s, n in _data_sector_runs(image) if s < covered),
                         marked)
    runs: list[tuple[int, int]] = []
    total = sum(_nonzero_sectors(image, s, n, runs) for s, n in unmarked)
    if not total:
        return None
    return Finding("data.orphan", LEAK, (
        f"{total} sectors ({describe_runs(runs)}) hold data in the COW file but their bits are "
        "clear, so the guest reads them from the backing file: the data was written and its "
        "bitmap write-back lost (a crash between do_io()'s data write and the bitmap write, or "
        "two 2.4 kernels on one file, each writing back its own copy of a bitmap word)"),
        sectors=runs, repair="mark-orphans")


def marked_holes(image: CowImage, marked: list[tuple[int, int]], grown_from: int | None) -> Finding | None:
    """Marked sectors whose data is a hole: the guest reads zeros there."""
    limit = image.sectors if grown_from is None else grown_from
    candidates = ((s, min(n, limit - s)) for s, n in marked if s < limit)
    runs: list[tuple[int, int]] = []
    total = 0
    for start, count in _subtract(candidates, list(_data_sector_runs(image))):
        total += count
        if len(runs) < MAX_RUNS:
            _append_run(runs, start, count)
    if not total:
        return None
    return Finding("data.marked_hole", WARNING, (
        f"{total} marked sectors ({describe_runs(runs)}) are holes in the COW file, so the "
        "guest reads zeros there, not the backing file: what a 6.1 discard or write-zeroes "
        "leaves (ubd_kern.c punches the COW file and sets the bits), but under 2.4, which has "
        "no discard, a sign that the data write was lost after its bit was written"),
        sectors=runs)


def bits_past_end(image: CowImage) -> Finding | None:
    past = image.bits_past_end()
    if not past:
        return None
    g = image.geometry
    return Finding("bitmap.bits_past_end", LEAK, (
        f"{past} bits are set for sectors past the last one ({g.sectors}): no kernel writes "
        "them (ubd_kern.c only sets bits of requests inside the device); harmless to reads, "
        "but a sign that something else wrote the bitmap"),
        byte_ranges=[(g.bitmap_offset + g.sectors // 8, g.bitmap_len - g.sectors // 8)],
        repair="clear-bits-past-end")


def short_file(image: CowImage, marked: list[tuple[int, int]]) -> Finding | None:
    """A file shorter than its data area: bitmap bytes or marked data missing."""
    g = image.geometry
    if image.file_size >= g.file_length:
        return None
    ss = g.sectorsize
    first_missing = max(0, (image.file_size - g.data_offset) // ss)
    lost = [(max(s, first_missing), s + n - max(s, first_missing)) for s, n in marked
            if s + n > first_missing]
    if image.bitmap_present < g.bitmap_len:
        return Finding("file.truncated_bitmap", CORRUPTION, (
            f"the file ({image.file_size} bytes) ends inside the bitmap ({g.bitmap_offset}+"
            f"{g.bitmap_len}): the missing bits read as clear, so whatever they marked now reads "
            "from the backing file"), byte_ranges=[(image.file_size, g.file_length - image.file_size)])
    if lost:
        return Finding("file.marked_past_eof", CORRUPTION, (
            f"the file ({image.file_size} bytes) ends before the data of {sector_count(lost)} "
            f"marked sectors ({describe_runs(lost)}): reads there come up short (6.1 do_io() "
            "then repeats bytes; 2.4 fills zeros)"), sectors=lost)
    return Finding("file.short", WARNING, (
        f"the file ({image.file_size} bytes) is shorter than its data area ends "
        f"({g.file_length}); no marked sector is missing, so nothing is lost, but the kernel "
        "and uml_mkcow always make it full length (a copy that dropped the trailing hole?)"))


def switched_over_old_version(image: CowImage) -> Finding | None:
    """A V3 header on a file laid out as V2: Linux 6.1's backing switch did it.

    ubd_kern.c open_ubd_file() [6.1] rewrites the header on a switch with write_cow_header(),
    always as V3, whatever the version was. Over a V2 file the 4128-byte V3 header overwrites
    the V2 bitmap's first 8 bytes, and 6.1 then reads the old data area as its bitmap. A real
    V3 file has nothing between its header's end and its bitmap (alignment padding, never
    written); a switched V2 file has the rest of its V2 bitmap and the start of its V2 data
    area there.
    """
    header, g = image.header, image.geometry
    if header.layout is not V3 or g.bitmap_offset <= V3.size:
        return None
    padding = [(lo, hi) for lo, hi in data_extents(image.fd, V3.size, g.bitmap_offset)]
    if not any(np.frombuffer(read_fully(image.fd, hi - lo, lo), dtype=np.uint8).any()
               for lo, hi in padding):
        return None
    old = header.with_layout(V2).geometry()
    return Finding("header.v3_over_v2", CORRUPTION, (
        "a V3 header sits on a file laid out as V2 (bytes between the V3 header's end and its "
        f"bitmap at {g.bitmap_offset}, where V3 never writes, hold the rest of a V2 bitmap at "
        f"{old.bitmap_offset}): Linux 6.1's backing switch rewrites the header as V3 "
        "(open_ubd_file() -> write_cow_header()), over the V2 bitmap's first bytes, and then "
        "reads the old data area as its bitmap; the guest's data is still in the file at the V2 "
        f"offsets (data area {old.data_offset}), and `ubdsim repair` can rebuild the V2 file"),
        byte_ranges=[(V3.size, g.bitmap_offset - V3.size)], repair="rebuild-v2")


__all__ = ["orphan_data", "marked_holes", "bits_past_end", "short_file",
           "switched_over_old_version"]
