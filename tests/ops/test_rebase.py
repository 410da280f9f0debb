"""`ubdsim rebase` against the real tools: linux.uml 6.1 (its own backing switch, its refusal
of a plain `cp` copy, its acceptance of rebased files, its locks), uml_mkcow, uml_moo and
qemu-img; and a kill at every mutating step of the header rewrite.

Expected headers are packed here straight from the spec's byte tables (tests/cow/builders.py),
never with ubdsim's own packer.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys

import pytest

from tests.cow.builders import UBDSIM, build_cow, pack_spec_header, random_file, run, spec_geometry
from tests.device.oracle import boot, ubd_lines
from tests.ops.holding_kernel import holding_kernel
from ubdsim.ops.rebase import journal_path, rebase

MIB = 1 << 20
M1 = 1_000_000_000                     # the original backing file's mtime (a `cp` gives another)
SS = 512


def _marks(seed: int) -> dict[int, bytes]:
    """Whole 4 KiB pages (sectors 0-7, 96-103, 2040-2047): a page that mixes COW and backing
    sectors would meet 6.1's read-offset drift (ubd-behaviour.md section 5) in the guest's reads,
    which is not what these tests are about."""
    rng = random.Random(seed)
    return {s: rng.randbytes(SS) for s in [*range(8), *range(96, 104), *range(2040, 2048)]}


MARKS = _marks(7)
HELD = len(MARKS) * SS                 # bytes the COW file holds


# -- helpers ---------------------------------------------------------------------------------------

def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ubdsim(*argv, cwd=None) -> subprocess.CompletedProcess:
    return run([UBDSIM, *map(str, argv)], cwd=cwd)


def refused(r: subprocess.CompletedProcess) -> str:
    """The one error line of a refused `ubdsim rebase` (asserting its shape)."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ubdsim rebase: error: "), r.stderr
    return lines[0]


def mark_v3(cow, size: int, marks: dict[int, bytes]) -> None:
    """Write `marks` into a V3 COW file made by uml_mkcow: data at data_offset + s*512, bits set."""
    _, bitmap_offset, _, data_offset = spec_geometry(3, size)
    with open(cow, "r+b") as f:
        for sector, data in marks.items():
            f.seek(data_offset + sector * SS)
            f.write(data)
            f.seek(bitmap_offset + sector // 8)
            byte = f.read(1)[0]
            f.seek(bitmap_offset + sector // 8)
            f.write(bytes([byte | 1 << (sector % 8)]))


def real(path) -> bytes:
    """The absolute path a writer stores (directory part with links resolved)."""
    path = os.path.abspath(path)
    return os.fsencode(os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path)))


def expected_header(version: int, new, broken: bool = False) -> bytes:
    st = os.stat(new)
    return pack_spec_header(version, real(new), int(st.st_mtime), st.st_size, broken=broken)


def model_view(backing, marks) -> bytes:
    """The disk a guest sees: backing bytes with the marked sectors replaced."""
    image = bytearray(open(backing, "rb").read())
    for s, data in marks.items():
        image[s * SS:s * SS + len(data)] = data
    return bytes(image)


@pytest.fixture
def case(tmp_path, monkeypatch):
    """base.img (1 MiB, a real hole at 64-128 KiB, mtime M1), cow (uml_mkcow + MARKS), and a
    plain `cp` copy (new mtime)."""
    monkeypatch.chdir(tmp_path)
    random_file("base.img", MIB, seed=3, holes=True)
    os.utime("base.img", (M1, M1))
    assert run(["uml_mkcow", "cow", "base.img"]).returncode == 0
    mark_v3("cow", MIB, MARKS)
    assert run(["cp", "base.img", "copy.img"]).returncode == 0
    assert int(os.stat("copy.img").st_mtime) != M1
    return tmp_path


# -- (i) the oracle: linux.uml 6.1's own switch, its refusal, its acceptance -----------------------

