"""`ubdsim info`, `map` and `check` on a 16 TiB sparse COW file: the answers, from the files.

uml_mkcow makes the COW file over a 16 TiB sparse backing file (`truncate -s 16T`; a 4 GiB
bitmap, all hole). It lives on tmpfs (/dev/shm): ext4 caps a file at 16 TiB - 4 KiB, and
uml_mkcow fails there. The test writes a few extents into it the way the kernel does (data at
data_offset + offset, then the bits), with plain pwrites at the offsets the spec gives for the
header uml_mkcow wrote, and one extent of data into the backing file. What each command says
is compared with what the files hold, found with SEEK_DATA/SEEK_HOLE by the test itself: the
marked sectors (the bits set in the bitmap's data extents), the map's runs and host offsets
(the COW file's and the backing file's data extents), and check's verdict, clean and then
with data written under a clear bit (an orphan: the kernel's crash between data and bitmap).
Times are measured by scripts/bench_large.py, not here.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile

import pytest

from tests.cow.builders import UBDSIM, spec_geometry

TIB = 1 << 40
SIZE = 16 * TIB
SS = 512
WRITES = [(0, 4096), (3 * TIB + (7 << 20), 1 << 20), (5 * TIB, 65536), (12 * TIB + 512, 512),
          (SIZE - 4096, 4096)]
BACKING_DATA = (9 * TIB, 1 << 20)
ORPHAN = (7 * TIB, 8192)                       # data written, bits never set


@pytest.fixture
def big():
    assert os.path.isdir("/dev/shm"), "/dev/shm (tmpfs) is missing: no file system here holds 16 TiB"
    assert shutil.which("uml_mkcow"), "uml_mkcow is not installed (Debian: uml-utilities)"
    work = tempfile.mkdtemp(prefix="ubdsim-large-", dir="/dev/shm")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def data_extents(path: str, start: int, end: int) -> list[tuple[int, int]]:
    """The file's data ranges within [start, end), straight from lseek (not ubdsim's helper)."""
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        position = start
        while position < end:
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            if data >= end:
                break
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
            found.append((data, hole))
            position = hole
    finally:
        os.close(fd)
    return found


def marked_runs(path: str, bitmap_offset: int, bitmap_len: int) -> list[tuple[int, int]]:
    """Byte ranges of the device whose bits are set, read only from the bitmap's data extents."""
    runs: list[tuple[int, int]] = []
    with open(path, "rb") as f:
        for lo, hi in data_extents(path, bitmap_offset, bitmap_offset + bitmap_len):
            f.seek(lo)
            for i, byte in enumerate(f.read(hi - lo)):
                for bit in range(8):
                    if byte >> bit & 1:
                        start = ((lo - bitmap_offset + i) * 8 + bit) * SS
                        if runs and runs[-1][1] == start:
                            runs[-1] = (runs[-1][0], start + SS)
                        else:
                            runs.append((start, start + SS))
    return runs


def within(run: tuple[int, int], extents: list[tuple[int, int]]) -> bool:
    return any(lo <= run[0] and run[1] <= hi for lo, hi in extents)


def write_like_the_kernel(path: str, data_offset: int, bitmap_offset: int,
                          extents: list[tuple[int, int]], mark: bool) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        for offset, length in extents:
            os.pwrite(fd, b"\x5a" * length, data_offset + offset)
            if mark:
                for sector in range(offset // SS, (offset + length) // SS):
                    at = bitmap_offset + sector // 8
                    byte = os.pread(fd, 1, at)[0] | 1 << (sector % 8)
                    os.pwrite(fd, bytes([byte]), at)
    finally:
        os.close(fd)


def ubdsim(*args: str, cwd: str) -> tuple[int, object]:
    done = subprocess.run([UBDSIM, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_info_map_check_on_a_16_tib_sparse_cow(big):
    with open(os.path.join(big, "backing"), "wb") as f:
        f.truncate(SIZE)
        f.seek(BACKING_DATA[0])
        f.write(b"\xa5" * BACKING_DATA[1])
    done = subprocess.run(["uml_mkcow", "cow", "backing"], cwd=big, capture_output=True, text=True)
    assert done.returncode == 0, f"uml_mkcow failed: {done.stderr.strip()}"
    cow = os.path.join(big, "cow")
    with open(cow, "rb") as f:
        magic, version = struct.unpack(">II", f.read(8))
    assert (magic, version) == (0x4F4F4F4D, 3)
    _, bitmap_offset, bitmap_len, data_offset = spec_geometry(3, SIZE)
    assert bitmap_len == 4 << 30
    write_like_the_kernel(cow, data_offset, bitmap_offset, WRITES, mark=True)
    runs = marked_runs(cow, bitmap_offset, bitmap_len)
    assert runs == sorted((offset, offset + length) for offset, length in WRITES)
    marked = sum(hi - lo for lo, hi in runs) // SS

    status, info = ubdsim("info", "--json", "cow", cwd=big)
    assert status == 0
    assert (info["sectors"], info["sectors_marked"]) == (SIZE // SS, marked)
    assert info["allocated_bytes"] == os.stat(cow).st_blocks * 512

    # map: the marked runs at depth 0, stored in the COW file's data extents at data_offset +
    # start; the backing file's data extents at depth 1; the rest zero; 16 TiB in all
    status, entries = ubdsim("map", "--json", "cow", cwd=big)
    assert status == 0
    cow_data = data_extents(cow, data_offset, data_offset + SIZE)
    depth0 = [e for e in entries if e["depth"] == 0]
    assert [(e["start"], e["start"] + e["length"]) for e in depth0] == runs
    assert all(e["data"] and e["offset"] == e["start"] + data_offset and
               within((e["offset"], e["offset"] + e["length"]), cow_data) for e in depth0)
    assert [(e["start"], e["start"] + e["length"]) for e in entries
            if e["data"] and e["depth"] == 1] == data_extents(os.path.join(big, "backing"), 0, SIZE)
    assert sum(e["length"] for e in entries) == SIZE

    status, report = ubdsim("check", "--json", "cow", cwd=big)
    assert status == 0 and report["marked_sectors"] == marked
    assert [f["severity"] for f in report["findings"]] == ["warning"]   # V3: 2.4 cannot read it

    write_like_the_kernel(cow, data_offset, bitmap_offset, [ORPHAN], mark=False)
    orphan = [(lo - data_offset, hi - data_offset)
              for lo, hi in data_extents(cow, data_offset + ORPHAN[0], data_offset + SIZE)][0]
    status, report = ubdsim("check", "--json", "cow", cwd=big)
    found = {f["id"]: f for f in report["findings"]}
    assert status == 3 and found["data.orphan"]["severity"] == "leak"
    assert found["data.orphan"]["sectors"] == [[orphan[0] // SS, (orphan[1] - orphan[0]) // SS]]
