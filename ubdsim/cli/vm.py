"""Boot a real Linux kernel in qemu on the configured ubd units and run a script in it.

  ubdsim vm [--kernel P] [--timeout S] [--flush kernel|fsync] [--chain] WORD... -- GUEST_SCRIPT

WORDs are kernel options (`ubd0=disk.cow,disk.img ...`) opened exactly as `ubdsim serve`
and `ubdsim run` open them (the kernel's messages go to stderr first). The units are served
over NBD on a private unix socket, in this process, and a Debian 6.1 x86_64 kernel under
qemu (software emulation, TCG) gets one virtio disk per unit that opened, in unit order
(/dev/vda, /dev/vdb...), each also reachable as /dev/NAME (/dev/ubda, or /dev/ubd0 under 2.4).

GUEST_SCRIPT is a shell script file run by busybox sh as the guest's workload (cwd /, PATH
has every busybox applet: mke2fs, mount, dd, sync, blockdev...; ext4 and virtio_blk are
loaded). Its output is streamed as it runs. The guest kernel has its own page cache and
journal: what reaches the units is what a real kernel sends (writes, flushes, discards).

The first run builds the guest (kernel from Debian's linux-image-amd64 package, busybox
initramfs) into ~/.cache/ubdsim/qemu (apt-get download, ~10 s); later runs reuse it.
A boot takes ~2 s of emulated time on this machine before the script starts.

--timeout S stops the guest after S seconds (default 600): a finite number greater than 0
(fractions allowed; nan and inf are refused, so a typo cannot turn the limit off).
--flush: what a guest flush does to the host files (see `ubdsim serve --help`).
--chain is ubdsim's own option, not the kernel's (see `ubdsim run --help`): a unit's backing
file that is itself a COW file is read as a read-only COW layer over its own backing file,
recursively, instead of raw as UML reads it; writes go to the top COW file only.

A host read or write that fails (a full host disk, an --inject fault) is an I/O error in the
guest (its request fails with EIO, as a failed ubd request does under UML; the guest is never
paused), and ubdsim prints one line on stderr the first time each kind of failure happens,
e.g. `ubdsim: host write to cow.img failed: No space left on device (guest got EIO; ...)`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..explain.options import add_hint_options
from ..errors import UsageError
from ..lab.frontend import add_record_options, check_inject
from ..nbd.exports import FLUSH_MODES, open_exports
from ..nbd.server import NbdServer, ServerThread
from ..profiles import DEFAULT_PROFILE, PROFILES, get_profile
from ..vm.image import guest_image, workload_initrd
from ..vm.qemu import TIMEOUT_STATUS, Disk, GuestFailed, qemu_command, run_guest, write_console
from .argtypes import positive_seconds
from .status import ERROR, USAGE

EPILOG = f"""exit status:
  N    the exit status of GUEST_SCRIPT inside the guest
  1    also: the guest gave no status (kernel panic, qemu error), or a unit set-up error;
       one line on stderr says which
  {TIMEOUT_STATUS}  --timeout expired (qemu was killed)
  130  interrupted (Ctrl-C); 128+N when qemu was killed by signal N
  2    a usage error (a bad --inject SPEC)
  137  after an --inject ...:crash: ubdsim stopped as a SIGKILL would (qemu dies with it)
Every process ubdsim started (qemu, the NBD server) is stopped on every exit path."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", default=DEFAULT_PROFILE, choices=list(PROFILES),
                        help=f"kernel profile the units are opened as (default {DEFAULT_PROFILE})")
    parser.add_argument("--timeout", type=positive_seconds, default=600.0, metavar="S",
                        help="stop the guest after S seconds, finite and > 0 (default 600)")
    parser.add_argument("--flush", choices=FLUSH_MODES, default="kernel",
                        help="what a guest flush does (default kernel: the real driver's flush)")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own, not the kernel's: read a backing file that is a "
                             "COW file as a read-only layer over its own backing file, "
                             "recursively (default: raw, as UML reads it)")
    add_hint_options(parser)
    add_record_options(parser)
    parser.add_argument("words", nargs="+", metavar="WORD", help="kernel options: ubd0=... ")
    parser.add_argument("script", metavar="GUEST_SCRIPT", help="shell script run in the guest")


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.kernel)
    try:
        check_inject(args)
    except UsageError as err:
        print(f"ubdsim vm: error: {err}", file=sys.stderr)
        return USAGE
    script = Path(args.script).read_bytes()
    image = guest_image()
    opened = open_exports(args.words, profile, args.flush,
                          lambda line: print(line, file=sys.stderr, flush=True), chain=args.chain,
                          hints=not args.quiet_hints, record=args, tool="ubdsim vm")
    try:
        if not opened.exports:
            print("ubdsim vm: error: no unit opened, nothing to give the guest", file=sys.stderr)
            return ERROR
        with tempfile.TemporaryDirectory(prefix="ubdsim-vm-") as scratch:
            socket_path = str(Path(scratch) / "nbd.sock")
            server = ServerThread(NbdServer(opened.exports, client_error="guest got EIO"),
                                  socket_path)
            try:
                initrd = workload_initrd(image, script, Path(scratch) / "initrd")
                disks = [Disk(e.name, e.device.readonly) for e in opened.exports]
                command = qemu_command(image.vmlinux, initrd, socket_path, disks)
                try:
                    return run_guest(command, args.timeout, write_console)
                except GuestFailed as failed:
                    print(f"ubdsim vm: error: {failed}", file=sys.stderr)
                    return failed.status
            finally:
                server.stop()
    finally:
        opened.close()
