"""COMMAND_LINE_SIZE: linux.uml refuses a command line that does not fit, and so does ubdsim.

UML builds its command line from argv before the kernel starts (arch/um/kernel/um_arch.c
linux_main() -> uml_checksetup() -> add_arg()): a word is refused when
`strlen(command_line) + strlen(word) + 1 > COMMAND_LINE_SIZE` (4096), so the separating space
is not counted and a line of exactly 4096 bytes still boots. Then UML writes
`add_arg: Too many command line arguments!` on stderr and exits with status 1: nothing on
stdout, no kernel log.

Every boot goes through kernel_ref.launcher, whose own words (mem=, root=, ..., uml_dir=) come
first on the kernel's command line: they are read back from /proc/cmdline once and given to
ubdsim's model in front of the test's words, so both sides count the same line. A small
shell wrapper (the launcher's `prefix`) keeps linux.uml's stdout, stderr and exit status apart.
For each case ubdsim's model names the longest word that fits; linux.uml must boot with it and
refuse one byte more.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from kernel_ref import launcher
from ubdsim.cmdline import parse_command_line
from ubdsim.cmdline.lexer import argv_words, build_command_line
from ubdsim.profiles import get_profile

from .oracle import BOOT_TIMEOUT, PARALLEL_BOOTS

P61 = get_profile("6.1")
UBDSIM = [sys.executable, "-m", "ubdsim"]
LINE_6_1 = b"add_arg: Too many command line arguments!\n"
SIZE = 4096                       # arch/um/include/asm/setup.h COMMAND_LINE_SIZE

# linux.uml's stdout goes to a file and is copied to the launcher's console once it has
# exited, so that a refused boot's stdout is seen too; $2 (when not empty) is put in as
# argv[1], before the launcher's words.
_WRAPPER = """dir=$1; first=$2; shift 2
if [ -n "$first" ]; then bin=$1; shift; set -- "$bin" "$first" "$@"; fi
"$@" >"$dir/stdout" 2>"$dir/stderr"
echo $? >"$dir/status"
cat "$dir/stdout"
"""


@dataclass(frozen=True)
class Outcome:
    """What one linux.uml run gave: its exit status, stdout, stderr, and /proc/cmdline as
    the guest saw it (None when the kernel never started)."""
    status: int
    stdout: bytes
    stderr: bytes
    cmdline: str | None

    @property
    def booted(self) -> bool:
        return self.cmdline is not None


def _boot(words: list[str], first: str = "") -> Outcome:
    launcher.require_kernel()
    with tempfile.TemporaryDirectory(prefix="ubdsim-cls-") as tmp:
        cmdline = os.path.join(tmp, "cmdline")
        wrapper = ["/bin/sh", "-c", _WRAPPER, "sh", tmp, first]
        try:
            launcher.boot(words, script=f"cat /proc/cmdline > {cmdline}\n", cwd=tmp,
                          timeout=BOOT_TIMEOUT, prefix=wrapper)
        except launcher.KernelUnavailable:
            pass                  # no init ran: the outcome below says what happened

        def read(name: str) -> bytes:
            with open(os.path.join(tmp, name), "rb") as data:
                return data.read()

        seen = read("cmdline").decode().rstrip("\n") if os.path.exists(cmdline) else None
        return Outcome(int(read("status")), read("stdout"), read("stderr"), seen)


def _fits(words: list[str]) -> bool:
    return parse_command_line(words, P61).refusal is None


def _longest(make, prefix: list[str]) -> int:
    """The longest n for which ubdsim lets `prefix + make(n)` through (its add_arg() model;
    longer never fits once shorter does not)."""
    low, high = 0, 2 * SIZE
    assert _fits(prefix + make(low)) and not _fits(prefix + make(high))
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if _fits(prefix + make(mid)) else (low, mid)
    return low


# name -> the test's words around one word of n bytes; the relation to the one-word case
# that the source predicts (um_arch.c linux_main()/uml_checksetup()/add_arg()).
CASES: dict[str, tuple] = {
    # console=tty0 (DEFAULT_COMMAND_LINE_CONSOLE) is appended after the word
    "one word": (lambda n: ["x" * n], 0),
    # an empty word still costs its separating space
    "empty word first": (lambda n: ["", "x" * n], -1),
    # each word costs its bytes and one space
    "three words": (lambda n: ["a" * 1000, "b" * 1000, "x" * n], -2002),
    # a console= word stops linux_main() appending console=tty0
    "console given": (lambda n: ["console=tty0", "x" * n], 0),
    # xterm_setup() clears *add: the word never reaches the line
    "xterm= not counted": (lambda n: ["xterm=xterm", "x" * n], 0),
    # set_umid_arg() clears *add while no umid is set
    "umid= not counted": (lambda n: ["umid=ubdsimcls", "x" * n], 0),
    # a 64-byte umid is refused (-E2BIG) and leaves umid unset: the next umid= is kept off too
    "too long umid= leaves the next out": (lambda n: ["umid=" + "u" * 64, "umid=b", "x" * n], 0),
    # once a umid is set, a second umid= word goes on the line (and UML warns "umid already set")
    "second umid= counted": (lambda n: ["umid=a", "umid=b", "x" * n], -len(" umid=b")),
}


@pytest.fixture(scope="module")
def prefix_words() -> list[str]:
    """The launcher's own words, as linux.uml put them on its command line: a boot with no
    words of ours shows them in /proc/cmdline, followed by the console=tty0 that linux_main()
    adds because none of them starts with console=."""
    seen = _boot([]).cmdline
    assert seen is not None, "linux.uml did not boot with the launcher's words alone"
    words = seen.split(" ")
    assert words[-1] == "console=tty0" and any(w.startswith("root=") for w in words), seen
    return words[:-1]


@pytest.fixture(scope="module")
def boundaries(prefix_words: list[str]) -> dict[str, tuple[int, Outcome, Outcome]]:
    """For each case: ubdsim's longest word, and linux.uml run with it and with one byte more."""
    plan = {name: _longest(make, prefix_words) for name, (make, _) in CASES.items()}
    runs = [words for name, n in plan.items() for words in (CASES[name][0](n), CASES[name][0](n + 1))]
    with ThreadPoolExecutor(max_workers=PARALLEL_BOOTS) as pool:
        outcomes = list(pool.map(_boot, runs))
    return {name: (n, outcomes[2 * i], outcomes[2 * i + 1]) for i, (name, n) in enumerate(plan.items())}


