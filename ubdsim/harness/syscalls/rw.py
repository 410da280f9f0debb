"""read/write and their positioned and vectored forms on a ubd descriptor.

From: block/fops.c blkdev_read_iter()/blkdev_write_iter() [6.1], fs/read_write.c:
- EBADF when the descriptor was not opened for that direction (vfs_read/vfs_write);
- reads at or past the end return 0, and are shortened to the end;
- a read-only disk (flag r or BLKROSET) gives EPERM, even for 0 bytes; other writes of 0
  bytes return 0, writes at or past the end fail with ENOSPC, others are shortened to the
  end;
- O_DIRECT: offset, buffer addresses and lengths must be 512-aligned, else EINVAL;
- buffered reads go through the unit's page cache and the open file's readahead state
  (pagecache.PageCache), buffered writes leave dirty pages there (written back later,
  writeback.py); O_DIRECT ones read or write exactly the sectors asked, after
  filemap_write_and_wait_range() wrote back the dirty pages of their range (its error,
  AS_EIO from any earlier failed write-back, fails them: blkdev_read_iter(),
  kiocb_invalidate_pages());
- an O_DIRECT write invalidates the cached pages it touches before anything else, so even
  one refused for its alignment drops them (blkdev_direct_write() kiocb_invalidate_pages(),
  then blkdev_direct_IO(); measured with linux.uml 6.1);
- an O_SYNC/O_DSYNC write writes back its range and fails with the error a failed
  write-back left (generic_write_sync() -> blkdev_fsync());
- read/write/readv/writev move the shared file position; p* forms do not (pread/pwrite with
  a negative offset: EINVAL; preadv2/pwritev2 with offset -1 use and move the position).
"""
from __future__ import annotations

import errno
import struct
import time

from ...errors import UbdError
from .. import pagecache, writeback
from ..fdstate import OpenFile
from .files import _int32, _signed
from .result import PASS, Emulated, Fail, Result

IOV_MAX = 1024
Segments = list[tuple[int, int]]


def _iovecs(h, tid: int, addr: int, count: int) -> Segments | None:
    if count < 0 or count > IOV_MAX:
        return None
    raw = h.mem.read(tid, addr, 16 * count) if count else b""
    return [struct.unpack_from("<QQ", raw, 16 * i) for i in range(count)]


def _truncate(segments: Segments, limit: int) -> Segments:
    out = []
    for addr, length in segments:
        if limit <= 0:
            break
        take = min(length, limit)
        out.append((addr, take))
        limit -= take
    return out


def file_ra(of: OpenFile) -> pagecache.Readahead:
    """The open file's f_ra; files.py sets it up at open (file_ra_state_init())."""
    if of.readahead is None:
        of.readahead = pagecache.file_ra_state_init(of.unit)
    return of.readahead


