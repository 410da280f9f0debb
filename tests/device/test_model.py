"""Property test: a Unit behaves like a dict of sectors, for every profile, COW and raw,
across reopens; plus the 2.4 rounding-bug write-back that lands on the data area.

Reads here are single-segment requests (at most 4 KiB) over sector-multiple sizes: 6.1's
do_io() bugs (offset drift after a mixed segment, re-reads at EOF) make longer requests
and EOF-cut sectors differ from a plain model on purpose; linux.uml itself checks those
(test_oracle_boot.py, units 0, 1, 13, 14)."""
from __future__ import annotations

import os
import random
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.errors import UbdError
from ubdsim.profiles import PROFILES, get_profile

# 2.4 sizes keep the sector count a multiple of 8 (no V2 rounding bug; that one has its own test)
SIZES = {"2.4": [64 * 1024, 1 << 20], "2.4-stock": [64 * 1024, 1 << 20],
         "6.1": [64 * 1024, 100 * 1024 + 512, (1 << 20) + 512]}

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 4095), st.integers(1, 24), st.integers(0, 255)),
    st.tuples(st.just("read"), st.integers(0, 4095), st.integers(1, 8), st.just(0)),
    st.tuples(st.just("discard"), st.integers(0, 4095), st.integers(1, 130), st.just(0)),
    st.tuples(st.just("reopen"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("grow"), st.just(0), st.integers(1, 16), st.just(0)),
)


@settings(max_examples=40, deadline=None)
@given(profile_name=st.sampled_from(sorted(PROFILES)), size_index=st.integers(0, 2),
       raw=st.booleans(), ops=st.lists(op, max_size=25))
def test_unit_matches_sector_model(profile_name, size_index, raw, ops):
    profile = get_profile(profile_name)
    sizes = SIZES[profile_name]
    size = sizes[size_index % len(sizes)]
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        rng = random.Random(size)
        backing = os.path.join(tmp, "back.img")
        with open(backing, "wb") as f:
            f.write(rng.randbytes(size))
        base = open(backing, "rb").read()
        spec = UnitSpec(0, backing) if raw else UnitSpec(0, os.path.join(tmp, "cow.img"), backing)
        unit = open_unit(spec, profile)
        sectors = unit.size // 512
        model: dict[int, bytes] = {}

        def expected(sector: int) -> bytes:
            if sector in model:
                return model[sector]
            return base[sector * 512:(sector + 1) * 512].ljust(512, b"\0")

        try:
            for kind, start, count, fill in ops:
                start %= sectors
                count = min(count, sectors - start)
                if kind == "write":
                    data = bytes([fill]) * (count * 512)
                    unit.write(start * 512, data)
                    for s in range(start, start + count):
                        model[s] = data[:512]
                elif kind == "read":
                    got = unit.read(start * 512, count * 512)
                    assert got == b"".join(expected(s) for s in range(start, start + count))
                elif kind == "discard":
                    if profile.device.supports_discard:
                        unit.discard(start * 512, count * 512)
                        for s in range(start, start + count):
                            model[s] = bytes(512)
                    else:
                        try:
                            unit.discard(start * 512, count * 512)
                        except UbdError as err:
                            assert err.errno == 95
                        else:
                            raise AssertionError("2.4 has no discard")
                elif kind == "grow":
                    # [resize] reopen with a larger size field; other profiles: a plain reopen
                    unit.close()
                    grow = profile.device.resize_patch and not raw
                    size_field = unit.size + count * 4096 if grow else None
                    unit = open_unit(UnitSpec(0, spec.file, spec.backing, size=size_field), profile)
                    sectors = unit.size // 512
                else:
                    unit.close()
                    unit = open_unit(UnitSpec(0, spec.file, spec.backing), profile)
            for start in range(0, sectors, 8):
                count = min(8, sectors - start)
                assert unit.read(start * 512, count * 512) == \
                    b"".join(expected(s) for s in range(start, start + count))
        finally:
            unit.close()


def test_2_4_rounding_bug_write_back_lands_on_sector_0_data(tmp_path):
    """V2 over 3906 sectors: bitmap_len (3906*512+511)//4096 = 488, one byte short (sectors
    3904-3905 have no bit in the file), data_offset 4608. The device (1953 KiB) still exposes
    them. Writing sector 3904 sets its bit in memory and 2.4 writes back the unguarded 32-bit
    word pair 122-123 at 4120 + 4*122 = 4608: over sector 0's COW data. Reopened, sector 0
    starts 01 00 00 00 00 00 00 00 at once; after a reopen sector 3904 reads the backing file."""
    profile = get_profile("2.4")
    backing = tmp_path / "back.img"
    backing.write_bytes(b"B" * (3906 * 512))
    spec = UnitSpec(0, str(tmp_path / "cow.img"), str(backing))
    with open_unit(spec, profile) as unit:
        assert unit.cow.geometry.bitmap_len == 488 and unit.cow.geometry.data_offset == 4608
        assert unit.size == 3906 * 512
        unit.write(0, b"A" * 512)
        unit.write(3904 * 512, b"C" * 512)
        clobbered = bytes([1, 0, 0, 0, 0, 0, 0, 0]) + b"A" * 504
        assert unit.read(0, 512) == clobbered               # sector 0 is hit at once
        assert unit.read(3904 * 512, 512) == b"C" * 512     # the in-memory bit still holds
    with open_unit(spec, profile) as unit:                   # next boot: that bit is gone
        assert unit.read(0, 512) == clobbered
        assert unit.read(3904 * 512, 512) == b"B" * 512
