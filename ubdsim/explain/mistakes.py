"""The common mistakes explain flags, each with its fix.

A mistake is read from facts already gathered: the profile's parse of the command line (its
units, its options as the kernel cut them, and CmdlineRules: what the third field is), the
predictions (predict.py steps: a V3 file used raw, a backing file that is a COW file, a switch
over an old version, a refusal), and what ops.chain saw in the files. The one reading of
ubdsim's own is what the user meant by commas: `ubd0=a,b,c` split at every comma is the user's
intent (three files, or COW, backing and a 2.4 size), compared with what the kernel made of it.
"""
from __future__ import annotations

import errno
from dataclasses import asdict, dataclass, field

from ..cmdline import ParseResult, UnitSpec
from ..cmdline.numbers import memparse
from ..fileio import same_file
from ..profiles import PROFILES, Profile
from .predict import Step, UnitPrediction
from .sentences import date, q, sentence


@dataclass
class Mistake:
    id: str
    unit: int | None
    text: str
    fix: str
    profiles: list[str]
    per_profile: dict[str, str] = field(default_factory=dict)   # what each profile does
    subject: str | None = None     # what the mistake is about when not a unit (an option's text)

    def as_dict(self) -> dict:
        return asdict(self)


def is_size(text: str | None) -> bool:
    """Would the [resize] size field take `text` whole (memparse, nothing left over)?"""
    if not text:
        return False
    raw = text.encode("utf-8", "surrogateescape")
    _, end = memparse(raw)
    return end == len(raw)


def _layer(prediction: UnitPrediction, role: str) -> dict | None:
    chain = prediction.files.get(role)
    return chain["layers"][0] if chain and chain["layers"] else None


def _step(prediction: UnitPrediction, behaviour: str) -> Step | None:
    return next((s for s in prediction.steps if s.behaviour == behaviour), None)


def summary(prediction: UnitPrediction, profile: Profile) -> str:
    """The one sentence that says what happens to the unit in the end."""
    for behaviour in ("switch.damage", "raw.unreadable_cow", "stacking", "refuse.header",
                      "refuse.size", "refuse.mtime", "refuse.locked", "refuse.backing",
                      "refuse.open", "refuse.vmalloc", "refuse.sectorsize", "resize.refused",
                      "switch.failed", "create.failed", "create.readonly", "size.none",
                      "not_a_disk", "switch", "resize", "create", "cow", "raw", "raw.flag_d",
                      "not_scanned"):
        step = _step(prediction, behaviour)
        if step is not None:
            return sentence(step, profile)
    return prediction.outcome


_REASONS = {"refuse.size": "Size mismatch", "refuse.mtime": "mtime mismatch",
            "refuse.header": "no readable COW header", "refuse.backing": "backing file unusable",
            "refuse.open": "cannot open the file", "refuse.vmalloc": "empty backing file",
            "refuse.sectorsize": "sector size 0", "resize.refused": "resize refused",
            "switch.failed": "switch failed", "create.failed": "cannot create",
            "create.readonly": "read-only, leaves a 0-byte file", "size.none": "cannot be sized",
            "not_a_disk": "not a disk image"}


def label(prediction: UnitPrediction) -> str:
    """What happens to the unit, in a few words (explain's side-by-side table)."""
    steps = {s.behaviour: s for s in prediction.steps}
    ro = ", read-only" if prediction.readonly else ""
    if "refuse.locked" in steps:
        return f"refused: locked by pid {steps['refuse.locked'].data['pid']}"
    reason = next((text for behaviour, text in _REASONS.items() if behaviour in steps), None)
    if reason == _REASONS["refuse.backing"] and steps["refuse.backing"].data.get("errno") == errno.ENOENT:
        reason = "backing file missing"
    outcome = prediction.outcome
    if outcome == "refuse":
        return ("at first open: " if prediction.deferred else "") + f"refused: {reason or 'open fails'}"
    if outcome == "no-disk":
        return f"no disk: {reason or 'cannot be sized'}"
    if outcome == "unknown":
        return f"not predicted: {reason or 'unknown'}"
    if outcome == "create":
        text = f"creates V{prediction.created['version']}"
    elif outcome == "switch":
        damage = prediction.damage
        text = f"switches, writes V{prediction.version}"
        if damage is not None and damage.harmful:
            text += f": {damage.unreachable}/{damage.marked} sectors lost"
    elif outcome == "raw":
        text = "opens RAW over a COW header" if "raw.unreadable_cow" in steps else "opens raw"
    else:
        text = f"opens V{prediction.version} COW"
    if "resize" in steps:
        text += f", grows to {steps['resize'].data['new_size']}"
    if "stacking" in steps:
        text += ", backing is a COW file"
    text += ro
    return f"at first open: {text}" if prediction.deferred else text


