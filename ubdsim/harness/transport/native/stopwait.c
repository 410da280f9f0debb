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
 * The lane: a small O_DIRECT read or write on the one ubd open file Python armed it for
 * (rw.py _copied(): the same call Python just served the same way) is served here too,
 * while nothing Python keeps changed: every return to Python disarms it, and Python reads
 * back the file position (`lane.pos`) and the count (`lane_done`) first. It moves the bytes
 * between the host file and guest memory as rw.py does, and for a write over clear bits of
 * at most one segment sets them and writes their word pair as Unit._cowify_request() and
 * _word_spans() do; anything else (a mixed read, a longer fresh write, a short host call,
 * an error) goes to Python, which serves the call from the start.
 *
 * Built on first use by transport/native_wait.py into ubdsim's cache directory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#define SECCOMP_STOP (SIGTRAP | (7 << 8))   /* PTRACE_EVENT_SECCOMP */
#define FD_CALLS 512
#define LANE_MAX (64 << 10)                  /* rw.py COPY_MAX */
#define SECTOR 512

/* fd_calls values: the call's first argument is a descriptor; the lane kinds also say
 * where the call's position is (the file's, or its fourth argument) and its direction */
enum { FD_PASS = 1, LANE_READ, LANE_WRITE, LANE_PREAD, LANE_PWRITE };

struct ubd_lane {
	unsigned long long ino;       /* the memfd inode of the open file */
	long long pos;                /* its f_pos (read/write move it) */
	long long size;               /* device bytes */
	int readable, writable;       /* the directions the open file and the unit allow */
	int data_fd;                  /* the raw file or the COW file (ubdsim's descriptor) */
	int backing_fd;               /* COW: the backing file; -1: raw */
	long long data_offset;        /* COW: where the data area starts; raw: 0 */
	unsigned char *bitmap;        /* COW: the in-memory bitmap (bit s: byte s/8, bit s%8) */
	long long bitmap_offset;      /* COW: the bitmap's file offset */
	long long guard;              /* [6.1] the last word's index (its pair steps back); -1 */
	int word;                     /* bitmap word bytes */
	int segment;                  /* segment bytes: a fresh write of more goes to Python */
};

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
	const unsigned char *fd_calls;/* in: FD_CALLS kinds (FD_PASS or a lane kind), 0 = none */
	int armed;                    /* in/out: the lane may serve; 0 at every return */
	int pad2;
	unsigned long long lane_done; /* out: calls the lane served since it was armed */
	struct ubd_lane lane;         /* in: what it serves; out: lane.pos */
};

static unsigned char lane_buffer[LANE_MAX];

/* Sectors [sector, sector+count) all set (1), all clear (0) or mixed (-1). */
static int bits_state(const unsigned char *bitmap, long long sector, long long count)
{
	long long set = 0, s;

	for (s = sector; s < sector + count; s++)
		set += (bitmap[s >> 3] >> (s & 7)) & 1;
	return set == count ? 1 : set == 0 ? 0 : -1;
}

/* A fresh write's bitmap step (Unit._cowify_request() for one segment, then
 * _word_spans()): the word pair holding the first sector's word, stepped back one at the
 * guard, written with the bits set; the in-memory bits are set only once it is written.
 * 0, or -1 where Python must serve the call (a bit outside the pair, a write that fails). */
static int lane_set_bits(struct ubd_lane *lane, long long sector, long long count)
{
	long long word_bits = lane->word * 8, index = sector / word_bits, first, s;
	unsigned char words[16];

	if (index == lane->guard)
		index--;
	first = index * lane->word;
	if (first < 0 || sector < first * 8 || sector + count > (first + 2 * lane->word) * 8)
		return -1;
	memcpy(words, lane->bitmap + first, 2 * lane->word);
	for (s = sector; s < sector + count; s++)
		words[(s >> 3) - first] |= 1 << (s & 7);
	if (pwrite(lane->data_fd, words, 2 * lane->word, lane->bitmap_offset + first)
	    != 2 * lane->word)
		return -1;
	memcpy(lane->bitmap + first, words, 2 * lane->word);
	return 0;
}

/* Serve the call on the lane: 1 served (its result is its length, regs->rdx), 0 for
 * Python (nothing of `regs` changed). */
