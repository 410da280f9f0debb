"""An opened COW file for tools: header, geometry, a memory-mapped bitmap, and the data area.

Tools (`info`, `moo`, the demo) read COW files the way the kernel's I/O path does
(`ubd_kern.c` do_io() [6.1]: a set bit means "read the COW file at data_offset + offset", a
clear bit means "read the backing file at offset"), but they must also cope with files the
kernel would choke on and with devices of any size. So:

- the bitmap is an mmap of just its byte range, clamped to the file's length (bytes past the
  end of a truncated file read as zero bits, never SIGBUS);
- marked sectors are found by walking only the bitmap's *data* extents (SEEK_DATA/SEEK_HOLE):
  a fresh 1 TiB COW file has a 256 MiB bitmap that is one hole and costs nothing to scan;
- data is moved in bounded chunks (`CHUNK_BYTES`), holes in the backing file stay holes.

The kernel-faithful device (write-back of bitmap words, locking, profiles) lives in
`ubdsim/device/`; this module is the tools' view and keeps its own rules simple.
"""
from __future__ import annotations

import errno as _errno
import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import CowFormatError, UbdError
from ..fileio import data_extents, open_disk_file, shown
from ..profiles.format_rules import FormatRules
from . import bitmap as bm
from .header import ALL_VERSIONS, CowHeader, read_header
from .layouts import HEADER_READ_SIZE
from .sizes import Geometry

CHUNK_BYTES = 256 << 10         # data moved per step: bounded memory, stays in the CPU's L2 cache
BITMAP_SCAN_BYTES = 1 << 20     # bitmap bytes inspected per numpy step


