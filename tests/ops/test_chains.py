"""COW chains (`--chain`, ubdsim's own: UML cannot stack), proven by three successive guests.

base.img is a seeded random disk. Guest 1 writes through the kernel-exact path
(`ubdsim run --kernel 6.1 ubd0=l1.cow,base.img`, the kernel creates l1.cow); uml_mkcow makes
l2.cow over l1.cow and guest 2 writes through `--chain ubd0=l2.cow,l1.cow`; uml_mkcow makes
l3.cow over l2.cow and guest 3 writes through `--chain ubd0=l3.cow,l2.cow`. The model is the
base bytes overlaid by each guest's writes in order. Then every reader must give the model:
a guest reading the whole device through `--chain`, `moo --chain`, `serve --chain` with
`qemu-img convert` of the export; `map --chain --json` must give the depth qemu-img map gives
for a qcow2 chain (cluster size 4 KiB) that qemu-io wrote with the same writes. Without
--chain the same l3 is read raw: compared with linux.uml itself booted on ubd0=l3.cow,l2.cow
(through kernel_ref.launcher), which shows l2.cow's header at sector 0.

Guests write whole 4 KiB blocks, so no page of a request mixes marked and unmarked sectors
and the 6.1 do_io() drift (which --chain keeps for the top layer) cannot change what a
whole-device read shows; `test_6_1_drift_on_the_top_layer_is_the_kernels` checks the drift
itself against the kernel-exact path over a flat backing file with the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess

import pytest

from kernel_ref import launcher
from tests.cow.builders import UBDSIM, pack_spec_header, random_file, run
from tests.nbd.serving import serve
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import open_unit
from ubdsim.errors import UbdError
from ubdsim.profiles import get_profile

BLOCK = 4096
SIZE = 2 << 20
GUEST_DEVICES = "for i in 0 1 2 3; do mknod {d}/ubd$i b 98 $((i*16)); done\n"

# Each guest's writes: (first 4 KiB block, blocks), overlapping the guest before it.
GUESTS = [
    [(8, 32), (300, 4)],            # guest 1: blocks 8-39, 300-303
    [(24, 32), (302, 6)],           # guest 2: blocks 24-55, 302-307
    [(48, 24), (100, 4), (306, 1)],  # guest 3: blocks 48-71, 100-103, 306
]


def payload(guest: int, first: int, count: int) -> bytes:
    return random.Random(f"guest{guest}-{first}").randbytes(count * BLOCK)


def ubdsim(*argv: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([UBDSIM, *argv], capture_output=True, text=True, timeout=300, **kw)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def guest_writes(guest: int, words: list[str], chain: bool) -> subprocess.CompletedProcess:
    """One guest: dd each of its payloads onto /dev/ubda (guest 1 buffered, 2 and 3 O_DIRECT)."""
    script = []
    for first, count in GUESTS[guest]:
        name = f"g{guest}-{first}.bin"
        with open(name, "wb") as f:
            f.write(payload(guest, first, count))
        flag = "" if guest == 0 else " oflag=direct"
        script.append(f"dd if={name} of=/dev/ubda bs={BLOCK} seek={first} conv=notrunc{flag} "
                      "status=none")
    done = ubdsim("run", "--kernel", "6.1", *(["--chain"] if chain else []), *words, "--",
                  "sh", "-c", " && ".join(script))
    assert done.returncode == 0, done.stderr
    return done


def model(guests: int = 3) -> bytes:
    data = bytearray(open("base.img", "rb").read())
    for guest in range(guests):
        for first, count in GUESTS[guest]:
            data[first * BLOCK:(first + count) * BLOCK] = payload(guest, first, count)
    return bytes(data)


def expected_depths() -> list[int]:
    """Per 4 KiB block: the layer holding it (l3 = 0, l2 = 1, l1 = 2, base.img = 3)."""
    depths = [3] * (SIZE // BLOCK)
    for guest in range(3):
        for first, count in GUESTS[guest]:
            for block in range(first, first + count):
                depths[block] = 2 - guest
    return depths


def build_chain() -> list[str]:
    """base.img, then three guests each over a new COW layer; returns guest 2 and 3's stderr."""
    random_file("base.img", SIZE, seed=11)
    os.utime("base.img", (1_000_000_000, 1_000_000_000))
    first = guest_writes(0, ["ubd0=l1.cow,base.img"], chain=False)
    assert first.stderr.splitlines() == ['Creating "l1.cow" as COW file for "base.img"']
    # Each lower layer's mtime is set into the past before the layer above records it: a
    # header stores whole seconds, so a later rewrite of that layer within the same second
    # (a moo -d commit) would otherwise still "match".
    os.utime("l1.cow", (1_000_000_100, 1_000_000_100))
    assert run(["uml_mkcow", "l2.cow", "l1.cow"]).returncode == 0
    second = guest_writes(1, ["ubd0=l2.cow,l1.cow"], chain=True)
    os.utime("l2.cow", (1_000_000_200, 1_000_000_200))
    assert run(["uml_mkcow", "l3.cow", "l2.cow"]).returncode == 0
    third = guest_writes(2, ["ubd0=l3.cow,l2.cow"], chain=True)
    return [second.stderr, third.stderr]


