"""The progress bar appears on a terminal and never in a pipe."""
from __future__ import annotations

import os
import pty
import subprocess

from tests.cow.builders import UBDSIM, random_file, run


def test_progress_bar_only_on_a_tty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_file("backing", 4 << 20, seed=1)
    assert run([UBDSIM, "mkcow", "cow", "backing"]).returncode == 0
    piped = run([UBDSIM, "moo", "cow", "piped.img"])
    assert piped.returncode == 0 and "\r" not in piped.stderr and piped.stderr == ""
    leader, follower = pty.openpty()
    proc = subprocess.run([UBDSIM, "moo", "cow", "tty.img"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    try:
        while chunk := os.read(leader, 4096):
            shown += chunk
    except OSError:
        pass
    os.close(leader)
    assert proc.returncode == 0
    assert b"\rmerging [" in shown and b"100.0%" in shown
    assert open("tty.img", "rb").read() == open("piped.img", "rb").read()
