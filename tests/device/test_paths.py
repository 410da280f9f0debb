"""Device behaviours beyond the oracle boot: events, flush, O_SYNC, the 2.4 open path.

The 2.4 rows are judged by the spec (no 2.4 kernel runs here); 6.1 facts used below were
measured with linux.uml in test_oracle_boot.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ubdsim.cmdline.spec import UnitSpec
from ubdsim.cow.header import new_header, pack_header, read_header
from ubdsim.device.events import EventBus
from ubdsim.device.open import boot_units, open_unit
from ubdsim.errors import UbdError
from ubdsim.profiles import get_profile
from ubdsim.device import hostio

from .oracle import extents

P24, P61 = get_profile("2.4"), get_profile("6.1")
MIB = 1 << 20


@pytest.fixture
def backing(tmp_path):
    path = tmp_path / "back.img"
    path.write_bytes(os.urandom(MIB))
    return path


def test_events_in_kernel_order(tmp_path, backing):
    seen = []
    bus = EventBus(seen.append)
    spec = UnitSpec(3, str(tmp_path / "cow.img"), str(backing))
    with open_unit(spec, P61, bus) as unit:
        unit.write(0, b"x" * 8192)          # two segments: data, bitmap, data, bitmap
        unit.write(0, b"y" * 512)           # bit already set: data only, no bitmap write-back
        unit.read(0, 1024)
        unit.discard(4096, 512)
        unit.flush()
    kinds = [(e.kind, e.data.get("file_offset")) for e in seen]
    geometry_data = 12288
    assert kinds == [("message", None), ("create", None), ("open", None),
                     ("write", geometry_data), ("bitmap", 8192),
                     ("write", geometry_data + 4096), ("bitmap", 8192),
                     ("write", geometry_data),
                     ("read", geometry_data),
                     ("discard", geometry_data + 4096), ("flush", None), ("close", None)]
    assert seen[0].data["text"] == f'Creating "{spec.file}" as COW file for "{backing}"'
    assert all(e.unit == 3 for e in seen)
    assert seen[-2].data == {}            # 6.1's flush reaches no host file (test_host_syncs)


def test_no_listener_is_silent_and_unsubscribe_works(tmp_path, backing):
    seen = []
    bus = EventBus()
    assert not bus.active
    stop = bus.subscribe(seen.append)
    assert bus.active
    stop()
    assert not bus.active
    with open_unit(UnitSpec(0, str(tmp_path / "cow.img"), str(backing)), P61, bus) as unit:
        unit.write(0, b"z" * 512)
    assert seen == []


def test_a_message_only_listener_gets_messages_and_turns_no_io_event_on(tmp_path, backing):
    """The harness's kernel log listens for messages only: I/O events are not even built."""
    messages, everything = [], []
    bus = EventBus(messages.append, kinds={"message"})
    assert bus.active and not bus.io_active
    spec = UnitSpec(0, str(tmp_path / "cow.img"), str(backing))
    with open_unit(spec, P61, bus) as unit:
        unit.write(0, b"m" * 4096)
        stop = bus.subscribe(everything.append)
        assert bus.io_active
        unit.write(4096, b"n" * 512)
        stop()
        assert not bus.io_active
        unit.read(0, 512)
    assert [e.kind for e in messages] == ["message"]
    assert [e.kind for e in everything] == ["write", "bitmap"]


def test_flush_syncs_no_host_file_under_any_profile(tmp_path, backing):
    """The oracle for 6.1 is tests/kernel_ref/test_host_syncs.py (linux.uml's sync calls,
    interposed); here: the model's flush makes no host sync call either (strace counts)."""
    script = (f"from ubdsim.cmdline.spec import UnitSpec\nfrom ubdsim.device.open import open_unit\n"
              f"from ubdsim.profiles import get_profile\n"
              f"for p, n in (('2.4', 'a.img'), ('6.1', 'b.img')):\n"
              f"    with open_unit(UnitSpec(0, '{tmp_path}/' + n, '{backing}'), get_profile(p)) as u:\n"
              f"        u.write(0, b'x' * 512)\n        u.flush()\n")
    traced = subprocess.run(["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs",
                             sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert traced.returncode == 0, traced.stderr
    assert not any(name in traced.stderr for name in ("fsync", "fdatasync", "sync_file_range", "syncfs"))


def test_sync_flag_opens_with_o_sync(tmp_path, backing):
    with open_unit(UnitSpec(0, str(tmp_path / "cow.img"), str(backing), sync=True), P61) as unit:
        flags = int(open(f"/proc/self/fdinfo/{unit.fd}").read().split("flags:")[1].split()[0], 8)
        assert flags & os.O_SYNC == os.O_SYNC
    with open_unit(UnitSpec(0, str(tmp_path / "cow.img"), str(backing)), P61) as unit:
        flags = int(open(f"/proc/self/fdinfo/{unit.fd}").read().split("flags:")[1].split()[0], 8)
        assert flags & os.O_SYNC != os.O_SYNC


def test_2_4_creates_v2_full_length_hole_announced_first(tmp_path, backing):
    cow = tmp_path / "cow.img"
    with open_unit(UnitSpec(0, str(cow), str(backing)), P24) as unit:
        assert unit.messages == (f'Creating "{cow}" as COW file for "{backing}"',)
    data = cow.read_bytes()
    header = read_header(data)
    assert header.version == 2 and header.size == MIB and header.backing_file == str(backing).encode()
    assert len(data) == header.geometry().file_length
    assert extents(cow) == [(0, 8192)]           # header + bitmap block only: no trailing byte


def test_2_4_switch_rewrites_v2_and_keeps_the_bitmap(tmp_path, backing):
    cow = tmp_path / "cow.img"
    with open_unit(UnitSpec(0, str(cow), str(backing)), P24) as unit:
        unit.write(0, b"D" * 4096)
    moved = tmp_path / "moved.img"
    os.link(backing, tmp_path / "hardlink.img")
    moved.write_bytes(backing.read_bytes())
    st = backing.stat()
    os.utime(moved, (st.st_atime, st.st_mtime))
    # a hard link is the same file (dev+inode): no switch, no message
    with open_unit(UnitSpec(0, str(cow), str(tmp_path / "hardlink.img")), P24) as unit:
        assert unit.messages == ()
    with open_unit(UnitSpec(0, str(cow), str(moved)), P24) as unit:
        assert unit.messages == (f'Backing file mismatch - "{moved}" requested,\n"{backing}" '
                                 f'specified in COW header of "{cow}"',
                                 f"Switching backing file to '{moved}'")
        assert unit.read(0, 4096) == b"D" * 4096
    header = read_header(cow.read_bytes())
    assert header.version == 2 and header.backing_file == str(moved).encode()


def test_2_4_unstatable_header_path_counts_as_same(tmp_path, backing):
    """[2.4] path_requires_switch(): a failed stat of either path means "same file": no
    switch, and the header's (missing) file is then checked and fails."""
    cow = tmp_path / "cow.img"
    open_unit(UnitSpec(0, str(cow), str(backing)), P24).close()
    moved = tmp_path / "moved.img"
    os.rename(backing, moved)
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(cow), str(moved)), P24)
    assert info.value.printed[0] == f'Couldn\'t stat "{backing}" : err = 2'
    assert not any("Switching" in line for line in info.value.printed)


