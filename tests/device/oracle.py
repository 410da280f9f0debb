"""Booting linux.uml (the 6.1 oracle) with a guest script, and reading its ubd log lines."""
from __future__ import annotations

import os
import re
from pathlib import Path

from kernel_ref import launcher
from ubdsim.fileio import data_extents
from ubdsim.messages import MESSAGES


def readonly_mount(source: Path, target: Path) -> list[str]:
    """A command prefix that runs the rest in a private mount namespace where `target` is a
    read-only bind mount of `source` (opens there fail with EROFS)."""
    return ["unshare", "-m", "sh", "-c",
            'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"',
            "sh", str(source), str(target)]


def boot(workdir: Path, ubd_args: list[str], guest_lines: list[str], scratch: Path,
         prefix: list[str] = ()) -> str:
    """Boot linux.uml in `workdir` with `ubd_args`; the guest runs `guest_lines` there.
    `prefix` is put before the command (e.g. readonly_mount()). Returns the console output
    (also kept in scratch/console.txt)."""
    scratch.mkdir(parents=True, exist_ok=True)
    run = launcher.boot(ubd_args, script="\n".join(guest_lines) + "\n", cwd=workdir,
                        prefix=prefix, timeout=120)
    (scratch / "console.txt").write_text(run.console)
    assert run.status is not None, run.problem
    return run.console


def _pattern(text: str) -> re.Pattern:
    parts = re.split(r"(%[-\d]*(?:ll|l|z)?[dus])", text)
    regex = "".join(".*?" if p.startswith("%") else re.escape(p) for p in parts)
    return re.compile("^" + regex + "$")


_PATTERNS = [_pattern(m.texts["6.1"]) for m in MESSAGES.values()
             if "6.1" in m.texts and "\n" not in m.texts["6.1"]]


def ubd_lines(console: str, boot_only: bool = True) -> list[str]:
    """The console lines that are one of ubdsim's known device/COW printk texts, in order.

    With `boot_only`, only lines printed before init starts: the opens of the boot-time
    partition scan. (Every later first-open of a device by the guest runs ubd_open_dev()
    again and prints its open messages again, e.g. `Not locking ...`.)"""
    if boot_only:
        console = console.split("\nRun /", 1)[0]
    lines = [line.rstrip("\r") for line in console.splitlines()]
    return [line for line in lines if any(p.match(line) for p in _PATTERNS)
            and not line.startswith("Kernel command line")]


def extents(path: os.PathLike) -> list[tuple[int, int]]:
    """Allocated extents (SEEK_DATA/SEEK_HOLE) of a whole file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(data_extents(fd, 0, os.fstat(fd).st_size))
    finally:
        os.close(fd)
