"""open, stat and access on ubd device nodes (fs/open.c, fs/stat.c over a bdev inode).

Opens are rewritten into memfd_create() (see fdstate.py); stats and access are answered
from the node description in nodes.py; fstat of an open device answers the same.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

from ...errors import UbdError
from ..fdstate import O_ACCMODE, O_CLOEXEC, O_CREAT, O_EXCL, O_LARGEFILE, O_TRUNC, O_WRONLY, OpenFile
from ..nodes import NodeStat
from ..pagecache import file_ra_state_init
from .numbers import number
from .result import PASS, Emulated, Fail, NeedsExit, Result

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
O_DIRECTORY = 0o200000
O_PATH = 0o10000000
MFD_CLOEXEC = 1
X_OK = 1
NR_MEMFD_CREATE = number("memfd_create")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# --- open -------------------------------------------------------------------------------

def _open(h, tid: int, regs, dirfd: int, path_addr: int, flags: int) -> Result:
    match = h.node_at(tid, dirfd, path_addr)
    if match is None:
        return PASS
    unit = h.units.get(match)
    if unit is None:
        return Fail(errno.ENOENT)           # no disk registered: devtmpfs has no node
    if flags & O_CREAT and flags & O_EXCL:
        return Fail(errno.EEXIST)           # fs/namei.c: the node exists
    if flags & O_DIRECTORY:
        return Fail(errno.ENOTDIR)
    live = h.live_inodes()
    h.release_closed(unit, live)            # descriptions closed since: ubd_release()
    exclusive = bool(flags & O_EXCL)
    if exclusive and unit.exclusive_inodes & live:
        return Fail(errno.EBUSY)            # bd_prepare_to_claim(): another exclusive holder
    if unit.disk.count == 0:
        # block/bdev.c blkdev_get_whole(): the first opener gets set_init_blocksize() again,
        # undoing a BLKBSZSET made through descriptors that are all closed now.
        unit.block_size = unit.initial_block_size
    # ubd_kern.c ubd_open(): at count 0 ubd_open_dev() reopens the files (messages again);
    # a failure fails this open with its errno.
    try:
        h.open_disk(unit)
    except UbdError as err:
        return Fail(err.errno or errno.EIO)
    # ubd_open(): [2.4] refuses FMODE_WRITE on a read-only unit with EROFS (after opening
    # it, so the open's messages come first); [6.1] has that test commented out, the open
    # succeeds and writes get EPERM.
    if flags & O_ACCMODE and unit.read_only and h.rules.write_open_of_readonly_fails:
        h.drop_open(unit)
        return Fail(errno.EROFS)
    saved = regs.copy()
    new = regs.copy()
    new.orig_rax = NR_MEMFD_CREATE
    new.rdi = path_addr                     # the guest's own path doubles as the memfd name
    new.rsi = MFD_CLOEXEC if flags & O_CLOEXEC else 0
    # f_flags as F_GETFL shows them: open-time-only flags dropped, O_LARGEFILE forced (64-bit)
    f_flags = (flags & ~(O_CLOEXEC | O_CREAT | O_EXCL | O_TRUNC | O_PATH)) | O_LARGEFILE

    def on_exit(exit_regs) -> None:
        fd = _signed(exit_regs.rax)
        for name in ("rdi", "rsi", "rdx", "r10"):
            setattr(exit_regs, name, getattr(saved, name))
        if fd < 0:
            h.drop_open(unit)               # no description came of it: ubd_release()
            return
        # do_dentry_open() -> file_ra_state_init(): the read-ahead limit of this open
        # do_dentry_open(): f_wb_err = filemap_sample_wb_err()
        ino = h.opens.register(tid, fd, OpenFile(unit, f_flags, exclusive=exclusive,
                                                 readahead=file_ra_state_init(unit),
                                                 wb_err=unit.wb_errors.sample()))
        h.adopt(unit, ino)
        if exclusive:
            unit.exclusive_inodes.add(ino)

    return NeedsExit(new, on_exit)


def sys_open(h, tid, regs) -> Result:
    return _open(h, tid, regs, AT_FDCWD, regs.rdi, _int32(regs.rsi))


def sys_creat(h, tid, regs) -> Result:
    return _open(h, tid, regs, AT_FDCWD, regs.rdi, O_CREAT | O_WRONLY | O_TRUNC)


def sys_openat(h, tid, regs) -> Result:
    return _open(h, tid, regs, _int32(regs.rdi), regs.rsi, _int32(regs.rdx))


def sys_openat2(h, tid, regs) -> Result:
    try:
        how_flags = struct.unpack("<Q", h.mem.read(tid, regs.rdx, 8))[0]
    except OSError:
        return PASS
    return _open(h, tid, regs, _int32(regs.rdi), regs.rsi, _int32(how_flags))


# --- stat -------------------------------------------------------------------------------

def pack_stat(node: NodeStat) -> bytes:
    """struct stat (arch/x86/include/uapi/asm/stat.h, x86_64): size 0, blocks 0."""
    sec, nsec = divmod(node.time_ns, 1_000_000_000)
    return struct.pack("<QQQIIIiQqqqqqqqqq3q", node.dev, node.ino, 1, node.mode, node.uid,
                       node.gid, 0, node.rdev, 0, node.blksize, 0,
                       sec, nsec, sec, nsec, sec, nsec, 0, 0, 0)


STATX_BASIC_STATS = 0x7FF


def pack_statx(node: NodeStat) -> bytes:
    """struct statx (include/uapi/linux/stat.h): basic stats, no birth time."""
    sec, nsec = divmod(node.time_ns, 1_000_000_000)
    ts = struct.pack("<qIi", sec, nsec, 0)
    head = struct.pack("<IIQIIIHHQQQQ", STATX_BASIC_STATS, node.blksize, 0, 1, node.uid, node.gid,
                       node.mode, 0, node.ino, 0, 0, 0)
    tail = struct.pack("<IIII", node.rdev_major, node.rdev_minor, os.major(node.dev),
                       os.minor(node.dev))
    out = head + ts + bytes(16) + ts + ts + tail   # atime, btime (not in mask), ctime, mtime
    return out + bytes(256 - len(out))


def _stat_to(h, tid: int, node: NodeStat, buf: int, packer=pack_stat) -> Result:
    try:
        h.mem.write(tid, buf, packer(node))
    except OSError:
        return Fail(errno.EFAULT)
    return Emulated(0)


def _stat_path(h, tid, dirfd: int, path_addr: int, buf: int, packer=pack_stat) -> Result:
    match = h.node_at(tid, dirfd, path_addr)
    if match is None:
        return PASS
    unit = h.units.get(match)
    if unit is None:
        return Fail(errno.ENOENT)
    return _stat_to(h, tid, unit.node, buf, packer)


def sys_stat(h, tid, regs) -> Result:
    return _stat_path(h, tid, AT_FDCWD, regs.rdi, regs.rsi)


sys_lstat = sys_stat


def sys_fstat(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    return _stat_to(h, tid, of.unit.node, regs.rsi)


def _empty_path_fd(h, tid, dirfd: int, path_addr: int, flags: int) -> OpenFile | None:
    """fstatat(fd, "", AT_EMPTY_PATH): a stat of the descriptor itself."""
    if not flags & AT_EMPTY_PATH:
        return None
    try:
        first = h.mem.read(tid, path_addr, 1) if path_addr else b"\0"
    except OSError:
        return None
    return h.fd(tid, dirfd) if first == b"\0" else None


def sys_newfstatat(h, tid, regs) -> Result:
    dirfd, flags = _int32(regs.rdi), _int32(regs.r10)
    of = _empty_path_fd(h, tid, dirfd, regs.rsi, flags)
    if of is not None:
        return _stat_to(h, tid, of.unit.node, regs.rdx)
    return _stat_path(h, tid, dirfd, regs.rsi, regs.rdx)


def sys_statx(h, tid, regs) -> Result:
    dirfd, flags = _int32(regs.rdi), _int32(regs.rdx)
    of = _empty_path_fd(h, tid, dirfd, regs.rsi, flags)
    if of is not None:
        return _stat_to(h, tid, of.unit.node, regs.r8, pack_statx)
    return _stat_path(h, tid, dirfd, regs.rsi, regs.r8, pack_statx)


# --- access -----------------------------------------------------------------------------

def _access(h, tid, dirfd: int, path_addr: int, mode: int) -> Result:
    match = h.node_at(tid, dirfd, path_addr)
    if match is None:
        return PASS
    if match not in h.units:
        return Fail(errno.ENOENT)
    # fs/namei.c generic_permission(): root may read/write any node, but X_OK needs an x bit
    # (mode 0660 has none); a read-only disk does not make a device node EROFS.
    return Fail(errno.EACCES) if mode & X_OK else Emulated(0)


def sys_access(h, tid, regs) -> Result:
    return _access(h, tid, AT_FDCWD, regs.rdi, _int32(regs.rsi))


def sys_faccessat(h, tid, regs) -> Result:
    return _access(h, tid, _int32(regs.rdi), regs.rsi, _int32(regs.rdx))


sys_faccessat2 = sys_faccessat


# --- extended attributes (ls -l asks for ACLs) ------------------------------------------

ENODATA = 61


def sys_getxattr(h, tid, regs) -> Result:
    """devtmpfs nodes carry no extended attributes: ENODATA (fs/xattr.c vfs_getxattr)."""
    match = h.node_at(tid, AT_FDCWD, regs.rdi)
    if match is None:
        return PASS
    return Fail(ENODATA) if match in h.units else Fail(errno.ENOENT)


sys_lgetxattr = sys_getxattr


def sys_listxattr(h, tid, regs) -> Result:
    match = h.node_at(tid, AT_FDCWD, regs.rdi)
    if match is None:
        return PASS
    return Emulated(0) if match in h.units else Fail(errno.ENOENT)


sys_llistxattr = sys_listxattr


# --- statfs: the node lives on the host's /dev (devtmpfs) -------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
STATFS_SIZE = 120                       # struct statfs, x86_64


def sys_statfs(h, tid, regs) -> Result:
    match = h.node_at(tid, AT_FDCWD, regs.rdi)
    if match is None:
        return PASS
    if match not in h.units:
        return Fail(errno.ENOENT)
    buf = ctypes.create_string_buffer(STATFS_SIZE)
    if _libc.statfs(b"/dev", buf) != 0:
        return Fail(ctypes.get_errno())
    try:
        h.mem.write(tid, regs.rsi, buf.raw)
    except OSError:
        return Fail(errno.EFAULT)
    return Emulated(0)
