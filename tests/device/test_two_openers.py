"""Two ubdsim processes on one COW file: 6.1 refuses the second (fcntl locks, same texts as
linux.uml, see test_oracle_boot.py ubd7); 2.4 takes no locks, both run, and the second one's
bitmap write-back erases the first one's bit (the corruption the seed documents warn of)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.errors import LockedError
from ubdsim.profiles import get_profile

HOLDER = r"""
import sys
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.profiles import get_profile
unit = open_unit(UnitSpec(0, sys.argv[2], sys.argv[3]), get_profile(sys.argv[1]))
print("open", flush=True)
sys.stdin.readline()
unit.write(0, b"A" * 512)
unit.close()
"""


def _holder(profile: str, cow, backing) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, profile, str(cow), str(backing)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"open"
    return proc


@pytest.fixture
def files(tmp_path):
    backing = tmp_path / "back.img"
    backing.write_bytes(b"B" * (1 << 20))
    return tmp_path / "cow.img", backing


def test_6_1_second_opener_is_refused(files):
    cow, backing = files
    holder = _holder("6.1", cow, backing)
    try:
        with pytest.raises(LockedError) as info:
            open_unit(UnitSpec(0, str(cow), str(backing)), get_profile("6.1"))
    finally:
        holder.stdin.close()
        holder.wait()
    assert info.value.printed == (f"F_SETLK failed, file already locked by pid {holder.pid}",
                                  f"Failed to lock '{cow}', err = 11",
                                  f"Failed to open '{cow}', errno = 11",
                                  f"ubda: Can't open \"{cow}\": errno = 11")
    # flag c: no lock taken, the open succeeds (and prints why)
    holder = _holder("6.1", cow, backing)
    try:
        with open_unit(UnitSpec(0, str(cow), str(backing), shared=True), get_profile("6.1")) as unit:
            assert unit.messages == (f'Not locking "{cow}" on the host',
                                     f'Not locking "{backing}" on the host')
    finally:
        holder.stdin.close()
        holder.wait()


def test_2_4_both_run_and_one_erases_the_others_bit(files):
    """X opens (empty bitmap in memory); we open, write sector 1 and close (disk: bit 1);
    X then writes sector 0 and writes back ITS word 0, which has bit 0 only: bit 1 is gone,
    and sector 1 reads the backing file again although its data sits in the COW file."""
    cow, backing = files
    profile = get_profile("2.4")
    other = _holder("2.4", cow, backing)
    try:
        with open_unit(UnitSpec(0, str(cow), str(backing)), profile) as unit:
            unit.write(512, b"C" * 512)
            assert unit.read(512, 512) == b"C" * 512
    finally:
        other.stdin.write(b"write\n")
        other.stdin.close()
        assert other.wait() == 0
    with open_unit(UnitSpec(0, str(cow), str(backing)), profile) as unit:
        assert unit.read(0, 512) == b"A" * 512
        assert unit.read(512, 512) == b"B" * 512     # lost
        assert unit.bitmap_bytes(1) == b"\x01"
