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
import fcntl
import os
import struct
import time

from ...device.unit import Unit as DeviceUnit
from ...errors import UbdError
from .. import pagecache, writeback
from ..fdstate import OpenFile
from ..transport import native_wait
from ..transport.bpf import NR_PLANT, PLANT_MAGIC
from .files import _int32, _signed
from .numbers import number
from .result import PASS, Emulated, Fail, NeedsExit, Result

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
        try:
            if cache is None:
                data = direct_read(h, of.unit, pos + done, step)
            else:
                # a page that cannot be read makes this short (filemap_read())
                data = cache.read(of.unit.device, of.readahead, pos + done, step, pos + n)
        except UbdError:
            if done:
                return Emulated(done)
            raise
        view, at, got = memoryview(data), 0, len(data)
        while at < got:
            addr, length = segments[0]
            take = min(length, got - at)
            try:
                h.mem.write(tid, addr, view[at:at + take])
            except OSError:
                return Emulated(done) if done else Fail(errno.EFAULT)
            segments[0] = (addr + take, length - take)
            if take == length:
                segments.pop(0)
            at += take
            done += take
        if got < step:
            break
    return Emulated(done)


def do_write(h, tid: int, of: OpenFile, pos: int, segments: Segments,
             vectored: bool = False) -> Result:
    if not of.writable:
        return Fail(errno.EBADF)
    unit = of.unit
    total = sum(length for _, length in segments)
    # fs/read_write.c do_iter_write() [6.1]: writev and friends of 0 bytes return 0 before
    # the file sees them (found by kernel_ref fuzz, long-wb:47: writev of one empty iovec on
    # a flag-r unit is 0 on linux.uml)
    if vectored and total == 0:
        return Emulated(0)
    # blkdev_write_iter() [6.1]: a read-only disk refuses even an empty write(2) (measured)
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
    """blkdev_direct_IO() for a read [6.1]: bios of up to 256 pages split at the unit's
    max_sectors (pagecache.bio_requests()); each failed request prints
    blk_print_req_error()'s line (op READ, REQ_SYNC: measured with linux.uml and a failing
    host pread), and the read fails with the first errno."""
    parts, failure = [], None
    for at, n, flags, pages in pagecache.bio_requests(pos, length, unit.max_sectors):
        try:
            parts.append(pagecache.read(unit.device, at, n))
        except UbdError as err:
            h.block_log.request_error(unit, err.errno or errno.EIO, at // pagecache.SECTOR_SIZE,
                                      0, writeback.REQ_SYNC | flags, pages)
            failure = failure or err
    if failure is not None:
        raise failure
    return b"".join(parts)


def direct_write(h, unit, pos: int, data: bytes) -> None:
    """blkdev_direct_IO() [6.1]: bios of up to 256 pages split at the unit's max_sectors,
    every request submitted; each failed one prints blk_print_req_error()'s line, and the
    write fails with the first failure's errno (UbdError), as the dio does (measured with
    linux.uml: a 1 MiB write of which only the last 32 KiB did not fit got ENOSPC and wrote
    "0 bytes")."""
    failure = None
    view = memoryview(data)
    for at, n, flags, pages in pagecache.bio_requests(pos, len(data), unit.max_sectors):
        try:
            unit.device.write(at, view[at - pos:at - pos + n])
        except UbdError as err:
            h.block_log.request_error(unit, err.errno or errno.EIO, at // pagecache.SECTOR_SIZE,
                                      1, writeback.REQ_DIRECT | flags, pages)
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


