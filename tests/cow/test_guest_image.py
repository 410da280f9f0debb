"""guest_images/build_ext2.py is reproducible, and `make demo` (scripts/demo.py) tells its
story end to end: its results are judged here by native tools (e2fsck, debugfs, dumpe2fs)
and by the real 6.1 kernel, linux.uml, booted on the files the demo left behind."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_ref import launcher

ROOT = Path(__file__).resolve().parents[2]
BUILD_EXT2 = ROOT / "guest_images" / "build_ext2.py"
DEMO = ROOT / "scripts" / "demo.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("ubdsim_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(path: Path) -> None:
    subprocess.run([sys.executable, str(BUILD_EXT2), str(path)], check=True)


def _debugfs_cat(image: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                          text=True)


def _fsck(image: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)


def test_ext2_image_is_byte_for_byte_reproducible_and_clean(tmp_path):
    for name in ("a.img", "b.img"):
        _build(tmp_path / name)
    assert _digest(tmp_path / "a.img") == _digest(tmp_path / "b.img")
    fsck = _fsck(tmp_path / "a.img")
    assert fsck.returncode == 0, fsck.stdout
    assert _debugfs_cat(tmp_path / "a.img", "/etc/motd").stdout == \
        "Welcome to a copy-on-write block device.\n"
    assert sorted(os.listdir(tmp_path)) == ["a.img", "b.img"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo, run once as `make demo` runs it, into a private directory."""
    out = tmp_path_factory.mktemp("demo") / "out"
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(out)], capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "TMPDIR": str(out.parent)})
    return out, done


def _shown(stdout: str, command: str) -> list[str]:
    """The output lines the demo printed for `$ command` (indented, up to the next line that
    is not output)."""
    lines = stdout.splitlines()
    start = lines.index(f"$ {command}") + 1
    shown = []
    for line in lines[start:]:
        if not line.startswith("   ") or line.startswith("   -> "):
            break
        shown.append(line[3:])
    return shown


def test_demo_runs_every_act_and_says_so(demo_run):
    out, done = demo_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert done.stderr == ""
    text = done.stdout
    for act in range(1, 9):
        assert f"\n== {act}. " in text
    assert _shown(text, "ubdsim parse --kernel 2.4 ubd0=guest.cow,base.img,16M")[1].split()[5] \
        == str(16 << 20)
    assert 'Creating "guest.cow" as COW file for "base.img"' in text
    assert "*** Resizing cow file: " in text
    assert "COW file grown by the 2.4 resize patch: 8388608 -> 16777216 bytes" in text
    assert 'Creating "qemu.cow" as COW file for "grown.img"' in text
    assert text.rstrip().splitlines()[-1].startswith("demo: every step checked out")
    # the private files of `ubdsim vm` (socket, initrd) were all removed
    assert list(out.parent.glob("ubdsim-vm-*")) == []


def test_demo_images_pass_e2fsck_and_hold_the_guests_files(demo_run, tmp_path):
    out, done = demo_run
    assert done.returncode == 0, done.stderr
    _build(tmp_path / "fresh.img")
    assert _digest(out / "base.img") == _digest(tmp_path / "fresh.img"), "backing file changed"
    for image in ("merged.img", "grown.img", "final.img"):
        fsck = _fsck(out / image)
        assert fsck.returncode == 0, image + fsck.stdout
        assert _debugfs_cat(out / image, "/note.txt").stdout == demo.NOTE
    assert _debugfs_cat(out / "final.img", "/from-qemu.txt").stdout == demo.QEMU_NOTE
    for image in ("base.img", "grown.img"):
        assert "File not found" in _debugfs_cat(out / image, "/from-qemu.txt").stderr
    assert "File not found" in _debugfs_cat(out / "base.img", "/note.txt").stderr
    super_block = subprocess.run(["dumpe2fs", "-h", str(out / "grown.img")], capture_output=True,
                                 text=True, check=True).stdout
    assert "Block count:              16384" in super_block.splitlines()
    cow = (out / "guest.cow").stat()
    assert cow.st_size > 16 << 20
    assert cow.st_blocks * 512 < (out / "grown.img").stat().st_blocks * 512


def _boot_linux_uml(workdir: Path, words: list[str], body: str) -> str:
    """Boot linux.uml (the 6.1 oracle) in `workdir` with `words`; body runs there with a
    devtmpfs in workdir/dev; returns the console."""
    (workdir / "dev").mkdir()
    run = launcher.boot(words, script=f"mount -t devtmpfs none '{workdir}/dev'\n{body}\n",
                        cwd=workdir, timeout=300)
    assert run.status is not None, run.problem
    return run.console


def test_linux_uml_agrees_with_the_final_act(demo_run, tmp_path):
    """The real 6.1 kernel refuses the resized guest.cow with the very lines the demo showed
    from `ubdsim vm --kernel 6.1`, and its view of qemu.cow over grown.img (the disk the qemu
    guest wrote) is byte for byte the image `ubdsim moo` merged from them.

    The kernel reads in 4 KiB O_DIRECT requests: one segment each. A longer request that
    crosses a mix of marked and unmarked sectors reads later segments at a drifted offset in
    6.1 (ubdsim/device/unit.py reproduces that), so a plain `e2fsck /dev/ubdb` in linux.uml
    sees a corrupt filesystem that is not what the COW file holds."""
    out, done = demo_run
    assert done.returncode == 0, done.stderr
    names = ("guest.cow", "base.img", "qemu.cow", "grown.img")
    for name in names:
        os.link(out / name, tmp_path / name)      # same inodes: the headers' paths still match
    before = {name: _digest(out / name) for name in names}
    console = _boot_linux_uml(
        tmp_path, ["ubd0=guest.cow,base.img", "ubd1=qemu.cow,grown.img"],
        # One open of ubda, as the export's open in `ubdsim vm` is: 6.1 retries the failed
        # open and prints its lines again (ubd_open() -> ubd_open_dev() while count == 0).
        "dd if=dev/ubda of=/dev/null count=1 2>/dev/null; "
        "dd if=dev/ubdb bs=4096 iflag=direct of=device.img status=none; echo $? > dd.status")
    lines = console.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("Size mismatch"))
    shown = _shown(done.stdout, "ubdsim vm --kernel 6.1 ubd0=guest.cow,base.img -- mount.sh")
    assert shown[-1] == "ubdsim vm: error: no unit opened, nothing to give the guest"
    kernel_ubda = [line for line in lines[first:] if "guest.cow" in line or
                   line.startswith("Size mismatch")]
    hints = [line for line in shown[:-1] if line.startswith("ubdsim: hint: ")]
    assert [line for line in shown[:-1] if line not in hints] == kernel_ubda
    assert len(kernel_ubda) == 6         # the partition scan's open, then the export's
    assert len(hints) == 1 and "grown past its backing file" in hints[0]   # ubdsim's own, once
    assert (tmp_path / "dd.status").read_text() == "0\n"
    assert _digest(tmp_path / "device.img") == _digest(out / "final.img")
    assert {name: _digest(out / name) for name in names} == before


def test_demo_without_qemu_fails_clearly_before_writing_anything(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program, _purpose in demo.NEEDED:
        if program != "qemu-system-x86_64":
            os.symlink(shutil.which(program), bin_dir / program)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(out)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": str(bin_dir)})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("\ndemo: FAILED: 'qemu-system-x86_64' is not installed")
    assert "make setup" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
