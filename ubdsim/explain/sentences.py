"""The plain sentences explain and the hints print, each made from one prediction step's facts.

Every value in a sentence comes from a Step that predict.py built from the device model's own
decisions and the profile's data; nothing here decides what a kernel does. One function per
behaviour id, so explain's report and the hint listener say the same thing in the same words.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..doctor.findings import describe_runs
from ..fileio import shown
from ..profiles import PROFILES, Profile
from .predict import Step


def q(path: str | None) -> str:
    """A file name as people type it, quoted."""
    return f"'{shown(path)}'" if path is not None else "(none)"


def date(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def err(code: int | None) -> str:
    if not code:
        return "an error"
    return f"{os.strerror(code)}, errno {code}"


def nbytes(n: int) -> str:
    return f"{n} byte" + ("" if n == 1 else "s")


def sectors(n: int) -> str:
    return f"{n} sector" + ("" if n == 1 else "s")


def join(names: list[str]) -> str:
    return ", ".join(names)


# The first words of the kernel lines a sentence refers to, by message id.
_SAID = {"device.couldnt_stat": "Couldn't stat", "device.backing_mismatch": "Backing file mismatch",
         "device.switching": "Switching backing file", "device.size_mismatch": "Size mismatch",
         "device.mtime_mismatch": "mtime mismatch", "device.stat_failed": "Couldn't stat",
         "device.no_modtime": "Failed to get modification time"}


def said(msg_ids: list[str]) -> str:
    """`Backing file mismatch`, then `Switching backing file`: the lines, named."""
    names = [f"`{_SAID.get(m, m)}`" for m in msg_ids]
    return ", then ".join(names) if names else "no line"


def _size(d: dict, profile: Profile) -> str:
    rounding = (f"rounded up to a multiple of {d['granule']}" if d["rounds_up"]
                else f"rounded down to a multiple of {d['granule']}")
    return (f"the disk is sized at {d['size']} bytes ({sectors(d['size'] // 512)}): the size of "
            f"{q(d['source'])}, {rounding}")


def _size_none(d: dict, profile: Profile) -> str:
    what = "the backing file" if d["cow_named"] else "the file"
    by = ", which the COW header names," if d.get("by_header") else ""
    return (f"{what} {q(d['path'])}{by} cannot be sized ({err(d['errno'])}): the kernel cannot "
            "tell the device's size, so there is no disk for this unit at all")


def _not_scanned(d: dict, profile: Profile) -> str:
    return ("the device is empty (0 bytes): the disk is registered but nothing opens it at boot "
            "(no partition scan); what follows happens at the guest's first open of it")


def _create(d: dict, profile: Profile) -> str:
    tail = ("one zero byte written at its end" if d["trailing_byte"]
            else "extended to its length as a hole")
    text = (f"{q(d['path'])} does not exist: the kernel creates it as a V{d['version']} COW file "
            f"over {q(d['backing'])} (the path made absolute; size {d['size']}, mtime "
            f"{d['mtime']} = {date(d['mtime'])}): bitmap of {nbytes(d['bitmap_len'])} at offset "
            f"{d['bitmap_offset']}, data area at {d['data_offset']}, {d['length']} bytes long, "
            f"almost all a hole ({tail})")
    others = [name for name in _all_profiles() if name not in d["readable_by"]]
    if others:
        text += (f"; profile{'s' if len(others) > 1 else ''} {join(others)} cannot read a "
                 f"V{d['version']} header")
    return text


def _all_profiles() -> list[str]:
    return list(PROFILES)


def _create_failed(d: dict, profile: Profile) -> str:
    if d["why"] == "directory":
        return (f"{q(d['path'])} does not exist and cannot be created there ({err(d['errno'])}): "
                "the open fails")
    return f"creating {q(d['path'])} fails ({d['why']}): the open fails"


def _create_readonly(d: dict, profile: Profile) -> str:
    return (f"the unit is read-only (flag r) and {q(d['path'])} does not exist: the kernel creates "
            "an empty file, its header write fails with EBADF (errno 9) and the open fails, "
            f"leaving a 0-byte {q(d['path'])} behind")


def _raw(d: dict, profile: Profile) -> str:
    return (f"{q(d['path'])} has no COW header and no backing file is named: it is used raw, the "
            "device is the file itself")


def _raw_flag_d(d: dict, profile: Profile) -> str:
    return f"flag d: {q(d['path'])} is never probed for a COW header; it is used raw"


def header_span(d: dict) -> str:
    geometry = d.get("geometry")
    if not geometry:
        return "its header"
    last = (geometry["bitmap_offset"] + geometry["bitmap_len"] - 1) // 512
    return (f"its {geometry['header_bytes']}-byte header and its bitmap (sectors 0-{last} of the "
            "disk)")


def _raw_unreadable(d: dict, profile: Profile) -> str:
    readable = join([f"V{v}" for v in d["readable"]])
    what = (f"a V{d['version']} COW file" if d["version"] is not None
            else "a file with the COW magic")
    return (f"{q(d['path'])} is {what}, but this kernel reads only {readable} headers "
            f"({d['why']}); named without a backing file it is used RAW: the guest sees "
            f"{header_span(d)} as disk data, and its first write there destroys the header")


def _cow(d: dict, profile: Profile) -> str:
    geometry = d.get("geometry") or {}
    marked = d.get("marked")
    held = (f"{marked} of {sectors(geometry['sectors'])} in the COW file"
            if marked is not None and geometry else "")
    same = ""
    if d["named"] is not None and d["named"] != d["backing"]:
        same = f" ({q(d['named'])} on the command line is that same file)"
    if d.get("backing_size") in (None, d["size"]):
        matches = f"which has the header's size ({d['size']}) and mtime"
    else:
        matches = (f"which has the header's mtime but {d['backing_size']} bytes, fewer than the "
                   f"header's {d['size']}")
    return (f"{q(d['path'])} is a V{d['version']} COW file{f' ({held})' if held else ''} over "
            f"{q(d['backing'])}{same}, {matches}: the backing checks pass")


def _switch(d: dict, profile: Profile) -> str:
    why = " (which cannot be stat'ed)" if d["unstatable"] else ""
    text = (f"the command line names {q(d['new_backing'])}, the header {q(d['old_backing'])}"
            f"{why}; {q(d['new_backing'])} has the header's size ({d['size']}) and mtime, so the "
            f"kernel switches ({said(d['printed'])}): it rewrites the header at offset 0 as "
            f"V{d['new_version']} naming {q(d['stored'])}")
    if d["old_version"] == d["new_version"]:
        text += "; the bitmap and the data stay as they are"
    return text


def _switch_damage(d: dict, profile: Profile) -> str:
    text = (f"the file is V{d['old_version']}: the {d['header_bytes']}-byte V{d['new_version']} "
            f"header overwrites {d['bitmap_bytes_overwritten']} bytes of its bitmap")
    if d["bitmap_bytes_overwritten"]:
        last = d["old_bitmap_offset"] + d["bitmap_bytes_overwritten"] - 1
        text += (f" (bytes {d['old_bitmap_offset']}-{last}: the bits of sectors "
                 f"0-{d['bitmap_bytes_overwritten'] * 8 - 1}, {d['bits_lost']} of them set)")
    if d["data_bytes_overwritten"]:
        text += f" and {d['data_bytes_overwritten']} bytes of its data area"
    text += (f"; from then on the kernel reads the bitmap at {d['new_bitmap_offset']} (was "
             f"{d['old_bitmap_offset']}) and the data at {d['new_data_offset']} (was "
             f"{d['old_data_offset']}): {d['unreachable']} of the {sectors(d['marked'])} of guest "
             "data become unreachable")
    if d["unreachable_runs"]:
        text += f" ({describe_runs([tuple(r) for r in d['unreachable_runs']])})"
    text += f", and {sectors(d['misread'])} the guest never wrote now read bytes that are not theirs"
    if d["misread_runs"]:
        text += f" ({describe_runs([tuple(r) for r in d['misread_runs']])})"
    return text


def _switch_unstatable(d: dict, profile: Profile) -> str:
    if d["switches"]:
        return (f"the header's backing file {q(d['header_path'])} cannot be stat'ed (`Couldn't "
                f"stat`): this kernel takes that as another file and switches to "
                f"{q(d['requested'])} if it has the header's size and mtime")
    return (f"the header's backing file {q(d['header_path'])} cannot be stat'ed: this kernel "
            "counts a failed stat as \"the same file\", so it never switches to "
            f"{q(d['requested'])} and goes on with the header's own path")


def _switch_refused(d: dict, profile: Profile) -> str:
    return (f"{q(d['requested'])} is not the header's backing file {q(d['header_path'])} and lacks "
            "its size or mtime: no switch; the kernel checks the header's own path next")


def _switch_failed(d: dict, profile: Profile) -> str:
    return f"the header rewrite fails ({err(d['errno'])}): `Switch failed`, the open fails"


def _refuse_header(d: dict, profile: Profile) -> str:
    readable = join([f"V{v}" for v in d["readable"]])
    if d["magic"]:
        what = (f"a COW header this kernel cannot read ({d['why']}; it reads {readable})")
    else:
        what = "no COW header (no COW magic)"
    return (f"{q(d['path'])} has {what}, and a backing file ({q(d['backing'])}) is named: "
            "`Failed to read COW header`, the open fails; nothing is written")


def _refuse_size(d: dict, profile: Profile) -> str:
    text = (f"the header of {q(d['cow'])} says {d['header_size']} bytes, the backing file "
            f"{q(d['path'])} has {d['size']}: `Size mismatch`, the open fails (errno 22); nothing "
            "is written")
    if d.get("grown"):
        text += ("; every sector past the backing file's end is marked: a COW file grown by the "
                 "COW-resize patch, which only a kernel with that patch accepts")
    return text


def _refuse_mtime(d: dict, profile: Profile) -> str:
    return (f"the header of {q(d['cow'])} says mtime {d['header_mtime']} ({date(d['header_mtime'])}), "
            f"the backing file {q(d['path'])} has {d['mtime']} ({date(d['mtime'])}): `mtime "
            "mismatch`, the open fails (errno 22); nothing is written")


def _refuse_backing(d: dict, profile: Profile) -> str:
    return (f"the backing file {q(d['path'])} cannot be used ({err(d['errno'])}): the open fails; "
            "nothing is written")


def _refuse_open(d: dict, profile: Profile) -> str:
    return f"{q(d['path'])} cannot be opened ({err(d['errno'])}): the open fails"


def _refuse_locked(d: dict, profile: Profile) -> str:
    return (f"{q(d['path'])} is locked by process {d['pid']} (another kernel using it?): `Failed "
            "to lock`, the open fails; nothing is written")


def _refuse_vmalloc(d: dict, profile: Profile) -> str:
    return ("the backing file is empty, so the bitmap has 0 bytes: `Failed to vmalloc COW "
            "bitmap`, the open fails")


def _refuse_sectorsize(d: dict, profile: Profile) -> str:
    return (f"the header of {q(d['path'])} gives sector size {d['sectorsize']}: the kernel "
            "would divide by zero; ubdsim refuses the unit with a line of its own")


def _not_a_disk(d: dict, profile: Profile) -> str:
    return (f"the {d['role']} {q(d['path'])} is {d['kind']}, not a disk image: explain does not "
            "open it (a kernel would block or fail on it) and cannot say what this unit does")


def _lock(d: dict, profile: Profile) -> str:
    if d["kind"] == "write":
        return (f"the kernel takes a whole-file write lock (fcntl F_WRLCK) on {q(d['path'])}: "
                "while the device is open, a second kernel opening it is refused")
    return (f"it takes a read lock (F_RDLCK) on the backing file {q(d['path'])}: other kernels "
            "may share it, a writer's lock is refused")


def _lock_none(d: dict, profile: Profile) -> str:
    return ("this kernel takes no host locks: two kernels on one file both write it and "
            "corrupt it")


def _lock_shared(d: dict, profile: Profile) -> str:
    return f"flag c: no host lock on {q(d['path'])} (`Not locking`)"


def _readonly_fallback(d: dict, profile: Profile) -> str:
    return (f"{q(d['path'])} cannot be opened for writing (permissions or a read-only file "
            "system): the kernel opens it read-only and the unit becomes read-only")


def _readonly(d: dict, profile: Profile) -> str:
    if d["fails_open"]:
        return "the unit is read-only: a guest open of it for writing fails with EROFS"
    return ("the unit is read-only, yet a guest open of it for writing succeeds; each write "
            "then fails with EPERM")


def _resize(d: dict, profile: Profile) -> str:
    refusers = d.get("refusers") or []
    text = (f"the size field asks for {d['new_size']} bytes, {q(d['path'])} covers "
            f"{d['old_size']}: the COW-resize patch grows it (`*** Resizing cow file: "
            f"{d['old_length']} -> {d['new_length']}`): a longer bitmap, the data area moved "
            f"{d['shift']} bytes further into the file, sectors {d['marked_from']}-"
            f"{d['marked_to'] - 1} marked (they read zeros, never the backing file), header "
            f"size {d['new_size']}")
    if refusers:
        text += (f"; from then on {join(refusers)} and uml_moo refuse the file (`Size "
                 "mismatch`); `ubdsim moo` merges it into the grown disk")
    return text


def _resize_same(d: dict, profile: Profile) -> str:
    return "the size field equals the COW file's size: nothing to resize"


_WHY = {"smaller": "it would shrink", "readonly": "the unit is read-only",
        "not_regular": "it is not a regular file", "linked": "it has other hard links (a grown "
        "copy renamed into place would split them)"}


def _resize_refused(d: dict, profile: Profile) -> str:
    return (f"{q(d['path'])} is not resized from {d['old_size']} to {d['new_size']} bytes: "
            f"{_WHY.get(d['why'], d['why'])} (ubdsim's rule and line: the patch's are lost); "
            "the open fails, nothing is changed")


def _resize_ignored(d: dict, profile: Profile) -> str:
    return "the size field only grows COW files: it does nothing for this raw unit"


def _grown(d: dict, profile: Profile) -> str:
    return (f"the header's size ({d['header_size']}) is larger than the backing file: a file grown "
            "by the COW-resize patch, its tail all marked, which this kernel accepts: the device "
            f"has {d['size']} bytes")


def _stacking(d: dict, profile: Profile) -> str:
    what = f"V{d['version']} over {q(d['its_backing'])}" if d["version"] else "with the COW magic"
    below = f" and never the data of {q(d['its_backing'])}" if d["its_backing"] else ""
    size = f"{d['header_bytes']}-byte " if d["header_bytes"] else ""
    return (f"the backing file {q(d['path'])} is itself a COW file ({what}): UML cannot stack, "
            f"it opens a backing file raw, so the guest sees its {size}header and its bitmap as "
            f"disk data{below}")


def _unpredicted(d: dict, profile: Profile) -> str:
    return (f"the open fails with an error explain does not predict ({d['why']}); the device "
            "model reports it without a kernel line")


SENTENCES: dict[str, Callable[[dict, Profile], str]] = {
    "unpredicted": _unpredicted,
    "size": _size, "size.none": _size_none, "not_scanned": _not_scanned, "create": _create,
    "create.failed": _create_failed, "create.readonly": _create_readonly, "raw": _raw,
    "raw.flag_d": _raw_flag_d, "raw.unreadable_cow": _raw_unreadable, "cow": _cow,
    "switch": _switch, "switch.damage": _switch_damage, "switch.unstatable": _switch_unstatable,
    "switch.refused": _switch_refused, "switch.failed": _switch_failed,
    "refuse.header": _refuse_header, "refuse.size": _refuse_size, "refuse.mtime": _refuse_mtime,
    "refuse.backing": _refuse_backing, "refuse.open": _refuse_open,
    "refuse.locked": _refuse_locked, "refuse.vmalloc": _refuse_vmalloc,
    "refuse.sectorsize": _refuse_sectorsize, "not_a_disk": _not_a_disk, "lock": _lock,
    "lock.none": _lock_none, "lock.shared": _lock_shared,
    "readonly.fallback": _readonly_fallback, "readonly": _readonly, "resize": _resize,
    "resize.same": _resize_same, "resize.refused": _resize_refused,
    "resize.ignored": _resize_ignored, "grown": _grown, "stacking": _stacking,
}


def sentence(step: Step, profile: Profile) -> str:
    return SENTENCES[step.behaviour](step.data, profile)


__all__ = ["SENTENCES", "date", "err", "q", "sectors", "sentence"]
