"""When the guest's dirty pages reach the device, and what a failed write-back leaves.

The page cache (pagecache.py) holds buffered writes as dirty blocks; this module writes them
back the way the 6.1 kernel does, and only at the points where it does:
- fsync/fdatasync (blkdev_fsync() -> file_write_and_wait_range(): the whole device),
  sync_file_range() with SYNC_FILE_RANGE_WRITE (its range), an O_SYNC/O_DSYNC write
  (generic_write_sync(): the range written), sync(2) (iterate_bdevs(): every unit);
- before O_DIRECT I/O over dirty pages (filemap_write_and_wait_range() of its range),
  POSIX_FADV_DONTNEED (__filemap_fdatawrite_range() of its range), BLKFLSBUF and a new
  BLKBSZSET (sync_blockdev()), and the last close of the disk (blkdev_put() ->
  blkdev_flush_mapping()), which ubdsim notices at the disk's next open or at the end of
  the run;
- the flusher, made deterministic: a unit whose dirty pages pass DIRTY_BACKGROUND_PAGES
  (4 MiB, about where a mem=64M linux.uml starts background write-back) is written back
  whole at once, and pages dirty for DIRTY_EXPIRE seconds (dirty_expire_centisecs, 30 s) are
  written back at the guest's next call on any unit (there is no background thread: a guest
  that makes no device call keeps them dirty until it closes the disk or exits).
syncfs() on a device descriptor writes nothing back (it syncs devtmpfs, whose superblock
has no block device). If ubdsim itself is killed, dirty pages are lost, as a killed UML's
memory is.

Write-back goes out in requests as the block layer merges the per-buffer bios under its
plug: contiguous dirty blocks, up to the unit's max_sectors (64 for a COW unit, 255 raw).
A request that fails (the host's ENOSPC or EIO) prints blk_print_req_error()'s line and one
`Buffer I/O error ... lost async page write` per buffer (end_buffer_async_write()), both
rate limited like printk_ratelimited() (10 lines per 5 s each), and records -EIO on the
mapping (mark_buffer_write_io_error() -> mapping_set_error()): the errseq_t that each open
file description reports once at its next fsync (file_check_and_advance_wb_err()), and the
AS_EIO flag that the next filemap_write_and_wait_range() caller (O_DIRECT I/O, close)
reports and clears. The pages stay cached and clean: reads see the lost data until the
cache drops them. All measured with linux.uml 6.1 with the COW file on a full tmpfs
(tests/harness/test_writeback.py).
"""
from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..device.api import SECTOR_SIZE
from ..errors import UbdError
from ..messages import render

if TYPE_CHECKING:
    from .device_unit import Unit

PAGE_SIZE = 4096

DIRTY_BACKGROUND_PAGES = 1024
DIRTY_EXPIRE = 30.0
ALL_PAGES = (1 << 64) - 1
# The cmd_flags blk_print_req_error() shows, by who wrote back (measured with linux.uml:
# 0x800 at fsync and close, 0x104000 from the flusher; REQ_SYNC | REQ_IDLE for O_DIRECT).
REQ_SYNC = 0x800
REQ_FLUSHER = 0x104000          # REQ_BACKGROUND | REQ_NOMERGE
REQ_NONE = 0x4000               # WB_SYNC_NONE without the flusher (DONTNEED): inferred
REQ_DIRECT = 0x8800             # REQ_SYNC | REQ_IDLE
PRIO_CLASS_BE = 2

# include/linux/errseq.h, lib/errseq.c
_MAX_ERRNO = 4095
_ERRSEQ_SEEN = 1 << 12
_ERRSEQ_CTR_INC = 1 << 13


@dataclass
class MappingErrors:
    """The bdev inode's i_mapping error state: wb_err (errseq_t) and AS_EIO/AS_ENOSPC."""

    wb_err: int = 0
    as_eio: bool = False
    as_enospc: bool = False

    def set(self, err: int) -> None:
        """mapping_set_error(mapping, -err)."""
        old = self.wb_err
        new = (old & ~(_MAX_ERRNO | _ERRSEQ_SEEN)) | err
        if old & _ERRSEQ_SEEN:
            new += _ERRSEQ_CTR_INC
        self.wb_err = new & 0xFFFFFFFF
        if err == errno.ENOSPC:
            self.as_enospc = True
        else:
            self.as_eio = True

    def sample(self) -> int:
        """errseq_sample(): what an open records (0 while nobody saw the error: it will)."""
        return self.wb_err if self.wb_err & _ERRSEQ_SEEN else 0

    def check_and_advance(self, since: int) -> tuple[int, int]:
        """errseq_check_and_advance(): (positive errno or 0, the file's new sample)."""
        if self.wb_err == since:
            return 0, since
        self.wb_err |= _ERRSEQ_SEEN
        return self.wb_err & _MAX_ERRNO, self.wb_err

    def check_errors(self) -> int:
        """filemap_check_errors(): the AS_* flags, cleared (EIO wins over ENOSPC)."""
        err = errno.EIO if self.as_eio else errno.ENOSPC if self.as_enospc else 0
        self.as_eio = self.as_enospc = False
        return err


