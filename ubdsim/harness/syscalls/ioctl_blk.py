"""Block-device ioctls on a ubd descriptor.

From: block/ioctl.c blkdev_ioctl() and blkdev_common_ioctl(), then the driver's own
arch/um/drivers/ubd_kern.c ubd_ioctl() [6.1], which answers HDIO_GET_IDENTITY and
CDROMVOLREAD and returns EINVAL for everything else. So an unknown ioctl on a real ubd disk
gives EINVAL, not ENOTTY (only a disk without a driver ioctl gives ENOTTY), and floppy or
CD-ROM probes fail with EINVAL as they do on the real kernel.

The requests fs/ioctl.c do_vfs_ioctl() answers before the device (FIOCLEX, FIONCLEX,
FIONBIO, FIOASYNC, FIGETBSZ, ...) are left to the memfd, which answers them the same way.
"""
from __future__ import annotations

import errno
import struct
from typing import Callable

from ...errors import UbdError
from ..device_unit import Unit
from ..fdstate import OpenFile
from .fdops import offloads, truncate_bdev_range, zero_range
from .files import _int32
from .result import PASS, Emulated, Fail, Result

SECTOR = 512
PAGE = 4096

# include/uapi/linux/fs.h, hdreg.h, cdrom.h
BLKROSET, BLKROGET, BLKRRPART, BLKGETSIZE, BLKFLSBUF = 0x125D, 0x125E, 0x125F, 0x1260, 0x1261
BLKRASET, BLKRAGET, BLKFRASET, BLKFRAGET = 0x1262, 0x1263, 0x1264, 0x1265
BLKSECTGET, BLKSSZGET = 0x1267, 0x1268
BLKBSZGET, BLKBSZSET, BLKGETSIZE64 = 0x80081270, 0x40081271, 0x80081272
BLKDISCARD, BLKIOMIN, BLKIOOPT, BLKALIGNOFF, BLKPBSZGET = 0x1277, 0x1278, 0x1279, 0x127A, 0x127B
BLKDISCARDZEROES, BLKSECDISCARD, BLKROTATIONAL, BLKZEROOUT = 0x127C, 0x127D, 0x127E, 0x127F
BLKGETDISKSEQ, BLKGETZONESZ, BLKGETNRZONES = 0x80081280, 0x80041284, 0x80041285
BLKREPORTZONE, BLKRESETZONE, BLKOPENZONE, BLKCLOSEZONE, BLKFINISHZONE = (
    0xC0101282, 0x40101283, 0x40101286, 0x40101287, 0x40101288)
HDIO_GETGEO, HDIO_GET_IDENTITY, CDROMVOLREAD = 0x0301, 0x030D, 0x5313
# fs/ioctl.c do_vfs_ioctl(): answered above the device
VFS_IOCTLS = {0x5451, 0x5450, 0x5421, 0x5452, 0x0002, 0x0001, 0xC0045877, 0xC0045878}

Handler = Callable[[object, int, OpenFile, int], Result]


def _put(h, tid: int, addr: int, fmt: str, value) -> Result:
    """put_user(): EFAULT when the guest pointer is bad."""
    try:
        h.mem.write(tid, addr, struct.pack(fmt, value))
    except OSError:
        return Fail(errno.EFAULT)
    return Emulated(0)


def _get(h, tid: int, addr: int, fmt: str) -> tuple | None:
    """get_user()/copy_from_user(): the values at `addr`, or None when the pointer is bad."""
    try:
        return struct.unpack(fmt, h.mem.read(tid, addr, struct.calcsize(fmt)))
    except OSError:
        return None


def _get_range(h, tid: int, addr: int) -> tuple[int, int] | None:
    return _get(h, tid, addr, "<QQ")


def _geometry_cylinders(unit: Unit) -> int:
    """ubd_kern.c ubd_getgeo(): 128 heads, 32 sectors per track."""
    return unit.size // (128 * 32 * 512)


