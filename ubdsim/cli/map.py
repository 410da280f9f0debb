"""Show where each byte of a device comes from, like `qemu-img map`.

A UML unit is a two-level chain: the COW file on top (depth 0) over its backing file
(depth 1); a raw image is one level. For every run of the device, `map` names the host file
it is read from and the offset there:

  source   depth  read from                                         offset shown
  cow      0      a marked run: the COW file's data area             data_offset + start
  backing  1      an unmarked run: the backing file                  start
  tail     0      [2.4 resize] past the backing file's end: marked,   data_offset + start
                  never written (reads as zeros)
  raw      0      a raw image (no COW header)                         start

Human output is qemu-img map's: only runs that hold data, as `Offset Length Mapped to File`
with hexadecimal numbers (holes and zero runs are left out, as qemu-img leaves them out).
--json prints qemu-img map --output=json's array: start, length, depth, present, zero
(reads as zeros: a hole in the host file), data, offset; plus `file` (the host file) and
`source` (above). Scripts written for qemu-img map read it unchanged.

What differs from a qcow2 overlay: a COW file allocates per 512-byte sector, qcow2 per
cluster (64 KiB by default), so the same guest write gives a shorter depth-0 run here; and
a marked sector whose host blocks are a hole is `zero` here.

Only the bitmap's allocated parts and the host files' SEEK_DATA/SEEK_HOLE answers are read,
never a data byte: a COW file over a 1 TiB sparse backing file maps in a moment. The backing
file is checked as `ubdsim moo` checks it (missing, size or mtime mismatch: refused); a file
grown by the 2.4 resize patch maps as the grown disk.

--chain is ubdsim's own (UML cannot stack; see `ubdsim run --help`): the COW file's backing
file may itself be a COW file, and so on down to a raw file; the map then covers the whole
chain as `ubdsim run --chain` reads it, and `depth` is the layer holding each run (0 = the
top COW file, ..., N = the raw bottom), as qemu-img map numbers a backing chain. Every link
is checked (size and mtime against the header above it; loops refused); -b does not combine
with it.
"""
from __future__ import annotations

import argparse
import sys

from ..ops.map import map_device
from .render import map_text, to_json
from .status import EXIT_CODES_HELP, OK, USAGE

EPILOG = EXIT_CODES_HELP

_SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_count(text: str) -> int:
    """A byte count as qemu-img takes one: an integer with an optional K, M, G or T suffix."""
    number, suffix = text.rstrip("bBkKmMgGtT"), text[len(text.rstrip("bBkKmMgGtT")):].lower()
    if number.isdigit() and suffix in _SUFFIXES:
        return int(number) * _SUFFIXES[suffix]
    raise argparse.ArgumentTypeError(f"must be a byte count such as 4096 or 1M, not {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print qemu-img map --output=json's array (plus file and source)")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="read unmarked sectors from this backing file instead of the header's "
                             "(it must match the header's size and mtime)")
    parser.add_argument("--start-offset", type=byte_count, default=0, metavar="OFFSET",
                        help="start the map at this device offset (as qemu-img map)")
    parser.add_argument("--max-length", type=byte_count, default=None, metavar="LEN",
                        help="map at most this many bytes (as qemu-img map)")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: map the whole chain of COW files (depth = the layer "
                             "holding each run)")
    parser.add_argument("device", metavar="DEVICE", help="a COW file or a raw image")


def run(args: argparse.Namespace) -> int:
    if args.chain and args.backing is not None:
        print("ubdsim map: usage: -b does not combine with --chain (each layer's header names "
              "the one below it)", file=sys.stderr)
        return USAGE
    report = map_device(args.device, backing=args.backing, start=args.start_offset,
                        length=args.max_length, chain=args.chain)
    print(to_json(report.records()) if args.json else map_text(report))
    return OK
