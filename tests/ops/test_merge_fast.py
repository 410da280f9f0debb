"""The merge's fast path (ops/merge_fast.py: copy_file_range, maps, numpy) against uml_moo.

Each example builds a sparse backing file (random data, stored zeros, holes; some of it
across the fast path's window boundary), a COW file (from the spec's byte tables, V2 or V3,
its data area page-aligned or not) with random runs of marked sectors (random bytes or
zeros, over data or holes, straddling 4 KiB blocks), and a device size that may end in a
partial block or sector. uml_moo, run during the test, gives the expected bytes; its output's
holes (it skips zero sectors) are the expected allocation. Where uml_moo is not exact (the
final partial sector it drops; V2's last sectors without a bit, whose bits it reads past its
buffer) the image is checked against the model: backing bytes with the marked sectors over.
"""
from __future__ import annotations

import os
import random
import shutil

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.cow.builders import build_cow, extent_map, run
from ubdsim.ops.merge import merge_new
from ubdsim.ops.merge_fast import WINDOW

SS = 512
BLOCK = 4096


def uml_moo(*args: str) -> None:
    assert shutil.which("uml_moo"), "uml_moo is not installed (Debian: uml-utilities)"
    done = run(["uml_moo", *args])
    assert done.returncode == 0, f"uml_moo failed: {done.stderr.strip()}"


def sparse_backing(path: str, size: int, rng: random.Random) -> None:
    """Random extents, stored-zero extents and holes; one extent across WINDOW."""
    with open(path, "wb") as f:
        f.truncate(size)
        starts = [start for start in [WINDOW - 3 * BLOCK] if start < size]
        starts += [rng.randrange(size) for _ in range(6)]
        for start in starts:
            length = min(rng.choice([SS, BLOCK, 5 * BLOCK + 300, 64 << 10]), size - start)
            f.seek(start)
            f.write(bytes(length) if rng.random() < 0.3 else rng.randbytes(length))
    os.utime(path, (1_000_000_000, 1_000_000_000))


def marks_for(sectors: int, rng: random.Random) -> dict[int, bytes]:
    marks: dict[int, bytes] = {}
    for _ in range(rng.randrange(0, 40)):
        start = rng.choice([rng.randrange(sectors), WINDOW // SS - rng.randrange(1, 20),
                            sectors - rng.randrange(1, 10)])
        for s in range(max(0, start), min(sectors, start + rng.choice([1, 3, 8, 9, 130]))):
            marks[s] = bytes(SS) if rng.random() < 0.3 else rng.randbytes(SS)
    return marks


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1),
       size=st.sampled_from([WINDOW + 3 * BLOCK, WINDOW + 5 * BLOCK + 700, 2 * BLOCK + 1000,
                             (1 << 20) + 512]),
       version=st.sampled_from([3, 2]), align=st.sampled_from([4096, 512]))
def test_fast_merge_gives_uml_moos_bytes_and_holes(tmp, seed, size, version, align):
    rng = random.Random(seed)
    for name in ("cow", "oracle.img", "mine.img"):
        if os.path.exists(name):
            os.unlink(name)
    sparse_backing("backing", size, rng)
    marks = marks_for(-(-size // SS), rng)
    bitmap_len = build_cow("cow", version, "backing", marks, align=align)[2]
    uml_moo("cow", "oracle.img")
    merge_new("cow", "mine.img")
    with open("backing", "rb") as f:            # the model: backing bytes, marked sectors over
        model = bytearray(f.read())
    covered = min(bitmap_len * 8, -(-size // SS))   # V2's rounding bug: the last sectors
    for s, data in marks.items():                   # have no bit, they read the backing file
        if s < covered:
            model[s * SS:(s + 1) * SS] = data[:size - s * SS]
    with open("oracle.img", "rb") as f:
        oracle = f.read()
    with open("mine.img", "rb") as f:
        mine = f.read()
    assert len(oracle) == size // SS * SS        # uml_moo drops a final partial sector
    assert mine == model
    # uml_moo is right where every sector has a bit (past that it reads heap bytes as bits)
    right = min(covered, size // SS) * SS
    assert mine[:right] == oracle[:right]
    # holes compared on the blocks both decide alike: not the last one (uml_moo writes its
    # last sector even when it is zero, which gives its file its length; ubdsim truncates)
    whole = (right - 1) // BLOCK * BLOCK
    assert [(lo, min(hi, whole)) for lo, hi in extent_map("mine.img") if lo < whole] == \
        [(lo, min(hi, whole)) for lo, hi in extent_map("oracle.img") if lo < whole]
