"""Every prediction of `ubdsim explain`, cross-checked against ubdsim's device model opening the
same files on a scratch copy, under every profile.

For each scenario and profile, a fresh copy is built; explain runs on it and must leave every
byte, size and mtime as it was; then the device model boots the very same files (boot_disks()
on a real EventBus, as `ubdsim run` does) and must print exactly the predicted kernel lines,
per unit, open exactly the units predicted to open, with the errno, read-only state, device
size, header version and backing file predicted, and emit the create/switch/resize events the
prediction names. A switch predicted to damage the file is checked by reading the whole
device through the model: the sectors that changed are exactly the predicted unreachable and
misread ones.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ubdsim.explain import explain
from ubdsim.explain.predict import CREATE, SWITCH
from ubdsim.profiles import PROFILES

from .oracle import boot_model, differing_sectors, marked_sectors, snapshot, tool_view
from .scenarios import SCENARIOS

CASES = [(name, profile) for name in SCENARIOS for profile in PROFILES]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _check(prediction, booted, n: int) -> None:
    name = f"unit {n} ({prediction.profile}, {prediction.outcome})"
    assert prediction.lines == booted.lines.get(n, []), name
    if prediction.deferred:             # [6.1] an empty disk: the guest's first open decides
        assert n in booted.disks and n not in booted.failures, name
        assert prediction.first_open_lines == booted.first_open[n]["lines"], name
        assert prediction.opens == booted.first_open[n]["opens"], name
        return
    assert prediction.opens == (n not in booted.failures), name
    if not prediction.opens:
        if n in booted.failures:
            assert booted.failures[n].errno == prediction.errno, name
        return
    state = booted.state[n]
    assert state["readonly"] == prediction.readonly, name
    assert state["size"] == prediction.size == state["disk_size"], name
    assert state["version"] == prediction.version, name
    assert state["backing"] == prediction.backing_used, name
    kinds = [(kind, data) for kind, unit, data in booted.events if unit == n]
    creates = [d for k, d in kinds if k == "create"]
    switches = [d for k, d in kinds if k == "switch"]
    resizes = [d for k, d in kinds if k == "resize"]
    assert (prediction.outcome == CREATE) == bool(creates), name
    if creates:
        assert creates[0]["version"] == prediction.created["version"], name
    assert (prediction.outcome == SWITCH) == bool(switches), name
    if switches:
        assert switches[0]["version"] == prediction.version, name
    assert bool(prediction.resize) == bool(resizes), name
    if resizes:
        assert (resizes[0]["old_length"], resizes[0]["new_length"]) == (
            prediction.resize["old_length"], prediction.resize["new_length"]), name


@pytest.mark.parametrize("name,profile", CASES)
def test_prediction_matches_the_device_model(scratch, name, profile):
    scenario, profile = SCENARIOS[name], PROFILES[profile]
    scenario.build()
    before = snapshot()
    report = explain(scenario.words, [profile])
    assert snapshot() == before, "explain changed a file"
    explained = report.profiles[0]
    damaged = [u.prediction for u in explained.units
               if u.prediction.damage is not None and u.prediction.damage.harmful]
    old_views = {p.unit: (tool_view(p.file, p.backing_used), marked_sectors(p.file))
                 for p in damaged}
    booted = boot_model(scenario.words, profile, read_units=bool(damaged))
    assert explained.parse_lines == booted.parse_lines
    assert sorted(u.unit for u in explained.units) == sorted(
        set(booted.lines) | booted.disks | set(booted.failures) | {u.unit for u in explained.units})
    for unit in explained.units:
        _check(unit.prediction, booted, unit.unit)
    for p in damaged:
        old, marked = old_views[p.unit]
        changed = differing_sectors(old, booted.views[p.unit])
        d = p.damage
        assert len(changed & marked) == d.unreachable
        assert len(changed - marked) == d.misread
        assert len(marked) == d.marked
    assert report.ok == (all(u.opens for u in explained.units) and not explained.rejected)


def test_every_seed_case_is_covered_under_every_profile():
    """The issue's seeds, each explained under all profiles (and so cross-checked above)."""
    for seed in ("reversed", "stacking", "v3_alone", "moved", "switch_v2"):
        assert all((seed, p) in CASES for p in PROFILES)


LOCK_HOLDER = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("profile,flags", [(p, "") for p in PROFILES] + [
    (p, "c") for p, rules in PROFILES.items() if "c" in rules.cmdline.flag_letters])
def test_locked_cow_file(scratch, profile, flags):
    """A COW file another process holds F_WRLCK: 6.1 refuses with the holder's pid (flag c:
    `Not locking`, opens), 2.4 takes no locks. Predicted, then opened by the model."""
    SCENARIOS["cow_ok"].build()
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, "guest.cow"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        words = [f"ubd0{flags}=guest.cow,base.img"]
        report = explain(words, [PROFILES[profile]])
        prediction = report.profiles[0].units[0].prediction
        booted = boot_model(words, PROFILES[profile])
        _check(prediction, booted, 0)
        if PROFILES[profile].device.takes_locks and not flags:
            assert prediction.lock_holder == holder.pid
            assert f"F_SETLK failed, file already locked by pid {holder.pid}" in prediction.lines
            assert not prediction.opens
        else:
            assert prediction.opens
    finally:
        holder.stdin.close()
        holder.wait()


READONLY_RUN = r"""
import json, sys
sys.path[:0] = [sys.argv[1]]
from tests.explain.oracle import boot_model
from ubdsim.explain import explain
from ubdsim.profiles import PROFILES
out = {}
for name, profile in PROFILES.items():
    report = explain(["ubd0=guest.cow,base.img"], [profile])
    p = report.profiles[0].units[0].prediction
    b = boot_model(["ubd0=guest.cow,base.img"], profile)
    out[name] = {"lines": p.lines, "got": b.lines.get(0, []), "readonly": p.readonly,
                 "model_readonly": b.state.get(0, {}).get("readonly"),
                 "steps": [s.behaviour for s in p.steps]}
print(json.dumps(out))
"""


def test_readonly_fallback_on_a_read_only_file_system(scratch):
    """EROFS on the writable open: the unit becomes read-only (predicted and opened inside a
    private mount namespace where the directory is a read-only bind mount)."""
    import json
    SCENARIOS["cow_ok"].build()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && cd "$1" && '
                        'shift && exec "$@"', "sh", str(scratch),
                        sys.executable, "-c", READONLY_RUN, root],
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    for name, got in out.items():
        assert got["lines"] == got["got"], name
        assert got["readonly"] is True and got["model_readonly"] is True, name
        assert "readonly.fallback" in got["steps"], name
