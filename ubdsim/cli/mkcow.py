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

A BACKING that is itself a COW file is made over, with one `ubdsim mkcow: warning: ...` line
on stderr (exit 0): UML cannot stack COW files, a kernel opens a backing file raw, so the
guest would see that file's header and bitmap as the first sectors of its disk.

--kernel P makes the file the way that kernel creates one when a COW file is missing: the
header version it writes (the profile's FormatRules.created_version, listed under --kernel
below), its alignment, and how it sets the file's length (DeviceRules.creation_trailing_byte:
one zero byte at the end, or extended as a hole). --cow-version overrides the version (with a
warning when that kernel cannot read it).
"""
from __future__ import annotations

import argparse
import sys

from ..ops.mkcow import DEFAULT_VERSION, make_cow
from ..profiles import PROFILES, get_profile
from .render import to_json
from .status import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace an existing COW file completely (see above)")
    parser.add_argument("--replace-non-cow", action="store_true",
                        help="with -f: also replace a file that is not a COW file (destroys it)")
    parser.add_argument("--json", action="store_true", help="print what was written as JSON")
    parser.add_argument("--cow-version", type=int, choices=(1, 2, 3), default=None,
                        help=f"header version to write (default: the --kernel profile's, else "
                             f"{DEFAULT_VERSION}, like uml_mkcow)")
    parser.add_argument("--kernel", choices=list(PROFILES), default=None, metavar="P",
                        help="create the file as that kernel creates one: "
                             + "; ".join(f"{name}: V{p.format.created_version}"
                                         for name, p in PROFILES.items()))
    parser.add_argument("cow", metavar="COW", help="the COW file to create")
    parser.add_argument("backing", metavar="BACKING", help="the backing file it covers")


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.kernel) if args.kernel else None
    result = make_cow(args.cow, args.backing, version=args.cow_version, force=args.force,
                      replace_non_cow=args.replace_non_cow, profile=profile)
    for warning in result.warnings:
        print(f"ubdsim mkcow: warning: {warning}", file=sys.stderr, flush=True)
    if args.json:
        print(to_json(result))
    return OK
