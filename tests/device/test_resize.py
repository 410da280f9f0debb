"""[resize] the 2.4 COW-resize patch: growth, refusal, acceptance per profile, crash safety."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.cow.header import read_header
from ubdsim.device.open import open_unit
from ubdsim.device.resize import resize_file
from ubdsim.errors import UbdError
from ubdsim.profiles import get_profile

from .oracle import extents

P24 = get_profile("2.4")
P61 = get_profile("6.1")
MIB = 1 << 20
WRITTEN = {0: 1, 7: 3, 100: 8, 1000: 40, 2047: 1}   # sector: count (1 MiB backing = 2048 sectors)


@pytest.fixture
def cow24(tmp_path):
    """A 2.4 (V2) COW over a 1 MiB backing with some sectors written, and the data written."""
    rng = random.Random(24)
    backing = tmp_path / "back.img"
    backing.write_bytes(rng.randbytes(MIB))
    cow = tmp_path / "cow.img"
    written = {}
    with open_unit(UnitSpec(0, str(cow), str(backing)), P24) as unit:
        for sector, count in WRITTEN.items():
            data = rng.randbytes(count * 512)
            unit.write(sector * 512, data)
            written[sector] = data
    return tmp_path, backing, cow, written


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("mode", ["safe", "in-place"])
def test_grow_moves_data_marks_tail_and_reads_back(cow24, mode):
    tmp, backing, cow, written = cow24
    old_length = cow.stat().st_size
    unit = open_unit(UnitSpec(0, str(cow), str(backing), size=3 * MIB), P24, resize_mode=mode)
    with unit:
        new_length = cow.stat().st_size
        assert unit.messages == (f"*** Resizing cow file: {old_length} -> {new_length}",)
        assert unit.size == 3 * MIB
        for sector, data in written.items():
            assert unit.read(sector * 512, len(data)) == data
        assert unit.read(MIB, 2 * MIB) == bytes(2 * MIB)         # grown part: zeros
        assert unit.read(50 * 512, 512) == backing.read_bytes()[50 * 512:51 * 512]
    header = read_header(cow.read_bytes()[:4120])
    assert header.version == 2 and header.size == 3 * MIB
    geometry = header.geometry()
    assert new_length == geometry.file_length
    bitmap = cow.read_bytes()[geometry.bitmap_offset:geometry.bitmap_offset + geometry.bitmap_len]
    assert bitmap[2048 // 8:] == b"\xff" * (geometry.bitmap_len - 2048 // 8)
    # holes stay holes: nothing allocated in the moved data area but the written sectors' blocks
    allocated = sum(end - start for start, end in extents(cow) if start >= geometry.data_offset)
    assert allocated <= 16 * 4096 + sum(len(d) for d in written.values())


def test_safe_and_in_place_give_identical_bytes(cow24):
    tmp, backing, cow, _ = cow24
    other = tmp / "other.img"
    shutil.copyfile(cow, other)
    resize_file(str(cow), 3 * MIB, MIB, mode="safe")
    resize_file(str(other), 3 * MIB, MIB, mode="in-place")
    assert cow.read_bytes() == other.read_bytes()


def test_equal_size_changes_nothing_and_smaller_is_refused(cow24):
    tmp, backing, cow, _ = cow24
    before = _sha(cow)
    with open_unit(UnitSpec(0, str(cow), str(backing), size=MIB), P24) as unit:
        assert unit.messages == ()
    assert _sha(cow) == before
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(cow), str(backing), size=MIB // 2), P24)
    assert info.value.printed == (f"ubd : can't shrink cow file \"{cow}\" from {MIB} to {MIB // 2} bytes",)
    assert _sha(cow) == before


def test_resized_cow_accepted_by_2_4_refused_by_6_1_and_uml_moo(cow24):
    tmp, backing, cow, written = cow24
    open_unit(UnitSpec(0, str(cow), str(backing), size=3 * MIB), P24).close()
    with open_unit(UnitSpec(0, str(cow)), P24) as unit:            # later open, no size field
        assert unit.size == 3 * MIB and unit.messages == ()
        assert unit.read(0, 512) == written[0]
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(cow)), P61)
    assert info.value.printed == (f"Size mismatch ({3 * MIB} vs {MIB}) of COW header vs backing file",
                                  f"Failed to open '{cow}', errno = 22",
                                  f"ubda: Can't open \"{cow}\": errno = 22")
    moo = subprocess.run(["uml_moo", str(cow), str(tmp / "merged.img")], capture_output=True, text=True)
    assert moo.returncode != 0
    assert f"Size mismatch ({3 * MIB} vs {MIB}) of COW header vs backing file" in moo.stdout + moo.stderr


def test_2_4_refuses_grown_cow_with_an_unmarked_tail(cow24):
    tmp, backing, cow, _ = cow24
    resize_file(str(cow), 3 * MIB, MIB)
    header = read_header(cow.read_bytes()[:4120])
    geometry = header.geometry()
    with open(cow, "r+b") as f:                       # clear one bit past the backing's end
        f.seek(geometry.bitmap_offset + 2048 // 8 + 10)
        f.write(b"\xfe")
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(cow)), P24)
    assert info.value.printed[0] == f"Size mismatch ({3 * MIB} vs {MIB}) of COW header vs backing file"


def _die_at(path: str, step: int, mode: str) -> int:
    """Run a resize in a child that is killed (os._exit) just before mutating step `step`."""
    pid = os.fork()
    if pid == 0:
        def fault(n: int) -> None:
            if n == step:
                os._exit(9)
        try:
            resize_file(path, 3 * MIB, MIB, mode=mode, fault=fault, chunk=8192)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _steps(path, mode: str) -> int:
    count = [0]

    def counter(n: int) -> None:
        count[0] = n + 1
    resize_file(str(path), 3 * MIB, MIB, mode=mode, fault=counter, chunk=8192)
    return count[0]


def test_safe_resize_leaves_old_or_new_file_whenever_it_dies(cow24):
    tmp, backing, cow, _ = cow24
    old = cow.read_bytes()
    reference = tmp / "reference.img"
    shutil.copyfile(cow, reference)
    total = _steps(reference, "safe")
    new = reference.read_bytes()
    assert total > 20
    victim = tmp / "victim.img"
    outcomes = set()
    for step in range(total + 1):
        victim.write_bytes(old)
        code = _die_at(str(victim), step, "safe")
        now = victim.read_bytes()
        assert now in (old, new), f"died at step {step}: neither the old nor the new file"
        outcomes.add((code, now == new))
    assert (9, False) in outcomes and (0, True) in outcomes
    # a resize after a crash cleans the leftover temporary file and completes
    victim.write_bytes(old)
    _die_at(str(victim), total // 2, "safe")
    resize_file(str(victim), 3 * MIB, MIB)
    assert victim.read_bytes() == new
    assert not any(p.name.endswith(".ubdsim-resize") for p in tmp.iterdir())


def test_in_place_resize_can_corrupt_when_it_dies(cow24):
    """The 2003 patch's move, for corruption studies: some crash points leave a broken file."""
    tmp, backing, cow, _ = cow24
    old = cow.read_bytes()
    reference = tmp / "reference.img"
    shutil.copyfile(cow, reference)
    total = _steps(reference, "in-place")
    new = reference.read_bytes()
    broken = 0
    for step in range(0, total, max(1, total // 10)):
        cow.write_bytes(old)
        _die_at(str(cow), step, "in-place")
        broken += cow.read_bytes() not in (old, new)
    assert broken > 0
