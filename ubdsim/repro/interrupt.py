"""Grow a COW file as the 2.4 resize does and die by SIGKILL before mutating step N.

    python -m ubdsim.repro.interrupt COW NEW_SIZE BACKING --mode in-place|safe --kill-before N

For the resize-interrupted scenario: `in-place` is the lost patch's move as its author
described it (device/resize.py _move_in_place(): extend, data moved last bytes first, bitmap,
header), `safe` is ubdsim's own (a grown copy beside the file, renamed over it). Both call the
same FaultSteps hook (fileio/steps.py) before each mutation; here the hook kills the process,
as a power cut or `kill -9` would, so the file is left exactly as that step found it.
"""
from __future__ import annotations

import argparse
import os
import signal

from ..cmdline.numbers import memparse
from ..device.resize import resize_file


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ubdsim.repro.interrupt")
    parser.add_argument("cow")
    parser.add_argument("size", help="the new device size, as the kernel's memparse reads it (8M)")
    parser.add_argument("backing")
    parser.add_argument("--mode", choices=("in-place", "safe"), required=True)
    parser.add_argument("--kill-before", type=int, required=True, metavar="N")
    args = parser.parse_args()

    def fault(step: int) -> None:
        if step == args.kill_before:
            os.kill(os.getpid(), signal.SIGKILL)

    size, used = memparse(args.size.encode())
    if used != len(args.size):
        parser.error(f"size {args.size!r} is not a number")
    resize_file(args.cow, size, os.path.getsize(args.backing),
                mode=args.mode, fault=fault)
    print(f"finished before step {args.kill_before}: the resize had fewer steps")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
