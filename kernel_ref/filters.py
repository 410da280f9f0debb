"""Which kernel-log lines are the ubd driver's, and how to make them comparable.

qemu-iotests style: a transcript is only useful once the parts that change from run to run
(working directory, pids, the current time) are replaced by stable placeholders. The two
backends run a scenario in the same directory, so live comparisons need only the pid and time
filters; the directory filter is what lets a golden capture from another run compare equal.

From: the printk/cow_printf texts of `arch/um/drivers/ubd_kern.c`, `cow_user.c`,
`ubd_user.c` and `arch/um/os-Linux/file.c` os_lock_file() [6.1]. A line is the driver's
when it starts with one of these texts (the kernel prints no timestamp prefix here).
"""
from __future__ import annotations

import re

# Beginnings of every message the ubd driver, its COW code and the host lock helper print
# [6.1]. Kept as literal prefixes so that a new kernel text shows up as a missing line, not
# as a silently wrong match.
UBD_MESSAGE_PREFIXES: tuple[str, ...] = (
    # ubd_kern.c ubd_setup_common() / ubd_setup() / udb_setup() / fakehd()
    "The fake_ide option has been removed",
    "fake major not supported any more",
    "Failed to initialize device with ",
    # ubd_kern.c backing_file_mismatch() / path_requires_switch()
    "Failed to get modification time of backing ",
    "Failed to get size of backing file ",
    "Size mismatch (",
    "mtime mismatch (",
    "Couldn't stat '",
    # os-Linux/file.c os_file_modtime() / os_file_size(), called from the paths above
    "Couldn't stat \"",
    "Backing file mismatch - ",
    # ubd_kern.c open_ubd_file() / create_cow_file() / ubd_open_dev()
    "Not locking \"",
    "Failed to lock '",
    "Failed to read COW header from COW file ",
    "Switching backing file to '",
    "Switch failed, errno = ",
    "Open of COW file '",
    "Creating \"",
    "Failed to open '",
    "Failed to vmalloc COW bitmap",
    # ubd_kern.c ubd_init() / ubd_driver_init()
    "Failed to initialize ubd ",
    "ubd: Synchronous mode",
    "um_request_irq failed",
    "write to io thread failed",
    "spurious interrupt in ",
    # cow_user.c absolutize() / write_cow_header() / read_cow_header() / init_cow_file()
    "absolutize : ",
    "write_cow_header - ",
    "read_cow_header - ",
    "Backing file name \"",
    "cow bitmap lseek failed",
    "Write of bitmap to new COW file ",
    # ubd_user.c start_io_thread()
    "start_io_thread - ",
    # os-Linux/file.c os_lock_file()
    "F_SETLK failed, file already locked by pid ",
)

# Messages whose first word is variable: ubd_kern.c ubd_init() "%s: Can't open \"%s\": ..."
# (a device name) and udb_setup() "udb%s specified on command line is almost certainly a
# ubd -> udb TYPO".
_VARIABLE_START = re.compile(r"^(ubd[a-z]*: Can't open \"|udb.* -> udb TYPO)")


def is_ubd_line(line: str) -> bool:
    """True for a line the ubd driver printed (see UBD_MESSAGE_PREFIXES)."""
    return line.startswith(UBD_MESSAGE_PREFIXES) or bool(_VARIABLE_START.match(line))


def ubd_lines(text: str) -> list[str]:
    """The driver's lines of a kernel log, in order, trailing whitespace removed."""
    return [line.rstrip() for line in text.splitlines() if is_ubd_line(line.rstrip())]


_NUMBER = re.compile(r"(?<![0-9])[0-9]{9,11}(?![0-9])")


class Normaliser:
    """Replaces a run's volatile values with placeholders (iotests' _filter_* idea).

    `work` is the scenario's working directory (absolute), `pids` maps a pid to its
    placeholder name (the lock helpers'), `now` is the run's start time: any 9-11 digit
    number within a day of it is a fresh mtime (a copy without -p) and becomes `<NOW>`.
    """

    def __init__(self, work: str, pids: dict[int, str] | None = None, now: float | None = None):
        self.work = work.rstrip("/")
        self.pids = dict(pids or {})
        self.now = now

    def line(self, line: str) -> str:
        line = line.replace(self.work + "/", "$WORK/").replace(self.work, "$WORK")
        for pid, name in self.pids.items():
            line = re.sub(rf"\bpid {pid}\b", f"pid <{name}>", line)
        if self.now is not None:
            line = _NUMBER.sub(self._time_or_number, line)
        return line

    def lines(self, lines: list[str]) -> list[str]:
        return [self.line(line) for line in lines]

    def _time_or_number(self, match: re.Match[str]) -> str:
        value = int(match.group(0))
        return "<NOW>" if abs(value - self.now) < 86400 else match.group(0)

    def path_bytes(self, path: bytes) -> bytes:
        """A backing path stored in a COW header, with the working directory replaced."""
        work = self.work.encode()
        if path == work or path.startswith(work + b"/"):
            return b"$WORK" + path[len(work):]
        return path
