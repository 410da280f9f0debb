#!/usr/bin/env python3
"""Benchmark (not a test): ubdsim's NBD server against qemu-nbd, through two clients.

1. A qemu TCG guest's dd (the client `ubdsim vm` is for): the guest writes then reads
   GUEST_MIB MiB with dd bs=1M O_DIRECT, one request at a time; the host timestamps console
   marker lines. Same guest, same qemu command line; only the server differs:
   - ubdsim: `ubdsim vm --kernel 6.1` over a fresh COW file on a sparse backing file
     (writes allocate in the COW file and set its bitmap);
   - qemu-nbd on a qcow2 overlay over the same backing file: qemu's own copy-on-write
     layer, whose writes allocate in a fresh file too (the like-for-like anchor);
   - qemu-nbd on a raw copy of the backing file (fully allocated: writes only overwrite);
   - no I/O: qemu-nbd over qemu's null-co driver, which answers every request at once
     without touching a file: what the guest, its NBD client and qemu-nbd's request path
     cost with the I/O taken away. Where it is little faster than qemu-nbd on a file, the
     client sets the rate, and a server can gain over qemu-nbd only what it saves of
     qemu-nbd's I/O and request path.
2. `qemu-img bench` (qemu's block layer as a native client, no guest): NATIVE_MIB requests
   of 1 MiB at depth 1 (what dd sends), O_DIRECT on the client side (-t none): a write into
   the fresh COW file / overlay, the same write again (the blocks now allocated) and a read,
   against qemu-nbd on a fresh qcow2 overlay and on the raw copy. With the guest's own cost
   gone, these rows compare the servers.
Prints rates and ratios; --json gives bench_rows rows (scripts/bench_table.py). The
machine is shared: numbers are noisy, so bench_table runs this several times.
"""
from __future__ import annotations

import os
import re
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

GUEST_MIB = 512
NATIVE_MIB = 1024
UBDSIM = str(Path(sys.executable).with_name("ubdsim"))
# busybox dd prints no rate and the guest clock has only 10 ms: the host timestamps the
# console marker lines as they arrive instead.
WORKLOAD = f"""echo mark-start
dd if=/dev/zero of=/dev/ubda bs=1M count={GUEST_MIB} oflag=direct 2>/dev/null
echo mark-written
dd if=/dev/ubda of=/dev/null bs=1M count={GUEST_MIB} iflag=direct 2>/dev/null
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
        return {"write": GUEST_MIB / (written - start), "read": GUEST_MIB / (read - written)}


def settled() -> None:
    """Before each measured run: the dirty pages of the runs before it written out, so no
    run pays for an earlier one's write-back."""
    os.sync()


def through_ubdsim(scratch: Path, backing: Path, script: Path) -> dict[str, float]:
    cow = scratch / "bench.cow"
    clock = MarkClock()
    settled()
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


def qemu_nbd_image(scratch: Path, backing: Path, kind: str, size: int) -> list[str]:
    """qemu-nbd's image arguments for `kind`, a fresh file made for it where it needs one."""
    if kind == "null":
        return ["--image-opts", f"driver=null-co,size={size}"]
    if kind == "qcow2":
        overlay = scratch / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F",
                        "raw", str(overlay)], check=True)
        return ["-f", "qcow2", str(overlay)]
    raw = scratch / "raw.img"
    shutil.copyfile(backing, raw)          # sendfile(): every block allocated
    return ["-f", "raw", str(raw)]


class Server:
    """A server on a unix socket for as long as the `with` block runs."""

    def __init__(self, command: list[str], sock: Path) -> None:
        self.command, self.sock = command, sock

    def __enter__(self) -> str:
        self.sock.unlink(missing_ok=True)
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        while not self.sock.exists():
            if self.process.poll() is not None:
                raise SystemExit(f"bench_nbd: {self.command[0]} did not start")
            time.sleep(0.05)
        return f"nbd+unix:///ubda?socket={self.sock}"

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait()
        self.sock.unlink(missing_ok=True)


def qemu_nbd(scratch: Path, backing: Path, kind: str, size: int) -> Server:
    image = qemu_nbd_image(scratch, backing, kind, size)
    return Server(["qemu-nbd", "-k", str(scratch / "qemu-nbd.sock"), "-x", "ubda",
                   "--persistent", *image], scratch / "qemu-nbd.sock")


