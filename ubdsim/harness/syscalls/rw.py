"""read/write and their positioned and vectored forms on a ubd descriptor.

From: block/fops.c blkdev_read_iter()/blkdev_write_iter() [6.1], fs/read_write.c:
- EBADF when the descriptor was not opened for that direction (vfs_read/vfs_write);
- reads at or past the end return 0, and are shortened to the end;
- a read-only disk (flag r or BLKROSET) gives EPERM, even for 0 bytes; other writes of 0
  bytes return 0, writes at or past the end fail with ENOSPC, others are shortened to the
  end;
- O_DIRECT: offset, buffer addresses and lengths must be 512-aligned, else EINVAL;
- buffered reads go through the unit's page cache and the open file's readahead state
  (pagecache.PageCache), O_DIRECT ones read exactly the sectors asked and leave the cache
  alone (blkdev_read_iter() only writes dirty pages back first: ubdsim has none);
- an O_DIRECT write invalidates the cached pages it touches before anything else, so even
  one refused for its alignment drops them (blkdev_direct_write() kiocb_invalidate_pages(),
  then blkdev_direct_IO(); measured with linux.uml 6.1);
- read/write/readv/writev move the shared file position; p* forms do not (pread/pwrite with
  a negative offset: EINVAL; preadv2/pwritev2 with offset -1 use and move the position).
"""
from __future__ import annotations

import errno
import struct

from ...errors import UbdError
from .. import pagecache
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
    if of.direct and pagecache.direct_misaligned(pos, segments):
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
            data = pagecache.read(of.unit.device, pos + done, step)
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
    if of.direct:
        # block/fops.c blkdev_direct_write() [6.1]: kiocb_invalidate_pages() drops every
        # cached page the write touches, then blkdev_direct_IO() checks the alignment.
        cache.invalidate(pos, count)
        if pagecache.direct_misaligned(pos, segments):
            return Fail(errno.EINVAL)
    block = pagecache.SECTOR_SIZE if of.direct else unit.block_size
    # O_DIRECT writes leave the cache as invalidated above; buffered ones update it.
    through = None if of.direct else cache
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
                    pagecache.write(unit.device, pos + done, b"".join(pending), block, through)
                    done += pending_len
                    pending, pending_len = [], 0
    except OSError:
        pass                                   # EFAULT: write what was gathered so far
    if pending_len:
        pagecache.write(unit.device, pos + done, b"".join(pending), block, through)
        done += pending_len
    if of.direct and done:
        cache.invalidate(pos, count)           # kiocb_invalidate_post_direct_write()
    if done == 0:
        return Fail(errno.EFAULT)
    if of.sync:
        unit.device.flush()                    # generic_write_sync() -> blkdev_fsync()
    return Emulated(done)


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
