"""Unit.write()'s two-step path (one data pwrite, then the merged word pairs; FreshRun for a
range whose bits were all clear) leaves the COW file byte for byte as the kernel's own
per-segment host calls do (Unit._write_segments(), taken while I/O events are on: data, then
update_bitmap()'s word pair, segment by segment, as the lab records linux.uml making them),
and its bitmap writes cover exactly the bytes the kernel's word pairs cover: no word the
kernel leaves alone is written (past a V1/V2 bitmap's end such a word is data).

Device sizes cover a one-word bitmap, a last word that is only partly used, and 2.4's V2
sizes that are not a multiple of 8 sectors (the rounding bug writes past the bitmap); the
writes run up to the device's end, where [6.1]'s guard steps the last word's pair back.
"""
from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.events import EventBus
from ubdsim.device.open import open_unit
from ubdsim.device.unit import FreshRun
from ubdsim.profiles import PROFILES, get_profile

SECTORS = [8, 24, 64, 65, 200, 1000, 2048 + 5, 4096]

write = st.tuples(st.integers(0, 1 << 20), st.integers(1, 700), st.integers(0, 255))


def _cow_after(profile_name: str, tmp: str, name: str, backing: str, writes: list,
               per_segment: bool) -> tuple[bytes, set[int]]:
    """The COW file's bytes after `writes`, and every file offset a bitmap write covered."""
    bus = EventBus(lambda event: None) if per_segment else EventBus()
    path = os.path.join(tmp, name)
    covered: set[int] = set()
    with open_unit(UnitSpec(0, path, backing), get_profile(profile_name), bus) as unit:
        assert bus.io_active == per_segment
        host_write = unit._pwrite

        def watched(fd, data, offset, kind="data"):
            if kind == "bitmap":
                covered.update(range(offset, offset + len(data)))
            host_write(fd, data, offset, kind)
        unit._pwrite = watched
        sectors = unit.size // 512
        for start, count, fill in writes:
            start %= sectors
            count = min(count, sectors - start)
            unit.write(start * 512, bytes([fill]) * (count * 512))
    with open(path, "rb") as f:
        return f.read(), covered


@settings(max_examples=60, deadline=None)
@given(profile_name=st.sampled_from(sorted(PROFILES)), sectors=st.sampled_from(SECTORS),
       writes=st.lists(write, min_size=1, max_size=8), to_end=st.booleans())
def test_two_step_write_leaves_the_kernels_per_segment_bytes(profile_name, sectors, writes,
                                                              to_end):
    if to_end:                      # the last write ends at the device's last sector
        writes = writes + [(sectors - min(writes[0][1], sectors), writes[0][1], 7)]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        backing = os.path.join(tmp, "back.img")
        with open(backing, "wb") as f:
            f.write(os.urandom(sectors * 512))
        fast = _cow_after(profile_name, tmp, "fast.cow", backing, writes, per_segment=False)
        kernel = _cow_after(profile_name, tmp, "kernel.cow", backing, writes, per_segment=True)
    assert fast == kernel


def test_a_fresh_write_is_one_span_and_lists_the_kernels_segments():
    """A 1 MiB fresh write at [6.1]'s last word: the triples cowify_bitmap() gives (one per
    4 KiB segment, the guard word's pair stepped back) and the one run they merge into."""
    run = FreshRun(offset=0, end=1 << 20, segment_bytes=4096, word_bits=64, guard=31)
    triples = list(run)
    assert len(triples) == 256 and triples[0] == (0, 4096, 0)
    assert {index for _, _, index in triples} == set(range(31))     # word 31 stepped back
    assert run.one_span == (0, 31)
    assert FreshRun(4096, 8192, 4096, 64, 0).one_span == (-1, 0)     # a one-word bitmap
    assert FreshRun(0, 1 << 20, 64 * 1024, 32, None).one_span is None  # pairs leave gaps
