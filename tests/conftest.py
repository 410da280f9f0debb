"""Suite-wide hooks: the oracle's state in one line at the start, and one-line oracle failures;
and the `tmp` fixture of the tool tests (the test's own directory, made the working one).

Every test that needs the real kernel boots it through kernel_ref.launcher, which raises
KernelUnavailable when linux.uml cannot run on this host. Such a test fails (it never skips:
the oracle is the point) and its report is that one line, not a traceback and a kernel log.
"""
from __future__ import annotations

import pytest

from kernel_ref import launcher


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """tmp_path as the working directory: the tools are run on relative file names, as a
    user types them (a module may define its own `tmp` that also makes files there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_sessionstart(session) -> None:
    """One line on whether linux.uml runs here and whether the XSAVE fix is applied, shown
    at every verbosity (the report header is not shown under -q)."""
    try:
        line = f"linux.uml: {launcher.require_kernel().describe()}"
    except launcher.KernelUnavailable as err:
        line = f"linux.uml: CANNOT RUN, every oracle test will fail: {err}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(launcher.KernelUnavailable):
        report.longrepr = f"linux.uml cannot run here: {call.excinfo.value}"
