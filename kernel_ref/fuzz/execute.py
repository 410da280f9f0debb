"""Running a fuzz scenario on one backend, and judging a program on two sides.

Why not kernel_ref/run.py's run_on(): it compiles guest steps with guest.compile_boot(),
which has no fuzz step. Everything else is the same and reused: the files come from
fixtures.prepare(), the boots from backends.UmlBackend/UbdsimBackend (launcher.boot for
linux.uml, `ubdsim run --kernel 6.1 --log` for ubdsim), the transcripts through filters'
Normaliser, the final files from observe.snapshot_dir() (its masking of what 6.1 leaves
uninitialised included), the comparison from compare.compare(). As in run.py, both sides run
in the SAME directory, one after the other (the first's files moved aside), so absolute
paths in COW headers and messages are the same.

A Side is a backend plus an optional edit of the kernel options: the shrinker's test compares
linux.uml with `ubdsim run` given another unit flag, a real difference with no mock, and the
shrinker compares linux.uml with itself to tell kernel nondeterminism from a ubdsim gap.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import fixtures
from ..backends import UbdsimBackend, UmlBackend
from ..compare import Outcome, compare
from ..filters import Normaliser
from ..guest import SCRATCH, compile_boot
from ..observe import snapshot_dir
from .program import Program
from .verdict import categories, explain_reads

Backend = UmlBackend | UbdsimBackend
READ_GLOB = "fuzz-read-{boot}-*.bin"


@dataclass(frozen=True)
class Side:
    backend: Backend
    label: str
    edit_options: Callable[[list[str]], list[str]] | None = None


def kernel_side() -> Side:
    return Side(UmlBackend(), "linux.uml")


def ubdsim_side(profile: str = "6.1") -> Side:
    return Side(UbdsimBackend(profile), "ubdsim")


def run_scenario(side: Side, scn: dict, work: Path, now: float) -> Outcome:
    """Prepare the scenario's files in `work` and run its boots on `side`."""
    side.backend.check()
    if work.exists():
        shutil.rmtree(work)
    scratch = work / SCRATCH
    scratch.mkdir(parents=True)
    fixtures.prepare(work, scn["files"])
    norm = Normaliser(str(work), {}, now)
    boots, problems, reads = [], [], {}
    for index, boot in enumerate(scn["boots"], 1):
        text, needed = compile_boot(work, index, boot["guest"])
        for rel, data in needed.items():
            (work / rel).write_bytes(data)
        script = scratch / f"guest-{index}.sh"
        script.write_text(text)
        script.chmod(0o755)
        options = [o.replace("$WORK", str(work)) for o in boot.get("options", scn["options"])]
        if side.edit_options is not None:
            options = side.edit_options(options)
        result = side.backend.boot(work, scratch, index, options, script, None)
        if result.problem:
            problems.append(f"boot {index}: {result.problem}")
        boots.append({"log": norm.lines(result.log), "out": norm.lines(result.out),
                      "status": result.status})
        for path in sorted(scratch.glob(READ_GLOB.format(boot=index))):
            _, _, b, n, k = path.stem.split("-")
            reads[(index, f"{n}.{k}")] = path.read_bytes()
    settle_host_cache(work)
    files = snapshot_dir(work, norm, SCRATCH)
    return Outcome(source=side.label, boots=boots, files=files, problems=problems, reads=reads)


def settle_host_cache(work: Path) -> None:
    """Write back and drop the host's cached pages of every file a side left in `work`.

    Why: observe.py finds holes with SEEK_DATA/SEEK_HOLE, and on the host's ext4 an
    unwritten extent (what fallocate(FALLOC_FL_ZERO_RANGE), os_falloc_zeroes() for
    REQ_OP_WRITE_ZEROES [6.1], leaves in a hole) counts as data exactly while the host page
    cache holds an uptodate page of it (iomap_seek_data() -> page_cache_seek_hole_data()).
    Measured: after one linux.uml boot whose guest zero-ranged sector 0, c.cow's block 3
    read as data, and as a hole after `echo 1 > drop_caches`. Which pages the host still
    caches depends on who read what and on memory pressure, not on the driver, so both sides
    are observed with no cached pages (fsync, then POSIX_FADV_DONTNEED)."""
    for root, dirs, names in os.walk(work):
        dirs[:] = [d for d in dirs if not (Path(root) == work and d == SCRATCH)]
        for name in names:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@dataclass
class Judgement:
    """One program run on two sides: the differences, and what kind they are."""

    program: Program
    diffs: list[str]
    categories: list[str]
    seconds: float
    expected: Outcome | None = field(default=None, repr=False)   # the first side's outcome

    @property
    def agree(self) -> bool:
        return not self.diffs


def judge(program: Program, root: Path, first: Side, second: Side,
          keep: Path | None = None) -> Judgement:
    """Run `program` on `first` (the judge) then on `second`, in root/work, and compare."""
    start = time.monotonic()
    scn = program.to_scenario("fuzz", program.name)
    work = root / "work"
    now = time.time()
    expected = run_scenario(first, scn, work, now)
    _aside(work, root / "first", keep, first.label)
    actual = run_scenario(second, scn, work, now)
    _aside(work, root / "second", keep, second.label)
    diffs = compare(expected, actual)
    if diffs:
        diffs += explain_reads(expected, actual)
    # A runner that broke on an operation prints the same EXC line on both sides: that is
    # a fuzzer bug to see, not an agreement.
    diffs += [f"guest runner failed on {outcome.source}: {line}" for outcome in (expected, actual)
              for boot in outcome.boots for line in boot["out"] if " = EXC " in line]
    return Judgement(program, diffs, categories(program, expected, actual, diffs),
                     time.monotonic() - start, expected)


def _aside(work: Path, dest: Path, keep: Path | None, label: str) -> None:
    """Move a side's working directory out of the way (under `keep` when asked)."""
    if keep is not None:
        dest = keep / label
        keep.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        shutil.rmtree(dest)
    if keep is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        shutil.move(str(work), str(dest))
