"""lseek on a ubd descriptor.

From: block/fops.c blkdev_llseek() -> fs/read_write.c fixed_size_llseek() [6.1]: the limit
and the end are both the device size, so seeking past the end is EINVAL (unlike a regular
file). SEEK_DATA and SEEK_HOLE give EINVAL on a ubd disk: observed with linux.uml 6.1
(issue 5 listed them among the supported whences; the oracle says otherwise).
"""
from __future__ import annotations

import errno

from .files import _int32, _signed
from .result import PASS, Emulated, Fail, Result

SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2


def sys_lseek(h, tid, regs) -> Result:
    of = h.fd(tid, _int32(regs.rdi))
    if of is None:
        return PASS
    offset, whence, size = _signed(regs.rsi), _int32(regs.rdx), of.unit.size
    if whence == SEEK_SET:
        pos = offset
    elif whence == SEEK_CUR:
        if offset == 0:
            return Emulated(of.offset)
        pos = of.offset + offset
    elif whence == SEEK_END:
        pos = size + offset
    else:
        return Fail(errno.EINVAL)
    if pos < 0 or pos > size:                 # vfs_setpos(): maxsize is the device size
        return Fail(errno.EINVAL)
    of.offset = pos
    return Emulated(pos)
