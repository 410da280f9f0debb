"""Show what a COW file contains and whether it can be used.

Reports the header version and layout, every header field with its byte offset, where the
bitmap and the data area start, how many sectors the COW file holds, whether the backing file
is present and matches the header's size and mtime (each checked separately: a missing
backing file is a finding, not an error), the apparent and allocated size (as `ls -ls`), and
hazards: the V1/V2 rounding bug, the broken 64-bit V3 layout, alignment 0, bits set past the
last sector, a truncated file.

Scales to any size: only the bitmap's allocated extents are read (a fresh COW file over a
1 TiB backing file has a 256 MiB bitmap that is a hole and is not read at all).
A file that is not a COW file at all (empty, short, wrong magic, unknown version) is an
error (exit 1) with the reason the kernel would give.
"""
from __future__ import annotations

import argparse

from ..ops.inspect import inspect
from .render import info_text, to_json
from .status import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="check this backing file instead of the header's")
    parser.add_argument("cow", metavar="COW", help="the COW file to inspect")


def run(args: argparse.Namespace) -> int:
    report = inspect(args.cow, backing=args.backing)
    print(to_json(report) if args.json else info_text(report))
    return OK
