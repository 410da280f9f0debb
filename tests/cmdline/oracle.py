"""Boot linux.uml on a command line and read back what the ubd driver printed.

Each boot goes through kernel_ref.launcher (the words come last on the kernel's command
line); the guest script dumps the kernel log with busybox's `dmesg -r` (raw bytes: util-linux
dmesg would escape non-ASCII) on its stdout, which the launcher hands back. A boot takes
~1.2 s. (Attribute boots do more first: see _ATTR_SCRIPT.)
Each boot runs in its own empty folder so that no file named on the command line exists and
unit 0's default `root_fs` is absent too.

Two kinds of lines are kept:
- parse-time lines: everything between `Kernel command line: ...` and `Unknown kernel command
  line parameters ...` (always printed, because mem= and uml_dir= are not kernel parameters);
- init lines of the ubd driver: `ubd: Synchronous mode`, `Failed to initialize ubd device N :...`
  and `Couldn't stat "..."`, which show which units ended up configured and their backing.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kernel_ref import launcher
from ubdsim.cmdline import ParseResult, parse_command_line
from ubdsim.profiles import get_profile

BOOT_TIMEOUT = 120        # seconds; a boot normally takes ~1.2 s
PARALLEL_BOOTS = 2        # the machine has 2 cores shared by everyone

_LEVEL = re.compile(rb"^<\d+>")
_INIT_LINE = re.compile(r"^(ubd: Synchronous mode$|Failed to initialize ubd device |Couldn't stat \")")


@dataclass(frozen=True)
class Capture:
    parse_lines: list[str]
    init_lines: list[str]
    devices: list[str] | None = None    # attribute boots: one line per /sys/block/ubd* disk
    host_files: list[str] | None = None  # attribute boots: how linux.uml holds each file open

    def as_json(self) -> dict:
        record = {"parse_lines": self.parse_lines, "init_lines": self.init_lines}
        if self.devices is not None:
            record["devices"] = self.devices
            record["host_files"] = self.host_files
        return record


# Attribute boots: the named files exist (1 MiB, sparse; root_fs too), so every configured
# unit becomes a disk. The guest mounts its own sysfs and devtmpfs (guest-side mounts over
# hostfs folders; the host is untouched), opens each disk once, since ubd_open() is where
# set_disk_ro() and the discard limits are applied, and reports what the flags turned into:
# ro (flag r), serial (third field; "(null)" when absent), discard (off with flag t: ubd_open_dev()
# sets discard limits only when no_trim is 0).
# Then it keeps every disk open and waits, so that the host can see how linux.uml opened each
# file: O_SYNC in /proc/PID/fdinfo (flag s, ubd=sync) and its fcntl lock in /proc/locks (WRITE,
# READ with flag r, none with flag c).
ATTR_FILE_SIZE = 1 << 20
O_SYNC = 0o4010000
WAIT_FOR_HOST = 600       # tenths of a second the guest waits for the host's inspection
_ATTR_SCRIPT = """B={busybox}
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for d in /sys/block/ubd*; do
  n=${{d##*/}}
  $B dd if=/dev/$n of=/dev/null bs=512 count=1 2>/dev/null
  discard=on; [ "$($B cat $d/queue/discard_max_bytes)" = 0 ] && discard=off
  printf '%s ro=%s serial=%s discard=%s size=%s\\n' "$n" "$($B cat $d/ro)" "$($B cat $d/serial)" \\
    "$discard" "$($B cat $d/size)" >> {attrs}
done
# each level of hold() keeps one more disk open (the shell saves the redirected stdin), so
# every disk is open, and locked, before `ready` exists
hold() {{
  if [ $# -eq 0 ]; then
    $B touch {ready}
    i=0
    while [ ! -e {done} ] && [ $i -lt {wait} ]; do $B sleep 0.1; i=$((i+1)); done
  else
    d=$1; shift
    hold "$@" < /dev/$d
  fi
}}
hold $(cd /sys/block && echo ubd*)
"""


def _host_view(pid: int, workdir: str) -> list[str]:
    """`<file> sync=<0|1> lock=<WRITE|READ|none>` for each file of workdir linux.uml holds open."""
    locks: dict[int, str] = {}
    with open("/proc/locks") as table:
        for line in table:
            fields = line.split()
            # "1: POSIX  ADVISORY  WRITE 10589 fe:00:2367519 0 EOF"
            if fields[1] == "POSIX" and fields[4] == str(pid):
                locks[int(fields[5].rsplit(":", 1)[1])] = fields[3]
    view = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                flags = int(next(l for l in info if l.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue          # an fd that closed meanwhile is not a ubd file
        if os.path.dirname(target) == workdir:
            inode = os.stat(target).st_ino
            view.append(f"{os.path.basename(target)} sync={int(flags & O_SYNC == O_SYNC)} "
                        f"lock={locks.get(inode, 'none')}")
    return sorted(view)



def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def extract(log: bytes) -> Capture:
    """The ubd-related lines of a raw `dmesg -r` dump."""
    lines = [_text(_LEVEL.sub(b"", raw)) for raw in log.split(b"\n")]
    start = next(i for i, line in enumerate(lines) if line.startswith("Kernel command line: "))
    end = next(i for i in range(start + 1, len(lines))
               if lines[i].startswith("Unknown kernel command line parameters"))
    init = [line for line in lines[end + 1:] if _INIT_LINE.match(line)]
    return Capture(parse_lines=lines[start + 1:end], init_lines=init)


def require_linux_uml() -> str:
    """The oracle's path; its absence is a broken test set-up, never a reason to skip
    (raises KernelUnavailable with the reason)."""
    launcher.require_kernel()
    if shutil.which("busybox") is None:
        raise launcher.KernelUnavailable("busybox is not installed: the oracle's init needs "
                                         "`busybox dmesg -r`")
    return shutil.which(launcher.BINARY)


def boot(words: list[str], files: list[str] | None = None) -> Capture:
    """Boot linux.uml once with `words` appended to a fixed hostfs-root command line; with
    `files`, create them (and root_fs) first and report the disks' attributes."""
    require_linux_uml()
    busybox = shutil.which("busybox")
    with tempfile.TemporaryDirectory(prefix="ubdsim-cmdline-") as tmp:
        workdir = os.path.join(tmp, "cwd")
        os.mkdir(workdir)
        attrs = os.path.join(tmp, "attrs.txt")
        ready = os.path.join(tmp, "ready")
        done = os.path.join(tmp, "done")
        script = ""
        if files is not None:
            script = _ATTR_SCRIPT.format(busybox=busybox, attrs=attrs, ready=ready, done=done,
                                         wait=WAIT_FOR_HOST)
            for name in [*files, "root_fs"]:
                with open(os.path.join(workdir, name), "wb") as image:
                    image.truncate(ATTR_FILE_SIZE)
        script += f"{busybox} dmesg -r\n"
        host_files = None
        with launcher.start(words, script=script, cwd=workdir, timeout=BOOT_TIMEOUT) as uml:
            if files is not None:
                while not os.path.exists(ready) and uml.poll() is None:
                    time.sleep(0.05)
                if uml.poll() is None:
                    host_files = _host_view(uml.pid, workdir)
                open(done, "w").close()
            run = uml.wait()
        try:
            capture = extract(run.output_bytes)
            if files is None:
                return capture
            with open(attrs, "rb") as report:
                devices = [_text(line) for line in report.read().splitlines()]
            return Capture(capture.parse_lines, capture.init_lines, devices, host_files)
        except (OSError, StopIteration) as err:
            raise RuntimeError(f"linux.uml produced no usable log for {words!r} "
                               f"({run.problem or 'guest finished'}): {err!r}") from None


def boot_all(boots: list[list[str]], files: list[list[str] | None] | None = None) -> list[Capture]:
    with ThreadPoolExecutor(max_workers=PARALLEL_BOOTS) as pool:
        return list(pool.map(boot, boots, files or [None] * len(boots)))


def init_lines_for(result: ParseResult) -> list[str]:
    """What ubd_init() prints for the parsed units when none of their files exist: ubd_add()
    -> ubd_file_size() stats the backing file when there is one (os_file_size() prints
    `Couldn't stat`), otherwise it opens the file, and either way the unit fails."""
    lines = list(result.init_messages)
    for unit, spec in sorted(result.units.items()):
        if spec.backing is not None:
            lines.append(f'Couldn\'t stat "{spec.backing}" : err = 2')
        lines.append(f"Failed to initialize ubd device {unit} :Couldn't determine size of device's file")
    return lines


def device_lines_for(result: ParseResult) -> list[str]:
    """What the attribute boot's script reports for the parsed units, all files existing."""
    return [f"ubd{chr(ord('a') + unit)} ro={int(spec.readonly)} "
            f"serial={'(null)' if spec.serial is None else spec.serial} "
            f"discard={'off' if spec.no_trim else 'on'} size={ATTR_FILE_SIZE // 512}"
            for unit, spec in sorted(result.units.items())]


def host_lines_for(result: ParseResult) -> list[str]:
    """How linux.uml 6.1 opens each unit's file: O_SYNC with flag s or an earlier ubd=sync;
    an fcntl lock unless flag c, a read lock when read-only (ubd_kern.c open_ubd_file())."""
    return sorted(f"{spec.file} sync={int(spec.sync)} "
                  f"lock={'none' if spec.shared else 'READ' if spec.readonly else 'WRITE'}"
                  for spec in result.units.values())


def simulate(words: list[str], files: list[str] | None = None) -> Capture:
    """ubdsim's side of the comparison, in the oracle's terms."""
    result = parse_command_line(words, get_profile("6.1"))
    if files is not None:
        return Capture(parse_lines=result.parse_messages, init_lines=list(result.init_messages),
                       devices=device_lines_for(result), host_files=host_lines_for(result))
    return Capture(parse_lines=result.parse_messages, init_lines=init_lines_for(result))


def boot_words(option_sets: list[tuple[str, list[str]]]) -> list[str]:
    return [word for _, words in option_sets for word in words]
