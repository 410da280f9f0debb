#!/usr/bin/env python3
"""Benchmark (not a test): a qemu guest's dd through `ubdsim serve` vs through `qemu-nbd`.

One run, same guest, same qemu command line, same workload; only the NBD server differs:
- ubdsim: `ubdsim vm --kernel 6.1` over a fresh COW file on a backing file (writes fill the
  COW file and its bitmap, reads come back from it);
- qemu-nbd: `qemu-nbd -f raw` (qemu's own server, C) on a raw copy of the backing file;
- no I/O: qemu-nbd over qemu's null-co driver, which answers every request at once without
  touching a file: what the guest, the transport and qemu-nbd's own request path cost with
  the I/O taken away (the guest's dd sends one 1 MiB request at a time and waits for it).
  Where it is no faster than qemu-nbd on the file, the file I/O is not what sets qemu-nbd's
  rate.
The guest writes then reads SIZE_MIB MiB with dd bs=1M O_DIRECT.
Prints the rates and the ratios ubdsim/qemu-nbd and ubdsim/no-I/O. The machine is shared:
numbers are noisy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ubdsim.vm.image import guest_image, workload_initrd  # noqa: E402
from ubdsim.vm.qemu import Disk, qemu_command, run_guest  # noqa: E402

SIZE_MIB = 256
UBDSIM = str(Path(sys.executable).with_name("ubdsim"))
# busybox dd prints no rate and the guest clock has only 10 ms: the host timestamps the
# console marker lines as they arrive instead.
WORKLOAD = f"""echo mark-start
dd if=/dev/zero of=/dev/ubda bs=1M count={SIZE_MIB} oflag=direct 2>/dev/null
echo mark-written
dd if=/dev/ubda of=/dev/null bs=1M count={SIZE_MIB} iflag=direct 2>/dev/null
echo mark-read
"""
MARKS = ("mark-start", "mark-written", "mark-read")


class MarkClock:
    """Host time at which each marker line appeared on the guest console."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.text = ""

    def feed(self, data: bytes) -> None:
        now = time.monotonic()
        self.text += data.decode(errors="replace")
        for mark in MARKS:
            if mark not in self.seen and mark + "\n" in self.text:
                self.seen[mark] = now

    def rates(self) -> dict[str, float]:
        if set(self.seen) != set(MARKS):
            raise SystemExit(f"bench_nbd: markers missing in the guest output:\n{self.text}")
        start, written, read = (self.seen[m] for m in MARKS)
        return {"write": SIZE_MIB / (written - start), "read": SIZE_MIB / (read - written)}


def through_ubdsim(scratch: Path, backing: Path, script: Path) -> dict[str, float]:
    cow = scratch / "bench.cow"
    clock = MarkClock()
    process = subprocess.Popen([UBDSIM, "vm", "--kernel", "6.1", f"ubd0={cow},{backing}", "--",
                                str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        clock.feed(chunk)
    if process.wait() != 0:
        raise SystemExit(f"bench_nbd: ubdsim vm failed ({process.returncode}):\n"
                         f"{process.stderr.read().decode(errors='replace')}")
    return clock.rates()


def through_qemu_nbd(scratch: Path, backing: Path, script: Path,
                     null: bool = False) -> dict[str, float]:
    """The guest over qemu-nbd on a raw copy of the backing file, or (`null`) on null-co."""
    sock = scratch / "qemu-nbd.sock"
    if null:
        image = ["--image-opts", f"driver=null-co,size={SIZE_MIB << 20}"]
    else:
        raw = scratch / "raw.img"
        shutil.copyfile(backing, raw)
        image = ["-f", "raw", str(raw)]
    server = subprocess.Popen(["qemu-nbd", "-k", str(sock), "-x", "ubda", "--persistent",
                               *image])
    try:
        while not sock.exists():
            if server.poll() is not None:
                raise SystemExit("bench_nbd: qemu-nbd did not start")
            time.sleep(0.05)
        image = guest_image()
        initrd = workload_initrd(image, script.read_bytes(), scratch / "initrd")
        command = qemu_command(image.vmlinux, initrd, str(sock), [Disk("ubda", False)])
        clock = MarkClock()
        run_guest(command, 600, clock.feed)
        return clock.rates()
    finally:
        server.terminate()
        server.wait()
        sock.unlink(missing_ok=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-nbd-") as tmp:
        scratch = Path(tmp)
        backing = scratch / "backing.img"
        with open(backing, "wb") as f:
            f.truncate(SIZE_MIB << 20)
        script = scratch / "bench.sh"
        script.write_text(WORKLOAD)
        load_before = os.getloadavg()[0]
        ours = through_ubdsim(scratch, backing, script)
        theirs = through_qemu_nbd(scratch, backing, script)
        ceiling = through_qemu_nbd(scratch, backing, script, null=True)
        load_after = os.getloadavg()[0]
    if "--json" in sys.argv[1:]:
        return json_rows(ours, theirs, ceiling)
    print(f"guest dd bs=1M O_DIRECT, {SIZE_MIB} MiB, qemu TCG guest over NBD (unix socket)")
    print(f"{'':10}{'ubdsim serve':>14}{'qemu-nbd':>12}{'ratio':>8}{'no I/O':>12}{'ratio':>8}")
    for kind in ("write", "read"):
        print(f"{kind:10}{ours[kind]:>9.0f} MiB/s{theirs[kind]:>7.0f} MiB/s"
              f"{ours[kind] / theirs[kind]:>8.2f}{ceiling[kind]:>7.0f} MiB/s"
              f"{ours[kind] / ceiling[kind]:>8.2f}")
    print(f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after "
          f"({os.cpu_count()} CPUs)")
    return 0


def json_rows(ours: dict[str, float], theirs: dict[str, float],
              ceiling: dict[str, float]) -> int:
    """--json (scripts/bench_table.py): the figures above as bench_rows rows."""
    from bench_rows import print_rows, row
    rows = []
    for kind in ("write", "read"):
        figure = f"nbd dd 1M direct {kind}, {SIZE_MIB} MiB"
        rows.append(row(figure, "MiB/s", round(ours[kind], 1), round(theirs[kind], 1),
                        "qemu-nbd", "higher"))
        rows.append(row(figure, "MiB/s", round(ours[kind], 1), round(ceiling[kind], 1),
                        "no-I/O server", "higher"))
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
