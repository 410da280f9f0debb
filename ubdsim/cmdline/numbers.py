"""The kernel's own number parsers, reproduced with their overflow and prefix quirks.

Unit numbers (`ubd010=` is unit 8), the 2.4 fake major and the [resize] size are all read
with these, so `08` stops after the `0` and `0x` without a hex digit is octal zero.
"""
from __future__ import annotations

_ULLONG_MASK = (1 << 64) - 1
_HEX = b"0123456789abcdefABCDEF"


def simple_strtoull(data: bytes, pos: int = 0) -> tuple[int, int]:
    """lib/vsprintf.c simple_strtoull(cp, &end, 0) + lib/kstrtox.c
    _parse_integer_fixup_radix()/_parse_integer_limit() [6.1]: (value mod 2**64, end index).
    Base 0: `0x`/`0X` followed by a hex digit is hex, another leading `0` is octal."""
    base = 10
    if data[pos:pos + 1] == b"0":
        if data[pos + 1:pos + 2] in (b"x", b"X") and data[pos + 2:pos + 3] and data[pos + 2] in _HEX:
            base = 16
            pos += 2
        else:
            base = 8
    value = 0
    while pos < len(data):
        ch = data[pos]
        if 0x30 <= ch <= 0x39:
            digit = ch - 0x30
        elif 0x61 <= (ch | 0x20) <= 0x66:
            digit = (ch | 0x20) - 0x61 + 10
        else:
            break
        if digit >= base:
            break
        value = (value * base + digit) & _ULLONG_MASK
        pos += 1
    return value, pos


def as_c_int(value: int) -> int:
    """The low 32 bits read as a signed C int (`int n = simple_strtoul(...)`): whatever the
    width of unsigned long (32-bit 2.4 i386, 64-bit UML), only these bits survive."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def memparse(data: bytes, suffixes: str = "kmg") -> tuple[int, int]:
    """lib/cmdline.c memparse(): a base-0 number, then one optional size suffix, each step of
    `suffixes` (smallest first) multiplying by 1024. Returns (value mod 2**64, end index)."""
    value, end = simple_strtoull(data)
    if end < len(data):
        step = suffixes.find(chr(data[end]).lower())
        if step >= 0:
            value = (value << (10 * (step + 1))) & _ULLONG_MASK
            end += 1
    return value, end
