"""The ptrace event loop: one blocking waitpid(-1, __WALL) loop, emulation at seccomp stops.

Design (guest-harness-notes.md, measured here):
- the child stops itself under PTRACE_TRACEME, the tracer sets its options, the child then
  installs the seccomp filter and execs; every descendant is traced (fork, vfork, clone,
  exec), because a RET_TRACE filter without a tracer turns the filtered calls into ENOSYS;
- at a seccomp stop the call has not run: an emulated call is cancelled (orig_rax = -1) with
  its result in rax and the guest resumed with PTRACE_CONT (one stop per call); a rewritten
  call is resumed with PTRACE_SYSCALL and finished at its syscall-exit stop;
- tracer and guest share one CPU (about 10 us per stop instead of ~95 us across vCPUs);
- ubdsim never leaves a traced process behind: PTRACE_O_EXITKILL if it dies, and SIGKILL to
  every traced thread if it is interrupted;
- the stops whose only answer is "run it" (a read or write on a descriptor that is no ubd
  memfd) are answered by the C loop of native_wait.py where it can be built; the Python
  loop below answers them the same way where it cannot.
python-ptrace's own debugger loop is not used: it raises on seccomp stops and polls with
sleep() once two processes are traced.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
from typing import Callable, Iterable, Mapping, Sequence

from ..syscalls.result import Emulated, NeedsExit, PassThrough, Result
from . import native_wait, notify, ptrace
from .bpf import FilterInstaller, build_plant_filter
from .memory import GuestMemory

WALL = 0x40000000                          # __WALL: threads and processes alike
_SECCOMP_STOP = signal.SIGTRAP | (ptrace.PTRACE_EVENT_SECCOMP << 8)
_SYSCALL_STOP = signal.SIGTRAP | 0x80      # PTRACE_O_TRACESYSGOOD
_CANCELLED = (1 << 64) - 1                 # orig_rax = -1: the kernel skips the call
_MASK = (1 << 64) - 1
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Dispatch = Callable[[int, ptrace.Regs], Result]


class _Interrupted(Exception):
    pass


def current_cpu() -> int:
    """The CPU this process runs on now (field 39 of /proc/self/stat)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[36])


