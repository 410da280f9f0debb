"""[resize] what a 2.4 grow must not damage, and the one line each failure prints.

Links: a symlinked COW file is grown where it really lives (the links stay links and see the
guest's writes), owner, group and mode survive the safe mode's rename, and a hard-linked file
is refused rather than split; the temporary file is never opened through a planted link.
Failures (ubdsim's own lines, the patch's are lost): a full disk (a real tmpfs that is full),
a file size limit (`ulimit -f`, SIGXFSZ ignored so the write fails with EFBIG), a read-only
unit (flag r, and a read-only bind mount that makes the open fall back to read-only), a COW
header with sector size 0. Each is run through the installed `ubdsim run` and must print
exactly one line naming the file and the cause, leave no /dev/ubd0, no traceback, the file
byte for byte as it was and no temporary file.
"""
from __future__ import annotations

import errno
import os
import resource
import signal
import stat
import subprocess

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.cow.header import read_header
from ubdsim.device.open import open_unit
from ubdsim.errors import UbdError

from ..cow.builders import UBDSIM, pack_spec_header, run
from ..mounts import tmpfs
from .oracle import readonly_mount
from .test_resize import MIB, P24, _sha, cow24  # noqa: F401  (cow24 is a fixture)

GROWN = 3 * MIB
NO_DISK = ["sh", "-c", "test -b /dev/ubd0"]        # exit 1: the unit did not open


def _temps(*directories) -> list[str]:
    return [name for d in directories for name in os.listdir(d) if "ubdsim-resize" in name]


def _guest(cwd, words: list[str], command: list[str] = NO_DISK, kernel: str = "2.4",
           prefix: list[str] = (), **kw) -> subprocess.CompletedProcess:
    return run([*prefix, UBDSIM, "run", "--kernel", kernel, *words, "--", *command], cwd=cwd, **kw)


# --- links, owner, mode ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["safe", "in-place"])
def test_symlink_chain_grows_the_real_file_which_then_gets_the_writes(cow24, mode):
    tmp, backing, cow, written = cow24
    links = tmp / "links"
    links.mkdir()
    (links / "first.cow").symlink_to(os.path.relpath(cow, links))
    (tmp / "disk.cow").symlink_to("links/first.cow")              # disk.cow -> first -> cow.img
    inode = cow.stat().st_ino
    with open_unit(UnitSpec(0, str(tmp / "disk.cow"), str(backing), size=GROWN), P24,
                   resize_mode=mode) as unit:
        assert unit.messages[0].startswith("*** Resizing cow file: ")
        unit.write(2 * MIB, b"G" * 4096)                          # a write into the grown part
    assert (tmp / "disk.cow").is_symlink() and (links / "first.cow").is_symlink()
    assert os.readlink(tmp / "disk.cow") == "links/first.cow"
    assert read_header(cow.read_bytes()[:4120]).size == GROWN     # the real file grew
    assert (cow.stat().st_ino == inode) == (mode == "in-place")   # safe: a new inode, same name
    assert _temps(tmp, links) == []
    with open_unit(UnitSpec(0, str(cow)), P24) as unit:           # the real file has the writes
        assert unit.size == GROWN
        assert unit.read(2 * MIB, 4096) == b"G" * 4096
        assert unit.read(0, 512) == written[0]


@pytest.mark.parametrize("mode", ["safe", "in-place"])
def test_owner_group_and_mode_survive(cow24, mode):
    tmp, backing, cow, _ = cow24
    os.chown(cow, 4242, 4343)
    os.chmod(cow, 0o2640)                                         # set-gid too: chown clears it
    open_unit(UnitSpec(0, str(cow), str(backing), size=GROWN), P24, resize_mode=mode).close()
    st = cow.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 4343, 0o2640)
    assert read_header(cow.read_bytes()[:4120]).size == GROWN


def test_hard_linked_file_is_refused_with_one_line_and_nothing_changes(cow24):
    tmp, backing, cow, _ = cow24
    os.link(cow, tmp / "other.cow")
    before = _sha(cow)
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(cow), str(backing), size=GROWN), P24)
    line = f'ubd : not growing cow file "{cow}": it has 2 hard links, a grown copy would split them'
    assert info.value.printed == (line,)
    assert info.value.errno == errno.EMLINK
    assert _sha(cow) == before and os.path.samefile(cow, tmp / "other.cow")
    assert cow.stat().st_nlink == 2 and _temps(tmp) == []
    done = _guest(tmp, ["ubd0=cow.img,back.img,3M"])              # the same through `ubdsim run`
    assert (done.returncode, done.stderr) == (1, line.replace(str(cow), "cow.img") + "\n")
    assert _sha(cow) == before and _temps(tmp) == []


def test_in_place_grow_keeps_hard_links_together(cow24):
    """In place the inode stays: nothing splits, so nothing is refused."""
    tmp, backing, cow, _ = cow24
    os.link(cow, tmp / "other.cow")
    open_unit(UnitSpec(0, str(cow), str(backing), size=GROWN), P24, resize_mode="in-place").close()
    assert os.path.samefile(cow, tmp / "other.cow")
    assert read_header((tmp / "other.cow").read_bytes()[:4120]).size == GROWN


