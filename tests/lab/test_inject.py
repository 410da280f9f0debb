"""`--inject SPEC`: host faults under `ubdsim run --kernel 6.1`, judged by linux.uml 6.1.

The oracle makes the same host call fail inside linux.uml: build/uml_fault.so
(kernel_ref/native/uml_fault.c, kernel_ref/fault_preload.py) interposes the pread64/pwrite64
of its ubd I/O thread on the unit's file. The same guest program (GUEST: O_DIRECT preadv /
pwritev of /dev/ubda, page-aligned buffers, one page or one request each, so the kernel's
host calls and ubdsim's are counted alike) runs under both; the guest's output (which call
failed, with which errno), its exit status, the block layer's error lines on the console and
the host files afterwards must be the same. O_DIRECT keeps the guest page cache out of it.
"""
from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from kernel_ref.fault_preload import HostFault, boot_with_fault
from ubdsim.cow.header import read_header
from ubdsim.lab.logformat import read_log

from tests.nbd.serving import qemu_io, serve

from .helpers import sparse_file, ubdsim

# Each op W@S+C or R@S+C: write (bytes = op number) or read C sectors at sector S; every op
# runs, each prints its outcome; the exit status is the errno of the first failure.
GUEST = r'''
import errno, mmap, os, sys
fd = os.open("/dev/ubda", os.O_RDWR | os.O_DIRECT)
status = 0
for number, op in enumerate(sys.argv[1:], 1):
    kind, where = op.split("@")
    sector, count = map(int, where.split("+"))
    buf = mmap.mmap(-1, count * 512)
    if kind == "W":
        buf.write(bytes([number]) * (count * 512))
    try:
        call = os.pwritev if kind == "W" else os.preadv
        done = call(fd, [buf], sector * 512)
        print(op, "ok", done, buf[:1].hex(), flush=True)
    except OSError as err:
        print(op, errno.errorcode[err.errno], flush=True)
        status = status or err.errno
sys.exit(status)
'''
REQUEST_ERROR = re.compile(r"^(I/O|critical space allocation|operation not supported) error, "
                           r"dev ubd")
MIB = 1 << 20


def request_errors(text: str) -> list[str]:
    return [line for line in text.replace("\r", "").splitlines() if REQUEST_ERROR.match(line)]


def setup(tmp_path: Path, cow: bool = False) -> tuple[list[str], str]:
    """A 1 MiB raw disk (or a fresh COW file over a 1 MiB backing file), the guest program,
    and a pristine copy to reset from; returns (kernel options, the file faults hit)."""
    (tmp_path / "guest.py").write_text(GUEST)
    if cow:
        sparse_file(tmp_path / "base.img", MIB)
        made = ubdsim(tmp_path, "mkcow", "c.cow", "base.img")
        assert made.returncode == 0, made.stderr
        name, words = "c.cow", ["ubd0=c.cow,base.img"]
    else:
        sparse_file(tmp_path / "raw.img", MIB)
        name, words = "raw.img", ["ubd0=raw.img"]
    shutil.copy(tmp_path / name, tmp_path / "pristine")
    return words, name


def reset(tmp_path: Path, name: str) -> None:
    shutil.copy(tmp_path / "pristine", tmp_path / name)


def compare(tmp_path: Path, fault: HostFault, specs: list[str], ops: list[str], *,
            cow: bool = False) -> tuple[object, object]:
    """Run GUEST ops under linux.uml with `fault` and under ubdsim with `specs`, each from the
    pristine file; assert they agree (output, status, file bytes and the block layer's
    request error lines). Returns (the oracle's FaultRun, ubdsim's run)."""
    words, name = setup(tmp_path, cow)
    kernel = boot_with_fault(words, fault, name, command=["python3", "guest.py", *ops],
                             cwd=tmp_path, timeout=120)
    assert kernel.kernel.status is not None, kernel.kernel.problem
    assert kernel.faults, "the oracle's fault never hit"
    kernel_file = (tmp_path / name).read_bytes()
    reset(tmp_path, name)
    inject = [f"--inject={spec}" for spec in specs]
    ours = ubdsim(tmp_path, "run", "--kernel", "6.1", *inject, *words, "--",
                  "python3", "guest.py", *ops)
    assert ours.stdout == kernel.kernel.output
    assert ours.returncode == kernel.kernel.status
    assert request_errors(ours.stderr) == request_errors(kernel.kernel.console)
    assert (tmp_path / name).read_bytes() == kernel_file
    return kernel, ours


def test_read_eio_on_a_sector_range(tmp_path):
    ops = [f"R@{s}+8" for s in range(0, 128, 8)]
    kernel, ours = compare(tmp_path, HostFault("read", errno.EIO, 100 * 512, 200 * 512, count=0),
                           ["read:error=EIO:sector=100-199"], ops)
    assert ours.returncode == errno.EIO
    assert [line.split()[1] for line in ours.stdout.splitlines()] == ["ok"] * 12 + ["EIO"] * 4
    assert len(request_errors(kernel.kernel.console)) == 4    # sectors 96, 104, 112, 120


