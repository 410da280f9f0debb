"""A linux.uml guest that holds /dev/ubda open (and so the kernel's fcntl locks on its files)
while the test runs host tools against those files, for the tests of what tools refuse."""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kernel_ref import launcher

GUEST = """mknod {d}/ubda b 98 0
exec 3<>{d}/ubda
echo ready > {d}/ready
i=0
while [ ! -e {d}/done ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
"""


@contextmanager
def holding_kernel(options: list[str], directory: Path) -> Iterator[launcher.RunningKernel]:
    """Boot linux.uml with `options` in `directory`; inside the block the guest has /dev/ubda
    open. On leaving, the guest is told to finish and must exit with status 0."""
    with launcher.start(options, script=GUEST.format(d=directory), cwd=directory,
                        timeout=90) as kernel:
        try:
            for _ in range(300):
                if os.path.exists(directory / "ready") or kernel.poll() is not None:
                    break
                time.sleep(0.1)
            assert os.path.exists(directory / "ready"), "the guest never opened /dev/ubda: " + \
                (kernel.wait().problem if kernel.poll() is not None else "timed out")
            yield kernel
        finally:
            open(directory / "done", "w").close()
        assert kernel.wait().status == 0
