"""kernel_ref.launcher, the one way every test and tool boots the real linux.uml.

Each test boots the real kernel: what a boot hands back (the guest command's streams and
status, run in the caller's directory), where its files live (a private directory, the
mconsole socket included, gone afterwards), what the timeout does (the whole process group
killed), and the one-line KernelUnavailable for a kernel that cannot run: not installed, no
ptrace (under `strace -f` a process cannot be traced twice), or dead before init (the line
the kernel died with).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel_ref import launcher
from tests.vm.test_vm import processes_mentioning

REPO = Path(__file__).resolve().parents[2]


def _private_dir(pid: int) -> Path:
    """The launcher's private directory, read from the running kernel's uml_dir= option
    (once the launcher's child has become linux.uml)."""
    for _ in range(100):
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        found = [w for w in words if w.startswith(b"uml_dir=")]
        if found:
            return Path(os.fsdecode(found[0].split(b"=", 1)[1])).parent
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never became linux.uml")


def test_a_boot_runs_the_command_in_the_callers_directory_and_hands_back_its_streams(tmp_path):
    run = launcher.boot([], ["sh", "-c", "pwd; echo to-stderr >&2; exit 7"], cwd=tmp_path)
    assert (run.status, run.output, run.errors, run.problem) == (7, f"{tmp_path}\n",
                                                                 "to-stderr\n", "")
    merged = launcher.boot([], script="echo one; echo two >&2; echo three\n", cwd=tmp_path,
                           merge_stderr=True)
    assert (merged.status, merged.output, merged.errors) == (0, "one\ntwo\nthree\n", "")
    assert f"Kernel command line: mem={launcher.DEFAULT_MEM} " in merged.console
    assert sorted(os.listdir(tmp_path)) == []          # nothing of the launcher's left here


def test_the_kernel_options_come_last_so_what_swallows_the_line_swallows_none_of_ours(tmp_path):
    """A lone quote joins the rest of the command line into one word, `--` hands the rest to
    init (6.1 parse_args()): both are ubd options the oracle tests must be able to pass."""
    for options in (['ubd1="x', "ubd2=y"], ["ubd1=a", "--", "ubd2=b"]):
        run = launcher.boot(options, ["true"], cwd=tmp_path)
        assert run.status == 0, (options, run.problem)
        line = next(l for l in run.console.splitlines() if l.startswith("Kernel command line"))
        assert line.startswith(f"Kernel command line: mem={launcher.DEFAULT_MEM} root=/dev/root "
                               "rootfstype=hostfs rootflags=/ rw init=/tmp/kref-")
        assert line.endswith(" " + " ".join(options) + " console=tty0")   # ours first, intact


def test_init_files_and_the_mconsole_socket_live_in_a_private_directory(tmp_path):
    with launcher.start([], script=f"while [ ! -e {tmp_path}/go ]; do sleep 0.1; done\n",
                        cwd=tmp_path, timeout=60) as kernel:
        private = _private_dir(kernel.pid)
        for _ in range(100):                  # the socket appears once the kernel is up
            sockets = [p for p in (private / "uml").rglob("*") if p.is_socket()]
            if sockets:
                break
            time.sleep(0.1)
        mode = stat.S_IMODE(private.stat().st_mode)
        (tmp_path / "go").touch()
        run = kernel.wait()
    assert run.status == 0, run.problem
    assert private.name.startswith("kref-") and mode == 0o700
    assert [s.name for s in sockets] == ["mconsole"]
    assert not private.exists()


def test_a_boot_past_its_timeout_is_killed_with_its_whole_process_group(tmp_path):
    with launcher.start([], ["sleep", "600"], cwd=tmp_path, timeout=5) as kernel:
        private = _private_dir(kernel.pid)
        run = kernel.wait()
    assert run.timed_out and run.status is None and 4.5 < run.seconds < 30
    assert run.problem == "linux.uml did not finish within 5 s (killed)"
    assert processes_mentioning(str(private)) == []
    assert not private.exists()


def test_a_kernel_that_dies_before_init_is_reported_by_the_line_it_died_with(tmp_path):
    with pytest.raises(launcher.KernelUnavailable) as died:
        launcher.boot(["init=/nonexistent-init"], ["true"], cwd=tmp_path)
    assert str(died.value) == ("linux.uml died before the guest's init ran (killed by SIGABRT): "
                               "Kernel panic - not syncing: Requested init /nonexistent-init "
                               "failed (error -2).")


def test_a_kernel_that_is_not_installed_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(launcher.KernelUnavailable) as missing:
        launcher.boot([], ["true"], cwd=tmp_path)
    assert str(missing.value) == ("linux.uml is not installed (Debian's user-mode-linux "
                                  "package; `make setup` installs it)")


def test_a_host_where_nothing_can_be_traced_is_named(tmp_path):
    """Under `strace -f` every new process is already traced, so PTRACE_TRACEME fails with
    EPERM for the launcher's probe as it would for linux.uml's own children."""
    done = subprocess.run(["strace", "-f", "-o", "/dev/null", sys.executable, "-m", "kernel_ref",
                           "boot", "--", "true"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("python -m kernel_ref boot: error: cannot ptrace on this host "
                           "(PTRACE_TRACEME: Operation not permitted), and linux.uml runs every "
                           "guest process under ptrace\n")


def test_an_oracle_test_fails_with_the_one_line_and_no_kernel_log(tmp_path):
    """tests/conftest.py turns KernelUnavailable into the whole failure report."""
    (tmp_path / "test_oracle.py").write_text(
        "from kernel_ref import launcher\n\n"
        "def test_needs_the_kernel(tmp_path):\n"
        "    launcher.boot([], ['true'], cwd=tmp_path)\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                           "-p", "no:cacheprovider", str(tmp_path / "test_oracle.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert done.returncode == 1, done.stdout
    failure = done.stdout.split("_ test_needs_the_kernel _")[1].split("=====")[0]
    assert [line for line in failure.splitlines() if line.strip(" _")] == [
        "linux.uml cannot run here: linux.uml is not installed (Debian's user-mode-linux "
        "package; `make setup` installs it)"]
