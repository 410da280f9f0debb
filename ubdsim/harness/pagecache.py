"""How guest reads and writes reach the device: the page cache for buffered I/O, exact
sectors for O_DIRECT.

Buffered reads go through a clean-page cache per unit filled by the kernel's readahead
(mm/readahead.c, mm/filemap.c [6.1]; `PageCache` below): `dd bs=512` reading page 0 makes
the kernel read pages 0-3 as ONE request, and on [6.1] a COW unit's do_io() offset drift
makes the bytes of pages 1-3 depend on that grouping (observed with linux.uml).

The real kernel writes a buffered block-device write back in whole soft blocks: a partial
block is read, modified and written whole (fs/buffer.c block_write_begin() and
__block_write_full_page() over the bdev inode). So `dd bs=512 seek=3 count=2` on 6.1 writes
sectors 0-7 and a COW file gets bits 0-7 (observed with linux.uml). ubdsim writes through at
once instead of leaving dirty pages (same final bytes, and crash states stay simple), with the
same granularity, and keeps the cached clean pages current. O_DIRECT bypasses the cache: exactly the sectors asked, and misaligned offsets,
lengths or buffer addresses get EINVAL (block/fops.c blkdev_dio_unaligned() [6.1]).

The calls that act on the cache do to these pages what the kernel does to its own (each
compared with linux.uml in tests/harness/test_cache_calls.py): WILLNEED and readahead(2)
read in (force_page_cache_ra()), DONTNEED and BLKFLSBUF drop clean pages
(invalidate_mapping_pages()), fallocate, BLKDISCARD and BLKZEROOUT truncate their range
(truncate_inode_pages_range(): partial pages zeroed in place) or, with another exclusive
holder, invalidate it (invalidate_inode_pages2_range()), O_DIRECT writes invalidate the pages
they touch, BLKBSZSET to a new size drops everything (kill_bdev()). Since ubdsim has no dirty
pages, "clean pages only" is every page.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
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


def write(dev: BlockDevice, pos: int, data: bytes, block: int,
          cache: PageCache | None = None) -> None:
    """Write `data` at `pos` in whole `block`-sized units (block = SECTOR_SIZE for O_DIRECT,
    where alignment was already checked; the soft block size for buffered writes).

    `cache` (buffered writes): the unit's clean pages. A partial block's other bytes come
    from a cached page when there is one (the kernel modifies the page in the cache, then
    writes the block back from it), and cached pages take the new bytes."""
    end = pos + len(data)
    start = pos - pos % block
    stop = min(-(-end // block) * block, dev.size)
    whole = bytes(data)
    if start != pos or stop != end:
        def fetch(at: int, n: int) -> bytes:
            return cache.peek(dev, at, n) if cache is not None else read(dev, at, n)
        head = fetch(start, pos - start) if pos > start else b""
        tail = fetch(end, stop - end) if stop > end else b""
        whole = head + whole + tail
    dev.write(start, whole)
    if cache is not None:
        cache.update(start, whole, dev.size)
        cache.evict()


def zero(dev: BlockDevice, pos: int, length: int) -> None:
    """blkdev_issue_zeroout(): sector-aligned zeroes, in bounded chunks."""
    while length:
        n = min(length, CHUNK)
        dev.write(pos, bytes(n))
        pos += n
        length -= n


# --- the clean-page cache and readahead (buffered reads) ---------------------------------
# Pages kept per unit before the least recently used are dropped (memory pressure in a
# mem=64M guest, roughly): bounds ubdsim's memory on huge buffered I/O.
CACHE_PAGES = 8192
PAGEVEC_SIZE = 15
_ULONG = (1 << 64) - 1
# force_page_cache_ra(): a forced read-in goes in chunks of 2 MiB.
FORCE_CHUNK_PAGES = (2 << 20) // PAGE_SIZE


@dataclass
class Readahead:
    """struct file_ra_state of one open file description (file_ra_state_init() [6.1])."""

    ra_pages: int                  # bdi->ra_pages at open (BLKRAGET / 8)
    io_pages: int                  # bdi->io_pages: the request size limit in pages
    start: int = 0
    size: int = 0
    async_size: int = 0
    prev_pos: int = -1
    # FMODE_RANDOM (POSIX_FADV_RANDOM): a bit of f_mode that only readahead reads, kept here.
    random: bool = False


def file_ra_state_init(unit) -> Readahead:
    """mm/readahead.c file_ra_state_init() [6.1], called by do_dentry_open() at every open:
    the file's window limit is the disk's read-ahead (bdi->ra_pages, BLKRAGET / 8) at open
    time; a later BLKRASET changes it only through POSIX_FADV_NORMAL/SEQUENTIAL."""
    return Readahead(ra_pages=unit.read_ahead_sectors // 8, io_pages=unit.max_sectors // 8)


def get_init_ra_size(size: int, max_pages: int) -> int:
    """mm/readahead.c get_init_ra_size() [6.1]."""
    new = 1 << (size - 1).bit_length()          # roundup_pow_of_two()
    if new <= max_pages // 32:
        return new * 4
    if new <= max_pages // 4:
        return new * 2
    return max_pages


def get_next_ra_size(ra: Readahead, max_pages: int) -> int:
    """mm/readahead.c get_next_ra_size() [6.1]."""
    if ra.size < max_pages // 16:
        return 4 * ra.size
    if ra.size <= max_pages // 2:
        return 2 * ra.size
    return max_pages


class PageCache:
    """The clean pages of one unit's block-device inode, filled the way the 6.1 page cache
    fills them: whole readahead windows, each contiguous run of missing pages ONE device read
    (read_pages() -> one bio; the unit cuts it into requests itself). That grouping matters:
    [6.1]'s do_io() offset drift shifts what the later pages of a request read, so a page's
    bytes depend on the request that brought it in. Writes keep the cached pages current
    (buffered: updated; O_DIRECT: invalidated); kill_bdev() at the disk's last close, and any
    other operation that could change the device behind the cache, drop it; the calls that
    act on the cache (fdops.py, ioctl_blk.py) use drop(), truncate() and force_ra()."""

    def __init__(self, limit: int = CACHE_PAGES) -> None:
        self.pages: OrderedDict[int, bytes] = OrderedDict()
        self.marked: set[int] = set()           # PG_readahead
        self.limit = limit

    def clear(self) -> None:
        self.pages.clear()
        self.marked.clear()

    def invalidate(self, pos: int, length: int) -> None:
        """Drop every page that [pos, pos+length) touches."""
        if length > 0:
            self.drop(pos // PAGE_SIZE, (pos + length - 1) // PAGE_SIZE)

    def drop(self, first: int, last: int) -> None:
        """Drop the cached pages with index first..last (inclusive): mm/truncate.c
        invalidate_inode_pages2_range() [6.1] (O_DIRECT writes, truncate_bdev_range() with
        another exclusive holder) and invalidate_mapping_pages() (DONTNEED, BLKFLSBUF), which
        keep dirty, locked or mapped pages: ubdsim's cached pages are all clean and unmapped."""
        if last < first:
            return
        if last - first < len(self.pages):
            doomed = [i for i in range(first, last + 1) if i in self.pages]
        else:
            doomed = [i for i in self.pages if first <= i <= last]
        for index in doomed:
            del self.pages[index]
            self.marked.discard(index)

    def truncate(self, lstart: int, lend: int) -> None:
        """mm/truncate.c truncate_inode_pages_range() [6.1] over bytes lstart..lend
        (inclusive): the pages wholly inside are dropped; a page the range covers in part
        stays cached with the covered bytes zeroed (truncate_inode_partial_folio():
        folio_zero_range(), the page keeps PG_uptodate and PG_readahead), even when the
        device operation that follows fails."""
        if not self.pages:
            return                                      # mapping_empty()
        self.drop((lstart + PAGE_SIZE - 1) // PAGE_SIZE, (lend + 1) // PAGE_SIZE - 1)
        first = lstart // PAGE_SIZE
        same_page = first == lend // PAGE_SIZE
        if first in self.pages:
            same_page = lend < (first + 1) * PAGE_SIZE
            self._truncate_partial(first, lstart, lend)
        if not same_page and lend // PAGE_SIZE in self.pages:
            self._truncate_partial(lend // PAGE_SIZE, lstart, lend)

    def _truncate_partial(self, index: int, start: int, end: int) -> None:
        """truncate_inode_partial_folio() for an order-0 folio."""
        pos = index * PAGE_SIZE
        offset = start - pos if pos < start else 0
        if pos + PAGE_SIZE <= end:
            length = PAGE_SIZE - offset
        else:
            length = end + 1 - pos - offset
        if length == PAGE_SIZE:                         # truncate_inode_folio()
            del self.pages[index]
            self.marked.discard(index)
        elif length > 0:                                # folio_zero_range()
            page = self.pages[index]
            self.pages[index] = page[:offset] + bytes(length) + page[offset + length:]

    def update(self, pos: int, data: bytes, size: int) -> None:
        """A buffered write of whole blocks `data` at `pos` went through: cached pages take
        its bytes, and every page it covers whole (up to the device's `size`) is cached now,
        as block_write_begin() left it in the kernel's cache, up to date."""
        end = pos + len(data)
        for index in range(pos // PAGE_SIZE, -(-end // PAGE_SIZE)):
            base = index * PAGE_SIZE
            page = self.pages.get(index)
            if page is None:
                if pos <= base and min(base + PAGE_SIZE, size) <= end:
                    self.pages[index] = data[base - pos:base - pos + PAGE_SIZE]
                continue
            lo, hi = max(pos, base), min(end, base + len(page))
            if lo < hi:
                self.pages[index] = page[:lo - base] + data[lo - pos:hi - pos] + page[hi - base:]

    def peek(self, dev: BlockDevice, pos: int, length: int) -> bytes:
        """Current bytes of [pos, pos+length): cached pages where present (what a buffered
        write's read-modify-write sees), the device elsewhere; fills nothing."""
        out = []
        while length:
            index, within = divmod(pos, PAGE_SIZE)
            step = min(length, PAGE_SIZE - within)
            page = self.pages.get(index)
            out.append(page[within:within + step] if page is not None else read(dev, pos, step))
            pos += step
            length -= step
        return b"".join(out)

    def read(self, dev: BlockDevice, ra: Readahead, pos: int, length: int,
             request_end: int) -> bytes:
        """mm/filemap.c filemap_read() [6.1]: `length` bytes at `pos` (already cut at the
        device's end), through batches of cached pages, readahead filling the misses and
        sizing its windows on the whole read, which ends at `request_end`."""
        end = pos + length
        last_index = -(-request_end // PAGE_SIZE)
        out = []
        while pos < end:
            batch = self._get_pages(dev, ra, pos // PAGE_SIZE, last_index)
            for index, page in batch:
                if pos >= end:
                    break
                base = index * PAGE_SIZE
                stop = min(end, base + PAGE_SIZE)
                out.append(page[pos - base:stop - base])
                pos = stop
                ra.prev_pos = pos
        return b"".join(out)

    # -- mm/filemap.c ----------------------------------------------------------------------

    def _batch(self, index: int, last_index: int) -> list[tuple[int, bytes]]:
        """filemap_get_read_batch(): cached pages from `index` on, up to the first miss, at
        most a folio_batch (PAGEVEC_SIZE, 15), and ending at a page marked for readahead."""
        batch = []
        while index < last_index and index in self.pages and len(batch) < PAGEVEC_SIZE:
            batch.append((index, self.pages[index]))
            self.pages.move_to_end(index)
            if index in self.marked:
                break
            index += 1
        return batch

    def _get_pages(self, dev: BlockDevice, ra: Readahead, index: int, last_index: int
                   ) -> list[tuple[int, bytes]]:
        """filemap_get_pages() [6.1]."""
        batch = self._batch(index, last_index)
        if not batch:
            self._sync_ra(dev, ra, index, last_index - index)
            batch = self._batch(index, last_index)
        if not batch:                                   # filemap_create_folio()
            self._read_pages(dev, index, 1)
            return [(index, self.pages[index])]
        tail = batch[-1][0]
        if tail in self.marked and ra.ra_pages:         # filemap_readahead()
            self.marked.discard(tail)
            self._ondemand(dev, ra, tail, last_index - tail, marked=True)
        return batch

    # -- mm/readahead.c --------------------------------------------------------------------

    def _sync_ra(self, dev: BlockDevice, ra: Readahead, index: int, req: int) -> None:
        """page_cache_sync_ra() [6.1]: no readahead configured forces just the page needed;
        a file advised POSIX_FADV_RANDOM (FMODE_RANDOM) forces the pages asked for."""
        if not ra.ra_pages:
            self.force_ra(dev, ra, index, 1)
        elif ra.random:
            self.force_ra(dev, ra, index, req)
        else:
            self._ondemand(dev, ra, index, req, marked=False)

    def force_ra(self, dev: BlockDevice, ra: Readahead, index: int, count: int) -> None:
        """mm/readahead.c force_page_cache_ra() [6.1] (also POSIX_FADV_WILLNEED and
        readahead(2)): up to max(bdi->io_pages, ra_pages) pages from `index`, in 2 MiB
        chunks, no readahead marker; the file's window state is left alone."""
        count = min(count, max(ra.io_pages, ra.ra_pages))
        while count:
            chunk = min(count, FORCE_CHUNK_PAGES)
            self._do_ra(dev, index, chunk, 0)
            index += chunk
            count -= chunk

    def _ondemand(self, dev: BlockDevice, ra: Readahead, index: int, req: int,
                  marked: bool) -> None:
        """ondemand_readahead() [6.1] for order-0 folios (a block device's)."""
        max_pages = ra.ra_pages
        if req > max_pages and ra.io_pages > max_pages:
            max_pages = min(req, ra.io_pages)
        if index == 0:
            self._initial(ra, index, req, max_pages)
        elif index in (ra.start + ra.size - ra.async_size, ra.start + ra.size):
            ra.start += ra.size
            ra.size = max(ra.size, get_next_ra_size(ra, max_pages))
            ra.async_size = ra.size
        elif marked:
            start = self._next_miss(index + 1, max_pages)
            if not start or start - index > max_pages:
                return
            ra.start = start
            ra.size = start - index + req
            ra.size = get_next_ra_size(ra, max_pages)
            ra.async_size = ra.size
        elif req > max_pages or (index - ((ra.prev_pos & _ULONG) >> 12)) & _ULONG <= 1:
            self._initial(ra, index, req, max_pages)
        elif not self._context(ra, index, req, max_pages):
            self._do_ra(dev, index, req, 0)             # a small random read
            return
        # readit: a window this read hits the marker of at once merges the next one.
        if index == ra.start and ra.size == ra.async_size:
            add = get_next_ra_size(ra, max_pages)
            if ra.size + add <= max_pages:
                ra.async_size = add
                ra.size += add
            else:
                ra.size = max_pages
                ra.async_size = max_pages >> 1
        self._do_ra(dev, ra.start, ra.size, ra.async_size)

    @staticmethod
    def _initial(ra: Readahead, index: int, req: int, max_pages: int) -> None:
        ra.start = index
        ra.size = get_init_ra_size(req, max_pages)
        ra.async_size = ra.size - req if ra.size > req else ra.size

    def _context(self, ra: Readahead, index: int, req: int, max_pages: int) -> bool:
        """try_context_readahead(): cached history pages before `index` suggest a stream."""
        head = index - 1
        while head >= 0 and head > index - 1 - max_pages and head in self.pages:
            head -= 1
        size = index - 1 - head
        if size <= req:
            return False
        if size >= index:
            size *= 2
        ra.start = index
        ra.size = min(size + req, max_pages)
        ra.async_size = 1
        return True

    def _next_miss(self, index: int, max_scan: int) -> int:
        """page_cache_next_miss()."""
        for i in range(index, index + max_scan):
            if i not in self.pages:
                return i
        return index + max_scan

    def _do_ra(self, dev: BlockDevice, index: int, count: int, lookahead: int) -> None:
        """do_page_cache_ra() + page_cache_ra_unbounded(): the missing pages of the window,
        each contiguous run one read, the page at count - lookahead marked."""
        if not dev.size:
            return
        end_index = (dev.size - 1) // PAGE_SIZE
        if index > end_index:
            return
        count = min(count, end_index - index + 1)
        run = 0
        for i in range(count):
            if index + i in self.pages:
                self._read_pages(dev, index + i - run, run)
                run = 0
                continue
            if i == count - lookahead:
                self.marked.add(index + i)
            run += 1
        self._read_pages(dev, index + count - run, run)

    def _read_pages(self, dev: BlockDevice, index: int, count: int) -> None:
        """read_pages(): one device read per contiguous run (bounded by CHUNK, a multiple of
        every request size, so the unit cuts its requests exactly as for one bio)."""
        pos = index * PAGE_SIZE
        end = min((index + count) * PAGE_SIZE, dev.size)
        while pos < end:
            step = min(end - pos, CHUNK)
            data = dev.read(pos, step)
            for off in range(0, step, PAGE_SIZE):
                self.pages[(pos + off) // PAGE_SIZE] = data[off:off + PAGE_SIZE]
            pos += step
        self.evict()

    def evict(self) -> None:
        """Drop the least recently used pages beyond the limit."""
        while len(self.pages) > self.limit:
            dropped, _ = self.pages.popitem(last=False)
            self.marked.discard(dropped)

