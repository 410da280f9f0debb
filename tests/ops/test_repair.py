"""`ubdsim repair`: each repair reads back the guest's data byte for byte, survives a kill at
every step (the untouched original or a file check accepts), and never makes a file worse.

The references are uml_moo merges: of a copy made before the damage (or of the same writes
made without the damage), compared with cmp-equal bytes against the repaired file's merge.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernel_ref import launcher
from tests.cow.builders import UBDSIM, build_cow, random_file, run
from tests.ops.damage import damaged_cow
from ubdsim.errors import UbdError
from ubdsim.ops.check import check
from ubdsim.ops.repair import repair

WRITER = """
import sys
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.profiles import get_profile
u = open_unit(UnitSpec(0, sys.argv[1], 'b.img'), get_profile('6.1'))
u.write(8 * 512, bytes(range(256)) * 16)
u.write(600 * 512, b'\\x5a' * 1024)
u.close()
"""

KILLER = """
import os, signal, sys
from ubdsim.ops.repair import repair
at = int(sys.argv[2])
def fault(n):
    if n == at:
        os.kill(os.getpid(), signal.SIGKILL)
repair(sys.argv[1], confirmed=frozenset({"mark-orphans"}), fault=fault)
"""

SEVERITY_ORDER = {0: 0, 3: 1, 2: 2, 63: 0}


def sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def merged(cow: str, out: str, backing: str | None = None) -> bytes:
    argv = ["uml_moo", *(["-b", backing] if backing else []), cow, out]
    r = run(argv)
    assert r.returncode == 0, r.stdout + r.stderr
    return open(out, "rb").read()


def _orphaned(name: str) -> None:
    """A COW file whose second data write's bitmap write-back was killed (strace)."""
    assert run(["uml_mkcow", name, "b.img"]).returncode == 0
    r = subprocess.run(["strace", "-qq", "-o", os.devnull, "-e", "trace=pwrite64", "-e",
                        "inject=pwrite64:signal=KILL:when=4", sys.executable, "-c", WRITER, name],
                       capture_output=True, timeout=60)
    assert r.returncode != 0


