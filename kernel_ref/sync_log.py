"""Host sync calls of both backends, measured the same way, compared per guest action.

What a guest flush does on the HOST (is any host file fsynced, which one, how often) cannot be
seen from inside the guest; it is measured by build/uml_sync_log.so
(kernel_ref/native/uml_sync_log.c, built by scripts/setup.sh), an LD_PRELOAD library that logs
the fsync, fdatasync, sync_file_range, syncfs, msync and sync calls and the opens (with their
O_SYNC/O_DSYNC flags) of the process it is loaded into. It is loaded into linux.uml (through
launcher.start(preload=...), next to the XSAVE fix) and into `ubdsim run --kernel 6.1` (a
Python process: os.fsync and friends are glibc's too), so both sides are measured by the same
code. The guest programs of `ubdsim run` are host processes and inherit the library: their
own calls are logged as the guest's (a guest `sync` is a real host sync(2) there, since the
harness does not trap it); linux.uml's guest programs never call the host's glibc.

A sync scenario (kernel_ref/scenarios/host_syncs.py, HOST_SYNCS) is a kernel_ref scenario
(name, about, files, options, boots) whose guest steps are the actions below. The steps run
in ONE guest script per boot, each followed by a marker: `sync -d .kref/mark-N`, an
fdatasync(2) of a marker file, which reaches the host under both backends (linux.uml's hostfs
hostfs_fsync() -> fsync_file() [6.1]: fdatasync of its host fd; under ubdsim the guest's own
call) and so cuts the log into one segment per step: "boot" (up to the first marker), each
step, then "shutdown". In each segment the calls are counted by who made them ("driver":
linux.uml or ubdsim's device model; "guest": a guest process of `ubdsim run`), the call, and
the role of the file (cow, backing, raw, from the scenario's files; `*` for sync(2), which
syncs every file, and for a syncfs(2) of the working directory's filesystem). Calls on other
files (linux.uml's shm memory file, a guest's emulated descriptors) are not counted. The
opens that can write a role file are summarised by their flags (O_SYNC: every write durable).

  python -m kernel_ref.sync_log list
  python -m kernel_ref.sync_log run [--keep DIR] NAME... | --all
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import fixtures, launcher
from .errors import KernelUnavailable

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "build" / "uml_sync_log.so"
SOURCE = REPO / "kernel_ref" / "native" / "uml_sync_log.c"
LOG_VARIABLE = "UBDSIM_SYNC_LOG"
SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "syncfs", "msync", "sync")
SCRATCH = ".kref"
MARK = SCRATCH + "/mark-{n}"
FLUSHES = SCRATCH + "/flushes"
BLOCK = 4096
TIMEOUT = 120.0          # seconds for one boot of either backend (a boot takes about 2 s)
PARALLEL = 4             # runs at a time (two scenarios, both backends)
BOOT, SHUTDOWN = "boot", "shutdown"


class SyncLogUnavailable(RuntimeError):
    """build/uml_sync_log.so is missing or older than its source."""


def require_library() -> Path:
    if not LIBRARY.is_file() or SOURCE.stat().st_mtime > LIBRARY.stat().st_mtime:
        raise SyncLogUnavailable(f"{LIBRARY} is not built or older than {SOURCE.name}: run "
                                 "`make setup` (scripts/setup.sh builds it)")
    return LIBRARY


# ---- guest steps ---------------------------------------------------------------------------

def dd(dev: str, block: int, oflag: str = "", conv: str = "") -> dict:
    """One 4 KiB write of zeros at 4 KiB block `block` by dd, with its oflag= (direct, dsync,
    sync...) and conv= (fsync, fdatasync) words."""
    return {"op": "dd", "dev": dev, "block": block, "oflag": oflag, "conv": conv}


def fsync(dev: str) -> dict:
    """coreutils `sync DEV`: open and fsync(2) the device."""
    return {"op": "fsync", "dev": dev}


def fdatasync(dev: str) -> dict:
    """coreutils `sync -d DEV`: fdatasync(2) of the device."""
    return {"op": "fdatasync", "dev": dev}


def syncfs(dev: str) -> dict:
    """coreutils `sync -f DEV`: syncfs(2) of the filesystem holding the device node."""
    return {"op": "syncfs", "dev": dev}


def sync() -> dict:
    """coreutils `sync`: sync(2)."""
    return {"op": "sync"}


def _dev(name: str) -> str:
    if not name.startswith("ubd") or not name[3:].isalpha():
        raise ValueError(f"guest device must be ubda, ubdb...: {name!r}")
    return f"/dev/{name}"


def step_label(step: dict) -> str:
    op = step["op"]
    if op == "dd":
        words = [f"conv=notrunc{',' + step['conv'] if step['conv'] else ''}"]
        if step["oflag"]:
            words.append(f"oflag={step['oflag']}")
        return f"dd {step['dev']} block {step['block']} {' '.join(words)}"
    if op in ("fsync", "fdatasync", "syncfs"):
        return f"{op} {step['dev']}"
    if op == "sync":
        return "sync"
    raise ValueError(f"unknown sync guest step {op!r}")


def _command(step: dict) -> str:
    op = step["op"]
    if op == "dd":
        conv = "notrunc" + (f",{step['conv']}" if step["conv"] else "")
        oflag = f" oflag={step['oflag']}" if step["oflag"] else ""
        return (f"dd if=/dev/zero of={_dev(step['dev'])} bs={BLOCK} seek={step['block']} "
                f"count=1 conv={conv}{oflag} 2>/dev/null")
    if op == "fsync":
        return f"sync {_dev(step['dev'])}"
    if op == "fdatasync":
        return f"sync -d {_dev(step['dev'])}"
    if op == "syncfs":
        return f"sync -f {_dev(step['dev'])}"
    if op == "sync":
        return "sync"
    raise ValueError(f"unknown sync guest step {op!r}")


# The flush requests each ubd disk completed so far: /proc/diskstats field 19 ("flush
# requests completed", block/genhd.c diskstats_show() [6.1]), one line per step in FLUSHES.
# Only linux.uml's guest has ubd disks there (the host's /proc/diskstats has none), so this
# shows, under the real kernel, that a step did send REQ_OP_FLUSH to the driver.
_FLUSH_COUNT = ("echo \"{n} $(awk '$3 ~ /^ubd[a-z]+$/ {{printf \"%s=%s \", $3, $19}}' "
                "/proc/diskstats 2>/dev/null)\" >> " + SCRATCH + "/flushes")


def compile_script(work: Path, steps: list[dict]) -> str:
    """The guest script: marker 0, then each step and its marker. Each step prints
    `<n> <label> rc=<status>`; the script exits with the number of failed steps and markers.
    Before each marker the driver's flush counts are appended to FLUSHES."""
    lines = ["#!/bin/sh",
             "# kernel_ref sync steps: run unchanged by linux.uml and ubdsim run",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
             "LC_ALL=C; export LC_ALL",
             f"cd {shlex.quote(str(work))} || exit 99",
             "fails=0",
             f": > {FLUSHES}",
             _FLUSH_COUNT.format(n=0),
             f'sync -d {MARK.format(n=0)} || fails=$((fails + 1))']
    for n, step in enumerate(steps, 1):
        lines.append(_command(step))
        lines.append(f'rc=$?; [ "$rc" = 0 ] || fails=$((fails + 1)); '
                     f'echo "{n} {step_label(step)} rc=$rc"')
        lines.append(_FLUSH_COUNT.format(n=n))
        lines.append(f'sync -d {MARK.format(n=n)} || fails=$((fails + 1))')
    lines.append('exit "$fails"')
    return "\n".join(lines) + "\n"