def do_read(h, tid: int, of: OpenFile, pos: int, segments: Segments) -> Result:
    if not of.readable:
        return Fail(errno.EBADF)
    size = of.unit.size
    total = sum(length for _, length in segments)
    if pos >= size or total == 0:
        return Emulated(0)
    n = min(total, size - pos)
    segments = _truncate(segments, n)
    if of.direct:
        err = h.write_and_wait(of.unit, pos // pagecache.PAGE_SIZE,
                               (pos + n - 1) // pagecache.PAGE_SIZE)
        if err:
            return Fail(err)
        if pagecache.direct_misaligned(pos, segments):
            return Fail(errno.EINVAL)
    cache = None if of.direct else h.page_cache(of.unit)
    if cache is not None:
        file_ra(of)
    done = 0
    # The whole request is read in CHUNK steps (one filemap_read() sees the whole iov_iter,
    # so readahead sizes its windows on the total), then scattered into the segments.
    segments = list(segments)
    while done < n:
        step = min(n - done, pagecache.CHUNK)
        if cache is None:
            data = direct_read(h, of.unit, pos + done, step)
        else:
            data = cache.read(of.unit.device, of.readahead, pos + done, step, pos + n)
        view, at = memoryview(data), 0
        while at < step:
            addr, length = segments[0]
            take = min(length, step - at)
            try:
                h.mem.write(tid, addr, view[at:at + take])
            except OSError:
                return Emulated(done) if done else Fail(errno.EFAULT)
            segments[0] = (addr + take, length - take)
            if take == length:
                segments.pop(0)
            at += take
            done += take
    return Emulated(done)


def do_write(h, tid: int, of: OpenFile, pos: int, segments: Segments) -> Result:
    if not of.writable:
        return Fail(errno.EBADF)
    unit = of.unit
    total = sum(length for _, length in segments)
    # blkdev_write_iter() [6.1]: a read-only disk refuses even an empty write (measured)
    if unit.read_only:
        return Fail(errno.EPERM)
    if total == 0:
        return Emulated(0)
    if pos >= unit.size:
        return Fail(errno.ENOSPC)
    count = min(total, unit.size - pos)
    segments = _truncate(segments, count)
    cache = h.page_cache(unit)
    first, last = pos // pagecache.PAGE_SIZE, (pos + count - 1) // pagecache.PAGE_SIZE
    if of.direct:
        # block/fops.c blkdev_direct_write() [6.1]: kiocb_invalidate_pages() writes back and
        # drops every cached page the write touches, then blkdev_direct_IO() checks the
        # alignment.
        err = h.write_and_wait(unit, first, last)
        if err:
            return Fail(err)
        cache.invalidate(pos, count)
        if pagecache.direct_misaligned(pos, segments):
            return Fail(errno.EINVAL)

    def put(at: int, data: bytes) -> None:
        if of.direct:
            direct_write(h, unit, at, data)
        else:
            cache.write(unit.device, at, data, unit.block_size, time.monotonic())
    done = 0
    # Gather guest memory in chunks no larger than CHUNK (a multiple of every block size),
    # so a huge write never needs more than a few MiB of ubdsim memory.
    pending: list[bytes] = []
    pending_len = 0
    try:
        for addr, length in segments:
            while length:
                step = min(length, pagecache.CHUNK - pending_len)
                pending.append(h.mem.read(tid, addr, step))
                pending_len += step
                addr += step
                length -= step
                if pending_len == pagecache.CHUNK:
                    put(pos + done, b"".join(pending))
                    done += pending_len
                    pending, pending_len = [], 0
    except OSError:
        pass                                   # EFAULT: write what was gathered so far
    if pending_len:
        put(pos + done, b"".join(pending))
        done += pending_len
    if of.direct and done:
        cache.invalidate(pos, count)           # kiocb_invalidate_post_direct_write()
    if done == 0:
        return Fail(errno.EFAULT)
    if not of.direct and len(cache.dirty) > writeback.DIRTY_BACKGROUND_PAGES:
        h.write_back(unit, writeback.REQ_FLUSHER)      # the flusher's background run
    if of.sync:
        # generic_write_sync() -> vfs_fsync_range() -> blkdev_fsync() over what was written
        err = fsync_range(h, of, first, (pos + done - 1) // pagecache.PAGE_SIZE)
        if err:
            return Fail(err)
    return Emulated(done)


def direct_read(h, unit, pos: int, length: int) -> bytes:
    """blkdev_direct_IO() for a read [6.1]: the bio split at the unit's max_sectors; each
    failed request prints blk_print_req_error()'s line (op READ, REQ_SYNC: measured with
    linux.uml and a failing host pread), and the read fails with the first errno."""
    step = unit.max_sectors * pagecache.SECTOR_SIZE
    parts, failure = [], None
    for at in range(0, length, step):
        n = min(step, length - at)
        try:
            parts.append(pagecache.read(unit.device, pos + at, n))
        except UbdError as err:
            h.block_log.request_error(unit, err.errno or errno.EIO,
                                      (pos + at) // pagecache.SECTOR_SIZE, 0,
                                      writeback.REQ_SYNC, -(-n // pagecache.PAGE_SIZE))
            failure = failure or err
    if failure is not None:
        raise failure
    return b"".join(parts)


def direct_write(h, unit, pos: int, data: bytes) -> None:
    """blkdev_direct_IO() [6.1]: the bio split at the unit's max_sectors, every request
    submitted; each failed one prints blk_print_req_error()'s line, and the write fails with
    the first failure's errno (UbdError), as the dio does (measured with linux.uml: a 1 MiB
    write of which only the last 32 KiB did not fit got ENOSPC and wrote "0 bytes")."""
    step = unit.max_sectors * pagecache.SECTOR_SIZE
    failure = None
    view = memoryview(data)
    for at in range(0, len(data), step):
        piece = view[at:at + step]
        try:
            unit.device.write(pos + at, piece)
        except UbdError as err:
            h.block_log.request_error(unit, err.errno or errno.EIO,
                                      (pos + at) // pagecache.SECTOR_SIZE, 1,
                                      writeback.REQ_DIRECT, -(-len(piece) // pagecache.PAGE_SIZE))
            failure = failure or err
    if failure is not None:
        raise failure


def fsync_range(h, of: OpenFile, first: int, last: int) -> int:
    """blkdev_fsync() [6.1]: file_write_and_wait_range() (write back pages first..last,
    then file_check_and_advance_wb_err(): the error this open has not seen yet), then
    blkdev_issue_flush() (the profile's flush). A positive errno or 0."""
    h.write_back(of.unit, writeback.REQ_SYNC, first, last)
    err, of.wb_err = of.unit.wb_errors.check_and_advance(of.wb_err)
    if err:
        return err
    of.unit.device.flush()
    return 0


def _positioned(h, tid, fd: int, offset: int | None, segments_of, writing: bool) -> Result:
    of = h.fd(tid, fd)
    if of is None:
        return PASS
    try:
        segments = segments_of()
    except OSError:
        return Fail(errno.EFAULT)
    if segments is None:
        return Fail(errno.EINVAL)
    if offset is not None and offset < 0:
        return Fail(errno.EINVAL)
    pos = of.offset if offset is None else offset
    try:
        result = (do_write if writing else do_read)(h, tid, of, pos, segments)
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    if offset is None and isinstance(result, Emulated):
        of.offset = pos + result.value
    return result


def sys_read(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None, lambda: [(regs.rsi, regs.rdx)], False)


def sys_write(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None, lambda: [(regs.rsi, regs.rdx)], True)


def sys_pread64(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: [(regs.rsi, regs.rdx)], False)


def sys_pwrite64(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: [(regs.rsi, regs.rdx)], True)


def sys_readv(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None,
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False)


def sys_writev(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None,
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True)


def sys_preadv(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False)


def sys_pwritev(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True)


def _v2_offset(regs) -> int | None:
    """preadv2/pwritev2: offset -1 means "the file position" (fs/read_write.c)."""
    offset = _signed(regs.r10)
    return None if offset == -1 else offset


def sys_preadv2(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _v2_offset(regs),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False)


def sys_pwritev2(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _v2_offset(regs),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True)
