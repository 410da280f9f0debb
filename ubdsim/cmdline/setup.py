"""The `ubd`/`udb` option handlers, as small functions steered by a CmdlineRules row.

The kernel keeps one `struct ubd` per unit and fills it while it parses; a rejected option can
still leave marks on it (6.1: `d`/`c`/`t` are stored before the '=' is checked, an empty file
name "succeeds" without configuring the unit). So the handlers work on the same per-unit state
(`Slot`) instead of building results per option; `parse.py` turns the slots into UnitSpecs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..messages import render
from ..messages.cmdline import HAS_LOG_LEVEL
from ..profiles.cmdline_rules import CmdlineRules
from .numbers import as_c_int, memparse, simple_strtoull


@dataclass
class Slot:
    """The fields of one `struct ubd` that option parsing writes."""

    file: bytes | None = None
    backing: bytes | None = None
    size: int | None = None
    serial: bytes | None = None
    readonly: bool = False      # boot_openflags.w == 0
    sync: bool = False          # boot_openflags.s
    no_cow: bool = False
    shared: bool = False
    no_trim: bool = False


@dataclass
class ParserState:
    """Everything the driver's parse functions keep between options, plus the log."""

    rules: CmdlineRules
    family: str
    slots: list[Slot]
    global_sync: bool = False            # global_openflags.s (ubd=sync)
    fake_major: int | None = None        # [2.4] ubd=<n>
    messages: list[str] = field(default_factory=list)

    def say(self, msg_id: str, *args: object) -> None:
        """Log one printk, cut where the kernel's printk cuts a long record (6.1 vprintk_store():
        the formatted text, level prefix included, is limited to printk_text_max bytes)."""
        line = render(msg_id, self.family, *args)
        limit = self.rules.printk_text_max
        if limit is not None:
            data = line.encode("utf-8", "surrogateescape")
            keep = limit - (2 if msg_id in HAS_LOG_LEVEL else 0)
            if len(data) > keep:
                line = data[:keep].decode("utf-8", "surrogateescape")
        self.messages.append(line)


def text(data: bytes) -> str:
    """How a C string argument appears in ubdsim's str world (undecodable bytes kept)."""
    return data.decode("utf-8", "surrogateescape")


def _char_at(opt: bytes, index: int) -> int:
    """`opt[index]` as C sees it: the terminating NUL past the end."""
    return opt[index] if index < len(opt) else 0


# --- unit numbers -------------------------------------------------------------------------

def _unit_one_char(opt: bytes) -> tuple[int, int]:
    """[2.4] ubd_setup(): the unit is exactly one character, '0'-'9' or 'a'-'z'."""
    ch = _char_at(opt, 0)
    if 0x30 <= ch <= 0x39:
        return ch - 0x30, 1
    if 0x61 <= ch <= 0x7A:
        return ch - 0x61, 1
    return -1, 0


def _unit_strtoul_or_letter(opt: bytes) -> tuple[int, int]:
    """ubd_kern.c parse_unit() [6.1]: a base-0 number stored into an int (so 2**32-1 is -1
    and 2**32 is 0), or one letter 'a'-'z'."""
    ch = _char_at(opt, 0)
    if 0x30 <= ch <= 0x39:
        value, end = simple_strtoull(opt)
        return as_c_int(value), end
    if 0x61 <= ch <= 0x7A:
        return ch - 0x61, 1
    return -1, 0


UNIT_PARSERS: dict[str, Callable[[bytes], tuple[int, int]]] = {
    "one_char": _unit_one_char,
    "strtoul_or_letter": _unit_strtoul_or_letter,
}

# --- flags ---------------------------------------------------------------------------------

FLAGS_OK, FLAG_UNKNOWN, FLAGS_TOO_MANY, FLAGS_NO_EQ = range(4)


@dataclass
class Flags:
    status: int
    end: int                   # index just after the '=' when status is FLAGS_OK
    readonly: bool = False
    sync: bool = False


