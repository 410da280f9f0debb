"""Real filesystem tools through `ubdsim run`, cross-checked by the real kernel: mkfs.ext4
and mkfs.ext2 build filesystems under ubdsim, e2fsck -fn and debugfs check and read them
under ubdsim, then linux.uml 6.1 boots on the same COW files and its own e2fsck and debugfs
must agree (issue 5: mkfs, e2fsck -fn, debugfs write then cat)."""
from __future__ import annotations

from pathlib import Path

import pytest

from .oracle import boot_uml, make_backing, ubdsim_run

WORDS = ["ubd0=fs4.cow,back4.img", "ubd1=fs2.cow,back2.img"]
CONTENT = "written through ubdsim by debugfs\n" * 50

MAKE = """set -e
mkfs.ext4 -q -F /dev/ubda
mkfs.ext2 -q -F /dev/ubdb
e2fsck -fn /dev/ubda
e2fsck -fn /dev/ubdb
debugfs -w -R "write note.txt note.txt" /dev/ubda
debugfs -w -R "write note.txt note.txt" /dev/ubdb
debugfs -R "cat note.txt" /dev/ubda > cat4.txt
debugfs -R "cat note.txt" /dev/ubdb > cat2.txt
blkid -p -o value -s TYPE /dev/ubda /dev/ubdb > types.txt
"""

CHECK = """e2fsck -fn /dev/ubda > fsck4.txt 2>&1; echo "ext4 $?"
e2fsck -fn /dev/ubdb > fsck2.txt 2>&1; echo "ext2 $?"
debugfs -R "cat note.txt" /dev/ubda 2>/dev/null | md5sum
debugfs -R "cat note.txt" /dev/ubdb 2>/dev/null | md5sum
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("fs")
    make_backing(workdir / "back4.img", 64 << 20, seed=4)
    make_backing(workdir / "back2.img", 16 << 20, seed=2)
    (workdir / "note.txt").write_text(CONTENT)
    (workdir / "make.sh").write_text(MAKE)
    return workdir


@pytest.fixture(scope="module")
def made(workdir):
    return ubdsim_run(workdir, WORDS, ["sh", "make.sh"])


def test_mkfs_fsck_debugfs_under_ubdsim(workdir, made):
    assert made.status == 0, made.output
    assert (workdir / "cat4.txt").read_text() == CONTENT
    assert (workdir / "cat2.txt").read_text() == CONTENT
    assert (workdir / "types.txt").read_text().split() == ["ext4", "ext2"]


def test_real_kernel_reads_what_ubdsim_wrote(workdir, made):
    assert made.status == 0
    sim_check = ubdsim_run(workdir, WORDS, ["sh", "-c", CHECK])
    uml_check = boot_uml(workdir, WORDS, CHECK)
    assert uml_check.output.splitlines()[:2] == ["ext4 0", "ext2 0"]
    assert sim_check.output == uml_check.output


def test_resize2fs_after_a_2_4_resize(tmp_path):
    """[resize] profile 2.4: a third field grows the COW unit; resize2fs then grows the
    filesystem to the new device size and e2fsck finds it clean."""
    with open(tmp_path / "back.img", "wb") as f:
        f.truncate(16 << 20)
    made = ubdsim_run(tmp_path, ["ubd0=cow.img,back.img"],
                      ["sh", "-c", "mkfs.ext4 -q -F /dev/ubd0 && e2fsck -fn /dev/ubd0"],
                      kernel="2.4")
    assert made.status == 0, made.output
    grown = ubdsim_run(tmp_path, ["ubd0=cow.img,back.img,32M"], ["sh", "-c", (
        "blockdev --getsize64 /dev/ubd0 > size.txt && resize2fs /dev/ubd0 && "
        "e2fsck -fn /dev/ubd0 && dumpe2fs -h /dev/ubd0 > super.txt")], kernel="2.4")
    assert grown.status == 0, grown.output
    size = int((tmp_path / "size.txt").read_text())
    assert size == 32 << 20
    fields = dict(line.split(":", 1) for line in (tmp_path / "super.txt").read_text().splitlines()
                  if ":" in line)
    assert int(fields["Block count"]) * int(fields["Block size"]) == size
