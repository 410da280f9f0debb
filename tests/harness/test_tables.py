"""The syscall table is the single source of truth: the seccomp filter traps exactly its
calls (checked by running the generated BPF program over every number), every entry has a
handler and a real x86_64 number, and the rewrite target of open is not itself trapped."""
from __future__ import annotations

import struct

import pytest

from ubdsim.harness.syscalls import numbers
from ubdsim.harness.syscalls.table import SYSCALLS, traced_numbers
from ubdsim.harness.transport.bpf import (AUDIT_ARCH_X86_64, SECCOMP_RET_ALLOW,
                                          SECCOMP_RET_TRACE, build_filter)


def run_bpf(program: bytes, nr: int, arch: int) -> int:
    """A classic-BPF interpreter for the instructions seccomp filters use here."""
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    data = struct.pack("<iI", nr, arch) + bytes(56)   # struct seccomp_data
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        if cls == 0x00:                                # BPF_LD | BPF_W | BPF_ABS
            assert code == 0x20
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif cls == 0x05:                              # BPF_JMP | BPF_K
            op = code & 0xF0
            taken = acc == k if op == 0x10 else acc >= k if op == 0x30 else None
            assert taken is not None, hex(code)
            pc += 1 + (jt if taken else jf)
        elif cls == 0x06:                              # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")


def test_filter_traps_exactly_the_table():
    program = build_filter(traced_numbers())
    wanted = set(traced_numbers())
    for nr in range(0, 512):
        verdict = run_bpf(program, nr, AUDIT_ARCH_X86_64)
        assert verdict == (SECCOMP_RET_TRACE if nr in wanted else SECCOMP_RET_ALLOW), nr


def test_filter_ignores_other_abis():
    program = build_filter(traced_numbers())
    read = numbers.number("read")
    assert run_bpf(program, read | numbers.X32_SYSCALL_BIT, AUDIT_ARCH_X86_64) == SECCOMP_RET_ALLOW
    assert run_bpf(program, read, 0x40000003) == SECCOMP_RET_ALLOW       # AUDIT_ARCH_I386


@pytest.mark.parametrize("name", sorted(SYSCALLS))
def test_entry_is_complete(name):
    entry = SYSCALLS[name]
    assert entry.name == name and callable(entry.handler)
    assert entry.support in ("full", "partial", "refused")
    assert entry.support == "full" or entry.note
    assert numbers.NUMBER_BY_NAME[name] < 512


def test_rewrite_target_is_not_trapped():
    assert numbers.number("memfd_create") not in traced_numbers()
    assert {name for name, e in SYSCALLS.items() if e.needs_exit} == {
        "open", "openat", "openat2", "creat", "mmap"}