UNITS = [("k_p.cow", "copyp.img"),      # ubd0: the kernel switches (cp -p: same mtime)
         ("k_plain.cow", "copy.img"),   # ubd1: the kernel refuses the plain cp (mtime mismatch)
         ("u_plain.cow", None),         # ubd2: rebased by ubdsim onto copy.img, header path only
         ("u_plain_b.cow", "copy.img"), # ubd3: rebased, and copy.img named on the command line
         ("ref.cow", "base.img"),       # ubd4: the original, over the original
         ("u_v2.cow", None),            # ubd5: a V2 file rebased by ubdsim onto copy.img
         ("v2ref.cow", "base.img"),     # ubd6: the V2 original, over the original
         ("k_v2.cow", "copyp.img")]     # ubd7: the kernel's own switch of the V2 file (to V3)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    d = tmp_path_factory.mktemp("rebase-oracle")
    (d / "base.img").write_bytes(random.Random(11).randbytes(MIB))
    os.utime(d / "base.img", (M1, M1))
    assert run(["uml_mkcow", "cow.img", "base.img"], cwd=d).returncode == 0
    mark_v3(d / "cow.img", MIB, MARKS)
    build_cow(str(d / "v2.img"), 2, str(d / "base.img"), MARKS)
    assert run(["cp", "-p", "base.img", "copyp.img"], cwd=d).returncode == 0
    assert run(["cp", "base.img", "copy.img"], cwd=d).returncode == 0
    assert int(os.stat(d / "copy.img").st_mtime) != M1
    for name in ("k_p", "u_p", "k_plain", "u_plain", "u_plain_b", "ref"):
        shutil.copyfile(d / "cow.img", d / f"{name}.cow")
    for name in ("u_v2", "v2ref", "k_v2"):
        shutil.copyfile(d / "v2.img", d / f"{name}.cow")
    rebased = {name: ubdsim("rebase", "-b", new, name, cwd=d) for name, new in
               (("u_p.cow", "copyp.img"), ("u_plain.cow", "copy.img"),
                ("u_plain_b.cow", "copy.img"), ("u_v2.cow", "copy.img"))}
    before = {p.name: sha(p) for p in d.iterdir() if p.is_file()}
    args = [f"ubd{unit}={cow}" + (f",{back}" if back else "") for unit, (cow, back) in enumerate(UNITS)]
    results = d / "results.txt"
    guest = [f"if s=$(blockdev --getsize64 /dev/ubd{chr(97 + u)} 2>/dev/null); then echo {u} $s "
             f"$(dd if=/dev/ubd{chr(97 + u)} iflag=direct bs=65536 2>/dev/null | sha256sum | "
             f"cut -c1-64) >> {results}; fi" for u in range(len(UNITS))]
    console = boot(d, args, guest, d / "scratch")
    view = {}
    for line in results.read_text().splitlines():
        unit, size, digest = line.split()
        view[int(unit)] = (int(size), digest)
    return {"d": d, "console": console, "view": view, "rebased": rebased, "before": before}


def _masked_v3(data: bytes) -> bytes:
    """linux.uml's header buffer is kmalloc'ed: bytes after the path's NUL are garbage
    (tests/device/test_oracle_boot.py measured them); zero them, as ubdsim writes them."""
    end = data.index(b"\0", 32)
    return data[:end] + bytes(4128 - end) + data[4128:]


def test_rebase_writes_the_kernels_switch_header(oracle):
    """cp -p: the one case where linux.uml switches by itself. Its file and ubdsim's are
    identical, byte for byte (the kernel's uninitialised padding masked), and the header is
    the spec's V3 header for copyp.img."""
    d = oracle["d"]
    assert oracle["rebased"]["u_p.cow"].returncode == 0
    assert "Switching backing file to 'copyp.img'" in oracle["console"]
    kernel, ours = (d / "k_p.cow").read_bytes(), (d / "u_p.cow").read_bytes()
    assert len(kernel) == len(ours) and _masked_v3(kernel) == ours
    assert ours[:4128] == expected_header(3, d / "copyp.img")
    assert ours[4128:] == (d / "cow.img").read_bytes()[4128:]       # bitmap and data untouched


