"""The COW files tests/show draws: written by a guest through `ubdsim run`, as a user would.

Nothing here imports ubdsim: the expected pictures are computed from the spec's geometry
(tests/cow/builders.spec_geometry), the sectors the guest wrote and the files' extents.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.cow.builders import UBDSIM, run

SS = 512
BACKING_BYTES = 8 << 20
SECTORS = BACKING_BYTES // SS
GROWN_BYTES = 16 << 20
# (first sector, sectors) the guest writes with dd oflag=direct: two 4 KiB-aligned runs and
# one single sector, far from the others (it must still show in any picture).
WRITES = [(2048, 128), (10240, 256), (15000, 1)]
BACKING_DATA = [(0, 64 << 10), (6 << 20, 256 << 10)]     # bytes of the backing file that hold data


def backing_file(path: Path) -> None:
    """An 8 MiB backing file: random bytes at BACKING_DATA, holes elsewhere, fixed mtime."""
    import random
    rng = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(BACKING_BYTES)
        for offset, length in BACKING_DATA:
            f.seek(offset)
            f.write(rng.randbytes(length))
    os.utime(path, (1_100_000_000, 1_100_000_000))


def dd_script(writes=WRITES) -> str:
    return " && ".join(
        f"dd if=pattern.bin of={{dev}} bs=512 seek={first} count={count} oflag=direct "
        "conv=notrunc status=none" for first, count in writes)


def guest_write(directory: Path, kernel: str, words: str, writes=WRITES) -> None:
    """`ubdsim run --kernel KERNEL WORDS -- sh -c 'dd ... oflag=direct'` in `directory`."""
    with open(directory / "pattern.bin", "wb") as f:
        f.write(bytes(range(256)) * (max(c for _, c in writes) * SS // 256))
    device = "/dev/ubda" if kernel == "6.1" else "/dev/ubd0"
    done = run([UBDSIM, "run", "--kernel", kernel, words, "--", "sh", "-c",
                dd_script(writes).replace("{dev}", device)], cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr


def cells_expected(total: int, n: int, marked: list[tuple[int, int]],
                   tail_from: int | None = None, end: int | None = None) -> str:
    """The sector line the terminal map must print, from its documented rule: cell i covers
    sectors [i*total//n, (i+1)*total//n); █ if any of them was written (`marked`: (first,
    count) runs), else ▓ if any is past the backing file's end (`tail_from`), else ░;
    nothing past `end` (default: total)."""
    end = total if end is None else end
    line = []
    for i in range(n):
        lo, hi = i * total // n, min((i + 1) * total // n, end)
        if lo >= end:
            break
        if any(first < hi and first + count > lo for first, count in marked):
            line.append("█")
        elif tail_from is not None and hi > tail_from:
            line.append("▓")
        else:
            line.append("░")
    return "".join(line)


def file_cells_expected(n: int, lo: int, hi: int, parts: dict[str, list[tuple[int, int]]]) -> str:
    """The file line: cell i covers bytes lo + [i*(hi-lo)//n, (i+1)*(hi-lo)//n); the first of
    H (header), B (bitmap), █ (allocated in the data area), : (padding) it touches, else ·."""
    total = hi - lo
    line = []
    for i in range(n):
        a, b = lo + i * total // n, lo + (i + 1) * total // n
        for char in "HB█:":
            if any(x < b and y > a for x, y in parts.get(char, [])):
                line.append(char)
                break
        else:
            line.append("·")
    return "".join(line)


def make_unit(directory: Path) -> Path:
    """b.img and c.cow (6.1, V3), the guest's WRITES in it; returns c.cow."""
    backing_file(directory / "b.img")
    guest_write(directory, "6.1", "ubd0=c.cow,b.img")
    return directory / "c.cow"


def make_resized(directory: Path) -> tuple[Path, Path]:
    """g.cow written under 2.4 (V2), a sparse copy before.cow, then g.cow grown to 16 MiB by
    the 2.4 resize patch; returns (before.cow, g.cow)."""
    backing_file(directory / "b.img")
    guest_write(directory, "2.4", "ubd0=g.cow,b.img")
    subprocess.run(["cp", "--sparse=always", str(directory / "g.cow"),
                    str(directory / "before.cow")], check=True)
    done = run([UBDSIM, "run", "--kernel", "2.4", f"ubd0=g.cow,b.img,{GROWN_BYTES}", "--",
                "true"], cwd=directory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "*** Resizing cow file" in done.stderr + done.stdout
    return directory / "before.cow", directory / "g.cow"


def show(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([UBDSIM, "show", *args], cwd=cwd)


def have(program: str) -> str:
    found = shutil.which(program)
    assert found, f"{program} is not installed: run `make setup` (scripts/setup.sh)"
    return found