def test_one_word_boundary_is_the_formula(prefix_words, boundaries) -> None:
    """The launcher's line, a space, the word, " console=tty0": at most COMMAND_LINE_SIZE bytes
    (the add_arg() test lets the NUL fall one byte past the buffer)."""
    n, fits, refused = boundaries["one word"]
    assert n == SIZE - len(" ".join(prefix_words)) - len(" ") - len(" console=tty0")
    assert fits.booted and not refused.booted


@pytest.mark.parametrize("name", CASES)
def test_linux_uml_refuses_exactly_where_ubdsim_does(boundaries, name: str) -> None:
    n, fits, refused = boundaries[name]
    assert fits.booted and fits.status == 0, f"{name}: linux.uml did not boot with {n} bytes: {fits}"
    assert not refused.booted, f"{name}: linux.uml booted with {n + 1} bytes"
    assert refused.status == 1 and refused.stdout == b""
    assert refused.stderr.endswith(LINE_6_1)
    if name != "second umid= counted":            # set_umid_arg() warns first: not modelled
        assert refused.stderr == LINE_6_1
    assert n - boundaries["one word"][0] == CASES[name][1]


@pytest.mark.parametrize("name", CASES)
def test_what_linux_uml_put_on_its_line(prefix_words, boundaries, name: str) -> None:
    """At the boundary the guest's /proc/cmdline is ubdsim's line (the launcher's words, ours
    less those uml_checksetup() kept off, console=tty0 where none was given), cut to 4095
    bytes: boot_command_line is a strscpy() of the 4096-byte line."""
    n, fits, _ = boundaries[name]
    words = prefix_words + CASES[name][0](n)
    built = build_command_line(argv_words(words), P61.cmdline)
    assert built.fits and built.length == SIZE
    line = built.line + (b"" if any(w.startswith("console=") for w in words) else b" console=tty0")
    assert len(line) == SIZE
    kernel = fits.cmdline.encode()
    assert len(kernel) == SIZE - 1
    start = len(" ".join(prefix_words))          # the launcher's paths differ from boot to boot
    assert kernel[start:] == line[start:SIZE - 1]


def test_first_word_starting_with_a_space_is_skipped(prefix_words) -> None:
    """linux_main(): `if ((i == 1) && (argv[i][0] == ' ')) continue;` argv[1] is dropped
    unread, however long; the same word as argv[1] without the space is refused."""
    skipped, counted = " " + "x" * 5000, "x" * 5000
    with ThreadPoolExecutor(max_workers=PARALLEL_BOOTS) as pool:
        kernel_skipped, kernel_counted = pool.map(lambda first: _boot([], first), [skipped, counted])
    assert kernel_skipped.booted and "x" * 10 not in kernel_skipped.cmdline
    assert _fits([skipped, *prefix_words])
    assert (kernel_counted.status, kernel_counted.stdout, kernel_counted.stderr) == (1, b"", LINE_6_1)
    assert not _fits([counted, *prefix_words])
    assert parse_command_line([" ubd0=skipped", "ubd1=kept"], P61).units[0].file == "root_fs"


