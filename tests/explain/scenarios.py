"""Command lines and the files they name, built in the current directory from the spec's byte
tables (tests/cow/builders.py packs headers without ubdsim code) and uml_mkcow.

Each scenario builds a fresh copy whenever it is called, so the prediction, the device model
and linux.uml each get their own scratch copy of the same files (same names, same mtimes).
"""
from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from tests.cow.builders import build_cow, pack_spec_header, random_file, spec_geometry

MIB = 1 << 20
OLD = 1_000_000_000            # backing files get this mtime (a whole second: no rounding)
MARKS = (*range(16), 100, 700, 1500)


@dataclass(frozen=True)
class Scenario:
    name: str
    words: list[str]
    build: Callable[[], None]


def _data(seed: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    return {s: rng.randbytes(512) for s in MARKS}


def base(path: str = "base.img", size: int = MIB, seed: int = 1) -> None:
    random_file(path, size, seed=seed)
    os.utime(path, (OLD, OLD))


def cow(path: str, version: int, backing: str = "base.img", **kw) -> None:
    build_cow(path, version, backing, _data(version * 10 + len(path)), **kw)


def _reversed() -> None:
    base()
    cow("guest.cow", 2)


def _reversed_missing() -> None:
    base()


def _cow_ok() -> None:
    base()
    cow("guest.cow", 2)


def _stacking() -> None:
    base()
    cow("b.cow", 2)


def _v3_alone() -> None:
    base()
    cow("guest.cow", 3)


def _moved() -> None:
    base()
    cow("v2.cow", 2)
    os.mkdir("new")
    os.rename("base.img", "new/base.img")


def _copied(version: int) -> Callable[[], None]:
    def build() -> None:
        base()
        cow(f"v{version}.cow", version)
        os.mkdir("new")
        subprocess.run(["cp", "-p", "base.img", "new/base.img"], check=True)
    return build


def _mtime() -> None:
    base()
    cow("v2.cow", 2)
    os.utime("base.img", (OLD + 3600, OLD + 3600))


def _size() -> None:
    base()
    cow("v2.cow", 2)
    with open("base.img", "ab") as f:
        f.write(bytes(4096))
    os.utime("base.img", (OLD, OLD))


def _grown() -> None:
    """A V2 file grown to 2 MiB by the COW-resize patch: every sector past 1 MiB marked."""
    base()
    _, bitmap_offset, _, _ = spec_geometry(2, 2 * MIB)
    tail = {bitmap_offset + byte: 0xFF for byte in range(MIB // 512 // 8, 2 * MIB // 512 // 8)}
    build_cow("grown.cow", 2, "base.img", _data(7), size=2 * MIB, extra_bits=tail)


def _raw() -> None:
    random_file("raw.img", 300 * 1024 + 100, seed=5)


def _empty_backing() -> None:
    open("empty.img", "wb").close()
    os.utime("empty.img", (OLD, OLD))


def _sectorsize_zero() -> None:
    base()
    st = os.stat("base.img")
    with open("zero.cow", "wb") as f:
        f.write(pack_spec_header(2, os.fsencode(os.path.abspath("base.img")), int(st.st_mtime),
                                 st.st_size, ss=0))
        f.truncate(MIB + 8192)


def _alignment_zero() -> None:
    base()
    st = os.stat("base.img")
    with open("a0.cow", "wb") as f:
        f.write(pack_spec_header(3, os.fsencode(os.path.abspath("base.img")), int(st.st_mtime),
                                 st.st_size, align=0))
        f.truncate(MIB + 16384)


def _v3_mkcow() -> None:
    base()
    subprocess.run(["uml_mkcow", "guest.cow", "base.img"], check=True, capture_output=True)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    # the seeds' command lines
    Scenario("reversed", ["ubd0=base.img,guest.cow"], _reversed),
    Scenario("stacking", ["ubd0=a.cow,b.cow,base.img"], _stacking),
    Scenario("v3_alone", ["ubd0=guest.cow"], _v3_alone),
    Scenario("moved", ["ubd0=v2.cow,new/base.img"], _moved),
    Scenario("switch_v2", ["ubd0=v2.cow,new/base.img"], _copied(2)),
    # more of the open path
    Scenario("reversed_missing", ["ubd0=base.img,guest.cow"], _reversed_missing),
    Scenario("create", ["ubd0=guest.cow,base.img"], _reversed_missing),
    Scenario("cow_ok", ["ubd0=guest.cow,base.img"], _cow_ok),
    Scenario("cow_alone", ["ubd0=guest.cow"], _cow_ok),
    Scenario("switch_v1", ["ubd0=v1.cow,new/base.img"], _copied(1)),
    Scenario("switch_v3", ["ubd0=v3.cow,new/base.img"], _copied(3)),
    Scenario("mtime", ["ubd0=v2.cow,base.img"], _mtime),
    Scenario("size", ["ubd0=v2.cow,base.img"], _size),
    Scenario("size_field", ["ubd0=guest.cow,base.img,2M"], _cow_ok),
    Scenario("size_field_same", ["ubd0=guest.cow,base.img,1M"], _cow_ok),
    Scenario("size_field_smaller", ["ubd0=guest.cow,base.img,512K"], _cow_ok),
    Scenario("size_field_readonly", ["ubd0r=guest.cow,base.img,2M"], _cow_ok),
    Scenario("size_field_raw", ["ubd0=raw.img,,2M"], _raw),
    Scenario("grown", ["ubd0=grown.cow,base.img"], _grown),
    Scenario("readonly_create", ["ubd0r=x.cow,base.img"], _reversed_missing),
    Scenario("readonly_cow", ["ubd0r=guest.cow,base.img"], _cow_ok),
    Scenario("flag_d", ["ubd0d=raw.img"], _raw),
    Scenario("flag_c", ["ubd0c=guest.cow,base.img"], _v3_mkcow),
    Scenario("raw", ["ubd0=raw.img"], _raw),
    Scenario("root_fs", ["ubd1=raw.img"], _raw),
    Scenario("empty_backing", ["ubd0=e.cow,empty.img"], _empty_backing),
    Scenario("sectorsize_zero", ["ubd0=zero.cow,base.img"], _sectorsize_zero),
    Scenario("backing_is_cow", ["ubd0=a.cow,b.cow"], _stacking),
    Scenario("udb_typo", ["udb0=guest.cow,base.img", "ubd1=guest.cow,base.img"], _cow_ok),
    Scenario("two_units", ["ubd0=guest.cow,base.img", "ubd1=base.img,other.cow",
                           "ubd2=missing.img"], _cow_ok),
    Scenario("missing_backing_dir", ["ubd0=nodir/x.cow,base.img"], _reversed_missing),
    Scenario("header_backing_gone", ["ubd0=v2.cow"], _moved),
    Scenario("alignment_zero", ["ubd0=a0.cow,base.img"], _alignment_zero),
]}


__all__ = ["MARKS", "MIB", "OLD", "SCENARIOS", "Scenario"]
