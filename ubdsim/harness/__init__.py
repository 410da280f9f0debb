"""The guest harness behind `ubdsim run`: ordinary programs see `/dev/ubdX` as a block device.

Layers, top to bottom (the strace/PRoot/gVisor models of the architecture notes):

- `syscalls/table.py`  which system calls are intercepted and who answers them (data);
- `syscalls/*.py`      one module per family, each handler returns a `syscalls.result` value;
- `fdstate.py`, `pagecache.py`, `nodes.py`, `device_unit.py`   the block-device file
                       semantics they share; `rules.py` the era differences (from the profile);
- `transport/`         how the calls are caught: a seccomp filter built from the table and a
                       ptrace loop that emulates at the seccomp stop.
"""
from .rules import HarnessRules
from .session import run_guest

__all__ = ["HarnessRules", "run_guest"]
