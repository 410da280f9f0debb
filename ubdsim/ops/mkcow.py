"""`ubdsim mkcow`: create a COW file, after the checks uml_mkcow never made.

uml_mkcow -f writes over whatever its first argument names. Found by a hostile tester:
`mkcow -f b.img b.img` (or a link to b.img) turned the backing file into an empty COW file
over itself; `-f` over a COW file a running 6.1 guest holds locked left the guest writing
into an unlinked inode; the mailing-list order `mkcow -f BACKING COW` replaced a shared image
with a COW header. So before anything is written: the backing file must be a regular file
or a block device (what `moo` and the kernel's size check accept); `-f` never replaces the
backing file itself, a file another process holds locked, or a file that is not a COW file
(unless `replace_non_cow` says the user means it). An empty file counts as replaceable: it
is what a failed uml_mkcow leaves behind.
"""
from __future__ import annotations

import errno as _errno
import os
import stat
from dataclasses import asdict, dataclass

from ..cow.create import create_cow
from ..cow.header import probe
from ..cow.layouts import MAGIC_AND_VERSION
from ..errors import RefusedFile
from ..fileio import kind_name, refuse_non_disk, refuse_same_file, shown
from .locks import refuse_if_locked


@dataclass(frozen=True)
class CreateResult:
    """What `mkcow` wrote (its `--json` summary)."""

    cow: str
    backing: str                 # as stored in the header: absolute, directory links resolved
    version: int
    size: int
    sectorsize: int
    alignment: int
    replaced: bool               # an existing COW file was replaced (-f)

    def as_dict(self) -> dict:
        return asdict(self)


def make_cow(cow: str, backing: str, *, version: int = 3, force: bool = False,
             replace_non_cow: bool = False) -> CreateResult:
    """Create `cow` over `backing` (uml_mkcow [-f] COW BACKING), refusing the footguns above."""
    try:
        refuse_non_disk(os.stat(backing), backing, "backing file")
    except FileNotFoundError:
        pass                     # create_cow() reports it with the kernel's words
    existed = os.path.lexists(cow)
    if existed and force:
        _refuse_replacing(cow, backing, replace_non_cow)
    header = create_cow(cow, backing, version=version, exclusive=not force)
    return CreateResult(cow=cow, backing=os.fsdecode(header.backing_path), version=header.version,
                        size=header.size, sectorsize=header.sectorsize,
                        alignment=header.alignment, replaced=existed)


def _refuse_replacing(cow: str, backing: str, replace_non_cow: bool) -> None:
    refuse_same_file(cow, {"backing file": backing}, "replace")
    try:
        st = os.stat(cow)
    except FileNotFoundError:
        return                   # a dangling symlink: create_cow() creates its target
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile(f"'{shown(cow)}' is {kind_name(st.st_mode)}, not a regular file: "
                          "not replacing it", errno=_errno.EINVAL)
    refuse_if_locked(cow, shown(cow))
    fd = os.open(cow, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        head = os.pread(fd, MAGIC_AND_VERSION, 0)
    finally:
        os.close(fd)
    if head and probe(head) is None and not replace_non_cow:
        raise RefusedFile(f"'{shown(cow)}' exists and is not a COW file (no COW magic): -f replaces "
                          "only COW files; if you really mean to destroy it, use "
                          "--replace-non-cow", errno=_errno.EEXIST)


__all__ = ["CreateResult", "make_cow"]
