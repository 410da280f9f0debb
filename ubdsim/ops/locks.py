"""Refusing files another process holds fcntl-locked, as a running UML kernel does.

ubd_kern.c open_ubd_file() [6.1] takes a whole-file fcntl(F_SETLK) lock on every file it
opens: F_WRLCK when writable, F_RDLCK when read-only (os_lock_file() in os-Linux/file.c).
A tool that merges a COW file under a running kernel would copy a bitmap and data that are
changing; one that writes into a backing file a kernel is reading corrupts the guest. So the
tools take a lock of their own (shared to read, exclusive to write) and, when that fails, ask
F_GETLK who holds it to name the pid, like the kernel's `F_SETLK failed, file already locked
by pid %d`.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import os
import struct

from ..errors import LockedError

# struct flock on Linux x86-64: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (+4 bytes of tail padding).
_FLOCK = "hhqqi4x"


def holder_pid(fd: int, exclusive: bool) -> int | None:
    """The pid holding a lock that conflicts with the one we want, or None (F_GETLK)."""
    want = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, want, os.SEEK_SET, 0, 0, 0))
    l_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
    return None if l_type == fcntl.F_UNLCK else pid


def lock_file(fd: int, path: str, exclusive: bool) -> None:
    """Take a whole-file F_SETLK lock (kept until `fd` is closed) or raise LockedError."""
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
    except OSError as err:
        if err.errno not in (_errno.EAGAIN, _errno.EACCES):
            raise
        pid = holder_pid(fd, exclusive)
        who = f"process {pid}" if pid else "another process"
        raise LockedError(f"'{path}' is locked by {who} (a running UML kernel?): "
                          "refusing to touch it", errno=err.errno, args=(pid,)) from None


def refuse_if_locked(path: str | bytes, shown_path: str) -> None:
    """Refuse a file another process holds any fcntl lock on (before replacing it).

    A running 6.1 guest holds its COW file F_WRLCK; replacing that file by rename leaves the
    guest writing into the unlinked old inode, and everything it writes is lost.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        pid = holder_pid(fd, exclusive=True)
    finally:
        os.close(fd)
    if pid is not None:
        raise LockedError(f"'{shown_path}' is locked by process {pid} (a running UML kernel?): "
                          "refusing to replace it", errno=_errno.EAGAIN, args=(pid,))
