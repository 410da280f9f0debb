"""Random damage to a valid COW file, for the check and repair fuzz tests: a small V1/V2/V3
file with a few marked sectors, then `flips` random bytes overwritten (seeded)."""
from __future__ import annotations

import random
from pathlib import Path

from tests.cow.builders import build_cow, random_file


def damaged_cow(directory: Path, seed: int, flips: int, version: int, within: int | None = None) -> Path:
    """Write b.img and c.cow in `directory`; damage c.cow's first `within` bytes (all if None)."""
    backing = directory / "b.img"
    random_file(str(backing), 20 * 512 + 300, seed=seed)
    rng = random.Random(seed)
    cow = directory / "c.cow"
    build_cow(str(cow), version, str(backing), {s: rng.randbytes(512) for s in rng.sample(range(20), 5)})
    data = bytearray(cow.read_bytes())
    for _ in range(flips):
        data[rng.randrange(min(len(data), within or len(data)))] = rng.randrange(256)
    cow.write_bytes(data)
    return cow