def test_plain_cp_kernel_refuses_rebase_fixes(oracle):
    """A plain `cp` (new mtime): linux.uml refuses `ubd1=cow,copy` and leaves the file alone;
    `ubdsim rebase` writes what the kernel's switch writes (write_cow_header(): absolute path,
    the new file's mtime and size), and the kernel then opens the file without a word."""
    d, console = oracle["d"], oracle["console"]
    copy_mtime = int(os.stat(d / "copy.img").st_mtime)
    assert f"mtime mismatch ({M1} vs {copy_mtime}) of COW header vs backing file" in console
    assert sha(d / "k_plain.cow") == oracle["before"]["k_plain.cow"] == sha(d / "cow.img")
    # (The guest's own later open of ubdb succeeds: open_ubd_file() had already set the unit's
    # backing file to the header's path, so that open reads base.img, never copy.img.)
    r = oracle["rebased"]["u_plain.cow"]
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == (f"rebased u_plain.cow (V3 header, V3 layout): '{d / 'base.img'}' -> "
                        f"'{d / 'copy.img'}', mtime {M1} -> {copy_mtime}, size {MIB}; "
                        f"{MIB - HELD} bytes the COW file does not hold compared: identical\n")
    ours = (d / "u_plain.cow").read_bytes()
    assert ours[:4128] == expected_header(3, d / "copy.img")
    assert ours[4128:] == (d / "cow.img").read_bytes()[4128:]
    # the kernel accepts the rebased files: no mismatch, no switch, nothing rewritten, and the
    # guest reads exactly what it read through the original over base.img
    lines = ubd_lines(console, boot_only=False)
    assert not any("u_plain" in line or "u_v2" in line for line in lines), lines
    for name in ("u_plain.cow", "u_plain_b.cow", "u_v2.cow"):
        assert sha(d / name) == oracle["before"][name]
    reference = (MIB, hashlib.sha256(model_view(d / "base.img", MARKS)).hexdigest())
    assert oracle["view"][4] == reference
    assert oracle["view"][2] == oracle["view"][3] == reference


def test_v2_rebase_keeps_version_and_data_kernel_switch_loses_them(oracle):
    """rebase keeps a V2 file V2 (the guest reads its data through linux.uml); the 6.1
    kernel's own switch writes a V3 header over the V2 bitmap and the data is gone."""
    d = oracle["d"]
    assert oracle["rebased"]["u_v2.cow"].returncode == 0
    ours = (d / "u_v2.cow").read_bytes()
    assert ours[:4120] == expected_header(2, d / "copy.img")
    assert ours[4120:] == (d / "v2.img").read_bytes()[4120:]
    assert oracle["view"][5] == oracle["view"][6] == (
        MIB, hashlib.sha256(model_view(d / "base.img", MARKS)).hexdigest())
    assert (d / "k_v2.cow").read_bytes()[4:8] == b"\0\0\0\x03"        # the kernel: V3 now
    assert oracle["view"][7] != oracle["view"][6]


def test_moo_after_rebase(oracle):
    """(vii) uml_moo accepts the rebased files and merges exactly what it merges from the
    originals over the original backing file; ubdsim moo agrees."""
    d = oracle["d"]
    for rebased, original in (("u_plain.cow", "cow.img"), ("u_v2.cow", "v2.img")):
        out, ref = d / f"{rebased}.moo", d / f"{original}.moo"
        for path in (out, ref):
            path.unlink(missing_ok=True)
        r = run(["uml_moo", rebased, out.name], cwd=d)
        assert r.returncode == 0, r.stdout + r.stderr
        assert run(["uml_moo", original, ref.name], cwd=d).returncode == 0
        assert out.read_bytes() == ref.read_bytes() == model_view(d / "base.img", MARKS)
        assert ubdsim("moo", "-f", rebased, "ours.img", cwd=d).returncode == 0
        assert (d / "ours.img").read_bytes() == out.read_bytes()


# -- (ii) content check ---------------------------------------------------------------------------

def _changed_copy(name: str, offset: int) -> None:
    data = bytearray(open("base.img", "rb").read())
    data[offset] ^= 0x5A
    with open(name, "wb") as f:
        f.write(data)


