"""The seccomp filter, generated from the syscall table (strace filter_seccomp.c idea).

The filter decides only "stop in the tracer" or "run natively"; every decision about what a
call means is taken in Python. The program, one comment per instruction:

    0  ld  [arch]                      seccomp_data.arch
    1  jeq AUDIT_ARCH_X86_64 ? 2 : ALLOW   other ABIs (i386 via int 0x80) are not intercepted
    2  ld  [nr]                        seccomp_data.nr
    3  jge X32_SYSCALL_BIT ? ALLOW : 4  the x32 ABI numbers are different calls
    4+ jeq <nr_i> ? TRACE : next       one test per intercepted call, ascending numbers
    n  ret ALLOW                       everything else runs with no stop at all
    n+1 ret TRACE                      PTRACE_EVENT_SECCOMP stop in the tracer

A linear list is fine: about 50 compares in the kernel per call costs nanoseconds, while
each stop costs ~10 us.
"""
from __future__ import annotations

import ctypes
import struct
from typing import Iterable

from ..syscalls.numbers import X32_SYSCALL_BIT

# include/uapi/linux/filter.h, bpf_common.h
BPF_LD, BPF_JMP, BPF_RET = 0x00, 0x05, 0x06
BPF_W, BPF_ABS, BPF_K = 0x00, 0x20, 0x00
BPF_JEQ, BPF_JGE = 0x10, 0x30
# include/uapi/linux/seccomp.h, audit.h
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# The planting call (see build_plant_filter): a number no x86_64 kernel assigns, and a magic
# sixth argument, so no guest call can ever block on the listener by accident.
NR_PLANT = 0x3F00
PLANT_MAGIC = 0x75626466                   # "ubdf"
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_SET_MODE_FILTER = 1
PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317
# struct seccomp_data offsets
_OFF_NR, _OFF_ARCH = 0, 4
_OFF_ARG5_LO = 16 + 8 * 5


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    """struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}."""
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter(numbers: Iterable[int]) -> bytes:
    """The BPF program (raw struct sock_filter array) that traces exactly `numbers`."""
    nrs = sorted(set(numbers))
    if len(nrs) > 250:
        raise ValueError("too many intercepted calls for 8-bit BPF jump offsets")
    k = len(nrs)
    # Instruction indexes: tests start at 4, ALLOW at 4+k, TRACE at 5+k.
    allow_from = lambda i: (4 + k) - i - 1          # noqa: E731 - relative jump target
    prog = [
        _insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, _OFF_ARCH),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 0, allow_from(1), AUDIT_ARCH_X86_64),
        _insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, _OFF_NR),
        _insn(BPF_JMP | BPF_JGE | BPF_K, allow_from(3), 0, X32_SYSCALL_BIT),
    ]
    for j, nr in enumerate(nrs):
        index = 4 + j
        prog.append(_insn(BPF_JMP | BPF_JEQ | BPF_K, (5 + k) - index - 1, 0, nr))
    prog.append(_insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(_insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_TRACE))
    return b"".join(prog)


def build_plant_filter() -> bytes:
    """The second filter: SECCOMP_RET_USER_NOTIF for NR_PLANT with PLANT_MAGIC as its sixth
    argument, ALLOW for everything else. The tracer rewrites a guest call into it at a
    seccomp stop (the kernel re-runs the filters for the new number), then answers the
    notification after SECCOMP_IOCTL_NOTIF_ADDFD planted one of its descriptors in the
    guest at a chosen number: the only way to give another process a descriptor at a
    number of our choosing in one call (rw.py's fast path)."""
    return b"".join([
        _insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, _OFF_ARCH),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, AUDIT_ARCH_X86_64),
        _insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, _OFF_NR),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, NR_PLANT),
        _insn(BPF_LD | BPF_W | BPF_ABS, 0, 0, _OFF_ARG5_LO),
        _insn(BPF_JMP | BPF_JEQ | BPF_K, 1, 0, PLANT_MAGIC),
        _insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_ALLOW),
        _insn(BPF_RET | BPF_K, 0, 0, SECCOMP_RET_USER_NOTIF),
    ])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class FilterInstaller:
    """Prepared in the parent, installed in the forked child just before execve.

    Everything that allocates is done here, so the child only makes two system calls
    (prctl, seccomp) between fork and exec.
    """

    def __init__(self, program: bytes, plant: bytes | None = None) -> None:
        self._keep = []
        self._prog_addr = self._prepare(program)
        self._plant_addr = self._prepare(plant) if plant else None
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def _prepare(self, program: bytes) -> int:
        buf = ctypes.create_string_buffer(program, len(program))
        prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
        self._keep += [buf, prog]
        return ctypes.addressof(prog)

    def _seccomp(self, flags: int, addr: int) -> int:
        return self._libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                                  ctypes.c_long(flags), ctypes.c_void_p(addr))

    def install(self) -> int:
        """0 on success, -1 on failure (the child reports it and exits). The planting filter
        is optional: where the kernel refuses it, the guest runs without the fast path."""
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return -1
        if self._plant_addr is not None:
            self._seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER, self._plant_addr)
        return self._seccomp(0, self._prog_addr)
