"""One guest run: the units, the open descriptions, guest memory, and the dispatcher that
the tracer calls at every seccomp stop."""
from __future__ import annotations

import errno
import os
import sys
import time
from typing import Mapping, Sequence

from ..device.api import BlockDevice
from ..errors import UbdError
from . import nodes
from .device_unit import Unit
from .fdstate import OpenFile, OpenFiles
from .rules import HarnessRules
from .syscalls.result import PASS, Fail, Result
from .syscalls.table import BY_NUMBER, traced_numbers
from .transport.bpf import build_filter
from .transport.memory import GuestMemory
from .transport.tracer import Tracer

AT_FDCWD = -100


class Session:
    """What every handler receives as `h`."""

    def __init__(self, devices: Mapping[int, BlockDevice], max_units: int,
                 rules: HarnessRules = HarnessRules()) -> None:
        now = time.time_ns()
        self.rules = rules
        self.units: dict[int, Unit] = {
            n: Unit(n, dev, nodes.node_stat(n, now), rules.soft_block_max)
            for n, dev in devices.items()}
        self.max_units = max_units
        self.mem = GuestMemory()
        self.opens = OpenFiles()
        self.tracer = Tracer(self.dispatch, self.mem)

    # --- helpers for handlers -------------------------------------------------------------

    def fd(self, tid: int, fd: int) -> OpenFile | None:
        return self.opens.lookup(tid, fd)

    def tgids(self) -> set[int]:
        return set(self.tracer.tids)

    def node_at(self, tid: int, dirfd: int, path_addr: int) -> int | None:
        """The unit number a guest path names (configured or not), None when it is no ubd
        node. Cheap for the common case: paths without "ubd" are not resolved at all."""
        try:
            path = self.mem.read_cstring(tid, path_addr)
        except OSError:
            return None                     # the kernel will answer EFAULT itself
        if b"ubd" not in path:
            return None
        try:
            if path.startswith(b"/"):
                base = "/"
            elif dirfd == AT_FDCWD:
                base = os.readlink(f"/proc/{tid}/cwd")
            else:
                base = os.readlink(f"/proc/{tid}/fd/{dirfd}")
        except OSError:
            return None
        return nodes.unit_for_path(nodes.resolve(path, base), self.max_units)

    # --- dispatcher ---------------------------------------------------------------------

    def dispatch(self, tid: int, regs) -> Result:
        entry = BY_NUMBER.get(regs.orig_rax)
        if entry is None:
            return PASS
        try:
            return entry.handler(self, tid, regs)
        except UbdError as err:
            return Fail(err.errno or errno.EIO)
        except OSError as err:
            return Fail(err.errno if err.errno in (errno.EFAULT, errno.ENOSPC) else errno.EIO)
        except Exception as err:            # a bug must not kill the guest tree silently
            print(f"ubdsim run: internal error in {entry.name}: {err!r}", file=sys.stderr)
            return Fail(errno.EIO)


def run_guest(devices: Mapping[int, BlockDevice], argv: Sequence[str], *, max_units: int,
              rules: HarnessRules = HarnessRules(), pin: bool = True) -> int:
    """Run `argv` with `devices` (unit number -> opened unit) visible as ubd nodes; returns
    the guest's exit status (128+N when signal N killed it or interrupted ubdsim)."""
    session = Session(devices, max_units, rules)
    session.tracer.spawn(argv, build_filter(traced_numbers()), pin=pin)
    return session.tracer.run()
