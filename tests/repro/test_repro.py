"""`ubdsim repro`: each scenario reproduces its damage and its safe way is clean.

6.1 scenarios run twice, guest steps under `ubdsim run` and under linux.uml (the oracle
launcher), and must show the same damage: the same steps met, the same exit statuses, the
same output where a step says its output is the kernel's to decide (`same`). 2.4 scenarios
are judged by the spec's description, which the scenario's own expectations spell out."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from ubdsim.repro.catalog import get, load_all
from ubdsim.repro.runner import Report, run_scenario

from .uml_backend import LinuxUmlBackend

REQUIRED = {"two-umls-one-image", "two-guests-one-cow", "backing-modified", "moved-without-cp-p",
            "moo-d-shared-backing", "stacking-line", "reversed-order", "mkcow-f-reversed",
            "v3-alone-2-4", "switch-v2-v3", "do-io-drift", "rounding-bug", "flush-not-durable",
            "resize-interrupted", "full-host-disk"}


def _ubdsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ubdsim", "repro", *args], capture_output=True,
                          text=True, timeout=120)


def _assert_ok(report: Report) -> None:
    assert report.ok, f"{report.scenario} [{report.profile}, {report.backend}]: " + \
        "; ".join(report.differences())


def test_list_show_and_usage_errors():
    listed = json.loads(_ubdsim("list", "--json").stdout)
    assert {s["name"] for s in listed} == REQUIRED == set(load_all())
    shown = _ubdsim("show", "switch-v2-v3")
    assert shown.returncode == 0 and "write_cow_header()" in shown.stdout and "$ ubdsim rebase" in shown.stdout
    for args, text in ((("run", "nope"), "unknown scenario 'nope'"),
                       (("run", "do-io-drift", "--kernel", "2.4"), "supports the profiles 6.1")):
        done = _ubdsim(*args)
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and text in done.stderr


@pytest.mark.parametrize("name,profile", [("two-umls-one-image", "2.4"), ("two-guests-one-cow", "2.4"),
                                          ("v3-alone-2-4", "2.4"), ("rounding-bug", "2.4"),
                                          ("resize-interrupted", "2.4"),
                                          ("flush-not-durable", "6.1")])
def test_scenario_reproduces_under_ubdsim(name, profile):
    _assert_ok(run_scenario(get(name), profile))


# Every 6.1 scenario but flush-not-durable, whose guest runs under `ubdsim run --record` for
# `ubdsim crash` (linux.uml has no recorder; its host-sync side is kernel_ref's host_syncs).
ON_LINUX_UML = sorted(n for n, sc in load_all().items()
                      if "6.1" in sc.profiles and n != "flush-not-durable")


@pytest.mark.parametrize("name", ON_LINUX_UML)
def test_6_1_scenario_shows_the_same_damage_under_linux_uml(name):
    scenario = get(name)
    # The two runs use their own directories: run them side by side (2 cores).
    with ThreadPoolExecutor(2) as pool:
        kernel_run = pool.submit(run_scenario, scenario, "6.1", backend=LinuxUmlBackend())
        ours = run_scenario(scenario, "6.1")
        kernel = kernel_run.result()
    _assert_ok(kernel)
    _assert_ok(ours)
    pairs = list(zip(ours.steps, kernel.steps, strict=True))
    assert [a.status for a, _ in pairs] == [b.status for _, b in pairs]
    for a, b in pairs:
        if a.same:
            assert _kernel_view(a.output, ours) == _kernel_view(b.output, kernel), a.say


def _kernel_view(output: str, report: Report) -> list[str]:
    """The output without the run's directory name and ubdsim's own hint lines."""
    return [line.replace(report.directory, "DIR") for line in output.splitlines()
            if not line.startswith("ubdsim: hint:")]

