"""What a kernel will do with a command line and its files, told before it happens: `explain`.

This package owns the predictions `ubdsim explain` makes (for each unit, under each profile:
create, open raw, open a COW file, switch its backing file and what that overwrites, refuse
and why, fall back to read-only, lock, resize), the common mistakes it flags with their fixes
(COW and backing swapped, the stacking line `ubd0=a,b,c`, a 2.4 size given to 6.1, a V3 file
alone under 2.4, a backing file that is itself a COW file, a changed or moved backing file),
the provenance of every behaviour it describes (checked against linux.uml, reconstructed from
sources and descriptions, or ubdsim's own), and the hint listener that prints
`ubdsim: hint: ...` lines when the device model does the damage. Predictions never write and
never block: the files are looked at through the guarded readers (ubdsim.fileio,
ubdsim.ops.chain), and each decision is the device model's own function (ubdsim.device.open)
run on a log that only collects lines; where open.py's control flow has side effects it is
mirrored step by step in `predict.py`, and tests/explain cross-checks every prediction against
what the device model does on a scratch copy (and, for 6.1, what linux.uml does).
"""
from __future__ import annotations

import importlib

# Imported on first use: `add_hint_options` (options.py) must stay cheap for commands whose
# --help should not load the device model (numpy, ctypes).
_LAZY = {"ExplainReport": "report", "explain": "report", "UnitPrediction": "predict",
         "predict_unit": "predict"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
