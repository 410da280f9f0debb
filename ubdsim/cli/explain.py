"""Say, before booting, what the kernel will do with a command line and the files it names.

  ubdsim explain [--kernel P | --kernel all] [--json] WORD...

The WORDs are read as the chosen kernel reads them (the same parser as `ubdsim parse`), then
each configured unit's files are looked at, never written and never waited on (a FIFO or a
directory is reported, not opened), and explain says in plain sentences what the boot will
do with the unit: create a COW file and in which version, open it raw, open a COW pair,
switch the backing file and what that rewrites (6.1 over a V1/V2 file: how many bitmap bytes
the V3 header overwrites, how many sectors of guest data become unreachable), refuse it and
why (a missing backing file, a size or mtime mismatch, an unreadable header, a lock held by
pid N), fall back to read-only, lock, or resize (2.4's size field). Each prediction is the
device model's own decision, worked out without its side effects, and each sentence says
where that behaviour comes from: [linux.uml] checked against the running 6.1 kernel,
[reconstructed] from the 2.4 driver's sources and descriptions (and the lost COW-resize
patch's), [ubdsim] ubdsim's own rule or advice. The kernel lines the boot would print follow.

Then the common mistakes, each with its fix: COW and backing swapped (`ubd0=backing,cow`),
the stacking line `ubd0=a,b,c` (no kernel ever stacked: 2.4 reads the third field as a size,
2.4-stock as part of the backing file's name, 6.1 as a serial), a 2.4 size given to 6.1, a
V3 file named alone under 2.4 (used raw: the guest's first write destroys its header), a
backing file that is itself a COW file, a backing file that changed (mtime; and what the
HOWTO's `touch` trick would risk), a moved backing file that 2.4 cannot follow.

--kernel all explains every profile, one after the other. --json prints one object:
{"words", "ok", "profiles": [{"profile", "provenance", "ok", "console", "units":
[{"unit", "summary", "opens", "statements": [{"behaviour", "text", "provenance"}],
"prediction": {...}}], ...}], "mistakes": [{"id", "unit", "text", "fix", "profiles",
"per_profile"}]}.

examples:
  ubdsim explain ubd0=guest.cow,base.img
  ubdsim explain --kernel all ubd0=base.img,guest.cow
  ubdsim explain --kernel 6.1 --json ubd0=old.cow,moved/base.img
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cmdline.lexer import to_bytes
from ..profiles import DEFAULT_PROFILE, PROFILES
from .status import ERROR, OK, USAGE

EPILOG = """exit codes:
  0    every unit would open, under every profile asked, and no option is rejected
  1    some unit would not open (or an option is rejected, or the command line is refused)
  2    usage error in explain's own arguments"""

ALL = "all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", choices=[*PROFILES, ALL], default=DEFAULT_PROFILE,
                        metavar="P", help=f"kernel profile ({', '.join(PROFILES)}, or {ALL}; "
                                          f"default {DEFAULT_PROFILE})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="WORD",
                        help="kernel command-line words, e.g. ubd0=cow,backing")


def _print(text: str) -> None:
    """File names are bytes: write them back as the bytes they came from."""
    sys.stdout.flush()
    sys.stdout.buffer.write(to_bytes(text) + b"\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[:1] == ["--"]:
        words = words[1:]
    if not words:
        print("ubdsim explain: error: no WORD given (e.g. ubdsim explain ubd0=cow,backing)",
              file=sys.stderr)
        return USAGE
    from ..explain import explain
    from ..explain.text import render_text

    profiles = list(PROFILES.values()) if args.kernel == ALL else [PROFILES[args.kernel]]
    report = explain(words, profiles)
    if args.json:
        _print(json.dumps(report.as_dict(), indent=2))
    else:
        for line in render_text(report).split("\n"):
            _print(line)
    return OK if report.ok else ERROR
