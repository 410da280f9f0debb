"""Byte layouts of the four COW headers: the only module that knows byte offsets.

From: `arch/um/drivers/cow_user.c` struct cow_header_v1/_v2/_v3/_v3_broken [6.1].
Each layout is a struct format plus field names; `header.py` packs and unpacks with them.

Changes from version to version (cow_user.c's own account):
- V1: host byte order (little-endian on x86), 256-byte backing path, packed.
- V2: big-endian, backing path widened to 4096 bytes (PATH_LEN_V2), packed.
- V3: fields sized explicitly, an alignment field for bitmap and data, a cow_format field
  (0 = bitmap), backing path moved to the end; fixes the V1/V2 bitmap rounding bug.
- V3 "broken 64-bit": the V3 struct before Dec 2005 lacked `packed`, so 64-bit builds put
  4 bytes of padding after a 64-bit mtime; every later field shifts by 4 (cow_format lands on
  the first 4 bytes of where a packed V3 keeps backing_file) and the struct ends padded to 4136.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

COW_MAGIC = 0x4F4F4F4D          # "MOOO" read as a host-order (little-endian) u32
MAGIC_AND_VERSION = 8           # offsetof(cow_header_v1, backing_file): the short-header threshold
PATH_LEN_V1 = 256
PATH_LEN_V3 = 4096              # = PATH_LEN_V2


@dataclass(frozen=True)
class HeaderLayout:
    """One header struct: a `struct` format (byte order included) and its field names."""

    name: str
    version: int
    fmt: str
    fields: tuple[str, ...]
    path_len: int

    @property
    def value_fields(self) -> tuple[str, ...]:
        """Fields that struct.unpack returns values for (padding `_x` fields have none)."""
        return tuple(name for name in self.fields if not name.startswith("_"))

    @property
    def size(self) -> int:
        """sizeof() the struct: the default bitmap offset and the bytes a reader must get."""
        return struct.calcsize(self.fmt)

    def offset_of(self, field: str) -> int:
        """Byte offset of a field, computed from the format (used by info and diff output)."""
        offset = 0
        for name, code in zip(self.fields, _codes(self.fmt)):
            if name == field:
                return offset
            offset += struct.calcsize(self.fmt[0] + code)
        raise KeyError(field)

    def field_spans(self) -> list[tuple[str, int, int]]:
        """(field, start, end) for every named field, padding excluded."""
        spans = []
        for name, code in zip(self.fields, _codes(self.fmt)):
            if not name.startswith("_"):
                start = self.offset_of(name)
                spans.append((name, start, start + struct.calcsize(self.fmt[0] + code)))
        return spans


def _codes(fmt: str) -> list[str]:
    """Split a struct format into per-field codes ("4096s" stays one code)."""
    codes, count = [], ""
    for ch in fmt[1:]:
        if ch.isdigit():
            count += ch
        else:
            codes.append(count + ch)
            count = ""
    return codes


V1 = HeaderLayout(
    name="V1", version=1, fmt="<ii256sIQi",
    fields=("magic", "version", "backing_file", "mtime", "size", "sectorsize"),
    path_len=PATH_LEN_V1)

V2 = HeaderLayout(
    name="V2", version=2, fmt=">II4096sIQi",
    fields=("magic", "version", "backing_file", "mtime", "size", "sectorsize"),
    path_len=PATH_LEN_V3)

V3 = HeaderLayout(
    name="V3", version=3, fmt=">IIIQIII4096s",
    fields=("magic", "version", "mtime", "size", "sectorsize", "alignment", "cow_format",
            "backing_file"),
    path_len=PATH_LEN_V3)

# The 8-byte mtime slot is read with be32toh() of the s64 (cow_user.c, "bug-to-bug
# compatibility"): on a little-endian host that is the big-endian u32 in its first 4 bytes.
# The last 4 bytes are the struct's tail padding.
V3_BROKEN = HeaderLayout(
    name="V3-broken", version=3, fmt=">III4xQIII4096s4x",
    fields=("magic", "version", "mtime", "_mtime_high", "size", "sectorsize", "alignment",
            "cow_format", "backing_file", "_tail"),
    path_len=PATH_LEN_V3)

LAYOUTS: dict[str, HeaderLayout] = {layout.name: layout for layout in (V1, V2, V3, V3_BROKEN)}

# The reader fetches sizeof(union cow_header) bytes at once (cow_user.c read_cow_header()).
HEADER_READ_SIZE = max(layout.size for layout in LAYOUTS.values())
