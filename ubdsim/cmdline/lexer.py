"""Cutting a UML command line into the options that `__setup()` handlers receive.

UML builds its command line from argv before the kernel starts (arch/um/kernel/um_arch.c
linux_main()/uml_checksetup()/add_arg()): words go in joined by single spaces, except those a
UML-side `__uml_setup()` handler keeps off the line, and a line that would not fit in
COMMAND_LINE_SIZE makes add_arg() print one line and exit(1) (`build_command_line()`). Then the
generic kernel cuts the line into options. The cutting differs by era, and it decides what a
handler sees: `ubd 0=x` is two options, quotes may or may not be stripped, and in 6.1
everything after `--` goes to init. Each splitter below works on a NUL-terminated bytearray
exactly as the C code does (it writes NULs and moves bytes in place), because that is the only
way to reproduce its corner cases faithfully.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..profiles.cmdline_rules import CmdlineRules

# lib/ctype.c [6.1]: isspace() is true for \t \n \v \f \r, space, and Latin-1 NBSP (0xA0).
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")


@dataclass(frozen=True)
class SplitLine:
    """The options the kernel checks against its `__setup()` table, and what it hands to init."""

    options: list[bytes]
    init_args: list[bytes]      # after "--" [6.1]: never seen by ubd_setup()


def to_bytes(text: str | bytes) -> bytes:
    """Bytes of one word: str is encoded as the OS would (surrogateescape keeps non-UTF-8 bytes);
    a lone surrogate that surrogateescape cannot carry is kept via surrogatepass so no input
    raises. A C string ends at its first NUL, so a word does too."""
    if isinstance(text, str):
        try:
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "surrogatepass")
    else:
        data = bytes(text)
    return data.split(b"\0", 1)[0]


def argv_words(words: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    """argv[1..] as the C strings linux_main() receives. A single string (an already-joined
    command line) stands for the words it is cut into at single spaces."""
    if isinstance(words, (str, bytes, bytearray)):
        return to_bytes(words).split(b" ")
    return [to_bytes(word) for word in words]


@dataclass(frozen=True)
class CommandLine:
    """What linux_main() made of argv[1..] before the kernel starts."""

    line: bytes     # the words add_arg() joined; linux_main()'s root=/console= defaults are
                    # counted but not included (they are never ubd options)
    length: int     # strlen(command_line) when add_arg() finished or gave up, defaults included
    fits: bool      # False: add_arg() refused a word (or a default) and UML exit()ed


def build_command_line(words: list[bytes], rules: CmdlineRules) -> CommandLine:
    """um_arch.c linux_main() [6.1] (same loop in 2.4): for i = 1 .. argc-1, skip argv[1] if
    it starts with a space; uml_checksetup() may clear `add` (rules.swallowed_prefixes, umid=);
    add_arg() the rest, then the default root= and console= words when no word set them.

    add_arg() refuses a word when `strlen(command_line) + strlen(arg) + 1 > COMMAND_LINE_SIZE`:
    the `+ 1` is for the NUL, the separating space is not counted, so a line of exactly
    COMMAND_LINE_SIZE bytes is accepted (its NUL lands one byte past the buffer) and one word
    alone may have COMMAND_LINE_SIZE - 1 bytes. An empty word adds only its space (none at
    the start of the line). The first refusal ends everything: UML exits there."""
    size = rules.command_line_size
    added: list[bytes] = []
    length = 0
    umid_set = False
    have_root = have_console = False

    def add_arg(arg: bytes) -> bool:
        nonlocal length
        if length + len(arg) + 1 > size:
            return False
        length += (1 if length > 0 else 0) + len(arg)
        return True

    for index, word in enumerate(words, start=1):
        if index == 1 and word[:1] == b" ":
            continue
        # uml_checksetup(): every __uml_setup() whose name prefixes the word runs
        have_root = have_root or word.startswith(b"root=")            # uml_root_setup()
        have_console = have_console or word.startswith(b"console=")   # uml_console_setup() [6.1]
        if word.startswith(rules.swallowed_prefixes):                 # xterm_setup(), ...
            continue
        if word.startswith(b"umid="):                                 # set_umid_arg()
            if rules.umid_swallowed == "always" or not umid_set:
                # [6.1] set_umid() refuses a name longer than UMID_LEN - 1 and leaves umid unset
                umid_set = umid_set or len(word) - len(b"umid=") <= rules.umid_max_len
                continue
        if not add_arg(word):
            return CommandLine(_joined(added), length, fits=False)
        added.append(word)
    line = _joined(added)
    defaults = [] if have_root else [rules.default_root]
    if rules.default_console is not None and not have_console:
        defaults.append(rules.default_console)
    for word in defaults:
        if not add_arg(word):
            return CommandLine(line, length, fits=False)
    return CommandLine(line, length, fits=True)


def _joined(words: list[bytes]) -> bytes:
    """add_arg()'s strcat()s: a space before each word once the line is not empty, so leading
    empty words leave no trace and later ones leave their space."""
    start = 0
    while start < len(words) and not words[start]:
        start += 1
    return b" ".join(words[start:])


def _cstr(buf: bytearray, at: int) -> bytes:
    end = buf.index(0, at)
    return bytes(buf[at:end])


def _next_arg(buf: bytearray, args: int) -> tuple[int, int, int | None]:
    """lib/cmdline.c next_arg() [6.1]: returns (next args, param, val); writes NULs in buf."""
    equals = 0
    in_quote = quoted = False
    if buf[args] == ord('"'):
        args += 1
        in_quote = quoted = True
    i = 0
    while buf[args + i]:
        ch = buf[args + i]
        if ch in _KERNEL_SPACE and not in_quote:
            break
        if equals == 0 and ch == ord("="):
            equals = i
        if ch == ord('"'):
            in_quote = not in_quote
        i += 1
    param = args
    val: int | None = None
    if equals:
        buf[args + equals] = 0
        val = args + equals + 1
        if buf[val] == ord('"'):          # don't include quotes in value
            val += 1
            if buf[args + i - 1] == ord('"'):
                buf[args + i - 1] = 0
    if quoted and i > 0 and buf[args + i - 1] == ord('"'):
        buf[args + i - 1] = 0
    if buf[args + i]:
        buf[args + i] = 0
        args += i + 1
    else:
        args += i
    while buf[args] in _KERNEL_SPACE:     # skip_spaces()
        args += 1
    return args, param, val


def _repair_env_string(buf: bytearray, param: int, val: int | None) -> None:
    """init/main.c repair_env_string() [6.1]: put `param=val` back together in place, because
    obsolete_checksetup() hands the __setup() handler the whole option."""
    if val is None:
        return
    plen = buf.index(0, param) - param
    if val == param + plen + 1:
        buf[val - 1] = ord("=")
    elif val == param + plen + 2:         # param="val": the opening quote was skipped
        buf[val - 2] = ord("=")
        tail = buf.index(0, val) + 1
        buf[val - 1:tail - 1] = buf[val:tail]


def split_parse_args(line: bytes) -> SplitLine:
    """kernel/params.c parse_args() + init/main.c unknown_bootoption() [6.1]."""
    buf = bytearray(line) + b"\0"
    args = 0
    while buf[args] in _KERNEL_SPACE:
        args += 1
    options: list[bytes] = []
    while buf[args]:
        args, param, val = _next_arg(buf, args)
        if val is None and _cstr(buf, param) == b"--":
            # start_kernel() parses the rest with set_init_arg(), which stops at a second "--"
            return SplitLine(options, split_parse_args(_cstr(buf, args)).options)
        _repair_env_string(buf, param, val)
        options.append(_cstr(buf, param))
    return SplitLine(options, [])


def split_parse_options(line: bytes) -> SplitLine:
    """init/main.c parse_options() [2.4]: cut at spaces only, a quoted stretch may hold
    spaces, and the quotes stay in the option (2.4 never strips them)."""
    options: list[bytes] = []
    pos: int | None = 0
    while pos is not None:
        start = pos
        quote = line.find(b'"', start)
        nxt = line.find(b" ", start)
        while nxt != -1 and quote != -1 and quote < nxt:
            nxt = line.find(b'"', quote + 1)
            if nxt != -1:
                quote = line.find(b'"', nxt + 1)
                nxt = line.find(b" ", nxt + 1)
        if nxt == -1:
            options.append(line[start:])
            pos = None
        else:
            options.append(line[start:nxt])
            pos = nxt + 1
    return SplitLine(options, [])


SPLITTERS: dict[str, Callable[[bytes], SplitLine]] = {
    "parse_args": split_parse_args,
    "parse_options": split_parse_options,
}
