"""Parse `ubd` kernel options exactly as the chosen kernel does, and show the result.

The WORDs are a UML kernel command line: they are joined with spaces and cut into options the
way the kernel cuts its command line, so `"ubd 0=x"` is two options (`ubd` and `0=x`), quotes
work as in the kernel, and for 6.1 everything after a `--` word goes to init unparsed.
(A first `--` right after ubdsim's own options only ends those options.) A first WORD that
starts with a space is ignored, as um_arch.c linux_main() ignores such an argv[1].

Output: the lines the kernel's ubd driver prints because of these options, byte for byte and
in the kernel's order (parse-time lines, then `ubd: Synchronous mode` from driver init), then
a table of the configured units. Unit 0 is always there: with nothing else it is `root_fs`
in the current directory, as in the kernel. A malformed option is not an error for ubdsim:
the kernel only prints a line and boots on, so the exit status is still 0.

Too long a command line is the one thing the kernel refuses: UML joins its argv words into a
COMMAND_LINE_SIZE (4096-byte) buffer before the kernel starts (um_arch.c add_arg(), counting
as `linux WORD...` would: the words, one space between each, then the `root=` and 6.1's
`console=tty0` words it adds when none is given; `xterm=` words, and `umid=` words until one
sets the umid, do not go in). When they do not fit, ubdsim prints what UML prints and
nothing else, with or without --json, and exits with UML's own status 1: 6.1
`add_arg: Too many command line arguments!` on stderr, 2.4 `add_arg: Too much command line!`
on stdout.

Table columns: unit number, option and device names, file (the COW file, or the only file),
backing file, third field (2.4: size in bytes, from the COW-resize patch; 6.1: serial;
2.4-stock has none), flags: r read-only, s O_SYNC, d never probe for a COW header,
c shared (no host locks), t no discard. --json prints the same as
{"messages": [...], "units": [{"unit", "file", "backing", "size", "serial", "readonly",
"sync", "no_cow", "shared", "no_trim"}, ...]} (absent values are null).

examples:
  ubdsim parse ubd0=cow.img,root.img,2G
  ubdsim parse --kernel 6.1 ubd1rc=data.cow:data.img:SERIAL1 ubd=sync
  ubdsim parse --kernel 2.4-stock --json ubd0=cow,backing,400M
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cmdline import ParseResult, UnitSpec, parse_command_line
from ..cmdline.lexer import to_bytes
from ..profiles import DEFAULT_PROFILE, PROFILES, get_profile
from .status import OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", choices=list(PROFILES), default=DEFAULT_PROFILE,
                        help=f"kernel profile to parse as (default {DEFAULT_PROFILE}): "
                             + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()))
    parser.add_argument("--json", action="store_true",
                        help='print {"messages": [...], "units": [...]} instead of text')
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="WORD",
                        help="kernel command-line words, e.g. ubd0=cow,backing")


def _flags(spec: UnitSpec) -> str:
    marks = (("r", spec.readonly), ("s", spec.sync), ("d", spec.no_cow), ("c", spec.shared),
             ("t", spec.no_trim))
    return "".join(letter for letter, on in marks if on) or "-"


def _unit_json(spec: UnitSpec) -> dict:
    return {"unit": spec.unit, "file": spec.file, "backing": spec.backing, "size": spec.size,
            "serial": spec.serial, "readonly": spec.readonly, "sync": spec.sync,
            "no_cow": spec.no_cow, "shared": spec.shared, "no_trim": spec.no_trim}


def _table(result: ParseResult, third_field: str | None) -> list[str]:
    """One row per unit: option name, device node, files, third field, flags (r s d c t)."""
    header = ["unit", "devices", "file", "backing"] + ([third_field] if third_field else []) + ["flags"]
    rows = [header]
    for unit, spec in sorted(result.units.items()):
        # device nodes are named ubd<letter> in both eras (ubd_kern.c ubd_disk_register())
        row = [str(unit), f"ubd{unit} /dev/ubd{chr(ord('a') + unit)}", spec.file,
               spec.backing if spec.backing is not None else "-"]
        if third_field:
            third = getattr(spec, third_field)
            row.append("-" if third is None else str(third))
        rows.append(row + [_flags(spec)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("sync: ubd=sync given, later units open O_SYNC" if result.sync_mode
                 else "sync: per unit only (flag s)")
    if result.fake_major is not None:
        lines.append(f"fake major: {result.fake_major}")
    return lines


def _print(line: str) -> None:
    """Kernel lines may carry any byte (file names are bytes): write them back as the bytes
    they came from, whatever the terminal's encoding."""
    sys.stdout.flush()
    sys.stdout.buffer.write(to_bytes(line) + b"\n")


def run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[:1] == ["--"]:      # argparse.REMAINDER keeps the separator; the kernel must not see it
        words = words[1:]
    profile = get_profile(args.kernel)
    result = parse_command_line(words, profile)
    if result.refusal is not None:
        # um_arch.c add_arg(): UML prints its line and exit(1)s before the kernel starts
        return result.refusal.emit()
    if args.json:
        # json.dumps escapes every non-ASCII character, so the output is plain ASCII
        _print(json.dumps({"messages": result.messages,
                           "units": [_unit_json(s) for _, s in sorted(result.units.items())]}))
        return OK
    lines = result.messages + ([""] if result.messages else []) + _table(result, profile.cmdline.third_field)
    for line in lines:
        _print(line)
    sys.stdout.flush()
    return OK
