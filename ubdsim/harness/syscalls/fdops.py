"""Descriptor operations other than data transfer: fsync and friends, fallocate, fadvise,
fcntl status flags, ftruncate, and the copy offloads a block device refuses.

From: fs/sync.c, fs/open.c vfs_fallocate() + block/fops.c blkdev_fallocate(), mm/fadvise.c,
fs/fcntl.c setfl(), fs/open.c do_sys_ftruncate(), fs/read_write.c generic_copy_file_checks()
[6.1].
"""
from __future__ import annotations

import errno

from ...errors import UbdError
from .. import pagecache
from ..fdstate import SETFL_MASK
from .files import _int32, _signed
from .result import PASS, Emulated, Fail, Result

F_GETFL, F_SETFL = 3, 4
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_NO_HIDE_STALE = 0x04
FALLOC_FL_ZERO_RANGE = 0x10
POSIX_FADV_MAX = 5                  # NORMAL..NOREUSE are 0..5
SYNC_FILE_RANGE_VALID = 0x7


def sys_fsync(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    try:
        of.unit.device.flush()      # blkdev_fsync() -> REQ_OP_FLUSH -> the profile's flush
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    return Emulated(0)


sys_fdatasync = sys_fsync


def sys_sync_file_range(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    offset, nbytes, flags = _signed(regs.rsi), _signed(regs.rdx), _int32(regs.r10)
    if flags & ~SYNC_FILE_RANGE_VALID or offset < 0 or nbytes < 0:
        return Fail(errno.EINVAL)
    return Emulated(0)              # writes already went through: nothing is dirty


def sys_fadvise64(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    advice = _int32(regs.r10)
    if not 0 <= advice <= POSIX_FADV_MAX or _signed(regs.rdx) < 0:
        return Fail(errno.EINVAL)
    return Emulated(0)


def sys_readahead(h, tid, regs) -> Result:
    return PASS if h.fd(tid, _int32(regs.rdi)) is None else Emulated(0)


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


def sys_fallocate(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    mode, start, length = _int32(regs.rsi), _signed(regs.rdx), _signed(regs.r10)
    # fs/open.c vfs_fallocate()
    if start < 0 or length <= 0:
        return Fail(errno.EINVAL)
    if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
        return Fail(errno.EOPNOTSUPP)
    if not of.writable:
        return Fail(errno.EBADF)
    # block/fops.c blkdev_fallocate()
    supported = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE \
        | FALLOC_FL_NO_HIDE_STALE
    if mode & ~supported:
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
    if of.unit.read_only:
        return Fail(errno.EPERM)             # as BLKZEROOUT on a read-only unit
    try:
        if mode in (FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
            zero_range(of.unit, start, length, fallback=True)
        elif mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
            zero_range(of.unit, start, length, fallback=False)
        elif mode == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE | FALLOC_FL_NO_HIDE_STALE:
            of.unit.device.discard(start, length)
        else:
            return Fail(errno.EOPNOTSUPP)
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