def _discard(h, tid, of: OpenFile, arg: int) -> Result:
    """block/ioctl.c blk_ioctl_discard() [6.1]: the range's page cache is truncated
    (truncate_bdev_range()) before blkdev_issue_discard(), which may still refuse."""
    if not of.writable:
        return Fail(errno.EBADF)
    if not offloads(of.unit):
        return Fail(errno.EOPNOTSUPP)        # no discard limits (flag t): nothing touched
    rng = _get_range(h, tid, arg)
    if rng is None:
        return Fail(errno.EFAULT)
    start, length = rng
    end = start + length
    if start & 511 or length & 511 or end > (1 << 64) - 1 or end > of.unit.size:
        return Fail(errno.EINVAL)
    failed = truncate_bdev_range(h, of, start, end - 1)
    if failed:
        return Fail(failed)
    # block/blk-lib.c __blkdev_issue_discard(): bdev_read_only() first, then an empty range
    if of.unit.read_only:
        return Fail(errno.EPERM)
    if not length:
        return Fail(errno.EINVAL)
    of.unit.device.discard(start, length)
    return Emulated(0)


def _zeroout(h, tid, of: OpenFile, arg: int) -> Result:
    """block/ioctl.c blk_ioctl_zeroout() [6.1]: truncate_bdev_range(), then
    blkdev_issue_zeroout(BLKDEV_ZERO_NOUNMAP), so a zero-page fallback is allowed."""
    if not of.writable:
        return Fail(errno.EBADF)
    rng = _get_range(h, tid, arg)
    if rng is None:
        return Fail(errno.EFAULT)
    start, length = rng
    end = start + length - 1
    if start & 511 or length & 511 or end >= of.unit.size or end < start:
        return Fail(errno.EINVAL)
    failed = truncate_bdev_range(h, of, start, end)
    if failed:
        return Fail(failed)
    if of.unit.read_only:
        return Fail(errno.EPERM)             # blkdev_issue_zeroout(): bdev_read_only()
    zero_range(of.unit, start, length, fallback=True)
    return Emulated(0)


def _flsbuf(h, tid, of: OpenFile, arg: int) -> Result:
    """block/ioctl.c blkdev_flushbuf() [6.1]: fsync_bdev() (sync_blockdev(): everything
    written back, its error cleared and not returned), then invalidate_bdev(): every clean
    page of this disk dropped (all of them now), no other disk's."""
    h.write_and_wait(of.unit)
    h.page_cache(of.unit).drop(0, (1 << 64) - 1)
    return Emulated(0)


def _bszset(h, tid, of: OpenFile, arg: int) -> Result:
    """block/ioctl.c blkdev_bszset() + block/bdev.c set_blocksize() [6.1]: without
    FMODE_EXCL the disk is claimed for the call (EBUSY while another open holds it
    exclusively); a power of two from 512 to PAGE_SIZE; a new size kills the page cache
    (sync_blockdev(), then kill_bdev()), the same size leaves it."""
    if not arg:
        return Fail(errno.EINVAL)
    value = _get(h, tid, arg, "<i")
    if value is None:
        return Fail(errno.EFAULT)
    (n,) = value
    unit = of.unit
    if not of.exclusive and unit.exclusive_inodes and unit.exclusive_inodes & h.live_inodes():
        return Fail(errno.EBUSY)
    if n < SECTOR or n > PAGE or n & (n - 1):
        return Fail(errno.EINVAL)
    if n != unit.block_size:
        h.write_and_wait(unit)                  # set_blocksize(): sync_blockdev(), kill_bdev()
        h.page_cache(unit).clear()
        unit.block_size = n
    return Emulated(0)


def _roset(h, tid, of: OpenFile, arg: int) -> Result:
    value = _get(h, tid, arg, "<i")
    if value is None:
        return Fail(errno.EFAULT)
    (n,) = value
    of.unit.read_only_set = bool(n)
    return Emulated(0)


