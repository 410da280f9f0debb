"""`ubdsim parse`: the kernel's lines (checked against the stored linux.uml capture), the unit
table, --json, and exit codes (0 whatever the kernel prints; 2 for ubdsim's own misuse)."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from ubdsim.cli import main

DATA = pathlib.Path(__file__).with_name("data") / "oracle_6_1.json"
UBDSIM = [sys.executable, "-m", "ubdsim"]


def _plain_boots() -> list[dict]:
    return [b for b in json.loads(DATA.read_text())["boots"] if b["files"] is None]


def _run(capsysbinary, *argv: str) -> tuple[int, bytes, bytes]:
    code = main(["parse", *argv])
    out, err = capsysbinary.readouterr()
    return code, out, err


@pytest.mark.parametrize("index", range(len(_plain_boots())))
def test_json_matches_linux_uml(capsysbinary, index: int) -> None:
    """--json messages are the kernel's parse-time lines plus its `ubd: Synchronous mode` line,
    and its units are the units the kernel tried to open at init."""
    boot = _plain_boots()[index]
    words = [w for s in boot["sets"] for w in s["words"]]
    code, out, _ = _run(capsysbinary, "--kernel", "6.1", "--json", "--", *words)
    assert code == 0
    result = json.loads(out)
    sync = [line for line in boot["init_lines"] if line == "ubd: Synchronous mode"]
    assert result["messages"] == boot["parse_lines"] + sync
    opened = [int(m.group(1)) for line in boot["init_lines"]
              if (m := re.match(r"Failed to initialize ubd device (\d+) ", line))]
    assert [u["unit"] for u in result["units"]] == opened
    assert set(result["units"][0]) == {"unit", "file", "backing", "size", "serial", "readonly", "sync",
                                       "no_cow", "shared", "no_trim"}


def test_human_output_messages_then_table(capsysbinary) -> None:
    code, out, _ = _run(capsysbinary, "--kernel", "6.1", "ubd1rt=cow:back:SER", "ubd20=x", "ubd=sync")
    assert code == 0
    lines = out.decode().splitlines()
    assert lines[:3] == ['Failed to initialize device with "20=x" : Device number out of range',
                         "ubd: Synchronous mode", ""]
    assert lines[3].split() == ["unit", "devices", "file", "backing", "serial", "flags"]
    assert lines[4].split() == ["0", "ubd0", "/dev/ubda", "root_fs", "-", "-", "-"]
    assert lines[5].split() == ["1", "ubd1", "/dev/ubdb", "cow", "back", "SER", "rt"]


def test_default_profile_is_2_4_with_size(capsysbinary) -> None:
    code, out, _ = _run(capsysbinary, "--json", "ubd0=cow,backing,400M", "ubd10=x")
    assert code == 0
    result = json.loads(out)
    assert result["messages"] == ["ubd_setup : Expected '='"]
    assert (result["units"][0]["backing"], result["units"][0]["size"]) == ("backing", 400 << 20)


def test_stock_keeps_size_in_backing_name(capsysbinary) -> None:
    _, out, _ = _run(capsysbinary, "--kernel", "2.4-stock", "--json", "ubd0=cow,backing,400M")
    assert json.loads(out)["units"][0]["backing"] == "backing,400M"


def test_spaces_inside_a_word_split_it(capsysbinary) -> None:
    _, out, _ = _run(capsysbinary, "--kernel", "6.1", "--json", "ubd 0=x")
    result = json.loads(out)
    assert result["messages"] == ['Failed to initialize device with "" : Couldn\'t parse device number']
    assert result["units"][0]["file"] == "root_fs"


def test_unknown_kernel_is_a_usage_error() -> None:
    done = subprocess.run([*UBDSIM, "parse", "--kernel", "2.2", "ubd0=x"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: '2.2'" in done.stderr
    assert done.stdout == ""


def test_raw_bytes_come_back_as_bytes() -> None:
    """File names are bytes on the kernel command line; the table prints them unchanged."""
    done = subprocess.run([*UBDSIM, "parse", "--kernel", "6.1", b"ubd1=\xff\xfe,b\x80", b"udb\xe9"],
                          capture_output=True)
    assert done.returncode == 0
    assert done.stdout.startswith(b"udb\xe9 specified on command line is almost certainly a ubd -> udb TYPO\n")
    assert b"\xff\xfe" in done.stdout and b"b\x80" in done.stdout
    assert done.stderr == b""