def test_mark_orphans_gives_the_guest_its_data_back(tmp):
    random_file("b.img", 1 << 20, seed=1)
    _orphaned("c.cow")
    assert run(["uml_mkcow", "ref.cow", "b.img"]).returncode == 0
    assert subprocess.run([sys.executable, "-c", WRITER, "ref.cow"]).returncode == 0
    assert check("c.cow").status == 3
    # without the confirmation it is listed, not done, and the status still says leak
    r = subprocess.run([UBDSIM, "repair", "--json", "c.cow"], capture_output=True, text=True)
    assert r.returncode == 3
    assert json.loads(r.stdout)["not_repaired"][0]["reason"] == "needs your confirmation: --mark-orphans"
    r = subprocess.run([UBDSIM, "repair", "--mark-orphans", "c.cow"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired data.orphan (mark-orphans): marked 2 orphan sectors (600-601)" in r.stdout
    assert merged("c.cow", "fixed.img") == merged("ref.cow", "ref.img")


def test_rebuild_v2_after_linux_uml_switched_it(tmp):
    random_file("b.img", 1 << 20, seed=2)
    for seek, count in ((0, 3), (5, 8), (200, 1)):       # sectors 0..63 are among the lost bits
        r = run([UBDSIM, "run", "ubd0=v2.cow,b.img", "--", "dd", "if=/dev/urandom",
                 "of=/dev/ubd0", "bs=4096", f"seek={seek}", f"count={count}", "conv=notrunc"])
        assert r.returncode == 0, r.stderr
    subprocess.run(["cp", "--sparse=always", "v2.cow", "before.cow"], check=True)
    reference = merged("before.cow", "before.img")
    shutil.copy2("b.img", "b2.img")
    result = launcher.boot(["ubd0=v2.cow,b2.img"], ["true"], cwd=tmp, timeout=120)
    assert result.status == 0 and "Switching backing file to" in result.console
    assert check("v2.cow").status == 2
    r = subprocess.run([UBDSIM, "repair", "v2.cow"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired header.v3_over_v2 (rebuild-v2)" in r.stdout
    assert merged("v2.cow", "fixed.img") == reference


def test_clear_bits_past_end_keeps_the_device(tmp):
    random_file("b.img", 5120, seed=3)                   # 10 sectors, bits for 16
    build_cow("c.cow", 3, "b.img", {2: b"\x33" * 512}, extra_bits={8193: 0x80})
    reference = merged("c.cow", "ref.img")
    result = repair("c.cow")
    assert [d["action"] for d in result.repaired] == ["clear-bits-past-end"]
    assert result.after.status == 0 and merged("c.cow", "fixed.img") == reference


def _steps(path: str) -> int:
    seen: list[int] = []
    scratch = path + ".count"
    subprocess.run(["cp", "--sparse=always", path, scratch], check=True)
    repair(scratch, confirmed=frozenset({"mark-orphans"}), fault=seen.append)
    os.unlink(scratch)
    return len(seen)


@pytest.mark.parametrize("damage", ["orphans", "bits_past_end"])
def test_a_kill_at_every_step_leaves_the_original_or_a_clean_file(tmp, damage):
    if damage == "orphans":
        random_file("b.img", 1 << 20, seed=4)
        _orphaned("c.cow")
    else:                                                # a 2047-sector disk: bit 2047 is past it
        random_file("b.img", 2047 * 512, seed=4)
        build_cow("c.cow", 3, "b.img", {s: bytes([s % 256]) * 512 for s in range(0, 2047, 100)},
                  extra_bits={8192 + 255: 0x80})
    steps = _steps("c.cow")
    assert steps >= 3
    original = sha("c.cow")
    for at in range(steps):
        subprocess.run(["cp", "--sparse=always", "c.cow", "t.cow"], check=True)
        r = subprocess.run([sys.executable, "-c", KILLER, "t.cow", str(at)], capture_output=True)
        assert r.returncode == -signal.SIGKILL, r.stderr
        if sha("t.cow") != original:
            assert check("t.cow").status == 0, at
        leftovers = [n for n in os.listdir(".") if n.endswith(".ubdsim-tmp")]
        assert len(leftovers) <= 1                        # the killed one; the next run sweeps it
    assert repair("t.cow", confirmed=frozenset({"mark-orphans"})).after.status == 0
    assert [n for n in os.listdir(".") if n.endswith(".ubdsim-tmp")] == []


def test_repair_keeps_links_owner_and_mode_and_refuses_hard_links(tmp):
    random_file("b.img", 5120, seed=5)
    build_cow("c.cow", 3, "b.img", {}, extra_bits={8193: 0x80})
    os.chown("c.cow", 4242, 4343)
    os.chmod("c.cow", 0o640)
    os.symlink("c.cow", "link.cow")
    assert repair("link.cow").after.status == 0
    st_ = os.stat("c.cow")
    assert os.path.islink("link.cow") and (st_.st_uid, st_.st_gid, st_.st_mode & 0o7777) == (4242, 4343, 0o640)
    build_cow("d.cow", 3, "b.img", {}, extra_bits={8193: 0x80})
    os.link("d.cow", "e.cow")
    before = sha("d.cow")
    r = subprocess.run([UBDSIM, "repair", "d.cow"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr == ("ubdsim repair: error: 'd.cow' has 2 hard links: a "
                                              "rewritten copy would split them; refusing\n")
    assert sha("d.cow") == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 30), version=st.sampled_from([1, 2, 3]))
def test_repair_never_makes_a_file_worse(tmp_path_factory, seed, flips, version):
    cow = damaged_cow(tmp_path_factory.mktemp("fuzz"), seed, flips, version)
    try:
        result = repair(str(cow), confirmed=frozenset({"mark-orphans"}))
    except UbdError:
        return
    before = result.before.status
    after = (result.after or result.before).status
    assert SEVERITY_ORDER[after] <= SEVERITY_ORDER[before]


def test_repair_points_the_header_at_a_copied_backing_file(tmp):
    """A backing file copied without `cp -p` (new mtime): check says the kernels would refuse
    it; repair -b COPY points the header at it after comparing the content, and the device
    reads back what it did over the original."""
    random_file("b.img", 1 << 20, seed=6)
    build_cow("c.cow", 3, "b.img", {s: bytes([s % 200 + 1]) * 512 for s in range(0, 2048, 37)})
    reference = merged("c.cow", "ref.img")
    shutil.copyfile("b.img", "copy.img")
    os.utime("copy.img", (1_000_000_000, 1_000_000_000))
    assert "backing.mtime_mismatch" in {f.id for f in check("c.cow", backing="copy.img").findings}
    # a copy whose content differs where the guest reads the backing file is refused
    with open("bad.img", "wb") as f:
        f.write(open("b.img", "rb").read())
        f.seek(5 * 512)
        f.write(b"!")
    before = sha("c.cow")
    r = subprocess.run([UBDSIM, "repair", "-b", "bad.img", "c.cow"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert sha("c.cow") == before
    r = subprocess.run([UBDSIM, "repair", "-b", "copy.img", "c.cow"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired backing (rebase): the header now names" in r.stdout
    os.unlink("b.img")
    assert merged("c.cow", "fixed.img") == reference
