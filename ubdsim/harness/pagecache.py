"""How guest reads and writes reach the device: the page cache for buffered I/O, exact
sectors for O_DIRECT.

The real kernel writes a buffered block-device write back in whole soft blocks: a partial
block is read, modified and written whole (fs/buffer.c block_write_begin() and
__block_write_full_page() over the bdev inode). So `dd bs=512 seek=3 count=2` on 6.1 writes
sectors 0-7 and a COW file gets bits 0-7 (observed with linux.uml). ubdsim writes through at
once instead of caching (same final bytes, and crash states stay simple), but with the same
granularity. O_DIRECT bypasses the cache: exactly the sectors asked, and misaligned offsets,
lengths or buffer addresses get EINVAL (block/fops.c blkdev_dio_unaligned() [6.1]).
"""
from __future__ import annotations

from typing import Iterable

from ..device.api import SECTOR_SIZE, BlockDevice

PAGE_SIZE = 4096
# Largest transfer handed to the device at once: bounds ubdsim's memory for huge guest I/O.
CHUNK = 4 << 20


def initial_block_size(size: int, max_block: int = PAGE_SIZE) -> int:
    """block/bdev.c set_init_blocksize() [6.1]: double the 512-byte logical block while it
    stays below the page size and still divides the device size."""
    bsize = SECTOR_SIZE
    while bsize < max_block and not size & bsize:
        bsize <<= 1
    return bsize


def direct_misaligned(pos: int, segments: Iterable[tuple[int, int]]) -> bool:
    """block/fops.c blkdev_dio_unaligned(): offset, each buffer address and length must be
    multiples of the logical block size (512) for ubd."""
    mask = SECTOR_SIZE - 1
    return bool(pos & mask) or any((addr | length) & mask for addr, length in segments)


def read(dev: BlockDevice, pos: int, length: int) -> bytes:
    """`length` bytes at any `pos` (within the device), via whole sectors."""
    if not (pos | length) & (SECTOR_SIZE - 1):
        return dev.read(pos, length)            # already whole sectors
    start = pos - pos % SECTOR_SIZE
    end = -(-(pos + length) // SECTOR_SIZE) * SECTOR_SIZE
    return dev.read(start, end - start)[pos - start:pos - start + length]


def write(dev: BlockDevice, pos: int, data: bytes, block: int) -> None:
    """Write `data` at `pos` in whole `block`-sized units (block = SECTOR_SIZE for O_DIRECT,
    where alignment was already checked; the soft block size for buffered writes)."""
    end = pos + len(data)
    start = pos - pos % block
    stop = min(-(-end // block) * block, dev.size)
    if start == pos and stop == end:
        dev.write(pos, data)
        return
    head = read(dev, start, pos - start) if pos > start else b""
    tail = read(dev, end, stop - end) if stop > end else b""
    dev.write(start, head + bytes(data) + tail)


def zero(dev: BlockDevice, pos: int, length: int) -> None:
    """blkdev_issue_zeroout(): sector-aligned zeroes, in bounded chunks."""
    while length:
        n = min(length, CHUNK)
        dev.write(pos, bytes(n))
        pos += n
        length -= n
