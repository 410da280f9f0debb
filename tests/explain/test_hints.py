"""The hint listener on the device model's real EventBus: `ubdsim: hint: ...` lines printed
after the kernel's lines of the step that does the damage, the kernel's lines unchanged.

Every test opens real files through ubdsim's device model (open_unit() or boot_disks(), as
`ubdsim run` and `ubdsim serve` boot) with a bus whose sinks collect what is printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

import pytest

from ubdsim.cmdline import parse_command_line
from ubdsim.device.disk import boot_disks
from ubdsim.device.events import EventBus
from ubdsim.device.open import open_unit
from ubdsim.explain.hints import PREFIX, add_hint_options, attach_hints
from ubdsim.profiles import get_profile

from .scenarios import MARKS, SCENARIOS


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _rebuild(work, name: str) -> None:
    for entry in os.listdir(work):
        path = work / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    SCENARIOS[name].build()


def _boot(words: list[str], profile, hints: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Boot like `ubdsim run`: (kernel lines, everything printed as (stream, line))."""
    parsed = parse_command_line(words, profile)
    printed: list[tuple[str, str]] = []
    bus = EventBus()
    listener = attach_hints(bus, profile, parsed, lambda line: printed.append(("hint", line))) \
        if hints else None
    bus.subscribe(lambda event: printed.append(("kernel", event.data["text"])), kinds={"message"})
    disks, _, _ = boot_disks(parsed.units, profile, bus)
    if listener is not None:
        listener.flush()
        listener.close()
    for disk in disks.values():
        disk.close()
    return [line for stream, line in printed if stream == "kernel"], printed


def _kernel_lines_unchanged(work, name: str, profile) -> list[tuple[str, str]]:
    """Boot a fresh copy without hints, then another with: the kernel's lines are the same."""
    _rebuild(work, name)
    plain, _ = _boot(SCENARIOS[name].words, profile, hints=False)
    _rebuild(work, name)
    kernel, printed = _boot(SCENARIOS[name].words, profile, hints=True)
    assert kernel == plain
    return printed


def test_switch_over_a_v2_file_under_6_1(scratch):
    printed = _kernel_lines_unchanged(scratch, "switch_v2", get_profile("6.1"))
    hints = [line for stream, line in printed if stream == "hint"]
    assert len(hints) == 1 and hints[0].startswith(PREFIX + "unit 0: ")
    # printed right after the line of the switch, before anything else
    at = printed.index(("hint", hints[0]))
    assert printed[at - 1] == ("kernel", "Switching backing file to 'new/base.img'")
    assert "8 bytes of its bitmap overwritten" in hints[0]
    assert f"{len(MARKS)} of the {len(MARKS)} sectors of guest data now unreachable" in hints[0]
    assert "ubdsim rebase -b new/base.img v2.cow" in hints[0]


def test_no_hint_for_a_harmless_switch(scratch):
    """2.4 rewrites a V2 header as V2: nothing to say."""
    printed = _kernel_lines_unchanged(scratch, "switch_v2", get_profile("2.4"))
    assert [line for stream, line in printed if stream == "hint"] == []
    assert ("kernel", "Switching backing file to 'new/base.img'") in printed


def test_v3_file_used_raw_under_2_4_and_the_write_that_destroys_it(scratch):
    SCENARIOS["v3_alone"].build()
    profile = get_profile("2.4")
    parsed = parse_command_line(["ubd0=guest.cow"], profile)
    printed: list[tuple[str, str]] = []
    bus = EventBus()
    listener = attach_hints(bus, profile, parsed, lambda line: printed.append(("hint", line)))
    bus.subscribe(lambda event: printed.append(("kernel", event.data["text"])), kinds={"message"})
    unit = open_unit(parsed.units[0], profile, bus)
    try:
        assert unit.cow is None
        assert [s for s, _ in printed] == ["kernel", "kernel", "hint"]
        assert "used RAW" in printed[2][1] and "ubd0=guest.cow," in printed[2][1]
        assert bus.io_active and listener.watched == {0: 4128}   # now it wants the writes
        unit.write(unit.size - 4096, bytes(4096))          # far from the header: no hint
        assert len(printed) == 3
        unit.write(0, bytes(512))                           # over the header
        assert printed[3][0] == "hint" and "bytes 0-511 of guest.cow" in printed[3][1]
        assert "no longer a COW file" in printed[3][1]
        unit.write(1024, bytes(512))                        # said once
        assert len(printed) == 4 and not bus.io_active      # write events no longer wanted
    finally:
        unit.close()
        listener.close()
    with open("guest.cow", "rb") as f:
        assert f.read(4) == bytes(4)                         # the header really is gone


