"""What a front end (`ubdsim run`, `serve`, `vm`) calls to offer --record and --trace.

    add_record_options(parser)                          # at parser-building time (argparse only)
    lab = attach(bus, args, units, print_line)          # after the bus is built, before boot_disks()
    ...
    lab.close()                                         # after every disk is closed

With neither --record nor --trace, attach() subscribes nothing: the bus's `io_active` stays
False and the device builds no I/O event. Otherwise it opens the log (a new or empty file:
an existing log is never truncated) and the trace file (appended to, like --log), both
refused when they are one of the units' files (fileio.open_log over ops.unitfiles), starts
the mark server and sets $UBDSIM_MARK for the guest (lab/marks.py), and subscribes one
recorder that feeds both. With --inject SPEC (lab/inject.py) it also puts an injector on the
bus (check_inject() parses the SPECs first: call it before anything is opened).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .inject_spec import CRASH_STATUS

TRACE_FORMATS = ("text", "jsonl")
TERMINAL = ""          # --trace without FILE: the front end's own output (print_line)


def _trace_file(value: str) -> str:
    if "=" in value and not os.path.exists(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} looks like a kernel option, not a trace file: write --trace=FILE, or "
            "put --trace after the WORDs")
    return value


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """--record LOG, --record-snapshot, --trace [FILE], --trace-format text|jsonl."""
    parser.add_argument("--record", metavar="LOG", default=None,
                        help="record every guest request, driver step and host write (with "
                             "its bytes) into LOG, a new file (see docs/lab-log-format.md; "
                             "`ubdsim log show`, `replay`, `crash` read it); marks set with "
                             "`ubdsim mark NAME` go in too")
    parser.add_argument("--record-snapshot", action="store_true", default=False,
                        help="with --record: also copy each existing unit file (its data "
                             "extents) into the log at the start, so that `ubdsim replay` "
                             "needs no copy of the original (--from)")
    parser.add_argument("--trace", nargs="?", const=TERMINAL, default=None, metavar="FILE",
                        type=_trace_file,
                        help="print one line per event (per guest request: what the driver "
                             "and the host did) on stderr, or append them to FILE ('-': "
                             "stdout); write --trace=FILE when WORDs follow")
    parser.add_argument("--trace-format", choices=TRACE_FORMATS, default="text",
                        help="text (default: for people) or jsonl (the log's records, no "
                             "payload bytes)")
    parser.add_argument("--inject", action="append", default=None, metavar="SPEC",
                        help="make chosen HOST calls of the units fail (repeatable), strace "
                             "style: TARGET[:ITEM]... with TARGET read, write, data or bitmap "
                             "and one of error=ERRNO, torn=BYTES, crash, narrowed by when=N|N+|"
                             "N..M|N+STEP, sector=N[-M], after=SIZE, unit=N, file=cow|backing|"
                             "raw; e.g. write:error=EIO:when=3+, read:error=EIO:sector=100-199, "
                             "write:error=ENOSPC:after=1M, write:torn=512:when=7, "
                             "bitmap:error=EIO. The guest gets the kernel's errno (EIO; ENOSPC "
                             "for ENOSPC; see `ubdsim run --help`); crash "
                             f"stops ubdsim right after that write (exit {CRASH_STATUS}, as a "
                             "SIGKILL); each fault is a `fault` record in --record/--trace")


RECORD_KEYS = ("record", "record_snapshot", "trace", "trace_format", "inject")


def check_inject(args: argparse.Namespace) -> list:
    """Parse args.inject (raises UsageError, one line, for a bad SPEC) into args.inject_specs:
    call it before anything is opened, so a bad SPEC changes nothing."""
    from .inject_spec import parse_specs
    args.inject_specs = parse_specs(getattr(args, "inject", None))
    return args.inject_specs


class LabSession:
    """What attach() started: close() it after the disks are closed."""

    def __init__(self, recorder: Any = None, marks: Any = None,
                 previous_env: str | None = None, injector: Any = None) -> None:
        self.recorder = recorder
        self.marks = marks
        self._previous_env = previous_env
        self.injector = injector

    @property
    def active(self) -> bool:
        return self.recorder is not None

    @property
    def mark_path(self) -> str | None:
        return self.marks.path if self.marks is not None else None

    def close(self) -> None:
        from .marks import ENV
        if self.marks is not None:
            self.marks.close()
            self.marks = None
            if self._previous_env is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = self._previous_env
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close()
        if self.injector is not None:
            injector, self.injector = self.injector, None
            injector.close()


def attach(bus, args: argparse.Namespace, units: Iterable, print_line: Callable[[str], None],
           *, tool: str = "ubdsim", words: list[str] | None = None,
           kernel: str | None = None, announce: bool = False) -> LabSession:
    """Subscribe the recorder/trace that `args` asks for (see the module docstring).

    `units`: the configured UnitSpecs (their files are protected from the log and trace);
    `kernel`: the profile's name (default: args.kernel), `words`: the kernel options, both
    for the log's header;
    `print_line`: where a --trace without FILE goes (and, with `announce`, one line giving
    the mark socket's path, for front ends whose guest cannot inherit the environment)."""
    record = getattr(args, "record", None)
    trace = getattr(args, "trace", None)
    if getattr(args, "record_snapshot", False) and not record:
        from ..errors import UsageError
        raise UsageError("--record-snapshot needs --record LOG")
    specs = getattr(args, "inject_specs", None)
    if specs is None:
        specs = check_inject(args)
    injector = None
    if specs:
        from .inject import attach_injector
        injector = attach_injector(bus, specs)
    if record is None and trace is None:
        return LabSession(injector=injector)
    from ..fileio import open_log
    from ..ops.unitfiles import unit_files
    from .marks import ENV, MarkServer
    from .recorder import attach_recorder
    from .trace import TraceSink

    units = list(units)
    sink = None
    if trace is not None:
        fmt = getattr(args, "trace_format", "text") or "text"
        if trace == TERMINAL:
            sink = TraceSink(fmt, print_line=print_line)
        elif trace == "-":
            sys.stdout.flush()
            sink = TraceSink(fmt, fd=sys.stdout.fileno())
        else:
            sink = TraceSink(fmt, fd=open_log(trace, unit_files(units)))
    try:
        recorder = attach_recorder(bus, record, units,
                                   kernel=kernel or getattr(args, "kernel", None),
                                   tool=tool, words=words, trace=sink,
                                   snapshot=bool(getattr(args, "record_snapshot", False)))
    except BaseException:
        if sink is not None:
            sink.close()
        if injector is not None:
            injector.close()
        raise
    session = LabSession(recorder, injector=injector)
    if injector is not None:
        injector.before_crash.append(recorder.flush)
    try:
        server = MarkServer(recorder.mark)
    except OSError as err:
        print_line(f"ubdsim: lab: no marks this run (cannot make the mark socket: {err})")
        return session
    session.marks = server
    session._previous_env = os.environ.get(ENV)
    os.environ[ENV] = server.path
    if announce:
        print_line(f"ubdsim: lab: marks: {ENV}={server.path} ubdsim mark NAME")
    return session


__all__ = ["LabSession", "RECORD_KEYS", "TRACE_FORMATS", "add_record_options", "attach",
           "check_inject"]