def _ubdsim(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*UBDSIM, "parse", *argv], capture_output=True)


def test_ubdsim_parse_refuses_as_linux_uml_does(boundaries) -> None:
    """`ubdsim parse --kernel 6.1 WORD...` counts what `linux WORD...` counts: the words, then
    the root=98:0 and console=tty0 that linux_main() appends: 4096 - 10 - 13 = 4073 bytes for
    one word. One byte more: linux.uml's stdout, stderr and exit status, with or without --json."""
    _, _, kernel = boundaries["one word"]
    longest = _longest(lambda n: ["x" * n], [])
    assert longest == SIZE - len(" root=98:0") - len(" console=tty0")
    assert _longest(lambda n: ["root=/dev/ubda", "x" * n], []) == longest + len(" root=98:0") \
        - len("root=/dev/ubda ")
    fits = _ubdsim("--kernel", "6.1", "x" * longest)
    assert fits.returncode == 0 and fits.stdout.startswith(b"unit ") and fits.stderr == b""
    for json in ([], ["--json"]):
        done = _ubdsim("--kernel", "6.1", *json, "x" * (longest + 1))
        assert (done.returncode, done.stdout, done.stderr) == (kernel.status, kernel.stdout, kernel.stderr)


def test_refusal_parses_nothing() -> None:
    """UML exits before the kernel starts: no option is parsed, no unit configured."""
    result = parse_command_line(["ubd1=a", "ubd=sync", "x" * SIZE], P61)
    assert result.refusal is not None and result.refusal.status == 1
    assert (result.units, result.messages, result.options) == ({}, [], [])
    assert result.refusal.text == LINE_6_1.decode().rstrip("\n") and result.refusal.stream == "stderr"


@pytest.mark.parametrize("profile", ["2.4", "2.4-stock"])
def test_2_4_add_arg(profile: str) -> None:
    """No 2.4 kernel runs here; from the 2.4-era source: arch/um/kernel/user_util.c add_arg(),
    `#define COMMAND_LINE_SIZE _POSIX_ARG_MAX` (4096), the same test, then
    `printf("add_arg: Too much command line!\\n"); exit(1);` (stdout); um_arch.c linux_main()
    appends "root=/dev/ubd0" and no console word; umid= is always kept off the line."""
    p = get_profile(profile)
    longest = SIZE - len(" root=/dev/ubd0")
    assert parse_command_line(["x" * longest], p).refusal is None
    assert parse_command_line(["umid=a", "umid=b", "x" * longest], p).refusal is None
    refused = parse_command_line(["x" * (longest + 1)], p).refusal
    assert (refused.text, refused.stream, refused.status) == ("add_arg: Too much command line!", "stdout", 1)
    done = _ubdsim("--kernel", profile, "x" * (longest + 1))
    assert (done.returncode, done.stdout, done.stderr) == (1, b"add_arg: Too much command line!\n", b"")


def test_ubdsim_run_refuses_before_anything_runs(boundaries, tmp_path) -> None:
    """`ubdsim run --kernel 6.1`: one byte over, linux.uml's exit status and stderr line; the
    command never runs and no --log file is created (UML exits before the kernel starts)."""
    _, _, kernel = boundaries["one word"]
    longest = SIZE - len(" root=98:0") - len(" console=tty0")
    ran, log = tmp_path / "ran", tmp_path / "k.log"
    for n, status in ((longest + 1, kernel.status), (longest, 0)):
        done = subprocess.run([*UBDSIM, "run", "--kernel", "6.1", "--log", str(log), "x" * n,
                               "--", "touch", str(ran)], capture_output=True)
        assert done.returncode == status
        if n > longest:
            assert (done.stdout, done.stderr) == (kernel.stdout, kernel.stderr)
            assert not ran.exists() and not log.exists()
    assert ran.exists() and log.exists()


def test_ubdsim_serve_refuses_a_line_uml_would_not_boot(tmp_path) -> None:
    """`serve` (and `vm`, through the same open_exports()) boots nothing: one line, exit 1."""
    sock = tmp_path / "s.sock"
    done = subprocess.run([*UBDSIM, "serve", "--kernel", "6.1", "--unix", str(sock), "x" * SIZE],
                          capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr == b"ubdsim serve: error: " + LINE_6_1
    assert not sock.exists()
