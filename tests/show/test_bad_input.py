"""Bad input to `ubdsim show`: one line on stderr, a non-zero exit, no traceback, no file
written, and never a picture drawn over a file it reads."""
from __future__ import annotations

import os

import pytest

from tests.show.guest import backing_file, guest_write, show


@pytest.fixture(scope="module")
def unit(tmp_path_factory):
    directory = tmp_path_factory.mktemp("unit")
    backing_file(directory / "b.img")
    guest_write(directory, "6.1", "ubd0=c.cow,b.img", [(0, 8)])
    with open(directory / "bad.cow", "wb") as f:          # COW magic, unknown version
        f.write(bytes.fromhex("4f4f4f4d00000009") + bytes(5000))
    os.mkfifo(directory / "fifo")
    os.mkdir(directory / "dir")
    return directory


CASES = [
    (["missing.cow"], 1, "ubdsim show: error: No such file or directory: missing.cow"),
    (["bad.cow"], 1, "ubdsim show: error: 'bad.cow': invalid COW version 9"),
    (["fifo"], 1, "ubdsim show: error: image 'fifo' is a FIFO, not a regular file or a block device"),
    (["dir"], 1, "ubdsim show: error: image 'dir' is a directory, not a regular file or a block device"),
    (["c.cow", "-b", "missing.img"], 1,
     'ubdsim show: error: backing file "missing.img" does not exist'),
    (["c.cow", "c.cow"], 2, "ubdsim show: error: one COW file to show, not 2 (two with --compare)"),
    (["--compare", "c.cow"], 2, "ubdsim show: error: --compare takes two files, OLD NEW"),
    (["c.cow", "--png", "x.png", "--width", "100"], 2,
     "ubdsim show: error: --width 100: a picture needs at least 480 pixels"),
    (["c.cow", "--png", "nodir/x.png"], 1, "ubdsim show: error: No such file or directory: nodir/x.png"),
    (["c.cow", "--png", "c.cow"], 1, "ubdsim show: error: 'c.cow' is the same file as the COW "
     "file 'c.cow': refusing to draw a picture over it"),
    (["c.cow", "--svg", "b.img"], 1, "ubdsim show: error: 'b.img' is the same file as the layer "
     "1 of the COW file's chain"),
]


@pytest.mark.parametrize("argv,status,line", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line(unit, argv, status, line):
    before = {name: (unit / name).stat().st_mtime_ns for name in os.listdir(unit)}
    digest = {name: (unit / name).read_bytes() for name in ("c.cow", "b.img")}
    done = show(*argv, cwd=unit)
    assert done.returncode == status
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(line), done.stderr
    assert {name: (unit / name).stat().st_mtime_ns for name in os.listdir(unit)} == before
    assert {name: (unit / name).read_bytes() for name in ("c.cow", "b.img")} == digest


def test_argparse_errors_are_one_usage_line_too(unit):
    done = show("--width", "wide", "c.cow", cwd=unit)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == ("ubdsim show: error: argument --width: must be an "
                                            "integer from 8 to 20000, not 'wide'")
    done = show("c.cow", "--png", "a.png", "--svg", "a.svg", cwd=unit)
    assert done.returncode == 2 and "not allowed with argument" in done.stderr
    assert not (unit / "a.png").exists() and not (unit / "a.svg").exists()


def test_help_says_how_to_compare_before_and_after_a_resize(unit):
    done = show("--help", cwd=unit)
    assert done.returncode == 0
    assert "ubdsim show --compare before.cow guest.cow" in done.stdout
    assert "cp --sparse=always guest.cow before.cow" in done.stdout
