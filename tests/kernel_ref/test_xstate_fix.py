"""The XSAVE fix (kernel_ref/native/uml_xstate_fix.c, decided by kernel_ref/xstate.py),
judged by the real kernel on whatever host this is.

- The decision: the fix is preloaded exactly when the host's XSAVE area exceeds the buffer
  linux.uml passes. Both sizes are observed, not assumed: the host's by ptrace (xstate.py) and
  by CPUID, linux.uml's by the library itself, which reports the length linux.uml hands it.
  The kernel then confirms the decision: without the fix it dies at its first process exactly
  where the host needs the fix, and boots where it does not.
- The state: a multithreaded guest whose threads keep AVX-512 state live across context
  switches (tests/kernel_ref/guests/xstate_threads.c) computes the same hashes under linux.uml
  as natively, with the fix as decided and, where the host does not need it, forced on.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kernel_ref import launcher, xstate

GUESTS = Path(__file__).resolve().parent / "guests"
THREADS, ROUNDS = 4, 200


def _compile(source: str, target: Path, *flags: str) -> Path:
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", *flags, "-o", str(target),
                    str(GUESTS / source)], check=True, capture_output=True)
    return target


def _reports(path: Path) -> dict[str, dict[str, int]]:
    """The library's lines, by kind ("applied": at its first XSTATE call, "exit")."""
    found = {}
    for line in path.read_text().splitlines():
        _, kind, *fields = line.split()
        found[kind] = {key: int(value) for key, value in (f.split("=") for f in fields)}
    return found


def test_the_fix_is_applied_exactly_when_the_host_xsave_area_exceeds_linux_umls_buffer(
        tmp_path, monkeypatch):
    report = tmp_path / "report.txt"
    monkeypatch.setenv("UBDSIM_XSTATE_REPORT", str(report))
    forced = launcher.boot([], ["true"], cwd=tmp_path, xstate_fix="on")
    assert forced.status == 0 and forced.fix.applied, forced.problem
    seen = _reports(report)["exit"]
    cpuid = int(subprocess.run([str(_compile("xsave_size.c", tmp_path / "xsave_size"))],
                               check=True, capture_output=True, text=True).stdout)
    # the host's size, three ways: ptrace here, ptrace inside linux.uml, CPUID
    assert seen["host"] == xstate.host_xstate_bytes() == cpuid
    # the buffer length linux.uml itself passes is the one the decision is made against
    assert seen["uml"] == xstate.LINUX_UML_XSTATE_BYTES
    assert seen["gets"] > 0 and seen["sets"] > 0 and seen["overflow"] == 0
    needed = seen["host"] > seen["uml"]
    auto = launcher.boot([], ["true"], cwd=tmp_path)
    assert auto.status == 0 and auto.fix.applied == needed and auto.fix.mode == "auto"
    if needed:
        with pytest.raises(launcher.KernelUnavailable) as died:
            launcher.boot([], ["true"], cwd=tmp_path, xstate_fix="off")
        assert str(died.value).endswith("userspace - ptrace set fp regs failed, errno = 14")
    else:
        assert launcher.boot([], ["true"], cwd=tmp_path, xstate_fix="off").status == 0


def test_threads_keep_their_vector_state_under_linux_uml(tmp_path, monkeypatch):
    program = _compile("xstate_threads.c", tmp_path / "xstate_threads", "-pthread")
    native = subprocess.run([str(program), str(THREADS), str(ROUNDS)], check=True,
                            capture_output=True, text=True).stdout
    assert len(native.splitlines()) == THREADS
    modes = ["auto"] if xstate.decide("auto").applied else ["auto", "on"]
    for mode in modes:
        report = tmp_path / f"report-{mode}.txt"
        monkeypatch.setenv("UBDSIM_XSTATE_REPORT", str(report))
        run = launcher.boot([], [str(program), str(THREADS), str(ROUNDS)], cwd=tmp_path,
                            xstate_fix=mode, timeout=300)
        assert run.status == 0, run.problem + run.errors
        assert run.output == native, f"XSAVE fix {mode}: {run.fix.describe()}"
        if run.fix.applied:
            seen = _reports(report)["exit"]
            # every guest thread's regs->fp got a shadow of its own, and none was lost
            assert seen["buffers"] > THREADS and seen["overflow"] == 0
            assert seen["sets"] > THREADS * ROUNDS         # at least one switch per yield