def test_content_mismatch_refused_with_offset(case):
    offset = 9 * SS + 5                                      # sector 9: not in the COW file
    _changed_copy("bad.img", offset)
    _changed_copy("badhole.img", 70000)                      # inside base.img's hole
    before = {name: sha(name) for name in os.listdir(".")}
    for name, at in (("bad.img", offset), ("badhole.img", 70000)):
        line = refused(ubdsim("rebase", "-b", name, "cow"))
        assert line == (f"ubdsim rebase: error: '{name}' differs from the old backing file "
                        f"'{case / 'base.img'}' at byte {at} (sector {at // SS}), which the COW "
                        "file does not hold: the guest would see different data; nothing changed "
                        "(-u rewrites the header without this check)")
    assert {name: sha(name) for name in os.listdir(".")} == before       # no journal either


def test_difference_in_a_sector_the_cow_holds_is_fine(case):
    """Sector 100 comes from the COW file: the new backing file may differ there."""
    _changed_copy("other.img", 100 * SS + 17)
    r = ubdsim("rebase", "--json", "-b", "other.img", "cow")
    assert r.returncode == 0, r.stderr
    assert '"check": "compared"' in r.stdout and f'"compared_bytes": {MIB - HELD}' in r.stdout
    assert open("cow", "rb").read(4128) == expected_header(3, "other.img")


def test_holes_and_zeros_compare_equal(case):
    """base.img has a hole at 64-128 KiB; a dense copy holds zeros there: the same disk."""
    assert run(["cp", "--sparse=never", "base.img", "dense.img"]).returncode == 0
    assert os.stat("dense.img").st_blocks > os.stat("base.img").st_blocks
    assert ubdsim("rebase", "-b", "dense.img", "cow").returncode == 0
    assert open("cow", "rb").read(4128) == expected_header(3, "dense.img")


def test_other_size_refused_in_every_mode(case):
    with open("short.img", "wb") as f:
        f.write(open("base.img", "rb").read()[:MIB - SS])
    before = sha("cow")
    for flags in ((), ("-u",), ("--trust-new",)):
        line = refused(ubdsim("rebase", *flags, "-b", "short.img", "cow"))
        assert line == (f"ubdsim rebase: error: new backing file 'short.img' has {MIB - SS} bytes, "
                        f"the COW header says {MIB}: the guest would see a different disk (and "
                        "the bitmap and data area are laid out for the header's size)")
    assert sha("cow") == before


# -- (iii) without the old backing file ------------------------------------------------------------

def test_unsafe_works_without_the_old_backing_file(case):
    shutil.copyfile("cow", "cow2")
    os.unlink("base.img")
    before = sha("cow")
    line = refused(ubdsim("rebase", "-b", "copy.img", "cow"))
    assert line == (f"ubdsim rebase: error: cannot check 'copy.img': the old backing file "
                    f"'{case / 'base.img'}' is gone (No such file or directory); use --trust-new "
                    "if you know it holds the same data (or -u to rewrite the header without any check)")
    assert sha("cow") == before
    r = ubdsim("rebase", "-u", "-b", "copy.img", "cow")
    assert r.returncode == 0 and r.stdout.endswith("content not checked (-u)\n"), r.stderr
    assert open("cow", "rb").read(4128) == expected_header(3, "copy.img")
    r = ubdsim("rebase", "--trust-new", "-b", "copy.img", "cow2")
    assert r.returncode == 0 and "trusted (--trust-new)" in r.stderr
    assert open("cow2", "rb").read() == open("cow", "rb").read()
    assert run(["uml_moo", "cow", "merged.img"]).returncode == 0


def test_same_file_other_name_and_nothing_to_do(case):
    os.link("base.img", "hard.img")
    r = ubdsim("rebase", "--json", "-b", "hard.img", "cow")
    assert r.returncode == 0 and '"check": "same-file"' in r.stdout
    r = ubdsim("rebase", "-b", "hard.img", "cow")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    # the old backing file itself, touched: nothing left to compare it with
    os.utime("hard.img", (M1 + 5, M1 + 5))
    assert "there is no original left" in refused(ubdsim("rebase", "-b", "hard.img", "cow"))


# -- (iv) loops ------------------------------------------------------------------------------------

