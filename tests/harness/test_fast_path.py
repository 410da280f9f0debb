"""The fast paths against the exact path (UBDSIM_EXACT_IO=1, every byte through the device
model request by request): O_DIRECT (rw.py: up to 64 KiB copied by ubdsim at the stop,
larger calls rewritten into pread64/pwrite64 on a host descriptor planted in the guest) and
buffered readahead (pagecache.py: a bio on one side of the bitmap in one host read).

Random request sequences (hypothesis) on a small raw unit and a small COW unit whose bitmap
was partly set beforehand (some ranges all set, some all clear, some mixed), read()/write()
and pread64/pwrite64 with O_DIRECT, runs of read()/write() with no other call between them
(which the C loop's lane serves after the first, native/stopwait.c) and buffered pread64
("bread"), aligned and misaligned, inside, across and past the device's end: both
paths must print the same results, digests of the bytes read and file positions, and leave
the host files (raw image, COW file, backing file) byte for byte the same. The planted
descriptor must be there on the fast path, and not on the exact one; `--stats` tells which
path each call took.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .oracle import make_backing, split_stats

GUEST = Path(__file__).parent / "guests" / "direct_ops.py"
SIZE = 1 << 20                       # device size: 2048 sectors
SECTORS = SIZE // 512
UBDSIM = [sys.executable, "-m", "ubdsim"]

ops_strategy = st.lists(
    st.tuples(st.sampled_from(["read", "write", "pread", "pwrite", "bread", "rburst",
                               "wburst"]),
              st.one_of(st.integers(0, SECTORS - 1).map(lambda s: s * 512),
                        st.integers(SECTORS - 80, SECTORS + 4).map(lambda s: s * 512),
                        st.integers(0, SIZE)),                       # mostly misaligned
              st.one_of(st.integers(1, 160).map(lambda s: s * 512), st.integers(1, 9000)),
              st.sampled_from([0, 0, 0, 512, 100]),                   # buffer misalignment
              st.integers(0, 1000)),
    min_size=4, max_size=14)


def _run(work: Path, word: str, exact: bool, command: list[str]) -> tuple[str, dict[str, str]]:
    """The guest's output and the --stats counts."""
    env = dict(os.environ, UBDSIM_EXACT_IO="1" if exact else "0")
    proc = subprocess.run([*UBDSIM, "run", "--stats", "--kernel", "6.1", word, "--", *command],
                          cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return split_stats(proc.stdout + proc.stderr)


def _prepare(tmp: Path, cow: bool) -> tuple[Path, str]:
    base = tmp / "base"
    base.mkdir()
    if cow:
        make_backing(base / "back.img", SIZE, seed=5)
        word = "ubd0=disk.cow,back.img"
        # Preset bits (exact path): a long all-set range, scattered sectors, one mixed run.
        pre = [("pwrite", 64 * 512, 256 * 512, 0, 1), ("pwrite", 900 * 512, 8 * 512, 0, 2),
               ("pwrite", 1000 * 512, 512, 0, 3), ("pwrite", 1003 * 512, 1024, 0, 4),
               ("pwrite", 1500 * 512, 100 * 512, 0, 5)]
        (base / "ops.json").write_text(json.dumps(pre))
        _run(base, word, True, ["python3", str(GUEST)])
    else:
        make_backing(base / "raw.img", SIZE, seed=7)
        word = "ubd0=raw.img"
    return base, word


def _compare(tmp: Path, base: Path, word: str, ops, must_plant: bool = False) -> None:
    results = {}
    for side in ("fast", "exact"):
        work = tmp / "run"             # one directory: the COW header names the backing file
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(base, work)
        (work / "ops.json").write_text(json.dumps(ops))
        out, stats = _run(work, word, side == "exact", ["python3", str(GUEST)])
        files = {p.name: p.read_bytes() for p in sorted(work.iterdir())
                 if p.suffix in (".img", ".cow")}
        results[side] = (out, files, (work / "planted.txt").read_text(), stats)
    (fast_out, fast_files, planted, fast_stats), (exact_out, exact_files, none, exact_stats) = (
        results["fast"], results["exact"])
    assert fast_out == exact_out
    assert fast_files.keys() == exact_files.keys()
    for name in fast_files:
        assert fast_files[name] == exact_files[name], name
    assert none == ""
    assert exact_stats["copied"] == exact_stats["planted"] == exact_stats["uncut"] == "0"
    assert exact_stats["lane"] == "0"
    if must_plant:
        assert planted, "the planted path was never taken"
        assert int(fast_stats["planted"]) > 0 and int(fast_stats["copied"]) > 0, fast_stats
        assert int(fast_stats["uncut"]) > 0 and int(fast_stats["lane"]) > 0, fast_stats


@pytest.mark.parametrize("kind", ["raw", "cow"])
@settings(max_examples=2, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops_strategy)
def test_random_sequences(tmp_path_factory, kind, ops):
    tmp = tmp_path_factory.mktemp(kind)
    base, word = _prepare(tmp, cow=kind == "cow")
    _compare(tmp, base, word, ops)


def test_fixed_sequence_covers_every_range_kind(tmp_path):
    """One sequence that surely takes each fast range: COW all set (read and write), backing
    all clear (read), a write over clear bits, and a mixed read (exact path)."""
    base, word = _prepare(tmp_path, cow=True)
    ops = [("pread", 64 * 512, 64 * 512, 0, 0), ("pwrite", 100 * 512, 16 * 512, 0, 9),
           ("read", 400 * 512, 32 * 512, 0, 0), ("write", 1200 * 512, 200 * 512, 0, 10),
           ("pread", 996 * 512, 16 * 512, 0, 0), ("read", 1200 * 512, 200 * 512, 0, 0),
           ("pread", SIZE - 4096, 8192, 0, 0), ("pwrite", SIZE - 4096, 8192, 0, 11),
           ("pwrite", SIZE, 512, 0, 12), ("pread", 512, 4096, 100, 0),
           # runs (no cached page yet, so the lane writes too): fresh 4 KiB writes (the lane
           # sets bits), over set bits, longer fresh ones (Python's), 512-byte ones into
           # the mixed run; reads set, clear, mixed, and one running past the device's end
           ("wburst", 1600 * 512, 4096, 0, 13), ("wburst", 1600 * 512, 8192, 0, 14),
           ("wburst", 1700 * 512, 16384, 0, 15), ("wburst", 998 * 512, 512, 0, 16),
           ("rburst", 64 * 512, 4096, 0, 0), ("rburst", 500 * 512, 8192, 0, 0),
           ("rburst", 996 * 512, 1024, 0, 0), ("rburst", SIZE - 12288, 4096, 0, 0),
           # buffered: a window all clear, one all set, one mixed (request by request)
           ("bread", 400 * 512, 8192, 0, 0), ("bread", 64 * 512, 4096, 0, 0),
           ("bread", 900 * 512, 6000, 0, 0), ("bread", 1204 * 512, 9000, 100, 0),
           # with pages cached the lane only reads: these writes are Python's
           ("wburst", 1800 * 512, 4096, 0, 17), ("rburst", 1800 * 512, 4096, 0, 0)]
    _compare(tmp_path, base, word, ops, must_plant=True)


def test_fixed_sequence_raw(tmp_path):
    base, word = _prepare(tmp_path, cow=False)
    ops = [("read", 0, 4096, 0, 0), ("write", 8192, 65536, 0, 1), ("pread", 8192, 65536, 0, 0),
           ("pwrite", 81920, 131072, 0, 3), ("read", 81920, 131072, 0, 0),
           ("pwrite", SIZE - 512, 1024, 0, 2), ("read", SIZE - 512, 4096, 0, 0),
           ("wburst", 40960, 4096, 0, 4), ("rburst", 40960, 65536, 0, 0),
           ("wburst", SIZE - 8192, 4096, 0, 5),
           ("bread", 4096, 70000, 0, 0), ("bread", SIZE - 1000, 4096, 0, 0)]
    _compare(tmp_path, base, word, ops, must_plant=True)
