#!/usr/bin/env python3
"""Run one command on a "small XSAVE" machine: a qemu guest that sees the host's root filesystem.

Why this exists. Debian's linux.uml 6.1 hands PTRACE_SETREGSET(NT_X86_XSTATE) a fixed 2696-byte
buffer; a host whose XSAVE area is larger (this machine kind has AMX: 11008 bytes) refuses it
with EFAULT, so linux.uml only runs here under LD_PRELOAD=build/uml_xstate_fix.so. To measure
what that fix costs, both must run on one machine, one whose XSAVE area is at most 2696 bytes.
This script makes one: Debian's own 6.1 kernel (the one guest_images/qemu/build_image.py
caches) booted in qemu with a CPU model whose XSAVE area is small, the host's `/` mounted
read-only over virtio-9p and chrooted into, so linux.uml, .venv, busybox and the .so are all
there unchanged.

    .venv/bin/python scripts/xsave_vm.py [--cpu MODEL] [--timeout S] [--tmp-disk MIB] -- CMD [ARG...]

COMMAND runs as root with cwd / in the chroot (read-only; tmpfs on /tmp, /run, /dev/shm; proc,
sysfs, devtmpfs and devpts mounted), stdin /dev/null, a minimal environment (PATH, HOME=/root,
LANG=C.UTF-8; use `env VAR=...` in COMMAND for more). Its stdout and stderr are streamed back
as they are written, and this script exits with its exit status (124 on timeout, 125 when the
guest itself failed, 130 on Ctrl-C). Before COMMAND starts, one line goes to stderr with the
guest's XSAVE size: the NT_X86_XSTATE regset size a PTRACE_GETREGSET returns (what linux.uml
depends on) and the guest kernel's "context size" boot line.

Facts this relies on (measured on this machine kind):
- /dev/kvm is there but is KVM-PVM (`kvm-pvm: loaded` in dmesg, no vmx flag): it runs only
  PVM-enabled guest kernels, and Debian's kernel hangs silently after SeaBIOS under
  `-accel kvm`. So the default is `-accel tcg`; `--accel kvm` is kept to try again.
- qemu 7.2's TCG has no AVX-512 and no AMX; `-cpu max` gives xstate features 0x21f (x87, SSE,
  AVX, MPX, PKRU), whose standard-format area ends with PKRU at 2696 bytes: exactly
  linux.uml's buffer, a machine "where both run".
- 6.1's 9p needs netfs, fscache, 9pnet, 9pnet_virtio (insmod order from each module's
  `depends=`); they come from the same Debian package as the cached kernel, fetched with
  `apt-get download` once and cached next to build_image.py's cache (nothing installed).
- tmpfs on 6.1 refuses O_DIRECT (EINVAL): for dd oflag=direct on /tmp give `--tmp-disk MIB`,
  which makes /tmp an ext4 on a sparse host file (virtio-blk) instead of tmpfs.
- The guest's /init writes the status to a read-write 9p share (a host temp dir) and to
  isa-debug-exit (qemu exits with (N << 1) | 1); a panic exits qemu with 0 (`panic=-1`).
Cleanup: qemu runs in its own session under `setpriv --pdeathsig KILL`; timeout, Ctrl-C,
SIGTERM and normal exit all kill its process group, and the temp dir is removed.
Standard library and the project's own modules only.

Uses on an AMX host (both measured in the session that made this; TCG is 5-25x slower than
the host and varies 2-4x from run to run, so compare behaviour here, not speed):
    scripts/xsave_vm.py -- env PYTHONDONTWRITEBYTECODE=1 $PWD/.venv/bin/python -m pytest -q \
        -p no:cacheprovider $PWD/tests/kernel_ref/test_xstate_fix.py       # about 2 min
    scripts/xsave_vm.py --tmp-disk 4096 --timeout 3300 -- env UBDSIM_XSTATE_FIX=on \
        $PWD/.venv/bin/python -m kernel_ref run --against oracle --all      # linux.uml, fix forced
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "guest_images" / "qemu"))
import build_image  # noqa: E402  (the cached Debian kernel and its Cpio writer)

from ubdsim.vm.qemu import stop_qemu  # noqa: E402

VM_MODULES_BASE = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                   "virtio_pci", "9pnet_virtio", "9p", "virtio_blk", "crc32c_generic", "ext4"]   # dependencies are added
DONE_MARK = "complete"
STATUS_EXIT_TIMEOUT, STATUS_EXIT_VM, STATUS_EXIT_INT = 124, 125, 130

INIT_SCRIPT = r"""#!/bin/busybox sh
# /init of the xsave_vm guest (written by scripts/xsave_vm.py).
/bin/busybox mkdir -p /proc /sys /dev /host /io /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || echo "xsave_vm-init: insmod $m failed"
done
fail() { echo "xsave_vm-init: $*"; dmesg | tail -n 15; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xsvmio /io || fail "no io share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host \
    || fail "no hostroot share"
R=/host
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run
if [ -e /sys/block/vda ]; then
    mount -t ext4 /dev/vda $R/tmp || fail "cannot mount the tmp disk"
    chmod 1777 $R/tmp
else
    mount -t tmpfs -o mode=1777 tmpfs $R/tmp
fi
ctx=$(dmesg | sed -n 's/.*x86\/fpu: \(Enabled xstate features .*\)/\1/p' | head -n 1)
env -i PYTHONDONTWRITEBYTECODE=1 chroot $R "$(cat /io/python)" -c "$(cat /io/probe.py)" "$ctx" \
    > /io/xsave.tmp 2>&1
mv /io/xsave.tmp /io/xsave
echo "xsave_vm-start"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 chroot $R /bin/sh -c "cd / && $(cat /io/command)" \
    < /dev/null > /io/stdout 2> /io/stderr
rc=$?
sync
echo $rc > /io/status
echo "xsave_vm-status: $rc"
umount /io
printf "\\$(printf %03o $((rc & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"""

# Runs in the guest's chroot with the project's venv: the guest's NT_X86_XSTATE regset size,
# measured as the launcher measures a host's (kernel_ref/xstate.py). argv[1] is the guest
# kernel's x86/fpu boot line.
PROBE = """
import sys
from kernel_ref.errors import KernelUnavailable
from kernel_ref.xstate import LINUX_UML_XSTATE_BYTES, measure_host_xstate
try:
    size = measure_host_xstate()
except KernelUnavailable as err:
    print(f"xsave_vm: guest probe failed: {err}; kernel: {sys.argv[1] or '?'}")
    raise SystemExit(0)
fits = ("linux.uml's buffer fits" if size <= LINUX_UML_XSTATE_BYTES
        else "linux.uml needs the fix")
print(f"xsave_vm: guest XSAVE area {size} bytes (NT_X86_XSTATE regset: {fits}); "
      f"kernel: {sys.argv[1] or '?'}")
"""
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


class _Terminated(Exception):
    pass


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def module_depends(ko: bytes) -> list[str]:
    found = re.search(rb"\0depends=([^\0]*)\0", ko)
    return [d for d in found.group(1).decode().split(",") if d] if found else []


def load_order(modules_dir: Path, wanted: list[str]) -> list[tuple[str, bytes]]:
    """(name, contents) of `wanted` and their dependencies, each after what it depends on."""
    index: dict[str, Path] = {}
    for path in modules_dir.rglob("*.ko"):
        index.setdefault(path.stem.replace("-", "_"), path)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        if key not in index:
            raise SystemExit(f"xsave_vm: module {name}.ko not in the kernel package")
        data = index[key].read_bytes()
        for dep in module_depends(data):
            visit(dep)
        order.append((index[key].stem, data))

    for name in wanted:
        visit(name)
    return order


def guest_files() -> tuple[Path, Path]:
    """(vmlinux, initramfs) of the guest: the kernel build_image.py caches, and an initramfs of
    this script's own, built once from the same kernel package and cached beside it."""
    kernel_dir = build_image.build()
    package = (kernel_dir / build_image.DONE_MARK).read_text().strip()
    digest = hashlib.sha256((INIT_SCRIPT + "\n".join(VM_MODULES_BASE)).encode())
    digest.update(str(os.stat(build_image.BUSYBOX).st_size).encode())
    cache = build_image.cache_root() / "xsave_vm" / f"{package}-{digest.hexdigest()[:10]}"
    initrd = cache / "initramfs.cpio.gz"
    if (cache / DONE_MARK).is_file():
        return kernel_dir / "vmlinux", initrd
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
        print(f"xsave_vm: downloading {package} for its 9p modules", file=sys.stderr)
        fetched = subprocess.run(["apt-get", "download", "-qq", package], cwd=scratch,
                                 capture_output=True, text=True)
        debs = list(Path(scratch).glob("*.deb"))
        if fetched.returncode != 0 or not debs:
            raise SystemExit(f"xsave_vm: apt-get download {package} failed:\n{fetched.stderr}")
        subprocess.run(["dpkg", "-x", str(debs[0]), f"{scratch}/x"], check=True)
        modules = load_order(Path(scratch, "x", "lib", "modules"), VM_MODULES_BASE)
        archive = build_image.Cpio()
        for directory in ("bin", "dev", "lib/modules", "proc", "sys", "host", "io"):
            archive.directory(directory)
        archive.char_device("dev/console", 5, 1)
        archive.file("bin/busybox", Path(build_image.BUSYBOX).read_bytes(), 0o755)
        archive.file("init", INIT_SCRIPT.encode(), 0o755)
        for name, data in modules:
            archive.file(f"lib/modules/{name}.ko", data)
        archive.file("lib/modules/load-order", "".join(f"{n}\n" for n, _ in modules).encode())
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        initrd.write_bytes(gzip.compress(archive.finish(), compresslevel=6))
        (cache / DONE_MARK).write_text(package + "\n")
    for old in cache.parent.iterdir():      # initramfs of an older kernel or init script
        if old.is_dir() and old != cache and not old.name.startswith("tmp"):
            shutil.rmtree(old, ignore_errors=True)
    return kernel_dir / "vmlinux", initrd


def qemu_command(args: argparse.Namespace, vmlinux: Path, initrd: Path, io_dir: Path,
                 tmp_disk: Path | None) -> list[str]:
    command = ["setpriv", "--pdeathsig", "KILL", "--",
               "qemu-system-x86_64", "-accel", args.accel, "-cpu", args.cpu,
               "-m", args.memory, "-smp", str(args.smp),
               "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
               "-kernel", str(vmlinux), "-initrd", str(initrd),
               "-append", "console=ttyS0 quiet loglevel=3 panic=-1",
               "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                          "multidevs=remap",
               "-virtfs", f"local,path={io_dir},mount_tag=xsvmio,security_model=none"]
    if tmp_disk is not None:
        command += ["-drive", f"file={tmp_disk},format=raw,if=none,id=tmpdisk,cache=unsafe",
                    "-device", "virtio-blk-pci,drive=tmpdisk"]
    return command


class Tail:
    """Forwards what the guest appends to a file in the io share to one of our streams."""

    def __init__(self, path: Path, out) -> None:
        self.path, self.out, self.offset = path, out, 0

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.offset += len(data)
            self.out.write(data)
            self.out.flush()


def run(args: argparse.Namespace) -> int:
    vmlinux, initrd = guest_files()
    work = Path(tempfile.mkdtemp(prefix="xsave_vm-"))
    process = None
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    # Even where SIGINT came in ignored (a background job of a script), Ctrl-C/kill -INT stops.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    console = bytearray()
    try:
        io_dir = work / "io"
        io_dir.mkdir()
        (io_dir / "command").write_text(shlex.join(args.command) + "\n")
        (io_dir / "probe.py").write_text(PROBE)
        (io_dir / "python").write_text(str(VENV_PYTHON))
        tmp_disk = None
        if args.tmp_disk:
            tmp_disk = work / "tmp.ext4"
            with open(tmp_disk, "wb") as f:
                f.truncate(args.tmp_disk << 20)
            subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0",
                            str(tmp_disk)], check=True)
        command = qemu_command(args, vmlinux, initrd, io_dir, tmp_disk)
        if args.verbose:
            print("xsave_vm: " + shlex.join(command), file=sys.stderr)
        started = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        tails = [Tail(io_dir / "stdout", sys.stdout.buffer),
                 Tail(io_dir / "stderr", sys.stderr.buffer)]
        xsave_shown = False
        fd = process.stdout.fileno()
        deadline = started + args.timeout
        eof = False
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"xsave_vm: timed out after {args.timeout:g} s; guest stopped",
                      file=sys.stderr)
                return STATUS_EXIT_TIMEOUT
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(fd, 65536)
                eof = not chunk
                console += chunk
                if args.verbose and chunk:
                    sys.stderr.buffer.write(chunk.replace(b"\r\n", b"\n"))
                    sys.stderr.buffer.flush()
            if not xsave_shown and (io_dir / "xsave").is_file():
                xsave_shown = True
                line = (io_dir / "xsave").read_text().strip()
                print(f"{line} [qemu -accel {args.accel} -cpu {args.cpu}; guest up in "
                      f"{time.monotonic() - started:.1f} s]", file=sys.stderr, flush=True)
            for tail in tails:
                tail.pump()
        returncode = process.wait()
        for tail in tails:
            tail.pump()
        status_file = io_dir / "status"
        if not status_file.is_file():
            text = console.decode(errors="replace").replace("\r\n", "\n")
            print(f"xsave_vm: the guest stopped without a status (qemu exit {returncode}); "
                  f"console:\n{text[-3000:]}", file=sys.stderr)
            return STATUS_EXIT_VM
        status = int(status_file.read_text())
        if returncode not in (((status & 255) << 1) | 1, 0):
            print(f"xsave_vm: guest status {status} but qemu exited with {returncode}",
                  file=sys.stderr)
        if args.verbose:
            print(f"xsave_vm: command status {status}, VM total "
                  f"{time.monotonic() - started:.1f} s", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        print("xsave_vm: interrupted; guest stopped", file=sys.stderr)
        return STATUS_EXIT_INT
    except _Terminated:
        print("xsave_vm: terminated; guest stopped", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        if process is not None:
            stop_qemu(process)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", default="max", help="qemu -cpu model (default: max; under "
                        "--accel kvm e.g. host,-amx-tile,-amx-int8,-amx-bf16)")
    parser.add_argument("--accel", default="tcg", choices=["tcg", "kvm"],
                        help="default tcg: this host's KVM is PVM and hangs Debian's kernel")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for the whole VM run (default 600)")
    parser.add_argument("--memory", default="4G", help="guest memory (default 4G)")
    parser.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    parser.add_argument("--tmp-disk", type=int, metavar="MIB", default=0,
                        help="make /tmp an ext4 of MIB MiB (O_DIRECT works) instead of tmpfs")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the qemu command line and the guest console on stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARG...]")
    args = parser.parse_args()
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no COMMAND given (after --)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