def test_planted_symlink_at_the_temporary_name_is_not_followed(cow24):
    tmp, backing, cow, written = cow24
    victim = tmp / "victim.img"
    victim.write_bytes(b"precious" * 512)
    (tmp / ".cow.img.ubdsim-resize").symlink_to(victim)
    with open_unit(UnitSpec(0, str(cow), str(backing), size=GROWN), P24) as unit:
        assert unit.read(7 * 512, len(written[7])) == written[7]
    assert victim.read_bytes() == b"precious" * 512
    assert _temps(tmp) == []


# --- failures: one line each -------------------------------------------------------------------

@pytest.fixture
def full_tmpfs(tmp_path):
    """A real 1 MiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "small", "1m") as mnt:
        yield mnt


def test_full_disk_prints_one_line_and_leaves_the_file(cow24, full_tmpfs):
    tmp, backing, cow, _ = cow24
    subprocess.run(["cp", "--sparse=always", str(cow), str(full_tmpfs / "c.cow")], check=True)
    filler = os.open(full_tmpfs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:                                                         # fill the filesystem to the brim
        with pytest.raises(OSError) as full:
            while True:
                os.write(filler, b"\1" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(filler)
    before = _sha(full_tmpfs / "c.cow")
    done = _guest(tmp, ["ubd0=small/c.cow,back.img,8M"])
    assert done.returncode == 1
    assert done.stderr == (f'ubd : growing cow file "small/c.cow" from {MIB} to {8 * MIB} bytes '
                           f"failed: No space left on device (errno = {errno.ENOSPC})\n")
    assert _sha(full_tmpfs / "c.cow") == before
    assert sorted(os.listdir(full_tmpfs)) == ["c.cow", "filler"]


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # the write fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_file_size_limit_prints_one_line_and_leaves_the_file(cow24):
    tmp, backing, cow, _ = cow24
    before = _sha(cow)
    done = _guest(tmp, ["ubd0=cow.img,back.img,8M"], preexec_fn=_file_size_limit(4 * MIB))
    assert done.returncode == 1
    assert done.stderr == (f'ubd : growing cow file "cow.img" from {MIB} to {8 * MIB} bytes '
                           f"failed: File too large (errno = {errno.EFBIG})\n")
    assert _sha(cow) == before and _temps(tmp) == []


def test_read_only_unit_says_it_cannot_grow(cow24):
    tmp, backing, cow, _ = cow24
    before = _sha(cow)
    done = _guest(tmp, ["ubd0r=cow.img,back.img,8M"])
    assert (done.returncode, done.stderr) == (
        1, f'ubd : can\'t grow read-only cow file "cow.img" from {MIB} to {8 * MIB} bytes\n')
    done = _guest(tmp, ["ubd0r=cow.img,back.img,512K"])            # a shrink is still a shrink
    assert (done.returncode, done.stderr) == (
        1, f'ubd : can\'t shrink cow file "cow.img" from {MIB} to {512 * 1024} bytes\n')
    assert _sha(cow) == before and _temps(tmp) == []


def test_read_only_mount_makes_the_unit_read_only_and_it_cannot_grow(cow24):
    """open_ubd_file(): EROFS on the read-write open -> reopened read-only (open.py
    _open_with_fallback), so the unit is read-only without flag r."""
    tmp, backing, cow, _ = cow24
    ro = tmp / "ro"
    ro.mkdir()
    before = _sha(cow)
    done = _guest(tmp, ["ubd0=ro/cow.img,back.img,8M"], prefix=readonly_mount(tmp, ro))
    assert (done.returncode, done.stderr) == (
        1, f'ubd : can\'t grow read-only cow file "ro/cow.img" from {MIB} to {8 * MIB} bytes\n')
    assert _sha(cow) == before and _temps(tmp) == []


def _zero_sector_cow(path, backing, version: int) -> None:
    st = os.stat(backing)
    with open(path, "wb") as f:
        f.write(pack_spec_header(version, os.fsencode(os.path.abspath(backing)), int(st.st_mtime),
                                 st.st_size, ss=0))
        f.truncate(8192 + st.st_size)


@pytest.mark.parametrize("words", [["ubd0=z.cow,back.img"], ["ubd0=z.cow"], ["ubd0=z.cow,back.img,8M"]])
def test_sector_size_0_prints_one_line_2_4(cow24, words):
    tmp, backing, _, _ = cow24
    _zero_sector_cow(tmp / "z.cow", backing, version=2)
    before = _sha(tmp / "z.cow")
    done = _guest(tmp, words)
    assert (done.returncode, done.stderr) == (
        1, 'ubd : cow file "z.cow" has sector size 0 in its header, refusing it\n')
    assert _sha(tmp / "z.cow") == before and _temps(tmp) == []


def test_sector_size_0_prints_one_line_6_1(cow24):
    """[6.1] the disk stays registered (its node exists) and every first open repeats the
    open: one line at the boot's scan, one more when the guest opens the node (EINVAL)."""
    tmp, backing, _, _ = cow24
    _zero_sector_cow(tmp / "z.cow", backing, version=3)
    before = _sha(tmp / "z.cow")
    line = 'ubd: cow file "z.cow" has sector size 0 in its header, refusing it\n'
    done = _guest(tmp, ["ubd0=z.cow,back.img"], ["true"], kernel="6.1")
    assert (done.returncode, done.stderr) == (0, line)
    done = _guest(tmp, ["ubd0=z.cow,back.img"], ["sh", "-c", "exec 3</dev/ubda"], kernel="6.1")
    assert done.returncode != 0 and done.stderr.startswith(line + line)
    assert "Invalid argument" in done.stderr and "Traceback" not in done.stderr
    assert _sha(tmp / "z.cow") == before
