"""`ubdsim check`: each finding made the way the damage really happens, and its exit code.

The damage comes from the real actors: linux.uml 6.1 (a backing switch over a V2 file, a
stacked COW file, a discard), uml_mkcow, a kill between the data and the bitmap write (strace
injects the SIGKILL at the bitmap's pwrite), two 2.4 openers racing on one bitmap word, a
`touch`ed backing file. Clean files written by linux.uml itself must come out clean.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernel_ref import launcher
from tests.cow.builders import UBDSIM, build_cow, pack_spec_header, random_file, run
from tests.ops.damage import damaged_cow
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.errors import UbdError
from ubdsim.ops.check import check
from ubdsim.profiles import get_profile

GUEST_DEVICES = "for i in 0 1 2 3; do mknod {d}/ubd$i b 98 $((i*16)); done\n"


def ubdsim_check(*argv: str) -> tuple[int, dict]:
    r = subprocess.run([UBDSIM, "check", "--json", *argv], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, (json.loads(r.stdout) if r.stdout else {"stderr": r.stderr})


def ids(report: dict) -> dict[str, str]:
    return {f["id"]: f["severity"] for f in report["findings"]}


def _boot(tmp, options: list[str], body: str) -> launcher.KernelRun:
    result = launcher.boot(options, script=GUEST_DEVICES.format(d=tmp) + body, cwd=tmp, timeout=120)
    assert result.status == 0, result.problem
    return result


def test_files_linux_uml_wrote_are_clean(tmp):
    """Lone 512-byte writes (their 4 KiB neighbours allocated and zero), 4 KiB writes and a
    partial last sector, all by linux.uml: no finding worse than the 2.4 V3 warning."""
    random_file("b.img", (1 << 20) + 1000, seed=1)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    _boot(tmp, ["ubd0=c.cow,b.img"],
          f"dd if=/dev/urandom of={tmp}/ubd0 bs=512 seek=3 count=1 conv=notrunc 2>/dev/null\n"
          f"dd if=/dev/urandom of={tmp}/ubd0 bs=512 seek=1001 count=5 oflag=direct conv=notrunc 2>/dev/null\n"
          f"dd if=/dev/zero of={tmp}/ubd0 bs=4096 seek=40 count=3 conv=notrunc 2>/dev/null\n"
          f"dd if=/dev/urandom of={tmp}/ubd0 bs=512 seek=2049 count=1 conv=notrunc 2>/dev/null\nsync\n")
    status, report = ubdsim_check("c.cow")
    assert status == 0 and report["marked_sectors"] > 0
    assert set(ids(report)) == {"header.version_unreadable"}        # a V3 file: 2.4 can't read it
    assert ubdsim_check("--kernel", "6.1", "c.cow") == (0, {**report, "profile": "6.1", "findings": [],
                                                          "warnings": 0})


def test_kill_between_data_and_bitmap_write_is_an_orphan_leak(tmp):
    """strace kills the writer on its second pwrite64 (the bitmap write-back, after the data)."""
    random_file("b.img", 1 << 20, seed=2)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    writer = ("from ubdsim.cmdline.spec import UnitSpec\nfrom ubdsim.device.open import open_unit\n"
              "from ubdsim.profiles import get_profile\n"
              "u = open_unit(UnitSpec(0, 'c.cow', 'b.img'), get_profile('6.1'))\n"
              "u.write(8 * 512, bytes(range(256)) * 16)\n")
    r = subprocess.run(["strace", "-qq", "-o", os.devnull, "-e", "trace=pwrite64", "-e",
                        "inject=pwrite64:signal=KILL:when=2",
                        sys.executable, "-c", writer], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0                                       # it really died
    status, report = ubdsim_check("c.cow")
    assert status == 3 and ids(report)["data.orphan"] == "leak"
    orphan = next(f for f in report["findings"] if f["id"] == "data.orphan")
    assert orphan["sectors"] == [[8, 8]] and report["marked_sectors"] == 0


def test_two_2_4_writers_lose_a_bit(tmp):
    """2.4 takes no locks: two openers each write back their own copy of bitmap word 0."""
    random_file("b.img", 1 << 20, seed=3)
    profile = get_profile("2.4")
    first = open_unit(UnitSpec(0, "c.cow", "b.img"), profile)       # creates the V2 file
    second = open_unit(UnitSpec(0, "c.cow", "b.img"), profile)
    first.write(0, b"\x11" * 512)
    second.write(512, b"\x22" * 512)                                # its word 0 lacks bit 0
    first.close()
    second.close()
    status, report = ubdsim_check("--kernel", "2.4", "c.cow")
    assert status == 3
    orphan = next(f for f in report["findings"] if f["id"] == "data.orphan")
    assert orphan["sectors"] == [[0, 1]] and report["marked_sectors"] == 1


def test_touched_backing_and_missing_backing_are_corruptions(tmp):
    random_file("b.img", 1 << 20, seed=4)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    os.utime("b.img", (1, 1))
    status, report = ubdsim_check("c.cow")
    assert status == 2 and ids(report)["backing.mtime_mismatch"] == "corruption"
    os.unlink("b.img")
    status, report = ubdsim_check("c.cow")
    assert status == 2 and ids(report)["backing.missing"] == "corruption"


def test_linux_uml_switch_over_a_v2_file_is_found(tmp):
    """2.4 (ubdsim) makes and writes a V2 file; linux.uml 6.1 switches it to a copied backing
    file and writes its V3 header over the V2 bitmap."""
    random_file("b.img", 1 << 20, seed=5)
    r = run([UBDSIM, "run", "ubd0=v2.cow,b.img", "--", "dd", "if=/dev/urandom", "of=/dev/ubd0",
             "bs=4096", "seek=2", "count=8", "conv=notrunc"])
    assert r.returncode == 0, r.stderr
    assert ubdsim_check("--kernel", "2.4", "v2.cow")[0] == 0
    shutil.copy2("b.img", "b2.img")
    result = _boot(tmp, ["ubd0=v2.cow,b2.img"], "true\n")
    assert "Switching backing file to" in result.console
    status, report = ubdsim_check("v2.cow")
    assert status == 2 and ids(report)["header.v3_over_v2"] == "corruption"
    assert report["version"] == 3


def test_stacked_cow_booted_by_linux_uml_is_read_raw(tmp):
    """UML cannot stack: linux.uml shows the lower COW file's header as the disk's first bytes."""
    random_file("b.img", 1 << 20, seed=6)
    assert run(["uml_mkcow", "lower.cow", "b.img"]).returncode == 0
    assert run(["uml_mkcow", "upper.cow", "lower.cow"]).returncode == 0
    _boot(tmp, ["ubd0=upper.cow,lower.cow"], f"dd if={tmp}/ubd0 of={tmp}/seen bs=512 count=1 2>/dev/null\n")
    assert open("seen", "rb").read() == open("lower.cow", "rb").read(512)
    status, report = ubdsim_check("upper.cow")
    assert status == 0 and ids(report)["backing.is_cow"] == "warning"


def test_linux_uml_discard_leaves_marked_holes_which_are_no_damage(tmp):
    random_file("b.img", 1 << 20, seed=7)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    _boot(tmp, ["ubd0=c.cow,b.img"],
          f"dd if=/dev/urandom of={tmp}/ubd0 bs=4096 count=32 oflag=direct conv=notrunc 2>/dev/null\n"
          f"blkdiscard -o 65536 -l 65536 {tmp}/ubd0\n")
    status, report = ubdsim_check("--kernel", "6.1", "c.cow")
    assert status == 0 and ids(report) == {"data.marked_hole": "warning"}
    hole = report["findings"][0]
    assert hole["sectors"] == [[128, 128]] and report["marked_sectors"] == 256


@pytest.mark.parametrize("case, finding", [
    (dict(align=0), "header.alignment_zero"),
    (dict(ss=0), "header.sectorsize_invalid"),
    (dict(ss=1000), "header.sectorsize_invalid"),
    (dict(ss=1024), "header.sectorsize_not_512"),
])
def test_header_values_no_kernel_can_use(tmp, case, finding):
    random_file("b.img", 65536, seed=8)
    st = os.stat("b.img")
    with open("c.cow", "wb") as f:
        f.write(pack_spec_header(3, os.fsencode(os.path.abspath("b.img")), int(st.st_mtime),
                                 65536, **case))
    status, report = ubdsim_check("c.cow")
    assert status == 2 and ids(report)[finding] == "corruption"


def test_unterminated_path_and_rounding_bug(tmp):
    random_file("b.img", 4096 + 512, seed=9)       # 9 sectors: the V1/V2 rounding bug
    st = os.stat("b.img")
    build_cow("c.cow", 2, "b.img", {8: b"\x77" * 512})
    status, report = ubdsim_check("c.cow")
    assert status == 0 and ids(report)["header.rounding_bug"] == "warning"
    with open("c.cow", "r+b") as f:
        f.write(pack_spec_header(1, b"/" + b"x" * 255, int(st.st_mtime), st.st_size)[:264])
    status, report = ubdsim_check("c.cow")
    assert status == 2 and ids(report)["header.path_unterminated"] == "corruption"


def test_bits_past_the_end_are_a_leak(tmp):
    random_file("b.img", 4096 + 1024, seed=10)      # 10 sectors: V3 has bits for 16
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    with open("c.cow", "r+b") as f:
        f.seek(8192 + 1)
        f.write(b"\x80")                            # sector 15's bit
    status, report = ubdsim_check("c.cow")
    assert status == 3 and ids(report)["bitmap.bits_past_end"] == "leak"


def test_locked_file_needs_force_share(tmp):
    random_file("b.img", 65536, seed=11)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl,os,struct,sys\nfd=os.open('c.cow',os.O_RDWR)\n"
                               "fcntl.fcntl(fd,fcntl.F_SETLK,struct.pack('hhqqi4x',fcntl.F_WRLCK,0,0,0,0))\n"
                               "print('locked',flush=True)\nsys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run([UBDSIM, "check", "c.cow"], capture_output=True, text=True, timeout=60)
        status, report = ubdsim_check("-U", "c.cow")
    finally:
        holder.communicate("")
    assert r.returncode == 1 and r.stderr == (
        f"ubdsim check: error: 'c.cow' is locked by process {holder.pid} (a running UML "
        "kernel?): its contents are changing; use -U to check it anyway\n")
    assert status == 0 and ids(report)["file.in_use"] == "warning"


def test_raw_file_is_not_checked_and_a_fifo_is_refused(tmp):
    random_file("raw.img", 4096, seed=12)
    r = subprocess.run([UBDSIM, "check", "raw.img"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 63 and "not a COW file" in r.stdout
    assert run(["qemu-img", "check", "-f", "raw", "raw.img"]).returncode == 63   # the convention
    os.mkfifo("fifo")
    r = subprocess.run([UBDSIM, "check", "fifo"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "is a FIFO" in r.stderr


def test_a_one_tib_sparse_cow_is_checked_from_its_extents(tmp):
    with open("b.img", "wb") as f:
        f.truncate(1 << 40)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    with open_unit(UnitSpec(0, "c.cow", "b.img"), get_profile("6.1")) as unit:
        unit.write((1 << 39) + 4096, b"\x42" * 4096)
    blocks = os.stat("c.cow").st_blocks
    status, report = ubdsim_check("c.cow")
    assert status == 0 and report["marked_sectors"] == 8 and report["sectors"] == 1 << 31
    assert os.stat("c.cow").st_blocks == blocks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 40), version=st.sampled_from([1, 2, 3]))
def test_random_damage_never_crashes_check(tmp_path_factory, seed, flips, version):
    cow = damaged_cow(tmp_path_factory.mktemp("fuzz"), seed, flips, version, within=16384)
    try:
        report = check(str(cow))
    except UbdError:
        return                                       # a refusal with one line is fine
    assert report.status in (0, 2, 3, 63)
