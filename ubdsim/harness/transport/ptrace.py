"""The few ptrace(2) requests the tracer needs, through ctypes, x86_64 only.

python-ptrace's binding would do, but its `ptrace()` wrapper converts every call into
Python objects and raises its own exception type; the event loop calls these on every stop,
so a direct ctypes binding with `OSError` keeps the hot path short and the errors in the one
exception family the CLI already reports.
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_ptrace = _libc.ptrace
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_ptrace.restype = ctypes.c_long

# include/uapi/linux/ptrace.h
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET = 0x4204

NT_X86_XSTATE = 0x202       # include/uapi/linux/elf.h: the XSAVE area, for kernel_ref/xstate.py

PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_SECCOMP = 7

# Follow every descendant: a process carrying a RET_TRACE filter without a tracer gets ENOSYS
# for the filtered calls; EXITKILL makes the kernel kill the guest if ubdsim itself dies.
TRACE_OPTIONS = (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK
                 | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_TRACESECCOMP
                 | PTRACE_O_EXITKILL)


class Regs(ctypes.Structure):
    """struct user_regs_struct (arch/x86/include/asm/user_64.h)."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs")]

    def args(self) -> tuple[int, int, int, int, int, int]:
        """The six system call arguments, x86_64 calling convention."""
        return (self.rdi, self.rsi, self.rdx, self.r10, self.r8, self.r9)

    def copy(self) -> "Regs":
        new = Regs()
        ctypes.pointer(new)[0] = self
        return new


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _check(result: int) -> int:
    if result == -1:
        err = ctypes.get_errno()
        if err:
            raise OSError(err, os.strerror(err))
    return result


def traceme() -> int:
    """Called in the child before exec; returns -1 instead of raising (no Python errors there)."""
    return _ptrace(PTRACE_TRACEME, 0, None, None)


def set_options(tid: int, options: int = TRACE_OPTIONS) -> None:
    _check(_ptrace(PTRACE_SETOPTIONS, tid, None, options))


def cont(tid: int, sig: int = 0) -> None:
    _check(_ptrace(PTRACE_CONT, tid, None, sig))


def syscall(tid: int, sig: int = 0) -> None:
    """Resume until the next syscall stop (here: the exit of a rewritten call)."""
    _check(_ptrace(PTRACE_SYSCALL, tid, None, sig))


def get_regs(tid: int, regs: Regs | None = None) -> Regs:
    regs = Regs() if regs is None else regs
    _check(_ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(regs)))
    return regs


def set_regs(tid: int, regs: Regs) -> None:
    _check(_ptrace(PTRACE_SETREGS, tid, None, ctypes.addressof(regs)))


def event_msg(tid: int) -> int:
    value = ctypes.c_ulong()
    _check(_ptrace(PTRACE_GETEVENTMSG, tid, None, ctypes.addressof(value)))
    return value.value


def get_regset(tid: int, note: int, size: int) -> bytes:
    """PTRACE_GETREGSET of regset `note` into `size` bytes: the bytes the kernel filled, so a
    larger buffer tells the regset's own size."""
    buffer = ctypes.create_string_buffer(size)
    iov = _Iovec(ctypes.addressof(buffer), size)
    _check(_ptrace(PTRACE_GETREGSET, tid, note, ctypes.addressof(iov)))
    return buffer.raw[:iov.len]
