"""explain's report for people: per profile, per unit, sentences with their provenance, then the
kernel lines, then the mistakes with their fixes and the verdict."""
from __future__ import annotations

from ..fileio import shown
from .provenance import LABELS
from .report import ExplainReport, ProfileExplanation

_TAG = {"linux.uml": "linux.uml", "reconstructed": "reconstructed", "ubdsim": "ubdsim"}


def _indent(text: str, prefix: str) -> list[str]:
    """A kernel line may hold a newline (2.4's `Backing file mismatch`): indent each part."""
    return [prefix + part for part in text.split("\n")]


def _profile_lines(p: ProfileExplanation) -> list[str]:
    lines = [f"== {p.profile}: {p.summary}", f"   provenance: {p.provenance.text}"]
    if p.refusal is not None:
        lines += [f"   UML refuses the command line before the kernel starts: {p.refusal}",
                  "   nothing is opened"]
        return lines
    for line in p.rejected:
        lines += _indent(line, "   rejected option: ")
    for unit in p.units:
        spec = unit.prediction
        over = f" over {shown(spec.backing)}" if spec.backing is not None else ""
        verdict = "opens" if unit.opens else "does NOT open"
        lines.append(f"   unit {unit.unit} ({unit.disk}): {shown(spec.file)}{over}: {verdict}")
        for s in unit.statements:
            lines.append(f"     - {s.text} [{_TAG[s.provenance]}]")
    console = p.console
    lines.append("   kernel lines:" if console else "   kernel lines: none")
    for line in console:
        lines += _indent(line, "     ")
    for unit in p.units:
        if unit.prediction.first_open_lines:
            lines.append(f"   kernel lines at the guest's first open of unit {unit.unit}:")
            for line in unit.prediction.first_open_lines:
                lines += _indent(line, "     ")
    return lines


def _side_by_side(report: ExplainReport) -> list[str]:
    """One row per unit, one column per profile: what each kernel does with it."""
    names = [p.profile for p in report.profiles]
    units = sorted({u.unit for p in report.profiles for u in p.units})
    rows = [["unit", *names]]
    for n in units:
        row = [str(n)]
        for p in report.profiles:
            found = next((u for u in p.units if u.unit == n), None)
            row.append(found.label if found else "not configured")
        rows.append(row)
    if any(p.rejected for p in report.profiles):
        rows.append(["options", *[f"{len(p.rejected)} rejected" if p.rejected else "-"
                                  for p in report.profiles]])
    if any(p.refusal for p in report.profiles):
        rows.append(["line", *["refused by UML" if p.refusal else "-" for p in report.profiles]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def render_text(report: ExplainReport) -> str:
    lines: list[str] = []
    if len(report.profiles) > 1:
        lines += _side_by_side(report) + [""]
    for p in report.profiles:
        lines += _profile_lines(p) + [""]
    if report.mistakes:
        lines.append("mistakes:")
        for m in report.mistakes:
            where = f"unit {m.unit}, " if m.unit is not None else ""
            lines.append(f"  * {m.id} ({where}{', '.join(m.profiles)}): {m.text}")
            if len(set(m.per_profile.values())) > 1:
                for name, what in m.per_profile.items():
                    lines.append(f"      {name}: {what}")
            lines.append(f"      fix: {m.fix} [{_TAG['ubdsim']}]")
        lines.append("")
    lines.append("provenance: " + "; ".join(f"[{_TAG[k]}] {v}" for k, v in LABELS.items()))
    if report.ok:
        lines.append("verdict: every unit opens under " + ", ".join(p.profile for p in report.profiles))
    else:
        bad = []
        for p in report.profiles:
            why = []
            if p.refusal is not None:
                why.append("command line refused")
            if p.rejected:
                why.append(f"{len(p.rejected)} option(s) rejected")
            if p.failed_units:
                why.append("unit " + ", ".join(map(str, p.failed_units)) + " would not open")
            if why:
                bad.append(f"{p.profile}: {'; '.join(why)}")
        lines.append("verdict: " + " | ".join(bad))
    return "\n".join(lines)


__all__ = ["render_text"]