def test_loops_refused(case):
    os.symlink("cow", "link")
    before = sha("cow")
    for new in ("cow", "link", str(case / "cow")):
        for flags in ((), ("-u",)):
            line = refused(ubdsim("rebase", *flags, "-b", new, "cow"))
            assert line == (f"ubdsim rebase: error: '{new}' is the COW file 'cow' itself: a COW "
                            "file over itself is a loop")
    # A over B (uml_mkcow A B), then B over A: refused, in both modes
    assert run(["uml_mkcow", "b.cow", "base.img"]).returncode == 0
    assert run(["uml_mkcow", "a.cow", "b.cow"]).returncode == 0
    snapshot = {name: sha(name) for name in ("a.cow", "b.cow", "cow")}
    for flags in ((), ("-u",)):
        line = refused(ubdsim("rebase", *flags, "-b", "a.cow", "b.cow"))
        assert line == (f"ubdsim rebase: error: the backing chain of 'a.cow' leads back to 'b.cow' "
                        f"('a.cow' -> '{case / 'b.cow'}'): rebasing onto it would make a loop")
    assert {name: sha(name) for name in ("a.cow", "b.cow", "cow")} == snapshot
    assert sha("cow") == before


def test_new_with_a_looping_chain_refused(case):
    """NEW is a COW file in an X -> Y -> X loop that does not involve COW."""
    for name, other in (("x.cow", "y.cow"), ("y.cow", "x.cow")):
        with open(name, "wb") as f:
            f.write(pack_spec_header(3, real(other), M1, MIB))
            f.truncate(MIB)
    line = refused(ubdsim("rebase", "-u", "-b", "x.cow", "cow"))
    assert line.startswith("ubdsim rebase: error: 'x.cow' is in a looping backing chain "
                           "(backing chain loops: ")


def test_qemu_img_makes_the_loop_ubdsim_refuses(tmp_path):
    """For comparison: qemu-img 7.2 `rebase -u` builds a qcow2 A -> B -> A loop without a word
    (its `info --backing-chain` notices afterwards; `check` and `convert` never return)."""
    def q(*argv):
        return run(["qemu-img", *argv], cwd=tmp_path)
    assert q("create", "-f", "raw", "base.img", "1M").returncode == 0
    for name in ("a.qcow2", "b.qcow2"):
        assert q("create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.img", name).returncode == 0
    assert q("rebase", "-u", "-F", "qcow2", "-b", "b.qcow2", "a.qcow2").returncode == 0
    assert q("rebase", "-u", "-F", "qcow2", "-b", "a.qcow2", "b.qcow2").returncode == 0
    info = q("info", "--backing-chain", "a.qcow2")
    assert "creates an infinite loop" in info.stderr


# -- (v) a kill at every step ----------------------------------------------------------------------

def _die_at(cow: str, new: str, step: int) -> int:
    """Rebase in a child process that SIGKILLs itself just before mutating step `step`."""
    pid = os.fork()
    if pid == 0:
        def fault(n: int) -> None:
            if n == step:
                os.kill(os.getpid(), signal.SIGKILL)
        try:
            rebase(cow, new, fault=fault)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _steps(cow: str, new: str) -> int:
    count = [0]

    def counter(n: int) -> None:
        count[0] = n + 1
    rebase(cow, new, fault=counter)
    return count[0]


