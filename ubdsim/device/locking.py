"""Host file locks as the 6.1 driver takes them (2.4 takes none).

From: `arch/um/os-Linux/file.c` os_lock_file() and `ubd_kern.c` open_ubd_file() [6.1]: a
whole-file fcntl(F_SETLK), F_WRLCK for a writable open and F_RDLCK for a read-only one, on
the COW file, the backing file and a COW file being created. On failure the kernel asks
F_GETLK who holds it and prints that pid. These are POSIX record locks: they belong to the
process, so two Units of one ubdsim process never conflict with each other (exactly like
one linux.uml opening the same file twice), and closing ANY fd of the file drops them.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct

from ..errors import LockedError

# struct flock on x86_64: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
_FLOCK = "hhqqi"


def holder_pid(fd: int, writable: bool) -> int:
    """F_GETLK: the pid of a process whose lock conflicts with ours (0 if none)."""
    kind = fcntl.F_WRLCK if writable else fcntl.F_RDLCK
    query = struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    return struct.unpack(_FLOCK, answer)[4]


def lock_file(fd: int, path: str, writable: bool, printed: list[tuple[str, tuple]]) -> None:
    """os_lock_file() + open_ubd_file()'s message; raises LockedError (errno EAGAIN) on failure.

    `printed` receives (msg_id, args) pairs in the kernel's print order.
    """
    kind = fcntl.F_WRLCK if writable else fcntl.F_RDLCK
    try:
        fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0))
        return
    except OSError as err:
        saved = err.errno
    try:
        pid = holder_pid(fd, writable)
    except OSError as err:
        # os_lock_file(): a failing F_GETLK returns its own errno, with no pid message.
        saved = err.errno
    else:
        printed.append(("device.already_locked", (pid,)))
    printed.append(("device.lock_failed", (path, saved)))
    raise LockedError(f"'{path}' is locked by another process (err = {saved})",
                      errno=saved or errno.EAGAIN, msg_id="device.lock_failed", args=(path, saved))