def _flags(spec: UnitSpec, profile: Profile) -> str:
    """The flag letters of `spec` that a unit with a backing file can carry, as the profile
    spells them (CmdlineRules.flag_letters, in that order)."""
    have = {"r": spec.readonly, "s": spec.sync, "c": spec.shared, "t": spec.no_trim}
    return "".join(letter for letter in profile.cmdline.flag_letters if have.get(letter))


def profile_mistakes(parsed: ParseResult, profile: Profile,
                     predictions: dict[int, UnitPrediction]) -> list[Mistake]:
    """The mistakes of one profile's reading of the command line."""
    found: list[Mistake] = []

    def add(mid: str, unit: int | None, text: str, fix: str, what: str,
            subject: str | None = None) -> None:
        found.append(Mistake(mid, unit, text, fix, [profile.name], {profile.name: what}, subject))

    for n, spec in sorted(parsed.units.items()):
        p = predictions.get(n)
        if p is None:
            continue
        outcome = summary(p, profile)
        _swapped(spec, p, profile, outcome, add)
        _third_field(spec, p, profile, add)
        for behaviour, check in _BY_STEP.items():
            step = _step(p, behaviour)
            if step is not None:
                check(spec, p, profile, step, outcome, add)
    _stacking_lines(parsed, profile, predictions, add)
    for option in parsed.options:
        if option.startswith("udb"):
            what = ("prints the TYPO warning and ignores the option" if profile.cmdline.udb_typo_catcher
                    else "ignores the option without a word (it goes to init)")
            add("udb_typo", None, f"`{option}`: the driver's options are spelled ubd, not udb",
                f"`ubd{option[3:]}`", what, subject=option)
    return found


def _swapped(spec: UnitSpec, p: UnitPrediction, profile: Profile, outcome: str, add) -> None:
    if spec.backing is None:
        return
    top, below = _layer(p, "file"), _layer(p, "backing")
    if not top or not top["exists"] or top["error"] or top["is_cow"] or top["header_error"]:
        return
    if below is None:
        return
    if not below["exists"]:
        how = "does not exist"
    elif below["is_cow"] and below["header"] and same_file(below["header"]["backing_file"], spec.file):
        how = f"is a COW file over {q(spec.file)}"
    else:
        return
    add("swapped", spec.unit,
        f"{q(spec.file)} exists and is not a COW file, and {q(spec.backing)} {how}: "
        f"ubd{spec.unit}=COW,BACKING names the COW file first, so the two look swapped",
        f"`ubd{spec.unit}{_flags(spec, profile)}={spec.backing},{spec.file}`", outcome)


def _third_field(spec: UnitSpec, p: UnitPrediction, profile: Profile, add) -> None:
    third = profile.cmdline.third_field
    if third == "serial" and is_size(spec.serial):
        value, _ = memparse(spec.serial.encode("utf-8", "surrogateescape"))
        growers = [name for name, other in PROFILES.items() if other.device.resize_patch]
        add("size_as_serial", spec.unit,
            f"the third field '{spec.serial}' looks like a COW-resize size ({value} bytes), but "
            "this kernel takes the third field as the disk's serial: the device keeps its "
            f"backing file's size{f' ({p.size} bytes)' if p.size is not None else ''}",
            f"drop the third field; only {', '.join(growers)} (the COW-resize patch) grows a COW "
            "file: run the unit once under that profile with the size, or merge it "
            "(`ubdsim moo`) and grow the merged image",
            f"'{spec.serial}' is the serial of /dev/{p.disk}")
    if third is None and spec.backing and "," in spec.backing:
        name, _, tail = spec.backing.rpartition(",")
        if is_size(tail):
            add("size_in_backing_name", spec.unit,
                f"',{tail}' looks like a COW-resize size, but this kernel has no resize patch: "
                f"everything after the first comma is the backing file's name, "
                f"{q(spec.backing)}",
                f"drop ',{tail}' (`ubd{spec.unit}={spec.file},{name}`), or use a profile with "
                "the COW-resize patch",
                f"the backing file is {q(spec.backing)}")


