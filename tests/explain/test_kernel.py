"""Predictions for 6.1 checked against linux.uml itself, on scratch copies of the seeds' files.

Each case boots Debian's linux.uml (through kernel_ref.launcher) on a fresh copy of the files
explain looked at: the ubd driver's console lines must be the predicted ones, line for line,
and what the prediction says about the files and the guest's view must hold: the header the
switch wrote (version, path, size, mtime), the sectors the guest can no longer read (read back
by the guest, one O_DIRECT sector at a time so that no request mixes COW and backing sectors),
the COW file's header a stacked backing file shows as the guest's first sector, and files a
refusal must leave as they were.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.device.oracle import boot, ubd_lines
from ubdsim.cow.header import read_header
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.explain import explain
from ubdsim.profiles import get_profile

from .oracle import differing_sectors, marked_sectors, snapshot, tool_view
from .scenarios import SCENARIOS

PROFILE = get_profile("6.1")
READ_ALL = "dd if=/dev/ubda of=guest.bin bs=512 iflag=direct 2>/dev/null"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def _explained(name: str):
    SCENARIOS[name].build()
    before = snapshot()
    report = explain(SCENARIOS[name].words, [PROFILE])
    assert snapshot() == before
    return report.profiles[0], before


def _boot(scratch: Path, name: str, guest: list[str]) -> str:
    return boot(Path.cwd(), SCENARIOS[name].words, guest, scratch / "kernel")


def _header(path: str):
    with open(path, "rb") as f:
        return read_header(f.read(HEADER_READ_SIZE))


@pytest.mark.parametrize("name", ["switch_v2", "moved"])
def test_switch_over_v2_file(scratch, name):
    """The 6.1 switch over a V2 file: the lines, the V3 header it writes, and exactly the
    predicted sectors of guest data gone (and others reading bytes not theirs)."""
    explained, _ = _explained(name)
    unit = explained.units[0].prediction
    assert unit.outcome == "switch" and unit.damage.harmful
    old_header = _header("v2.cow")
    old_view, marked = tool_view("v2.cow", "new/base.img"), marked_sectors("v2.cow")
    console = _boot(scratch, name, [READ_ALL])
    assert ubd_lines(console) == explained.console
    new = _header("v2.cow")
    switch = next(s for s in unit.steps if s.behaviour == "switch").data
    assert (new.version, new.backing_path) == (switch["new_version"], switch["stored"])
    assert (new.size, new.mtime) == (old_header.size, old_header.mtime)
    changed = differing_sectors(old_view, Path("guest.bin").read_bytes())
    d = unit.damage
    assert len(marked) == d.marked and d.unreachable == len(marked) > 0
    assert len(changed & marked) == d.unreachable
    assert len(changed - marked) == d.misread
    assert d.bitmap_bytes_overwritten == 4128 - 4120


def test_reversed_cow_and_backing(scratch):
    """`ubd0=backing,cow`: refused with the predicted lines, nothing written."""
    explained, before = _explained("reversed")
    assert not explained.units[0].opens
    assert [m.id for m in explained.mistakes] == ["swapped"]
    console = _boot(scratch, "reversed", ["true"])
    assert ubd_lines(console) == explained.console
    assert snapshot() == before


def test_stacking_line(scratch):
    """`ubd0=a,b,c`: 6.1 creates a over b (c is the serial) and opens b raw: the guest's first
    sector is b's COW header, as predicted."""
    explained, _ = _explained("stacking")
    unit = explained.units[0].prediction
    assert unit.outcome == "create" and any(s.behaviour == "stacking" for s in unit.steps)
    assert {m.id for m in explained.mistakes} == {"stacking_line", "backing_is_cow"}
    console = _boot(scratch, "stacking", [READ_ALL])
    assert ubd_lines(console) == explained.console
    created = _header("a.cow")
    assert (created.version, created.backing_path, created.size) == (
        unit.created["version"], unit.created["backing"], unit.created["size"])
    with open("b.cow", "rb") as f:
        assert Path("guest.bin").read_bytes()[:512] == f.read(512)
