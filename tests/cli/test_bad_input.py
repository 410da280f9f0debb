"""Bad input to mkcow, moo and info: one clear line, exit 1, no traceback, nothing left behind.

Every file here is also fed to uml_moo during the test, to show it is bad input for the
original tool too (uml_moo: "Reading COW header failed").
"""
from __future__ import annotations

import os
import random
import struct

import pytest

from tests.cow.builders import UBDSIM, pack_spec_header, random_file, run
from ubdsim.cli import main

BAD = {
    "empty": b"",
    "short": b"MOOO",
    "truncated_v3": pack_spec_header(3, b"/x", 0, 4096)[:2000],
    "truncated_v2": pack_spec_header(2, b"/x", 0, 4096)[:4000],
    "truncated_v1": pack_spec_header(1, b"/x", 0, 4096)[:200],
    "random": random.Random(1).randbytes(9000),
    "wrong_magic": struct.pack(">II", 0x4F4F4F4E, 3) + bytes(5000),
    "wrong_version": struct.pack(">II", 0x4F4F4F4D, 4) + bytes(5000),
}

COMMANDS = [["info"], ["info", "--json"], ["moo", "{f}", "out.img"], ["moo", "-d"]]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_cow_files(tmp_path, monkeypatch, capsys, name):
    """In-process through ubdsim.cli.main() (the console script's entry point), to stay fast;
    test_one_bad_file_through_the_installed_command checks the real command once."""
    monkeypatch.chdir(tmp_path)
    with open("bad", "wb") as f:
        f.write(BAD[name])
    oracle = run(["uml_moo", "bad", "oracle.img"])
    assert oracle.returncode == 1 and not os.path.exists("oracle.img")
    capsys.readouterr()
    for command in COMMANDS:
        argv = [a.replace("{f}", "bad") for a in command]
        if "{f}" not in command:
            argv.append("bad")
        assert main(argv) == 1, argv
        out, err = capsys.readouterr()
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"ubdsim {argv[0]}: error: ") and "'bad'" in lines[0]
        assert sorted(os.listdir(".")) == ["bad"]
        assert open("bad", "rb").read() == BAD[name]


def test_one_bad_file_through_the_installed_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("bad", "wb") as f:
        f.write(BAD["wrong_version"])
    r = run([UBDSIM, "moo", "bad", "out.img"])
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr == "ubdsim moo: error: 'bad': invalid COW version 4\n"
    assert os.listdir(".") == ["bad"]


def test_missing_backing_is_an_error_for_moo_but_a_finding_for_info(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_file("backing", 4096, seed=1)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    os.unlink("backing")
    oracle = run(["uml_moo", "cow", "oracle.img"])
    assert oracle.returncode == 1 and not os.path.exists("oracle.img")
    for argv in (["moo", "cow", "out.img"], ["moo", "-d", "cow"]):
        r = run([UBDSIM, *argv])
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            f'ubdsim moo: error: backing file "{tmp_path}/backing" does not exist']
    r = run([UBDSIM, "info", "cow"])
    assert r.returncode == 0 and "present       no (No such file or directory)" in r.stdout
    assert sorted(os.listdir(".")) == ["cow"]


def test_missing_cow_file_and_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, code in ((["info", "nope"], 1), (["moo", "nope", "out"], 1), (["moo", "-d", "nope"], 1),
                       (["moo", "a"], 2), (["moo", "-d", "a", "b"], 2), (["mkcow", "a"], 2)):
        r = run([UBDSIM, *argv])
        assert r.returncode == code and "Traceback" not in r.stderr, argv
        assert os.listdir(".") == []