def _ra_set(h, tid, of: OpenFile, arg: int) -> Result:
    of.unit.read_ahead_sectors = (arg * 512 // PAGE) * PAGE // 512   # ra_pages granularity
    return Emulated(0)


def _identity(h, tid, of: OpenFile, arg: int) -> Result:
    """ubd_ioctl() HDIO_GET_IDENTITY: 256 words, only cylinders/heads/sectors filled."""
    words = [0] * 256
    words[1], words[3], words[6] = _geometry_cylinders(of.unit) & 0xFFFF, 128, 32
    try:
        h.mem.write(tid, arg, struct.pack("<256H", *words))
    except OSError:
        return Fail(errno.EFAULT)
    return Emulated(0)


def _cdrom_volread(h, tid, of: OpenFile, arg: int) -> Result:
    """ubd_ioctl() CDROMVOLREAD: all four channels 255 (struct cdrom_volctrl, 4 bytes)."""
    return _write_raw(h, tid, arg, b"\xff" * 4)


def _write_raw(h, tid, addr: int, data: bytes) -> Result:
    try:
        h.mem.write(tid, addr, data)
    except OSError:
        return Fail(errno.EFAULT)
    return Emulated(0)


def _zone_mgmt(h, tid, of: OpenFile, arg: int) -> Result:
    return Fail(errno.ENOTTY)           # blkdev_*zone*_ioctl(): not a zoned device


HANDLERS: dict[int, Handler] = {
    BLKGETSIZE64: lambda h, t, of, a: _put(h, t, a, "<Q", of.unit.size),
    BLKGETSIZE: lambda h, t, of, a: _put(h, t, a, "<Q", of.unit.size // SECTOR),
    BLKSSZGET: lambda h, t, of, a: _put(h, t, a, "<i", SECTOR),
    BLKPBSZGET: lambda h, t, of, a: _put(h, t, a, "<I", SECTOR),
    BLKIOMIN: lambda h, t, of, a: _put(h, t, a, "<I", SECTOR),
    BLKIOOPT: lambda h, t, of, a: _put(h, t, a, "<I", 0),
    BLKALIGNOFF: lambda h, t, of, a: _put(h, t, a, "<i", 0),
    BLKROGET: lambda h, t, of, a: _put(h, t, a, "<i", int(of.unit.read_only)),
    BLKDISCARDZEROES: lambda h, t, of, a: _put(h, t, a, "<I", 0),
    BLKROTATIONAL: lambda h, t, of, a: _put(h, t, a, "<H", 0),     # QUEUE_FLAG_NONROT
    BLKSECTGET: lambda h, t, of, a: _put(h, t, a, "<H", of.unit.max_sectors),
    BLKGETZONESZ: lambda h, t, of, a: _put(h, t, a, "<I", 0),
    BLKGETNRZONES: lambda h, t, of, a: _put(h, t, a, "<I", 0),
    BLKGETDISKSEQ: lambda h, t, of, a: _put(h, t, a, "<Q", of.unit.number + 1),
    BLKBSZGET: lambda h, t, of, a: _put(h, t, a, "<i", of.unit.block_size),
    BLKRAGET: lambda h, t, of, a: _put(h, t, a, "<q", of.unit.read_ahead_sectors),
    BLKFRAGET: lambda h, t, of, a: _put(h, t, a, "<q", of.unit.read_ahead_sectors),
    BLKBSZSET: _bszset,
    BLKROSET: _roset,
    BLKRASET: _ra_set,
    BLKFRASET: _ra_set,
    BLKFLSBUF: _flsbuf,
    BLKRRPART: lambda h, t, of, a: Emulated(0),     # rescan: ubdsim exposes no partitions
    BLKDISCARD: _discard,
    BLKSECDISCARD: lambda h, t, of, a: Fail(errno.EBADF if not of.writable else errno.EOPNOTSUPP),
    BLKZEROOUT: _zeroout,
    BLKREPORTZONE: _zone_mgmt,
    BLKRESETZONE: _zone_mgmt,
    BLKOPENZONE: _zone_mgmt,
    BLKCLOSEZONE: _zone_mgmt,
    BLKFINISHZONE: _zone_mgmt,
    HDIO_GETGEO: lambda h, t, of, a: (
        Fail(errno.EINVAL) if not a else
        _write_raw(h, t, a, struct.pack("<BBHxxxxQ", 128, 32,
                                        _geometry_cylinders(of.unit) & 0xFFFF, 0))),
    HDIO_GET_IDENTITY: _identity,
    CDROMVOLREAD: _cdrom_volread,
}


def sys_ioctl(h, tid, regs) -> Result:
    cmd = regs.rsi & 0xFFFFFFFF
    if cmd in VFS_IOCTLS:
        return PASS
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    handler = HANDLERS.get(cmd)
    if handler is None:
        return Fail(errno.EINVAL)       # ubd_ioctl(): default
    try:
        return handler(h, tid, of, regs.rdx)
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