def _make_victim(version: int) -> None:
    if version == 3:
        shutil.copyfile("cow", "victim")
    else:
        build_cow("victim", version, "base.img", MARKS)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_kill_at_every_step_leaves_old_or_new(case, version):
    _make_victim(version)
    old = open("victim", "rb").read()
    total = _steps("victim", "copy.img")
    new = open("victim", "rb").read()
    assert total == 8 and new != old
    header_len = {1: 280, 2: 4120, 3: 4128}[version]
    assert new[:header_len] == expected_header(version, "copy.img")
    assert new[header_len:] == old[header_len:]
    journal = journal_path("victim")
    outcomes = []
    for step in range(total + 1):
        with open("victim", "r+b") as f:              # the same inode, the old bytes
            f.write(old)
        code = _die_at("victim", "copy.img", step)
        now = open("victim", "rb").read()
        assert now in (old, new), f"killed at step {step}: neither the old nor the new file"
        pending = os.path.exists(journal)
        if pending:
            r = ubdsim("rebase", "--recover", "victim")
            assert r.returncode == 0, r.stderr
            now = open("victim", "rb").read()
            assert now in (old, new) and not os.path.exists(journal)
        outcomes.append((step, code, pending, now == new))
        # and a plain re-run of the same command always ends with the new header
        r = ubdsim("rebase", "-b", "copy.img", "victim")
        assert r.returncode == 0, r.stderr
        assert open("victim", "rb").read() == new and not os.path.exists(journal)
    assert outcomes == [
        (0, -9, False, False),    # before the journal: nothing happened
        (1, -9, True, False),     # empty journal: discarded, header untouched
        (2, -9, True, True),      # journal written (page cache), not fsynced: completed
        (3, -9, True, True),
        (4, -9, True, True),      # journal durable, header not written: completed
        (5, -9, True, True),      # header written, not fsynced: completed (and fsynced)
        (6, -9, True, True),      # header durable, journal still there
        (7, -9, False, True),     # journal removed, directory not fsynced
        (8, 0, False, True)]      # done


def _journal_then(step: int) -> None:
    with open("victim", "r+b") as f:
        f.write(OLD_CACHE["old"])
    assert _die_at("victim", "copy.img", step) == -9
    assert os.path.exists(journal_path("victim"))


OLD_CACHE: dict[str, bytes] = {}


