"""[resize] the 2.4 COW-resize patch: growth, refusal, acceptance per profile, crash safety."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import subprocess
import sys
import warnings

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.cow.create import Tail, create_cow
from ubdsim.cow.header import read_header
from ubdsim.device.open import open_unit
from ubdsim.device.resize import resize_file
from ubdsim.errors import UbdError
from ubdsim.profiles import get_profile

from ..cow.builders import build_cow, pack_spec_header, spec_geometry
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


# --- the new bitmap built in bounded chunks: same bytes as the whole-bitmap build ------------

def _expected_grown(version: int, backing: str, marks: dict[int, bytes], backing_size: int,
                    new_size: int) -> bytes:
    """The grown COW file from first principles (spec sections 3 and 4, builders' struct
    packing, no ubdsim code): the new header; the old bitmap's bytes, zeros after them, bits
    set from the backing file's end to the new end (as far as the bitmap has bits); every
    written sector at the new data offset; the file as long as the new data area's end."""
    st = os.stat(backing)
    _, bo, old_len, _ = spec_geometry(version, backing_size)
    _, bo, new_len, data_offset = spec_geometry(version, new_size)
    bitmap = bytearray(new_len)
    for sector in marks:
        if sector // 8 < old_len:
            bitmap[sector // 8] |= 1 << (sector % 8)
    sectors = -(-new_size // 512)
    for sector in range(-(-backing_size // 512), min(sectors, new_len * 8)):
        bitmap[sector // 8] |= 1 << (sector % 8)
    out = bytearray(data_offset + new_size)
    header = pack_spec_header(version, os.fsencode(os.path.abspath(backing)), int(st.st_mtime),
                              new_size)
    out[:len(header)] = header
    out[bo:bo + new_len] = bitmap
    for sector, data in marks.items():
        out[data_offset + sector * 512:data_offset + (sector + 1) * 512] = data
    return bytes(out)


SMALL_CASES = [(version, backing_size, new_size)
               for version in (1, 2, 3)
               for backing_size in (MIB, MIB + 1536, 1000 * 512)
               for new_size in (backing_size + 512, 3 * MIB, 3 * MIB + 1536, 5 * MIB + 100)]


@pytest.mark.parametrize("chunk", [64, 1 << 20])
@pytest.mark.parametrize("mode", ["safe", "in-place"])
@pytest.mark.parametrize("version,backing_size,new_size", SMALL_CASES)
def test_chunked_grow_gives_the_spec_bytes(tmp_path, version, backing_size, new_size, mode, chunk):
    """V1/V2 (rounding bug included) and V3, sizes with and without whole bitmap bytes, a
    bitmap of several chunks (chunk=64) or one: byte for byte the file the spec describes.
    (Checked too, outside the suite, against the whole-bitmap code this replaced: the same
    bytes on 120 cases of this kind.)"""
    rng = random.Random(version * 7919 + backing_size + new_size)
    backing = tmp_path / "back.img"
    backing.write_bytes(rng.randbytes(backing_size))
    sectors = backing_size // 512
    marks = {s: rng.randbytes(512) for s in rng.sample(range(sectors), 12)}
    marks[sectors - 1] = rng.randbytes(512)
    _, bo, old_len, old_data = spec_geometry(version, backing_size)
    extra = {bo + old_len: 0x5A} if old_data > bo + old_len else {}   # junk in the slack
    cow = tmp_path / "cow.img"
    build_cow(str(cow), version, str(backing), marks, extra_bits=extra)
    resize_file(str(cow), new_size, backing_size, mode=mode, chunk=chunk)
    assert cow.read_bytes() == _expected_grown(version, str(backing), marks, backing_size, new_size)


def _sparse(path, size: int) -> None:
    """A file of `size` bytes that is one hole (truncate -s)."""
    with open(path, "wb") as f:
        f.truncate(size)


def test_zero_stretches_of_the_new_bitmap_stay_holes(tmp_path):
    """A grow whose new bitmap is mostly zero (old part: nothing written) writes only the
    grown tail's set bits: no byte of the zero part is allocated, in either mode."""
    backing = tmp_path / "back.img"
    _sparse(backing, 256 * MIB)                           # 64 KiB of bitmap, all clear
    for mode in ("safe", "in-place"):
        cow = tmp_path / f"{mode}.cow"
        create_cow(str(cow), str(backing), version=2, tail=Tail.TRUNCATE)
        resize_file(str(cow), 512 * MIB, 256 * MIB, mode=mode, chunk=8192)
        header = read_header(cow.read_bytes()[:4120])
        geometry = header.geometry()
        tail_start = geometry.bitmap_offset + 256 * MIB // 512 // 8
        (head_start, head_end), *rest = extents(cow)      # the header's blocks, then the tail
        assert head_start == 0 and head_end <= 8192
        assert rest and all(start >= tail_start // 4096 * 4096 for start, _ in rest), rest
        with open(cow, "rb") as f:
            f.seek(geometry.bitmap_offset)
            assert f.read(tail_start - geometry.bitmap_offset).count(0) == tail_start - geometry.bitmap_offset
            assert f.read(64 * 1024) == b"\xff" * (64 * 1024)


# --- 1 TiB -> 16 TiB in bounded memory --------------------------------------------------------

TIB = 1 << 40
RSS_LIMIT = 100 * 1000 * 1000

# The child reports its own peak (VmHWM of the mm its exec made): wait4()'s ru_maxrss would
# also count the parent's pages the child carried from fork() until exec (Linux folds the
# pre-exec mm's high-water mark into it), i.e. pytest's own size.
_RESIZE_CHILD = """
import sys
from ubdsim.device.resize import resize_file
resize_file(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), mode=sys.argv[4])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("peak", int(line.split()[1]) * 1024)
"""


def _largest_file(directory) -> int:
    """The largest length a sparse file in `directory` may have (binary search on truncate)."""
    probe = os.path.join(directory, ".size-probe")
    low, high = 0, 1 << 63
    try:
        while high - low > 4096:
            middle = (low + high) // 2
            try:
                _sparse(probe, middle)
                low = middle
            except OSError:
                high = middle
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    return low


@pytest.fixture
def big_dir(tmp_path):
    """A directory whose filesystem takes a 16 TiB COW file: a fresh tmpfs (size 6 GiB, for the
    3.75 GiB of set bits the grown tail needs). ext4 (this /tmp) stops at 16 TiB - 4 KiB, less
    than a 16 TiB device plus its header and bitmap. Without mount rights: the largest device
    the test directory's filesystem allows (yielded as the second value)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g,mode=0700", "tmpfs", str(mnt)],
                             capture_output=True, text=True).returncode == 0
    try:
        directory = mnt if mounted else tmp_path
        largest = _largest_file(directory)
        size = 16 * TIB
        while spec_geometry(2, size)[3] + size > largest:
            size -= 64 * MIB
        yield directory, size
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("mode", ["safe", "in-place"])
def test_grow_1_tib_to_16_tib_stays_under_100_mb(big_dir, mode):
    directory, new_size = big_dir
    if new_size != 16 * TIB:
        warnings.warn(f"no tmpfs: {directory}'s filesystem takes at most a {new_size}-byte "
                      "device; grown to that instead of 16 TiB")
    backing, cow = directory / "back.img", directory / "disk.cow"
    _sparse(backing, TIB)
    create_cow(str(cow), str(backing), version=2, tail=Tail.TRUNCATE)    # as 2.4 creates it
    assert cow.stat().st_blocks * 512 < MIB
    child = subprocess.run([sys.executable, "-c", _RESIZE_CHILD, str(cow), str(new_size), str(TIB),
                            mode], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stdout + child.stderr
    peak = int(child.stdout.split("peak", 1)[1])
    assert peak < RSS_LIMIT, f"peak RSS {peak} bytes"
    header = read_header(open(cow, "rb").read(4120))
    geometry = header.geometry()
    assert header.size == new_size and cow.stat().st_size == geometry.file_length
    # Allocated: the grown tail's set bits (bits 2^31.. of a 2^35-bit bitmap: 3.75 GiB) and a
    # header block, nothing for the 256 MiB of the old, all-clear bitmap (no zeros written).
    tail_start = geometry.bitmap_offset + TIB // 512 // 8
    tail_bytes = geometry.bitmap_len - TIB // 512 // 8
    assert cow.stat().st_blocks * 512 <= tail_bytes + 2 * MIB
    fd = os.open(cow, os.O_RDONLY)
    try:
        assert os.lseek(fd, 8192, os.SEEK_DATA) >= tail_start // 4096 * 4096   # past the header
        assert os.pread(fd, 8, tail_start) == b"\xff" * 8
        assert os.pread(fd, 8, geometry.bitmap_offset + geometry.bitmap_len - 8) == b"\xff" * 8
        with pytest.raises(OSError) as nothing:              # the data area: one hole
            os.lseek(fd, geometry.bitmap_offset + geometry.bitmap_len + 4096, os.SEEK_DATA)
        assert nothing.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_safe_resize_through_a_symlink_dies_cleanly_at_every_step(cow24):
    """Through `link -> real`: whenever it dies, the link is still the link and the real file
    is the whole old or the whole new file (the temporary file sits beside the real one)."""
    tmp, backing, cow, _ = cow24
    old = cow.read_bytes()
    reference = tmp / "reference.img"
    shutil.copyfile(cow, reference)
    total = _steps(reference, "safe")
    new = reference.read_bytes()
    real_dir = tmp / "real"
    real_dir.mkdir()
    real, link = real_dir / "victim.img", tmp / "link.img"
    link.symlink_to("real/victim.img")
    for step in range(total + 1):
        real.write_bytes(old)
        _die_at(str(link), step, "safe")
        assert link.is_symlink() and os.readlink(link) == "real/victim.img"
        assert real.read_bytes() in (old, new), f"died at step {step}"
        assert not any(p.name.startswith(".link.img") for p in tmp.iterdir())
    assert real.read_bytes() == new
