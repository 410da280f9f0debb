"""`python -m kernel_ref boot`: the real kernel by hand, on the same words as `ubdsim run`.

So that a user can put `ubdsim run --kernel 6.1 WORD... -- COMMAND` beside the real thing on
any host: it boots linux.uml (through the launcher, the XSAVE fix applied where the host needs
it) in the current directory with the same kernel options, runs COMMAND in the guest in that
directory, and prints what `ubdsim run` prints: the guest's stdout on stdout, the ubd driver's
messages and then the guest's stderr on stderr, and exits with the guest's status.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from . import launcher
from .filters import ubd_lines
from .xstate import MODE_VARIABLE, MODES

DESCRIPTION = """Boot the real kernel (Debian's linux.uml 6.1) with kernel options WORD... and run
COMMAND in it, in the current directory (the host's / is the guest's root, through hostfs).
Use the same words as `ubdsim run --kernel 6.1 WORD... -- COMMAND` to compare the two by hand:

  python -m kernel_ref boot ubd0=disk.cow,base.img -- dd if=/dev/ubda bs=4k count=1 of=out.bin
  ubdsim run --kernel 6.1 ubd0=disk.cow,base.img -- dd if=/dev/ubda bs=4k count=1 of=out.bin

The guest's stdout goes to stdout; the ubd driver's console messages (as `ubdsim run` prints
its kernel log), then the guest's stderr, go to stderr. In the guest, /dev/ubda.. exist once
COMMAND mounts a devtmpfs or makes the nodes (mknod /dev/ubda b 98 0); /proc is mounted.
On hosts whose XSAVE area is larger than linux.uml's 2696-byte FP buffer (AMX), the XSAVE fix
is preloaded and a line on stderr says so."""

EPILOG = f"""exit status:
  the guest command's own status; 1 when linux.uml cannot run here, or the guest command did
  not finish (one line on stderr says why); 2 for a usage error.
environment:
  {MODE_VARIABLE}=auto|on|off   the default for --xstate-fix"""


def add_parser(sub) -> None:
    p = sub.add_parser("boot", help="boot linux.uml on kernel options and run a command in it",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mem", default=launcher.DEFAULT_MEM, metavar="SIZE",
                   help=f"guest memory (default {launcher.DEFAULT_MEM})")
    p.add_argument("--timeout", type=_seconds, default=launcher.DEFAULT_TIMEOUT, metavar="S",
                   help=f"kill the boot after S seconds (default {launcher.DEFAULT_TIMEOUT:g})")
    p.add_argument("--console", action="store_true",
                   help="print the whole console on stderr, not only the ubd messages")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (status, ubd messages, output, console, fix)")
    p.add_argument("--xstate-fix", choices=MODES, default=None,
                   help=f"preload the XSAVE fix: auto (where needed), on, off "
                        f"(default ${MODE_VARIABLE}, else auto)")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="WORD... -- COMMAND [ARG...]",
                   help="kernel options, then '--', then the guest command")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if "--" not in args.rest:
        parser.error("missing '--' before COMMAND (python -m kernel_ref boot WORD... -- COMMAND)")
    cut = args.rest.index("--")
    words, command = args.rest[:cut], args.rest[cut + 1:]
    if not command:
        parser.error("no COMMAND after '--'")
    try:
        result = launcher.boot(words, command, cwd=os.getcwd(), mem=args.mem,
                               timeout=args.timeout, xstate_fix=args.xstate_fix)
    except launcher.KernelUnavailable as err:
        print(f"python -m kernel_ref boot: error: {err}", file=sys.stderr)
        return 1
    log = ubd_lines(result.console)
    if args.json:
        json.dump({"options": words, "command": command, "status": result.status,
                   "problem": result.problem, "seconds": round(result.seconds, 3),
                   "xstate_fix": {"host_bytes": result.fix.host_bytes, "mode": result.fix.mode,
                                  "applied": result.fix.applied, "about": result.fix.describe()},
                   "ubd_log": log, "stdout": result.output, "stderr": result.errors,
                   "console": result.console}, sys.stdout, indent=1)
        print()
    else:
        if result.fix.applied:
            print(f"python -m kernel_ref boot: {result.fix.describe()}", file=sys.stderr)
        sys.stdout.buffer.write(result.output_bytes)
        sys.stdout.flush()
        shown = result.console if args.console else "".join(line + "\n" for line in log)
        sys.stderr.write(shown)
        sys.stderr.flush()
        sys.stderr.buffer.write(result.error_bytes)
        sys.stderr.flush()
    if result.status is None:
        print(f"python -m kernel_ref boot: error: {result.problem}", file=sys.stderr)
        return 1
    return result.status
