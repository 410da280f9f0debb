"""Preparing a scenario's files on the host, identically for both backends.

Every sector written by a fixture names itself (`<tag> sector 00000012`), so a wrong offset
in a diff is readable at a glance (iotests' self-identifying patterns). COW files of every
version are built from ubdsim's layout table, so that the V1/V2/broken-V3 inputs exist even
though no current tool writes them; uml_mkcow files come from the real tool during the run.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ubdsim.cow.header import new_header, pack_header
from ubdsim.cow.layouts import V3_BROKEN

SECTOR = 512


def sector_pattern(tag: str, first: int, count: int) -> bytes:
    """`count` sectors whose text names the tag and the sector number (0-based on the disk)."""
    out = bytearray()
    for sector in range(first, first + count):
        line = f"{tag} sector {sector:08d}\n".encode()
        out += (line * (SECTOR // len(line) + 1))[:SECTOR]
    return bytes(out)


def write_backing(path: Path, size: int, tag: str, fill: str, mtime: int) -> None:
    """A backing image of exactly `size` bytes (a final partial sector keeps its pattern)."""
    with open(path, "wb") as f:
        if fill == "pattern":
            step = 256  # sectors per chunk, so a 64 MiB image never sits in memory at once
            for first in range(0, (size + SECTOR - 1) // SECTOR, step):
                count = min(step, (size + SECTOR - 1) // SECTOR - first)
                f.write(sector_pattern(tag, first, count))
        elif fill == "zero":
            for done in range(0, size, 1 << 20):
                f.write(bytes(min(1 << 20, size - done)))
        elif fill != "sparse":
            raise ValueError(f"unknown fill {fill!r}")
        f.truncate(size)
    os.utime(path, (mtime, mtime))


def write_cow(path: Path, work: Path, spec: dict) -> None:
    """A COW file of any version laid out as cow_user.c reads it (header, bitmap, data)."""
    backing = Path(spec["backing"])
    backing_abs = backing if backing.is_absolute() else work / backing
    st = os.stat(backing_abs) if backing_abs.exists() else None
    size = spec["size"] if spec["size"] is not None else st.st_size
    mtime = spec["mtime"] if spec["mtime"] is not None else int(st.st_mtime)
    version = spec["version"]
    header = new_header(3 if version == "3-broken" else int(version), os.fsencode(backing_abs),
                        mtime, size, alignment=spec["alignment"])
    if version == "3-broken":
        header = header.with_layout(V3_BROKEN)
    geo = header.geometry()
    bitmap = bytearray(geo.bitmap_len)
    with open(path, "wb") as f:
        f.write(pack_header(header))
        for first, count, tag in spec["written"]:
            _set_bits(bitmap, first, count, geo.bitmap_len)
            f.seek(geo.sector_offset(first))
            f.write(sector_pattern(tag, first, count))
        for first, count in spec["bitmap_only"]:
            _set_bits(bitmap, first, count, geo.bitmap_len)
        f.seek(geo.bitmap_offset)
        f.write(bitmap)
        f.truncate(max(geo.file_length, f.tell()))
    os.utime(path, (spec.get("file_mtime", 1_600_000_000),) * 2)


def _set_bits(bitmap: bytearray, first: int, count: int, length: int) -> None:
    for sector in range(first, first + count):
        if sector // 8 >= length:
            raise ValueError(f"sector {sector} has no bit in a {length}-byte bitmap")
        bitmap[sector // 8] |= 1 << (sector % 8)


def write_bytes(path: Path, spec: dict) -> None:
    with open(path, "wb") as f:
        f.write(bytes.fromhex(spec["data"]))
        if spec["size"] is not None:
            f.truncate(spec["size"])
    os.utime(path, (spec["mtime"], spec["mtime"]))


def run_mkcow(path: Path, work: Path, spec: dict) -> None:
    """The real uml_mkcow, run in the working directory (it absolutizes against its cwd)."""
    subprocess.run(["uml_mkcow", str(path.relative_to(work)), spec["backing"]], cwd=work,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def prepare(work: Path, files: dict[str, dict]) -> None:
    """Create every file of a scenario, in the order given (COW files after their backing)."""
    for name, spec in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = spec["kind"]
        if kind == "backing":
            write_backing(path, spec["size"], spec["tag"], spec["fill"], spec["mtime"])
        elif kind == "cow":
            write_cow(path, work, spec)
        elif kind == "mkcow":
            run_mkcow(path, work, spec)
        elif kind == "bytes":
            write_bytes(path, spec)
        else:
            raise ValueError(f"{name}: unknown file kind {kind!r}")


__all__ = ["prepare", "sector_pattern", "write_backing", "SECTOR"]