def test_recovery_restores_when_new_changed_and_handles_torn_writes(case):
    """What a power loss (not a kill) can leave: a torn header, a torn journal."""
    shutil.copyfile("cow", "victim")
    OLD_CACHE["old"] = old = open("victim", "rb").read()
    shutil.copyfile("cow", "ref")
    assert ubdsim("rebase", "-b", "copy.img", "ref").returncode == 0
    new = open("ref", "rb").read()
    journal = journal_path("victim")
    # torn header (first 100 bytes of the new one), NEW unchanged: completed
    _journal_then(4)
    with open("victim", "r+b") as f:
        f.write(new[:100])
    r = ubdsim("rebase", "--recover", "victim")
    assert r.returncode == 0 and "new header completed" in r.stdout
    assert open("victim", "rb").read() == new and not os.path.exists(journal)
    # header written, then NEW touched before recovery: the old header is restored
    _journal_then(5)
    st = os.stat("copy.img")
    os.utime("copy.img", (st.st_atime, st.st_mtime + 100))
    r = ubdsim("rebase", "--recover", "victim")
    assert r.returncode == 0 and "old header restored" in r.stdout
    assert open("victim", "rb").read() == old
    os.utime("copy.img", (st.st_atime, st.st_mtime))
    # a journal cut short: discarded (the header is only written after the journal is whole)
    _journal_then(4)
    with open(journal, "r+b") as f:
        f.truncate(os.path.getsize(journal) // 2)
    r = ubdsim("rebase", "--recover", "victim")
    assert r.returncode == 0 and "removed the journal" in r.stdout
    assert open("victim", "rb").read() == old
    # a journal that belongs to another header is never applied
    _journal_then(4)
    shutil.copyfile("victim", "victim.new")
    os.replace("victim.new", "victim")               # another inode under the name
    line = refused(ubdsim("rebase", "-b", "copy.img", "victim"))
    assert "does not belong to its current header" in line
    assert open("victim", "rb").read() == old
    assert ubdsim("rebase", "--recover", "nothing").returncode == 1


# -- (vi) locks --------------------------------------------------------------------------------------

HOLDER = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
kind = fcntl.F_WRLCK if sys.argv[2] == "w" else fcntl.F_RDLCK
fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", kind, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("path,kind", [("cow", "w"), ("cow", "r"), ("copy.img", "w")])
def test_locked_by_a_holder_refused_with_its_pid(case, path, kind):
    before = {name: sha(name) for name in os.listdir(".")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path, kind], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = refused(ubdsim("rebase", "-b", "copy.img", "cow"))
    finally:
        holder.communicate("")
    assert line == (f"ubdsim rebase: error: '{path}' is locked by process {holder.pid} "
                    "(a running UML kernel?): refusing to touch it")
    assert {name: sha(name) for name in os.listdir(".")} == before
    assert ubdsim("rebase", "-b", "copy.img", "cow").returncode == 0     # lock gone: works


def test_running_linux_uml_holds_the_cow_file(case):
    """linux.uml 6.1 locks the COW file it serves: rebase names the kernel's pid."""
    before = sha("cow")
    with holding_kernel(["ubd0=cow,base.img"], case) as kernel:
        r = ubdsim("rebase", "-b", "copy.img", "cow")
    assert refused(r) == (f"ubdsim rebase: error: 'cow' is locked by process {kernel.pid} "
                          "(a running UML kernel?): refusing to touch it")
    assert sha("cow") == before


# -- bad input: one line, exit 1, nothing changed -------------------------------------------------

def test_bad_input_is_one_line(case):
    os.mkfifo("fifo")
    os.mkdir("adir")
    with open("raw.img", "wb") as f:
        f.write(bytes(8192))
    before = {name: sha(name) for name in os.listdir(".") if os.path.isfile(name)}
    cases = [
        (("-b", "copy.img", "fifo"), "COW file 'fifo' is a FIFO, not a regular file or a block device"),
        (("-b", "copy.img", "raw.img"), "'raw.img': no COW magic: not a COW file"),
        (("-b", "missing.img", "cow"), "new backing file 'missing.img' does not exist"),
        (("-b", "adir", "cow"), "new backing file 'adir' is a directory, not a regular file or a "
                                "block device"),
        (("-b", "fifo", "cow"), "new backing file 'fifo' is a FIFO, not a regular file or a "
                                "block device"),
        (("-b", "", "cow"), "the new backing file name is empty: a COW file needs a backing file"),
    ]
    for argv, text in cases:
        assert refused(ubdsim("rebase", *argv)) == f"ubdsim rebase: error: {text}"
    for argv in (("cow",), ("-F", "qcow2", "-b", "copy.img", "cow")):
        r = ubdsim("rebase", *argv)
        assert r.returncode == 2 and "Traceback" not in r.stderr
    assert {name: sha(name) for name in os.listdir(".") if os.path.isfile(name)} == before


def test_path_must_fit_the_versions_field(case):
    """V1 has 256 bytes for the path; rebase keeps V1, so a longer path is refused. The same
    path fits a V3 header."""
    deep = case / ("d" * 100) / ("e" * 100)
    deep.mkdir(parents=True)
    shutil.copy2("copy.img", deep / "copy.img")
    assert len(str(deep / "copy.img")) > 255
    build_cow("v1.cow", 1, "base.img", MARKS)
    before = sha("v1.cow")
    line = refused(ubdsim("rebase", "-b", deep / "copy.img", "v1.cow"))
    assert line == (f"ubdsim rebase: error: the backing path '{deep / 'copy.img'}' does not fit the "
                    "V1 header's 256-byte path field (at most 255 bytes once made absolute); "
                    "rebase keeps the header's version")
    assert sha("v1.cow") == before
    assert ubdsim("rebase", "-b", deep / "copy.img", "cow").returncode == 0
    assert open("cow", "rb").read(4128) == expected_header(3, deep / "copy.img")


def test_broken_v3_keeps_its_layout(case):
    build_cow("broken.cow", 3, "base.img", MARKS, broken=True)
    old = open("broken.cow", "rb").read()
    assert ubdsim("rebase", "-b", "copy.img", "broken.cow").returncode == 0
    now = open("broken.cow", "rb").read()
    assert now[:4136] == expected_header(3, "copy.img", broken=True)
    assert now[4136:] == old[4136:]
    assert run(["uml_moo", "broken.cow", "m.img"]).returncode == 0
    assert open("m.img", "rb").read() == model_view("base.img", MARKS)


def test_help_says_the_kernel_switch_writes_v3(case):
    r = ubdsim("rebase", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "its backing switch always writes a V3 header" in text
    assert "rebase keeps the file's version" in text
