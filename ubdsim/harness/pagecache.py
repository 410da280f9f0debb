"""How guest reads and writes reach the device: the page cache for buffered I/O, exact
sectors for O_DIRECT.

Buffered reads go through a clean-page cache per unit filled by the kernel's readahead
(mm/readahead.c, mm/filemap.c [6.1]; `PageCache` below): `dd bs=512` reading page 0 makes
the kernel read pages 0-3 as ONE request, and on [6.1] a COW unit's do_io() offset drift
makes the bytes of pages 1-3 depend on that grouping (observed with linux.uml).

Buffered writes are write-back, as in the kernel (fs/buffer.c block_write_begin(),
__block_write_begin(), block_write_end() over the bdev inode [6.1]): the bytes go into the
unit's pages, which become dirty, and reach the device only when they are written back
(`writeback.py` says when, and what a failed write-back does). The cache keeps buffer-head
state at the soft block size: a partly covered block that is not up to date is read first
(`dd bs=512 seek=3 count=2` with 4 KiB blocks reads sectors 0-7, then writes all 8 back, so a
COW file gets bits 0-7: observed with linux.uml); a wholly covered one is not, so with blocks
smaller than a page a page can be only partly up to date, and a later read fetches only its
missing blocks (block_read_full_folio(), unless block_is_partially_uptodate() says the range
read is already there). O_DIRECT bypasses the
cache: exactly the sectors asked, after writing back the dirty pages they overlap, and
misaligned offsets, lengths or buffer addresses get EINVAL (block/fops.c
blkdev_dio_unaligned() [6.1]).

The calls that act on the cache do to these pages what the kernel does to its own (each
compared with linux.uml in tests/harness/test_cache_calls.py): WILLNEED and readahead(2)
read in (force_page_cache_ra()), DONTNEED and BLKFLSBUF drop clean pages
(invalidate_mapping_pages()), fallocate, BLKDISCARD and BLKZEROOUT truncate their range
(truncate_inode_pages_range(): partial pages zeroed in place) or, with another exclusive
holder, invalidate it (invalidate_inode_pages2_range()), O_DIRECT writes invalidate the pages
they touch, BLKBSZSET to a new size writes back and drops everything (set_blocksize()). Invalidation
keeps dirty pages; truncation drops them, their data with them.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

from ..device.api import SECTOR_SIZE, BlockDevice
from ..errors import UbdError

PAGE_SIZE = 4096
# UBDSIM_EXACT_IO=1: readahead reads each bio request by request even where one host read
# gives the same bytes (Unit.read_uncut()), and rw.py's O_DIRECT fast paths are off: the
# exact path the differential test (tests/harness/test_fast_path.py) compares them with.
EXACT_IO = os.environ.get("UBDSIM_EXACT_IO") == "1"
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


def zero(dev: BlockDevice, pos: int, length: int) -> None:
    """blkdev_issue_zeroout(): sector-aligned zeroes, in bounded chunks."""
    while length:
        n = min(length, CHUNK)
        dev.write(pos, bytes(n))
        pos += n
        length -= n


# --- the clean-page cache and readahead (buffered reads) ---------------------------------
# blk_print_req_error()'s cmd_flags for failed reads (measured with linux.uml 6.1): a
# readahead request (REQ_RAHEAD | REQ_FAILFAST_DEV/TRANSPORT/DRIVER), a page's own read.
READAHEAD_FLAGS = 0x80700
READ_FOLIO_FLAGS = 0x0
# block/blk-merge.c __bio_split_to_limits(): a bio split at the queue's limits gets
# REQ_NOMERGE on the part split off (every request of it but the last: measured with
# linux.uml, a failed 32-page readahead request showed flags 0x84700).
REQ_NOMERGE = 0x4000
BIO_MAX_BYTES = 256 * PAGE_SIZE          # BIO_MAX_VECS pages of a bio built page by page


def bio_requests(offset: int, length: int, max_sectors: int) -> list[tuple[int, int, int, int]]:
    """The requests the block layer makes of I/O built as bios of at most BIO_MAX_BYTES
    (mpage readahead, a direct I/O), each split every `max_sectors` sectors:
    (offset, length, extra cmd_flags, physical segments = the pages it touches)."""
    out = []
    step = max_sectors * SECTOR_SIZE
    for bio in range(offset, offset + length, BIO_MAX_BYTES):
        bio_end = min(bio + BIO_MAX_BYTES, offset + length)
        for at in range(bio, bio_end, step):
            n = min(step, bio_end - at)
            pages = (at + n - 1) // PAGE_SIZE - at // PAGE_SIZE + 1
            out.append((at, n, REQ_NOMERGE if at + n < bio_end else 0, pages))
    return out
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
        # Pages not PG_uptodate: index -> mask of their up-to-date blocks (buffer_uptodate);
        # their other blocks' bytes in `pages` are zeros standing for "not read".
        self.partial: dict[int, int] = {}
        # Dirty pages: index -> mask of dirty blocks (buffer_dirty), in the order they were
        # first dirtied, with the time of that (the flusher's dirtied_when, per page here).
        self.dirty: dict[int, int] = {}
        self.dirtied_at: dict[int, float] = {}
        # The soft block size the block masks count in: a new one (BLKBSZSET) kills the
        # cache first, so every mask in it uses the size of the last buffered write.
        self.block = PAGE_SIZE
        # Set by the session for its unit: its max_sectors (requests), and where the
        # block layer's error lines go (writeback.UnitErrors; None: nowhere).
        self.request_sectors = 255
        self.errors = None
        self.limit = limit
        self.uncut = 0          # readahead bios read in one host read (`ubdsim run --stats`)

    def clear(self) -> None:
        """kill_bdev(): every page goes, dirty ones too (callers write back first where the
        kernel does)."""
        self.pages.clear()
        self.marked.clear()
        self.partial.clear()
        self.dirty.clear()
        self.dirtied_at.clear()

    def _cached(self, first: int, last: int) -> list[int]:
        """The cached page indices first..last (inclusive), by whichever is shorter to walk:
        the range or the cache (a huge range over a small cache costs the cache's size)."""
        if last < first:
            return []
        if last - first < len(self.pages):
            return [i for i in range(first, last + 1) if i in self.pages]
        return [i for i in self.pages if first <= i <= last]

    def _forget(self, index: int) -> None:
        del self.pages[index]
        self.marked.discard(index)
        self.partial.pop(index, None)
        if self.dirty.pop(index, None) is not None:
            del self.dirtied_at[index]

    def invalidate(self, pos: int, length: int) -> None:
        """Drop every page that [pos, pos+length) touches."""
        if length > 0:
            self.drop(pos // PAGE_SIZE, (pos + length - 1) // PAGE_SIZE)

    def drop(self, first: int, last: int, keep: frozenset[int] | set[int] = frozenset()) -> int:
        """Drop the clean cached pages with index first..last (inclusive): mm/truncate.c
        invalidate_inode_pages2_range() [6.1] (O_DIRECT writes, truncate_bdev_range() with
        another exclusive holder) and invalidate_mapping_pages() (DONTNEED, BLKFLSBUF), which
        keep dirty pages and pages under write-back (`keep`; ubdsim's pages are never locked
        or mapped). Returns how many dirty pages were kept (invalidate_inode_pages2_range()
        then fails with EBUSY)."""
        if not self.pages:
            return 0                                    # mapping_empty()
        kept = 0
        for index in self._cached(first, last):
            if index in self.dirty:
                kept += 1
            elif index not in keep:
                self._forget(index)
        return kept

    def truncate(self, lstart: int, lend: int, block: int) -> None:
        """mm/truncate.c truncate_inode_pages_range() [6.1] over bytes lstart..lend
        (inclusive): the pages wholly inside are dropped, dirty ones with their data; a page
        the range covers in part stays cached with the covered bytes zeroed
        (truncate_inode_partial_folio(): folio_zero_range(), the page keeps PG_uptodate and
        PG_readahead; block_invalidate_folio() discards the buffers wholly inside: no longer
        dirty, nor up to date in a page that was not), even when the device operation that
        follows fails."""
        if not self.pages:
            return                                      # mapping_empty()
        first, last = (lstart + PAGE_SIZE - 1) // PAGE_SIZE, (lend + 1) // PAGE_SIZE - 1
        for index in self._cached(first, last):
            self._forget(index)
        first = lstart // PAGE_SIZE
        same_page = first == lend // PAGE_SIZE
        if first in self.pages:
            same_page = lend < (first + 1) * PAGE_SIZE
            self._truncate_partial(first, lstart, lend, block)
        if not same_page and lend // PAGE_SIZE in self.pages:
            self._truncate_partial(lend // PAGE_SIZE, lstart, lend, block)

    def _truncate_partial(self, index: int, start: int, end: int, block: int) -> None:
        """truncate_inode_partial_folio() for an order-0 folio."""
        pos = index * PAGE_SIZE
        offset = start - pos if pos < start else 0
        if pos + PAGE_SIZE <= end:
            length = PAGE_SIZE - offset
        else:
            length = end + 1 - pos - offset
        if length == PAGE_SIZE:                         # truncate_inode_folio()
            self._forget(index)
        elif length > 0:                                # folio_zero_range()
            page = self.pages[index]
            self.pages[index] = page[:offset] + bytes(length) + page[offset + length:]
            inside = 0                                  # block_invalidate_folio()
            for b in range(-(-offset // block), (offset + length) // block):
                inside |= 1 << b
            if index in self.partial:
                self.partial[index] &= ~inside
            if index in self.dirty:
                self.dirty[index] &= ~inside
                if not self.dirty[index]:
                    del self.dirty[index], self.dirtied_at[index]

    def write(self, dev: BlockDevice, pos: int, data: bytes, block: int, now: float) -> None:
        """generic_perform_write() into this cache, page by page [6.1]: block_write_begin()
        reads each block the write covers in part that is not up to date (one read of that
        block), the bytes are copied in, and block_write_end() marks the covered blocks up to
        date and dirty (the page up to date once all its blocks are). Nothing reaches the
        device here."""
        self.block = block
        per_page = PAGE_SIZE // block
        whole = (1 << per_page) - 1
        end = pos + len(data)
        for index in range(pos // PAGE_SIZE, -(-end // PAGE_SIZE)):
            base = index * PAGE_SIZE
            lo, hi = max(pos, base), min(end, base + PAGE_SIZE)
            page = self.pages.get(index)
            uptodate = 0 if page is None else self.partial.get(index, whole)
            buf = bytearray(PAGE_SIZE) if page is None else bytearray(page)
            covered = 0
            for b in range((lo - base) // block, -(-(hi - base) // block)):
                start = base + b * block
                if not uptodate >> b & 1 and (start < lo or start + block > hi):
                    buf[b * block:(b + 1) * block] = self._read_block(dev, start, block)
                covered |= 1 << b
            buf[lo - base:hi - base] = data[lo - pos:hi - pos]
            self.pages[index] = bytes(buf)
            self.pages.move_to_end(index)
            uptodate |= covered
            if uptodate == whole:
                self.partial.pop(index, None)
            else:
                self.partial[index] = uptodate
            if index not in self.dirty:
                self.dirtied_at[index] = now
            self.dirty[index] = self.dirty.get(index, 0) | covered
        self.evict()

    @staticmethod
    def _read_block(dev: BlockDevice, start: int, block: int) -> bytes:
        """One buffer head's read (its own request); the part past the device's end is
        zeros (submit_bh() -> guard_bio_eod())."""
        if start >= dev.size:
            return bytes(block)
        data = dev.read(start, min(block, dev.size - start))
        return data + bytes(block - len(data))

    def take_dirty(self, first: int, last: int) -> list[tuple[int, bytes]]:
        """The dirty blocks of pages first..last in index order, as (device offset, bytes),
        now clean: __block_write_full_page() clears each buffer's dirty bit as it submits it
        (a write that then fails leaves the page clean and cached, its data only there)."""
        indices = sorted(i for i in self.dirty if first <= i <= last)
        block = self.block
        blocks = []
        for index in indices:
            mask = self.dirty.pop(index)
            del self.dirtied_at[index]
            page = self.pages[index]
            for b in range(PAGE_SIZE // block):
                if mask >> b & 1:
                    blocks.append((index * PAGE_SIZE + b * block, page[b * block:(b + 1) * block]))
        return blocks

    def expired(self, before: float) -> bool:
        """Some page has been dirty since before `before` (the oldest comes first)."""
        return bool(self.dirtied_at) and next(iter(self.dirtied_at.values())) < before

    def read(self, dev: BlockDevice, ra: Readahead, pos: int, length: int,
             request_end: int) -> bytes:
        """mm/filemap.c filemap_read() [6.1]: `length` bytes at `pos` (already cut at the
        device's end), through batches of cached pages, readahead filling the misses and
        sizing its windows on the whole read, which ends at `request_end`. A page that cannot
        be read ends the read short, or fails it (UbdError) when nothing was read yet."""
        end = pos + length
        last_index = -(-request_end // PAGE_SIZE)
        out = []
        while pos < end:
            try:
                batch = self._get_pages(dev, ra, pos // PAGE_SIZE, last_index, pos, request_end)
            except UbdError:
                if out:
                    break                   # filemap_read(): what was copied, else the error
                raise
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
        batch: list[tuple[int, bytes]] = []
        pages, partial, marked = self.pages, self.partial, self.marked
        stop = min(last_index, index + PAGEVEC_SIZE)
        while index < stop:
            page = pages.get(index)
            if page is None:
                break
            batch.append((index, page))
            pages.move_to_end(index)
            if index in partial or index in marked:
                break
            index += 1
        return batch

    def _get_pages(self, dev: BlockDevice, ra: Readahead, index: int, last_index: int,
                   pos: int, request_end: int) -> list[tuple[int, bytes]]:
        """filemap_get_pages() [6.1]: `pos` is where the read stands (iocb->ki_pos) and
        `request_end` where it ends, for a batch ending at a page not up to date."""
        batch = self._batch(index, last_index)
        if not batch:
            self._sync_ra(dev, ra, index, last_index - index)
            batch = self._batch(index, last_index)
        if not batch:               # filemap_create_folio(), then filemap_read_folio()
            self.pages[index] = bytes(PAGE_SIZE)
            self.partial[index] = 0
            self._update_page(dev, index, pos, request_end)
            self.evict()
            return [(index, self.pages[index])]
        tail = batch[-1][0]
        if tail in self.marked and ra.ra_pages:         # filemap_readahead()
            self.marked.discard(tail)
            self._ondemand(dev, ra, tail, last_index - tail, marked=True)
        if tail in self.partial:                        # filemap_update_page()
            try:
                self._update_page(dev, tail, pos, request_end)
            except UbdError:
                if len(batch) == 1:
                    raise
                return batch[:-1]       # the pages before it; the next call tries it again
            batch[-1] = (tail, self.pages[tail])
        return batch

    def _update_page(self, dev: BlockDevice, index: int, pos: int, request_end: int) -> None:
        """filemap_range_uptodate() -> block_is_partially_uptodate(), else
        filemap_read_folio() -> block_read_full_folio() [6.1]: the blocks not up to date
        read in merged requests (_missing_runs()), the page up to date after. A request that
        fails prints the block layer's line and one line per buffer, and fails the read."""
        mask = self.partial[index]
        base = index * PAGE_SIZE
        block = self.block
        start = max(pos - base, 0)
        stop = min(PAGE_SIZE, request_end - base)
        if not (start < block and stop > PAGE_SIZE - block):
            needed = range(start // block, -(-stop // block))
            if all(mask >> b & 1 for b in needed):
                return
        buf = bytearray(self.pages[index])
        failure = None
        for first, count in self._missing_runs(mask, block):
            at = base + first * block
            try:
                data = self._read_block(dev, at, count * block)
            except UbdError as err:         # end_buffer_async_read(): each buffer of it
                if self.errors is not None:
                    self.errors.request(err.errno, at, 0, READ_FOLIO_FLAGS, count)
                    for b in range(first, first + count):
                        self.errors.buffer(base + b * block, block, ", async page read")
                failure = failure or err
                continue
            buf[first * block:(first + count) * block] = data
            mask |= ((1 << count) - 1) << first
        self.pages[index] = bytes(buf)
        if failure is not None:
            self.partial[index] = mask
            raise failure
        del self.partial[index]

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
        """read_pages() -> mpage_readahead() [6.1]: the run's pages as bios of up to 256
        pages, each split into requests at the unit's max_sectors (`request_sectors`: the
        COW unit's own 64-sector cut is the same). A request that fails prints
        blk_print_req_error()'s line (REQ_RAHEAD | REQ_FAILFAST_*, 0x80700, REQ_NOMERGE
        where split off: measured with linux.uml) and its bio's pages stay in the cache not
        up to date (mpage_end_io()), for the reader to read again block by block."""
        pos = index * PAGE_SIZE
        end = min((index + count) * PAGE_SIZE, dev.size)
        uncut = None if EXACT_IO else getattr(dev, "read_uncut", None)   # same bytes, one read
        pages = self.pages
        for bio in range(pos, end, BIO_MAX_BYTES):
            bio_end = min(bio + BIO_MAX_BYTES, end)
            data = None if uncut is None else uncut(bio, bio_end - bio)
            failed = False
            if data is not None:
                self.uncut += 1
            else:
                parts = []
                for at, n, flags, touched in bio_requests(bio, bio_end - bio,
                                                          self.request_sectors):
                    try:
                        parts.append(dev.read(at, n))
                    except UbdError as err:
                        failed = True
                        if self.errors is not None:
                            self.errors.request(err.errno, at, 0, READAHEAD_FLAGS | flags,
                                                touched)
                data = b"".join(parts)
            first = bio // PAGE_SIZE
            if failed:
                for page_index in range(first, -(-bio_end // PAGE_SIZE)):
                    pages[page_index] = bytes(PAGE_SIZE)
                    self.partial[page_index] = 0
            else:
                for i, off in enumerate(range(0, bio_end - bio, PAGE_SIZE), first):
                    pages[i] = data[off:off + PAGE_SIZE]
        self.evict()

    def _missing_runs(self, mask: int, block: int) -> list[tuple[int, int]]:
        """The page's blocks not up to date as requests: block_read_full_folio() submits one
        bio per buffer and the block layer merges the contiguous ones (measured with
        linux.uml: a page of 512-byte blocks read back as one 8-sector request, phys_seg 8),
        up to max_sectors. (first block, count) each."""
        runs: list[tuple[int, int]] = []
        limit = max(self.request_sectors * SECTOR_SIZE // block, 1)
        for b in range(PAGE_SIZE // block):
            if mask >> b & 1:
                continue
            if runs and runs[-1][0] + runs[-1][1] == b and runs[-1][1] < limit:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((b, 1))
        return runs

    def evict(self) -> None:
        """Drop the least recently used clean pages beyond the limit (reclaim writes dirty
        pages back first; ubdsim's write-back threshold keeps them well below the limit)."""
        excess = len(self.pages) - self.limit
        if excess <= 0:
            return
        if not self.dirty and not self.partial:     # the least recently used go, in order
            pages, marked = self.pages, self.marked
            for _ in range(excess):
                marked.discard(pages.popitem(last=False)[0])
            return
        victims = []
        for index in self.pages:
            if index not in self.dirty:
                victims.append(index)
                if len(victims) == excess:
                    break
        for index in victims:
            self._forget(index)

