"""Text and JSON for `ubdsim repro show` and `run`: the commands as a user would type them,
then their output, then the explanation, the safe way, and the verdict."""
from __future__ import annotations

import textwrap

from .model import Scenario, Step
from .runner import Report, UbdsimBackend, expand

MAX_LINES = 40               # output lines shown per step in text (--json keeps them all)


def _command(step: Step, profile: str) -> str:
    if step.guest is not None:
        return UbdsimBackend().command(step.guest, profile)
    if step.join is not None:
        return f"(wait for the guest '{step.join}')"
    return expand(step.run, profile).replace(expand("{ubdsim}", profile), "ubdsim")


def _wants(step: Step) -> str:
    parts = []
    if step.expect is not None:
        parts.append("exit " + " or ".join(map(str, step.expect)))
    parts += [f"shows {t!r}" for t in step.shows] + [f"not {t!r}" for t in step.hides]
    return ", ".join(parts)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=96)


def _steps(scenario: Scenario, steps: tuple[Step, ...], profile: str) -> list[str]:
    out = []
    for step in (s for s in steps if s.applies(profile)):
        out += [f"# {step.say}  [{_wants(step)}]", f"$ {_command(step, profile)}"]
    return out


def render_scenario(scenario: Scenario, profile: str) -> str:
    lines = [f"{scenario.name} [{profile}]: {scenario.title}",
             f"profiles: {', '.join(scenario.profiles)}", ""]
    if scenario.setup:
        lines += ["-- setup (run before the damage and again before the safe way)",
                  *_steps(scenario, scenario.setup, profile), ""]
    lines += ["-- the damage", *_steps(scenario, scenario.damage, profile), "",
              "-- why", _wrap(scenario.explanation(profile)), "",
              "-- the safe way", *_steps(scenario, scenario.safe, profile)]
    return "\n".join(lines)


def scenario_dict(scenario: Scenario, profile: str) -> dict:
    def steps(items: tuple[Step, ...]) -> list[dict]:
        return [{"say": s.say, "kind": s.kind, "command": _command(s, profile),
                 "expect": list(s.expect) if s.expect is not None else None,
                 "shows": list(s.shows), "hides": list(s.hides)}
                for s in items if s.applies(profile)]
    return {"name": scenario.name, "title": scenario.title, "profile": profile,
            "profiles": list(scenario.profiles), "setup": steps(scenario.setup),
            "damage": steps(scenario.damage), "explanation": scenario.explanation(profile),
            "safe": steps(scenario.safe)}


def _output(text: str) -> list[str]:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES] + [f"... ({len(lines) - MAX_LINES} more lines; --json has them)"]
    return ["  " + line for line in lines]


def render_report(report: Report) -> str:
    lines = [f"{report.scenario} [{report.profile}]: {report.title}",
             f"in {report.directory}" + (" (kept)" if report.kept else " (removed afterwards)")]
    phase = None
    for step in report.steps:
        if step.phase != phase:
            phase = step.phase
            if phase == "safe":
                lines += ["", "-- why", _wrap(report.explanation)]
            lines += ["", {"setup": "-- setup", "damage": "-- the damage",
                           "safe": "-- the safe way"}[phase]]
        lines += [f"# {step.say}", f"$ {step.command.replace(expand('{ubdsim}', report.profile), 'ubdsim')}",
                  *_output(step.output)]
        status = "none (killed)" if step.status is None else str(step.status)
        lines.append(f"  [exit {status}: {'as expected' if step.met else step.differed}]")
    if not any(s.phase == "safe" for s in report.steps):
        lines += ["", "-- why", _wrap(report.explanation)]
    lines.append("")
    if report.ok:
        lines.append("verdict: reproduced (the damage shown, the safe way clean)")
    else:
        lines.append("verdict: NOT reproduced; what differed:")
        lines += [f"  {d}" for d in report.differences()]
    return "\n".join(lines)
