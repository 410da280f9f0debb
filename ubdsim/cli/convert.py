"""Convert a UML COW file (with its backing file) to a raw image or a qcow2 overlay, and a
qcow2 overlay back to a COW file.

  ubdsim convert [-b BACKING] COW OUT.img                    the device as a raw image
  ubdsim convert [-b BACKING] -O qcow2 [--backing-file NAME] COW OUT.qcow2
                                                             a qcow2 overlay over the same
                                                             raw backing file
  ubdsim convert [-b BACKING] -O cow OVERLAY.qcow2 OUT.cow   a COW file over the overlay's
                                                             raw backing file
  ubdsim convert -O raw OVERLAY.qcow2 OUT.img                (qemu-img convert -O raw)

The source's kind is read from its first bytes: COW magic, qcow2 magic, or else a raw image
(a raw image converts to raw, a sparse copy, or to a standalone qcow2).

A COW file and a qcow2 overlay are the same idea in two formats: a private top layer over a
shared raw image. -O qcow2 runs `qemu-img create -f qcow2 -b BACKING -F raw` and writes only
the COW file's marked sectors into the overlay (through qemu-nbd); `qemu-img map` of the
result shows depth 0 exactly where the COW file had marks, widened to whole 64 KiB clusters
(qemu fills the rest of a cluster from the backing file, so the guest sees the same bytes).
-O cow makes a V3 COW file over the overlay's backing file, as `ubdsim mkcow` makes it, and
marks every sector of every cluster the overlay allocates, copying its data (zero clusters
are marked and stay holes). Both directions keep the device's contents; `ubdsim compare`
and `qemu-img compare` of the results say so.

-b BACKING: the source's actual backing file (a COW file's: it must match the header's size
and mtime, as for moo; a qcow2 overlay's: read instead of the name it records, which must be
a raw image of the overlay's size). --backing-file NAME: the name written into a qcow2
output (default: the backing file's absolute path); qemu resolves a relative NAME against
the overlay's directory, and so does the check here.

What qemu-img convert does differently: it replaces an existing output silently (here: only
with -f, and never one another process holds fcntl-locked, as a running UML kernel does),
writes in place under the final name (here: a temporary name beside it, renamed into place
when complete, so a failure leaves no half image), and converting a COW file is beyond it
(it reads a COW file as a raw disk of its header and bitmap). A raw output is sparse: holes
and zero blocks are not written. A progress bar is shown when stderr is a terminal; --json
prints a summary, including the qemu commands that were run.
"""
from __future__ import annotations

import argparse

from ..ops.convert import FORMATS, convert
from .progress import ProgressBar
from .render import convert_text, to_json
from .status import EXIT_CODES_HELP, OK

EPILOG = EXIT_CODES_HELP + """
A failing qemu tool (qemu-img, qemu-nbd) is exit 1 with its last line of stderr; the
temporary output is removed and OUTPUT is untouched."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-O", "--output-format", choices=FORMATS, default="raw",
                        help="format of OUTPUT (default raw, as qemu-img convert)")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="the source's actual backing file (see above)")
    parser.add_argument("--backing-file", metavar="NAME",
                        help="with -O qcow2: the backing name to record in the overlay")
    parser.add_argument("-f", "--force", action="store_true", help="replace an existing OUTPUT")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("source", metavar="SOURCE", help="a COW file, a raw image or a qcow2 overlay")
    parser.add_argument("output", metavar="OUTPUT", help="the file to create")


def run(args: argparse.Namespace) -> int:
    bar = ProgressBar("converting")
    try:
        result = convert(args.source, args.output, args.output_format, backing=args.backing,
                         backing_file=args.backing_file, force=args.force, progress=bar)
    finally:
        bar.close()
    print(to_json(result) if args.json else convert_text(result))
    return OK
