"""moo refuses files that a running kernel holds locked, checked against a real linux.uml.

ubd_kern.c open_ubd_file() [6.1] locks the COW file F_WRLCK and the backing file F_RDLCK
when the guest opens /dev/ubda. One boot serves every scenario: the guest opens the device,
signals "ready" through hostfs, and waits for "done" while the host runs the tools.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from tests.cow.builders import UBDSIM, random_file, run
from tests.ops.holding_kernel import holding_kernel

def test_running_linux_uml_locks_are_respected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_file("backing", 1 << 20, seed=1)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    assert run(["uml_mkcow", "cow2", "backing"]).returncode == 0   # a second COW, same backing
    cow_before = hashlib.sha256(open("cow", "rb").read()).hexdigest()
    with holding_kernel(["ubd0=cow,backing"], tmp_path) as kernel:
        results = {
            "uml_moo": run(["uml_moo", "cow", "oracle.img"]),
            "new": run([UBDSIM, "moo", "cow", "new.img"]),
            "in_place": run([UBDSIM, "moo", "-d", "cow"]),
            "other_cow_new": run([UBDSIM, "moo", "cow2", "other.img"]),
            "other_cow_in_place": run([UBDSIM, "moo", "-d", "cow2"]),
            "mkcow_force": run([UBDSIM, "mkcow", "-f", "cow", "backing"]),
            # another COW's merge or conversion, forced onto the file the guest writes
            "moo_force": run([UBDSIM, "moo", "-f", "cow2", "cow"]),
            "moo_force_unsafe": run([UBDSIM, "moo", "-f", "-t", "unsafe", "cow2", "cow"]),
            "convert_force": run([UBDSIM, "convert", "-f", "cow2", "cow"]),
            "cow_sha": hashlib.sha256(open("cow", "rb").read()).hexdigest(),
            "cow_ino": os.stat("cow").st_ino,
        }
    # uml_moo takes no lock and happily copies a COW file a running kernel is writing
    assert results["uml_moo"].returncode == 0
    for name in ("new", "in_place"):
        r = results[name]
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert f"'cow' is locked by process {kernel.pid}" in r.stderr
    # the kernel holds only a read lock on the backing file: reading it is fine, writing is not
    assert results["other_cow_new"].returncode == 0
    r = results["other_cow_in_place"]
    assert r.returncode == 1 and f"is locked by process {kernel.pid}" in r.stderr and "backing" in r.stderr
    assert not os.path.exists("new.img")
    # mkcow -f, moo -f and convert -f would have renamed a new file over the one the guest
    # writes (an unlinked inode: everything the guest wrote after that is lost): refused, the
    # guest's file untouched
    for name, tool in (("mkcow_force", "mkcow"), ("moo_force", "moo"),
                       ("moo_force_unsafe", "moo"), ("convert_force", "convert")):
        r = results[name]
        assert r.returncode == 1 and "Traceback" not in r.stderr, name
        assert r.stderr == (f"ubdsim {tool}: error: 'cow' is locked by process {kernel.pid} "
                            "(a running UML kernel?): refusing to replace it\n"), name
    assert results["cow_ino"] == os.stat("cow").st_ino and results["cow_sha"] == cow_before


HOLDER = """
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_process_holding_a_write_lock_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    random_file("backing", 8192, seed=2)
    assert run([UBDSIM, "mkcow", "cow", "backing"]).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "cow"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = run([UBDSIM, "moo", "--json", "cow", "new.img"])
    finally:
        holder.communicate("")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == f"ubdsim moo: error: 'cow' is locked by process {holder.pid} " \
                               "(a running UML kernel?): refusing to touch it"
    assert os.listdir(".") == ["backing", "cow"]
    assert run([UBDSIM, "moo", "cow", "new.img"]).returncode == 0     # lock gone: merges
