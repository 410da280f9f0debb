"""Running the qemu guest: command line, console streaming, exit status, cleanup.

Facts this relies on (guest-harness-notes.md "qemu guests over NBD", measured here):
- `-accel tcg` is forced: /dev/kvm exists on this machine kind but KVM hangs silently.
- `-nodefaults -display none -serial stdio -no-reboot` and the PVH `vmlinux` boot in ~1.7 s.
- The guest's `/init` prints `ubdsim-guest-status: N` and writes N to isa-debug-exit
  (port 0xf4): qemu exits with (N << 1) | 1. With `panic=-1 -no-reboot` a kernel panic exits
  qemu with 0 and no status line, so BOTH are required before N is believed.
- qemu never sends NBD_CMD_DISC when it exits that way; the server treats EOF as a disconnect.
- An NBD error reply reaches the guest as a virtio-blk I/O error (werror/rerror=report): the
  guest's request fails with EIO, whatever the host errno was.
Cleanup: qemu runs in its own session (a terminal's Ctrl-C reaches only ubdsim, which then
stops qemu itself) under `setpriv --pdeathsig KILL` (if ubdsim itself is SIGKILLed, the
kernel kills qemu), and every exit path of `run_guest` kills and reaps it.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STATUS_LINE = re.compile(rb"^ubdsim-guest-status: (\d+)\r?$", re.M)
START_LINE = b"ubdsim-guest-start"
DEBUG_EXIT_PORT = 0xF4
MEMORY = "256M"


@dataclass(frozen=True)
class Disk:
    name: str          # NBD export name, also the virtio serial (/dev/NAME in the guest)
    readonly: bool


def qemu_command(vmlinux: Path, initrd: Path, socket_path: str, disks: list[Disk],
                 extra_append: str = "") -> list[str]:
    command = ["setpriv", "--pdeathsig", "KILL", "--",
               "qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none",
               "-serial", "stdio", "-no-reboot", "-m", MEMORY,
               "-kernel", str(vmlinux), "-initrd", str(initrd),
               "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 ubdsim.disks={len(disks)} {extra_append}".strip(),
               "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04"]
    for disk in disks:
        node = {"driver": "nbd", "node-name": f"n_{disk.name}", "export": disk.name,
                "server": {"type": "unix", "path": socket_path}, "read-only": disk.readonly}
        # werror/rerror=report: a failed host write or read (NBD error) becomes an I/O error
        # in the guest, as a ubd request's error does under UML; qemu's default (enospc for
        # writes) pauses the whole guest on ENOSPC until someone resumes it.
        command += ["-blockdev", json.dumps(node),
                    "-device", f"virtio-blk-pci,drive=n_{disk.name},serial={disk.name},"
                               "werror=report,rerror=report"]
    return command


class GuestFailed(Exception):
    """The guest did not report a status: timeout, panic, qemu error or signal."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Terminated(Exception):
    """SIGTERM, turned into an exception so the cleanup in `finally` runs."""


TIMEOUT_STATUS = 124      # as timeout(1)


def run_guest(command: list[str], timeout: float, console: Callable[[bytes], None]) -> int:
    """Run qemu, stream its console to `console`, return the guest script's exit status.

    Raises GuestFailed (with the status ubdsim should exit with) when the guest gave none.
    qemu is dead and reaped when this returns or raises, whatever happened.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    output = bytearray()
    pending_cr = b""
    try:
        deadline = time.monotonic() + timeout
        fd = process.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestFailed(f"timed out after {timeout:g} s; guest stopped", TIMEOUT_STATUS)
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            output += chunk
            # The serial console ends lines with CR LF: hand the caller plain LF lines.
            text = (pending_cr + chunk).replace(b"\r\n", b"\n")
            pending_cr = b"\r" if text.endswith(b"\r") else b""
            console(text[:-1] if pending_cr else text)
        returncode = process.wait()
    except _Terminated:
        raise GuestFailed("terminated (SIGTERM); guest stopped", 128 + signal.SIGTERM) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_qemu(process)
    return _guest_status(bytes(output), returncode)


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def stop_qemu(process: subprocess.Popen) -> None:
    """Kill qemu (its whole session) if it still runs, and reap it."""
    if process.poll() is None:
        for signum, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, signum)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    process.stdout.close()


def _guest_status(output: bytes, returncode: int) -> int:
    found = STATUS_LINE.findall(output)
    if returncode < 0:
        raise GuestFailed(f"qemu was killed by signal {-returncode}", 128 - returncode)
    if not found:
        if START_LINE not in output:
            why = "the guest never reached its workload"
        else:
            why = "the guest stopped without reporting a status (kernel panic?)"
        raise GuestFailed(f"{why}; qemu exit status {returncode}", 1)
    status = int(found[-1])
    if returncode not in ((status << 1) | 1, 0):
        raise GuestFailed(f"guest reported status {status} but qemu exited with {returncode}", 1)
    return status


def write_console(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
