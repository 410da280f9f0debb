"""The two oracles explain's predictions are judged by: ubdsim's device model opening the same
files (boot_disks() on a real EventBus, as `ubdsim run` boots), and linux.uml (6.1)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ubdsim.cmdline import parse_command_line
from ubdsim.cow.header import read_header
from ubdsim.cow.image import CowImage
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.device.disk import boot_disks
from ubdsim.device.events import EventBus
from ubdsim.errors import UbdError
from ubdsim.profiles import Profile


def snapshot(root: str | os.PathLike = ".") -> dict[str, tuple]:
    """Every file under `root`: (kind, size, mtime_ns, sha256), to prove nothing was written."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            digest = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@dataclass
class Booted:
    """What the device model did: the parse, the lines per unit, the events, the failures,
    and, for each disk that opened at boot, the Unit's state when opened again."""

    parse_lines: list[str]
    lines: dict[int, list[str]] = field(default_factory=dict)
    events: list[tuple[str, int | None, dict]] = field(default_factory=list)
    failures: dict[int, object] = field(default_factory=dict)
    disks: set[int] = field(default_factory=set)
    state: dict[int, dict] = field(default_factory=dict)
    views: dict[int, bytes] = field(default_factory=dict)
    first_open: dict[int, dict] = field(default_factory=dict)   # disks the boot never opened


def boot_model(words: list[str], profile: Profile, read_units: bool = False) -> Booted:
    parsed = parse_command_line(words, profile)
    booted = Booted(parse_lines=list(parsed.messages))

    events: list[tuple[str, int | None, dict]] = []
    bus = EventBus(lambda event: events.append((event.kind, event.unit, dict(event.data))))
    disks, _messages, failures = boot_disks(parsed.units, profile, bus)
    booted.events = list(events)          # the boot's, not those of the re-opens below
    for kind, unit, data in booted.events:
        if kind == "message":
            booted.lines.setdefault(unit, []).append(data["text"])
    booted.failures = failures
    booted.disks = set(disks)
    for kind, n, data in booted.events:
        if kind == "open" and n not in booted.state:     # the boot's open of the unit
            version = None
            if data["cow"]:
                with open(data["file"], "rb") as f:
                    version = read_header(f.read(HEADER_READ_SIZE)).version
            booted.state[n] = {"readonly": data["readonly"], "size": data["size"],
                               "version": version, "backing": data["backing"],
                               "disk_size": disks[n].size if n in disks else None}
    try:
        for n, disk in disks.items():
            if n in failures or n in booted.state:
                continue                    # the boot opened it (or failed to)
            mark = len(events)
            try:
                disk.open()
                disk.release()
                opens = True
            except UbdError:
                opens = False
            booted.first_open[n] = {"opens": opens, "lines": [
                data["text"] for kind, unit, data in events[mark:] if kind == "message"]}
        if read_units:
            for n, disk in disks.items():
                if n in booted.state:
                    unit = disk.open()
                    booted.views[n] = b"".join(unit.read(s * 512, 512)
                                               for s in range(unit.size // 512))
                    disk.release()
    finally:
        for disk in disks.values():
            disk.close()
    return booted


def tool_view(cow: str, backing: str) -> bytes:
    """The device a COW file shows through the tools' reader (ubdsim.cow.image), per sector."""
    fd = os.open(backing, os.O_RDONLY)
    try:
        with CowImage.open(cow) as image:
            size = image.geometry.size
            return image.read(0, size - size % 512, fd)
    finally:
        os.close(fd)


def differing_sectors(a: bytes, b: bytes) -> set[int]:
    return {s for s in range(min(len(a), len(b)) // 512) if a[s * 512:(s + 1) * 512] != b[s * 512:(s + 1) * 512]}


def marked_sectors(cow: str) -> set[int]:
    with CowImage.open(cow) as image:
        return {s for start, count in image.marked_runs() for s in range(start, start + count)}


def here() -> Path:
    return Path.cwd()
