"""The calls that act on a block device's page cache, against linux.uml 6.1.

One guest program (guests/cache_calls.py) runs in both worlds over three 6.1 COW units
(ubdc with flag t). Every scenario works on pages that each mix COW and backing sectors, so
do_io()'s offset drift (ubd_kern.c [6.1]) makes a page's bytes depend on the request that
read it: a page the kernel keeps cached and ubdsim reads again (or the other way round)
shows as different digests. Covered: posix_fadvise (every advice, and readahead state:
FMODE_RANDOM, ra_pages doubled, ra_pages taken at open and re-read by NORMAL), readahead(2),
fallocate (every mode 0..0x7f, argument checks, partial pages zeroed in place, another
exclusive holder, a read-only disk, flag t), BLKDISCARD, BLKZEROOUT, BLKFLSBUF (one disk
only), BLKBSZSET, O_DIRECT reads and writes (refused ones included) over cached pages.

Each scenario's transcript (every result and every read's page digests) must be the
kernel's, and so must the three COW files (bitmap and data, byte for byte).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from .oracle import boot_uml, cow_regions, make_backing, ubdsim_body

GUEST = Path(__file__).parent / "guests" / "cache_calls.py"
WORDS = ["ubd0=a.cow,a.img", "ubd1=b.cow,b.img", "ubd2t=c.cow,c.img"]
UNITS = "abc"


def _scenario_names() -> list[str]:
    spec = importlib.util.spec_from_file_location("cache_calls_guest", GUEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.NAMES)


NAMES = _scenario_names()


def _prepare(workdir: Path) -> str:
    for seed, name in enumerate(UNITS, start=10):
        make_backing(workdir / f"{name}.img", 24 << 20, seed=seed)
    return f"python3 {GUEST}\n"


def _sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:], [])
        elif current is not None:
            current.append(line)
    return sections


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uml_dir, sim_dir = tmp_path_factory.mktemp("uml"), tmp_path_factory.mktemp("ubdsim")
    uml = boot_uml(uml_dir, WORDS, _prepare(uml_dir))
    sim = ubdsim_body(sim_dir, WORDS, _prepare(sim_dir))
    return uml, sim, uml_dir, sim_dir


def _kernel(runs, name: str) -> dict[str, str]:
    """label -> value of one scenario in the kernel's transcript."""
    return dict(line.split(": ", 1) for line in _sections(runs[0].output)[name])


def test_guest_ran_to_the_end(runs):
    uml, sim, _, _ = runs
    assert "== end" in uml.output, uml.output[-2000:]
    assert list(_sections(uml.output)) == NAMES + ["end"]
    assert sim.status == uml.status == 0


@pytest.mark.parametrize("name", NAMES)
def test_scenario_matches_kernel(runs, name):
    uml, sim, _, _ = runs
    expected = _sections(uml.output).get(name)
    assert expected, f"the kernel's transcript has no scenario {name}"
    assert _sections(sim.output).get(name) == expected


@pytest.mark.parametrize("unit", UNITS)
def test_cow_files_match_kernel(runs, unit):
    _, _, uml_dir, sim_dir = runs
    assert cow_regions(sim_dir / f"{unit}.cow") == cow_regions(uml_dir / f"{unit}.cow")


# What the oracle itself shows (so a scenario cannot pass by showing nothing).

def _pages(value: str) -> list[str]:
    return value.rsplit(" (", 1)[0].split()


def test_kernel_willneed_reads_in_and_drops_nothing(runs):
    """[6.1] WILLNEED of page 0 reads it alone: the 16 KiB read that follows brings pages
    1-3 in as a request of their own, unlike the same read without the advice."""
    seen = _kernel(runs, "willneed_page0")
    read, control = _pages(seen["read 16k"]), _pages(seen["control"])
    assert read[0] == control[0] and read[1:] != control[1:]
    assert seen["read again"] == seen["read 16k"]


def test_kernel_zero_range_keeps_partial_pages(runs):
    """[6.1] FALLOC_FL_ZERO_RANGE over 1 KiB of page 0: page 0 zeroed in place, pages 1-3
    kept as the first reads brought them in (a fresh read groups them otherwise)."""
    seen = _kernel(runs, "zero_range_partial")
    before, after = _pages(seen["read 16k"]), _pages(seen["read again"])
    assert before[0] != after[0] and before[1:] == after[1:]
    assert _pages(seen["control"])[1:] != after[1:]


def test_kernel_fallocate_modes(runs):
    """[6.1] A block device takes ZERO_RANGE, ZERO_RANGE|KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE
    only; NO_HIDE_STALE never gets past vfs_fallocate()."""
    modes = dict(item.split("=") for item in _kernel(runs, "fallocate_modes")["modes"].split())
    accepted = sorted(mode for mode, result in modes.items() if result == "ok")
    assert accepted == ["0x10", "0x11", "0x3"]
    assert modes["0x7"] == "ENOTSUP"


def test_kernel_refusals(runs):
    assert _kernel(runs, "exclusive_holder")["BLKBSZSET (other holder)"] == "errno EBUSY"
    assert _kernel(runs, "readahead_call")["readahead write-only"] == "errno EBADF"
    assert _kernel(runs, "read_only_disk")["write 0 bytes"] == "errno EPERM"
    assert _kernel(runs, "no_trim_unit")["BLKDISCARD"] == "errno ENOTSUP"
