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

--summary FILE... lists many COW files at once, grouped by the backing file their header
names (identified by device and inode, so every spelling of a path is one group; a missing
backing file is grouped by its path): each COW file's size, marked sectors, apparent and
allocated bytes and whether it still matches the backing file, and, for each backing file,
which COW files a `moo -d` of any one of them would invalidate (all the others that still
match it: the merge rewrites the backing file and its mtime). A directory stands for the
COW files directly in it (other files there are passed over). A named file that is not a
COW file is reported on stderr, one line each, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import sys

from ..fileio import shown
from ..ops.inspect import inspect, inspect_chain, summarize
from .render import chain_info_text, info_text, summary_text, to_json
from .status import ERROR, OK, USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="check this backing file instead of the header's")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: report every layer of the backing chain")
    parser.add_argument("--summary", action="store_true",
                        help="list many COW files (or directories of them) grouped by "
                             "backing file, and what a moo -d of one would invalidate")
    parser.add_argument("cow", metavar="COW", nargs="+",
                        help="the COW file to inspect (several, or directories, with --summary)")


def run(args: argparse.Namespace) -> int:
    if args.summary:
        if args.backing is not None or args.chain:
            print("ubdsim info: usage: --summary does not combine with -b or --chain",
                  file=sys.stderr)
            return USAGE
        summary = summarize(args.cow)
        print(to_json(summary) if args.json else summary_text(summary))
        for bad in summary.not_cow:
            print(f"ubdsim info: error: '{shown(bad.path)}': {bad.reason}", file=sys.stderr)
        return ERROR if summary.not_cow else OK
    if len(args.cow) > 1:
        print("ubdsim info: usage: one COW file at a time (several with --summary)",
              file=sys.stderr)
        return USAGE
    args.cow = args.cow[0]
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
