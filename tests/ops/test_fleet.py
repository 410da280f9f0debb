"""`ubdsim fleet` at small scale: 8 guests x 64 MiB over a sparse backing file it creates.

Each guest's workload writes known bytes at known sectors through `ubdsim run` (the installed
command, as fleet runs it). The report is judged against the host itself: st_size and
st_blocks of every COW file, statvfs() of the test directory's filesystem for the
overbooking ratio and the space left, uml_moo's merge of every guest (the backing file's
zeros with exactly that guest's sectors), and a real full filesystem (a small tmpfs) for
what a guest sees when the host fills under ubdsim.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from tests.cow.builders import UBDSIM, run
from tests.mounts import tmpfs
from ubdsim.cow.image import CowImage
from ubdsim.ops.fleet import GuestRun, worst_case

MIB = 1 << 20
SIZE = 64 * MIB
BLOCK = 4096
LAST = SIZE // BLOCK - 1
# Two 8 KiB writes per guest: at block 37*n, and guest n's number over the disk's last block.
WORKLOAD = ("yes {n} | head -c 8192 | dd of={dev} bs=4096 seek=$(( {n} * 37 )) conv=notrunc "
            f"status=none && yes end{{n}} | head -c 4096 | dd of={{dev}} bs=4096 seek={LAST} "
            "conv=notrunc status=none")


def fleet(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([UBDSIM, "fleet", *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)


def pattern(text: str, length: int) -> bytes:
    """What `yes TEXT | head -c LENGTH` writes."""
    line = (text + "\n").encode()
    return (line * (length // len(line) + 1))[:length]


def guest_writes(n: int) -> dict[int, bytes]:
    """Device offset -> bytes guest n's workload wrote."""
    return {n * 37 * BLOCK: pattern(str(n), 8192), LAST * BLOCK: pattern(f"end{n}", BLOCK)}


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("kernel, guests, device", [("2.4", 8, "/dev/ubd0"), ("6.1", 3, "/dev/ubda")])
def test_fleet_reports_what_the_host_holds(tmp, kernel, guests, device):
    done = fleet(str(guests), "base.img", "--size", "64M", "--dir", "guests", "--jobs", "3",
                 "--kernel", kernel, "--workload", WORKLOAD, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # the backing file was created sparse, of --size, and no guest wrote into it
    st = os.stat("base.img")
    assert report["backing_created"] and st.st_size == SIZE and st.st_blocks == 0
    assert report["backing"] == str(tmp / "base.img") and report["device"] == device
    assert report["size"] == SIZE and report["kernel"] == kernel and report["failed"] == 0
    assert [g["number"] for g in report["guests"]] == list(range(1, guests + 1))
    for g in report["guests"]:
        n, cow = g["number"], g["cow"]
        assert cow == os.path.join("guests", f"guest{n}.cow") and g["status"] == 0
        cst = os.stat(cow)
        assert g["apparent_bytes"] == cst.st_size and g["allocated_bytes"] == cst.st_blocks * 512
        assert g["max_rss_bytes"] > 0 and os.path.exists(g["log"])
        # the COW file holds exactly this guest's sectors: 16 + 8 of them, and nothing else
        with CowImage.open(cow) as image:
            assert list(image.marked_runs()) == [(n * 37 * 8, 16), (LAST * 8, 8)]
            held = image.geometry.data_offset
        assert g["sectors_marked"] == 24
        assert g["allocated_bytes"] >= 12 * 1024 and g["allocated_bytes"] < held + 64 * 1024
        # uml_moo's merge of the guest = the backing file's zeros with its sectors
        assert run(["uml_moo", cow, "merged.img"]).returncode == 0
        want = bytearray(SIZE)
        for offset, data in guest_writes(n).items():
            want[offset:offset + len(data)] = data
        with open("merged.img", "rb") as f:
            assert f.read() == want, f"guest {n}"
        os.unlink("merged.img")
    # totals, from the files themselves
    cows = [os.stat(g["cow"]) for g in report["guests"]]
    assert report["cow_apparent_bytes"] == sum(c.st_size for c in cows)
    assert report["cow_allocated_bytes"] == sum(c.st_blocks * 512 for c in cows)
    assert report["apparent_bytes"] == report["cow_apparent_bytes"] + SIZE
    assert report["allocated_bytes"] == report["cow_allocated_bytes"]     # sparse backing: 0
    # overbooking and space, from statvfs of the test directory's filesystem
    vfs = os.statvfs(tmp)
    host = report["host"]
    assert host["filesystem_bytes"] == vfs.f_blocks * vfs.f_frsize
    assert report["overbooking"] == sum(c.st_size for c in cows) / (vfs.f_blocks * vfs.f_frsize)
    assert host["left_basis"] == "f_bavail" and host["left_bytes"] == host["available_bytes"]
    assert 0 < host["available_bytes"] <= host["free_bytes"] <= host["filesystem_bytes"]
    worst = report["worst_case"]
    assert worst["disks_bytes"] == guests * SIZE
    assert worst["need_bytes"] == sum(c.st_size - c.st_blocks * 512 for c in cows)
    assert worst["fits"] == (worst["need_bytes"] <= host["left_bytes"])
    fills = report["when_host_fills"]
    assert "lost async page write" in fills["kernel"] and "the same" in fills["ubdsim"]
    assert not fills["known_difference"]
    assert (fills["profile_note"] is None) == (kernel == "6.1")
    # `info --summary` of the fleet's directory: one group, any moo -d breaks all the others
    text = subprocess.run([UBDSIM, "info", "--summary", "guests"], capture_output=True, text=True)
    assert text.returncode == 0 and f"moo -d of any one of these {guests} invalidates" in text.stdout


def test_worst_case_counts_guests_in_order_until_the_space_runs_out():
    guests = [GuestRun(number=k, cow=f"g{k}", log="", status=0, seconds=0, max_rss_bytes=0,
                       apparent_bytes=100, allocated_bytes=10 * k, sectors_marked=0)
              for k in range(1, 5)]                      # needs 90, 80, 70, 60: 300 in all
    assert worst_case(guests, 96, 300).fits
    cut = worst_case(guests, 96, 240)
    assert (cut.guests_that_fit, cut.need_bytes, cut.shortfall_bytes, cut.fits) == (3, 300, 60, False)
    assert worst_case(guests, 96, 89).guests_that_fit == 0
    assert worst_case(guests, 96, 0).disks_bytes == 4 * 96


def test_a_full_host_loses_the_guests_buffered_writes_as_the_report_says(tmp):
    """As linux.uml does (tests/harness/test_writeback.py): the guest's buffered dd succeeds,
    its write-back fails at the close and the data is lost; the host is full after it."""
    with tmpfs(tmp / "small", "1m") as small:
        done = fleet("2", "base.img", "--size", "64M", "--dir", str(small), "--jobs", "1",
                     "--kernel", "6.1", "--workload",
                     "dd if=/dev/zero of={dev} bs=64k count=32 conv=notrunc", "--json")
        assert done.returncode == 1
        report = json.loads(done.stdout)
        assert report["failed"] == 1 and [g["status"] for g in report["guests"]] == [0, 1]
        first, second = report["guests"]
        assert first["error"] is None
        assert first["apparent_bytes"] == os.stat(first["cow"]).st_size
        assert first["allocated_bytes"] == os.stat(first["cow"]).st_blocks * 512 < 32 * 64 * 1024
        # the host is full now: the next guest's COW file cannot even be made (none is left)
        assert second["error"] == "cannot create its COW file: No space left on device"
        assert second["log"] is None and not os.path.lexists(second["cow"])
        worst = report["worst_case"]
        assert not worst["fits"] and worst["guests_that_fit"] == 0
        assert report["host"]["filesystem_bytes"] == 1 * 1024 * 1024
        assert report["overbooking"] == first["apparent_bytes"] / (1 << 20)   # 64 MiB on 1 MiB
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("ubdsim fleet: error: 1 of 2 guests failed (guest 2: ")


def test_bad_input_is_one_line_and_makes_nothing(tmp):
    def refused(*argv: str) -> str:
        before = sorted(os.listdir("."))
        done = fleet(*argv)
        assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ubdsim fleet: error: ")
        assert sorted(os.listdir(".")) == before
        return lines[0]

    assert "give --size to create it" in refused("2", "nothing.img")
    with open("base.img", "wb") as f:
        f.truncate(SIZE)
    keep = sha("base.img"), os.stat("base.img").st_mtime_ns
    assert "is 67108864 bytes, not --size 33554432" in refused("2", "base.img", "--size", "32M")
    os.mkdir("d")
    open("d/guest2.log", "w").close()
    assert "'d/guest2.log' already exists" in refused("2", "base.img", "--dir", "d")
    assert os.listdir("d") == ["guest2.log"]
    os.mkfifo("fifo.img")
    assert "is a FIFO" in refused("1", "fifo.img")
    assert "comma" in refused("1", "base.img", "--dir", "a,b")
    assert (sha("base.img"), os.stat("base.img").st_mtime_ns) == keep
    usage = fleet("0", "base.img")
    assert usage.returncode == 2 and "must be an integer >= 1" in usage.stderr
    assert fleet("1", "base.img", "--size", "4Q").returncode == 2
    text = fleet("1", "base.img", "--dir", "t")           # the text report, one guest
    assert text.returncode == 0, text.stderr
    assert "guest  status    apparent   allocated" in text.stdout
    for start in ("overbooking: ", "host space left: ", "worst case, every guest fills its disk "
                  "(1 x 64.0 MiB = 64.0 MiB): ", "  ubdsim run: the same, line for line"):
        assert any(line.startswith(start) for line in text.stdout.splitlines()), start


def test_fleet_png_draws_what_the_report_says(tmp):
    """--png: a picture of the report (the allocated colour where the guests' bars are), written
    whole; a picture named like one of the fleet's own files is refused before anything runs."""
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread
    from ubdsim.show.fleet_figure import ALLOCATED, APPARENT
    r = subprocess.run([UBDSIM, "fleet", "3", "base.img", "--size", "16M", "--png", "fleet.png"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    pixels = imread("fleet.png")[:, :, :3]
    for colour in (ALLOCATED, APPARENT):
        assert (abs(pixels - to_rgb(colour)).sum(axis=2) < 0.02).sum() > 100, colour
    assert not [n for n in os.listdir(".") if n.endswith(".ubdsim-tmp")]
    os.mkdir("more")
    r = subprocess.run([UBDSIM, "fleet", "1", "other.img", "--size", "16M", "--dir", "more",
                        "--png", "more/guest1.cow"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert "refusing to draw a picture over it" in r.stderr
    assert os.listdir("more") == [] and not os.path.exists("other.img")