def test_refusal_hint_comes_after_the_units_lines_and_before_the_next_unit(scratch):
    SCENARIOS["mtime"].build()
    profile = get_profile("6.1")
    words = ["ubd0=v2.cow,base.img", "ubd1=missing.img"]
    kernel, printed = _boot(words, profile, hints=True)
    assert [s for s, _ in printed] == ["kernel", "kernel", "kernel", "hint", "kernel", "hint"]
    assert printed[2] == ("kernel", 'ubda: Can\'t open "v2.cow": errno = 22')
    hint = printed[3][1]
    assert hint.startswith(PREFIX + "unit 0: ")
    assert "changed after 'v2.cow' was made" in hint and "touch -d @1000000000" in hint
    assert "ubdsim rebase -b" in hint
    assert printed[4] == ("kernel", "Failed to initialize ubd device 1 :Couldn't determine size "
                                    "of device's file")
    assert printed[5][1].startswith(PREFIX + "unit 1: the file 'missing.img' cannot be sized")
    plain, _ = _boot(words, profile, hints=False)
    assert kernel == plain


def test_size_mismatch_hint_under_2_4(scratch):
    printed = _kernel_lines_unchanged(scratch, "size", get_profile("2.4"))
    hints = [line for stream, line in printed if stream == "hint"]
    assert len(hints) == 1 and "another image, or a truncated or grown copy" in hints[0]
    assert printed[-1] == ("hint", hints[0])


def test_swapped_cow_and_backing_hint(scratch):
    printed = _kernel_lines_unchanged(scratch, "reversed", get_profile("2.4"))
    hints = [line for stream, line in printed if stream == "hint"]
    assert len(hints) == 1 and hints[0].endswith("fix: `ubd0=guest.cow,base.img`")


def test_moved_backing_that_2_4_cannot_follow(scratch):
    printed = _kernel_lines_unchanged(scratch, "moved", get_profile("2.4"))
    hints = [line for stream, line in printed if stream == "hint"]
    assert len(hints) == 1 and "cannot follow a move" in hints[0]
    assert "ubdsim rebase -b new/base.img v2.cow" in hints[0]


def test_resize_hint(scratch):
    printed = _kernel_lines_unchanged(scratch, "size_field", get_profile("2.4"))
    at = next(i for i, (s, line) in enumerate(printed) if line.startswith("*** Resizing cow file"))
    stream, hint = printed[at + 1]
    assert stream == "hint" and "2.4-stock, 6.1 and uml_moo refuse it" in hint


def test_backing_file_that_is_a_cow_file(scratch):
    printed = _kernel_lines_unchanged(scratch, "backing_is_cow", get_profile("6.1"))
    hints = [line for stream, line in printed if stream == "hint"]
    assert len(hints) == 1 and "UML cannot stack" in hints[0]


LOCK_QUERY = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print(struct.unpack("hhqqi", answer)[4] if struct.unpack("hhqqi", answer)[0] != fcntl.F_UNLCK else 0)
"""


def test_the_listener_never_drops_the_devices_locks(scratch):
    """POSIX locks go with any close of the file by the process: the listener reads its files
    before the boot only, so an open 6.1 unit keeps its lock on the COW file."""
    SCENARIOS["mtime"].build()                 # a refusal: the listener has something to say
    SCENARIOS["raw"].build()
    profile = get_profile("6.1")
    parsed = parse_command_line(["ubd0=v2.cow,base.img", "ubd1=raw.img"], profile)
    printed: list[str] = []
    bus = EventBus()
    listener = attach_hints(bus, profile, parsed, printed.append)
    disks, _, _ = boot_disks(parsed.units, profile, bus)
    disks[1].open()                           # the guest holds unit 1 open (and locked)
    try:
        listener.flush()
        assert printed                        # the hint for unit 0 was printed meanwhile
        holder = subprocess.run([sys.executable, "-c", LOCK_QUERY, "raw.img"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert int(holder) == os.getpid()
    finally:
        disks[1].close()
        listener.close()


def test_quiet_hints_option():
    parser = argparse.ArgumentParser()
    add_hint_options(parser)
    assert parser.parse_args([]).quiet_hints is False
    assert parser.parse_args(["--quiet-hints"]).quiet_hints is True


def test_no_kernel_hints_for_units_ubdsim_chain_reads_as_layers(scratch):
    """With ubdsim's --chain a backing file that is a COW file is read as layers, not raw:
    the listener keeps quiet about those units (and only those)."""
    SCENARIOS["backing_is_cow"].build()
    SCENARIOS["mtime"].build()
    profile = get_profile("6.1")
    parsed = parse_command_line(["ubd0=a.cow,b.cow", "ubd1=v2.cow,base.img"], profile)
    listener = attach_hints(EventBus(), profile, parsed, print, chain=True)
    assert set(listener.predictions) == {1}
    listener.close()
    listener = attach_hints(EventBus(), profile, parsed, print)
    assert set(listener.predictions) == {0, 1}
    listener.close()
