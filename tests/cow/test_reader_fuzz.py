"""No byte string makes the header reader, CowImage or `info` crash (hypothesis).

Failures must be CowFormatError (the kernel's reasons) and nothing else; files that parse
must give a full report. Headers with a valid magic and version are generated on purpose,
since random bytes almost never get past the magic.
"""
from __future__ import annotations

import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.cow.builders import MAGIC
from ubdsim.cow.header import read_header
from ubdsim.cow.image import CowImage
from ubdsim.errors import CowFormatError
from ubdsim.ops.inspect import inspect

WORKDIR = tempfile.mkdtemp(prefix="ubdsim-fuzz-")

# Interesting values for size/sectorsize/alignment fields.
u32 = st.one_of(st.sampled_from([0, 1, 7, 8, 511, 512, 513, 4096, 2**31 - 1, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
u64 = st.one_of(st.sampled_from([0, 1, 511, 512, 4095, 4096, 2**40, 2**63, 2**64 - 1]),
                st.integers(0, 2**64 - 1))


@st.composite
def cow_like(draw):
    version = draw(st.sampled_from([1, 2, 3, 3, 0, 4]))
    path = draw(st.binary(max_size=40))
    if version == 1:
        head = struct.pack("<II256sIQI", MAGIC, 1, path, draw(u32), draw(u64), draw(u32))
    elif version == 2:
        head = struct.pack(">II4096sIQI", MAGIC, 2, path, draw(u32), draw(u64), draw(u32))
    else:
        head = struct.pack(">IIIQIII4096s", MAGIC, version, draw(u32), draw(u64), draw(u32),
                           draw(u32), draw(u32), path)
    tail = draw(st.binary(max_size=300))
    cut = draw(st.integers(0, len(head) + len(tail)))
    return (head + tail)[:cut] if draw(st.booleans()) else head + tail


def _check(data: bytes) -> None:
    try:
        read_header(data)
    except CowFormatError:
        pass
    path = os.path.join(WORKDIR, "f")
    with open(path, "wb") as f:
        f.write(data)
    try:
        report = inspect(path)
    except CowFormatError:
        return
    assert report.apparent_bytes == len(data)
    try:
        with CowImage.open(path) as image:
            list(image.marked_runs())
            image.read(0, min(image.geometry.size, 4096), None)
    except CowFormatError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5000))
def test_any_bytes(data):
    _check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cow_like())
def test_cow_like_headers(data):
    _check(data)
