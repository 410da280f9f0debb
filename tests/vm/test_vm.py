"""`ubdsim vm`: a real 6.1 kernel under qemu (TCG) on ubd units served over NBD.

Each test boots qemu once (a few seconds of emulation on this 2-core machine), so scenarios
are few and each checks a lot. Results are judged by native tools: `e2fsck -fn` and
`debugfs` on the image `ubdsim moo` merges, and the device model reopening the COW file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from kernel_ref import launcher
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.cow import bitmap as bits
from ubdsim.device.open import open_unit
from ubdsim.profiles import get_profile

UBDSIM = str(Path(sys.executable).with_name("ubdsim"))
MIB = 1024 * 1024

# {dev} and {mnt}: /dev/ubda and /mnt in the qemu guest; devtmpfs and a directory under the
# test's tmp_path in linux.uml, whose root is the host's filesystem (hostfs).
EXT4_WORKLOAD = """set -e
mkfs.ext4 -q {dev}
mount -t ext4 {dev} {mnt}
seq 1 20000 > {mnt}/numbers.txt
mkdir {mnt}/dir
yes ubdsim | head -c 300000 > {mnt}/dir/yes.txt
sync
umount {mnt}
echo workload-done
"""
FILES = ["/numbers.txt", "/dir/yes.txt"]


def vm(tmp_path: Path, words: list[str], script: str, *options: str, timeout: int = 300
       ) -> subprocess.CompletedProcess:
    path = tmp_path / "workload.sh"
    path.write_text(script)
    return subprocess.run([UBDSIM, "vm", "--kernel", "6.1", *options, *words, "--", str(path)],
                          capture_output=True, text=True, timeout=timeout, env=_env(tmp_path))


def _env(tmp_path: Path) -> dict[str, str]:
    # Private files of `ubdsim vm` (socket, initrd) go under tmp_path: leftovers are visible.
    return {**os.environ, "TMPDIR": str(tmp_path)}


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_cleaned_up(tmp_path: Path) -> None:
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.glob("ubdsim-vm-*")) == []


def debugfs_cat(image: Path, path: str) -> bytes:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True,
                          check=True).stdout


def run_in_linux_uml(tmp_path: Path, backing: Path) -> Path:
    """The same workload under linux.uml (the 6.1 oracle) on its own COW over `backing`;
    returns that COW file."""
    work = tmp_path / "uml"
    (work / "dev").mkdir(parents=True)
    (work / "mnt").mkdir()
    cow = work / "uml.cow"
    run = launcher.boot([f"ubd0={cow},{backing}"], cwd=work, timeout=120, merge_stderr=True,
                        script=f"mount -t devtmpfs none {work}/dev\n"
                        + EXT4_WORKLOAD.format(dev=f"{work}/dev/ubda", mnt=f"{work}/mnt"))
    assert "workload-done" in run.output, run.problem + run.output[-2000:]
    return cow


def merged_and_checked(cow: Path, merged: Path) -> Path:
    """`ubdsim moo` the COW file into `merged`, which native e2fsck must find clean."""
    subprocess.run([UBDSIM, "moo", str(cow), str(merged)], check=True, capture_output=True)
    fsck = subprocess.run(["e2fsck", "-fn", str(merged)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    return merged


def test_guest_builds_ext4_on_a_cow_unit(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    with open(backing, "wb") as f:
        f.truncate(64 * MIB)
    done = vm(tmp_path, [f"ubd0={cow},{backing}"],
              EXT4_WORKLOAD.format(dev="/dev/ubda", mnt="/mnt") + "exit 3\n")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "workload-done" in done.stdout
    assert done.stderr.splitlines()[0] == f'Creating "{cow}" as COW file for "{backing}"'
    assert_cleaned_up(tmp_path)
    assert backing.stat().st_size == 64 * MIB and backing.stat().st_blocks == 0
    ours = merged_and_checked(cow, tmp_path / "merged.img")
    theirs = merged_and_checked(run_in_linux_uml(tmp_path, backing), tmp_path / "uml.img")
    for path in FILES:
        content = debugfs_cat(ours, path)
        assert content and content == debugfs_cat(theirs, path)
    assert debugfs_cat(ours, "/numbers.txt").splitlines()[-1] == b"20000"


KILL_WORKLOAD = """head -c 65536 /dev/zero | tr '\\000' '\\245' > /tmp/pattern
i=0
while true; do
    dd if=/tmp/pattern of=/dev/ubda bs=65536 seek=$((i % 256)) count=1 oflag=direct 2>/dev/null
    i=$((i + 1))
    [ $i = 40 ] && echo writing-steadily
done
"""


def child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def test_guest_killed_mid_write_leaves_a_consistent_cow(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    backing.write_bytes(b"\x11" * 16 * MIB)
    script = tmp_path / "workload.sh"
    script.write_text(KILL_WORKLOAD)
    process = subprocess.Popen([UBDSIM, "vm", "--kernel", "6.1", "--timeout", "180",
                                f"ubd0={cow},{backing}", "--",
                                str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_env(tmp_path))
    try:
        for line in process.stdout:
            if line.strip() == "writing-steadily":
                break
        qemu = [pid for pid in child_pids(process.pid)
                if b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(qemu) == 1
        os.kill(qemu[0], signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    assert process.returncode == 128 + signal.SIGKILL, stderr
    assert "ubdsim vm: error: qemu was killed by signal 9" in stderr
    assert_cleaned_up(tmp_path)
    unit = open_unit(UnitSpec(0, str(cow), str(backing)), get_profile("6.1"))
    try:
        marked = [(start, count) for allocated, start, count
                  in bits.iter_runs(unit.cow.bitmap, 0, unit.size // 512) if allocated]
        assert marked
        for start, count in marked:
            assert unit.read(start * 512, count * 512) == b"\xa5" * count * 512
    finally:
        unit.close()


def test_guest_panic_and_timeout_are_errors_with_everything_stopped(tmp_path: Path) -> None:
    image = tmp_path / "raw.img"
    image.write_bytes(bytes(MIB))
    panic = vm(tmp_path, [f"ubd0={image}"], "echo c > /proc/sysrq-trigger\nsleep 100\n")
    assert panic.returncode == 1
    assert panic.stderr.splitlines()[-1].startswith(
        "ubdsim vm: error: the guest stopped without reporting a status (kernel panic?)")
    assert_cleaned_up(tmp_path)
    slow = vm(tmp_path, [f"ubd0={image}"], "sleep 100\n", "--timeout", "1")
    assert slow.returncode == 124
    assert slow.stderr.splitlines()[-1] == "ubdsim vm: error: timed out after 1 s; guest stopped"
    assert_cleaned_up(tmp_path)
