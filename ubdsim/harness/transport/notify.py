"""The planting filter's listener: SECCOMP_IOCTL_NOTIF_* through ctypes (x86_64).

The guest's first process installs the planting filter (bpf.build_plant_filter) with
SECCOMP_FILTER_FLAG_NEW_LISTENER before it stops for the tracer; the tracer copies the
listener from it with pidfd_getfd() while it is stopped (the child's copy is close-on-exec,
so the guest never sees it). Planting a descriptor: the handler rewrites a stopped call into
the planting call, the tracer resumes it (PTRACE_SYSCALL) and, here, receives its
notification, installs its own descriptor in the guest with SECCOMP_IOCTL_NOTIF_ADDFD at a
chosen number (SECCOMP_ADDFD_FLAG_SETFD, O_CLOEXEC) and answers 0; the handler's exit
callback then makes the guest run its original call again (include/uapi/linux/seccomp.h).
"""
from __future__ import annotations

import ctypes
import os
import select
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_ioctl = _libc.ioctl
_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_ioctl.restype = ctypes.c_int

SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438
# _IOWR('!', 0, struct seccomp_notif) etc.
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ADDFD = 0x40182103
ADDFD_FLAG_SETFD = 1
NOTIF_SIZE = 80                        # struct seccomp_notif: id, pid, flags, seccomp_data
WAIT_SECONDS = 5.0                     # the guest reaches the notification at once


class Listener:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.planted = 0

    @classmethod
    def take(cls, pid: int) -> "Listener | None":
        """The listener `pid` holds (its only "seccomp notify" descriptor), copied into
        ubdsim; None where the kernel gave none (no fast path then)."""
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return None
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") != "anon_inode:seccomp notify":
                    continue
            except OSError:
                continue
            pidfd = _libc.syscall(ctypes.c_long(SYS_PIDFD_OPEN), ctypes.c_long(pid),
                                  ctypes.c_long(0))
            if pidfd < 0:
                return None
            try:
                fd = _libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd),
                                   ctypes.c_long(int(name)), ctypes.c_long(0))
            finally:
                os.close(pidfd)
            return cls(fd) if fd >= 0 else None
        return None

    def plant(self, tid: int, srcfd: int, target: int) -> bool:
        """Serve the planting call `tid` was just resumed into: `srcfd` becomes its
        descriptor `target`. False if it did not arrive or the kernel refused (the call
        then still returns, and the handler's exit callback runs as always)."""
        ready, _, _ = select.select([self.fd], [], [], WAIT_SECONDS)
        if not ready:
            return False
        notif = ctypes.create_string_buffer(NOTIF_SIZE)
        if _ioctl(self.fd, NOTIF_RECV, notif) != 0:
            return False
        ident, pid = struct.unpack_from("<QI", notif.raw)
        ok = False
        if pid == tid:
            addfd = ctypes.create_string_buffer(
                struct.pack("<QIIII", ident, ADDFD_FLAG_SETFD, srcfd, target, os.O_CLOEXEC))
            ok = _ioctl(self.fd, NOTIF_ADDFD, addfd) == target
        resp = ctypes.create_string_buffer(struct.pack("<QqiI", ident, 0, 0, 0))
        _ioctl(self.fd, NOTIF_SEND, resp)
        self.planted += ok
        return ok

    def close(self) -> None:
        os.close(self.fd)
