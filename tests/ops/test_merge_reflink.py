"""`ubdsim moo COW NEWFILE` on a file system with reflinks (XFS, reflink=1, on a loop device):
the fast path's copy_file_range() shares the backing file's extents instead of copying them
(FIEMAP, read by e2fsprogs' filefrag, flags them `shared`), and the image is still uml_moo's,
byte for byte, with the same holes but for the last block (uml_moo always writes it)."""
from __future__ import annotations

import random
import subprocess

import pytest

from tests.cow.builders import UBDSIM, build_cow, extent_map, random_file, run
from tests.mounts import xfs_reflink

SS = 512
SIZE = 8 << 20


def _shared_extents(path: str) -> int:
    out = subprocess.run(["filefrag", "-v", path], capture_output=True, text=True,
                         check=True).stdout
    return sum(1 for line in out.splitlines() if "shared" in line)


@pytest.fixture
def xfs(tmp_path, monkeypatch):
    """The test's working directory on a fresh loop-mounted XFS (unmounted after)."""
    try:
        with xfs_reflink(tmp_path / "xfs", "512m") as where:
            monkeypatch.chdir(where)
            yield where
            monkeypatch.chdir(tmp_path)         # out of the mount before it goes
    except subprocess.CalledProcessError as err:
        pytest.fail(f"cannot make a loop-mounted XFS with reflinks here: {err.cmd[0]}: "
                    f"{(err.stderr or b'').decode().strip()}")
    except FileNotFoundError as err:
        pytest.fail(f"cannot make a loop-mounted XFS with reflinks here: {err.filename} is "
                    "missing (make setup installs xfsprogs)")


def test_moo_shares_the_backing_files_extents_and_writes_uml_moos_image(xfs):
    random_file("backing", SIZE, seed=23, holes=True)
    rng = random.Random(23)
    marks = {s: rng.randbytes(SS) for s in rng.sample(range(SIZE // SS), 40)}
    marks.update({s: bytes(SS) for s in range(8, 16)})          # a marked zero block
    build_cow("cow", 3, "backing", marks)
    assert run(["uml_moo", "cow", "oracle.img"]).returncode == 0
    r = run([UBDSIM, "moo", "cow", "mine.img"])
    assert r.returncode == 0, r.stderr
    assert open("mine.img", "rb").read() == open("oracle.img", "rb").read()
    last = SIZE - 4096
    assert [e for e in extent_map("mine.img") if e[0] < last] == \
        [e for e in extent_map("oracle.img") if e[0] < last]
    assert _shared_extents("mine.img") > 0, "copy_file_range() copied instead of sharing"
    assert _shared_extents("oracle.img") == 0
