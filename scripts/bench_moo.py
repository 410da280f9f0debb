#!/usr/bin/env python3
"""Benchmark: `ubdsim moo` vs `uml_moo` merging a 1 GiB backing file with a dirty COW file.

    python3 scripts/bench_moo.py [--size-mib 1024] [--dirty 0.10,0.01] [--dir /tmp] [--json]

Set-up (not timed), per dirty fraction: a backing file of seeded random bytes (every sector
non-zero, so neither tool can skip anything), a COW file made by uml_mkcow, and that fraction
of the device's 4 KiB blocks, picked at random, written into the COW file with seeded random
bytes: the scattered pattern a guest's page cache produces. Then, once each and side by side
in one run (page cache warm for both: the files were just written; `sync` before each so no
tool pays for earlier writeback):
  uml_moo COW a.img        and        ubdsim moo COW b.img
  ubdsim moo -t unsafe COW d.img      (no fsync, as uml_moo and qemu-img convert's default)
and, as the floor of any durable merge on this disk, the host copying the backing file:
  cp backing c.img && sync c.img      (coreutils: copy_file_range, then fsync)
ubdsim starts from a bytecode cache, as an installed tool does (bench_rows.ubdsim_env()).
The three outputs are compared byte for byte and their holes (SEEK_DATA, all but the last
block, which uml_moo always writes), and the wall-clock times and their ratio printed
(--json: the rows of scripts/bench_rows.py). The machine may be shared: run it once, not in a
loop.

Then the same again on a fresh XFS with reflink=1 on a loop device (tests/mounts.py; root and
mkfs.xfs needed, --no-xfs to leave it out): there the host's copy_file_range() shares the
backing file's extents instead of copying them (the issue's "reflinks where the file system
has them"), so ubdsim's time is what deciding the holes and writing the COW's sectors cost,
while uml_moo still reads and writes every sector.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_rows import print_rows, row, ubdsim_env  # noqa: E402
from ubdsim.cow import bitmap as bm  # noqa: E402
from ubdsim.cow.image import CowImage  # noqa: E402
from ubdsim.fileio import data_extents  # noqa: E402

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


def timed(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> float:
    # Start each tool with no dirty page cache left by the set-up or the other tool, so
    # neither pays for the other's writeback. uml_moo never fsyncs; ubdsim's time includes
    # its own fsync of the whole new image.
    os.sync()
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
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


def same_holes(a: str, b: str) -> bool:
    """The same data extents, but for the last block (uml_moo writes its last sector always)."""
    maps = []
    for path in (a, b):
        fd = os.open(path, os.O_RDONLY)
        try:
            end = (os.fstat(fd).st_size - 1) // BLOCK * BLOCK
            maps.append([(lo, min(hi, end)) for lo, hi in data_extents(fd, 0, end)])
        finally:
            os.close(fd)
    return maps[0] == maps[1]


def measure(work: str, size_mib: int, dirty: float,
            say) -> tuple[float, float, float, float, bool]:
    """(uml_moo seconds, ubdsim seconds, cp + sync seconds, ubdsim -t unsafe seconds, outputs
    identical with the same holes)."""
    size = size_mib << 20
    rng = np.random.default_rng(1)
    say(f"set-up: {size_mib} MiB backing, {dirty:.0%} of 4 KiB blocks dirty ...")
    make_backing(os.path.join(work, "backing"), size, rng)
    subprocess.run(["uml_mkcow", "cow", "backing"], cwd=work, check=True)
    marked = dirty_cow(os.path.join(work, "cow"), size, dirty, rng)
    say(f"        {marked} of {size // 512} sectors marked")
    ubdsim = [sys.executable, "-m", "ubdsim", "moo", "cow", "b.img"]
    t_uml = timed(["uml_moo", "cow", "a.img"], work)
    t_ubd = timed(ubdsim, work, ubdsim_env(ROOT))
    t_cp = timed(["sh", "-c", "cp backing c.img && sync c.img"], work)
    t_unsafe = timed([*ubdsim[:-2], "-t", "unsafe", "cow", "d.img"], work, ubdsim_env(ROOT))
    a, b, d = (os.path.join(work, name) for name in ("a.img", "b.img", "d.img"))
    identical = all(same_content(a, x) and same_holes(a, x) for x in (b, d))
    for name in ("a.img", "b.img", "c.img", "d.img", "cow", "backing"):
        os.unlink(os.path.join(work, name))
    return t_uml, t_ubd, t_cp, t_unsafe, identical


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dirty", default="0.10,0.01",
                        help="dirty fractions, comma-separated (default 0.10,0.01)")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new one in /tmp)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON rows")
    parser.add_argument("--no-xfs", action="store_true",
                        help="leave out the runs on a loop-mounted XFS with reflinks")
    args = parser.parse_args(argv)
    if shutil.which("uml_moo") is None or shutil.which("uml_mkcow") is None:
        sys.exit("bench: uml_moo/uml_mkcow not installed (Debian: uml-utilities)")
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if args.json else \
        (lambda text: print(text, flush=True))
    work = tempfile.mkdtemp(prefix="bench-moo-", dir=args.dir)
    rows: list[dict] = []
    try:
        ok = run_all(work, args, "", rows, say)
        if not args.no_xfs:
            ok = on_xfs(work, args, rows, say) and ok
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print_rows(rows)
    return 0 if ok else 1


def on_xfs(work: str, args, rows: list[dict], say) -> bool:
    """run_all() on a loop-mounted XFS with reflinks made in `work`."""
    from tests.mounts import xfs_reflink
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        say("xfs: left out (needs root and mkfs.xfs: make setup installs xfsprogs)")
        return True
    size = f"{args.size_mib * 5 + 512}m"          # backing, cow, three images, slack
    try:
        with xfs_reflink(Path(work) / "xfs", size) as mount:
            say(f"on a loop-mounted XFS (reflink=1) at {mount}:")
            return run_all(str(mount), args, ", xfs reflink", rows, say)
    except subprocess.CalledProcessError as err:
        say(f"xfs: left out ({err.cmd[0]} failed: {(err.stderr or b'').decode().strip()})")
        return True


def run_all(work: str, args, where: str, rows: list[dict], say) -> bool:
    """measure() for each dirty fraction in `work`; rows appended, figures suffixed `where`."""
    ok = True
    for dirty in (float(x) for x in args.dirty.split(",")):
        t_uml, t_ubd, t_cp, t_unsafe, identical = measure(work, args.size_mib, dirty, say)
        ok = ok and identical
        figure = f"moo {args.size_mib} MiB, {dirty:.0%} dirty{where}"
        rows.append(row(figure, "s", round(t_ubd, 3), round(t_uml, 3), "uml_moo", "lower"))
        rows.append(row(figure, "s", round(t_ubd, 3), round(t_cp, 3), "host cp + sync",
                        "lower"))
        rows.append(row(f"{figure}, -t unsafe", "s", round(t_unsafe, 3), round(t_uml, 3),
                        "uml_moo", "lower"))
        say(f"uml_moo     {t_uml:8.2f} s   (never fsyncs: its image is not on disk yet)")
        say(f"ubdsim moo  {t_ubd:8.2f} s   (includes Python start-up and the final fsync)")
        say(f"cp + sync   {t_cp:8.2f} s   (the host copying the backing file durably)")
        say(f"-t unsafe   {t_unsafe:8.2f} s   (ubdsim without its fsync, like uml_moo)")
        say(f"ratio       {t_ubd / t_uml:8.2f}   (ubdsim / uml_moo; below 1 means ubdsim is faster)")
        say(f"            {t_ubd / t_cp:8.2f}   (ubdsim / cp + sync)")
        say(f"outputs     {'identical, same holes' if identical else 'DIFFERENT'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
