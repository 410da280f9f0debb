"""explain(): a command line and its files in, per profile and per unit what the kernel will do.

For each profile asked: the command line parsed as that kernel parses it (ubdsim.cmdline), the
options it rejects, each configured unit's prediction (predict.py) as sentences that carry their
provenance, and the kernel lines the boot prints; then the common mistakes over all profiles
(mistakes.py). `ok` is True when every unit opens under every profile asked and no option is
rejected (the command's exit status 0).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ..cmdline import ParseResult, UnitSpec, parse_command_line
from ..cmdline.parse import ROOT_FS
from ..messages import text_of
from ..profiles import Profile
from .mistakes import Mistake, label, merge, profile_mistakes, summary
from .predict import UnitPrediction, predict_unit
from .provenance import ProfileProvenance, line_provenance, profile_provenance, provenance
from .sentences import q, sentence

# Parse-time lines that report an effect, not a rejected option.
_INFORMATIONAL = ("cmdline.fake_major", "cmdline.fake_major_gone")


@dataclass(frozen=True)
class Statement:
    behaviour: str
    text: str
    provenance: str


@dataclass(frozen=True)
class UnitExplanation:
    unit: int
    disk: str
    summary: str
    label: str                          # a few words, for the side-by-side table
    statements: list[Statement]
    prediction: UnitPrediction

    @property
    def opens(self) -> bool:
        return self.prediction.opens


@dataclass
class ProfileExplanation:
    profile: str
    summary: str
    provenance: ProfileProvenance
    refusal: str | None                 # UML refuses the whole command line (add_arg())
    parse_lines: list[str]              # the lines the option parsers print, in order
    rejected: list[str]                 # those that reject an option
    units: list[UnitExplanation]
    mistakes: list[Mistake] = field(default_factory=list)

    @property
    def console(self) -> list[str]:
        """The ubd driver's lines of the whole boot, in print order."""
        lines = list(self.parse_lines)
        for unit in self.units:
            lines += unit.prediction.lines
        return lines

    @property
    def failed_units(self) -> list[int]:
        return [u.unit for u in self.units if not u.opens]

    @property
    def ok(self) -> bool:
        return self.refusal is None and not self.rejected and not self.failed_units


@dataclass
class ExplainReport:
    words: list[str]
    profiles: list[ProfileExplanation]
    mistakes: list[Mistake]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.profiles)

    def as_dict(self) -> dict:
        out = {"words": self.words, "ok": self.ok, "profiles": [], "mistakes":
               [m.as_dict() for m in self.mistakes]}
        for p in self.profiles:
            out["profiles"].append({
                "profile": p.profile, "summary": p.summary, "provenance": p.provenance.as_dict(),
                "ok": p.ok, "refusal": p.refusal, "parse_lines": p.parse_lines,
                "rejected": p.rejected, "console": p.console, "failed_units": p.failed_units,
                "units": [{"unit": u.unit, "disk": u.disk, "summary": u.summary,
                           "label": u.label, "opens": u.opens,
                           "statements": [asdict(s) for s in u.statements],
                           "prediction": u.prediction.as_dict()} for u in p.units]})
        return out


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"(%[-\d]*(?:ll|l|z)?[dus])", template)
    return re.compile("^" + "".join(".*?" if p.startswith("%") else re.escape(p) for p in parts) + "$")


def rejected_lines(parsed: ParseResult, profile: Profile) -> list[str]:
    """The parse-time lines that reject an option (the informational ones left out)."""
    patterns = []
    for msg_id in _INFORMATIONAL:
        try:
            patterns.append(_pattern(text_of(msg_id, profile.kernel_family)))
        except KeyError:
            continue
    return [line for line in parsed.parse_messages if not any(p.match(line) for p in patterns)]


def _cmdline_statements(spec: UnitSpec, profile: Profile) -> list[tuple[str, str]]:
    out = []
    if spec == UnitSpec(0, ROOT_FS.decode()):
        out.append(("cmdline.root_fs", f"unit 0 is {q(spec.file)}: the file unit 0 gets when no "
                                       "option configures it"))
    third = profile.cmdline.third_field
    if spec.size is not None:
        out.append(("cmdline.third_size", f"the third field is a size: {spec.size} bytes"))
    if spec.serial is not None:
        out.append(("cmdline.third_serial", f"the third field '{spec.serial}' is the disk's serial; "
                                            "no file is opened for it"))
    if third is None and spec.backing is not None and "," in spec.backing:
        out.append(("cmdline.backing_rest", f"everything after the first comma is the backing "
                                            f"file's name: {q(spec.backing)}"))
    return out


def explain_unit(spec: UnitSpec, profile: Profile) -> UnitExplanation:
    prediction = predict_unit(spec, profile)
    statements = [Statement(b, text, provenance(b, profile).kind)
                  for b, text in _cmdline_statements(spec, profile)]
    for step in prediction.steps:
        statements.append(Statement(step.behaviour, sentence(step, profile),
                                    provenance(step.behaviour, profile).kind))
    short = label(prediction)
    if statements and statements[0].behaviour == "cmdline.root_fs":
        short = f"{spec.file} (default): {short}"
    return UnitExplanation(unit=spec.unit, disk=prediction.disk,
                           summary=summary(prediction, profile), label=short,
                           statements=statements, prediction=prediction)


def explain_parsed(parsed: ParseResult, profile: Profile) -> ProfileExplanation:
    """One profile's explanation of an already parsed command line."""
    units = [explain_unit(spec, profile) for _, spec in sorted(parsed.units.items())]
    explanation = ProfileExplanation(
        profile=profile.name, summary=profile.summary, provenance=profile_provenance(profile),
        refusal=parsed.refusal.text if parsed.refusal else None,
        parse_lines=list(parsed.messages), rejected=rejected_lines(parsed, profile), units=units)
    explanation.mistakes = profile_mistakes(parsed, profile,
                                            {u.unit: u.prediction for u in units})
    return explanation


def explain(words: list[str], profiles: list[Profile]) -> ExplainReport:
    """What each of `profiles` does with the command line `words` and the files it names."""
    explained = [explain_parsed(parse_command_line(words, profile), profile) for profile in profiles]
    mistakes = merge([m for p in explained for m in p.mistakes])
    return ExplainReport(words=list(words), profiles=explained, mistakes=mistakes)


def kernel_line_provenance(prediction: UnitPrediction, profile: Profile) -> list[str]:
    """The provenance of each kernel line of a prediction (ubdsim's own texts marked)."""
    return [line_provenance(msg_id, profile) for msg_id in prediction.line_ids]


__all__ = ["ExplainReport", "ProfileExplanation", "Statement", "UnitExplanation", "explain",
           "explain_parsed", "explain_unit", "rejected_lines"]
