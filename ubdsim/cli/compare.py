"""Compare what two devices show a guest, like `qemu-img compare`.

Each of A and B is a COW file (read through its backing file, as the kernel reads it) or a
raw image. The comparison is of contents, not of files: a COW file and the image `ubdsim moo`
merged from it are the same; two COW files over one backing file differ only where their
marked sectors do.

Output and exit status follow qemu-img compare (QEMU 7.2):
  Images are identical.                       exit 0
  Content mismatch at offset N!               exit 1; N is the start of the first differing
                                              512-byte sector (qemu-img's granularity);
                                              --json also gives the exact byte
  Warning: Image size mismatch!               sizes differ and the common part is equal; the
                                              larger device's extra part must read as zeros
  Strict mode: Image size mismatch!           -s: different sizes fail at once (exit 1)
  Strict mode: Offset N block status mismatch!
                                              -s: a range that is a hole (known zeros) in
                                              one device and stored data in the other
                                              (qemu-img compares its internal block-status
                                              word, so it may name an earlier offset: 0 when
                                              one image's status run reaches its end)
An error (a missing backing file, a mismatched one, an unreadable header) is one line on
stderr and exit 2, qemu-img's "error on opening an image"; a failed read is exit 4.

Only what must be read is read: where both devices read the same host bytes (the same
backing file at the same offset, the same COW file) nothing is read; holes on both sides
are equal; a hole on one side only is checked by reading the other side. Two COW files over
one 1 TiB backing file compare in the time their marked sectors take.
qemu-img compare -p shows progress; here a bar appears by itself when stderr is a terminal.
"""
from __future__ import annotations

import argparse

from ..ops.compare import compare_devices
from .progress import ProgressBar
from .render import compare_lines, to_json

EPILOG = """exit codes (those of qemu-img compare):
  0    the devices show the same contents
  1    they differ (the first difference is printed)
  2    a device could not be opened (missing or mismatched backing file, bad header,
       locked file), or ubdsim's own arguments were wrong; one line on stderr
  4    a read failed
  130  interrupted (SIGINT); 143 stopped by SIGTERM (129: SIGHUP)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backing-a", metavar="BACKING_A",
                        help="A's backing file, instead of the one its COW header names")
    parser.add_argument("-B", "--backing-b", metavar="BACKING_B",
                        help="B's backing file, instead of the one its COW header names")
    parser.add_argument("-s", "--strict", action="store_true",
                        help="strict mode: fail on different sizes or block status (as qemu-img -s)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing; the exit status says it (as qemu-img -q)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("a", metavar="A", help="a COW file or a raw image")
    parser.add_argument("b", metavar="B", help="a COW file or a raw image")


def run(args: argparse.Namespace) -> int:
    bar = ProgressBar("comparing")
    try:
        result = compare_devices(args.a, args.b, backing_a=args.backing_a,
                                 backing_b=args.backing_b, strict=args.strict, progress=bar)
    finally:
        bar.close()
    if args.json:
        print(to_json(result))
    elif not args.quiet:
        print("\n".join(compare_lines(result)))
    return result.exit_code
