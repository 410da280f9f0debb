"""Bad numeric option values of `ubdsim serve` and `ubdsim vm`: argparse's one error line and
exit 2, never a traceback (`--port 99999` used to raise OverflowError in socket.bind(),
`--timeout nan` a ValueError in select()). Edge values that are valid still work.

Every case runs the installed `ubdsim` command, as a user does.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.nbd.serving import UBDSIM, qemu_io

PORT = "must be an integer from 0 to 65535"
CONNECTIONS = "must be an integer >= 1"
SECONDS = "must be a finite number of seconds greater than 0"

BAD = [
    (["serve", "--port", "99999"], "--port", PORT, "99999"),
    (["serve", "--port", "-1"], "--port", PORT, "-1"),
    (["serve", "--port", "65536"], "--port", PORT, "65536"),
    (["serve", "--port", "http"], "--port", PORT, "http"),
    (["serve", "--port", "80.5"], "--port", PORT, "80.5"),
    (["serve", "--max-connections", "0"], "--max-connections", CONNECTIONS, "0"),
    (["serve", "--max-connections", "-4"], "--max-connections", CONNECTIONS, "-4"),
    (["serve", "--max-connections", "many"], "--max-connections", CONNECTIONS, "many"),
    (["vm", "--timeout", "nan"], "--timeout", SECONDS, "nan"),
    (["vm", "--timeout", "inf"], "--timeout", SECONDS, "inf"),
    (["vm", "--timeout=-inf"], "--timeout", SECONDS, "-inf"),   # `--timeout -inf`: an option?
    (["vm", "--timeout", "1e400"], "--timeout", SECONDS, "1e400"),   # overflows to inf
    (["vm", "--timeout", "0"], "--timeout", SECONDS, "0"),
    (["vm", "--timeout", "-5"], "--timeout", SECONDS, "-5"),
    (["vm", "--timeout", "soon"], "--timeout", SECONDS, "soon"),
]


@pytest.mark.parametrize("argv, option, wanted, value", BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_value_is_one_argparse_line_and_exit_2(tmp_path: Path, argv: list[str], option: str,
                                                   wanted: str, value: str) -> None:
    words = ["ubd0=disk.cow,back.img"] + (["script.sh"] if argv[0] == "vm" else [])
    done = subprocess.run([UBDSIM, *argv, *words], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"ubdsim {argv[0]}: error: argument {option}: {wanted}, not '{value}'")
    assert os.listdir(tmp_path) == []          # refused before any unit was opened


def test_port_0_picks_a_free_port_that_qemu_io_can_use(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\x3c" * 65536)
    process = subprocess.Popen([UBDSIM, "serve", "--kernel", "6.1", "--port", "0",
                                "--max-connections", "1", f"ubd0={image}"],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = process.stderr.readline()
        found = re.fullmatch(r"ubdsim serve: listening on 127\.0\.0\.1:(\d+), exports ubda\n", line)
        assert found, line
        port = int(found.group(1))
        assert 0 < port <= 65535
        done = qemu_io(f"nbd://127.0.0.1:{port}/ubda", "read -P 0x3c 0 64k", readonly=True)
        assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        process.wait(timeout=30)
        process.stderr.close()
    assert process.returncode == 0, rest


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A valid port that cannot be had (someone listens on it) is a run-time error: exit 1."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(65536))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        port = holder.getsockname()[1]
        done = subprocess.run([UBDSIM, "serve", "--kernel", "6.1", "--port", str(port),
                               f"ubd0={image}"], capture_output=True, text=True, timeout=60)
    finally:
        holder.close()
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "ubdsim serve: error: Address already in use"
