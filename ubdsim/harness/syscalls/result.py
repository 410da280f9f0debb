"""What a handler decides for one intercepted call (strace RVAL_DECODED / PRoot extension idea).

- `Emulated(value)`: the call is cancelled at the seccomp stop and returns `value`;
- `Fail(errno)`: the same, returning `-errno`;
- `PassThrough()`: the host kernel runs the call unchanged (it is not about a ubd device);
- `NeedsExit(regs, on_exit)`: the handler rewrote the call (new number or arguments in
  `regs`); the kernel runs it and `on_exit(regs)` sees its result at the syscall-exit stop,
  where it must restore the arguments the guest expects to keep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union


@dataclass(frozen=True, slots=True)
class Emulated:
    value: int


@dataclass(frozen=True, slots=True)
class Fail:
    errno: int


@dataclass(frozen=True, slots=True)
class PassThrough:
    pass


@dataclass(frozen=True, slots=True)
class NeedsExit:
    regs: object                     # the rewritten register set to install at entry
    on_exit: Callable[[object], None]


Result = Union[Emulated, Fail, PassThrough, NeedsExit]
PASS = PassThrough()
