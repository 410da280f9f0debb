"""COW bitmaps: bit s is bit (s % 8) of byte (s / 8), least significant first.

From: `arch/um/drivers/ubd_kern.c` ubd_test_bit()/ubd_set_bit() [6.1] (same in 2.4).
Bitmaps of large devices are never loaded whole: a 1 TiB backing file has a 256 MiB bitmap,
so these functions work on any buffer (an mmap of the COW file, a numpy array) in chunks of
`CHUNK_BITS` bits, and `map_region()` memory-maps just the bitmap's byte range.
"""
from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import Union

import numpy as np

CHUNK_BITS = 1 << 24            # 2 MiB of bitmap per numpy step: bounded memory for any size

Buffer = Union[np.ndarray, bytes, bytearray, memoryview, mmap.mmap]


def as_array(buf: Buffer) -> np.ndarray:
    """A uint8 numpy view of `buf` (no copy; writable when `buf` is)."""
    if isinstance(buf, np.ndarray):
        return buf.view(np.uint8).reshape(-1)
    return np.frombuffer(buf, dtype=np.uint8)


def any_set(buf: Buffer) -> bool:
    """Is any byte non-zero? (max() is numpy's fastest reduction over bytes, 3-4x any().)"""
    array = as_array(buf)
    return bool(len(array) and array.max())


def test_bit(buf: Buffer, sector: int) -> bool:
    return bool((as_array(buf)[sector >> 3] >> (sector & 7)) & 1)


def _bits(array: np.ndarray, start: int, count: int) -> np.ndarray:
    """Bits [start, start+count) as a 0/1 uint8 array; bits past the buffer's end read 0."""
    first_byte, last_byte = start >> 3, (start + count + 7) >> 3
    raw = array[first_byte:last_byte]
    bits = np.unpackbits(raw, bitorder="little")
    offset = start - (first_byte << 3)
    bits = bits[offset:offset + count]
    if len(bits) < count:
        bits = np.concatenate([bits, np.zeros(count - len(bits), dtype=np.uint8)])
    return bits


def unpack(buf: Buffer, start: int, count: int) -> np.ndarray:
    """Bits [start, start+count) as a bool array, one per sector (bits past the buffer: False).

    The merge's fast path works on whole windows of sectors at once with this."""
    return _bits(as_array(buf), start, count).view(np.bool_)


def iter_runs(buf: Buffer, start: int, count: int, chunk_bits: int = CHUNK_BITS
              ) -> Iterator[tuple[bool, int, int]]:
    """Maximal runs (allocated, first_sector, length) covering [start, start+count).

    A bit beyond the end of `buf` counts as clear: with the V1/V2 rounding bug the kernel has
    no bit for the last sectors and reads them from the backing file.
    """
    array = as_array(buf)
    run_value: bool | None = None
    run_start = start
    position = start
    end = start + count
    while position < end:
        step = min(chunk_bits, end - position)
        bits = _bits(array, position, step)
        changes = np.flatnonzero(np.diff(bits)) + 1
        edges = [0, *changes.tolist(), step]
        for left, right in zip(edges, edges[1:]):
            value = bool(bits[left])
            if run_value is None:
                run_value, run_start = value, position + left
            elif value != run_value:
                yield run_value, run_start, position + left - run_start
                run_value, run_start = value, position + left
        position += step
    if run_value is not None:
        yield run_value, run_start, end - run_start


def set_range(buf: Buffer, start: int, count: int, value: bool = True) -> None:
    """Set (or clear) bits [start, start+count) in a writable buffer, whole bytes at once."""
    if count <= 0:
        return
    array = as_array(buf)
    end = start + count
    head_end = min(end, (start + 7) & ~7)
    tail_start = max(head_end, end & ~7)
    for sector in (*range(start, head_end), *range(tail_start, end)):
        mask = 1 << (sector & 7)
        if value:
            array[sector >> 3] |= mask
        else:
            array[sector >> 3] &= ~mask & 0xFF
    if tail_start > head_end:
        array[head_end >> 3:tail_start >> 3] = 0xFF if value else 0


def count_set(buf: Buffer, nbits: int, chunk_bits: int = CHUNK_BITS) -> int:
    """Number of set bits among the first `nbits` (bits past the buffer count as clear)."""
    array = as_array(buf)
    total = 0
    for position in range(0, nbits, chunk_bits):
        total += int(_bits(array, position, min(chunk_bits, nbits - position)).sum(dtype=np.int64))
    return total


def first_set_at_or_after(buf: Buffer, start: int, nbits: int, chunk_bits: int = CHUNK_BITS) -> int | None:
    """The first set bit in [start, nbits), or None: finds bits past a device's last sector."""
    array = as_array(buf)
    for position in range(start, nbits, chunk_bits):
        bits = _bits(array, position, min(chunk_bits, nbits - position))
        hits = np.flatnonzero(bits)
        if len(hits):
            return position + int(hits[0])
    return None


class MappedRegion:
    """A memory map of bytes [offset, offset+length) of a file, as a uint8 array.

    mmap needs a page-aligned file offset, so the map starts at the page below `offset` and
    `array` is the slice the caller asked for. A zero-length region maps nothing.
    """

    def __init__(self, fd: int, offset: int, length: int, writable: bool) -> None:
        self.length = length
        self._lead = 0
        self._map: mmap.mmap | None = None
        if length == 0:
            self.array = np.zeros(0, dtype=np.uint8)
            return
        page_start = offset - offset % mmap.ALLOCATIONGRANULARITY
        lead = offset - page_start
        file_len = os.fstat(fd).st_size
        if offset + length > file_len:
            raise ValueError(f"region {offset}+{length} runs past the end of the file ({file_len})")
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._lead = lead
        self._map = mmap.mmap(fd, lead + length, access=access, offset=page_start)
        self.array = np.frombuffer(self._map, dtype=np.uint8, count=length, offset=lead)

    def release(self, start: int, end: int) -> None:
        """Give back the memory of the whole pages within array[start:end] (MADV_DONTNEED).

        A shared file map loses nothing by it (the page cache keeps the bytes, dirty ones
        included, and a later read faults them back in); a scan over a large bitmap whose
        bytes are data (zeros written, not holes) so keeps its resident set to one chunk."""
        if self._map is None:
            return
        page = mmap.PAGESIZE
        first = -(-(self._lead + start) // page) * page
        last = (self._lead + min(end, self.length)) // page * page
        if last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    def flush(self) -> None:
        if self._map is not None:
            self._map.flush()

    def close(self) -> None:
        """Unmap now, or, while a caller still holds a view of `array`, when that view dies.

        mmap.close() refuses (BufferError) while numpy views export its buffer; dropping our
        reference lets the garbage collector unmap it once the last view is gone.
        """
        if self._map is not None:
            self.array = np.zeros(0, dtype=np.uint8)
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None

    def __enter__(self) -> "MappedRegion":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def all_set(buf: Buffer, start: int, count: int, chunk_bits: int = CHUNK_BITS) -> bool:
    """Are all bits [start, start+count) set? (Bits past the buffer's end count as clear.)"""
    array = as_array(buf)
    for position in range(start, start + count, chunk_bits):
        step = min(chunk_bits, start + count - position)
        if not _bits(array, position, step).all():
            return False
    return True
