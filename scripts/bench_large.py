#!/usr/bin/env python3
"""Benchmark: `ubdsim info`, `map` and `check` on a 16 TiB sparse COW file, time and max RSS.

    python3 scripts/bench_large.py [--dir /dev/shm] [--json]

Set-up (not timed): a 16 TiB sparse backing file (`truncate -s 16T`) with one written
extent, a COW file over it made by uml_mkcow (its bitmap is 4 GiB, all hole), and a few
extents written into the COW file (at 0, 5 TiB, 12 TiB + 512, the last 4 KiB, and a 1 MiB
run): 2311 marked sectors. The files live on tmpfs (/dev/shm) by default: ext4 caps a file
at 16 TiB - 4 KiB and uml_mkcow cannot make this COW file there (`cow bitmap lseek failed`).
Then each command runs once under `/usr/bin/time -v`, which gives its wall-clock time and
maximum resident set size (Python start-up included, from a bytecode cache as an installed
tool starts: bench_rows.ubdsim_env()). Each answer is checked (marked
sectors, the map's data runs, check's exit code) before it is counted. The anchor is the
goal of issue 14: under 1 s and 100 MB each.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_rows import print_rows, row, ubdsim_env  # noqa: E402
from ubdsim.cow.image import CowImage  # noqa: E402

TIB = 1 << 40
SIZE = 16 * TIB
WRITES = [(0, 4096), (5 * TIB, 65536), (12 * TIB + 512, 512), (SIZE - 4096, 4096),
          (3 * TIB + (7 << 20), 1 << 20)]          # (offset, length), all marked in the COW
BACKING_DATA = (9 * TIB, 1 << 20)                  # one extent of data in the backing file
GOAL_SECONDS, GOAL_MB = 1.0, 100.0
ELAPSED = re.compile(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([0-9.]+)")
MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def build(work: str) -> None:
    with open(os.path.join(work, "backing"), "wb") as f:
        f.truncate(SIZE)
        f.seek(BACKING_DATA[0])
        f.write(b"\xa5" * BACKING_DATA[1])
    done = subprocess.run(["uml_mkcow", "cow", "backing"], cwd=work, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"bench_large: uml_mkcow failed: {(done.stderr or done.stdout).strip()}")
    with CowImage.open(os.path.join(work, "cow"), writable=True) as image:
        for offset, length in WRITES:
            image.write(offset, b"\x5a" * length)


def timed(work: str, env: dict[str, str], *args: str) -> tuple[float, float, str, int]:
    """(seconds, max RSS in MB, stdout, exit code) of `ubdsim ARGS` under /usr/bin/time -v."""
    done = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "ubdsim", *args],
                          cwd=work, capture_output=True, text=True, env=env)
    hours, minutes, seconds = ELAPSED.search(done.stderr).groups()
    elapsed = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    rss_mb = int(MAX_RSS.search(done.stderr).group(1)) / 1000
    return elapsed, rss_mb, done.stdout, done.returncode


def checked(name: str, stdout: str, code: int) -> str | None:
    """Why the answer of `name` is wrong, or None."""
    marked = sum(length // 512 for _, length in WRITES)
    if name == "info":
        info = json.loads(stdout)
        if info["sectors_marked"] != marked:
            return f"info: {info['sectors_marked']} sectors marked, expected {marked}"
    elif name == "map":
        data = [(e["start"], e["length"]) for e in json.loads(stdout) if e["data"]]
        expected = sorted(WRITES + [BACKING_DATA])
        if data != expected:
            return f"map: data runs {data}, expected {expected}"
    elif code != 0 or json.loads(stdout)["marked_sectors"] != marked:
        return f"check: exit {code}, {json.loads(stdout).get('marked_sectors')} sectors marked"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default="/dev/shm",
                        help="where the files go (default /dev/shm: tmpfs holds 16 TiB files)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON rows")
    args = parser.parse_args(argv)
    for tool in ("uml_mkcow", "/usr/bin/time"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_large: {tool} is not installed (Debian: uml-utilities, time)")
    work = tempfile.mkdtemp(prefix="bench-large-", dir=args.dir)
    rows, wrong = [], []
    try:
        build(work)
        env = ubdsim_env(ROOT)
        for name in ("info", "map", "check"):
            seconds, rss, stdout, code = timed(work, env, name, "--json", "cow")
            problem = checked(name, stdout, code)
            if problem:
                wrong.append(problem)
            rows.append(row(f"{name} 16 TiB sparse COW", "s", round(seconds, 3), GOAL_SECONDS,
                            "goal (issue 14)", "lower"))
            rows.append(row(f"{name} 16 TiB sparse COW, max RSS", "MB", round(rss, 1), GOAL_MB,
                            "goal (issue 14)", "lower"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print_rows(rows)
    else:
        print(f"16 TiB sparse COW ({len(WRITES)} written extents), on {args.dir}:")
        for r in rows:
            print(f"  {r['figure']:34} {r['ours']:8.3f} {r['unit']:2}  (goal < {r['anchor']:g})")
    for problem in wrong:
        print(f"bench_large: WRONG ANSWER: {problem}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
