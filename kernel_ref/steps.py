"""Constructors for scenario data: each returns a plain dict, so a scenario stays data.

A scenario (see `kernel_ref/scenarios/`) is a dict with
  name, about        identifier (the golden file's name) and why the scenario exists;
  files              {relative path: file spec}, prepared in the working directory first;
  options            ubd kernel options (words), given to both backends;
  boots              a list of boots, each {"guest": [...], "host": [...], optional
                     "options", "locks", "ro_dirs", "run_as"}.
Host steps run on the host before the boot they belong to; guest steps compile to ONE sh
script that both backends run unchanged (`kernel_ref/guest.py`).
The constructors below only spell the dicts; `kernel_ref/scenario.py` validates them.
"""
from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
FIXED_MTIME = 1_600_000_000     # every prepared file gets this mtime unless told otherwise
OTHER_MTIME = 1_600_000_777


# ---- files -------------------------------------------------------------------------------

def backing(size: int, tag: str = "B", fill: str = "pattern", mtime: int = FIXED_MTIME) -> dict:
    """A disk image of `size` bytes; `fill`: "pattern" (every sector names itself and its
    tag), "zero" (all zero bytes, written) or "sparse" (one hole)."""
    return {"kind": "backing", "size": size, "tag": tag, "fill": fill, "mtime": mtime}


def cow(version: int | str, backing_file: str, written: list[tuple[int, int, str]] = (),
        size: int | None = None, mtime: int | None = None, alignment: int = 4096,
        bitmap_only: list[tuple[int, int]] = ()) -> dict:
    """A COW file built byte by byte from ubdsim.cow.layouts: `version` 1, 2, 3 or "3-broken".

    `backing_file` is a path relative to the working directory (stored absolute, as every
    writer does) or an absolute one. `size`/`mtime` default to the backing file's.
    `written` = (first sector, count, tag): bits set and pattern data stored in the data area;
    `bitmap_only` = (first sector, count): bits set with no data (holes read as zeros).
    """
    return {"kind": "cow", "version": version, "backing": backing_file, "written": list(written),
            "size": size, "mtime": mtime, "alignment": alignment, "bitmap_only": list(bitmap_only)}


def mkcow(backing_file: str) -> dict:
    """A COW file written by the real `uml_mkcow` during the run (the oracle's own tool)."""
    return {"kind": "mkcow", "backing": backing_file}


def raw_bytes(data: bytes, size: int | None = None, mtime: int = FIXED_MTIME) -> dict:
    """A file holding exactly `data`, optionally extended to `size` with a hole."""
    return {"kind": "bytes", "data": data.hex(), "size": size, "mtime": mtime}


# ---- guest steps -------------------------------------------------------------------------

def write(dev: str, sector: int, count: int, tag: str, direct: bool = True,
          fsync: bool = False) -> dict:
    """dd `count` pattern sectors at `sector`; direct = O_DIRECT, else through the page cache."""
    return {"op": "write", "dev": dev, "sector": sector, "count": count, "tag": tag,
            "direct": direct, "fsync": fsync}


def read(dev: str, sector: int, count: int, direct: bool = True) -> dict:
    """dd `count` sectors from `sector`; prints bytes read and their sha256."""
    return {"op": "read", "dev": dev, "sector": sector, "count": count, "direct": direct}


def read_all(dev: str) -> dict:
    """Read the whole device; prints its length and sha256 (size and content at once)."""
    return {"op": "read_all", "dev": dev}


def size(dev: str) -> dict:
    """blockdev --getsize64 and --getro."""
    return {"op": "size", "dev": dev}


def discard(dev: str, sector: int, count: int) -> dict:
    """blkdiscard of a sector range."""
    return {"op": "discard", "dev": dev, "sector": sector, "count": count}


def sync() -> dict:
    return {"op": "sync"}


def mkfs(dev: str, discard_first: bool = False) -> dict:
    """mkfs.ext2 with a fixed UUID, hash seed and time, so its output is reproducible."""
    return {"op": "mkfs", "dev": dev, "discard": discard_first}


def fsck(dev: str) -> dict:
    """e2fsck -fn (read-only check); prints its exit status."""
    return {"op": "fsck", "dev": dev}


# ---- host steps --------------------------------------------------------------------------

def touch(path: str, mtime: int) -> dict:
    return {"op": "touch", "path": path, "mtime": mtime}


def move(src: str, dst: str) -> dict:
    """rename(2): same inode, same mtime."""
    return {"op": "move", "src": src, "dst": dst}


def copy(src: str, dst: str, preserve: bool) -> dict:
    """cp (new inode; mtime kept only with preserve, like cp -p)."""
    return {"op": "copy", "src": src, "dst": dst, "preserve": preserve}


def replace(path: str, size: int, tag: str, mtime: int) -> dict:
    """Rewrite a file with new pattern content (a new backing file under the old name)."""
    return {"op": "replace", "path": path, "size": size, "tag": tag, "mtime": mtime}


def chmod(path: str, mode: int) -> dict:
    return {"op": "chmod", "path": path, "mode": mode}


def remove(path: str) -> dict:
    return {"op": "remove", "path": path}


def poke(path: str, offset: int, data: bytes) -> dict:
    """Overwrite bytes in place (a damaged header, a guest-planted magic)."""
    return {"op": "poke", "path": path, "offset": offset, "data": data.hex()}


def lock(path: str, kind: str = "write") -> dict:
    """Held by a helper process for the whole boot: fcntl F_SETLK whole file."""
    return {"path": path, "kind": kind}
