"""Merging a COW file grown by the 2.4 COW-resize patch (issue 4, "A resized COW").

The grown file is made by ubdsim's own 2.4 device model through `ubdsim run` (the resize
happens on open, then resize2fs runs in the guest); the judges are real tools: uml_moo must
refuse the file (Size mismatch), e2fsck must accept the image `ubdsim moo` writes, and
dumpe2fs must see the grown filesystem.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ubdsim.cow.image import CowImage

UBDSIM = [sys.executable, "-m", "ubdsim"]
BLOCK = 1024


def _run(cmd: list[str], cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)


@pytest.fixture()
def grown(tmp_path):
    """back.img: a 4 MiB ext2; cow.img: grown to 8 MiB by profile 2.4, filesystem resized."""
    back = tmp_path / "back.img"
    done = _run(["mke2fs", "-q", "-t", "ext2", "-b", str(BLOCK), "-F", str(back), "4096"], tmp_path)
    assert done.returncode == 0, done.stderr
    guest = _run(UBDSIM + ["run", "--kernel", "2.4", "ubd0=cow.img,back.img,8M", "--",
                           "sh", "-c", "resize2fs /dev/ubd0 && e2fsck -fn /dev/ubd0"], tmp_path)
    assert guest.returncode == 0, guest.stdout + guest.stderr
    assert "*** Resizing cow file: " in guest.stderr
    return tmp_path


def _block_count(image) -> int:
    out = _run(["dumpe2fs", "-h", str(image)], image.parent).stdout
    return int(next(line.split(":")[1] for line in out.splitlines() if line.startswith("Block count")))


def test_uml_moo_refuses_a_grown_cow_file(grown):
    done = _run(["uml_moo", "cow.img", "m.img"], grown)
    assert done.returncode != 0
    assert "Size mismatch (8388608 vs 4194304)" in done.stdout + done.stderr


def test_ubdsim_moo_merges_it_into_the_grown_disk_that_e2fsck_accepts(grown):
    done = _run(UBDSIM + ["moo", "--json", "cow.img", "merged.img"], grown)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["size"], summary["backing_size"]) == (8 * 1024 * 1024, 4 * 1024 * 1024)
    assert os.path.getsize(grown / "merged.img") == 8 * 1024 * 1024
    check = _run(["e2fsck", "-fn", "merged.img"], grown)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _block_count(grown / "merged.img") == 8 * 1024 * 1024 // BLOCK
    assert _block_count(grown / "back.img") == 4 * 1024 * 1024 // BLOCK    # backing untouched


def test_ubdsim_moo_in_place_grows_the_backing_file(grown):
    done = _run(UBDSIM + ["moo", "-d", "cow.img"], grown)
    assert done.returncode == 0, done.stderr
    assert os.path.getsize(grown / "back.img") == 8 * 1024 * 1024
    check = _run(["e2fsck", "-fn", "back.img"], grown)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _block_count(grown / "back.img") == 8 * 1024 * 1024 // BLOCK


def test_a_larger_header_without_a_fully_marked_tail_is_still_a_size_mismatch(grown):
    with CowImage.open(grown / "cow.img", writable=True) as image:
        last = image.sectors - 1
        image.bitmap[last >> 3] &= ~(1 << (last & 7)) & 0xFF
    done = _run(UBDSIM + ["moo", "cow.img", "merged.img"], grown)
    assert done.returncode == 1
    assert "Size mismatch (8388608 vs 4194304)" in done.stderr
    assert not (grown / "merged.img").exists()
    info = json.loads(_run(UBDSIM + ["info", "--json", "cow.img"], grown).stdout)
    assert info["backing"]["grown"] is False
