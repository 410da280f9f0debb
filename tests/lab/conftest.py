"""The recorded workloads the lab tests share: a small ext4 filesystem made and filled
without mounting (the guest runs on the host): mkfs.ext4, then debugfs -w writes, each step
followed by `sync` and a mark; once on a buffered unit, once with flag s (O_SYNC)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import MARK, record, sparse_file

SIZE = 16 << 20
STEPS = f"""mkfs.ext4 -q -F /dev/ubda
sync
{MARK} ready
debugfs -w -R 'write a.txt a.txt' /dev/ubda
sync
{MARK} m1
cp --sparse=always c.cow snap.cow
debugfs -w -R 'mkdir d' /dev/ubda
sync
{MARK} m2
debugfs -w -R 'write n.txt d/n.txt' /dev/ubda
sync
{MARK} done
e2fsck -fn /dev/ubda
"""


@dataclass(frozen=True)
class Workload:
    dir: Path
    log: str
    stdout: str
    stderr: str


def _make(root: Path, unit: str) -> Workload:
    sparse_file(root / "b.img", SIZE)
    (root / "a.txt").write_text("a small file\n")
    (root / "n.txt").write_text("".join(f"line {i}\n" for i in range(3000)))
    done = record(root, "L", [f"{unit}=c.cow,b.img"], STEPS)
    assert done.returncode == 0, done.stderr
    return Workload(root, "L", done.stdout, done.stderr)


@pytest.fixture(scope="session")
def ext4_run(tmp_path_factory) -> Workload:
    """6.1, buffered (no flag s): what a guest sync cannot make durable."""
    return _make(tmp_path_factory.mktemp("ext4"), "ubd0")


@pytest.fixture(scope="session")
def ext4_sync_run(tmp_path_factory) -> Workload:
    """6.1 with flag s: every host write durable when it returns."""
    return _make(tmp_path_factory.mktemp("ext4s"), "ubd0s")
