"""mmap of a ubd descriptor and the asynchronous I/O engines.

mmap: a mapping of the memfd behind a device descriptor would show an empty file, so the
call is rewritten into an anonymous private mapping that ubdsim fills with the device's
bytes at the syscall exit. That is exactly right for MAP_PRIVATE and for read-only shared
mappings taken as a snapshot; a writable MAP_SHARED mapping would need write-back at
msync/munmap, which ubdsim does not do, so it gets ENODEV (the error of a file whose driver
has no mmap, mm/mmap.c do_mmap()). Pages past the end of the device read as zeros (the
kernel would raise SIGBUS there). The copy is eager, so mappings above MAX_MAP bytes get
ENOMEM rather than a read of a whole (possibly 1 TiB, sparse) device.

Linux AIO and io_uring would run against the memfd behind ubdsim's back, so their setup
calls answer ENOSYS, as on a kernel built without them; fio, qemu-img and friends then fall
back to synchronous I/O. This applies to every guest process, not only to device
descriptors: those calls carry no descriptor to check.
"""
from __future__ import annotations

import errno

from .. import pagecache
from .files import _int32, _signed
from .result import PASS, Fail, NeedsExit, Result

MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_TYPE = 0x0F
MAP_ANONYMOUS = 0x20
PROT_WRITE = 0x2
PAGE = 4096
MAX_MAP = 1 << 30


def sys_mmap(h, tid, regs) -> Result:
    flags = _int32(regs.r10)
    if flags & MAP_ANONYMOUS:
        return PASS
    of = h.fd(tid, _int32(regs.r8))
    if of is None:
        return PASS
    length, prot, offset = regs.rsi, _int32(regs.rdx), _signed(regs.r9)
    if offset < 0 or offset % PAGE or length == 0:
        return Fail(errno.EINVAL)
    if not of.readable:
        return Fail(errno.EACCES)                  # do_mmap(): every mapping needs FMODE_READ
    if length > MAX_MAP:
        return Fail(errno.ENOMEM)
    shared = flags & MAP_TYPE in (MAP_SHARED, MAP_SHARED_VALIDATE)
    if shared and prot & PROT_WRITE:
        return Fail(errno.ENODEV)
    saved = regs.copy()
    new = regs.copy()
    new.r10 = (flags & ~MAP_TYPE) | MAP_PRIVATE | MAP_ANONYMOUS
    new.r8 = (1 << 64) - 1                          # fd -1
    new.r9 = 0

    def on_exit(exit_regs) -> None:
        addr = exit_regs.rax
        for name in ("r8", "r9", "r10"):
            setattr(exit_regs, name, getattr(saved, name))
        if _signed(addr) < 0 and _signed(addr) > -4096:
            return                                  # the mapping itself failed: errno stands
        size = of.unit.size
        done, end = 0, min(length, max(size - offset, 0))
        while done < end:
            step = min(end - done, pagecache.CHUNK)
            h.mem.write(tid, addr + done, pagecache.read(of.unit.device, offset + done, step))
            done += step

    return NeedsExit(new, on_exit)


def sys_io_setup(h, tid, regs) -> Result:
    return Fail(errno.ENOSYS)


sys_io_uring_setup = sys_io_setup
