"""`ubdsim explain`: exit codes, text and --json output, provenance, and the promise never to
write or block."""
from __future__ import annotations

import json
import os

import pytest

from tests.cow.builders import UBDSIM, run
from ubdsim.cli import COMMANDS, main
from ubdsim.explain import explain
from ubdsim.explain.provenance import (BEHAVIOURS, LINUX_UML, RECONSTRUCTED, UBDSIM as OWN,
                                       profile_provenance, provenance)
from ubdsim.explain.sentences import SENTENCES
from ubdsim.profiles import PROFILES

from .oracle import snapshot
from .scenarios import SCENARIOS


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _explain(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(["explain", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_listed_as_a_command():
    assert COMMANDS["explain"][0] == "ubdsim.cli.explain"


def test_exit_status(scratch, capsys):
    SCENARIOS["cow_ok"].build()
    assert _explain(capsys, "ubd0=guest.cow,base.img")[0] == 0
    assert _explain(capsys, "--kernel", "all", "ubd0=guest.cow,base.img")[0] == 0
    assert _explain(capsys, "--kernel", "all", "ubd0=base.img,guest.cow")[0] == 1
    # opens under 6.1 only: `all` fails, 6.1 alone succeeds
    assert _explain(capsys, "--kernel", "all", "ubd0=guest.cow,base.img,2M")[0] == 1
    assert _explain(capsys, "--kernel", "6.1", "ubd0=guest.cow,base.img,2M")[0] == 0
    status, out, err = _explain(capsys)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("ubdsim explain: error: ")


def test_unknown_kernel_is_a_usage_error(scratch):
    r = run([UBDSIM, "explain", "--kernel", "2.6", "ubd0=x"])
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("seed", ["reversed", "stacking", "v3_alone", "moved", "switch_v2"])
def test_seeds_text_all_profiles(scratch, seed):
    """Through the installed command: every profile explained, the mistake named, a verdict."""
    SCENARIOS[seed].build()
    before = snapshot()
    r = run([UBDSIM, "explain", "--kernel", "all", *SCENARIOS[seed].words])
    assert snapshot() == before and "Traceback" not in r.stderr
    for name in PROFILES:
        assert f"== {name}: " in r.stdout
    expected = {"reversed": "swapped", "stacking": "stacking_line", "v3_alone": "cow_used_raw",
                "moved": "move_not_followed", "switch_v2": "switch_destroys"}[seed]
    assert f"  * {expected} (" in r.stdout and "      fix: " in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("verdict: ")
    report = explain(SCENARIOS[seed].words, list(PROFILES.values()))
    assert r.returncode == (0 if report.ok else 1)


def test_json_carries_provenance_everywhere(scratch, capsys):
    SCENARIOS["size_field"].build()
    status, out, _ = _explain(capsys, "--kernel", "all", "--json", "ubd0=guest.cow,base.img,2M")
    data = json.loads(out)
    assert status == 1 and data["ok"] is False
    assert [p["profile"] for p in data["profiles"]] == list(PROFILES)
    by_name = {p["profile"]: p for p in data["profiles"]}
    assert by_name["6.1"]["provenance"]["kind"] == LINUX_UML
    assert by_name["2.4"]["provenance"]["parts"] == {"driver": RECONSTRUCTED,
                                                     "resize patch": RECONSTRUCTED}
    for p in data["profiles"]:
        for unit in p["units"]:
            for s in unit["statements"]:
                assert s["provenance"] == provenance(s["behaviour"], PROFILES[p["profile"]]).kind
    kinds = {s["behaviour"]: s["provenance"] for s in by_name["2.4"]["units"][0]["statements"]}
    assert kinds["resize"] == RECONSTRUCTED and kinds["cow"] == RECONSTRUCTED
    kinds = {s["behaviour"]: s["provenance"] for s in by_name["6.1"]["units"][0]["statements"]}
    assert kinds["cow"] == LINUX_UML and kinds["cmdline.third_serial"] == LINUX_UML
    assert {m["id"] for m in data["mistakes"]} == {"size_as_serial", "size_in_backing_name"}
    assert by_name["2.4"]["console"] == ["*** Resizing cow file: 1053184 -> 2102272"]


def test_provenance_table():
    assert set(SENTENCES) <= set(BEHAVIOURS)
    two_four, six_one = PROFILES["2.4"], PROFILES["6.1"]
    assert provenance("switch", six_one).kind == LINUX_UML
    assert provenance("switch", two_four).kind == RECONSTRUCTED
    assert provenance("resize", two_four).kind == RECONSTRUCTED
    assert provenance("resize.refused", two_four).kind == OWN
    assert provenance("refuse.sectorsize", six_one).kind == OWN
    assert provenance("advice", six_one).kind == OWN
    for profile in PROFILES.values():
        prov = profile_provenance(profile)
        assert prov.kind == (LINUX_UML if profile.has_oracle else RECONSTRUCTED)
        assert ("resize patch" in prov.parts) == profile.device.resize_patch


def test_every_scenario_statement_has_a_known_behaviour(scratch):
    for name, scenario in SCENARIOS.items():
        os.makedirs(name)
        os.chdir(name)
        scenario.build()
        for p in explain(scenario.words, list(PROFILES.values())).profiles:
            for unit in p.units:
                assert unit.statements, (name, p.profile)
                for s in unit.statements:
                    assert s.behaviour in BEHAVIOURS and s.text and s.provenance in (
                        LINUX_UML, RECONSTRUCTED, OWN)
        os.chdir("..")


def test_never_creates_a_missing_cow_file(scratch, capsys):
    SCENARIOS["create"].build()
    status, out, _ = _explain(capsys, "--kernel", "all", "ubd0=guest.cow,base.img")
    assert status == 0 and "creates it as a V2 COW file" in out and "as a V3 COW file" in out
    assert not os.path.exists("guest.cow")


def test_never_blocks_on_a_fifo(scratch):
    """A FIFO named as the file or the backing file is reported, not opened (an open of a FIFO
    with no writer would wait forever; the subprocess's timeout only guards the suite)."""
    SCENARIOS["cow_ok"].build()
    os.mkfifo("pipe")
    for words in (["ubd0=pipe"], ["ubd0=x.cow,pipe"], ["ubd0=guest.cow,pipe"]):
        r = run([UBDSIM, "explain", "--kernel", "all", *words])
        assert r.returncode == 1 and "Traceback" not in r.stderr, words
        assert "is a FIFO, not a disk image" in r.stdout, words
    assert not os.path.exists("x.cow")


def test_switch_damage_claims_match_check(scratch):
    """explain says `ubdsim check` will report header.v3_over_v2 after the 6.1 switch and that
    `ubdsim repair` can rebuild the file: after the device model's switch, it does."""
    from ubdsim.ops.check import check
    from ubdsim.profiles import get_profile

    from .oracle import boot_model
    SCENARIOS["switch_v2"].build()
    report = explain(SCENARIOS["switch_v2"].words, [get_profile("6.1")])
    assert "header.v3_over_v2" in report.mistakes[0].fix
    boot_model(SCENARIOS["switch_v2"].words, get_profile("6.1"))
    findings = {f.id: f for f in check("v2.cow").findings}
    assert findings["header.v3_over_v2"].repair == "rebuild-v2"
