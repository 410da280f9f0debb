"""Show a COW file for looking at: a picture, or a compact map in the terminal.

`info`, `check` and `map` give the numbers as text; `show` draws them. Without a file option
it prints Unicode maps, one character per cell (--width cells, default: the terminal's):

  sector map  where a guest's read of each sector goes:
              █ COW data  ░ backing file  ▓ [2.4 resize] tail: marked, never written  ▒ raw
              (a cell is █ when any of its sectors is COW data: a one-sector write shows)
  file        the COW file's bytes to scale: H header  B bitmap  : padding
              █ allocated data  · hole (SEEK_DATA: the data area is mostly holes),
              and a zoom on its start when header and bitmap are too small to see
  layers      the backing chain, top first

With --png FILE or --svg FILE it draws a picture (matplotlib), --width pixels wide
(default 1200): the file to scale (parts and allocation), the zoom on header and bitmap,
the sector map, and what each layer of the chain holds.

Before and after a resize: the 2.4 COW-resize patch grows a COW file in place, so keep a
sparse copy first, then compare the two:

  cp --sparse=always guest.cow before.cow
  ubdsim run --kernel 2.4 ubd0=guest.cow,base.img,16M -- resize2fs /dev/ubd0
  ubdsim show --compare before.cow guest.cow [--png resize.png]

--compare OLD NEW shows both on one scale (the sector maps, the files, the zooms) and
lists what changed: device size, bitmap length, where the data area starts (the patch
moves it further into the file), the sectors from each source.

Only the bitmap's allocated parts and SEEK_DATA/SEEK_HOLE answers are read, never a data
byte: a COW file over a 1 TiB sparse backing file is shown in a moment. The backing file is
checked as `ubdsim map` checks it (missing, size or mtime mismatch: refused, exit 1); a file
grown by the 2.4 resize patch shows as the grown disk. A raw image shows as one layer.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from ..errors import UsageError
from ..fileio import new_file_beside, refuse_same_file
from ..show import compare, describe
from ..show.terminal import render, render_comparison
from ..show.units import PICTURE_MIN_WIDTH, PICTURE_WIDTH
from .argtypes import int_range
from .status import ERROR, EXIT_CODES_HELP, OK, USAGE

EPILOG = EXIT_CODES_HELP
MAX_WIDTH = 20000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="read unmarked sectors from this backing file instead of the "
                             "header's (it must match the header's size and mtime)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--png", metavar="FILE", help="draw the picture into FILE as PNG")
    out.add_argument("--svg", metavar="FILE", help="draw the picture into FILE as SVG")
    parser.add_argument("--width", type=int_range(8, MAX_WIDTH), metavar="N",
                        help="terminal: cells per map line (default: the terminal's width); "
                             "picture: pixels (default 1200, at least 480)")
    parser.add_argument("--compare", action="store_true",
                        help="two files, OLD NEW (before and after a resize): both on one "
                             "scale, and what changed")
    parser.add_argument("files", nargs="+", metavar="COW",
                        help="the COW file (or raw image) to show; with --compare: OLD NEW")


def _terminal_width() -> int:
    return max(8, shutil.get_terminal_size((100, 24)).columns - 2)


def _inputs(args: argparse.Namespace, model) -> dict[str, str]:
    """Every file the picture is drawn from ({role: path}): it must not land on any of them."""
    roles = ("OLD file", "NEW file") if args.compare else ("COW file",)
    inputs = dict(zip(roles, args.files))
    if args.backing:
        inputs["backing file"] = args.backing
    layouts = (model.before, model.after) if args.compare else (model,)
    for role, layout in zip(roles, layouts):
        for i, layer in enumerate(layout.layers[1:], start=1):
            inputs[f"layer {i} of the {role}'s chain"] = layer.path
    return inputs


def _usage(args: argparse.Namespace) -> int | None:
    """The picture's width (None: a terminal map); UsageError for a wrong command line."""
    wanted = 2 if args.compare else 1
    if len(args.files) != wanted:
        raise UsageError("--compare takes two files, OLD NEW" if args.compare else
                         f"one COW file to show, not {len(args.files)} (two with --compare)")
    if not (args.png or args.svg):
        return None
    width = PICTURE_WIDTH if args.width is None else args.width
    if width < PICTURE_MIN_WIDTH:
        raise UsageError(f"--width {width}: a picture needs at least {PICTURE_MIN_WIDTH} pixels")
    return width


def run(args: argparse.Namespace) -> int:
    try:
        picture_width = _usage(args)
    except UsageError as err:
        print(f"ubdsim show: error: {err}", file=sys.stderr)
        return USAGE
    if args.compare:
        model = compare(args.files[0], args.files[1], backing=args.backing)
    else:
        model = describe(args.files[0], backing=args.backing)
    if picture_width is None:
        width = _terminal_width() if args.width is None else args.width
        print(render_comparison(model, width) if args.compare else render(model, width))
        return OK
    try:
        from ..show import figure    # matplotlib only when a picture is asked for
    except ImportError as err:
        print(f"ubdsim show: error: pictures need matplotlib ({err}): run `make setup`",
              file=sys.stderr)
        return ERROR
    target, fmt = (args.png, "png") if args.png else (args.svg, "svg")
    refuse_same_file(target, _inputs(args, model), "draw a picture over")
    if args.compare:
        drawn = figure.draw_comparison(model, picture_width)
    else:
        drawn = figure.draw(model, picture_width)
    with new_file_beside(target, exclusive=False) as fd:
        with os.fdopen(os.dup(fd), "wb") as out:
            figure.save(drawn, out, fmt)
    return OK