def test_header_unreadable_with_backing_fails_without_backing_is_raw(tmp_path, backing):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x01" * 4096)
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(junk), str(backing)), P61)
    assert info.value.printed[:2] == (f'Failed to read COW header from COW file "{junk}", errno = 22',
                                      f"Failed to open '{junk}', errno = 22")
    with open_unit(UnitSpec(0, str(junk)), P61) as unit:
        assert unit.cow is None and unit.size == 4096
        assert unit.read(0, 512) == b"\x01" * 512


def test_2_4_reads_v1_and_refuses_v3(tmp_path, backing):
    st = backing.stat()
    v1 = tmp_path / "v1.img"
    header = new_header(1, str(backing).encode(), int(st.st_mtime), st.st_size)
    v1.write_bytes(pack_header(header))
    os.truncate(v1, header.geometry().file_length)
    with open_unit(UnitSpec(0, str(v1)), P24) as unit:
        assert unit.cow.header.version == 1
        unit.write(512, b"v" * 512)
        assert unit.read(512, 512) == b"v" * 512
    v3 = tmp_path / "v3.img"
    v3.write_bytes(pack_header(new_header(3, str(backing).encode(), int(st.st_mtime), st.st_size)))
    with pytest.raises(UbdError) as info:
        open_unit(UnitSpec(0, str(v3), str(backing)), P24)
    assert info.value.printed[0] == "read_cow_header - invalid COW version"


def test_discard_unsupported_on_2_4_and_with_flag_t(tmp_path, backing):
    with open_unit(UnitSpec(0, str(tmp_path / "a.img"), str(backing)), P24) as unit:
        with pytest.raises(UbdError) as info:
            unit.discard(0, 512)
        assert info.value.errno == 95
    with open_unit(UnitSpec(0, str(tmp_path / "b.img"), str(backing), no_trim=True), P61) as unit:
        with pytest.raises(UbdError):
            unit.write_zeroes(0, 512)


def test_boot_units_orders_messages_and_skips_failures(tmp_path, backing):
    specs = {1: UnitSpec(1, str(tmp_path / "b.img"), str(backing)),
             0: UnitSpec(0, str(tmp_path / "missing.img"))}
    units, messages, failures = boot_units(specs, P61)
    try:
        assert list(units) == [1] and list(failures) == [0]
        assert messages == ["Failed to initialize ubd device 0 :Couldn't determine size of device's file",
                            f'Creating "{tmp_path / "b.img"}" as COW file for "{backing}"']
    finally:
        for unit in units.values():
            unit.close()


def test_large_sparse_backing_costs_nothing(tmp_path):
    """A 1 TiB sparse backing: creation, a write at the end and reads, without reading or
    allocating the bitmap (256 MiB) or the data."""
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate(1 << 40)
    cow = tmp_path / "cow.img"
    with open_unit(UnitSpec(0, str(cow), str(big)), P61) as unit:
        unit.write((1 << 40) - 4096, b"e" * 4096)
        assert unit.read((1 << 40) - 8192, 8192) == bytes(4096) + b"e" * 4096
    with open_unit(UnitSpec(0, str(cow), str(big)), P61) as unit:
        assert unit.read((1 << 40) - 4096, 4096) == b"e" * 4096
    assert os.stat(cow).st_blocks * 512 < 1 << 20


def test_fallocate_helper_reports_errors(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError):
            hostio.fallocate(fd, hostio.FALLOC_FL_PUNCH_HOLE | hostio.FALLOC_FL_KEEP_SIZE, 0, 512)
    finally:
        os.close(fd)


def test_device_size_2_4_whole_kib_6_1_whole_sectors(tmp_path):
    """ubd_add(): [2.4] size / 1024 KiB blocks; [6.1] ROUND_BLOCK() up to 512 (measured in
    test_oracle_boot.py for 6.1: odd.img and raw14.img)."""
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"o" * (MIB + 1000))
    with open_unit(UnitSpec(0, str(tmp_path / "a.img"), str(odd)), P24) as unit:
        assert unit.size == MIB
    with open_unit(UnitSpec(0, str(tmp_path / "b.img"), str(odd)), P61) as unit:
        assert unit.size == MIB + 1024
