"""`ubdsim run` as a process supervisor: exit status passthrough, interruption kills the
whole guest tree, no traced process survives, a guest (or ubdsim itself) killed with
SIGKILL mid-write leaves a consistent COW file, profile node aliases (issue 5)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.profiles import get_profile

from .oracle import UBDSIM, cow_regions, make_backing, ubdsim_run

GUESTS = Path(__file__).parent / "guests"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_backing(tmp_path / "back.img", 8 << 20, seed=7)
    return tmp_path


WORDS = ["ubd0=cow.img,back.img"]


@pytest.mark.parametrize("command, status", [
    ("exit 7", 7), ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15), ("true", 0)])
def test_exit_status_is_the_guests(workdir, command, status):
    assert ubdsim_run(workdir, WORDS, ["sh", "-c", command]).status == status


def test_missing_command_is_127(workdir):
    res = ubdsim_run(workdir, WORDS, ["no-such-program-here"])
    assert res.status == 127
    assert "no-such-program-here" in res.output


def test_usage_error_without_separator(workdir):
    proc = subprocess.run([*UBDSIM, "run", "--kernel", "6.1", *WORDS, "true"], cwd=workdir,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--" in proc.stderr


def _gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether `pid` disappears (reaped) within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_interrupt_kills_the_guest_tree(workdir):
    proc = subprocess.Popen(
        [*UBDSIM, "run", "--kernel", "6.1", *WORDS, "--", "sh", "-c",
         "sleep 1000 & echo $$ $!; sleep 1000"], cwd=workdir, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert all(_gone(pid) for pid in pids)


def _assert_consistent(cow: Path) -> int:
    """Every sector the bitmap marks holds its writer stamp; returns how many are marked."""
    import numpy as np
    bitmap, data = cow_regions(cow)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), bitorder="little")
    marked = np.nonzero(bits)[0]
    for sector in marked.tolist():
        got = data[sector * 512:(sector + 1) * 512]
        assert got == f"stamp {sector:010d} ".encode().ljust(512, b"#"), sector
    return len(marked)


@pytest.mark.parametrize("victim", ["guest", "ubdsim"])
@pytest.mark.parametrize("mode", ["buffered", "direct"])
def test_sigkill_mid_write_leaves_consistent_cow(workdir, victim, mode):
    proc = subprocess.Popen(
        [*UBDSIM, "run", "--kernel", "6.1", *WORDS, "--", "python3",
         str(GUESTS / "writer.py"), mode], cwd=workdir, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    guest = int(proc.stdout.readline())
    os.kill(guest if victim == "guest" else proc.pid, signal.SIGKILL)
    status = proc.wait(timeout=60)
    assert status == (128 + signal.SIGKILL if victim == "guest" else -signal.SIGKILL)
    assert _gone(guest)
    # A killed guest's kernel lives on and writes its dirty pages back at the close; a
    # killed ubdsim is a killed kernel: buffered writes not yet written back are lost (only
    # what the 4 MiB background write-back already wrote is there), O_DIRECT ones are not.
    lost_with_the_kernel = mode == "buffered" and victim == "ubdsim"
    assert _assert_consistent(workdir / "cow.img") >= (0 if lost_with_the_kernel else 20 * 128)


def test_every_node_spelling_names_the_unit(workdir):
    """2.4 (default profile) and 6.1 both accept /dev/ubd0, /dev/ubda and /dev/ubd/0."""
    (workdir / "raw.img").write_bytes(bytes(3 << 20))
    for kernel in ("2.4", "6.1"):
        expected = open_unit(UnitSpec(0, str(workdir / "raw.img")), get_profile(kernel))
        size = expected.size
        expected.close()
        res = ubdsim_run(workdir, ["ubd0=raw.img"],
                         ["blockdev", "--getsize64", "/dev/ubd0", "/dev/ubda", "/dev/ubd/0"],
                         kernel=kernel)
        assert res.status == 0, res.output
        assert res.output.split() == [str(size)] * 3