def digests(*paths: str) -> dict[str, tuple[str, int]]:
    return {p: (hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mtime_ns)
            for p in paths}


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory):
    """The three-guest chain, built once (the tests that change files build their own)."""
    where = tmp_path_factory.mktemp("chain")
    old = os.getcwd()
    os.chdir(where)
    try:
        lines = build_chain()
    finally:
        os.chdir(old)
    return where, lines


@pytest.fixture
def chain(chain_dir, monkeypatch):
    where, lines = chain_dir
    monkeypatch.chdir(where)
    return where, lines


# -- the device: run --chain ---------------------------------------------------------------------

def test_guests_name_the_layers_with_ubdsim_lines_only(chain):
    where, (second, third) = chain
    base = where / "base.img"
    assert second.splitlines() == [
        f"ubdsim: chain: ubda: 'l2.cow' (layer 0, COW, the unit's file) over 'l1.cow' (layer 1, "
        f"COW, read-only) over '{base}' (layer 2, raw, read-only); {SIZE} bytes; writes go to "
        "'l2.cow' only"]
    assert third.splitlines() == [
        f"ubdsim: chain: ubda: 'l3.cow' (layer 0, COW, the unit's file) over 'l2.cow' (layer 1, "
        f"COW, read-only) over '{where / 'l1.cow'}' (layer 2, COW, read-only) over '{base}' "
        f"(layer 3, raw, read-only); {SIZE} bytes; writes go to 'l3.cow' only"]


def test_chain_over_a_raw_backing_file_changes_nothing(tmp):
    """--chain over a raw backing file: the kernel's lines only, and the same COW file."""
    random_file("base.img", 1 << 20, seed=16)
    random_file("data.bin", 3 * BLOCK, seed=17)
    files = []
    for option in ((), ("--chain",)):
        cow = f"c{len(option)}.cow"
        done = ubdsim("run", "--kernel", "6.1", *option, f"ubd0={cow},base.img", "--", "sh",
                      "-c", "dd if=data.bin of=/dev/ubda bs=512 seek=5 conv=notrunc "
                            "oflag=direct status=none && dd if=/dev/ubda of=/dev/null bs=64k "
                            "status=none")
        assert done.returncode == 0
        assert done.stderr.splitlines() == [f'Creating "{cow}" as COW file for "base.img"']
        files.append(open(cow, "rb").read())
    assert files[0] == files[1]


def test_a_guest_reading_through_the_chain_sees_all_three_guests(chain):
    before = digests("base.img", "l1.cow", "l2.cow", "l3.cow")
    done = ubdsim("run", "--kernel", "6.1", "--chain", "ubd0=l3.cow,l2.cow", "--",
                  "sh", "-c", "blockdev --getsize64 /dev/ubda && "
                              "dd if=/dev/ubda of=seen.bin bs=65536 status=none")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SIZE}\n"                    # the raw bottom's size
    assert open("seen.bin", "rb").read() == model()
    assert digests("base.img", "l1.cow", "l2.cow", "l3.cow") == before    # reads write nothing