def _apply_flag(letter: int, flags: Flags, slot: Slot) -> None:
    """r and s go to the local openflags; d, c and t are written to the unit at once, which
    is why they survive a rejected option (ubd_setup_common() [6.1])."""
    if letter == ord("r"):
        flags.readonly = True
    elif letter == ord("s"):
        flags.sync = True
    elif letter == ord("d"):
        slot.no_cow = True
    elif letter == ord("c"):
        slot.shared = True
    elif letter == ord("t"):
        slot.no_trim = True


def scan_flags(opt: bytes, pos: int, slot: Slot, rules: CmdlineRules, sync: bool) -> Flags:
    """The flag letters between the unit and '='; `sync` is global_openflags.s (ubd=sync)."""
    flags = Flags(FLAGS_OK, pos, sync=sync)
    letters = rules.flag_letters.encode()
    if rules.flags_in_order:
        # [2.4]: `if (*str == 'r') ...; if (*str == 's') ...; if (*str++ != '=')`
        for letter in letters:
            if _char_at(opt, pos) == letter:
                _apply_flag(letter, flags, slot)
                pos += 1
        flags.status, flags.end = (FLAGS_OK, pos + 1) if _char_at(opt, pos) == ord("=") else (FLAG_UNKNOWN, pos)
        return flags
    # [6.1]: for (i = 0; i < sizeof("rscdt="); i++) switch (*str) ...
    for _ in range(rules.max_flag_chars + 1):
        ch = _char_at(opt, pos)
        if ch == ord("="):
            flags.end = pos + 1
            return flags
        if ch == 0 or ch not in letters:
            flags.status = FLAG_UNKNOWN
            return flags
        _apply_flag(ch, flags, slot)
        pos += 1
    flags.status = FLAGS_TOO_MANY if _char_at(opt, pos) == ord("=") else FLAGS_NO_EQ
    return flags

# --- the value: file, backing, third field ---------------------------------------------------


def split_value(value: bytes, rules: CmdlineRules) -> list[bytes | None]:
    """Cut `file[,backing[,third]]` as the kernel does: 2.4 strchr(',') (the last field keeps
    the rest), 6.1 strsep(",:") three times (anything after the third field is dropped)."""
    fields: list[bytes | None] = []
    rest: bytes | None = value
    for index in range(rules.value_fields):
        if rest is None:
            fields.append(None)
            continue
        last = index == rules.value_fields - 1
        cut = -1 if last and rules.last_field_keeps_rest else \
            next((i for i, ch in enumerate(rest) if ch in rules.separators), -1)
        if cut < 0:
            fields.append(rest)
            rest = None
        else:
            fields.append(rest[:cut])
            rest = rest[cut + 1:]
    if rules.empty_fields_absent:
        fields = [f if f else None for f in fields]
    return fields + [None] * (3 - len(fields))


def parse_size(raw: bytes) -> int | None:
    """[resize] the third field: memparse() with nothing left over, else None (rejected)."""
    value, end = memparse(raw)
    return value if end == len(raw) and end > 0 else None

# --- general options: ubd=sync, ubd=<major> --------------------------------------------------


def _major_assign(state: ParserState, value: bytes) -> None:
    """[2.4] ubd=<n>: a fake major, base 0, once."""
    major, end = simple_strtoull(value)
    if end != len(value):
        state.say("cmdline.bad_major")
    elif state.fake_major is not None:
        state.say("cmdline.major_twice")
    else:
        state.fake_major = as_c_int(major)
        state.say("cmdline.fake_major", state.fake_major)


def _major_unsupported(state: ParserState, value: bytes) -> None:
    """[6.1] anything but sync: a warning, no effect."""
    state.say("cmdline.fake_major_gone")


FAKE_MAJOR: dict[str, Callable[[ParserState, bytes], None]] = {
    "assign": _major_assign,
    "unsupported": _major_unsupported,
}


def general_option(state: ParserState, value: bytes) -> None:
    """`ubd=...`: `sync` makes later units O_SYNC; anything else is about the fake major."""
    if value == b"sync":
        state.global_sync = True
    else:
        FAKE_MAJOR[state.rules.fake_major](state, value)

