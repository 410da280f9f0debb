"""File names as ubdsim shows them to people: the bytes the user typed, escaped as `ls -b` does.

A path reaches ubdsim as bytes (argv, a COW header's backing field). Python turns bytes that
are not UTF-8 into lone surrogates, which print as `\\udcfe`, and a bytes path formatted into
a message prints as `b'...'`. Neither is what the user typed. `shown()` gives back the bytes
as text: printable UTF-8 as is, everything else in GNU ls's `-b` (escape) style, so a name
in an error line can be matched with what `ls -b` lists.
"""
from __future__ import annotations

import os

# GNU ls quoting_style "escape" (gnulib quotearg.c): C escapes, then octal for the rest.
_C_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t",
              0x0B: "\\v", 0x5C: "\\\\", 0x20: "\\ "}


def shown(path: str | bytes | os.PathLike) -> str:
    """`path` as `ls -b` would list it (printable UTF-8 kept, other bytes as \\ooo)."""
    raw = os.fsencode(path)
    text = raw.decode("utf-8", "surrogateescape")
    out: list[str] = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:            # a byte that was not UTF-8
            out.append(f"\\{code - 0xDC00:03o}")
        elif code < 0x80 and code in _C_ESCAPES:
            out.append(_C_ESCAPES[code])
        elif char.isprintable():
            out.append(char)
        else:
            out.extend(f"\\{byte:03o}" for byte in char.encode("utf-8"))
    return "".join(out)


__all__ = ["shown"]
