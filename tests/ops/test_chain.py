"""ops/chain.py: the backing-chain walker, on COW files made by uml_mkcow and on headers packed
straight from the spec's byte tables (tests/cow/builders.py, no ubdsim code), loops included.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.cow.builders import pack_spec_header, random_file, run
from ubdsim.ops.chain import MAX_DEPTH, walk_chain

MIB = 1 << 20


def header_file(path: str, backing: str, *, version: int = 3, size: int = MIB,
                mtime: int = 1_000_000_000, length: int | None = None) -> None:
    """A file holding just a COW header that names `backing` (absolute, as writers store it)."""
    with open(path, "wb") as f:
        f.write(pack_spec_header(version, os.fsencode(os.path.abspath(backing)), mtime, size))
        if length is not None:
            f.truncate(length)


def test_mkcow_chain_two_layers_matching(tmp):
    random_file("base.img", MIB, seed=1)
    assert run(["uml_mkcow", "cow", "base.img"]).returncode == 0
    chain = walk_chain("cow")
    assert chain.complete and not chain.loop and chain.problem is None
    top, bottom = chain.layers
    assert top.is_cow and top.header.backing_path == str(tmp / "base.img")
    assert top.size_match is None and top.mtime_match is None     # nothing above the top
    assert not bottom.is_cow and bottom.size == MIB and bottom.path == str(tmp / "base.img")
    assert bottom.size_match and bottom.mtime_match and chain.mismatched == []
    json.dumps(chain.as_dict())                                    # JSON-ready


def test_mismatch_is_reported_per_field(tmp):
    random_file("base.img", MIB, seed=1)
    assert run(["uml_mkcow", "cow", "base.img"]).returncode == 0
    os.utime("base.img", (2_000_000_000, 2_000_000_000))            # a `cp` without -p
    chain = walk_chain("cow")
    assert chain.complete and chain.mismatched == [1]
    assert chain.layers[1].size_match is True and chain.layers[1].mtime_match is False


def test_three_layers_cow_over_cow(tmp):
    """A COW file whose backing file is a COW file: walked to the raw bottom."""
    random_file("base.img", MIB, seed=2)
    assert run(["uml_mkcow", "lower", "base.img"]).returncode == 0
    assert run(["uml_mkcow", "upper", "lower"]).returncode == 0
    chain = walk_chain("upper")
    assert [layer.is_cow for layer in chain.layers] == [True, True, False]
    assert chain.complete and chain.mismatched == []
    assert chain.layers[1].size == os.stat("lower").st_size == chain.layers[0].header.size


def test_cow_naming_itself_is_a_loop(tmp):
    header_file("self.cow", "self.cow")
    chain = walk_chain("self.cow")
    assert chain.loop and chain.loop_to == 0 and len(chain.layers) == 1
    assert not chain.complete
    assert chain.problem == "backing chain loops: 'self.cow' names itself as its backing file (as " \
                            f"'{tmp / 'self.cow'}')"


def test_loop_through_another_name(tmp):
    """The header names a symlink (or a hard link) to the file itself: same (st_dev, st_ino)."""
    os.symlink("viasym.cow", "sym")
    header_file("viasym.cow", "sym")
    header_file("viahard.cow", "hard")
    os.link("viahard.cow", "hard")
    for name in ("viasym.cow", "viahard.cow"):
        chain = walk_chain(name)
        assert chain.loop and chain.loop_to == 0 and len(chain.layers) == 1, chain


def test_a_over_b_over_a(tmp):
    header_file("a.cow", "b.cow")
    header_file("b.cow", "a.cow")
    chain = walk_chain("a.cow")
    assert chain.loop and chain.loop_to == 0
    assert [layer.path for layer in chain.layers] == ["a.cow", str(tmp / "b.cow")]
    assert chain.problem == (f"backing chain loops: '{tmp / 'b.cow'}' names '{tmp / 'a.cow'}' as "
                             "its backing file, which is 'a.cow' (layer 0) again")


def test_loop_further_down(tmp):
    """A -> B -> C -> B: the loop does not go through the top."""
    header_file("a.cow", "b.cow")
    header_file("b.cow", "c.cow")
    header_file("c.cow", "b.cow")
    chain = walk_chain("a.cow")
    assert chain.loop and chain.loop_to == 1 and len(chain.layers) == 3


def test_missing_backing_file(tmp):
    header_file("a.cow", "gone.img")
    chain = walk_chain("a.cow")
    assert chain.missing and not chain.loop and len(chain.layers) == 2
    assert not chain.layers[1].exists
    assert chain.problem == (f"'{tmp / 'gone.img'}' named by 'a.cow' does not exist "
                             "(No such file or directory)")
    assert walk_chain("nothing-here").missing


def test_fifo_and_directory_never_block(tmp):
    """A FIFO in the chain is opened O_NONBLOCK and refused: the walk returns (in a child
    process, so that a regression hangs the child, not the test run)."""
    os.mkfifo("fifo")
    os.mkdir("adir")
    header_file("f.cow", "fifo")
    header_file("d.cow", "adir")
    code = ("import json, sys\nfrom ubdsim.ops.chain import walk_chain\n"
            "print(json.dumps([walk_chain(n).as_dict() for n in sys.argv[1:]]))")
    r = subprocess.run([sys.executable, "-c", code, "f.cow", "d.cow", "fifo"], capture_output=True,
                       text=True, timeout=120, cwd=tmp,
                       env={**os.environ, "PYTHONPATH": _repo()})
    assert r.returncode == 0, r.stderr
    fifo_chain, dir_chain, fifo_top = json.loads(r.stdout)
    assert fifo_chain["unusable"] and fifo_chain["layers"][1]["kind"] == "a FIFO"
    assert "a FIFO, not a disk image" in fifo_chain["problem"]
    assert dir_chain["unusable"] and dir_chain["layers"][1]["kind"] == "a directory"
    assert fifo_top["unusable"] and len(fifo_top["layers"]) == 1


def test_depth_is_bounded(tmp):
    """A chain of 70 COW files (each over the next) stops after MAX_DEPTH layers, no recursion."""
    for i in range(70):
        header_file(f"c{i}.cow", f"c{i + 1}.cow")
    random_file("c70.cow", 4096, seed=3)
    chain = walk_chain("c0.cow")
    assert chain.depth_exceeded and len(chain.layers) == MAX_DEPTH == 64 and not chain.loop
    assert chain.problem == "backing chain of 'c0.cow' is deeper than 64 layers: not followed further"
    assert walk_chain("c0.cow", max_depth=80).complete


def test_unreadable_header_below_is_raw(tmp):
    """A lower file with the magic but an unknown version: the walk ends there (the kernel
    reads a backing file raw anyway)."""
    header_file("a.cow", "bad.img")
    with open("bad.img", "wb") as f:
        f.write(b"OOOM\0\0\0\x09" + bytes(4096))
    chain = walk_chain("a.cow")
    assert chain.complete and not chain.layers[1].is_cow
    assert "invalid COW version 9" in chain.layers[1].header_error


def test_contains_finds_the_top_by_inode(tmp):
    header_file("a.cow", "b.cow")
    header_file("b.cow", "base.img")
    random_file("base.img", 4096, seed=4)
    chain = walk_chain("a.cow")
    assert chain.contains(os.stat("b.cow")) == 1 and chain.contains(os.stat("base.img")) == 2
    assert chain.contains(os.stat("/")) is None


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