static int lane_serve(struct ubd_wait *w, int kind, int tid, struct user_regs_struct *regs)
{
	struct ubd_lane *lane = &w->lane;
	int writing = kind == LANE_WRITE || kind == LANE_PWRITE;
	int positioned = kind == LANE_PREAD || kind == LANE_PWRITE;
	long long pos = positioned ? (long long)regs->r10 : lane->pos;
	unsigned long long addr = regs->rsi, length = regs->rdx;
	long long sector = pos / SECTOR, count = length / SECTOR, file_offset;
	struct iovec local = { lane_buffer, length }, remote = { (void *)addr, length };
	int fd = lane->data_fd, state = 1, fresh = 0;

	if (!(writing ? lane->writable : lane->readable) || length == 0 || length > LANE_MAX)
		return 0;
	if (pos < 0 || ((unsigned long long)pos | addr | length) % SECTOR
	    || pos + (long long)length > lane->size)
		return 0;
	file_offset = lane->data_offset + pos;
	if (lane->bitmap) {
		state = bits_state(lane->bitmap, sector, count);
		if (writing) {
			fresh = state != 1;
			if (fresh && (long long)length > lane->segment)
				return 0;
		} else if (state == -1 || (state == 0 && lane->backing_fd < 0)) {
			return 0;
		} else if (state == 0) {
			fd = lane->backing_fd;
			file_offset = pos;
		}
	}
	if (writing) {
		if (process_vm_readv(tid, &local, 1, &remote, 1, 0) != (ssize_t)length)
			return 0;
		if (pwrite(fd, lane_buffer, length, file_offset) != (ssize_t)length)
			return 0;
		if (fresh && lane_set_bits(lane, sector, count) < 0)
			return 0;
	} else {
		if (pread(fd, lane_buffer, length, file_offset) != (ssize_t)length)
			return 0;
		if (process_vm_writev(tid, &local, 1, &remote, 1, 0) != (ssize_t)length)
			return 0;
	}
	if (!positioned)
		lane->pos = pos + length;
	w->lane_done++;
	return 1;
}

/* Resume a seccomp stop: cancelled with `rax` as its result (orig_rax = -1: one stop per
 * call, tracer.py) or run as it is. A thread killed meanwhile is no error. */
static int resume(int tid, struct user_regs_struct *regs, int cancel, unsigned long long rax)
{
	if (cancel) {
		regs->orig_rax = (unsigned long long)-1;
		regs->rax = rax;
		if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0)
			return errno == ESRCH ? 0 : -errno;
	}
	if (ptrace(PTRACE_CONT, tid, 0, 0) < 0)
		return errno == ESRCH ? 0 : -errno;
	return 0;
}

/* 0: a seccomp stop for Python, registers in `regs`; 1: any other stop or an exit, for
 * Python (registers not read); 2: a seccomp stop whose registers could not be read (the
 * thread was killed: its exit follows); -errno: waitpid failed (EINTR, ECHILD). Every
 * return disarms the lane. */
static int wait_stop(struct ubd_wait *w, struct user_regs_struct *regs);

int ubd_wait(struct ubd_wait *w, struct user_regs_struct *regs)
{
	int rc = wait_stop(w, regs);

	w->armed = 0;
	return rc;
}

static int wait_stop(struct ubd_wait *w, struct user_regs_struct *regs)
{
	char path[48];
	struct stat st;

	if (w->answer_tid) {
		int tid = w->answer_tid, err;

		w->answer_tid = 0;
		err = resume(tid, regs, w->answer_cancel, w->answer_rax);
		if (err)
			return err;
	}
	for (;;) {
		int kind, err;
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
		kind = w->fd_calls[regs->orig_rax];
		snprintf(path, sizeof path, "/proc/%d/fd/%d", tid, (int)regs->rdi);
		if (stat(path, &st) == 0 && st.st_dev == w->memfd_dev) {
			w->ino = st.st_ino;
			if (kind == FD_PASS || !w->armed || st.st_ino != w->lane.ino
			    || !lane_serve(w, kind, tid, regs))
				return 0;
			err = resume(tid, regs, 1, regs->rdx);
			if (err)
				return err;
			continue;
		}
		/* not a ubd descriptor (or not open: the host kernel answers EBADF itself) */
		err = resume(tid, regs, 0, 0);
		if (err)
			return err;
		w->passed++;
	}
}
