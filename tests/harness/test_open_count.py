"""The driver's open count under `ubdsim run`, against linux.uml 6.1 (ubd_kern.c ubd_open()
/ ubd_release()): a device held open by a descriptor (or a dup of it, or a child's inherited
copy) is not reopened by further opens; once the last descriptor is gone the next open
reopens the files and prints the open-time messages again; a unit whose open fails keeps
its node, and every open of it fails again with the kernel's errno and messages.

Flag `c` makes every ubd_open_dev() of unit 0 visible (`Not locking ...` twice); unit 1 is a
file that is no COW file, given a backing file: every open prints `Failed to read COW
header...` and fails with EINVAL."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kernel_ref.filters import Normaliser, ubd_lines

from .oracle import boot_uml, make_backing, ubdsim_body

WORDS = ["ubd0c=cow.img,back.img", "ubd1=junk.img,back.img"]
BODY = """\
read1() { dd if=$1 of=/dev/null bs=512 count=1 2>/dev/null; echo "$2 $?"; }
exec 3</dev/ubda
read1 /dev/ubda held-by-3
sh -c 'read1() { dd if=$1 of=/dev/null bs=512 count=1 2>/dev/null; echo "$2 $?"; }; read1 /dev/ubda child'
exec 4<&3
exec 3<&-
read1 /dev/ubda held-by-dup-4
exec 4<&-
read1 /dev/ubda reopened
read1 /dev/ubda reopened-again
read1 /dev/ubdb failing
dd if=/dev/ubdb of=/dev/null bs=512 count=1 2>&1 | head -n 1
"""


def _prepare(workdir: Path) -> None:
    make_backing(workdir / "back.img", 1 << 20, seed=3)
    (workdir / "junk.img").write_bytes(b"not a cow file".ljust(65536, b"\0"))
    subprocess.run(["uml_mkcow", str(workdir / "cow.img"), str(workdir / "back.img")],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uml_dir, sim_dir = tmp_path_factory.mktemp("uml"), tmp_path_factory.mktemp("ubdsim")
    _prepare(uml_dir)
    _prepare(sim_dir)
    return (boot_uml(uml_dir, WORDS, BODY), ubdsim_body(sim_dir, WORDS, BODY), uml_dir, sim_dir)


def test_guest_sees_the_kernels_open_results(runs):
    uml, sim, _, _ = runs
    assert "reopened-again 0" in uml.output and "failing 1" in uml.output
    assert sim.output.splitlines() == uml.output.splitlines()


def test_reopens_and_failures_print_what_the_kernel_prints(runs):
    uml, sim, uml_dir, sim_dir = runs
    kernel = Normaliser(str(uml_dir)).lines(ubd_lines(uml.kernel_log))
    # boot scan + `exec 3<` + two reopens: four opens of unit 0, two lines each.
    assert sum(line.startswith("Not locking") for line in kernel) == 8
    assert Normaliser(str(sim_dir)).lines(sim.kernel_log.splitlines()) == kernel
