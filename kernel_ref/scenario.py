"""Loading and checking scenario data from kernel_ref/scenarios/*.py.

Each module there defines `SCENARIOS`, a list of dicts spelled with kernel_ref/steps.py.
Names are unique across modules and name the golden file; a scenario is rejected here, before
anything runs, when it uses an unknown key or step.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

from . import scenarios as _package

_SCENARIO_KEYS = {"name", "about", "files", "options", "boots"}
_BOOT_KEYS = {"guest", "host", "options", "locks", "ro_dirs", "run_as", "immutable"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _check(scn: dict, where: str) -> dict:
    unknown = set(scn) - _SCENARIO_KEYS
    if unknown or not {"name", "about", "boots"} <= set(scn):
        raise ValueError(f"{where}: bad scenario keys {sorted(unknown) or sorted(scn)}")
    if not _NAME.match(scn["name"]):
        raise ValueError(f"{where}: scenario name {scn['name']!r} is not lower-case-with-dashes")
    scn.setdefault("files", {})
    scn.setdefault("options", [])
    if not scn["boots"]:
        raise ValueError(f"{where}: {scn['name']} has no boot")
    for boot in scn["boots"]:
        bad = set(boot) - _BOOT_KEYS
        if bad:
            raise ValueError(f"{where}: {scn['name']}: unknown boot keys {sorted(bad)}")
        boot.setdefault("guest", [])
        boot.setdefault("host", [])
    return scn


def load_all() -> dict[str, dict]:
    """Every scenario, by name, in module then list order."""
    found: dict[str, dict] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        for scn in module.SCENARIOS:
            scn = _check(dict(scn), f"scenarios/{info.name}.py")
            if scn["name"] in found:
                raise ValueError(f"scenario {scn['name']!r} is defined twice")
            scn["module"] = info.name
            found[scn["name"]] = scn
    return found


def select(names: list[str], everything: bool) -> list[dict]:
    table = load_all()
    if everything:
        return list(table.values())
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"unknown scenario(s): {', '.join(missing)} (see `python -m kernel_ref list`)")
    return [table[n] for n in names]
