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

A backing file that is itself a COW file is not refused, only warned about (`warnings`): UML
cannot stack, a kernel opens a backing file raw (ubd_kern.c ubd_open_dev():
open_ubd_file(..., NULL)), so the guest would see that file's header and bitmap as its first
sectors; but a user may mean exactly that (to study it). `profile` makes the file the way
that kernel creates one (FormatRules.created_version and created_alignment, and
DeviceRules.creation_trailing_byte for how its length is set) unless `version` is given, and
warns when the version asked is one that kernel cannot read.
"""
from __future__ import annotations

import errno as _errno
import os
import stat
from dataclasses import asdict, dataclass, field

from ..cow.create import Tail, create_cow
from ..cow.header import probe
from ..cow.layouts import MAGIC_AND_VERSION
from ..errors import RefusedFile
from ..fileio import kind_name, refuse_non_disk, refuse_same_file, shown
from ..profiles import Profile
from .chain import walk_chain
from .locks import refuse_if_locked

DEFAULT_VERSION = 3              # uml_mkcow's


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
    profile: str | None = None   # the kernel profile whose way of creating it was followed
    warnings: list[str] = field(default_factory=list)   # one line each, for stderr

    def as_dict(self) -> dict:
        return asdict(self)


def make_cow(cow: str, backing: str, *, version: int | None = None, force: bool = False,
             replace_non_cow: bool = False, profile: Profile | None = None) -> CreateResult:
    """Create `cow` over `backing` (uml_mkcow [-f] COW BACKING), refusing the footguns above.

    `version` None: the profile's created version, else uml_mkcow's (3)."""
    try:
        refuse_non_disk(os.stat(backing), backing, "backing file")
    except FileNotFoundError:
        pass                     # create_cow() reports it with the kernel's words
    existed = os.path.lexists(cow)
    if existed and force:
        _refuse_replacing(cow, backing, replace_non_cow)
    warnings = _stacking_warning(backing)
    alignment, tail = 4096, Tail.ZERO_BYTE
    if profile is not None:
        alignment = profile.format.created_alignment or alignment
        tail = Tail.ZERO_BYTE if profile.device.creation_trailing_byte else Tail.TRUNCATE
        if version is None:
            version = profile.format.created_version
        elif version not in profile.format.readable_versions:
            readable = ", ".join(f"V{v}" for v in sorted(profile.format.readable_versions))
            warnings.append(f"profile {profile.name} cannot read a V{version} header (it reads "
                            f"{readable}): named alone it would use '{shown(cow)}' raw, with a "
                            "backing file it refuses it")
    if version is None:
        version = DEFAULT_VERSION
    header = create_cow(cow, backing, version=version, alignment=alignment, exclusive=not force,
                        tail=tail)
    return CreateResult(cow=cow, backing=os.fsdecode(header.backing_path), version=header.version,
                        size=header.size, sectorsize=header.sectorsize,
                        alignment=header.alignment, replaced=existed,
                        profile=profile.name if profile else None, warnings=warnings)


def _stacking_warning(backing: str) -> list[str]:
    """One line when `backing` is itself a COW file (ops.chain looks without blocking)."""
    layer = walk_chain(backing, max_depth=1).layers[0]
    if not (layer.is_cow or layer.header_error):
        return []
    what = (f"a V{layer.header.version} COW file over '{shown(layer.header.backing_path)}'"
            if layer.header else "a file with the COW magic")
    return [f"the backing file '{shown(backing)}' is itself {what}: UML cannot stack, a kernel "
            "opens a backing file raw, so the guest will see its header and bitmap as the "
            f"first sectors of the disk; to layer on its contents, merge it first (`ubdsim moo "
            f"{shown(backing)} merged.img`) and make the COW file over the merged image"]


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
