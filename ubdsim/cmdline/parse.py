"""`parse_command_line()`: a UML command line in, the units and the kernel's messages out.

This is the front door every other part of ubdsim uses (device model, guest harness, NBD
server): they never look at `ubd` options themselves, so each profile's parsing quirks live in
one place. Parsing never raises on any input; like the kernel, a bad option only prints.

The one input the kernel refuses is a command line too long for COMMAND_LINE_SIZE: UML's
add_arg() prints one line and exits before the kernel starts, so nothing is parsed. The result
then carries a `Refusal` (the line, its stream, the exit status) and no units; every caller
that boots must stop there: `if result.refusal: return result.refusal.emit()`.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..messages import render
from ..profiles import Profile
from .lexer import SPLITTERS, argv_words, build_command_line, to_bytes
from .setup import SETUP_STYLES, ParserState, Slot, text, udb_setup
from .spec import UnitSpec

ROOT_FS = b"root_fs"   # ubd_kern.c ubd0_init(): unit 0's file when nothing configured it


@dataclass(frozen=True)
class Refusal:
    """um_arch.c add_arg() [6.1] / user_util.c add_arg() [2.4]: the command line does not fit,
    UML prints `text` on `stream` ("stdout" or "stderr") and exits with `status`, before the
    kernel (and its log) starts."""

    text: str
    stream: str
    status: int

    def emit(self) -> int:
        """Print the line where UML prints it; returns the status to exit with."""
        out = sys.stdout if self.stream == "stdout" else sys.stderr
        other = sys.stderr if out is sys.stdout else sys.stdout
        other.flush()
        out.write(self.text + "\n")
        out.flush()
        return self.status


@dataclass(frozen=True)
class ParseResult:
    """What the kernel of one profile makes of a command line.

    `messages` is every line the ubd driver prints because of the command line, in print order:
    first the parse-time lines (`parse_messages`, printed by __setup handlers as the options are
    met), then `init_messages` (`ubd: Synchronous mode`, printed later at driver init). Callers
    that print the boot log must not print the sync line again.
    """

    profile: str
    options: list[str]                 # the options as the kernel cut them (after repair)
    init_args: list[str]               # [6.1] what followed "--": handed to init, not parsed
    parse_messages: list[str]
    init_messages: list[str]
    units: dict[int, UnitSpec]         # configured units by number, unit 0 always present
                                       # (none when refused)
    sync_mode: bool                    # ubd=sync was given
    fake_major: int | None             # [2.4] ubd=<n>
    refusal: Refusal | None = None     # UML refused the command line (add_arg()): no boot
    messages: list[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", self.parse_messages + self.init_messages)


def _unit_spec(unit: int, slot: Slot, file: bytes) -> UnitSpec:
    def opt(data: bytes | None) -> str | None:
        return None if data is None else text(data)

    return UnitSpec(unit=unit, file=text(file), backing=opt(slot.backing), size=slot.size,
                    serial=opt(slot.serial), readonly=slot.readonly, sync=slot.sync,
                    no_cow=slot.no_cow, shared=slot.shared, no_trim=slot.no_trim)


def parse_command_line(words: str | bytes | Iterable[str | bytes], profile: Profile) -> ParseResult:
    """Parse `words` (argv words after the program name, or one already-joined string) the way
    `profile`'s kernel does: build the command line from argv (um_arch.c linux_main()/add_arg(),
    which may refuse it: see Refusal), cut it into options (rules.splitter), hand each option
    starting with `ubd` (or `udb` where the typo catcher exists) to the driver, then give unit 0
    its `root_fs` default (ubd0_init()).

    A single string is parsed as given; for the length limit it counts as the words it is
    cut into at spaces."""
    rules = profile.cmdline
    built = build_command_line(argv_words(words), rules)
    if not built.fits:
        return ParseResult(
            profile=profile.name, options=[], init_args=[], parse_messages=[], init_messages=[],
            units={}, sync_mode=False, fake_major=None,
            refusal=Refusal(render("cmdline.too_long", profile.kernel_family),
                            rules.too_long_stream, rules.too_long_status))
    line = to_bytes(words) if isinstance(words, (str, bytes, bytearray)) else built.line
    split = SPLITTERS[rules.splitter](line)
    state = ParserState(rules=rules, family=profile.kernel_family,
                        slots=[Slot() for _ in range(rules.max_units)])
    ubd_setup = SETUP_STYLES[rules.setup_style]
    for option in split.options:
        # init/main.c obsolete_checksetup(): __setup("ubd") matches by prefix
        if option.startswith(b"ubd"):
            ubd_setup(state, option[3:])
        elif rules.udb_typo_catcher and option.startswith(b"udb"):
            udb_setup(state, option[3:])
    parse_messages = state.messages
    state.messages = []
    if state.global_sync:
        state.say("cmdline.sync_mode")
    units = {}
    for unit, slot in enumerate(state.slots):
        file = ROOT_FS if unit == 0 and slot.file is None else slot.file
        if file is not None:
            units[unit] = _unit_spec(unit, slot, file)
    return ParseResult(
        profile=profile.name, options=[text(o) for o in split.options],
        init_args=[text(a) for a in split.init_args], parse_messages=parse_messages,
        init_messages=state.messages, units=units, sync_mode=state.global_sync,
        fake_major=state.fake_major)
