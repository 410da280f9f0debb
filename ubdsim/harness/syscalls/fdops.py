"""Descriptor operations other than data transfer: fsync and friends, fallocate, fadvise,
readahead(2), fcntl status flags, ftruncate, and the copy offloads a block device refuses.

From: fs/sync.c, fs/open.c vfs_fallocate() + block/fops.c blkdev_fallocate(), mm/fadvise.c
generic_fadvise(), mm/readahead.c ksys_readahead(), block/bdev.c truncate_bdev_range(),
fs/fcntl.c setfl(), fs/open.c do_sys_ftruncate(), fs/read_write.c generic_copy_file_checks()
[6.1, the 6.1.176 source of Debian's linux.uml].

fadvise, readahead(2) and fallocate do to the unit's page cache exactly what the kernel does
(pagecache.py), and nothing to any other unit's; each is compared with linux.uml in
tests/harness/test_cache_calls.py.
"""
from __future__ import annotations

import errno

from ...errors import UbdError
from .. import pagecache, writeback
from . import rw
from ..fdstate import SETFL_MASK
from .files import _int32, _signed
from .result import PASS, Emulated, Fail, Result

F_GETFL, F_SETFL = 3, 4
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_NO_HIDE_STALE = 0x04
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_FL_UNSHARE_RANGE = 0x40
# include/linux/falloc.h FALLOC_FL_SUPPORTED_MASK: what vfs_fallocate() lets through at all
# (FALLOC_FL_NO_HIDE_STALE is not in it, so blkdev_fallocate()'s PUNCH_HOLE | KEEP_SIZE |
# NO_HIDE_STALE case is never reached from user space: measured EOPNOTSUPP).
FALLOC_FL_SUPPORTED_MASK = (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE
                            | FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE
                            | FALLOC_FL_UNSHARE_RANGE)
# block/fops.c BLKDEV_FALLOC_FL_SUPPORTED
BLKDEV_FALLOC_FL_SUPPORTED = (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE
                              | FALLOC_FL_NO_HIDE_STALE)
MAX_LFS_FILESIZE = (1 << 63) - 1    # the bdev superblock's s_maxbytes
POSIX_FADV_NORMAL, POSIX_FADV_RANDOM, POSIX_FADV_SEQUENTIAL = 0, 1, 2
POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED, POSIX_FADV_NOREUSE = 3, 4, 5
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
SYNC_FILE_RANGE_VALID = 0x7
_U64 = (1 << 64) - 1
_PAGE_SHIFT = 12


def _u64_to_s64(value: int) -> int:
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