# ---- the log -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One line of the library's log (see uml_sync_log.c)."""
    call: str
    pid: int | None
    exe: str
    fd: int | None
    path: str
    arg: str
    result: str

    @property
    def failed(self) -> bool:
        return self.result.startswith("-1")


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append({"t": "\t", "n": "\n", "\\": "\\"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def read_log(path: Path) -> list[Call]:
    """Every line of the log, in order (a missing log: no line)."""
    try:
        text = path.read_text(errors="surrogateescape")
    except FileNotFoundError:
        return []
    calls = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 7:
            raise ValueError(f"{path}: malformed sync log line {line!r}")
        call, pid, exe, fd, name, arg, result = fields
        calls.append(Call(call, _int(pid), _unescape(exe), _int(fd), _unescape(name), arg,
                          result))
    return calls


def roles_of(files: dict[str, dict]) -> dict[str, str]:
    """{file name: role} from a scenario's files: COW files, their backing files, and every
    other image (a raw unit's file)."""
    backing = {spec["backing"] for spec in files.values() if spec["kind"] in ("cow", "mkcow")}
    return {name: "cow" if spec["kind"] in ("cow", "mkcow") else
            "backing" if name in backing else "raw" for name, spec in files.items()}


@dataclass
class HostSyncs:
    """What one backend did on the host in one boot, normalised."""
    segments: list[tuple[str, Counter]]          # (label, {"driver fdatasync backing": n})
    writable_opens: dict[str, list[str]]         # role -> sorted distinct open flags
    transcript: list[str]
    status: int | None
    problems: list[str] = field(default_factory=list)
    others: Counter = field(default_factory=Counter)   # sync calls on no role file
    markers: int = 0                                    # markers found in the log
    # Per segment, the flush requests each ubd disk completed in it ({"ubda": 1}), read
    # in the guest (linux.uml only; None where not known: ubdsim, the shutdown).
    driver_flushes: list[dict[str, int] | None] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        return {label: dict(sorted(counter.items())) for label, counter in self.segments}


def summarise(calls: list[Call], work: Path, roles: dict[str, str], labels: list[str],
              driver_pid: int) -> tuple[list[tuple[str, Counter]], dict[str, list[str]], Counter,
                                        int]:
    """Cut the log at the markers and count the sync calls on role files per segment; also
    the flags of the opens that can write a role file, the sync calls on other files, and
    how many markers were found."""
    work = work.resolve()
    by_path = {str(work / name): role for name, role in roles.items()}
    markers = {str(work / MARK.format(n=n)): n for n in range(len(labels) + 1)}
    names = [BOOT, *labels, SHUTDOWN]
    segments = [(name, Counter()) for name in names]
    current = 0
    opens: dict[str, set[str]] = {role: set() for role in sorted(set(roles.values()))}
    others: Counter = Counter()
    seen = 0
    for call in calls:
        if call.call in SYNC_CALLS and call.path in markers and not call.failed:
            current = markers[call.path] + 1      # marker n ends segment n (boot is 0)
            seen += 1
            continue
        if call.call == "open":
            role = by_path.get(call.path)
            if role and not call.failed and not call.arg.startswith("O_RDONLY"):
                opens[role].add(call.arg.replace("|O_CREAT", "").replace("|O_TRUNC", ""))
            continue
        if call.call not in SYNC_CALLS:
            continue
        who = "driver" if call.exe == launcher.BINARY or call.pid == driver_pid else "guest"
        if call.call == "sync":
            role = "*"
        else:
            role = by_path.get(call.path)
            if role is None and call.call == "syncfs" and call.path.startswith(str(work) + "/"):
                role = "*"                         # the working directory's filesystem
        key = f"{who} {call.call}"
        if role is None:
            others[f"{key} {_other_kind(call.path)}"] += 1
            continue
        segments[current][1][f"{key} {role}{' (failed)' if call.failed else ''}"] += 1
    return segments, {role: sorted(flags) for role, flags in opens.items()}, others, seen


def read_flushes(path: Path, steps: int) -> list[dict[str, int] | None]:
    """Per segment (boot, each step, shutdown) the flushes each disk completed in it, from the
    guest's FLUSHES file; None for every segment where the guest saw no ubd disk."""
    totals: dict[int, dict[str, int]] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    for line in text.splitlines():
        n, *pairs = line.split()
        if pairs:
            totals[int(n)] = {dev: int(count) for dev, count in (p.split("=") for p in pairs)}
    found: list[dict[str, int] | None] = []
    for n in range(steps + 1):
        now, before = totals.get(n), (totals.get(n - 1) if n else {})
        found.append(None if now is None or before is None else
                     {dev: count - before.get(dev, 0) for dev, count in now.items()})
    return found + [None]


def _other_kind(path: str) -> str:
    if path.startswith("/dev/shm/"):
        return "/dev/shm (memory file)"
    if path.startswith("/memfd:"):
        return "memfd (a guest's /dev/ubdX descriptor under ubdsim)"
    return path


# ---- running the backends ----------------------------------------------------------------

def _prepare(work: Path, scn: dict, steps: list[dict]) -> Path:
    if work.exists():
        shutil.rmtree(work)
    (work / SCRATCH).mkdir(parents=True)
    fixtures.prepare(work, scn["files"])
    for n in range(len(steps) + 1):
        (work / MARK.format(n=n)).write_bytes(b"")
    script = work.parent / f"{work.name}-guest.sh"
    script.write_text(compile_script(work, steps))
    script.chmod(0o755)
    return script


def run_linux_uml(work: Path, options: list[str], script: Path,
                  log: Path) -> tuple[int, int | None, list[str], str]:
    """Boot linux.uml with the library preloaded; (pid, status, transcript, problem)."""
    with launcher.start(options, ["/bin/sh", str(script)], cwd=work, timeout=TIMEOUT,
                        preload=[require_library()], env={LOG_VARIABLE: str(log)}) as running:
        pid = running.pid
        run = running.wait()
    return pid, run.status, run.output.splitlines(), run.problem


def environment(log: Path) -> dict[str, str]:
    """Our environment with the library preloaded (first) and logging to `log`: for a host
    process such as `ubdsim run` or `ubdsim serve`."""
    library = str(require_library())
    inherited = os.environ.get("LD_PRELOAD")
    return {**os.environ, LOG_VARIABLE: str(log),
            "LD_PRELOAD": f"{library}:{inherited}" if inherited else library}


def ubdsim_command() -> list[str]:
    exe = Path(sys.executable).with_name("ubdsim")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ubdsim"]


def run_ubdsim(work: Path, options: list[str], script: Path,
               log: Path) -> tuple[int, int | None, list[str], str]:
    """`ubdsim run --kernel 6.1` with the library preloaded; (pid, status, transcript, problem)."""
    proc = subprocess.Popen([*ubdsim_command(), "run", "--kernel", "6.1", *options, "--",
                             "/bin/sh", str(script)], cwd=work, env=environment(log),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        transcript = out.decode(errors="replace").splitlines()
        problem = "" if transcript or proc.returncode == 0 else \
            f"ubdsim run exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
        return proc.pid, proc.returncode, transcript, problem
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return (proc.pid, None, out.decode(errors="replace").splitlines(),
                f"ubdsim run did not finish within {TIMEOUT:g} s (killed)")


RUNNERS = {"linux.uml": run_linux_uml, "ubdsim": run_ubdsim}


def measure(scn: dict, backend: str, root: Path) -> list[HostSyncs]:
    """Run every boot of `scn` on `backend` in `root/<backend>/work`; one HostSyncs a boot."""
    base = (root / backend).resolve()           # the log's name must not depend on a cwd
    base.mkdir(parents=True, exist_ok=True)
    work = base / "work"
    results = []
    roles = roles_of(scn["files"])
    for index, boot in enumerate(scn["boots"], 1):
        steps = boot["guest"]
        if index == 1:
            script = _prepare(work, scn, steps)
        else:
            for n in range(len(steps) + 1):
                (work / MARK.format(n=n)).write_bytes(b"")
            script = base / f"work-guest-{index}.sh"
            script.write_text(compile_script(work, steps))
        log = base / f"syncs-{index}.log"
        log.unlink(missing_ok=True)
        options = boot.get("options", scn["options"])
        pid, status, transcript, problem = RUNNERS[backend](work, options, script, log)
        segments, opens, others, seen = summarise(read_log(log), work, roles,
                                                  [step_label(s) for s in steps], pid)
        problems = [problem] if problem else []
        if seen != len(steps) + 1:
            problems.append(f"{backend}: {seen} of the {len(steps) + 1} markers are in the "
                            f"sync log {log}")
        results.append(HostSyncs(segments, opens, transcript, status, problems, others, seen,
                                 read_flushes(work / FLUSHES, len(steps))))
    return results


def differences(kernel: HostSyncs, sim: HostSyncs, boot: int = 1) -> list[str]:
    """How ubdsim's host syncs differ from linux.uml's, one line each."""
    diffs = [f"boot {boot}: {p}" for p in kernel.problems + sim.problems]
    if kernel.status != sim.status:
        diffs.append(f"boot {boot}: guest status linux.uml {kernel.status} vs ubdsim {sim.status}")
    if kernel.transcript != sim.transcript:
        diffs.append(f"boot {boot}: transcript linux.uml {kernel.transcript} vs ubdsim "
                     f"{sim.transcript}")
    for (label, ours), (_, theirs) in zip(kernel.segments, sim.segments):
        if ours != theirs:
            diffs.append(f"boot {boot}: {label}: host syncs linux.uml {dict(sorted(ours.items()))} "
                         f"vs ubdsim {dict(sorted(theirs.items()))}")
    if kernel.writable_opens != sim.writable_opens:
        diffs.append(f"boot {boot}: writable opens linux.uml {kernel.writable_opens} vs ubdsim "
                     f"{sim.writable_opens}")
    return diffs


def measure_all(scenarios: list[dict], root: Path) -> dict[str, dict[str, list[HostSyncs]]]:
    """Every scenario on both backends, PARALLEL runs at a time."""
    launcher.require_kernel()
    require_library()
    jobs = [(scn, backend) for scn in scenarios for backend in RUNNERS]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        found = list(pool.map(lambda job: measure(job[0], job[1], root / job[0]["name"]), jobs))
    table: dict[str, dict[str, list[HostSyncs]]] = {}
    for (scn, backend), result in zip(jobs, found):
        table.setdefault(scn["name"], {})[backend] = result
    return table


# ---- command line --------------------------------------------------------------------------

def load() -> dict[str, dict]:
    from .scenarios.host_syncs import HOST_SYNCS
    return {scn["name"]: scn for scn in HOST_SYNCS}


def known_extra() -> dict[str, dict[str, int]]:
    from .scenarios.host_syncs import KNOWN_EXTRA
    return KNOWN_EXTRA


def _show(counter: dict[str, int]) -> str:
    return ", ".join(f"{key} x{n}" for key, n in counter.items()) or "-"


def report(name: str, both: dict[str, list[HostSyncs]]) -> tuple[bool, list[str]]:
    kernel, sim = both["linux.uml"], both["ubdsim"]
    lines, agree = [], True
    for boot, (k, s) in enumerate(zip(kernel, sim), 1):
        diffs = differences(k, s, boot)
        agree = agree and not diffs
        kc, sc = k.counts(), s.counts()
        for (label, _), flushes in zip(k.segments, k.driver_flushes):
            mark = "  " if kc[label] == sc.get(label) else \
                "!~" if {**kc[label], **known_extra().get(label, {})} == sc.get(label) else "!="
            sent = "" if flushes is None else \
                f" [{_show(flushes).replace(' x', ' flushes: ') or '-'}]"
            lines.append(f"  {mark} {label:<48} linux.uml{sent}: {_show(kc[label])} | "
                         f"ubdsim: {_show(sc.get(label, {}))}")
        mark = "  " if k.writable_opens == s.writable_opens else "!="
        lines.append(f"  {mark} {'writable opens':<48} linux.uml: {k.writable_opens} | ubdsim: "
                     f"{s.writable_opens}")
        for side, result in (("linux.uml", k), ("ubdsim", s)):
            lines.append(f"     not counted ({side}): {_show(dict(sorted(result.others.items())))}")
        lines += [f"     {d}" for d in diffs if "host syncs" not in d and "writable" not in d]
    return agree, [f"{'agree' if agree else 'DISAGREE':<8} {name}", *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernel_ref.sync_log", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the sync scenarios")
    run = sub.add_parser("run", help="measure and compare the host syncs of both backends")
    run.add_argument("names", nargs="*", metavar="NAME")
    run.add_argument("--all", action="store_true")
    run.add_argument("--keep", type=Path, metavar="DIR", help="keep logs and files under DIR")
    args = parser.parse_args(argv)
    table = load()
    if args.command == "list":
        for name, scn in table.items():
            print(f"{name:<32} {scn['about'].splitlines()[0]}")
        return 0
    unknown = [n for n in args.names if n not in table]
    if unknown or not (args.all or args.names):
        print(f"name sync scenarios ({', '.join(table)}) or --all", file=sys.stderr)
        return 2
    chosen = list(table.values()) if args.all else [table[n] for n in args.names]
    root = args.keep or Path(tempfile.mkdtemp(prefix="kernel_ref-syncs-"))
    try:
        measured = measure_all(chosen, root)
    except (KernelUnavailable, SyncLogUnavailable) as err:
        print(f"python -m kernel_ref.sync_log: error: {err}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    agreeing = 0
    for name, both in measured.items():
        agree, lines = report(name, both)
        agreeing += agree
        print("\n".join(lines))
    print("(!~: a known difference, KNOWN_EXTRA in kernel_ref/scenarios/host_syncs.py)")
    print(f"{agreeing}/{len(measured)} sync scenarios agree")
    return 0 if agreeing == len(measured) else 1


if __name__ == "__main__":
    sys.exit(main())