def test_write_eio_o_direct_on_the_nth_host_write(tmp_path):
    ops = ["W@0+8", "W@8+8", "W@16+8", "R@8+8"]
    kernel, ours = compare(tmp_path, HostFault("write", errno.EIO, nth=2),
                           ["write:error=EIO:when=2"], ops)
    assert ours.stdout.splitlines()[1] == "W@8+8 EIO"
    assert request_errors(ours.stderr) == [
        "I/O error, dev ubda, sector 8 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2"]


def test_enospc_after_a_byte_budget_gives_the_guest_enospc(tmp_path):
    # The third 4 KiB host write would go past 8 KiB: linux.uml's third pwrite fails ENOSPC.
    ops = ["W@0+8", "W@8+8", "W@16+8"]
    kernel, ours = compare(tmp_path, HostFault("write", errno.ENOSPC, nth=3),
                           ["write:error=ENOSPC:after=8K"], ops)
    assert ours.returncode == errno.ENOSPC                     # map_error(): BLK_STS_NOSPC
    assert request_errors(ours.stderr)[0].startswith("critical space allocation error, dev ubda")


def test_torn_write_leaves_the_same_bytes_and_eio(tmp_path):
    # One 64 KiB request: linux.uml's first segment pwrite (4 KiB) stops after 512 bytes;
    # ubdsim's one data pwrite too. do_io(): a short write is BLK_STS_IOERR.
    kernel, ours = compare(tmp_path, HostFault("write", short=512), ["write:torn=512"],
                           ["W@0+128", "R@0+8"])
    assert ours.returncode == errno.EIO
    data = (tmp_path / "raw.img").read_bytes()
    assert data[:512] == b"\x01" * 512 and data[512:] == bytes(MIB - 512)


def test_bitmap_only_fault_on_a_cow_unit(tmp_path):
    # The data reaches the COW file, its bitmap write-back fails: the guest gets EIO, the bit
    # stays set in memory (the read comes from the COW file) and clear on disk.
    sparse_file(tmp_path / "base.img", MIB)
    made = ubdsim(tmp_path, "mkcow", "probe.cow", "base.img")
    assert made.returncode == 0, made.stderr
    geometry = read_header((tmp_path / "probe.cow").read_bytes()[:8192]).geometry()
    fault = HostFault("write", errno.EIO, geometry.bitmap_offset, geometry.data_offset)
    kernel, ours = compare(tmp_path, fault, ["bitmap:error=EIO"], ["W@16+8", "R@16+8"], cow=True)
    assert ours.stdout.splitlines() == ["W@16+8 EIO", "R@16+8 ok 4096 01"]
    cow = (tmp_path / "c.cow").read_bytes()
    assert cow[geometry.bitmap_offset:geometry.data_offset] == bytes(geometry.data_offset
                                                                    - geometry.bitmap_offset)
    assert cow[geometry.data_offset + 16 * 512:][:4096] == b"\x01" * 4096


def test_crash_leaves_exactly_the_prefix_replay_rebuilds(tmp_path):
    ops = [f"W@{8 * i}+8" for i in range(5)]
    words, name = setup(tmp_path)
    kernel = boot_with_fault(words, HostFault("write", nth=3, crash=True), name,
                             command=["python3", "guest.py", *ops], cwd=tmp_path, timeout=120)
    assert kernel.kernel.status is None and kernel.faults == [("write", 8192, 4096, "crash")]
    kernel_file = (tmp_path / name).read_bytes()
    reset(tmp_path, name)
    ours = ubdsim(tmp_path, "run", "--kernel", "6.1", "--record", "L", "--record-snapshot",
                  "--inject", "write:crash:when=3", *words, "--", "python3", "guest.py", *ops)
    assert ours.returncode == 137
    assert ours.stderr.splitlines()[-1] == (
        "ubdsim: injected crash (write:crash:when=3): stopped right after the host write it "
        "matched as call 3 (4096 bytes at 8192 of raw.img), as a SIGKILL would; nothing more "
        "reached the files (exit 137)")
    live = (tmp_path / name).read_bytes()
    assert live == kernel_file
    assert live[:3 * 4096] == b"\x01" * 4096 + b"\x02" * 4096 + b"\x03" * 4096
    with read_log(str(tmp_path / "L")) as log:
        assert not log.complete
        last = log.records[-1]
        assert last["k"] == "fault" and last["act"] == "crash" and last["after"] == 3
    for upto, same in (("3", True), ("2", False)):
        out = tmp_path / f"upto{upto}"
        done = ubdsim(tmp_path, "replay", "L", "--upto", upto, "--into", str(out))
        assert done.returncode == 0, done.stderr
        assert ((out / name).read_bytes() == live) is same


