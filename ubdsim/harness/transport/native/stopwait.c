/* stopwait.c: the tracer's waitpid loop, with the stops that need no Python answered here.
 *
 * Most intercepted calls the guest makes are reads and writes on its own descriptors (a
 * pipe, /dev/null, a file): the filter cannot tell them from a ubd descriptor (it sees only
 * numbers), so each one stops in the tracer, and the Python handler's only answer is "let
 * it run" (PASS). Here that answer is given in C: at a seccomp stop of a call whose first
 * argument is a descriptor (the `fd_calls` table, built from the syscall table), the
 * descriptor is looked up in /proc/TID/fd; when it is not a memfd (every ubd descriptor is
 * one: fdstate.py) the guest is resumed at once. Everything else returns to Python with the
 * registers read, and with the memfd's inode when the descriptor was one.
 *
 * Built by scripts/setup.sh into build/ubd_stopwait.so; loaded by transport/native_wait.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECCOMP_STOP (SIGTRAP | (7 << 8))   /* PTRACE_EVENT_SECCOMP */
#define FD_CALLS 512

struct ubd_wait {
	int tid;                      /* out: the thread that stopped or ended */
	int status;                   /* out: its waitpid status */
	int answer_tid;               /* in: the seccomp stop Python answered, or 0 */
	int answer_cancel;            /* in: 1 = the call is cancelled with answer_rax as result */
	unsigned long long answer_rax;
	int wakeup_fd;                /* in: Python's signal wakeup pipe (non-blocking), or -1 */
	int pad;
	unsigned long long memfd_dev; /* in: st_dev of every memfd */
	unsigned long long ino;       /* out: the memfd inode behind the first argument, or 0 */
	unsigned long long passed;    /* in/out: stops answered here */
	const unsigned char *fd_calls;/* in: FD_CALLS flags, 1 = a non-memfd first argument is PASS */
};

/* Resume the stop Python answered: cancelled (orig_rax = -1, its result in rax: one stop
 * per call, tracer.py) or run as it is. A thread killed meanwhile is no error. */
static int answer(struct ubd_wait *w, struct user_regs_struct *regs)
{
	int tid = w->answer_tid;

	w->answer_tid = 0;
	if (w->answer_cancel) {
		regs->orig_rax = (unsigned long long)-1;
		regs->rax = w->answer_rax;
		if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0)
			return errno == ESRCH ? 0 : -errno;
	}
	if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
		return errno == ESRCH ? 0 : -errno;
	return 0;
}

/* 0: a seccomp stop for Python, registers in `regs`; 1: any other stop or an exit, for
 * Python (registers not read); 2: a seccomp stop whose registers could not be read (the
 * thread was killed: its exit follows); -errno: waitpid failed (EINTR, ECHILD). */
int ubd_wait(struct ubd_wait *w, struct user_regs_struct *regs)
{
	char path[48];
	struct stat st;

	if (w->answer_tid) {
		int err = answer(w, regs);

		if (err)
			return err;
	}
	for (;;) {
		int status;
		pid_t tid;
		char signals[16];

		/* A signal to ubdsim that came while this loop was not in waitpid (so nothing
		 * returned EINTR): back to Python, whose handler then runs. */
		if (w->wakeup_fd >= 0 && read(w->wakeup_fd, signals, sizeof signals) > 0)
			return -EINTR;
		tid = waitpid(-1, &status, __WALL);

		if (tid < 0)
			return -errno;
		w->tid = tid;
		w->status = status;
		w->ino = 0;
		if (!WIFSTOPPED(status) || (status >> 8) != SECCOMP_STOP)
			return 1;
		if (ptrace(PTRACE_GETREGS, tid, 0, regs) < 0)
			return 2;
		if (regs->orig_rax >= FD_CALLS || !w->fd_calls[regs->orig_rax])
			return 0;
		snprintf(path, sizeof path, "/proc/%d/fd/%d", tid, (int)regs->rdi);
		if (stat(path, &st) == 0 && st.st_dev == w->memfd_dev) {
			w->ino = st.st_ino;
			return 0;
		}
		/* not a ubd descriptor (or not open: the host kernel answers EBADF itself) */
		if (ptrace(PTRACE_CONT, tid, 0, 0) < 0 && errno != ESRCH)
			return -errno;
		w->passed++;
	}
}
