"""x86_64 system call numbers <-> names, taken from python-ptrace's table.

From: python-ptrace `ptrace/syscall/linux/x86_64.py` (generated from the kernel's
`arch/x86/entry/syscalls/syscall_64.tbl`). Only the native 64-bit ABI is kept: numbers of
the x32 ABI (bit 30 set, 512+) are different calls and are never intercepted.
"""
from __future__ import annotations

from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES as _PTRACE_NAMES

X32_SYSCALL_BIT = 0x40000000

NAME_BY_NUMBER: dict[int, str] = {nr: name for nr, name in _PTRACE_NAMES.items() if nr < 512}
NUMBER_BY_NAME: dict[str, int] = {name: nr for nr, name in NAME_BY_NUMBER.items()}


def number(name: str) -> int:
    """The native x86_64 number of system call `name` (KeyError when unknown)."""
    return NUMBER_BY_NAME[name]
