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

The backing chain is walked: a COW file whose backing file leads back to it (A -> B -> A,
through any names or links) is reported as the hazard `backing_loop`.
--chain (ubdsim's own: UML cannot stack, it reads a backing file raw) reports the whole
chain: every layer down to the raw bottom, each link's size and mtime match, then each COW
layer's own report; -b does not combine with it.
"""
from __future__ import annotations

import argparse
import sys

from ..ops.inspect import inspect, inspect_chain
from .render import chain_info_text, info_text, to_json
from .status import OK, USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="check this backing file instead of the header's")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: report every layer of the backing chain")
    parser.add_argument("cow", metavar="COW", help="the COW file to inspect")


def run(args: argparse.Namespace) -> int:
    if args.chain:
        if args.backing is not None:
            print("ubdsim info: usage: -b does not combine with --chain (each layer's header "
                  "names the one below it)", file=sys.stderr)
            return USAGE
        info = inspect_chain(args.cow)
        print(to_json(info) if args.json else chain_info_text(info))
        return OK
    report = inspect(args.cow, backing=args.backing)
    print(to_json(report) if args.json else info_text(report))
    return OK
