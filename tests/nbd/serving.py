"""Running the real `ubdsim serve` command in tests (a subprocess, as users run it)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UBDSIM = str(Path(sys.executable).with_name("ubdsim"))


@dataclass
class Served:
    process: subprocess.Popen
    socket: str
    kernel_lines: list[str]     # stderr lines printed before the listening line

    def uri(self, export: str) -> str:
        return f"nbd+unix:///{export}?socket={self.socket}"


@contextlib.contextmanager
def serve(socket: Path, words: list[str], kernel: str = "6.1", options: tuple[str, ...] = (),
          cwd: Path | None = None, prefix: tuple[str, ...] = ()) -> Iterator[Served]:
    """`ubdsim serve` on a unix socket; yields once it listens, stops it (SIGTERM) after.
    `prefix` runs it under another program (strace), which must exit when it does."""
    command = [*prefix, UBDSIM, "serve", "--kernel", kernel, "--unix", str(socket), *options,
               *words]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, cwd=cwd)
    lines = []
    try:
        for line in process.stderr:
            if line.startswith("ubdsim serve: listening on"):
                break
            lines.append(line.rstrip("\n"))
        else:
            process.wait()
            raise AssertionError(f"ubdsim serve exited {process.returncode}: {lines}")
        yield Served(process, str(socket), lines)
    finally:
        if process.poll() is None:
            target = process.pid
            if prefix:
                target = int(Path(f"/proc/{process.pid}/task/{process.pid}/children")
                             .read_text().split()[0])
            os.kill(target, signal.SIGTERM)
        rest = process.stderr.read()
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == 0, rest
    assert not os.path.exists(socket)


def qemu_io(uri: str, *commands: str, readonly: bool = False) -> subprocess.CompletedProcess:
    argv = ["qemu-io", "-f", "raw"] + (["-r"] if readonly else [])
    for command in commands:
        argv += ["-c", command]
    return subprocess.run(argv + [uri], capture_output=True, text=True, timeout=120)
