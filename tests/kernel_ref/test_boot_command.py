"""`python -m kernel_ref boot`: the real kernel by hand, judged against `ubdsim run`.

The door exists so a user can put the two side by side: the same words and command give the
same stdout, the same ubd messages then guest stderr on stderr, the same exit status and the
same COW file (bitmap and data), run in the same directory one after the other as kernel_ref
does. Its own errors are one line each, with the exit statuses its --help lists.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from tests.harness.oracle import cow_regions

REPO = Path(__file__).resolve().parents[2]
UBDSIM = str(Path(sys.executable).with_name("ubdsim"))
DOOR = [sys.executable, "-m", "kernel_ref", "boot"]
WORDS = ["ubd0=disk.cow,base.img"]
GUEST = """dd if=/dev/ubda bs=512 skip=3 count=2 2>/dev/null | md5sum
dd if=pattern.bin of=/dev/ubda bs=512 seek=9 count=3 oflag=direct conv=notrunc 2>/dev/null
dd if=/dev/ubda bs=4096 count=4 iflag=direct 2>/dev/null | md5sum
blockdev --getsize64 /dev/ubda
echo to-stderr >&2
exit 3
"""


def _door(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*DOOR, *argv], cwd=cwd, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _without_fix_line(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("python -m kernel_ref boot: XSAVE fix"))


def test_the_door_prints_what_ubdsim_run_prints(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    rng = random.Random(10)
    (work / "base.img").write_bytes(rng.randbytes(1 << 20))
    (work / "pattern.bin").write_bytes(rng.randbytes(3 * 512))
    (work / "guest.sh").write_text(GUEST)
    kernel = _door(*WORDS, "--", "sh", "guest.sh", cwd=work)
    kernel_cow = cow_regions(work / "disk.cow")
    os.rename(work / "disk.cow", tmp_path / "kernel.cow")
    ours = subprocess.run([UBDSIM, "run", "--kernel", "6.1", *WORDS, "--", "sh", "guest.sh"],
                          cwd=work, capture_output=True, text=True, timeout=180)
    assert kernel.returncode == ours.returncode == 3, kernel.stderr
    assert kernel.stdout == ours.stdout and len(kernel.stdout.splitlines()) == 3
    assert _without_fix_line(kernel.stderr) == ours.stderr == (
        'Creating "disk.cow" as COW file for "base.img"\nto-stderr\n')
    assert kernel_cow == cow_regions(work / "disk.cow")


def test_json_output_carries_status_messages_streams_and_the_fix(tmp_path):
    done = _door("--json", "ubd0=x.cow", "--", "sh", "-c", "echo hi; echo oops >&2; exit 4",
                 cwd=tmp_path)
    assert done.returncode == 4 and done.stderr == ""
    record = json.loads(done.stdout)
    assert (record["status"], record["stdout"], record["stderr"]) == (4, "hi\n", "oops\n")
    assert record["ubd_log"] == ["Failed to initialize ubd device 0 :Couldn't determine size "
                                 "of device's file"]
    assert record["options"] == ["ubd0=x.cow"] and record["problem"] == ""
    assert set(record["xstate_fix"]) == {"host_bytes", "mode", "applied", "about"}
    assert "Kernel command line: " in record["console"]


def test_a_guest_past_the_timeout_is_one_line_and_exit_1(tmp_path):
    done = _door("--timeout", "3", "--", "sleep", "100", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert _without_fix_line(done.stderr) == (  # unit 0 defaults to root_fs, absent here
        "Failed to initialize ubd device 0 :Couldn't determine size of device's file\n"
        "python -m kernel_ref boot: error: linux.uml did not finish within 3 s (killed)\n")


def test_a_kernel_that_dies_is_one_line_and_exit_1(tmp_path):
    done = _door("init=/nonexistent-init", "--", "true", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("python -m kernel_ref boot: error: linux.uml died before the "
                           "guest's init ran (killed by SIGABRT): Kernel panic - not syncing: "
                           "Requested init /nonexistent-init failed (error -2).\n")


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    for argv, message in ((["ubd0=x"], "missing '--' before COMMAND"),
                          (["ubd0=x", "--"], "no COMMAND after '--'"),
                          (["--timeout", "nan", "--", "true"], "must be a positive number"),
                          (["--timeout", "-1", "--", "true"], "must be a positive number"),
                          (["--xstate-fix", "maybe", "--", "true"], "invalid choice: 'maybe'")):
        done = _door(*argv, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == "", argv
        assert message in done.stderr.splitlines()[-1] and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_help_shows_how_to_compare_with_ubdsim_run(tmp_path):
    done = _door("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "ubdsim run --kernel 6.1 ubd0=disk.cow,base.img -- dd" in done.stdout
    assert "UBDSIM_XSTATE_FIX=auto|on|off" in done.stdout
