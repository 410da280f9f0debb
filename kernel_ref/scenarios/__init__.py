"""Scenario data, one module per behaviour area; each module defines SCENARIOS (a list of
dicts spelled with kernel_ref/steps.py). Add a scenario by appending a dict, then record
the kernel's outcome with `python -m kernel_ref capture NAME`."""