def test_trace_shows_each_fault_and_a_bad_spec_changes_nothing(tmp_path):
    words, name = setup(tmp_path)
    (tmp_path / name).unlink()
    sparse_file(tmp_path / "base.img", MIB)
    bad = ubdsim(tmp_path, "run", "--kernel", "6.1", "--inject", "write:error=EIO:when=0",
                 "ubd0=new.cow,base.img", "--", "true")
    assert bad.returncode == 2
    assert bad.stderr == ("ubdsim run: error: --inject 'write:error=EIO:when=0': when=0: calls "
                          "count from 1, N..M needs N <= M, a step >= 1\n")
    assert not (tmp_path / "new.cow").exists()
    traced = ubdsim(tmp_path, "run", "--kernel", "6.1", "--inject", "data:error=EIO:when=1",
                    "ubd0=new.cow,base.img", "--trace", "--", "python3", "guest.py", "W@8+8")
    assert traced.returncode == errno.EIO
    assert ("ubda FAULT error (data:error=EIO:when=1, call 1): data 4096 bytes at 16384 of "
            "new.cow, guest gets EIO") in traced.stderr.splitlines()


def test_serve_answers_the_nbd_error_and_goes_on(tmp_path):
    words, name = setup(tmp_path)
    with serve(tmp_path / "s.sock", words, options=("--inject", "write:error=ENOSPC:when=1"),
               cwd=tmp_path) as served:
        first = qemu_io(served.uri("ubda"), "write -P 0xab 0 4k")
        second = qemu_io(served.uri("ubda"), "write -P 0xcd 0 4k")
    assert "write failed: No space left on device" in first.stdout + first.stderr
    assert second.returncode == 0 and "wrote 4096/4096 bytes" in second.stdout
    assert (tmp_path / name).read_bytes()[:4096] == b"\xcd" * 4096


# Buffered reads over failing host reads: readahead windows, a random page, a read that runs
# into a bad page (short), a COW unit (8-page requests) and 512-byte soft blocks (a device
# whose size is not a multiple of 1 KiB: the page is read back block by block).
BUFFERED = r'''
import os, sys
for path, reads in (("/dev/ubda", [(0, 65536), (61440, 8192), (40960, 4096), (45056, 20480)]),
                    ("/dev/ubdb", [(0, 32768), (36864, 4096)]),
                    ("/dev/ubdc", [(4096, 4096), (8192, 4096)])):
    fd = os.open(path, os.O_RDONLY)
    for off, n in reads:
        try:
            print(path, off, n, "ok", len(os.pread(fd, n, off)), flush=True)
        except OSError as err:
            print(path, off, n, err.strerror, flush=True)
    os.close(fd)
'''


def test_buffered_reads_fail_with_the_kernels_lines_and_short_counts(tmp_path):
    (tmp_path / "guest.py").write_text(BUFFERED)
    sparse_file(tmp_path / "raw.img", MIB)
    sparse_file(tmp_path / "base.img", MIB)
    sparse_file(tmp_path / "odd.img", MIB - 512)
    made = ubdsim(tmp_path, "mkcow", "c.cow", "base.img")
    assert made.returncode == 0, made.stderr
    # every unit's file fails host reads of its bytes 48 KiB .. 52 KiB (a COW's: of its
    # backing file, whose bits are all clear), and odd.img 8 KiB + 1 KiB .. + 2 KiB
    words = ["ubd0=raw.img", "ubd1=c.cow,base.img", "ubd2=odd.img"]
    runs = []
    for file, lo, hi, sectors in (("raw.img", 48 << 10, 52 << 10, "96-103"),
                                  ("base.img", 48 << 10, 52 << 10, "96-103"),
                                  ("odd.img", 9 << 10, 10 << 10, "18-19")):
        kernel = boot_with_fault(words, HostFault("read", errno.EIO, lo, hi, count=0), file,
                                 command=["python3", "guest.py"], cwd=tmp_path, timeout=120)
        assert kernel.kernel.status == 0, kernel.kernel.problem
        assert kernel.faults, f"the oracle's fault on {file} never hit"
        unit = words.index(next(w for w in words if f"={file}" in w or f",{file}" in w))
        ours = ubdsim(tmp_path, "run", "--kernel", "6.1",
                      f"--inject=read:error=EIO:unit={unit}:sector={sectors}", *words, "--",
                      "python3", "guest.py")
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == kernel.kernel.output
        kernel_lines = [line for line in kernel.kernel.console.replace("\r", "").splitlines()
                        if REQUEST_ERROR.match(line) or line.startswith("Buffer I/O error")]
        our_lines = [line for line in ours.stderr.splitlines()
                     if REQUEST_ERROR.match(line) or line.startswith("Buffer I/O error")]
        assert our_lines == kernel_lines, file
        runs.append(kernel.kernel.output)
    assert any("Input/output error" in out for out in runs)
    assert any(" ok " in line and not line.endswith(f" {line.split()[2]}")
               for out in runs for line in out.splitlines())       # a short count somewhere
