"""Buffered writes are write-back, against linux.uml 6.1 (ubdsim/harness/writeback.py).

Two guests, each run in both worlds and compared line for line:
- guests/writeback.py: which calls bring a buffered write to the host file (not the write
  itself, not syncfs(); fsync, sync_file_range(WRITE), the last close, an O_SYNC write and
  sync do), and what a partly up-to-date page (512-byte blocks) reads;
- a COW file on a full 8 MiB tmpfs: an O_DIRECT write that does not fit gets ENOSPC; buffered
  writes succeed and their write-back fails at fsync or close with the kernel's lines
  (`critical space allocation error ...`, `Buffer I/O error ... lost async page write`), EIO
  at the fsync of every open that had not seen the error yet, once, and the lost data still
  readable from the cache until it is dropped.
The COW files must end byte for byte the same as the kernel's.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.mounts import tmpfs

from .oracle import boot_uml, cow_regions, make_backing, ubdsim_body

GUEST = Path(__file__).parent / "guests" / "writeback.py"

FULL_DISK = """\
dd if=/dev/urandom of=/dev/ubda bs=1M count=7 oflag=direct 2>&1 | tail -1 | cut -d' ' -f1-2
dd if=/dev/urandom of=/dev/ubda bs=1M count=1 seek=9 oflag=direct 2>&1 | grep -v copied
dd if=/dev/urandom of=/dev/ubda bs=4k count=2 seek=3000 conv=fsync 2>&1 | grep -v copied
dd if=/dev/urandom of=/dev/ubda bs=4k count=1 seek=3200 2>&1 | grep -v copied
python3 -c '
import os
fd = os.open("/dev/ubda", os.O_RDWR)
os.pwrite(fd, b"x" * 4096, 3300 * 4096)
for i in (1, 2):
    try:
        os.fsync(fd)
    except OSError as e:
        print("fsync", i, e)
    else:
        print("fsync", i, "ok")
print(os.pread(fd, 4, 3300 * 4096))
'
echo end
"""


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "error, dev ubda" in line or line.startswith("Buffer I/O error")]


@pytest.fixture(scope="module")
def timing(tmp_path_factory):
    outcomes = []
    for side in ("uml", "ubdsim"):
        work = tmp_path_factory.mktemp(f"timing-{side}")
        make_backing(work / "a.img", (3 << 20) + 512, seed=3)
        body = f"python3 {GUEST}\n"
        words = ["ubd0=a.cow,a.img"]
        outcomes.append((boot_uml(work, words, body) if side == "uml"
                         else ubdsim_body(work, words, body), work))
    return outcomes


def test_write_back_points_match_the_kernel(timing):
    (uml, _), (sim, _) = timing
    assert "sync, on host:" in uml.output, uml.output[-2000:]
    assert "written, on host: False" in uml.output      # the kernel really is write-back
    assert sim.output.splitlines() == uml.output.splitlines()


def test_write_back_leaves_the_kernels_cow_file(timing):
    (_, uml_dir), (_, sim_dir) = timing
    assert cow_regions(sim_dir / "a.cow") == cow_regions(uml_dir / "a.cow")


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    outcomes = []
    for side in ("uml", "ubdsim"):
        work = tmp_path_factory.mktemp(f"full-{side}")
        (work / "back.img").write_bytes(b"")
        with open(work / "back.img", "wb") as f:
            f.truncate(32 << 20)
        with tmpfs(work / "mnt", "8m"):
            words = ["ubd0=mnt/cow,back.img"]
            outcome = (boot_uml(work, words, FULL_DISK, mem="64M") if side == "uml"
                       else ubdsim_body(work, words, FULL_DISK))
            regions = cow_regions(work / "mnt" / "cow")
        outcomes.append((outcome, regions))
    return outcomes


def test_full_disk_guest_sees_what_the_kernel_returns(full_disk):
    (uml, _), (sim, _) = full_disk
    assert uml.output.rstrip().endswith("end"), uml.output[-2000:]
    assert "fsync 1 [Errno 5] Input/output error" in uml.output
    assert sim.output.splitlines() == uml.output.splitlines()


def test_full_disk_kernel_lines_match(full_disk):
    (uml, _), (sim, _) = full_disk
    expected = _error_lines(uml.kernel_log)
    assert any("lost async page write" in line for line in expected), uml.kernel_log[-3000:]
    assert _error_lines(sim.kernel_log) == expected



def test_full_disk_cow_bitmap_matches(full_disk):
    """The data lost in write-back is random bytes; the bitmaps (what landed) must agree."""
    (_, (uml_bitmap, _)), (_, (sim_bitmap, _)) = full_disk
    assert sim_bitmap == uml_bitmap