def merge_intervals(*streams: Iterator[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """The union of several sorted streams of half-open intervals, as sorted disjoint intervals."""
    current: tuple[int, int] | None = None
    for start, end in heapq.merge(*streams):
        if current is None:
            current = (start, end)
        elif start <= current[1]:
            current = (current[0], max(current[1], end))
        else:
            yield current
            current = (start, end)
    if current is not None:
        yield current


def read_fully(fd: int, length: int, offset: int, into: memoryview | None = None) -> bytes | memoryview:
    """pread until `length` bytes or EOF; bytes past EOF are zero (do_io(): short reads zero-fill)."""
    out = into if into is not None else memoryview(bytearray(length))
    done = 0
    while done < length:
        n = os.preadv(fd, [out[done:length]], offset + done)
        if n <= 0:
            break
        done += n
    if done < length:
        out[done:length] = bytes(length - done)
    return out if into is not None else bytes(out)


@dataclass(frozen=True)
class Extent:
    """A run of sectors [start, start+count) and whether the COW file holds them."""

    marked: bool
    start: int
    count: int


class CowImage:
    """A COW file opened for tools. Use `CowImage.open(path)` as a context manager."""

    def __init__(self, path: str, fd: int, header: CowHeader, geometry: Geometry,
                 writable: bool) -> None:
        self.path = path
        self.fd = fd
        self.header = header
        self.geometry = geometry
        self.writable = writable
        st = os.fstat(fd)
        self.file_size = st.st_size
        # Bitmap bytes that exist in the file; the rest (a truncated file) reads as clear bits.
        self.bitmap_present = max(0, min(geometry.bitmap_len, self.file_size - geometry.bitmap_offset))
        self._region = bm.MappedRegion(fd, geometry.bitmap_offset, self.bitmap_present, writable)

    @classmethod
    def open(cls, path: str | bytes, *, writable: bool = False,
             rules: FormatRules = ALL_VERSIONS) -> "CowImage":
        """Open and parse `path`; raises CowFormatError subclasses for unusable files."""
        fd = open_disk_file(path, os.O_RDWR if writable else os.O_RDONLY, "COW file")
        try:
            header = _read_named(fd, shown(path), rules)
            geometry = header_geometry(header)
            return cls(os.fsdecode(path), fd, header, geometry, writable)
        except BaseException:
            os.close(fd)
            raise

    # -- the bitmap ---------------------------------------------------------------------------
    @property
    def bitmap(self) -> np.ndarray:
        """The bitmap bytes present in the file (mmap; writable when the image is)."""
        return self._region.array

    @property
    def sectors(self) -> int:
        return self.geometry.sectors

    @property
    def covered_sectors(self) -> int:
        """Sectors that have a bit (fewer than `sectors` with the V1/V2 rounding bug)."""
        return min(self.sectors, self.geometry.bitmap_len * 8)

    def bitmap_data_ranges(self, first_byte: int = 0, end_byte: int | None = None
                           ) -> Iterator[tuple[int, int]]:
        """Byte ranges of the bitmap (relative to its start) that are not holes in the file."""
        base = self.geometry.bitmap_offset
        end = self.bitmap_present if end_byte is None else min(end_byte, self.bitmap_present)
        for start, stop in data_extents(self.fd, base + first_byte, base + end):
            yield start - base, stop - base

    def marked_runs(self, first: int = 0, limit: int | None = None,
                    scan_bytes: int = BITMAP_SCAN_BYTES) -> Iterator[tuple[int, int]]:
        """Maximal runs (start, count) of set bits among sectors [first, limit).

        `limit` defaults to the sectors that have a bit. Only the bitmap's data extents are
        read, and all-zero stretches are skipped with one numpy test per `scan_bytes`.
        """
        limit = self.covered_sectors if limit is None else min(limit, self.geometry.bitmap_len * 8)
        array = self.bitmap
        pending: tuple[int, int] | None = None
        for byte_start, byte_end in self.bitmap_data_ranges(first >> 3, (limit + 7) >> 3):
            for chunk in range(byte_start, byte_end, scan_bytes):
                chunk_end = min(chunk + scan_bytes, byte_end)
                lo, hi = max(chunk * 8, first), min(chunk_end * 8, limit)
                runs = bm.iter_runs(array, lo, hi - lo, chunk_bits=max(8, scan_bytes * 8)) \
                    if lo < hi and bm.any_set(array[chunk:chunk_end]) else ()
                for allocated, start, count in runs:
                    if not allocated:
                        continue
                    if pending is not None and pending[0] + pending[1] == start:
                        pending = (pending[0], pending[1] + count)
                        continue
                    if pending is not None:
                        yield pending
                    pending = (start, count)
                self._region.release(chunk, chunk_end)    # a dense bitmap: one chunk resident
        if pending is not None:
            yield pending

    def count_marked(self, limit: int | None = None) -> int:
        """Set bits among sectors [0, limit) (default: those with a bit), counted with numpy
        over the bitmap's data extents only: no run is built."""
        limit = self.covered_sectors if limit is None else min(limit, self.geometry.bitmap_len * 8)
        array = self.bitmap
        total = 0
        for lo, hi in self.bitmap_data_ranges(0, (limit + 7) >> 3):
            for chunk in range(lo, hi, BITMAP_SCAN_BYTES):
                chunk_end = min(chunk + BITMAP_SCAN_BYTES, hi)
                if bm.any_set(array[chunk:chunk_end]):
                    total += bm.count_set(array[chunk:chunk_end], min(chunk_end * 8, limit) - chunk * 8)
                self._region.release(chunk, chunk_end)
        return total

    def bits_past_end(self) -> int:
        """Set bits for sectors that do not exist (between `sectors` and the bitmap's end)."""
        total_bits = self.bitmap_present * 8
        if total_bits <= self.sectors:
            return 0
        first_byte = self.sectors >> 3
        return bm.count_set(self.bitmap[first_byte:], total_bits - first_byte * 8) - \
            bm.count_set(self.bitmap[first_byte:], self.sectors - first_byte * 8)

    def bits_after_bitmap(self) -> tuple[int, tuple[int, int]]:
        """Set bits between a V1/V2 bitmap's end and the data area, and that byte range.

        With the rounding bug the last sectors have no bit; the kernel's bitmap write-back for
        them (2.4: two 32-bit words, no guard at the bitmap's end) lands in these bytes, which
        no reader ever looks at.
        """
        g = self.geometry
        start = g.bitmap_offset + g.bitmap_len
        length = max(0, min(g.data_offset, self.file_size) - start)
        uncovered = g.sectors - g.bitmap_len * 8
        if not length or uncovered <= 0:
            return 0, (start, length)
        data = os.pread(self.fd, length, start)
        bits = int.from_bytes(data, "little") & ((1 << uncovered) - 1)
        return bin(bits).count("1"), (start, length)

    def grown_over(self, backing_size: int) -> bool:
        """[resize] Is this a COW file grown past a backing file of `backing_size` bytes?

        The 2.4 COW-resize patch sets the header size above the backing file's and marks every
        sector from the backing file's end to the new end (spec section 4, "[resize]"); such a
        file reads entirely from itself past the backing file's end. Same rule as the device
        model's open path for profile 2.4.
        """
        if self.header.size <= backing_size:
            return False
        first = -(-backing_size // self.geometry.sectorsize)
        last = min(self.sectors, self.covered_sectors)
        return first >= last or bm.all_set(self.bitmap, first, last - first)

    def extents(self, first: int = 0, limit: int | None = None) -> Iterator[Extent]:
        """Alternating marked/unmarked extents covering sectors [first, limit) (default: all)."""
        limit = self.sectors if limit is None else limit
        position = first
        for start, count in self.marked_runs(first, limit):
            if start > position:
                yield Extent(False, position, start - position)
            yield Extent(True, start, count)
            position = start + count
        if position < limit:
            yield Extent(False, position, limit - position)

    # -- data ---------------------------------------------------------------------------------
    def read(self, offset: int, length: int, backing_fd: int) -> bytes:
        """Device bytes [offset, offset+length) through the bitmap (do_io() read path)."""
        buf = bytearray(length)
        self.read_into(memoryview(buf), offset, backing_fd)
        return bytes(buf)

    def read_into(self, out: memoryview, offset: int, backing_fd: int | None) -> None:
        """Fill `out` with device bytes from `offset`; sector-aligned or not."""
        ss = self.geometry.sectorsize
        length = len(out)
        first = offset // ss
        last = -(-(offset + length) // ss)
        for extent in self.extents(first, min(last, self.sectors)):
            lo = max(offset, extent.start * ss)
            hi = min(offset + length, (extent.start + extent.count) * ss, self.geometry.size)
            if hi <= lo:
                continue
            view = out[lo - offset:hi - offset]
            if extent.marked:
                read_fully(self.fd, hi - lo, self.geometry.data_offset + lo, view)
            elif backing_fd is not None:
                read_fully(backing_fd, hi - lo, lo, view)
            else:
                view[:] = bytes(hi - lo)
        tail = offset + length - max(offset, self.geometry.size)
        if tail > 0:
            out[length - tail:] = bytes(tail)

    def write(self, offset: int, data: bytes) -> None:
        """Write whole sectors at `offset` into the COW file and mark them (tools and demo).

        Order as the kernel: data first, then the bitmap bytes (here: the mmap, flushed).
        """
        if not self.writable:
            raise UbdError(f"{self.path} is open read-only", errno=_errno.EBADF)
        ss = self.geometry.sectorsize
        if offset % ss or len(data) % ss:
            raise UbdError(f"writes must be whole {ss}-byte sectors", errno=_errno.EINVAL)
        first, count = offset // ss, len(data) // ss
        if first + count > self.covered_sectors:
            raise UbdError(f"write past the last sector with a bitmap bit ({self.covered_sectors})",
                           errno=_errno.ENOSPC)
        view = memoryview(data)
        position = self.geometry.data_offset + offset
        while view:
            n = os.pwrite(self.fd, view, position)
            view, position = view[n:], position + n
        bm.set_range(self.bitmap, first, count)
        self._region.flush()

    def fsync(self) -> None:
        self._region.flush()
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self._region.close()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "CowImage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def header_geometry(header: CowHeader) -> Geometry:
    """header.geometry(), refusing values no tool can work with (alignment or sector size 0)."""
    if header.sectorsize <= 0:
        raise CowFormatError(f"COW header sector size is {header.sectorsize}: no sector fits")
    if header.alignment <= 0:
        raise CowFormatError("COW header alignment is 0 (read_cow_header - invalid COW header, "
                             "align == 0): the kernel divides by zero on it; uml_moo crashes",
                             msg_id="cow.align_zero")
    return header.geometry()


def read_header_file(path: str | bytes, rules: FormatRules = ALL_VERSIONS) -> tuple[CowHeader, os.stat_result]:
    """Just the header of `path` (for `info`, which must survive files no geometry fits)."""
    fd = open_disk_file(path, os.O_RDONLY, "COW file")
    try:
        return _read_named(fd, shown(path), rules), os.fstat(fd)
    finally:
        os.close(fd)


def _read_named(fd: int, shown: str, rules: FormatRules) -> CowHeader:
    """read_header() on the file's first bytes; errors name the file (one line says it all)."""
    size = os.fstat(fd).st_size
    try:
        return read_header(read_fully(fd, min(HEADER_READ_SIZE, size), 0), rules)
    except CowFormatError as err:
        named = type(err)(f"'{shown}': {err.message}", errno=err.errno, msg_id=err.msg_id,
                          args=err.msg_args)
        named.printed = getattr(err, "printed", ())  # type: ignore[attr-defined]
        raise named from None


__all__ = ["CowImage", "Extent", "CHUNK_BYTES", "data_extents", "merge_intervals", "read_fully",
           "header_geometry", "read_header_file"]
