"""The catalogue: every module in scenarios/ defines one SCENARIO; names are unique.

Checked when loaded, before anything runs: a name in lower-case-with-dashes, known profiles,
an explanation for each profile, and a join for every background guest.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

from . import scenarios as _package
from .model import PROFILES, Scenario

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class UnknownScenario(KeyError):
    pass


def _check(scenario: Scenario, where: str) -> None:
    if not _NAME.match(scenario.name):
        raise ValueError(f"{where}: name {scenario.name!r} is not lower-case-with-dashes")
    bad = [p for p in scenario.profiles if p not in PROFILES]
    if bad or not scenario.profiles:
        raise ValueError(f"{where}: unknown or no profiles {bad}")
    unexplained = [p for p in scenario.profiles if not scenario.explanation(p)]
    if unexplained:
        raise ValueError(f"{where}: no explanation for {unexplained}")
    for steps in (scenario.setup + scenario.damage, scenario.setup + scenario.safe):
        started = {s.guest.background for s in steps if s.guest and s.guest.background}
        joined = {s.join for s in steps if s.join}
        if started != joined:
            raise ValueError(f"{where}: background guests {sorted(started ^ joined)} not joined")


def load_all() -> dict[str, Scenario]:
    """Every scenario by name, in the modules' order (their names sort as they should show)."""
    found: dict[str, Scenario] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        scenario = dataclasses.replace(module.SCENARIO, module=info.name)
        _check(scenario, f"scenarios/{info.name}.py")
        if scenario.name in found:
            raise ValueError(f"scenario {scenario.name!r} is defined twice")
        found[scenario.name] = scenario
    return found


def get(name: str) -> Scenario:
    table = load_all()
    if name not in table:
        raise UnknownScenario(name)
    return table[name]