def test_writes_went_only_to_each_guests_top_file(chain):
    """uml_moo (no chains: it reads each COW file's backing file raw) merges l1 over base.img:
    exactly guest 1's writes; l2 and l3 hold exactly guest 2's and guest 3's blocks."""
    assert run(["uml_moo", "l1.cow", "l1-merged.img"]).returncode == 0
    assert open("l1-merged.img", "rb").read() == model(1)
    for guest, cow, lower in ((1, "l2.cow", "l1.cow"), (2, "l3.cow", "l2.cow")):
        out = f"{cow}.raw-merge"
        assert run(["uml_moo", cow, out]).returncode == 0
        merged, raw = open(out, "rb").read(), open(lower, "rb").read()
        written = {b for first, count in GUESTS[guest] for b in range(first, first + count)}
        for block in range(len(raw) // BLOCK):
            got = merged[block * BLOCK:(block + 1) * BLOCK]
            if block in written:
                first = max(f for f, c in GUESTS[guest] if f <= block < f + c)
                want = payload(guest, first, next(c for f, c in GUESTS[guest] if f == first))
                assert got == want[(block - first) * BLOCK:(block - first + 1) * BLOCK]
            else:
                assert got == raw[block * BLOCK:(block + 1) * BLOCK], (cow, block)


def test_without_chain_l3_is_read_raw_as_linux_uml_reads_it(chain):
    """The kernel cannot stack: l2.cow's header is the device's sector 0. ubdsim without
    --chain shows exactly what linux.uml shows, for the whole device."""
    where, _ = chain
    before = digests("l2.cow", "l3.cow")
    booted = launcher.boot(["ubd0=l3.cow,l2.cow"], cwd=where, timeout=120, script=(
        GUEST_DEVICES.format(d=where)
        + f"dd if={where}/ubd0 of={where}/uml-raw.bin bs=65536 2>/dev/null\n"))
    assert booted.status == 0, booted.problem
    done = ubdsim("run", "--kernel", "6.1", "ubd0=l3.cow,l2.cow", "--",
                  "dd", "if=/dev/ubda", "of=ubdsim-raw.bin", "bs=65536", "status=none")
    # no kernel line (as linux.uml prints none), only ubdsim's own hint about the stacking
    assert done.returncode == 0 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ubdsim: hint: unit 0: the backing file ") and "is itself a COW file" in done.stderr
    kernel, ours = open("uml-raw.bin", "rb").read(), open("ubdsim-raw.bin", "rb").read()
    assert len(kernel) == os.stat("l2.cow").st_size
    assert ours == kernel
    assert kernel[:512] == open("l2.cow", "rb").read(512) and kernel[:4] == b"OOOM"
    assert digests("l2.cow", "l3.cow") == before


def test_moo_chain_merges_the_whole_chain(chain):
    done = ubdsim("moo", "--chain", "--json", "l3.cow", "merged.img")
    assert done.returncode == 0, done.stderr
    assert open("merged.img", "rb").read() == model()
    summary = json.loads(done.stdout)
    assert summary["size"] == SIZE and len(summary["chain"]) == 4
    held = sum(d < 3 for d in expected_depths()) * BLOCK // 512
    assert summary["sectors_from_cow"] == held
    assert summary["sectors_from_backing"] == SIZE // 512 - held


def qemu_chain(where) -> str:
    """The same three guests' writes as a qcow2 chain over base.img, written by qemu-io."""
    previous, fmt = str(where / "base.img"), "raw"
    for guest in range(3):
        image = str(where / f"q{guest + 1}.qcow2")
        made = run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
                    "-b", previous, "-F", fmt, image])
        assert made.returncode == 0, made.stderr
        for first, count in GUESTS[guest]:
            name = f"g{guest}-{first}.bin"
            wrote = run(["qemu-io", "-f", "qcow2", "-c",
                         f"write -s {name} {first * BLOCK} {count * BLOCK}", image])
            assert wrote.returncode == 0 and "wrote" in wrote.stdout, wrote.stdout + wrote.stderr
        previous, fmt = image, "qcow2"
    return previous


def per_block(entries: list[dict]) -> list[int]:
    depths = [-1] * (SIZE // BLOCK)
    for e in entries:
        assert e["start"] % BLOCK == 0 and e["length"] % BLOCK == 0, e
        for block in range(e["start"] // BLOCK, (e["start"] + e["length"]) // BLOCK):
            depths[block] = e["depth"]
    return depths


def test_map_chain_depths_equal_qemu_img_map_of_a_qcow2_chain(chain):
    where, _ = chain
    top = qemu_chain(where)
    converted = run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, "q.raw"])
    assert converted.returncode == 0 and open("q.raw", "rb").read() == model()
    qemu = json.loads(run(["qemu-img", "map", "--output=json", top]).stdout)
    done = ubdsim("map", "--chain", "--json", "l3.cow")
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout)
    assert per_block(ours) == per_block(qemu) == expected_depths()
    assert {e["depth"] for e in ours} == {0, 1, 2, 3}
    files = {0: "l3.cow", 1: str(where / "l2.cow"), 2: str(where / "l1.cow"),
             3: str(where / "base.img")}
    for e in ours:
        assert e["file"] == files[e["depth"]] and e["present"] and e["data"] and not e["zero"]
        assert e["source"] == ("backing" if e["depth"] == 3 else "cow")
    plain = json.loads(ubdsim("map", "--json", "l3.cow").stdout)     # no chain: 2 levels
    assert {e["depth"] for e in plain} == {0, 1}