def ubdsim_serve(scratch: Path, backing: Path) -> Server:
    cow = scratch / "serve.cow"
    cow.unlink(missing_ok=True)
    return Server([UBDSIM, "serve", "--kernel", "6.1", "--unix", str(scratch / "ubdsim.sock"),
                   f"ubd0={cow},{backing}"], scratch / "ubdsim.sock")


def through_qemu_nbd(scratch: Path, backing: Path, script: Path, kind: str) -> dict[str, float]:
    """The guest over qemu-nbd on an image of `kind` (qemu_nbd_image())."""
    with qemu_nbd(scratch, backing, kind, backing.stat().st_size):
        image = guest_image()
        initrd = workload_initrd(image, script.read_bytes(), scratch / "initrd")
        command = qemu_command(image.vmlinux, initrd, str(scratch / "qemu-nbd.sock"),
                               [Disk("ubda", False)])
        clock = MarkClock()
        settled()
        run_guest(command, 600, clock.feed)
        return clock.rates()


NATIVE_RUNS = (("fresh write", ["-w"]), ("rewrite", ["-w"]), ("read", []))


def native(server: Server) -> dict[str, float]:
    """qemu-img bench's rates (MiB/s) over `server`: a write, the same write again, a read."""
    rates = {}
    with server as uri:
        for name, flags in NATIVE_RUNS:
            settled()
            done = subprocess.run(["qemu-img", "bench", "-f", "raw", "-t", "none", "-d", "1",
                                   "-s", "1M", "-c", str(NATIVE_MIB), *flags, uri],
                                  capture_output=True, text=True, timeout=600)
            found = re.search(r"Run completed in ([0-9.]+) seconds", done.stdout)
            if done.returncode != 0 or found is None:
                raise SystemExit(f"bench_nbd: qemu-img bench failed:\n{done.stdout}{done.stderr}")
            rates[name] = NATIVE_MIB / float(found.group(1))
    return rates


# Anchor names as bench_table prints them (18 columns).
GUEST_ANCHORS = (("qcow2", "qemu-nbd on qcow2"), ("raw", "qemu-nbd on raw"),
                 ("null", "no-I/O server"))
NATIVE_ANCHORS = (("qcow2", "qemu-nbd on qcow2"), ("raw", "qemu-nbd on raw"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-nbd-") as tmp:
        scratch = Path(tmp)
        backing = scratch / "backing.img"
        with open(backing, "wb") as f:
            f.truncate(max(GUEST_MIB, NATIVE_MIB) << 20)
        script = scratch / "bench.sh"
        script.write_text(WORKLOAD)
        load_before = os.getloadavg()[0]
        guest = {"ubdsim": through_ubdsim(scratch, backing, script)}
        for kind, _name in GUEST_ANCHORS:
            guest[kind] = through_qemu_nbd(scratch, backing, script, kind)
        client = {"ubdsim": native(ubdsim_serve(scratch, backing))}
        for kind, _name in NATIVE_ANCHORS:
            client[kind] = native(qemu_nbd(scratch, backing, kind, backing.stat().st_size))
        load_after = os.getloadavg()[0]
    rows = table_rows(guest, client)
    if "--json" in sys.argv[1:]:
        from bench_rows import print_rows
        print_rows(rows)
        return 0
    print(f"{'figure':44}{'ubdsim':>10}{'anchor':>10}  {'ratio':>6}  anchor (MiB/s)")
    for r in rows:
        print(f"{r['figure']:44}{r['ours']:>10.0f}{r['anchor']:>10.0f}  {r['ratio']:>6.2f}  "
              f"{r['anchor_name']}")
    print(f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after "
          f"({os.cpu_count()} CPUs)")
    return 0


def table_rows(guest: dict[str, dict[str, float]],
               client: dict[str, dict[str, float]]) -> list[dict]:
    """The figures above as bench_rows rows, ubdsim's against each anchor."""
    from bench_rows import row
    rows = []
    for kind in ("write", "read"):
        figure = f"nbd guest dd 1M direct {kind}, {GUEST_MIB} MiB"
        for anchor, name in GUEST_ANCHORS:
            rows.append(row(figure, "MiB/s", round(guest["ubdsim"][kind], 1),
                            round(guest[anchor][kind], 1), name, "higher"))
    for run, _flags in NATIVE_RUNS:
        figure = f"nbd qemu-img bench 1M {run}, {NATIVE_MIB} MiB"
        for anchor, name in NATIVE_ANCHORS:
            rows.append(row(figure, "MiB/s", round(client["ubdsim"][run], 1),
                            round(client[anchor][run], 1), name, "higher"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
