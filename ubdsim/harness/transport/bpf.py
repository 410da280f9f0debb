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
AUDIT_ARCH_X86_64 = 0xC000003E
SECCOMP_SET_MODE_FILTER = 1
PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317
# struct seccomp_data offsets
_OFF_NR, _OFF_ARCH = 0, 4


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


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class FilterInstaller:
    """Prepared in the parent, installed in the forked child just before execve.

    Everything that allocates is done here, so the child only makes two system calls
    (prctl, seccomp) between fork and exec.
    """

    def __init__(self, program: bytes) -> None:
        self._buf = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.addressof(self._buf))
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self._prog_addr = ctypes.addressof(self._prog)

    def install(self) -> int:
        """0 on success, -1 on failure (the child reports it and exits)."""
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return -1
        return self._libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SECCOMP_SET_MODE_FILTER),
                                  ctypes.c_long(0), ctypes.c_void_p(self._prog_addr))
