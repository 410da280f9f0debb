"""Every intercepted system call: name -> who answers it, and how well.

The seccomp filter (transport/bpf.py), the dispatcher (session.py), the documentation and
the table-consistency tests all read this one table (strace syscallent.h; gVisor's
Supported/Partial/Error syscall docs). A call that is not listed here is never stopped.

`support`: "full" (a block device's behaviour), "partial" (works, with the difference in
`note`), "refused" (answers the error a device without the feature gives).
`needs_exit`: the handler may rewrite the call and need its syscall-exit stop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import fdops, files, ioctl_blk, memaio, rw, seek
from .numbers import number
from .result import Result


@dataclass(frozen=True)
class Entry:
    name: str
    handler: Callable[..., Result]
    needs_exit: bool
    support: str
    note: str


def _e(name: str, handler, support: str = "full", note: str = "", needs_exit: bool = False):
    return name, Entry(name, handler, needs_exit, support, note)


SYSCALLS: dict[str, Entry] = dict([
    # files: paths naming a ubd node
    _e("open", files.sys_open, needs_exit=True, note="rewritten into memfd_create"),
    _e("openat", files.sys_openat, needs_exit=True, note="rewritten into memfd_create"),
    _e("openat2", files.sys_openat2, "partial", "RESOLVE_* flags are not checked",
       needs_exit=True),
    _e("creat", files.sys_creat, needs_exit=True, note="O_CREAT|O_WRONLY|O_TRUNC: the node exists"),
    _e("stat", files.sys_stat),
    _e("lstat", files.sys_lstat),
    _e("newfstatat", files.sys_newfstatat),
    _e("statx", files.sys_statx, "partial", "basic stats only; no STATX_DIOALIGN"),
    _e("fstat", files.sys_fstat),
    _e("access", files.sys_access),
    _e("faccessat", files.sys_faccessat),
    _e("faccessat2", files.sys_faccessat2),
    _e("statfs", files.sys_statfs, note="answered for the host's /dev"),
    _e("getxattr", files.sys_getxattr, note="ENODATA: the node has no attributes"),
    _e("lgetxattr", files.sys_lgetxattr, note="ENODATA: the node has no attributes"),
    _e("listxattr", files.sys_listxattr),
    _e("llistxattr", files.sys_llistxattr),
    # rw: data transfer
    _e("read", rw.sys_read),
    _e("write", rw.sys_write),
    _e("pread64", rw.sys_pread64),
    _e("pwrite64", rw.sys_pwrite64),
    _e("readv", rw.sys_readv),
    _e("writev", rw.sys_writev),
    _e("preadv", rw.sys_preadv),
    _e("pwritev", rw.sys_pwritev),
    _e("preadv2", rw.sys_preadv2, "partial", "RWF_* flags are ignored"),
    _e("pwritev2", rw.sys_pwritev2, "partial", "RWF_* flags are ignored"),
    # seek
    _e("lseek", seek.sys_lseek),
    # fdops
    _e("fsync", fdops.sys_fsync),
    _e("fdatasync", fdops.sys_fdatasync),
    _e("sync_file_range", fdops.sys_sync_file_range),
    _e("sync", fdops.sys_sync, note="writes back every unit's dirty pages, then the host's sync"),
    _e("fallocate", fdops.sys_fallocate),
    _e("fadvise64", fdops.sys_fadvise64),
    _e("readahead", fdops.sys_readahead),
    _e("fcntl", fdops.sys_fcntl, note="F_GETFL/F_SETFL emulated, the rest by the memfd"),
    _e("ftruncate", fdops.sys_ftruncate),
    _e("copy_file_range", fdops.sys_copy_file_range),
    _e("sendfile", fdops.sys_sendfile, "refused", "EINVAL; callers fall back to read/write"),
    _e("splice", fdops.sys_splice, "refused", "EINVAL; callers fall back to read/write"),
    # ioctl_blk
    _e("ioctl", ioctl_blk.sys_ioctl),
    # memaio
    _e("mmap", memaio.sys_mmap, "partial", "private copy filled at map time; writable "
       "MAP_SHARED gets ENODEV", needs_exit=True),
    _e("io_setup", memaio.sys_io_setup, "refused", "ENOSYS for every guest process"),
    _e("io_uring_setup", memaio.sys_io_uring_setup, "refused", "ENOSYS for every guest process"),
])

BY_NUMBER: dict[int, Entry] = {number(name): entry for name, entry in SYSCALLS.items()}


# The calls whose first argument is a descriptor and whose handler answers PASS at once when
# it is no ubd descriptor (h.fd() is None): the tracer's C loop (transport/native_wait.py)
# resumes those stops without asking Python. tests/harness/test_native_wait.py holds every
# handler here to that.
FD_FIRST = frozenset({
    "read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev",
    "preadv2", "pwritev2", "lseek", "fstat", "fsync", "fdatasync", "sync_file_range",
    "fadvise64", "readahead", "fallocate", "fcntl", "ftruncate", "ioctl"})
FD_FIRST_NUMBERS = frozenset(number(name) for name in FD_FIRST)
# The calls the C loop's lane may serve on the open file rw.py armed it for (a small
# O_DIRECT read or write, native/stopwait.c): name -> (writing, positioned).
LANE_CALLS = {"read": (False, False), "write": (True, False),
              "pread64": (False, True), "pwrite64": (True, True)}
LANE_NUMBERS = {number(name): kind for name, kind in LANE_CALLS.items()}


def traced_numbers() -> list[int]:
    """What the seccomp filter stops on: exactly the table."""
    return sorted(BY_NUMBER)