class Tracer:
    """Runs one guest command under the interceptor and returns its exit status."""

    def __init__(self, dispatch: Dispatch, memory: GuestMemory, memfd_dev: int = 0,
                 fd_calls: Iterable[int] = (),
                 lanes: Mapping[int, tuple[bool, bool]] = {}) -> None:
        """`fd_calls`: the calls whose handler answers PASS when their first argument is a
        descriptor that is no memfd (st_dev `memfd_dev`); the C loop answers those itself.
        `lanes`: those of them the C loop's lane may serve (arm_lane())."""
        self.dispatch = dispatch
        self.memory = memory
        self._memfd_dev = memfd_dev
        self._fd_calls = native_wait.fd_call_table(fd_calls, lanes)
        self.native = native_wait.load() if memfd_dev else None
        self.passed = 0                    # stops the C loop answered
        self.lane_served = 0               # calls its lane served
        self._state: native_wait.WaitState | None = None    # the C loop's, while it runs
        self._lane_sync: Callable[[int], None] | None = None
        self._lane_key: tuple = ()
        # (tid, fd, memfd inode) of the stop being dispatched, when the C loop looked the
        # first argument up already: OpenFiles.lookup() need not stat it again
        self.hint: tuple[int, int, int] | None = None
        self.tids: set[int] = set()        # every live traced thread
        self._seen: set[int] = set()       # threads whose first (attach) stop was consumed
        self._pending: dict[int, Callable[[ptrace.Regs], None]] = {}
        self._root = 0
        self._status = 0
        self._interrupt = 0
        self._waiting = False
        self.stops = 0                     # seccomp stops served (for the benchmark)
        self.listener: notify.Listener | None = None   # the planting filter's (bpf.py)
        self._plant: tuple[int, int, int] | None = None

    def request_plant(self, tid: int, srcfd: int, target: int) -> bool:
        """Ask that the call `tid` is stopped in, once rewritten by its handler into the
        planting call (bpf.NR_PLANT), gets ubdsim's descriptor `srcfd` installed as its
        descriptor `target` (close-on-exec). False when there is no listener."""
        if self.listener is None:
            return False
        self._plant = (tid, srcfd, target)
        return True

    # --- start --------------------------------------------------------------------------

    def spawn(self, argv: Sequence[str], program: bytes, pin: bool = True) -> int:
        """Fork, trace and exec `argv` with the seccomp `program` installed; returns its pid."""
        if pin:
            os.sched_setaffinity(0, {current_cpu()})   # inherited by the guest tree
        installer = FilterInstaller(program, build_plant_filter())
        pid = os.fork()
        if pid == 0:
            _child(argv, installer)
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise OSError(errno.ECHILD, "the guest did not stop for the tracer")
        self.listener = notify.Listener.take(pid)
        ptrace.set_options(pid)
        ptrace.cont(pid)
        self._root = pid
        self.tids.add(pid)
        self._seen.add(pid)
        return pid

    # --- loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Serve the guest until every traced process is gone; the root's exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _FORWARDED}
        try:
            if self.native is not None:
                self._loop_native(self.native)
            else:
                self._loop()
        except _Interrupted:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._interrupt or self.tids:
                self._kill_all()
            self.memory.close()
            if self.listener is not None:
                self.listener.close()
                self.listener = None
        return 128 + self._interrupt if self._interrupt else self._status

    @property
    def interrupted(self) -> bool:
        """A signal to ubdsim ended the run (every traced thread was killed)."""
        return bool(self._interrupt)

    def _on_signal(self, signum: int, frame) -> None:
        self._interrupt = signum
        if self._waiting:
            raise _Interrupted

    def _loop(self) -> None:
        waitpid, get_regs = os.waitpid, ptrace.get_regs
        # One register buffer for every seccomp stop: handlers use it synchronously and copy
        # what they keep (a rewritten call's saved arguments).
        regs = ptrace.Regs()
        while not self._interrupt:
            self._waiting = True
            try:
                if self._interrupt:
                    return
                tid, status = waitpid(-1, WALL)
            except ChildProcessError:
                return
            finally:
                self._waiting = False
            try:
                if os.WIFSTOPPED(status) and status >> 8 == _SECCOMP_STOP:
                    self._seccomp_stop(tid, get_regs(tid, regs))
                else:
                    self._not_seccomp(tid, status)
            except ProcessLookupError:
                pass                        # killed while stopped (SIGKILL): exit follows

    def _not_seccomp(self, tid: int, status: int) -> None:
        """An exit, a syscall-exit stop, or any other stop (events, signals)."""
        if not os.WIFSTOPPED(status):
            self._gone(tid, status)
        elif status >> 8 == _SYSCALL_STOP:
            self._exit_stop(tid)
        else:
            self._other_stop(tid, status >> 8)

    def _loop_native(self, lib: ctypes.CDLL) -> None:
        """_loop() with waitpid and the PASS-only stops in C (native/stopwait.c). Python's
        signal wakeup pipe tells the C loop of a signal that interrupted no waitpid."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        state = native_wait.WaitState(memfd_dev=self._memfd_dev, wakeup_fd=wake_r,
                                      fd_calls=ctypes.addressof(self._fd_calls))
        regs = ptrace.Regs()
        wait, state_ref, regs_ref = lib.ubd_wait, ctypes.byref(state), ctypes.byref(regs)
        self._state = state
        try:
            while not self._interrupt:
                self._waiting = True
                try:
                    if self._interrupt:
                        return
                    rc = wait(state_ref, regs_ref)
                finally:
                    self._waiting = False
                if state.lane_done:
                    self._lane_back(state)
                if rc < 0:
                    if rc == -errno.EINTR:
                        continue
                    if rc == -errno.ECHILD:
                        return                  # no traced process is left
                    raise OSError(-rc, os.strerror(-rc))
                tid, status = state.tid, state.status
                try:
                    if rc == 0:
                        if state.ino:
                            fd = regs.rdi & 0xFFFFFFFF
                            self.hint = (tid, fd - (1 << 32) if fd >> 31 else fd, state.ino)
                        try:
                            self._seccomp_stop(tid, regs, state)
                        finally:
                            self.hint = None
                    elif rc == 1:
                        self._not_seccomp(tid, status)
                    # rc 2: killed while stopped, its exit follows
                except ProcessLookupError:
                    pass
        finally:
            self._state = None
            self.passed = state.passed
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wake_r)
            os.close(wake_w)

    def arm_lane(self, key: tuple, make: Callable[[], native_wait.Lane], pos: int,
                 sync: Callable[[int], None]) -> None:
        """Let the C loop serve the small O_DIRECT calls on the open file `make()` describes
        until it next returns to Python: rw.py has just served one the same way, and nothing
        it checked can change while Python does not run. `key` says when the description
        must be made again; `sync(pos)` gets the file position back first."""
        state = self._state
        if state is None:
            return
        if key != self._lane_key:
            state.lane = make()
            self._lane_key = key
        self._lane_sync = sync
        state.lane.pos = pos
        state.armed = 1

    def _lane_back(self, state: native_wait.WaitState) -> None:
        """What the lane did while Python did not run: the file position, the count."""
        self.lane_served += state.lane_done
        state.lane_done = 0
        if self._lane_sync is not None:
            self._lane_sync(state.lane.pos)

    def _seccomp_stop(self, tid: int, regs: ptrace.Regs,
                      state: native_wait.WaitState | None = None) -> None:
        """Answer one seccomp stop; with the C loop's `state`, a call that is passed or
        cancelled is resumed by its next ubd_wait() (one ctypes call instead of three)."""
        self.stops += 1
        result = self.dispatch(tid, regs)
        kind = type(result)
        if kind is not NeedsExit:
            cancel = kind is not PassThrough
            rax = 0
            if cancel:
                rax = (result.value if kind is Emulated else -result.errno) & _MASK
            if state is not None:
                state.answer_tid, state.answer_cancel, state.answer_rax = tid, cancel, rax
                return
            if cancel:
                regs.orig_rax, regs.rax = _CANCELLED, rax
                ptrace.set_regs(tid, regs)
            ptrace.cont(tid)
            return
        ptrace.set_regs(tid, result.regs)
        self._pending[tid] = result.on_exit
        ptrace.syscall(tid)
        if self._plant is not None:
            plant, self._plant = self._plant, None
            self.listener.plant(*plant)

    def _exit_stop(self, tid: int) -> None:
        on_exit = self._pending.pop(tid, None)
        if on_exit is not None:
            regs = ptrace.get_regs(tid)
            on_exit(regs)
            ptrace.set_regs(tid, regs)
        ptrace.cont(tid)

    def _other_stop(self, tid: int, stop: int) -> None:
        sig, event = stop & 0xFF, stop >> 8
        if event:
            if event in (ptrace.PTRACE_EVENT_FORK, ptrace.PTRACE_EVENT_VFORK,
                         ptrace.PTRACE_EVENT_CLONE):
                self.tids.add(ptrace.event_msg(tid))
            elif event == ptrace.PTRACE_EVENT_EXEC:
                former = ptrace.event_msg(tid)
                self.memory.forget(tid)            # new address space
                if former != tid:
                    self.memory.forget(former)
                    self.tids.discard(former)
                    self._seen.discard(former)
            ptrace.cont(tid)
            return
        if tid not in self._seen:                   # the automatic attach stop of a child
            self._seen.add(tid)
            self.tids.add(tid)
            if sig == signal.SIGSTOP:
                ptrace.cont(tid)
                return
        ptrace.cont(tid, sig)                       # deliver the guest's own signal

    def _gone(self, tid: int, status: int) -> None:
        self.tids.discard(tid)
        self._seen.discard(tid)
        self._pending.pop(tid, None)
        self.memory.forget(tid)
        if tid == self._root:
            self._status = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                            else 128 + os.WTERMSIG(status))

    def _kill_all(self) -> None:
        """SIGKILL every traced thread and reap them all: nothing traced survives ubdsim."""
        for tid in list(self.tids):
            try:
                os.kill(tid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                tid, status = os.waitpid(-1, WALL)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if os.WIFSTOPPED(status):
                # a new child appeared while killing: kill it too
                try:
                    os.kill(tid, signal.SIGKILL)
                    ptrace.cont(tid)
                except ProcessLookupError:
                    pass
            else:
                self._gone(tid, status)
        self.tids.clear()


def _child(argv: Sequence[str], installer: FilterInstaller) -> None:
    """The forked child: become traceable, stop, install the filter, exec. Never returns."""
    try:
        # Python ignores SIGPIPE and SIGXFSZ; an exec'd program must get the defaults back
        # (like subprocess's restore_signals), or `yes | head` would never end.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ) + _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        if ptrace.traceme() != 0:
            os._exit(126)
        # The filters go in before the stop, so that the tracer can take the planting
        # filter's listener (close-on-exec) from this process while it is stopped.
        if installer.install() != 0:
            os.write(2, b"ubdsim run: cannot install the seccomp filter\n")
            os._exit(126)
        os.kill(os.getpid(), signal.SIGSTOP)
        os.execvp(argv[0], list(argv))
    except OSError as err:
        os.write(2, f"ubdsim run: {argv[0]}: {err.strerror}\n".encode())
        os._exit(127 if err.errno == errno.ENOENT else 126)
    finally:
        os._exit(127)
