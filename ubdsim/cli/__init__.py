"""`ubdsim` command line: a table of subcommands, each a thin module over pure operations.

Each command module provides `add_arguments(parser)` and `run(args) -> int`; its module
docstring is its `--help` description. Modules are imported only when their command runs
(pip's commands/__init__.py idea), so `ubdsim --help` stays fast and one broken command
cannot break the others.
"""
from __future__ import annotations

import argparse
import difflib
import os
import importlib
import importlib.util
import sys

from ..errors import UbdError
from ..fileio import shown
from .signals import Terminated, signal_name, stop_signals_interrupt
from .status import EXIT_CODES_HELP, ERROR, INTERRUPTED, OK, USAGE

# name -> (module, one-line summary). Order is the order `ubdsim --help` lists them in.
COMMANDS: dict[str, tuple[str, str]] = {
    "mkcow": ("ubdsim.cli.mkcow", "create a COW file over a backing file (like uml_mkcow)"),
    "info": ("ubdsim.cli.info", "show a COW file's header, layout, backing status and hazards"),
    "moo": ("ubdsim.cli.moo", "merge a COW file into a new image or into its backing file"),
    "check": ("ubdsim.cli.check", "find damage in a COW file (exit codes as qemu-img check)"),
    "repair": ("ubdsim.cli.repair", "repair what check found, crash-safe, never hiding damage"),
    "map": ("ubdsim.cli.map", "show where each sector of a device comes from (like qemu-img map)"),
    "show": ("ubdsim.cli.show", "draw a COW file: a picture (--png/--svg) or a map in the terminal"),
    "compare": ("ubdsim.cli.compare", "compare what two devices show a guest (like qemu-img compare)"),
    "rebase": ("ubdsim.cli.rebase", "point a COW file at another backing file, safely"),
    "convert": ("ubdsim.cli.convert", "convert COW+backing to raw or qcow2, and qcow2 back to COW"),
    "parse": ("ubdsim.cli.parse", "parse ubd kernel options exactly as a chosen kernel does"),
    "explain": ("ubdsim.cli.explain", "say what the kernel will do with a command line and its files"),
    "run": ("ubdsim.cli.run", "run a program that sees the configured units as /dev/ubdX"),
    "serve": ("ubdsim.cli.serve", "export the configured units over NBD"),
    "vm": ("ubdsim.cli.vm", "boot a Linux guest in qemu on the configured units"),
    "fleet": ("ubdsim.cli.fleet", "run many guests over one backing file: apparent vs allocated, overbooking"),
    "log": ("ubdsim.cli.log", "show a lab log recorded with --record (summary and events)"),
    "replay": ("ubdsim.cli.replay", "rebuild the files of a recorded run as they were at any point"),
    "crash": ("ubdsim.cli.crash", "check every crash state of a recorded run with a command"),
    "mark": ("ubdsim.cli.mark", "set a mark in the lab log of the run this guest is part of"),
    "repro": ("ubdsim.cli.repro", "reproduce a COW corruption scenario: the damage, why, and the safe way"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module is present in this installation."""
    return {name: entry for name, entry in COMMANDS.items()
            if importlib.util.find_spec(entry[0]) is not None}


def _top_help(commands: dict[str, tuple[str, str]]) -> str:
    width = max(map(len, commands), default=0)
    lines = ["usage: ubdsim COMMAND [ARGS...]", "",
             "Simulate User-Mode Linux's ubd block driver and its copy-on-write (COW) files.",
             "Kernel profiles: 2.4 (2.4.20 + COW-resize patch, default), 2.4-stock, 6.1.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in commands.items()]
    lines += ["", "Run 'ubdsim COMMAND --help' for a command's options.", "", EXIT_CODES_HELP]
    return "\n".join(lines)


def build_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The argument parser of one command, and its module."""
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"ubdsim {name}", description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=getattr(module, "EPILOG", EXIT_CODES_HELP))
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = available_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_top_help(commands))
        return OK if argv else USAGE
    name, rest = argv[0], argv[1:]
    if name not in commands:
        guess = difflib.get_close_matches(name, commands, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        print(f"ubdsim: unknown command '{name}'{hint}; see 'ubdsim --help'", file=sys.stderr)
        return USAGE
    parser, module = build_parser(name)
    args = parser.parse_args(rest)
    try:
        with stop_signals_interrupt():
            return int(module.run(args))
    except BrokenPipeError:
        # `ubdsim info x | head`: the reader left; that is not an error of ours (exit as
        # a shell would, without a traceback from flushing stdout at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ERROR
    except UbdError as err:
        print(f"ubdsim {name}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", ERROR)
    except OSError as err:
        where = f": {shown(err.filename)}" if err.filename else ""
        print(f"ubdsim {name}: error: {err.strerror or err}{where}", file=sys.stderr)
        return ERROR
    except Terminated as stopped:
        print(f"ubdsim {name}: stopped by {signal_name(stopped.signum)}", file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:
        print(f"ubdsim {name}: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
