"""Run the same guest shell script under linux.uml (the 6.1 oracle) and under `ubdsim run`.

The script (`body`) is written to the work directory and run as `sh body.sh` in both worlds,
with that directory as the current directory. linux.uml boots through kernel_ref.launcher,
whose init wrapper mounts /proc and powers off with sysrq; that wrapper must never run under
ubdsim (it would act on the host), so only the body is shared.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kernel_ref import launcher

UBDSIM = [sys.executable, "-m", "ubdsim"]
STATS = re.compile(r"^ubdsim run: stats: (.*)\n", re.M)


def split_stats(output: str) -> tuple[str, dict[str, str]]:
    """`ubdsim run --stats` output: the rest of it, and the stats line's key=value words."""
    words = STATS.search(output).group(1).split()
    return STATS.sub("", output), dict(word.split("=") for word in words)


@dataclass
class Outcome:
    output: str          # the body's stdout+stderr
    kernel_log: str      # what the kernel printed (linux.uml stdout, or ubdsim's --log)
    status: int


def _write_body(workdir: Path, body: str) -> None:
    (workdir / "body.sh").write_text(body)


def boot_uml(workdir: Path, words: list[str], body: str, mem: str = "128M") -> Outcome:
    """Boot linux.uml with `words`, run `sh body.sh` in `workdir` as part of init."""
    _write_body(workdir, body)
    run = launcher.boot(words, ["sh", "body.sh"], cwd=workdir, mem=mem, merge_stderr=True,
                        timeout=600)
    assert run.status is not None, run.problem
    return Outcome(run.output, run.console, run.status)


def ubdsim_run(workdir: Path, words: list[str], command: list[str], kernel: str = "6.1",
               extra: list[str] | None = None, timeout: float = 600) -> Outcome:
    """`ubdsim run --kernel K --log FILE WORDS -- COMMAND` in `workdir`."""
    log = workdir / "ubdsim.log"
    proc = subprocess.run(
        [*UBDSIM, "run", "--kernel", kernel, "--log", str(log), *(extra or []), *words, "--",
         *command], cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=timeout)
    output = proc.stdout.decode(errors="replace")
    log_text = log.read_text() if log.exists() else ""
    # stderr = kernel log lines, then the guest's own stderr; keep only the guest's part.
    err = proc.stderr.decode(errors="replace")
    if err.startswith(log_text):
        err = err[len(log_text):]
    return Outcome(output + err, log_text, proc.returncode)


def ubdsim_body(workdir: Path, words: list[str], body: str, kernel: str = "6.1") -> Outcome:
    """The body script under ubdsim, its stdout+stderr merged like the oracle's."""
    _write_body(workdir, body)
    (workdir / "ubdsim-body.sh").write_text("sh body.sh > ubdsim.out 2>&1\n")
    res = ubdsim_run(workdir, words, ["sh", "ubdsim-body.sh"], kernel)
    res.output = (workdir / "ubdsim.out").read_text(errors="replace")
    return res


def cow_regions(path: Path) -> tuple[bytes, bytes]:
    """(bitmap, data area) of a COW file, located by ubdsim's own header reader."""
    from ubdsim.cow.header import read_header
    from ubdsim.profiles import get_profile
    raw = path.read_bytes()
    header = read_header(raw[:8192], get_profile("6.1").format)
    geo = header.geometry()
    return (raw[geo.bitmap_offset:geo.bitmap_offset + geo.bitmap_len], raw[geo.data_offset:])


def make_backing(path: Path, size: int, seed: int) -> None:
    """Self-identifying content: every 512-byte sector starts with its number and a seed."""
    with open(path, "wb") as f:
        for sector in range(size // 512):
            f.write(f"seed {seed} sector {sector:08d}\n".encode().ljust(512, b"."))
