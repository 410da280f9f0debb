"""Run an ordinary program that sees the configured ubd units as block devices.

    ubdsim run [--kernel P] [--log FILE] [--no-pin] [--chain] WORD... -- COMMAND [ARG...]

WORDs are kernel command-line options, parsed as the chosen kernel parses them
(`ubd0=cow.img,root_fs`, `ubd1r=data.img`, `ubd0=cow,back,256M` ...). The units are then
registered and opened the way the kernel boots them, printing the kernel's messages (to
stderr, and to --log FILE alone and unprefixed). COMMAND then runs with /dev/ubda../dev/ubdp,
/dev/ubd0.. and /dev/ubd/0.. served by ubdsim's device model (every spelling works under
every kernel profile): stat shows a block device (major 98, minor unit*16), dd, blockdev,
mkfs, e2fsck, debugfs, sfdisk and your own programs read and write through the driver's
COW logic. A unit that is not configured, or whose file could not be sized, has no node
(ENOENT); under 2.4 neither has one whose boot open failed (its ubd_add() opens the unit).

Like the driver, ubdsim keeps a unit's files open only while something has the device open:
the boot's partition scan opens and closes each unit, and every open of a closed device
reopens its files (messages printed again, host locks retaken, COW header and bitmap
reread); a failing reopen fails the guest's open with the kernel's errno. The device is
closed again once no guest descriptor refers to it (noticed at the next open of it).

How it works: a seccomp filter stops the guest only on calls that can touch a device
(open, stat, read, write, ioctl, ...); ubdsim, a ptrace tracer, answers those for device
descriptors and lets the host kernel run everything else. Buffered writes reach the device
in whole 4 KiB blocks as the kernel's page cache writes them; O_DIRECT writes exactly the
sectors asked. mmap of a device gives a private copy of its bytes (writable shared
mappings: ENODEV); Linux AIO and io_uring report ENOSYS.

Speed: a stop on a read or write of a descriptor that is no device is answered by a small
C loop (compiled on first use into ~/.cache/ubdsim with the host's cc; without one the
Python loop does the same, slower). An O_DIRECT read or write that lies in one host file
range (a raw unit, or a COW range all set, all clear, or a write over clear bits) moves its
bytes without the device model: up to 64 KiB copied by ubdsim at the one stop, larger ones
run by the host kernel on a descriptor of the host file planted in the guest (it shows as
a descriptor near 1023 in /proc/self/fd). After one such small call, the ones that follow on
the same open file are served by the C loop itself (the lane) until a call that only Python
answers comes (an lseek or ioctl on a device, an open, a buffered read, a signal...).
Readahead reads a window that lies on one side of the bitmap in one host read.
UBDSIM_EXACT_IO=1 turns all of these off; --stats counts which path each read or write call
took.

Limits: COMMAND runs on the host itself (only the ubd nodes are simulated: a script that
writes /proc/sysrq-trigger or mounts things acts on the host); no partition nodes
(/dev/ubda1) and no /sys/block entries; sendfile/splice/copy_file_range on a device give
EINVAL (callers fall back to read/write); a guest cannot itself use ptrace (strace, gdb);
ubdsim waits for background processes the guest leaves behind.

--chain is ubdsim's own option, not the kernel's: UML cannot stack, so by default (as in
the kernel) a unit's backing file that is itself a COW file is read raw and the guest sees
that file's header and bitmap as its first sectors. With --chain such a backing file is
read as a read-only COW layer over ITS backing file, recursively, down to a raw file: a
sector the top COW file does not hold comes from the next layer's COW data if marked there,
and so on down. Each layer's size and mtime are checked against the header above it; a
mismatch, a loop or a missing file refuses the unit with one `ubdsim: chain:` line (the
unit then has no node). Writes go to the top COW file only; the kernel's messages for it
are unchanged, plus one `ubdsim: chain:` line naming the layers. The device is as large
as the raw bottom file.

--inject SPEC (repeatable) makes chosen HOST calls of the units fail, never the guest's own
syscalls: the guest gets what the 6.1 kernel returns for that host error (EIO; ENOSPC for a
host ENOSPC; EIO for a torn write) and, under 6.1, the block layer's `I/O error, dev ubda,
sector S ...` line. An O_DIRECT call fails at once; a buffered write succeeds and fails
later, at its write-back (`Buffer I/O error ... lost async page write`, EIO at the next
fsync), as the kernel's page cache does. SPEC is TARGET[:ITEM]..., strace style:
  read:error=EIO:sector=100-199    every host read touching device sectors 100..199
  write:error=EIO:when=3+          the 3rd matching host write and every later one
  write:error=ENOSPC:after=1M      host writes succeed until they wrote 1 MiB (a disk filling)
  write:torn=512:when=7            the 7th write stops after 512 bytes, then fails (EIO)
  write:crash:when=12              ubdsim stops right after the 12th write, as a SIGKILL
                                   would (exit 137; the guest dies with it)
  bitmap:error=EIO                 only the COW bitmap word write-backs (data: only data)
when=N|N+|N..M|N+STEP counts the calls that match THIS spec (target, sector=, unit=N,
file=cow|backing|raw), from 1, in the kernel's order: a COW unit's request writes each
4 KiB segment's data and then its bitmap words, as linux.uml does. Each fault is a `fault`
record in --record/--trace; `ubdsim replay LOG --upto N` rebuilds the files a crash left.

Tracer and guest are pinned to one CPU by default (a ptrace stop costs ~10 us then, ~95 us
across CPUs); --no-pin lets the guest use every CPU.
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..errors import UsageError
from ..explain.options import add_hint_options
from ..fileio import open_log
from ..lab.frontend import RECORD_KEYS, add_record_options, check_inject
from ..profiles import UnknownProfile, get_profile
from .status import USAGE

EPILOG = """exit status:
  the guest's own exit status; 128+N when signal N killed it or interrupted ubdsim
  (the whole guest tree is killed then); 1 when the units could not be set up at all;
  2 for a usage error (e.g. no '--' before COMMAND, a bad --inject SPEC);
  137 after an --inject ...:crash (ubdsim stopped as a SIGKILL would, the guest with it)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_options(parser)
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="WORD... -- COMMAND [ARG...]",
                        help="kernel options, then '--', then the program to run")


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", default=None, metavar="P",
                        help="kernel profile: 2.4 (default), 2.4-stock or 6.1")
    parser.add_argument("--log", metavar="FILE", default=None,
                        help="also write the kernel messages to FILE (unprefixed; appended, "
                             "never truncated; never one of the units' files)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="pin tracer and guest to one CPU (default: on)")
    parser.add_argument("--chain", action="store_true", default=False,
                        help="ubdsim's own, not the kernel's: read a backing file that is a "
                             "COW file as a read-only layer over its own backing file, "
                             "recursively (default: raw, as the kernel reads it)")
    parser.add_argument("--stats", action="store_true", default=False,
                        help="at the end, print one line of key=value counts: seccomp stops "
                             "answered in Python and in ubdsim's C loop, and device "
                             "reads/writes copied at the stop, run on a planted host "
                             "descriptor, or served exactly (see 'How it works')")
    add_hint_options(parser)
    add_record_options(parser)


def split_words(rest: list[str], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(kernel WORDs, COMMAND) from what follows the options; options given between the
    WORDs are honoured too."""
    if "--" not in rest:
        raise UsageError("missing '--' before COMMAND (ubdsim run [OPTIONS] WORD... -- COMMAND)")
    cut = rest.index("--")
    command = rest[cut + 1:]
    if not command:
        raise UsageError("no COMMAND after '--'")
    late = argparse.ArgumentParser(add_help=False)
    _add_options(late)
    late.set_defaults(**{k: getattr(args, k) for k in ("kernel", "log", "pin", "chain", "stats",
                                                        "quiet_hints", *RECORD_KEYS)})
    options, words = late.parse_known_args(rest[:cut])
    for key in ("kernel", "log", "pin", "chain", "stats", "quiet_hints", *RECORD_KEYS):
        setattr(args, key, getattr(options, key))
    return words, command


class KernelLog:
    """The kernel's printk stream: stderr, plus --log FILE alone and unprefixed.

    FILE is appended to, never truncated, and never one of the units' files (`protected`).
    """

    def __init__(self, path: str | None, protected: dict[str, str]) -> None:
        self._file: TextIO | None = None
        if path:
            self._file = open(open_log(path, protected), "w", encoding="utf-8",
                              errors="surrogateescape")

    def __call__(self, line: str) -> None:
        for out in (sys.stderr, self._file):
            if out is not None:
                out.write(line if line.endswith("\n") else line + "\n")
                out.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def run(args: argparse.Namespace) -> int:
    try:
        words, command = split_words(args.rest, args)
        profile = get_profile(args.kernel)
        check_inject(args)
    except (UsageError, UnknownProfile) as err:
        print(f"ubdsim run: error: {err}", file=sys.stderr)
        return USAGE
    # Imported here: they pull in numpy and ctypes, which other commands do not need.
    from ..cmdline.parse import parse_command_line
    from ..device.events import EventBus
    from ..device.disk import boot_disks
    from ..explain.hints import attach_hints, to_stderr
    from ..lab.frontend import attach
    from ..harness import HarnessRules, run_guest
    from ..ops.unitfiles import unit_files

    parsed = parse_command_line(words, profile)
    if parsed.refusal is not None:      # um_arch.c add_arg(): UML exits before the kernel starts
        return parsed.refusal.emit()
    log = KernelLog(args.log, unit_files(parsed.units.values()))
    disks: dict = {}
    hints = None
    lab = None
    try:
        for line in parsed.messages:
            log(line)
        bus = EventBus()
        if not args.quiet_hints:        # subscribed first: a pending hint precedes the next line
            hints = attach_hints(bus, profile, parsed, to_stderr, chain=args.chain)
        bus.subscribe(lambda event: log(event.data["text"]), kinds={"message"})
        lab = attach(bus, args, parsed.units.values(), to_stderr, tool="ubdsim run",
                     words=words, kernel=profile.name)
        disks, _messages, _failures = boot_disks(parsed.units, profile, bus, chain=args.chain)
        if hints is not None:
            hints.flush()
        sys.stdout.flush()
        return run_guest(disks, command, max_units=profile.cmdline.max_units,
                         rules=HarnessRules.from_profile(profile), pin=args.pin,
                         stats=args.stats)
    finally:
        for disk in disks.values():
            disk.close()
        if lab is not None:
            lab.close()
        if hints is not None:
            hints.close()
        log.close()
