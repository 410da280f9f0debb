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
survives). A symlink is followed, like uml_mkcow does. -f refuses, with one line and exit 1:
  - COW when it is BACKING itself (also through a symlink or a hard link);
  - a file another process holds fcntl-locked (a running 6.1 guest), naming that process;
  - a file that is not a COW file (no COW magic), such as the shared image in the reversed
    order `mkcow -f BACKING COW`, unless --replace-non-cow says you mean it (empty files
    are replaced: a failed uml_mkcow leaves one);
  - anything but a regular file.
BACKING must be a regular file or a block device (a directory, FIFO or character device
such as /dev/zero is refused: `moo` could never merge it).
"""
from __future__ import annotations

import argparse

from ..ops.mkcow import make_cow
from .render import to_json
from .status import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace an existing COW file completely (see above)")
    parser.add_argument("--replace-non-cow", action="store_true",
                        help="with -f: also replace a file that is not a COW file (destroys it)")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.add_argument("--cow-version", type=int, choices=(1, 2, 3), default=3,
                        help="header version to write (default 3, like uml_mkcow)")
    parser.add_argument("cow", metavar="COW", help="the COW file to create")
    parser.add_argument("backing", metavar="BACKING", help="the backing file it covers")


def run(args: argparse.Namespace) -> int:
    result = make_cow(args.cow, args.backing, version=args.cow_version, force=args.force,
                      replace_non_cow=args.replace_non_cow)
    if args.json:
        print(to_json(result))
    return OK