@dataclass
class Ratelimit:
    """lib/ratelimit.c ___ratelimit() with DEFAULT_RATELIMIT_INTERVAL/BURST (5 s, 10)."""

    name: str
    interval: float = 5.0
    burst: int = 10
    begin: float | None = None
    printed: int = 0
    missed: int = 0

    def allow(self, now: float) -> tuple[bool, int]:
        """(print this one?, callbacks suppressed to report first)."""
        report = 0
        if self.begin is None:
            self.begin = now
        if now - self.begin > self.interval:
            report, self.missed = self.missed, 0
            self.begin, self.printed = now, 0
        if self.printed < self.burst:
            self.printed += 1
            return True, report
        self.missed += 1
        return False, report


@dataclass
class BlockLog:
    """The block layer's printk_ratelimited() call sites, shared by every unit of a run."""

    requests: Ratelimit = field(default_factory=lambda: Ratelimit("blk_print_req_error"))
    buffers: Ratelimit = field(default_factory=lambda: Ratelimit("buffer_io_error"))

    def print(self, unit: Unit, limit: Ratelimit, msg_id: str, *args: object) -> None:
        family = unit.disk.profile.kernel_family
        if family != "6.1":
            return                      # the 2.4 texts are not known (messages/block.py)
        allowed, suppressed = limit.allow(time.monotonic())
        if suppressed:
            _emit(unit, "block.suppressed", render("block.suppressed", family, limit.name,
                                                   suppressed))
        if allowed:
            _emit(unit, msg_id, render(msg_id, family, *args))

    def request_error(self, unit: Unit, err: int, sector: int, op: int, flags: int,
                      segments: int) -> None:
        status = ("critical space allocation" if err == errno.ENOSPC else
                  "operation not supported" if err in (errno.EOPNOTSUPP, errno.ENOSYS) else "I/O")
        self.print(unit, self.requests, "block.req_error", status, disk_name(unit), sector, op,
                   "WRITE" if op == 1 else "READ", flags, segments, PRIO_CLASS_BE)


@dataclass(frozen=True)
class UnitErrors:
    """The block layer's error lines for one unit's page cache (pagecache.PageCache.errors)."""

    log: BlockLog
    unit: Unit

    def request(self, err: int | None, offset: int, op: int, flags: int, segments: int) -> None:
        self.log.request_error(self.unit, err or errno.EIO, offset // SECTOR_SIZE, op, flags,
                               segments)

    def buffer(self, offset: int, block: int, what: str) -> None:
        self.log.print(self.unit, self.log.buffers, "block.buffer_io_error", disk_name(self.unit),
                       offset // block, what)


def disk_name(unit: Unit) -> str:
    return unit.disk.profile.device.disk_name(unit.number)


def _emit(unit: Unit, msg_id: str, text: str) -> None:
    events = unit.disk.events
    if events.active:
        events.emit("message", unit.number, msg_id=msg_id, text=text)


@dataclass(frozen=True)
class Request:
    """One write request as the plug merged it: contiguous blocks."""

    offset: int
    data: bytes
    blocks: tuple[int, ...]         # the device offsets of its buffers
    segments: int                   # nr_phys_segments: the pages it touches


def plan(blocks: list[tuple[int, bytes]], max_sectors: int, size: int) -> list[Request]:
    """Merge per-buffer bios (offset order) into requests: back merges of contiguous bios
    while the request stays within max_sectors (blk-merge.c ll_back_merge_fn()). A buffer
    running past the device's end `size` is cut there (submit_bh() -> guard_bio_eod());
    one wholly past it is not written (__block_write_full_page() skips it)."""
    out: list[Request] = []
    run: list[tuple[int, bytes]] = []
    length = 0

    def close() -> None:
        if run:
            pages = {offset // PAGE_SIZE for offset, _ in run}
            out.append(Request(run[0][0], b"".join(d for _, d in run),
                               tuple(o for o, _ in run), len(pages)))
            run.clear()

    limit = max_sectors * SECTOR_SIZE
    for offset, data in blocks:
        if offset >= size:
            continue
        data = data[:size - offset]
        if run and (run[-1][0] + len(run[-1][1]) != offset or length + len(data) > limit):
            close()
            length = 0
        run.append((offset, data))
        length += len(data)
    close()
    return out


def write_back(log: BlockLog, unit: Unit, cache, flags: int = REQ_SYNC, first: int = 0,
               last: int = ALL_PAGES) -> None:
    """Write the dirty blocks of pages first..last of `unit` back to its device."""
    blocks = cache.take_dirty(first, last)
    if not blocks or unit.device is None:
        return
    block = cache.block
    for request in plan(blocks, unit.max_sectors, unit.size):
        try:
            unit.device.write(request.offset, request.data)
        except UbdError as err:
            code = err.errno or errno.EIO
            log.request_error(unit, code, request.offset // SECTOR_SIZE, 1, flags,
                              request.segments)
            for offset in request.blocks:
                UnitErrors(log, unit).buffer(offset, block, ", lost async page write")
            unit.wb_errors.set(errno.EIO)       # mark_buffer_write_io_error()


def write_and_wait(log: BlockLog, unit: Unit, cache, first: int = 0,
                   last: int = ALL_PAGES) -> int:
    """filemap_write_and_wait_range(): write back, then report and clear AS_EIO/AS_ENOSPC
    (positive errno or 0)."""
    write_back(log, unit, cache, REQ_SYNC, first, last)
    return unit.wb_errors.check_errors()
