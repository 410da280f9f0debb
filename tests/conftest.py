"""Suite-wide hooks: the oracle's state in the report header, and one-line oracle failures.

Every test that needs the real kernel boots it through kernel_ref.launcher, which raises
KernelUnavailable when linux.uml cannot run on this host. Such a test fails (it never skips:
the oracle is the point) and its report is that one line, not a traceback and a kernel log.
"""
from __future__ import annotations

import pytest

from kernel_ref import launcher


def pytest_report_header(config) -> str:
    try:
        return f"linux.uml: {launcher.require_kernel().describe()}"
    except launcher.KernelUnavailable as err:
        return f"linux.uml: CANNOT RUN, every oracle test will fail: {err}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(launcher.KernelUnavailable):
        report.longrepr = f"linux.uml cannot run here: {call.excinfo.value}"