# --- the two handler styles ------------------------------------------------------------------


def _commit(slot: Slot, fields: list[bytes | None], size: int | None, flags: Flags,
            rules: CmdlineRules) -> None:
    file, backing, third = fields
    slot.file, slot.backing = file, backing
    slot.size = size
    slot.serial = third if rules.third_field == "serial" else None
    slot.readonly, slot.sync = flags.readonly, flags.sync


def ubd_setup_2_4(state: ParserState, opt: bytes) -> None:
    """[2.4] ubd_setup(): prints one `ubd_setup : ...` line per problem and goes on booting."""
    rules = state.rules
    if opt[:1] == b"=":
        general_option(state, opt[1:])
        return
    if _char_at(opt, 0) < ord("0"):
        state.say("cmdline.below_zero")       # quirk: printed, then the syntax check fails too
    unit, pos = UNIT_PARSERS[rules.unit_syntax](opt)
    if unit < 0:
        state.say("cmdline.syntax_invalid")
        return
    if unit >= rules.max_units:
        state.say("cmdline.index_range", rules.max_units)
        return
    slot = state.slots[unit]
    if slot.file is not None:
        state.say("cmdline.configured")
        return
    flags = scan_flags(opt, pos, slot, rules, state.global_sync)
    if flags.status != FLAGS_OK:
        state.say("cmdline.expected_eq")
        return
    fields = split_value(opt[flags.end:], rules)
    size = None
    if rules.third_field == "size" and fields[2] is not None:
        size = parse_size(fields[2])
        if size is None:
            state.say("cmdline.bad_size", text(fields[2]))
            return
    _commit(slot, fields, size, flags, rules)


_FLAG_ERRORS = {FLAG_UNKNOWN: "cmdline.err.flag", FLAGS_TOO_MANY: "cmdline.err.too_many_flags",
                FLAGS_NO_EQ: "cmdline.err.missing_eq"}


def _setup_common_6_1(state: ParserState, opt: bytes) -> tuple[str, bytes] | None:
    """ubd_kern.c ubd_setup_common() [6.1]: None, or (error_out id, text ubd_setup() prints).
    The printed text is the option as strsep() left it: cut at the first separator once the
    value has been split."""
    rules = state.rules
    if opt[:1] == b"=":
        general_option(state, opt[1:])
        return None
    unit, pos = UNIT_PARSERS[rules.unit_syntax](opt)
    if unit < 0:
        return "cmdline.err.unit", opt
    if unit >= rules.max_units:
        return "cmdline.err.range", opt
    slot = state.slots[unit]
    if slot.file is not None:
        return "cmdline.err.configured", opt
    flags = scan_flags(opt, pos, slot, rules, state.global_sync)
    if flags.status != FLAGS_OK:
        return _FLAG_ERRORS[flags.status], opt
    value = opt[flags.end:]
    fields = split_value(value, rules)
    if fields[1] is not None and slot.no_cow:
        cut = next((i for i, ch in enumerate(value) if ch in rules.separators), len(value))
        return "cmdline.err.d_and_cow", opt[:flags.end + cut]
    _commit(slot, fields, None, flags, rules)
    return None


def ubd_setup_error_out(state: ParserState, opt: bytes) -> None:
    """ubd_kern.c ubd_setup() [6.1]: one `Failed to initialize device with ...` line."""
    failure = _setup_common_6_1(state, opt)
    if failure is not None:
        msg_id, shown = failure
        state.say("cmdline.setup_failed", text(shown), render(msg_id, state.family))


def udb_setup(state: ParserState, opt: bytes) -> None:
    """ubd_kern.c udb_setup() [6.1]: a typo catcher, nothing else."""
    state.say("cmdline.udb_typo", text(opt))


SETUP_STYLES: dict[str, Callable[[ParserState, bytes], None]] = {
    "ubd_setup_2_4": ubd_setup_2_4,
    "error_out_6_1": ubd_setup_error_out,
}