def _stacking_lines(parsed: ParseResult, profile: Profile,
                    predictions: dict[int, UnitPrediction], add) -> None:
    """`ubd0=a,b,c`: three files on one unit (the user's commas, split at every comma)."""
    for option in parsed.options:
        if not option.startswith("ubd") or option.startswith("ubd=") or "=" not in option:
            continue
        fields = option.split("=", 1)[1].split(",")
        if len(fields) < 3 or (len(fields) == 3 and is_size(fields[2])):
            continue
        a, b, c = fields[0], fields[1], ",".join(fields[2:])
        unit = next((n for n, s in parsed.units.items() if s.file == a), None)
        spec = parsed.units.get(unit) if unit is not None else None
        third = profile.cmdline.third_field
        if third == "size":
            if spec is None:
                rejected = [line for line in parsed.parse_messages if c in line] or parsed.parse_messages
                what = (f"the third field is a size (the COW-resize patch): '{c}' is not one, so "
                        f"the option is rejected ({'; '.join(f'`{m}`' for m in rejected)}) and "
                        "the unit is not configured")
            else:
                what = f"the third field is a size: {spec.size} bytes"
        elif third == "serial":
            what = (f"'{c}' becomes the disk's serial; {q(b)} is the backing file, opened raw "
                    "(a COW file there shows the guest its header)")
        else:
            what = (f"everything after the first comma is the backing file's name: "
                    f"{q(spec.backing) if spec else q(b + ',' + c)}")
        n = unit if unit is not None else "N"
        add("stacking_line", unit,
            f"`{option}` names three files ({q(a)}, {q(b)}, {q(c)}): no UML kernel ever stacked "
            "COW files; a unit has one COW file and one backing file",
            f"merge the lower layers into one image first (`ubdsim moo {b} merged.img` merges "
            f"{q(b)} with its backing file), then give the unit one COW file over that image "
            f"(`ubdsim mkcow new.cow merged.img`, `ubd{n}=new.cow,merged.img`)", what,
            subject=option)


