"""The hostile tester's data-loss, hang and leftover cases (issue 11), each built for real.

Every case asserts what must hold: the file that must survive is byte-identical (sha256),
the refusal is one line with a non-zero exit and no traceback, no call hangs (each has a
bounded wait that fails the test), and no file of ours is left behind. The oracle for what
the original tools do is uml_mkcow / uml_moo, run in the test; `ls -b` is the oracle for
how a name is shown.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import time

import pytest

from tests.cow.builders import UBDSIM, build_cow, random_file, run
from tests.mounts import tmpfs
from ubdsim.fileio import sweep_stale_temps

WAIT = 20                       # seconds any single call may take before it counts as a hang


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def refused(r: subprocess.CompletedProcess, command: str) -> str:
    """The one error line of a refused command (asserting its shape)."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ubdsim {command}: error: "), r.stderr
    return lines[0]


def ubdsim(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([UBDSIM, *argv], capture_output=True, text=True, timeout=WAIT)


# -- 1. mkcow -f over the backing file, a locked COW file, a file that is not a COW file ---------

def test_mkcow_force_never_replaces_its_own_backing_file(tmp):
    random_file("b.img", 1 << 20, seed=1)
    os.symlink("b.img", "link")
    os.link("b.img", "hard")
    before = sha("b.img")
    # uml_mkcow -f overwrites the backing file's first 4 KiB with a header naming itself
    subprocess.run(["cp", "b.img", "oracle.img"], check=True)
    assert run(["uml_mkcow", "-f", "oracle.img", "oracle.img"]).returncode == 0
    assert sha("oracle.img") != before
    for target, backing in (("b.img", "b.img"), ("link", "b.img"), ("b.img", "link"),
                            ("hard", "b.img")):
        line = refused(ubdsim("mkcow", "-f", target, backing), "mkcow")
        assert "is the same file as the backing file" in line and "refusing to replace it" in line
    assert sha("b.img") == before and os.path.islink("link")
    assert sorted(os.listdir(".")) == ["b.img", "hard", "link", "oracle.img"]


def test_mkcow_force_refuses_a_file_that_is_not_a_cow_file(tmp):
    """The mailing-list order `mkcow -f BACKING COW` once replaced the shared image."""
    random_file("shared.img", 1 << 20, seed=2)
    before = sha("shared.img")
    assert run(["uml_mkcow", "other.cow", "shared.img"]).returncode == 0
    for cow_name in ("other.cow", "missing.cow"):
        line = refused(ubdsim("mkcow", "-f", "shared.img", cow_name), "mkcow")
        assert line == ("ubdsim mkcow: error: 'shared.img' exists and is not a COW file (no "
                        "COW magic): -f replaces only COW files; if you really mean to destroy "
                        "it, use --replace-non-cow")
    assert sha("shared.img") == before
    # the explicit flag does it, and the result is what uml_mkcow writes
    open("victim", "wb").write(b"not a cow file")
    r = ubdsim("mkcow", "-f", "--replace-non-cow", "victim", "shared.img")
    assert r.returncode == 0, r.stderr
    assert run(["uml_mkcow", "fresh.cow", "shared.img"]).returncode == 0
    assert open("victim", "rb").read() == open("fresh.cow", "rb").read()
    # an empty file (what a failed uml_mkcow leaves) is replaced without the flag
    open("empty.cow", "wb").close()
    assert ubdsim("mkcow", "-f", "empty.cow", "shared.img").returncode == 0
    assert open("empty.cow", "rb").read() == open("fresh.cow", "rb").read()


# -- 13. mkcow refuses backing files moo refuses; info flags them --------------------------------

def test_mkcow_refuses_what_moo_refuses_and_info_flags_it(tmp):
    os.mkdir("adir")
    os.mkfifo("fifo")
    for backing, kind in (("adir", "a directory"), ("fifo", "a FIFO"),
                          ("/dev/zero", "a character device")):
        line = refused(ubdsim("mkcow", "x.cow", backing), "mkcow")
        assert line == (f"ubdsim mkcow: error: backing file '{backing}' is {kind}, not a "
                        "regular file or a block device")
    assert sorted(os.listdir(".")) == ["adir", "fifo"]
    # uml_mkcow accepts a directory; ubdsim info must not call that backing file fine
    assert run(["uml_mkcow", "d.cow", "adir"]).returncode == 0
    r = ubdsim("info", "d.cow")
    assert r.returncode == 0
    assert "present       yes, but unusable: a directory, not a regular file or a block device" in r.stdout
    assert "backing_unusable:" in r.stdout and "size match" not in r.stdout
    assert "is a directory, not a regular file" in refused(ubdsim("moo", "d.cow", "o.img"), "moo")


# -- 2. moo -d never writes through a planted journal ---------------------------------------------

def _cow_with_data(name: str = "c.cow", backing: str = "b.img") -> None:
    random_file(backing, 1 << 20, seed=3)
    build_cow(name, 3, backing, {s: bytes([s % 251 + 1]) * 512 for s in range(0, 2048, 7)})


def test_moo_d_refuses_a_planted_journal(tmp):
    _cow_with_data()
    open("victim", "wb").write(b"precious")
    images = {name: sha(name) for name in ("c.cow", "b.img", "victim")}
    journal = ".c.cow.ubdsim-merge"
    os.symlink("victim", journal)
    line = refused(ubdsim("moo", "-d", "c.cow"), "moo")
    assert f"merge journal '{tmp}/{journal}' is a symbolic link: refusing to follow it" in line
    os.unlink(journal)
    os.symlink("nowhere", journal)                  # dangling: O_CREAT would create its target
    refused(ubdsim("moo", "-d", "c.cow"), "moo")
    assert not os.path.exists("nowhere")
    os.unlink(journal)
    os.mkfifo(journal)
    assert "is a FIFO, not a regular file" in refused(ubdsim("moo", "-d", "c.cow"), "moo")
    os.unlink(journal)
    open(journal, "w").write("{}")
    os.chown(journal, 65534, 65534)
    assert "belongs to uid 65534, not to you" in refused(ubdsim("moo", "-d", "c.cow"), "moo")
    assert {name: sha(name) for name in images} == images
    # a stale journal of ours for another merge is replaced, and the merge works
    os.unlink(journal)
    open(journal, "w").write('{"other": 1}')
    r = ubdsim("moo", "-d", "c.cow")
    assert r.returncode == 0, r.stderr
    assert not os.path.lexists(journal) and sha("victim") == images["victim"]


# -- 3. run --log never truncates a unit's file ---------------------------------------------------

def test_run_log_is_never_a_units_file_and_never_truncates(tmp):
    _cow_with_data()
    images = {name: sha(name) for name in ("c.cow", "b.img")}
    os.symlink("b.img", "link")
    for log, role in (("c.cow", "ubd0 file"), ("b.img", "ubd0 backing file"),
                      ("link", "ubd0 backing file")):
        line = refused(ubdsim("run", "--log", log, "ubd0=c.cow,b.img", "--", "true"), "run")
        assert f"is the same file as the {role}" in line and "refusing to write a log into it" in line
    # a COW file named alone: its header's backing file is protected too
    line = refused(ubdsim("run", "--kernel", "6.1", "--log", "b.img", "ubd0=c.cow", "--", "true"), "run")
    assert "backing file" in line
    # a COW file the kernel is about to create is protected by its name
    line = refused(ubdsim("run", "--log", "new.cow", "ubd0=new.cow,b.img", "--", "true"), "run")
    assert "is the same file as the ubd0 file 'new.cow'" in line
    assert not os.path.exists("new.cow")
    assert {name: sha(name) for name in images} == images
    # an ordinary log is appended to, never truncated
    open("k.log", "w").write("kept\n")
    for _ in range(2):
        r = ubdsim("run", "--kernel", "6.1", "--log", "k.log", "ubd0=c.cow,b.img",
                   "ubd1=missing.img", "--", "true")
        assert r.returncode == 0, r.stderr
    line = "Failed to initialize ubd device 1 :Couldn't determine size of device's file\n"
    assert open("k.log").read() == "kept\n" + line * 2


# -- 4. a COW file that names itself --------------------------------------------------------------

def test_cow_file_naming_itself_is_refused_by_moo_and_named_by_info(tmp):
    random_file("b.img", 1 << 20, seed=4)
    assert run(["uml_mkcow", "-f", "b.img", "b.img"]).returncode == 0     # the way it happens
    before = sha("b.img")
    for argv in (["moo", "-d", "b.img"], ["moo", "b.img", "out.img"]):
        line = refused(ubdsim(*argv), "moo")
        assert line == (f"ubdsim moo: error: 'b.img' names itself as its backing file "
                        f"(\"{tmp}/b.img\"): a loop, nothing to merge it with")
    assert sha("b.img") == before and sorted(os.listdir(".")) == ["b.img"]
    r = ubdsim("info", "b.img")
    assert r.returncode == 0 and "unusable: the COW file itself (a loop)" in r.stdout


# -- 7. a FIFO as the COW file never hangs --------------------------------------------------------

def test_fifo_as_cow_file_is_refused_without_blocking(tmp):
    os.mkfifo("fifo")
    os.symlink("fifo", "link")
    random_file("b.img", 4096, seed=5)
    for name in ("fifo", "link"):
        for argv in (["info", name], ["info", "--json", name], ["moo", name, "o.img"],
                     ["moo", "-d", name]):
            line = refused(ubdsim(*argv), argv[0])       # ubdsim() fails on a hang (timeout)
            assert line.endswith(f"COW file '{name}' is a FIFO, not a regular file or a block device")
    _cow_with_data("c.cow", "b2.img")
    line = refused(ubdsim("moo", "-b", "fifo", "c.cow", "o.img"), "moo")
    assert "backing file 'fifo' is a FIFO" in line
    assert sorted(os.listdir(".")) == ["b.img", "b2.img", "c.cow", "fifo", "link"]


# -- 8. SIGTERM, SIGHUP and SIGKILL during moo COW NEW: no temporary file stays -----------------

def _slow_merge_inputs() -> None:
    """A merge that takes seconds: 128 MiB of backing data under a bitmap of alternating bits
    (one read per marked sector)."""
    with open("big.img", "wb") as f:
        block = bytes(range(1, 256)) * 4112
        for _ in range(128):
            f.write(block[:1 << 20])
    build_cow("big.cow", 3, "big.img", {s: b"\x5a" * 512 for s in range(0, 1 << 18, 2)})


def _temps() -> list[str]:
    return [n for n in os.listdir(".") if n.endswith(".ubdsim-tmp")]


def _start_merge_and_wait_for_temp() -> subprocess.Popen:
    proc = subprocess.Popen([UBDSIM, "moo", "-f", "big.cow", "new.img"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    while not _temps():
        assert proc.poll() is None, f"the merge ended before it could be stopped: {proc.communicate()}"
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.005)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_clean_up_like_sigint(tmp, signum):
    _slow_merge_inputs()
    proc = _start_merge_and_wait_for_temp()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 128 + signum, err
    assert err == f"ubdsim moo: stopped by {signal.Signals(signum).name}\n" and out == ""
    assert _temps() == [] and not os.path.exists("new.img")


def test_a_killed_merges_temporary_file_is_swept_by_the_next_run(tmp):
    _slow_merge_inputs()
    for _ in range(2):             # a kill leaves one (uncatchable); the next start sweeps it
        proc = _start_merge_and_wait_for_temp()
        proc.kill()
        proc.communicate(timeout=WAIT)
        assert len(_temps()) == 1
    r = subprocess.run([UBDSIM, "moo", "-f", "big.cow", "new.img"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _temps() == []
    assert run(["uml_moo", "big.cow", "oracle.img"]).returncode == 0
    assert sha("new.img") == sha("oracle.img")


def test_a_live_builders_temporary_file_is_never_swept(tmp):
    """The sweep goes by the builder's flock, not by its pid: a held file stays, whatever its name."""
    held = ".t.img.999999.abc.ubdsim-tmp"
    open(held, "wb").write(b"in progress")
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert sweep_stale_temps(os.path.abspath("t.img")) == []
        assert os.path.exists(held)
    finally:
        os.close(fd)
    assert sweep_stale_temps("t.img") == [os.fsencode(os.path.join(".", held))]
    assert not os.path.exists(held)


# -- 14. moo -d on a full disk says what state the backing file is in, and resuming works -------

@pytest.fixture
def small_fs(tmp):
    with tmpfs(tmp / "mnt", "2m") as mnt:
        yield mnt


def test_moo_d_out_of_space_names_the_partly_merged_backing_and_resumes(tmp, small_fs):
    backing = small_fs / "b.img"
    with open(backing, "wb") as f:
        f.truncate(8 << 20)                              # sparse on a 2 MiB filesystem
    build_cow("c.cow", 3, str(backing), {s: bytes([s % 250 + 1]) * 512 for s in range(0, 12288)})
    subprocess.run(["cp", "-p", "--sparse=always", str(backing), "before.img"], check=True)
    assert run(["uml_moo", "-b", "before.img", "c.cow", "oracle.img"]).returncode == 0
    line = refused(ubdsim("moo", "-d", "c.cow"), "moo")
    assert line.startswith(f"ubdsim moo: error: writing the backing file '{backing}' failed after ")
    assert line.endswith("No space left on device. It is now PARTLY merged; the journal keeps the "
                         "merge resumable: make room and run 'ubdsim moo -d c.cow' again to finish it")
    assert os.path.exists(".c.cow.ubdsim-merge")
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    r = ubdsim("moo", "-d", "c.cow")
    assert r.returncode == 0 and "(resumed an interrupted merge)" in r.stdout, r.stderr
    assert sha(str(backing)) == sha("oracle.img")
    assert not os.path.exists(".c.cow.ubdsim-merge")


def test_moo_new_file_out_of_space_names_the_file_not_a_temporary(tmp, small_fs):
    random_file("b.img", 4 << 20, seed=6)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    out = small_fs / "out.img"
    line = refused(ubdsim("moo", "c.cow", str(out)), "moo")
    assert line == f"ubdsim moo: error: No space left on device: {out}"
    assert os.listdir(small_fs) == []


# -- 15. names are shown as typed (ls -b), never as b'...' or \udcfe ------------------------------

def test_names_are_shown_as_ls_b_shows_them(tmp):
    name = b"c\xfe d.cow"
    random_file("b.img", 4096, seed=7)
    assert run(["uml_mkcow", "c.cow", "b.img"]).returncode == 0
    os.rename(b"c.cow", name)
    r = subprocess.run([os.fsencode(UBDSIM), b"moo", name, b"no dir/out.img"], capture_output=True,
                       timeout=WAIT)
    assert r.stderr == b"ubdsim moo: error: No such file or directory: no\\ dir/out.img\n"
    r = subprocess.run([os.fsencode(UBDSIM), b"info", name], capture_output=True, timeout=WAIT)
    assert r.stdout.startswith(b"c\\376\\ d.cow: COW file version 3")
    os.unlink("b.img")
    listed = subprocess.run(["ls", "-b"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert listed == ["c\\376\\ d.cow"]
    r = subprocess.run([os.fsencode(UBDSIM), b"moo", name, b"out.img"], capture_output=True, timeout=WAIT)
    assert r.returncode == 1
    r = subprocess.run([os.fsencode(UBDSIM), b"moo", b"-b", b"gone\xff", name, b"out.img"],
                       capture_output=True, timeout=WAIT)
    assert r.stderr == b'ubdsim moo: error: backing file "gone\\377" does not exist\n'
    os.mkfifo(name + b".fifo")
    r = subprocess.run([os.fsencode(UBDSIM), b"info", name + b".fifo"], capture_output=True, timeout=WAIT)
    assert r.stderr == (b"ubdsim info: error: COW file 'c\\376\\ d.cow.fifo' is a FIFO, "
                        b"not a regular file or a block device\n")
    r = subprocess.run([os.fsencode(UBDSIM), b"moo", name, b"out.img"], capture_output=True,
                       timeout=WAIT)
    assert r.stderr.startswith(b'ubdsim moo: error: backing file "') and b"b'" not in r.stderr


def test_shown_matches_ls_b_for_every_byte(tmp):
    """Every byte but NUL and '/' in a name, plus UTF-8 text: shown() prints what `ls -b` lists."""
    from ubdsim.fileio import shown
    names = [b"x" + bytes([b]) + b"y" for b in range(1, 256) if b != ord("/")]
    names += ["café ☃".encode(), b"\xc3", b"tab\there"]
    os.mkdir("names")
    for name in names:
        open(b"names/" + name, "wb").close()
    listed = subprocess.run(["ls", "-b", "-1", "-U", "names"], capture_output=True, check=True,
                            env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout.decode().splitlines()
    assert sorted(listed) == sorted(shown(name) for name in names)


def test_sector_size_zero_under_serve_says_so(tmp):
    """Item 11 for `serve` (test_resize_safety covers `run`): the refusal line at each open
    (the boot's, then the server's), then why nothing is exported; no traceback, exit 1."""
    from tests.cow.builders import pack_spec_header
    random_file("b.img", 65536, seed=8)
    st_ = os.stat("b.img")
    with open("ss0.cow", "wb") as f:
        f.write(pack_spec_header(3, os.fsencode(os.path.abspath("b.img")), int(st_.st_mtime),
                                 65536, ss=0))
    before = sha("ss0.cow")
    r = ubdsim("serve", "--kernel", "6.1", "--unix", "s.sock", "ubd0=ss0.cow,b.img")
    refusal = 'ubd: cow file "ss0.cow" has sector size 0 in its header, refusing it\n'
    assert r.returncode == 1 and r.stderr == refusal * 2 + (
        "ubdsim serve: error: no unit opened, nothing to export\n")
    assert sha("ss0.cow") == before and not os.path.exists("s.sock")
