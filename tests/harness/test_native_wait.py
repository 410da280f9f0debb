"""The tracer's C loop (transport/native_wait.py, native/stopwait.c) answers the stops of
calls on descriptors that are no device, and only those.

- Every call of the table's FD_FIRST set must have a handler that answers PASS when its
  first argument is no device descriptor, looking at nothing else first: that is what lets
  the C loop answer for it.
- A guest making each of those calls on a file, a pipe and bad descriptors prints what the
  host kernel gives it natively, under the C loop and under the Python loop
  (UBDSIM_PYTHON_WAIT=1); under the C loop its 2000 writes to /dev/null never reach Python.
- Device descriptors reached through dup2() onto 0 and F_DUPFD (the host kernel makes
  those, ubdsim never sees them) are still served by the device model: the bytes read are
  the raw image's.
- The library is built from its source into a fresh cache directory on first use.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from ubdsim.harness.syscalls.table import BY_NUMBER, FD_FIRST, FD_FIRST_NUMBERS
from ubdsim.harness.syscalls.result import PassThrough
from ubdsim.harness.transport import ptrace

from .oracle import make_backing, split_stats

GUEST = Path(__file__).parent / "guests" / "fd_calls.py"
UBDSIM = [sys.executable, "-m", "ubdsim"]


class _OnlyFd:
    """A handler's `h` that knows no device descriptor and refuses every other question."""

    def fd(self, tid: int, fd: int):
        return None

    def __getattr__(self, name: str):
        raise AssertionError(f"handler asked h.{name} before h.fd()")


def test_every_fd_first_handler_passes_a_descriptor_that_is_no_device():
    assert len(FD_FIRST_NUMBERS) == len(FD_FIRST)
    for nr in FD_FIRST_NUMBERS:
        entry = BY_NUMBER[nr]
        for fcntl_cmd in (0, 1, 3, 4, 1030):          # F_DUPFD F_GETFD F_GETFL F_SETFL ...
            regs = ptrace.Regs(rdi=5, rsi=fcntl_cmd, rdx=0x1000, r10=0)
            assert isinstance(entry.handler(_OnlyFd(), 1, regs), PassThrough), entry.name


def _ubdsim(tmp: Path, env: dict[str, str]) -> tuple[str, dict[str, str]]:
    proc = subprocess.run([*UBDSIM, "run", "--stats", "--kernel", "6.1", "ubd0=raw.img", "--",
                           sys.executable, str(GUEST), str(tmp), "device"],
                          cwd=tmp, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, split_stats(proc.stderr)[1]


def test_c_loop_answers_what_the_host_answers_and_serves_dup_descriptors(tmp_path):
    make_backing(tmp_path / "raw.img", 1 << 20, seed=11)
    image = (tmp_path / "raw.img").read_bytes()
    native = subprocess.run([sys.executable, str(GUEST), str(tmp_path)], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    cache = tmp_path / "cache"
    c_out, c_stats = _ubdsim(tmp_path, {"XDG_CACHE_HOME": str(cache)})
    py_out, py_stats = _ubdsim(tmp_path, {"UBDSIM_PYTHON_WAIT": "1"})
    assert list((cache / "ubdsim").glob("stopwait-*.so")), "the C loop was not built"
    assert c_stats["loop"] == "c" and py_stats["loop"] == "python"
    assert py_stats["c"] == "0", py_stats
    assert int(c_stats["c"]) >= 2000, c_stats
    assert int(py_stats["python"]) - int(c_stats["python"]) >= 2000, (c_stats, py_stats)
    assert c_out == py_out
    assert c_out.startswith(native)
    digest = lambda data: hashlib.sha256(data).hexdigest()[:16]     # noqa: E731
    assert c_out[len(native):].splitlines() == [
        f"fd 0 {digest(image[:65536])} 65536",
        f"fd 700 {digest(image[8192:12288])} 0 {1 << 20}"]
