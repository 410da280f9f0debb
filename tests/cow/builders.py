"""Test-side COW file builders and oracle runners, written from the spec's byte tables.

Nothing here imports ubdsim: headers are packed with struct straight from
shared/spec/ubd-behaviour.md section 3, so a bug in ubdsim's layouts cannot hide itself.
uml_mkcow and uml_moo are run during the test, never replayed from recorded output.
"""
from __future__ import annotations

import os
import struct
import subprocess

from ubdsim.fileio import data_extents

MAGIC = 0x4F4F4F4D
SS = 512


def round_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def spec_geometry(version: int, size: int, ss: int = SS, align: int = 4096, broken: bool = False):
    """(header_size, bitmap_offset, bitmap_len, data_offset) per spec section 3."""
    if version == 1:
        header_size, bitmap_offset = 280, 280
    elif version == 2:
        header_size, bitmap_offset = 4120, 4120
    else:
        header_size = 4136 if broken else 4128
        bitmap_offset = round_up(header_size, align)
    if version < 3:
        bitmap_len = (size + ss - 1) // (8 * ss)
        data_offset = round_up(bitmap_offset + bitmap_len, ss)
    else:
        bitmap_len = -(-(-(-size // ss)) // 8)
        data_offset = round_up(bitmap_offset + bitmap_len, align)
    return header_size, bitmap_offset, bitmap_len, data_offset


def pack_spec_header(version: int, backing: bytes, mtime: int, size: int, ss: int = SS,
                     align: int = 4096, broken: bool = False, cow_format: int = 0) -> bytes:
    if version == 1:
        return struct.pack("<II256sIQi", MAGIC, 1, backing, mtime, size, ss)
    if version == 2:
        return struct.pack(">II4096sIQi", MAGIC, 2, backing, mtime, size, ss)
    if broken:
        # mtime in an 8-byte slot whose first 4 bytes hold the big-endian u32
        return struct.pack(">IIIIQIII4096sI", MAGIC, 3, mtime, 0, size, ss, align, cow_format,
                           backing, 0)
    return struct.pack(">IIIQIII4096s", MAGIC, 3, mtime, size, ss, align, cow_format, backing)


def build_cow(path: str, version: int, backing: str, marks: dict[int, bytes] | None = None, *,
              broken: bool = False, align: int = 4096, size: int | None = None,
              mtime: int | None = None, extra_bits: dict[int, int] | None = None) -> tuple:
    """Write a COW file over `backing` with sectors `marks` (sector -> data) marked.

    `extra_bits` pokes raw bytes (file offset -> value) after the bitmap is written (bits in
    the slack after a V1/V2 bitmap, bits past the last sector). Returns spec_geometry().
    """
    st = os.stat(backing)
    size = st.st_size if size is None else size
    mtime = int(st.st_mtime) if mtime is None else mtime
    geo = spec_geometry(version, size, align=align, broken=broken)
    _, bitmap_offset, bitmap_len, data_offset = geo
    bitmap = bytearray(bitmap_len)
    with open(path, "wb") as f:
        f.write(pack_spec_header(version, os.fsencode(os.path.abspath(backing)), mtime, size,
                                 align=align, broken=broken))
        for sector, data in (marks or {}).items():
            if sector // 8 < bitmap_len:
                bitmap[sector // 8] |= 1 << (sector % 8)
            f.seek(data_offset + sector * SS)
            f.write(data)
        f.seek(bitmap_offset)
        f.write(bitmap)
        for offset, value in (extra_bits or {}).items():
            f.seek(offset)
            f.write(bytes([value]))
        f.truncate(max(f.seek(0, 2), data_offset + size))
    return geo


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def extent_map(path: str) -> list[tuple[int, int]]:
    """The file's data extents (SEEK_DATA/SEEK_HOLE), to compare hole layouts."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(data_extents(fd, 0, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def random_file(path: str, size: int, seed: int, holes: bool = False) -> None:
    """A backing file of `size` bytes of seeded random data (optionally with zero/hole stretches)."""
    import random
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))
        if holes and size > 3 * 65536:
            f.seek(65536)
            f.write(bytes(65536))
    if holes and size > 3 * 65536:
        # punch a real hole: rewrite as sparse by copying around the zero stretch
        data = open(path, "rb").read()
        os.unlink(path)
        with open(path, "wb") as f:
            f.write(data[:65536])
            f.seek(2 * 65536)
            f.write(data[2 * 65536:])


UBDSIM = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      ".venv", "bin", "ubdsim")