def test_serve_chain_exports_the_model(chain):
    where, _ = chain
    with serve(where / "nbd.sock", ["ubd0=l3.cow,l2.cow"], options=("--chain",), cwd=where) as s:
        assert [line for line in s.kernel_lines if line.startswith("ubdsim: chain: ubda: ")]
        done = run(["qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri("ubda"), "nbd.raw"])
        assert done.returncode == 0, done.stderr
    assert open("nbd.raw", "rb").read() == model()


def test_6_1_drift_on_the_top_layer_is_the_kernels(tmp):
    """Sector-sized writes into the top layer make pages that mix top and lower sectors; a
    multi-page read then drifts (do_io() [6.1]). Through the chain it must drift exactly as
    the kernel-exact path does over a flat backing file holding the lower layers' bytes."""
    p = get_profile("6.1")
    random_file("base.img", SIZE, seed=12)
    assert run(["uml_mkcow", "l1.cow", "base.img"]).returncode == 0
    with open_unit(UnitSpec(0, "l1.cow", "base.img"), p) as unit:
        unit.write(BLOCK * 4, b"\x11" * BLOCK * 8)
    assert run(["uml_mkcow", "l2.cow", "l1.cow"]).returncode == 0
    with open_unit(UnitSpec(0, "l2.cow", "l1.cow"), p, chain=True) as unit:
        unit.write(BLOCK * 8, b"\x22" * BLOCK * 8)
    lower = bytearray(open("base.img", "rb").read())
    lower[BLOCK * 4:BLOCK * 12] = b"\x11" * BLOCK * 8
    lower[BLOCK * 8:BLOCK * 16] = b"\x22" * BLOCK * 8
    with open("flat.img", "wb") as f:
        f.write(lower)
    assert run(["uml_mkcow", "l3.cow", "l2.cow"]).returncode == 0
    assert run(["uml_mkcow", "flat.cow", "flat.img"]).returncode == 0
    writes = [(512 * 3, b"\x33" * 512), (BLOCK * 9 + 1024, b"\x44" * 1536),
              (BLOCK * 20 + 512, b"\x55" * 512)]
    reads = [(0, BLOCK * 8), (BLOCK * 8, BLOCK * 16), (0, 64 * 512), (BLOCK * 18, BLOCK * 8)]
    with open_unit(UnitSpec(0, "l3.cow", "l2.cow"), p, chain=True) as chained, \
            open_unit(UnitSpec(0, "flat.cow", "flat.img"), p) as flat:
        for offset, data in writes:
            chained.write(offset, data)
            flat.write(offset, data)
        plain = bytearray(lower)
        for offset, data in writes:
            plain[offset:offset + len(data)] = data
        drifted = 0
        for offset, length in reads:
            got = chained.read(offset, length)
            assert got == flat.read(offset, length), (offset, length)
            drifted += got != bytes(plain[offset:offset + length])
        assert drifted, "no read drifted: the test does not exercise do_io()'s drift"
        # Page by page (what a guest's 4 KiB reads give) no request mixes pages: the model.
        whole = b"".join(chained.read(o, BLOCK) for o in range(0, SIZE, BLOCK))
        assert whole == bytes(plain)


def test_2_4_profile_stacks_kernel_created_v2_layers(tmp):
    """Profile 2.4: every layer created by the 2.4 kernel path (V2 headers), the device sized
    by the bottom file, read in one request (2.4 has no drift)."""
    p = get_profile("2.4")
    random_file("base.img", SIZE, seed=13)
    expected = bytearray(open("base.img", "rb").read())
    for n, (cow, backing) in enumerate((("l1.cow", "base.img"), ("l2.cow", "l1.cow"),
                                        ("l3.cow", "l2.cow"))):
        with open_unit(UnitSpec(0, cow, backing), p, chain=n > 0) as unit:
            assert unit.size == SIZE
            data = bytes([0x60 + n]) * (BLOCK * 3 + 512)
            unit.write(BLOCK * (5 + 2 * n) + 512, data)
            expected[BLOCK * (5 + 2 * n) + 512:BLOCK * (8 + 2 * n) + 1024] = data
        assert open(cow, "rb").read(8) == b"OOOM\x00\x00\x00\x02"
    with open_unit(UnitSpec(0, "l3.cow", "l2.cow"), p, chain=True) as unit:
        assert unit.read(0, SIZE) == bytes(expected)
    with open_unit(UnitSpec(0, "l3.cow", "l2.cow"), p) as unit:       # no chain: raw
        assert unit.size == os.stat("l2.cow").st_size // 1024 * 1024
        assert unit.read(0, 512)[:8] == b"OOOM\x00\x00\x00\x02"


# -- refusals: one line, nothing written -----------------------------------------------------------

def header_file(path: str, backing: str, *, size: int, mtime: int) -> None:
    """A file holding a V3 COW header naming `backing` (packed from the spec, no ubdsim)."""
    with open(path, "wb") as f:
        f.write(pack_spec_header(3, os.fsencode(os.path.abspath(backing)), mtime, size))
        f.truncate(size + 12288)


def refused(words: list[str], files: list[str]) -> str:
    """`run --chain` with a writing guest: the one ubdsim line, the guest's failed open, and
    every file unchanged. Returns the line."""
    before = digests(*files)
    done = ubdsim("run", "--kernel", "6.1", "--chain", *words, "--", "dd", "if=/dev/zero",
                  "of=/dev/ubda", "bs=4096", "count=1", "conv=notrunc", "status=none")
    lines = done.stderr.splitlines()
    assert done.returncode == 1 and len(lines) == 2, done.stderr
    assert lines[1] == "dd: failed to open '/dev/ubda': No such file or directory"
    assert lines[0].startswith("ubdsim: chain: ubda: refused: ")
    assert digests(*files) == before
    return lines[0][len("ubdsim: chain: ubda: refused: "):]


def test_a_mismatched_layer_refuses_the_unit_with_one_line(tmp):
    build_chain()
    files = ["base.img", "l1.cow", "l2.cow", "l3.cow"]
    stamp = os.stat("l1.cow").st_mtime_ns
    os.utime("l1.cow", ns=(stamp, stamp + 60 * 10**9))      # a `cp` without -p, one level down
    mtime = int(os.stat("l1.cow").st_mtime)
    line = refused(["ubd0=l3.cow,l2.cow"], files)
    assert line == (f"layer 2 '{tmp / 'l1.cow'}' does not match the COW header of layer 1 "
                    f"'l2.cow': mtime {mtime}, the header says {mtime - 60} "
                    "(backing_file_mismatch()'s test)")
    # The same for serve (nothing exported) and the tools (their one error line).
    done = ubdsim("serve", "--kernel", "6.1", "--chain", "--unix", "s.sock", "ubd0=l3.cow,l2.cow")
    assert done.returncode == 1 and done.stderr.splitlines() == [
        f"ubdsim: chain: ubda: refused: {line}",
        "ubdsim serve: error: no unit opened, nothing to export"]
    for argv in (["moo", "--chain", "l3.cow", "x.img"], ["map", "--chain", "l3.cow"]):
        done = ubdsim(*argv)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "layer 2" in done.stderr and "mtime" in done.stderr
    assert not os.path.exists("x.img")
    # Without --chain the kernel does not look below l2.cow: the unit opens, read raw.
    done = ubdsim("run", "--kernel", "6.1", "ubd0=l3.cow,l2.cow", "--", "dd", "if=/dev/ubda",
                  "of=raw.bin", "count=1", "status=none")
    assert done.returncode == 0 and open("raw.bin", "rb").read(4) == b"OOOM"


def test_loops_and_missing_layers_refuse_the_unit_with_one_line(tmp):
    random_file("base.img", 1 << 20, seed=14)
    # x.cow -> y.cow -> x.cow, with t.cow (the unit) over x.cow
    header_file("x.cow", "y.cow", size=(1 << 20) + 12288, mtime=1_000_000_000)
    header_file("y.cow", "x.cow", size=(1 << 20) + 12288, mtime=1_000_000_000)
    os.utime("x.cow", (1_000_000_000, 1_000_000_000))
    os.utime("y.cow", (1_000_000_000, 1_000_000_000))
    assert run(["uml_mkcow", "t.cow", "x.cow"]).returncode == 0
    line = refused(["ubd0=t.cow,x.cow"], ["t.cow", "x.cow", "y.cow"])
    assert line == (f"backing chain loops: '{tmp / 'y.cow'}' (layer 2) names '{tmp / 'x.cow'}', "
                    "which is 'x.cow' (layer 1) again")
    # back to the unit's own file: u.cow -> z.cow -> u.cow
    header_file("z.cow", "u.cow", size=(1 << 20) + 12288, mtime=1_000_000_000)
    assert run(["uml_mkcow", "u.cow", "z.cow"]).returncode == 0
    line = refused(["ubd0=u.cow,z.cow"], ["u.cow", "z.cow"])
    assert line == (f"backing chain loops: 'z.cow' (layer 1) names '{tmp / 'u.cow'}', which is "
                    "the unit's own COW file 'u.cow' (layer 0) again")
    # a missing layer
    header_file("m.cow", "gone.img", size=1 << 20, mtime=1_000_000_000)
    assert run(["uml_mkcow", "n.cow", "m.cow"]).returncode == 0
    line = refused(["ubd0=n.cow,m.cow"], ["n.cow", "m.cow"])
    assert line == (f"'{tmp / 'gone.img'}' (layer 2) named by 'm.cow' (layer 1) does not exist "
                    "(No such file or directory)")
    # info names the loop without --chain; check --chain calls it a corruption
    done = ubdsim("info", "--json", "x.cow")
    hazards = {h["id"]: h["text"] for h in json.loads(done.stdout)["hazards"]}
    assert hazards["backing_loop"].startswith(
        f"backing chain loops: '{tmp / 'y.cow'}' names '{tmp / 'x.cow'}' as its backing file, "
        "which is 'x.cow' (layer 0) again")
    done = ubdsim("check", "--chain", "--json", "x.cow")
    report = json.loads(done.stdout)
    assert done.returncode == 2 and [f["id"] for f in report["findings"]] == ["chain.loop"]
    assert [layer["path"] for layer in report["layers"]] == ["x.cow", str(tmp / "y.cow")]


def test_open_unit_refusal_carries_the_line(tmp):
    header_file("m.cow", "gone.img", size=1 << 20, mtime=1_000_000_000)
    assert run(["uml_mkcow", "n.cow", "m.cow"]).returncode == 0
    with pytest.raises(UbdError) as caught:
        open_unit(UnitSpec(0, "n.cow", "m.cow"), get_profile("6.1"), chain=True)
    assert caught.value.printed == (f"ubdsim: chain: ubda: refused: '{tmp / 'gone.img'}' "
                                    "(layer 2) named by 'm.cow' (layer 1) does not exist (No "
                                    "such file or directory)",)


# -- info --chain, check --chain ------------------------------------------------------------------

def test_info_chain_reports_every_layer_and_link(chain):
    where, _ = chain
    done = ubdsim("info", "--chain", "--json", "l3.cow")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert [r["path"] for r in info["layers"]] == ["l3.cow", str(where / "l2.cow"),
                                                   str(where / "l1.cow")]
    assert info["bottom"] == str(where / "base.img") and info["complete"] and not info["problem"]
    assert [(link["size_match"], link["mtime_match"]) for link in info["links"]] == [(True, True)] * 3
    assert [link["size"] for link in info["links"]] == [
        os.stat(p).st_size for p in ("l2.cow", "l1.cow", "base.img")]
    text = ubdsim("info", "--chain", "l3.cow").stdout
    assert "backing chain of 4 layers" in text and text.count("=== layer") == 3
    assert "backing_loop" not in ubdsim("info", "l3.cow").stdout


def test_check_chain_exit_code_is_the_worst_layers(tmp):
    build_chain()
    done = ubdsim("check", "--json", "l3.cow")
    finding = {f["id"]: f for f in json.loads(done.stdout)["findings"]}["backing.is_cow"]
    assert finding["severity"] == "warning"
    assert finding["text"].endswith("use --chain to read it as a chain (ubdsim's own)")
    done = ubdsim("check", "--chain", "--json", "l3.cow")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and [r["status"] for r in report["layers"]] == [0, 0, 0]
    assert not any(f["id"] == "backing.is_cow" for r in report["layers"] for f in r["findings"])
    os.utime("base.img", (2_000_000_000, 2_000_000_000))     # breaks l1 -> base.img only
    done = ubdsim("check", "--chain", "--json", "l3.cow")
    report = json.loads(done.stdout)
    assert done.returncode == 2 and [r["status"] for r in report["layers"]] == [0, 0, 2]
    assert "backing.mtime_mismatch" in {f["id"] for f in report["layers"][2]["findings"]}
    assert ubdsim("check", "l3.cow").returncode == 0          # without --chain: one layer


# -- moo -d --chain: a commit into the layer below ------------------------------------------------

def test_moo_d_chain_commits_the_top_into_the_cow_layer_below(tmp):
    build_chain()
    keep = digests("base.img", "l1.cow", "l3.cow")
    done = ubdsim("moo", "-d", "--chain", "--json", "l3.cow")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["output"] == str(tmp / "l2.cow") and summary["in_place"]
    assert summary["sectors_from_cow"] == sum(c for _, c in GUESTS[2]) * BLOCK // 512
    assert digests("base.img", "l1.cow", "l3.cow") == keep      # only l2.cow changed
    assert not [n for n in os.listdir(".") if n.endswith(".ubdsim-tmp")]
    # l2.cow now holds guests 2 and 3: read through the chain it is the whole model...
    done = ubdsim("run", "--kernel", "6.1", "--chain", "ubd0=l2.cow,l1.cow", "--",
                  "dd", "if=/dev/ubda", "of=seen.bin", "bs=65536", "status=none")
    assert done.returncode == 0 and open("seen.bin", "rb").read() == model()
    # ...and uml_moo, reading it over l1.cow raw, finds each block where the bitmap says.
    assert run(["uml_moo", "l2.cow", "l2-merged.img"]).returncode == 0
    merged, raw = open("l2-merged.img", "rb").read(), open("l1.cow", "rb").read()
    full = model()
    for block in range(len(raw) // BLOCK):
        depth = expected_depths()[block] if block < SIZE // BLOCK else 3
        want = full if depth in (0, 1) else raw
        assert merged[block * BLOCK:(block + 1) * BLOCK] == want[block * BLOCK:(block + 1) * BLOCK]
    assert ubdsim("check", "l2.cow").returncode == 0
    # l3.cow no longer matches l2.cow (its mtime changed), as after any moo -d.
    again = ubdsim("moo", "--chain", "l3.cow", "x.img")
    assert again.returncode == 1 and "layer 1" in again.stderr and "mtime" in again.stderr


def test_moo_d_chain_over_a_raw_file_is_the_ordinary_merge(tmp):
    random_file("base.img", 1 << 20, seed=15)
    assert run(["uml_mkcow", "c.cow", "base.img"]).returncode == 0
    with open_unit(UnitSpec(0, "c.cow", "base.img"), get_profile("6.1")) as unit:
        unit.write(BLOCK, b"\x77" * BLOCK)
    shutil.copy("base.img", "expected.img")
    with open("expected.img", "r+b") as f:
        f.seek(BLOCK)
        f.write(b"\x77" * BLOCK)
    done = ubdsim("moo", "-d", "--chain", "c.cow")
    assert done.returncode == 0, done.stderr
    assert open("base.img", "rb").read() == open("expected.img", "rb").read()


@pytest.mark.parametrize("argv, status", [
    (["info", "--chain", "-b", "base.img", "c.cow"], 2),
    (["check", "--chain", "-b", "base.img", "c.cow"], 2),
    (["map", "--chain", "-b", "base.img", "c.cow"], 2),
    (["moo", "--chain", "-b", "base.img", "c.cow", "out.img"], 2),
    (["moo", "--chain", "base.img", "out.img"], 1),
    (["moo", "--chain", "-d", "missing.cow"], 1),
    (["info", "--chain", "base.img"], 1),
])
def test_bad_chain_arguments_are_one_line(tmp, argv, status):
    random_file("base.img", 65536, seed=18)
    assert run(["uml_mkcow", "c.cow", "base.img"]).returncode == 0
    done = ubdsim(*argv)
    assert done.returncode == status and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not os.path.exists("out.img")


# -- the option is ubdsim's own, and says so -------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "serve", "vm", "moo", "map", "info", "check"])
def test_help_documents_chain_as_ubdsims_own(command):
    done = ubdsim(command, "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--chain" in text and "ubdsim's own" in text
