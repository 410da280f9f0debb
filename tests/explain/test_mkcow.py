"""`ubdsim mkcow`: the warning for a backing file that is itself a COW file, and --kernel P,
which makes the file the way that profile's kernel creates one (judged against the device
model creating a missing COW file, and against uml_mkcow for the default)."""
from __future__ import annotations

import os

import pytest

from tests.cow.builders import UBDSIM, extent_map, random_file, run
from ubdsim.cli import main
from ubdsim.cmdline import UnitSpec
from ubdsim.cow.header import read_header
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.device.open import open_unit
from ubdsim.profiles import PROFILES


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_file("base.img", 300 * 1024 + 512, seed=3)
    return tmp_path


def _header(path: str):
    with open(path, "rb") as f:
        return read_header(f.read(HEADER_READ_SIZE))


def test_backing_that_is_a_cow_file_warns_once_and_creates(tmp):
    assert run(["uml_mkcow", "lower.cow", "base.img"]).returncode == 0
    r = run([UBDSIM, "mkcow", "upper.cow", "lower.cow"])
    assert r.returncode == 0 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ubdsim mkcow: warning: ")
    assert "'lower.cow' is itself a V3 COW file" in lines[0] and "UML cannot stack" in lines[0]
    assert _header("upper.cow").backing_path == str(tmp / "lower.cow")


def test_no_warning_over_a_raw_image(tmp, capsys):
    assert main(["mkcow", "c.cow", "base.img"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", list(PROFILES))
def test_kernel_makes_the_file_that_kernel_creates(tmp, capsys, name):
    """mkcow --kernel P == the file P's device model creates for a missing COW file: the same
    bytes, the same length, the same holes (2.4 extends as a hole, 6.1 writes a last byte)."""
    profile = PROFILES[name]
    assert main(["mkcow", "--kernel", name, "made.cow", "base.img"]) == 0
    assert capsys.readouterr().err == ""
    open_unit(UnitSpec(0, "kernel.cow", "base.img"), profile).close()
    made, kernel = open("made.cow", "rb").read(), open("kernel.cow", "rb").read()
    assert made == kernel and len(made) > 0
    assert extent_map("made.cow") == extent_map("kernel.cow")
    assert _header("made.cow").version == profile.format.created_version


def test_default_is_still_uml_mkcow(tmp):
    assert run(["uml_mkcow", "oracle.cow", "base.img"]).returncode == 0
    assert main(["mkcow", "mine.cow", "base.img"]) == 0
    assert open("mine.cow", "rb").read() == open("oracle.cow", "rb").read()


def test_cow_version_overrides_the_kernel(tmp, capsys):
    assert main(["mkcow", "--kernel", "2.4", "--cow-version", "1", "v1.cow", "base.img"]) == 0
    assert capsys.readouterr().err == "" and _header("v1.cow").version == 1
    assert main(["mkcow", "--kernel", "6.1", "--cow-version", "2", "v2.cow", "base.img"]) == 0
    assert capsys.readouterr().err == "" and _header("v2.cow").version == 2
    assert main(["mkcow", "--kernel", "2.4", "--cow-version", "3", "v3.cow", "base.img"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ubdsim mkcow: warning: profile 2.4 cannot read a V3")
    assert _header("v3.cow").version == 3


def test_force_over_a_non_cow_file_is_still_refused(tmp, capsys):
    random_file("precious.img", 4096, seed=9)
    before = open("precious.img", "rb").read()
    assert main(["mkcow", "-f", "--kernel", "2.4", "precious.img", "base.img"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is not a COW file" in err[0]
    assert open("precious.img", "rb").read() == before


def test_unknown_kernel_is_a_usage_error(tmp):
    r = run([UBDSIM, "mkcow", "--kernel", "2.6", "x.cow", "base.img"])
    assert r.returncode == 2 and not os.path.exists("x.cow")
