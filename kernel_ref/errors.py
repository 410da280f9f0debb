"""The one error of the launcher: the real kernel cannot run on this machine.

Its message is a single line that names the cause (not installed, no ptrace, the line the
kernel died with), so that every oracle test fails with that line instead of a kernel log
(tests/conftest.py shortens such failures to it).
"""
from __future__ import annotations


class KernelUnavailable(RuntimeError):
    """linux.uml cannot run on this machine; the message says why, in one line."""
