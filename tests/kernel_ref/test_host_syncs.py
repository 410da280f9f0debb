"""What a guest flush does on the HOST, measured on the real linux.uml and on ubdsim alike.

build/uml_sync_log.so (kernel_ref/native/uml_sync_log.c) is preloaded into linux.uml (next to
the XSAVE fix) and into `ubdsim run --kernel 6.1`; it logs every fsync, fdatasync,
sync_file_range, syncfs, msync and sync call and every open with its flags. The scenarios of
kernel_ref/scenarios/host_syncs.py (COW and raw units, with and without flag s / ubd=sync) run
each way a guest asks for durability, one step per log segment (kernel_ref/sync_log.py), so
each step's host calls are compared, file role by file role (cow, backing, raw).

What linux.uml does (ubd_kern.c [6.1]): the guest kernel does send REQ_OP_FLUSH to the driver
(its flush counter in /proc/diskstats moves), but ubd_submit_request() maps a flush with no
I/O descriptor (segs = 0) and io_thread() runs do_io() once per descriptor, so do_io()'s
flush branch, os_sync_file(req->fds[0]) (an fdatasync of the BACKING file of a COW unit), is
never reached: no host file is ever synced. Durability comes only from os_open_file()'s
O_SYNC (flag s, ubd=sync): the written file is opened O_RDWR|O_SYNC.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from kernel_ref import fixtures, launcher, sync_log
from kernel_ref.scenarios.host_syncs import HOST_SYNCS, KNOWN_EXTRA
from kernel_ref.steps import MiB, backing, mkcow

# Steps that ask for durability: each sends at least one REQ_OP_FLUSH to the ubd driver
# (block/fops.c blkdev_fsync() -> blkdev_issue_flush(); generic_write_sync() for O_SYNC and
# O_DSYNC writes [6.1]). The others (plain writes, syncfs of devtmpfs, sync(2)) send none.
NO_FLUSH_STEPS = {"boot", "dd ubda block 1 conv=notrunc",
                  "dd ubda block 2 conv=notrunc oflag=direct", "syncfs ubda", "sync"}
SYNC_OPENED = {"host-syncs-cow-flag-s", "host-syncs-cow-ubd-sync", "host-syncs-raw-flag-s"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Every sync scenario on both backends (KernelUnavailable: every test fails with it)."""
    launcher.require_kernel()
    return sync_log.measure_all(HOST_SYNCS, tmp_path_factory.mktemp("host-syncs"))


def _boots(measured):
    for scn in HOST_SYNCS:
        both = measured[scn["name"]]
        for index, boot in enumerate(scn["boots"]):
            yield scn, boot, both["linux.uml"][index], both["ubdsim"][index]


def test_every_step_of_both_backends_is_measured(measured):
    """The log cuts into one segment per step on both sides (every marker found), every step
    succeeded, and linux.uml's own calls are in it: its one fsync at boot, of its memory
    file (physmem.c setup_physmem(): os_fsync_file(physmem_fd) [6.1])."""
    for scn, boot, kernel, sim in _boots(measured):
        for result in (kernel, sim):
            assert not result.problems, (scn["name"], result.problems)
            assert result.markers == len(boot["guest"]) + 1, scn["name"]
            assert result.status == 0, (scn["name"], result.transcript)
        assert len(kernel.transcript) == len(boot["guest"]), scn["name"]
        assert kernel.others["driver fsync /dev/shm (memory file)"] == 1, kernel.others


def test_linux_uml_gets_the_flushes_and_syncs_no_host_file(measured):
    for scn, _, kernel, _ in _boots(measured):
        for (label, calls), flushes in zip(kernel.segments, kernel.driver_flushes):
            assert not calls, (scn["name"], label, dict(calls))
            if label == sync_log.SHUTDOWN:
                continue
            assert flushes is not None, (scn["name"], label)
            if label in NO_FLUSH_STEPS:
                assert flushes == {"ubda": 0}, (scn["name"], label, flushes)
            else:
                assert flushes["ubda"] >= 1, (scn["name"], label, flushes)


def test_ubdsim_syncs_the_host_files_linux_uml_syncs(measured):
    """Step by step, the same sync calls on the same file roles (none), but for the known
    extra host calls (KNOWN_EXTRA: a guest's sync(2) runs on the host under ubdsim); the
    same transcript."""
    for scn, _, kernel, sim in _boots(measured):
        assert sim.transcript == kernel.transcript, scn["name"]
        for (label, ours), (_, theirs) in zip(kernel.segments, sim.segments):
            assert dict(theirs) == {**ours, **KNOWN_EXTRA.get(label, {})}, (
                f"{scn['name']}: {label}: linux.uml {dict(ours)}, ubdsim {dict(theirs)}"
                + (" (a KNOWN_EXTRA row no longer holds: remove it)"
                   if label in KNOWN_EXTRA else ""))


def test_flag_s_and_ubd_sync_open_the_written_file_o_sync_on_both(measured):
    """os_open_file() [6.1]: O_SYNC with flag s or ubd=sync, so every host write (data, then
    bitmap words) is durable when it returns; without them nothing the guest writes is."""
    for scn, _, kernel, sim in _boots(measured):
        assert sim.writable_opens == kernel.writable_opens, scn["name"]
        written = "cow" if "cow" in kernel.writable_opens else "raw"
        mode = "O_RDWR|O_SYNC" if scn["name"] in SYNC_OPENED else "O_RDWR"
        assert kernel.writable_opens[written] == [mode], (scn["name"], kernel.writable_opens)
        assert kernel.writable_opens.get("backing", []) == []


def _serve_syncs(tmp_path: Path, mode: str) -> dict[str, int]:
    """The sync calls on role files by `ubdsim serve --flush MODE` while qemu-io writes and
    flushes one COW unit (counted by the same library, all in one segment)."""
    work = tmp_path / mode
    work.mkdir()
    files = {"back.img": backing(2 * MiB), "cow.img": mkcow("back.img")}
    fixtures.prepare(work, files)
    log, sock = tmp_path / f"{mode}.log", work / "nbd.sock"
    server = subprocess.Popen([*sync_log.ubdsim_command(), "serve", "--kernel", "6.1",
                               "--unix", str(sock), "--flush", mode, "ubd0=cow.img,back.img"],
                              cwd=work, env=sync_log.environment(log), text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        for line in server.stderr:
            if line.startswith("ubdsim serve: listening on"):
                break
        else:
            raise AssertionError(f"ubdsim serve exited {server.wait()}")
        done = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 4096", "-c",
                               "flush", f"nbd+unix:///ubda?socket={sock}"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "failed" not in done.stdout, done.stdout + done.stderr
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        server.stderr.close()
    segments, _, _, _ = sync_log.summarise(sync_log.read_log(log), work,
                                           sync_log.roles_of(files), [], server.pid)
    return dict(segments[0][1])


def test_serve_flush_kernel_is_the_drivers_and_fsync_is_ubdsims_own(measured, tmp_path):
    """`--flush kernel` does with a client's flush what linux.uml does with a guest fsync
    (nothing on the host); `--flush fsync`, ubdsim's own opt-in, fsyncs the COW file (data
    and bitmap) and nothing else: never the backing file, which is never written."""
    kernel = measured["host-syncs-cow"]["linux.uml"][0].counts()["fsync ubda"]
    assert _serve_syncs(tmp_path, "kernel") == kernel == {}
    durable = _serve_syncs(tmp_path, "fsync")
    assert set(durable) == {"driver fsync cow"}, durable   # qemu-io flushes again at close
