#!/usr/bin/env python3
"""Benchmark: `ubdsim moo` vs `uml_moo` merging a 1 GiB backing file with a 10% dirty COW file.

    python3 scripts/bench_moo.py [--size-mib 1024] [--dirty 0.10] [--dir /tmp]

Set-up (not timed): a backing file of seeded random bytes (every sector non-zero, so neither
tool can skip anything), a COW file made by uml_mkcow, and 10% of the device's 4 KiB blocks,
picked at random, written into the COW file with seeded random bytes: the scattered pattern a
guest's page cache produces. Then, once each and side by side in one run (page cache warm for
both: the files were just written; `sync` before each so no tool pays for earlier writeback):
  uml_moo COW a.img        and        ubdsim moo COW b.img
The two outputs are compared byte for byte, and the wall-clock times and their ratio printed.
The machine may be shared: run it once, not in a loop.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ubdsim.cow import bitmap as bm  # noqa: E402
from ubdsim.cow.image import CowImage  # noqa: E402

BLOCK = 4096


def make_backing(path: str, size: int, rng: np.random.Generator) -> None:
    with open(path, "wb") as f:
        step = 64 << 20
        for offset in range(0, size, step):
            f.write(rng.integers(1, 256, min(step, size - offset), dtype=np.uint8).tobytes())


def dirty_cow(cow: str, size: int, fraction: float, rng: np.random.Generator) -> int:
    """Write `fraction` of the 4 KiB blocks into the COW file; returns sectors marked."""
    blocks = size // BLOCK
    picked = np.sort(rng.choice(blocks, int(blocks * fraction), replace=False))
    with CowImage.open(cow, writable=True) as image:
        data = rng.integers(0, 256, len(picked) * BLOCK, dtype=np.uint8).tobytes()
        base = image.geometry.data_offset
        for i, block in enumerate(picked.tolist()):
            os.pwrite(image.fd, data[i * BLOCK:(i + 1) * BLOCK], base + block * BLOCK)
            bm.set_range(image.bitmap, block * 8, 8)
        image.fsync()
    return len(picked) * 8


def timed(cmd: list[str], cwd: str) -> float:
    # Start each tool with no dirty page cache left by the set-up or the other tool, so
    # neither pays for the other's writeback. uml_moo never fsyncs; ubdsim's time includes
    # its own fsync of the whole new image.
    os.sync()
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed: {result.stderr.strip()}")
    return elapsed


def same_content(a: str, b: str, chunk: int = 16 << 20) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dirty", type=float, default=0.10)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new one in /tmp)")
    args = parser.parse_args(argv)
    if shutil.which("uml_moo") is None or shutil.which("uml_mkcow") is None:
        sys.exit("bench: uml_moo/uml_mkcow not installed (Debian: uml-utilities)")
    work = tempfile.mkdtemp(prefix="bench-moo-", dir=args.dir)
    try:
        size = args.size_mib << 20
        rng = np.random.default_rng(1)
        print(f"set-up: {args.size_mib} MiB backing, {args.dirty:.0%} of 4 KiB blocks dirty ...",
              flush=True)
        make_backing(os.path.join(work, "backing"), size, rng)
        subprocess.run(["uml_mkcow", "cow", "backing"], cwd=work, check=True)
        marked = dirty_cow(os.path.join(work, "cow"), size, args.dirty, rng)
        print(f"        {marked} of {size // 512} sectors marked")
        ubdsim = [sys.executable, "-m", "ubdsim", "moo", "cow", "b.img"]
        t_uml = timed(["uml_moo", "cow", "a.img"], work)
        t_ubd = timed(ubdsim, work)
        identical = same_content(os.path.join(work, "a.img"), os.path.join(work, "b.img"))
        print(f"uml_moo     {t_uml:8.2f} s")
        print(f"ubdsim moo  {t_ubd:8.2f} s   (includes Python start-up and the final fsync)")
        print(f"ratio       {t_ubd / t_uml:8.2f}   (ubdsim / uml_moo; below 1 means ubdsim is faster)")
        print(f"outputs     {'identical' if identical else 'DIFFERENT'}")
        return 0 if identical else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
