#!/usr/bin/env python3
"""Benchmark: crash states checked per second by `ubdsim crash` on a small ext4 workload.

    python3 scripts/bench_crash.py [--dir /tmp] [--jobs 1,2]

Set-up (not timed): `ubdsim run --kernel 6.1 --record L ubd0=c.cow,b.img` (16 MiB sparse
backing file) runs mkfs.ext4, then three debugfs -w steps (write a file, mkdir, write a
3000-line file), each followed by `sync` and `ubdsim mark` (the test suite's workload,
tests/lab/conftest.py). Then, timed, `ubdsim crash L --check 'e2fsck -fn {device}'`:
  process model, every host write after mkfs (--after ready), and
  power model at the four marks (every lost 512-byte piece of the run, one at a time),
with each --jobs value. Printed per run: crash states enumerated, distinct devices checked
(each one e2fsck run), failures, seconds, and checks per second (distinct devices / time:
a state that leaves a device already checked costs no e2fsck). Times include building every
state's device and copying it for the checker. The machine may be shared: run it once.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ubdsim.lab.crash import crash  # noqa: E402
from ubdsim.lab.logformat import read_log  # noqa: E402

MARK = f"{sys.executable} -m ubdsim mark"
STEPS = f"""set -e
mkfs.ext4 -q -F /dev/ubda
sync
{MARK} ready
debugfs -w -R 'write a.txt a.txt' /dev/ubda
sync
{MARK} m1
debugfs -w -R 'mkdir d' /dev/ubda
sync
{MARK} m2
debugfs -w -R 'write n.txt d/n.txt' /dev/ubda
sync
{MARK} done
"""
CHECK = "e2fsck -fn {device} >/dev/null 2>&1"


def record(work: str) -> str:
    with open(os.path.join(work, "b.img"), "wb") as f:
        f.truncate(16 << 20)
    with open(os.path.join(work, "a.txt"), "w") as f:
        f.write("a small file\n")
    with open(os.path.join(work, "n.txt"), "w") as f:
        f.write("".join(f"line {i}\n" for i in range(3000)))
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "ubdsim", "run", "--kernel", "6.1", "--record",
                           "L", "ubd0=c.cow,b.img", "--", "sh", "-c", STEPS], cwd=work, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_crash: the recorded workload failed: {done.stderr.strip()}")
    return os.path.join(work, "L")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dir", default=None, help="where the work files go (default: $TMPDIR)")
    parser.add_argument("--jobs", default="1,2", help="comma-separated --jobs values")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON rows")
    args = parser.parse_args()
    if args.json:                       # the human lines go to stderr, the rows to stdout
        with contextlib.redirect_stdout(sys.stderr):
            results = measure(args)
        return json_rows(results)
    measure(args)
    return 0


def measure(args: argparse.Namespace) -> list[tuple[str, int, object]]:
    """The runs below, printed as they finish; returns (label, jobs, result) of each."""
    results = []
    work = tempfile.mkdtemp(prefix="bench-crash-", dir=args.dir)
    try:
        path = record(work)
        cwd = os.getcwd()
        os.chdir(work)
        try:
            with read_log(path) as log:
                writes = len(log.host_writes())
                print(f"workload: mkfs.ext4 + 3 debugfs steps on a 16 MiB 6.1 COW unit, "
                      f"{writes} host writes, log {os.path.getsize(path) >> 10} KiB")
                for jobs in [int(j) for j in args.jobs.split(",")]:
                    for label, options in (("process, after mkfs", {"after": "ready"}),
                                           ("power, at the marks", {"model": "power",
                                                                    "points": "marks",
                                                                    "max_states": 100000})):
                        r = crash(log, CHECK, jobs=jobs, **options)
                        results.append((label, jobs, r))
                        print(f"  {label:<20} jobs {jobs}: {r.states:5d} states, {r.checked:4d} "
                              f"checked, {len(r.failed):4d} failed, {r.elapsed:5.2f} s, "
                              f"{r.per_second:6.1f} crash states checked per second")
        finally:
            os.chdir(cwd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def json_rows(results: list[tuple[str, int, object]]) -> int:
    """--json (scripts/bench_table.py): the figures above as bench_rows rows (no anchor: no
    other tool enumerates crash states)."""
    from bench_rows import print_rows, row
    print_rows([row(f"crash {label}, jobs {jobs}", "checks/s", round(r.per_second, 1), None,
                    "-", "higher") for label, jobs, r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
