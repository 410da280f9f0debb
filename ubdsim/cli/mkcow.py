"""Create a COW file over a backing file, byte for byte what uml_mkcow writes.

The default output (version 3, 512-byte sectors, 4096-byte alignment) is identical to
uml_mkcow's: the header, an all-clear bitmap that is a hole, and a data area that is one big
hole ending in the single zero byte that sets the file's length. The backing path is stored
absolute, with symlinks in its directory part resolved (cow_user.c absolutize()).

--cow-version 1 or 2 writes the old headers a 2.4 kernel reads (V2 is what a 2.4 kernel
creates itself). Both carry the V1/V2 rounding bug: when the backing file's sector count is
not a multiple of 8, the bitmap is one byte short; `ubdsim info` reports it.

Safety: the file is written under a temporary name next to COW, fsynced, then linked into
place; an error or a crash never leaves a partial COW file (uml_mkcow leaves a 0-byte file
when the backing file is missing).

-f, --force: replace an existing COW file. uml_mkcow -f rewrites the header into the old
file without truncating it, so the old bitmap and data survive under the new header: sectors
the old COW file had marked silently show old data over the new backing file. ubdsim -f
writes a complete new file and renames it over the old one (a new inode; nothing old
survives). A symlink is followed, like uml_mkcow does; anything but a regular file is refused.
"""
from __future__ import annotations

import argparse

from ..cow.create import create_cow
from .status import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace an existing COW file completely (see above)")
    parser.add_argument("--cow-version", type=int, choices=(1, 2, 3), default=3,
                        help="header version to write (default 3, like uml_mkcow)")
    parser.add_argument("cow", metavar="COW", help="the COW file to create")
    parser.add_argument("backing", metavar="BACKING", help="the backing file it covers")


def run(args: argparse.Namespace) -> int:
    create_cow(args.cow, args.backing, version=args.cow_version, exclusive=not args.force)
    return OK