# --- the fast path ------------------------------------------------------------------------
#
# An O_DIRECT read or write of one buffer that lies wholly in ONE host file range is
# rewritten into pread64/pwrite64 on a descriptor of that host file planted in the guest
# process (transport/notify.py), at the translated offset: the host kernel moves the bytes
# between the file and guest memory, with no copy through ubdsim. The ranges:
# - a raw unit: the file at the same offset;
# - a COW unit, every sector of the range set in the bitmap: the COW file at
#   data_offset + offset (a write changes no bit, so the kernel writes no bitmap word);
# - a COW unit, a write with some bits clear: the data to the COW file the same way, then,
#   at the syscall exit, the bitmap exactly as Unit.write() updates it (cowify per request
#   of max_sectors, as direct_write() cuts them; data before bits);
# - a COW unit, a read with every bit clear and no --chain lower layer: the backing file at
#   offset.
# It is never taken where it could change what anyone sees: buffered I/O, O_SYNC, vectored
# calls, misaligned O_DIRECT (EINVAL), ranges past the device's end, reads past the host
# file's end (6.1's short-read re-read), dirty pages or a pending AS_EIO/AS_ENOSPC on the
# unit, a read-only unit, lab recording, tracing or injection on the unit's bus. A call the
# host does not complete in full (error, short count, signal) is served again by the exact
# path at its syscall exit: the bytes in guest memory are unchanged, the range is one host
# file, so the exact path rewrites what the host wrote with the same bytes and answers
# what it always answers. UBDSIM_EXACT_IO=1 turns the fast path off (the differential test),
# and readahead's one host read per bio too (pagecache.EXACT_IO).

NR_PREAD64, NR_PWRITE64 = number("pread64"), number("pwrite64")
COPY_MAX = 64 << 10             # at most this many bytes: copied at the entry stop (_copied)
PLANT_TOP = 1023                 # planted descriptors count down from here (RLIMIT_NOFILE 1024)
_PLANT_TRIES = 2
_REGS = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
         "rdx", "rsi", "rdi", "orig_rax", "rip")


class _Plants:
    """ubdsim's own descriptors of the host files, and the number each has in the guest."""

    def __init__(self) -> None:
        self.by_file: dict[tuple[int, int], tuple[int, int]] = {}   # (dev, ino) -> src, target
        self.tries: dict[tuple[int, int], int] = {}                 # (tid, target) -> plants

    def source(self, fd: int, st) -> tuple[int, int]:
        key = (st.st_dev, st.st_ino)
        known = self.by_file.get(key)
        if known is None:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_SYNC | os.O_DSYNC)
            src = os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)
            known = self.by_file[key] = (src, PLANT_TOP - len(self.by_file))
        return known


def _plants(h) -> _Plants:
    plants = getattr(h, "_fast_plants", None)
    if plants is None:
        plants = h._fast_plants = _Plants()
    return plants


