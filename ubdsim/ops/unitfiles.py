"""The host files a set of configured units works on: what no log or trace may be written into.

`ubdsim run --log c.cow ubd0=c.cow` once truncated the COW file it was about to boot. Every
file a unit names (its COW or raw file, its backing file) and the backing file a COW header
names are protected; a file that cannot be read as a COW header is just itself.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..cmdline.spec import UnitSpec
from ..cow.image import read_header_file
from ..errors import UbdError


def unit_files(units: Iterable[UnitSpec]) -> dict[str, str]:
    """{role: path} of every file the units read or write, e.g. {"ubd0 file": "c.cow", ...}."""
    files: dict[str, str] = {}
    for spec in units:
        files[f"ubd{spec.unit} file"] = spec.file
        if spec.backing:
            files[f"ubd{spec.unit} backing file"] = spec.backing
        try:
            header, _ = read_header_file(spec.file)
        except (UbdError, OSError):
            continue             # missing, raw or unreadable: the file itself is protected
        files.setdefault(f"ubd{spec.unit} backing file", header.backing_path)
        if header.backing_path != files[f"ubd{spec.unit} backing file"]:
            files[f"ubd{spec.unit} header's backing file"] = header.backing_path
    return files


__all__ = ["unit_files"]