def sys_fsync(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    try:
        # blkdev_fsync(): every dirty page (vfs_fsync() asks for 0..LLONG_MAX), the error
        # this open has not seen, then REQ_OP_FLUSH (the profile's flush)
        err = rw.fsync_range(h, of, 0, (1 << 64) - 1)
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    return Fail(err) if err else Emulated(0)


sys_fdatasync = sys_fsync


def sys_sync(h, tid, regs) -> Result:
    """fs/sync.c ksys_sync(): every disk's dirty pages written back (iterate_bdevs()),
    errors kept for fsync to report; then the host's own sync runs for the guest's other
    files."""
    h.sync_all()
    return PASS


def sys_sync_file_range(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    offset, nbytes, flags = _signed(regs.rsi), _signed(regs.rdx), _int32(regs.r10)
    if flags & ~SYNC_FILE_RANGE_VALID or offset < 0 or nbytes < 0:
        return Fail(errno.EINVAL)
    # fs/sync.c sync_file_range() [6.1]: endbyte = offset + nbytes - 1 (the device's end
    # when nbytes is 0 or the sum overflows); WRITE starts write-back of the range
    # (WB_SYNC_NONE), the WAIT flags report the error this open has not seen.
    endbyte = offset + nbytes - 1 if nbytes and offset + nbytes - 1 < MAX_LFS_FILESIZE \
        else MAX_LFS_FILESIZE
    err = 0
    if flags & SYNC_FILE_RANGE_WAIT_BEFORE:
        err, of.wb_err = of.unit.wb_errors.check_and_advance(of.wb_err)
    if not err and flags & SYNC_FILE_RANGE_WRITE:
        h.write_back(of.unit, writeback.REQ_NONE, offset >> _PAGE_SHIFT, endbyte >> _PAGE_SHIFT)
    if not err and flags & SYNC_FILE_RANGE_WAIT_AFTER:
        err, of.wb_err = of.unit.wb_errors.check_and_advance(of.wb_err)
    return Fail(err) if err else Emulated(0)


def fadvise(h, of, offset: int, length: int, advice: int) -> Result:
    """mm/fadvise.c generic_fadvise() [6.1] on a block device (def_blk_fops has no
    ->fadvise): WILLNEED reads the range in, DONTNEED drops its whole clean pages, the
    others change only the file's readahead state. Nothing is dropped otherwise."""
    if length < 0:
        return Fail(errno.EINVAL)
    if advice not in (POSIX_FADV_NORMAL, POSIX_FADV_RANDOM, POSIX_FADV_SEQUENTIAL,
                      POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED, POSIX_FADV_NOREUSE):
        return Fail(errno.EINVAL)
    unit = of.unit
    ra = rw.file_ra(of)
    # endbyte (inclusive), in the kernel's u64 arithmetic: len 0 or an overflow is "to the end"
    endbyte = _u64_to_s64(offset + length)
    endbyte = -1 if not length or endbyte < length else endbyte - 1
    if advice == POSIX_FADV_NORMAL:
        ra.ra_pages = unit.read_ahead_sectors // 8          # bdi->ra_pages, now
        ra.random = False
    elif advice == POSIX_FADV_RANDOM:
        ra.random = True
    elif advice == POSIX_FADV_SEQUENTIAL:
        ra.ra_pages = unit.read_ahead_sectors // 8 * 2
        ra.random = False
    elif advice == POSIX_FADV_WILLNEED:
        # First and last partial page; force_page_cache_readahead() (pgoff_t arithmetic).
        start_index = (offset >> _PAGE_SHIFT) & _U64
        end_index = (endbyte >> _PAGE_SHIFT) & _U64
        count = (end_index - start_index + 1) & _U64 or _U64
        h.page_cache(unit).force_ra(unit.device, ra, start_index, count)
    elif advice == POSIX_FADV_DONTNEED:
        # __filemap_fdatawrite_range(WB_SYNC_NONE): the range's dirty pages are written
        # back and stay cached (they are under write-back when the pages are dropped below,
        # which skips them; ubdsim keeps them, now clean). Then the first and last FULL page;
        # the last is kept unless endbyte ends a page or is the device's last byte.
        if endbyte < 0:
            endbyte_index = (1 << 64) - 1
        else:
            endbyte_index = endbyte >> _PAGE_SHIFT
        written = {i for i in h.page_cache(unit).dirty
                   if (offset >> _PAGE_SHIFT) <= i <= endbyte_index}
        h.write_back(unit, writeback.REQ_NONE, offset >> _PAGE_SHIFT, endbyte_index)
        start_index = ((offset + pagecache.PAGE_SIZE - 1) >> _PAGE_SHIFT) & _U64
        end_index = (endbyte >> _PAGE_SHIFT) & _U64
        if endbyte & (pagecache.PAGE_SIZE - 1) != pagecache.PAGE_SIZE - 1 \
                and endbyte != unit.size - 1:
            if end_index == 0:
                return Emulated(0)
            end_index -= 1
        if end_index >= start_index:
            h.page_cache(unit).drop(start_index, end_index, keep=written)  # invalidate_mapping_pagevec()
    # POSIX_FADV_NOREUSE: nothing in 6.1
    return Emulated(0)


def sys_fadvise64(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    return fadvise(h, of, _signed(regs.rsi), _signed(regs.rdx), _int32(regs.r10))


def sys_readahead(h, tid, regs) -> Result:
    """mm/readahead.c ksys_readahead() [6.1.176]: EBADF without FMODE_READ; a block device
    (S_ISBLK is allowed) gets vfs_fadvise(POSIX_FADV_WILLNEED), `count` taken as a loff_t."""
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    if not of.readable:
        return Fail(errno.EBADF)
    return fadvise(h, of, _signed(regs.rsi), _signed(regs.rdx), POSIX_FADV_WILLNEED)


def truncate_bdev_range(h, of, lstart: int, lend: int) -> int:
    """block/bdev.c truncate_bdev_range() [6.1], bytes lstart..lend inclusive, before a
    discard or zero-out: unless this file holds the disk exclusively (FMODE_EXCL) it claims
    it for the call; when another open holds it exclusively (an O_EXCL open still alive),
    bd_prepare_to_claim() fails and the pages touching the range are invalidated instead
    (partial ones included; a dirty one stays and makes it EBUSY), otherwise the range is
    truncated (partial pages zeroed, dirty data dropped). Returns the errno or 0."""
    unit = of.unit
    cache = h.page_cache(unit)
    if not of.exclusive and unit.exclusive_inodes and unit.exclusive_inodes & h.live_inodes():
        kept = cache.drop(lstart >> _PAGE_SHIFT, lend >> _PAGE_SHIFT)
        return errno.EBUSY if kept else 0
    cache.truncate(lstart, lend, unit.block_size)
    return 0


def offloads(unit) -> bool:
    """bdev_max_discard_sectors() and bdev_write_zeroes_sectors() are not 0: ubd_kern.c
    ubd_add() [6.1] sets both limits (UBD_MAX_REQUEST) unless flag t; 2.4 has neither."""
    dev = unit.device
    profile = getattr(dev, "profile", None)
    return bool(profile is not None and profile.device.supports_discard
                and not getattr(dev, "no_trim", False))


def zero_range(unit, start: int, length: int, fallback: bool) -> None:
    """blkdev_issue_zeroout(): REQ_OP_WRITE_ZEROES when the disk has it (ubd [6.1] unless
    flag t: ubd_kern.c do_io() zero-ranges the same target a discard would); otherwise
    zero pages are written when a fallback is allowed (BLKDEV_ZERO_NOUNMAP), else
    EOPNOTSUPP (BLKDEV_ZERO_NOFALLBACK)."""
    write_zeroes = getattr(unit.device, "write_zeroes", None)
    try:
        if write_zeroes is None:
            raise UbdError("no REQ_OP_WRITE_ZEROES", errno=errno.EOPNOTSUPP)
        write_zeroes(start, length)
    except UbdError as err:
        if err.errno != errno.EOPNOTSUPP or not fallback:
            raise
        pagecache.zero(unit.device, start, length)


def _vfs_fallocate_checks(of, mode: int, start: int, length: int) -> int:
    """fs/open.c vfs_fallocate() [6.1] up to ->fallocate(): the errno, or 0."""
    if start < 0 or length <= 0:
        return errno.EINVAL
    if mode & ~FALLOC_FL_SUPPORTED_MASK:
        return errno.EOPNOTSUPP
    if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) == \
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE:
        return errno.EOPNOTSUPP
    if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
        return errno.EOPNOTSUPP
    if mode & FALLOC_FL_COLLAPSE_RANGE and mode & ~FALLOC_FL_COLLAPSE_RANGE:
        return errno.EINVAL
    if mode & FALLOC_FL_INSERT_RANGE and mode & ~FALLOC_FL_INSERT_RANGE:
        return errno.EINVAL
    if mode & FALLOC_FL_UNSHARE_RANGE and mode & ~(FALLOC_FL_UNSHARE_RANGE | FALLOC_FL_KEEP_SIZE):
        return errno.EINVAL
    if not of.writable:
        return errno.EBADF
    if start + length > MAX_LFS_FILESIZE:   # past s_maxbytes, or wrapping through zero
        return errno.EFBIG
    return 0


def sys_fallocate(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    mode, start, length = _int32(regs.rsi), _signed(regs.rdx), _signed(regs.r10)
    failed = _vfs_fallocate_checks(of, mode, start, length)
    if failed:
        return Fail(failed)
    # block/fops.c blkdev_fallocate() [6.1]
    if mode & ~BLKDEV_FALLOC_FL_SUPPORTED:
        return Fail(errno.EOPNOTSUPP)
    size = of.unit.size
    if start >= size:
        return Fail(errno.EINVAL)
    if start + length > size:
        if not mode & FALLOC_FL_KEEP_SIZE:
            return Fail(errno.EINVAL)
        length = size - start
    if (start | length) & (pagecache.SECTOR_SIZE - 1):
        return Fail(errno.EINVAL)
    if mode in (FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
        fallback = True                     # blkdev_issue_zeroout(BLKDEV_ZERO_NOUNMAP)
    elif mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
        fallback = False                    # blkdev_issue_zeroout(BLKDEV_ZERO_NOFALLBACK)
    else:
        # Mode 0, KEEP_SIZE alone, ...; the NO_HIDE_STALE discard case cannot get here.
        return Fail(errno.EOPNOTSUPP)
    # "Invalidate the page cache, including dirty pages": before the zero-out, which may
    # still fail (the truncation stays).
    failed = truncate_bdev_range(h, of, start, start + length - 1)
    if failed:
        return Fail(failed)
    if of.unit.read_only:
        # block/blk-lib.c blkdev_issue_zeroout(): bdev_read_only() fails the write-zeroes
        # attempt and the zero-page fallback with EPERM; NOFALLBACK without write-zeroes
        # limits fails first, with EOPNOTSUPP.
        return Fail(errno.EPERM if fallback or offloads(of.unit) else errno.EOPNOTSUPP)
    try:
        zero_range(of.unit, start, length, fallback=fallback)
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    return Emulated(0)


def sys_fcntl(h, tid, regs) -> Result:
    cmd = _int32(regs.rsi)
    if cmd not in (F_GETFL, F_SETFL):
        return PASS                 # dup, fd flags, locks: the memfd answers them correctly
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    if cmd == F_GETFL:
        return Emulated(of.flags)
    of.flags = (of.flags & ~SETFL_MASK) | (_int32(regs.rdx) & SETFL_MASK)
    return Emulated(0)


def sys_ftruncate(h, tid, regs) -> Result:
    # do_sys_ftruncate(): only regular files can be truncated
    return PASS if h.fd(tid, _int32(regs.rdi)) is None else Fail(errno.EINVAL)


def sys_copy_file_range(h, tid, regs) -> Result:
    # generic_copy_file_checks(): both ends must be regular files
    if h.fd(tid, _int32(regs.rdi)) is None and h.fd(tid, _int32(regs.rdx)) is None:
        return PASS
    return Fail(errno.EINVAL)


def sys_sendfile(h, tid, regs) -> Result:
    # Not emulated (the kernel would splice from the page cache); EINVAL makes callers such
    # as cat or cp fall back to read/write.
    if h.fd(tid, _int32(regs.rdi)) is None and h.fd(tid, _int32(regs.rsi)) is None:
        return PASS
    return Fail(errno.EINVAL)


def sys_splice(h, tid, regs) -> Result:
    if h.fd(tid, _int32(regs.rdi)) is None and h.fd(tid, _int32(regs.rdx)) is None:
        return PASS
    return Fail(errno.EINVAL)