def _cow_used_raw(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    top = _layer(p, "file")
    backing = top["header"]["backing_file"] if top and top["header"] else "BACKING"
    readers = [name for name, other in PROFILES.items()
               if d["version"] in other.format.readable_versions]
    version = profile.format.created_version
    add("cow_used_raw", spec.unit, sentence(step, profile),
        f"name its backing file (`ubd{spec.unit}={spec.file},{backing}`): this kernel then refuses "
        "the unit instead of letting the guest overwrite the header; to use the disk under this "
        f"profile, merge it (`ubdsim moo {spec.file} merged.img`) and make a V{version} COW file "
        f"over the result (`ubdsim mkcow --kernel {profile.name} new.cow merged.img`)"
        + (f"; or boot a kernel that reads V{d['version']} ({', '.join(readers)})" if readers else ""),
        outcome)


def _backing_is_cow(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    add("backing_is_cow", spec.unit, sentence(step, profile),
        f"merge {q(d['path'])} into a whole image (`ubdsim moo {d['path']} merged.img`) and use a "
        "COW file made over that image (`ubdsim mkcow new.cow merged.img`)", outcome)


def _backing_changed(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    marked = d.get("marked")
    held = f"the {marked} sectors in the COW file" if marked is not None else "the COW file's sectors"
    add("backing_changed", spec.unit,
        f"the backing file {q(d['path'])} changed after {q(d['cow'])} was made (mtime "
        f"{date(d['header_mtime'])} in the header, {date(d['mtime'])} now): modified, or copied "
        "or moved without keeping its mtime (`cp` without `-p`)",
        f"if its content did not change, `ubdsim rebase -b {d['path']} {d['cow']}` compares the "
        "sectors the COW file does not hold with the old backing file and rewrites the header "
        "(for the very file changed in place it needs --trust-new: only if you know). The "
        f"HOWTO's trick, `touch -d @{d['header_mtime']} {d['path']}`, makes the kernel accept it "
        f"with no check at all: if the content did change, {held} lie over different data and "
        "the guest's file system is likely corrupt", outcome)


def _size_differs(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    if d.get("grown"):
        growers = [name for name, other in PROFILES.items() if other.device.accepts_grown_cow]
        add("grown_cow", spec.unit,
            f"{q(d['cow'])} was grown past its backing file by the COW-resize patch",
            f"use it under {', '.join(growers)}, or merge it into the grown disk "
            f"(`ubdsim moo {d['cow']} grown.img`) and make a new COW file over that", outcome)
        return
    add("backing_size_differs", spec.unit,
        f"{q(d['path'])} is not the disk {q(d['cow'])} was made over ({d['size']} bytes, the "
        f"header says {d['header_size']}): another image, or a truncated or grown copy",
        f"name the backing file the COW file was made over (`ubdsim info {d['cow']}` shows the "
        "header's path and size)", outcome)


def _move_not_followed(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    if d["switches"] or not d.get("requested_matches"):
        return
    add("move_not_followed", spec.unit,
        f"the header's backing file {q(d['header_path'])} is gone and {q(d['requested'])} has "
        "its size and mtime: it was moved. This kernel cannot follow a move: a failed stat of "
        "the header's path counts as the same file, so it never switches",
        f"put the file back at {q(d['header_path'])} (a symlink there is enough), or rewrite "
        f"the header with `ubdsim rebase -b {d['requested']} {spec.file}` (it keeps the header's "
        "version, so every profile can use the file)", outcome)


def _switch_destroys(spec, p, profile, step, outcome, add) -> None:
    d = step.data
    switch = _step(p, "switch")
    new_backing = switch.data["new_backing"] if switch else "NEW"
    repair = (" After the fact, `ubdsim repair` rebuilds the V2 file (check: header.v3_over_v2) "
              "as long as the guest wrote nothing after the switch."
              if (d["old_version"], d["new_version"]) == (2, 3) else "")
    add("switch_destroys", spec.unit,
        f"this kernel's backing switch rewrites {q(d['path'])} as V{d['new_version']} over its "
        f"V{d['old_version']} bitmap: {d['unreachable']} of the {d['marked']} sectors of guest "
        "data become unreachable",
        f"before booting this kernel, point the header at the new path with `ubdsim rebase -b "
        f"{new_backing} {spec.file}` (it keeps V{d['old_version']}: the kernel then has nothing "
        f"to switch).{repair}", sentence(step, profile))


_BY_STEP = {"raw.unreadable_cow": _cow_used_raw, "stacking": _backing_is_cow,
            "refuse.mtime": _backing_changed, "refuse.size": _size_differs,
            "switch.unstatable": _move_not_followed, "switch.damage": _switch_destroys}


def merge(mistakes: list[Mistake]) -> list[Mistake]:
    """One entry per (id, unit) over all profiles, each profile's reading kept."""
    merged: dict[tuple, Mistake] = {}
    for m in mistakes:
        key = (m.id, m.subject) if m.subject is not None else (m.id, m.unit)
        if key not in merged:
            merged[key] = Mistake(m.id, m.unit, m.text, m.fix, list(m.profiles), dict(m.per_profile),
                                  m.subject)
        else:
            kept = merged[key]
            kept.profiles += [p for p in m.profiles if p not in kept.profiles]
            kept.per_profile.update(m.per_profile)
            if kept.unit is None and m.unit is not None:
                kept.unit, kept.fix = m.unit, m.fix
    return list(merged.values())


__all__ = ["Mistake", "is_size", "label", "merge", "profile_mistakes", "summary"]