def _fast(h, tid: int, regs, of: OpenFile, pos: int, positioned: bool, segments: Segments,
          writing: bool) -> Result | None:
    """The rewritten call, the planting call, or None: take the exact path (`of` is an
    O_DIRECT open)."""
    if pagecache.EXACT_IO or len(segments) != 1 or regs is None:
        return None
    addr, length = segments[0]
    unit = of.unit
    dev = unit.device
    if type(dev) is not DeviceUnit or dev.closed or length <= 0:
        return None
    if dev.events.io_active or dev.events.injector is not None:
        return None
    if (pos | addr | length) & (pagecache.SECTOR_SIZE - 1) or pos + length > unit.size:
        return None
    if writing:
        if not of.writable or unit.read_only or of.sync:
            return None
    elif not of.readable:
        return None
    cache = h.caches[unit.number]       # only its pages and dirty state matter here
    errors = unit.wb_errors
    if cache.dirty or errors.as_eio or errors.as_enospc:
        return None
    cow = dev.cow
    new_bits = False
    if cow is None:
        fd, file_offset = dev.fd, pos
    else:
        count = length // pagecache.SECTOR_SIZE
        clear = dev._clear_bits(pos // pagecache.SECTOR_SIZE, count)
        if clear == 0 or writing:
            fd, file_offset = dev.fd, cow.geometry.data_offset + pos
            new_bits = clear != 0
        elif clear == (1 << count) - 1 and cow.lower is None:
            fd, file_offset = cow.backing_fd, pos
        else:
            return None
    if length <= COPY_MAX:
        return _copied(h, tid, of, pos, positioned, addr, length, writing, fd, file_offset,
                       new_bits, cache)
    st = os.fstat(fd)
    if not writing and file_offset + length > st.st_size:
        return None
    plants = _plants(h)
    src, target = plants.source(fd, st)
    try:
        there = os.stat(f"/proc/{tid}/fd/{target}")
    except FileNotFoundError:
        there = None
    except OSError:
        return None
    if there is None:
        return _plant(h, tid, regs, plants, src, target)
    if (there.st_dev, there.st_ino) != (st.st_dev, st.st_ino):
        return None                     # the guest's own descriptor sits there
    saved = regs.copy()
    new = regs.copy()
    new.orig_rax = NR_PWRITE64 if writing else NR_PREAD64
    new.rdi, new.rsi, new.rdx, new.r10 = target, addr, length, file_offset
    if writing:
        cache.invalidate(pos, length)   # kiocb_invalidate_pages()

    def on_exit(exit_regs) -> None:
        done = _signed(exit_regs.rax)
        for name in ("rdi", "rsi", "rdx", "r10", "orig_rax"):
            setattr(exit_regs, name, getattr(saved, name))
        result: Result
        try:
            if done == length:
                if new_bits:
                    _set_bits(h, unit, dev, pos, length)
                if writing:
                    cache.invalidate(pos, length)   # kiocb_invalidate_post_direct_write()
                result = Emulated(length)
            else:
                result = (do_write if writing else do_read)(h, tid, of, pos, segments)
        except UbdError as err:
            result = Fail(err.errno or errno.EIO)
        if isinstance(result, Emulated):
            if not positioned:
                of.offset = pos + result.value
            exit_regs.rax = result.value
        else:
            exit_regs.rax = (-result.errno) & ((1 << 64) - 1)

    return NeedsExit(new, on_exit)


def _copied(h, tid: int, of: OpenFile, pos: int, positioned: bool, addr: int, length: int,
            writing: bool, fd: int, file_offset: int, new_bits: bool,
            cache: pagecache.PageCache) -> Result | None:
    """The fast path's small form: ubdsim moves the bytes between the host file and guest
    memory itself, at the one seccomp stop (a planted call needs an exit stop too, which
    costs more than copying COPY_MAX bytes twice). Anything short of the whole transfer
    takes the exact path, which redoes the call from the start (the host file then holds
    what the exact path writes, as on the planted path): a read past the host file's end
    (6.1's short-read re-read) is one."""
    unit, dev = of.unit, of.unit.device
    try:
        if writing:
            data = h.mem.read(tid, addr, length)
            cache.invalidate(pos, length)       # kiocb_invalidate_pages()
            if os.pwrite(fd, data, file_offset) != length:
                return None
            if new_bits:
                _set_bits(h, unit, dev, pos, length)
            cache.invalidate(pos, length)       # kiocb_invalidate_post_direct_write()
        else:
            data = os.pread(fd, length, file_offset)
            if len(data) != length:
                return None
            h.mem.write(tid, addr, data)
    except OSError:
        return None
    if not positioned:
        of.offset = pos + length
    hint = h.tracer.hint                # the C loop's look at this descriptor
    if hint is not None and hint[0] == tid and not any(c.dirty for c in h.caches.values()):
        # Nothing the next such call needs is Python's to do (no flusher work; for writes,
        # no cached page to invalidate): the C loop may serve them until Python runs again.
        ino, writes = hint[2], not cache.pages
        h.tracer.arm_lane((ino, of, dev, of.flags, unit.read_only, writes),
                          lambda: _lane(ino, of, unit, dev, writes), of.offset,
                          lambda at: setattr(of, "offset", at))
    return Emulated(length)


def _lane(ino: int, of: OpenFile, unit, dev: DeviceUnit, writes: bool) -> native_wait.Lane:
    """The C loop's lane for `of` (native/stopwait.c): what _fast() and _copied() decide,
    as numbers; the checks that hold for the whole open file were made by this call."""
    cow = dev.cow
    lane = native_wait.Lane(
        ino=ino, size=unit.size, readable=of.readable,
        writable=writes and of.writable and not unit.read_only and not of.sync, data_fd=dev.fd,
        backing_fd=-1, data_offset=0, bitmap=None, bitmap_offset=0, guard=-1, word=0,
        segment=dev.profile.device.segment_bytes)
    if cow is not None:
        guard = dev.guard_word()
        lane.backing_fd = cow.backing_fd if cow.lower is None else -1
        lane.data_offset = cow.geometry.data_offset
        lane.bitmap = cow.bitmap.ctypes.data
        lane.bitmap_offset = cow.geometry.bitmap_offset
        lane.guard = -1 if guard is None else guard
        lane.word = dev.profile.device.bitmap_word
    return lane


def _set_bits(h, unit, dev: DeviceUnit, pos: int, length: int) -> None:
    """Unit.write()'s bitmap step after its data pwrite, per request as direct_write()
    submits them (a failing word write is that request's error line)."""
    step = unit.max_sectors * pagecache.SECTOR_SIZE
    failure = None
    for at in range(pos, pos + length, step):
        n = min(step, pos + length - at)
        segments = dev._cowify_request(at, n)
        try:
            for file_offset, words in dev._word_spans(segments):
                dev._pwrite(dev.fd, words, file_offset, "bitmap")
        except UbdError as err:
            h.block_log.request_error(unit, err.errno or errno.EIO, at // pagecache.SECTOR_SIZE,
                                      1, writeback.REQ_DIRECT, -(-n // pagecache.PAGE_SIZE))
            failure = failure or err
    if failure is not None:
        raise failure


def _plant(h, tid: int, regs, plants: _Plants, src: int, target: int) -> Result | None:
    """Rewrite the stopped call into the planting call; at its exit the guest is set to run
    its original call again (every register as it was, rip back over `syscall`)."""
    key = (tid, target)
    if plants.tries.get(key, 0) >= _PLANT_TRIES:
        return None
    plants.tries[key] = plants.tries.get(key, 0) + 1
    if not h.tracer.request_plant(tid, src, target):
        plants.tries[key] = _PLANT_TRIES
        return None
    saved = regs.copy()
    new = regs.copy()
    new.orig_rax = NR_PLANT
    new.r9 = PLANT_MAGIC

    def on_exit(exit_regs) -> None:
        for name in _REGS:
            setattr(exit_regs, name, getattr(saved, name))
        exit_regs.rip = saved.rip - 2           # the 2-byte `syscall` instruction again
        exit_regs.rax = saved.orig_rax

    return NeedsExit(new, on_exit)


def _positioned(h, tid, fd: int, offset: int | None, segments_of, writing: bool,
                regs=None, vectored: bool = False) -> Result:
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
    if of.direct:
        fast = _fast(h, tid, regs, of, pos, offset is not None, segments, writing)
        if fast is not None:
            h.stats["copied" if type(fast) is Emulated else "planted"] += 1
            return fast
    h.stats["exact"] += 1
    try:
        result = (do_write(h, tid, of, pos, segments, vectored) if writing
                  else do_read(h, tid, of, pos, segments))
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    if offset is None and isinstance(result, Emulated):
        of.offset = pos + result.value
    return result


def sys_read(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None, lambda: [(regs.rsi, regs.rdx)], False,
                       regs)


def sys_write(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None, lambda: [(regs.rsi, regs.rdx)], True,
                       regs)


def sys_pread64(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: [(regs.rsi, regs.rdx)], False, regs)


def sys_pwrite64(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: [(regs.rsi, regs.rdx)], True, regs)


def sys_readv(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None,
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False,
                       vectored=True)


def sys_writev(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), None,
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True,
                       vectored=True)


def sys_preadv(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False,
                       vectored=True)


def sys_pwritev(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _signed(regs.r10),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True,
                       vectored=True)


def _v2_offset(regs) -> int | None:
    """preadv2/pwritev2: offset -1 means "the file position" (fs/read_write.c)."""
    offset = _signed(regs.r10)
    return None if offset == -1 else offset


def sys_preadv2(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _v2_offset(regs),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), False,
                       vectored=True)


def sys_pwritev2(h, tid, regs) -> Result:
    return _positioned(h, tid, _int32(regs.rdi), _v2_offset(regs),
                       lambda: _iovecs(h, tid, regs.rsi, _int32(regs.rdx)), True,
                       vectored=True)
