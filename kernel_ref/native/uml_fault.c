/*
 * uml_fault.so: an LD_PRELOAD library that makes chosen host reads or writes of ONE host file
 * fail, for the process it is loaded into (linux.uml), so that what the kernel returns to its
 * guest for a failed host call can be observed and compared with `ubdsim run --inject`.
 *
 * Why. linux.uml's ubd I/O thread reads and writes the unit's files with glibc's pread64 and
 * pwrite64 (arch/um/os-Linux/file.c os_pread_file(), os_pwrite_file() [6.1]; `nm -D linux.uml`
 * lists no preadv/pwritev), and do_io() turns their result into the request's status
 * (map_error(): ENOSPC -> BLK_STS_NOSPC, ENOSYS/EOPNOTSUPP -> BLK_STS_NOTSUPP, anything else,
 * a short write's positive count included, -> BLK_STS_IOERR). Interposing those two calls
 * gives the kernel exactly the host error a full or failing disk would.
 *
 * What. The environment says which calls fail (nothing happens when UBDSIM_FAULT_FILE is unset):
 *   UBDSIM_FAULT_FILE   the host file (matched by device and inode, taken at load: hostfs's
 *                       own reads of other files pass untouched)
 *   UBDSIM_FAULT        comma-separated key=value:
 *       op=read|write   which call (pread64 or pwrite64)
 *       from=B,to=E     only calls whose byte range [offset, offset+len) overlaps [B, E)
 *                       (to=0 or absent: no upper bound)
 *       len=N           only calls of exactly N bytes (0 or absent: any)
 *       nth=N           matching calls are counted 1, 2, ...: the first to fail is the Nth
 *                       (default 1)
 *       count=N         how many fail from there (0: every later one; default 1)
 *       errno=E         fail with -1 and errno E (nothing is read or written)
 *       short=S         write: write only the first S bytes and return S (a torn write;
 *                       a call of at most S bytes is written whole)
 *       crash=1         write: do the write, then SIGKILL linux.uml's whole process group,
 *                       as a kill of the machine's process would (nothing more reaches a file)
 *   UBDSIM_FAULT_LOG    optional: one line per injected fault is appended there:
 *                       op <TAB> offset <TAB> length <TAB> what ("errno=5", "short=512", "crash")
 *
 * Constraints (as uml_sync_log.c): the I/O thread runs on one page of stack and shares the
 * main thread's TLS, so the call path uses raw system calls, a few words of stack, no stdio
 * and no malloc; the counter is atomic.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define NAME_BYTES 4096

typedef ssize_t (*pread_fn)(int, void *, size_t, off64_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off64_t);

static pread_fn real_pread64;
static pwrite_fn real_pwrite64;

static int armed;                       /* a file and a spec were given */
static int want_write;                  /* op=write (else read) */
static dev_t target_dev;
static ino_t target_ino;
static unsigned long long range_from, range_to, only_len;
static unsigned long nth = 1, count = 1;
static int fail_errno, crash;
static long short_bytes = -1;
static unsigned long matched;           /* matching calls so far (atomic) */
static char log_path[NAME_BYTES];

static unsigned long long number(const char *text)
{
    return strtoull(text, NULL, 0);
}

static void parse_spec(const char *spec)
{
    char buf[512];
    if (strlen(spec) >= sizeof(buf))
        return;
    strcpy(buf, spec);
    for (char *item = strtok(buf, ","); item != NULL; item = strtok(NULL, ",")) {
        char *value = strchr(item, '=');
        if (value == NULL)
            continue;
        *value++ = 0;
        if (!strcmp(item, "op"))
            want_write = !strcmp(value, "write");
        else if (!strcmp(item, "from"))
            range_from = number(value);
        else if (!strcmp(item, "to"))
            range_to = number(value);
        else if (!strcmp(item, "len"))
            only_len = number(value);
        else if (!strcmp(item, "nth"))
            nth = (unsigned long)number(value);
        else if (!strcmp(item, "count"))
            count = (unsigned long)number(value);
        else if (!strcmp(item, "errno"))
            fail_errno = (int)number(value);
        else if (!strcmp(item, "short"))
            short_bytes = (long)number(value);
        else if (!strcmp(item, "crash"))
            crash = (int)number(value);
    }
}

__attribute__((constructor)) static void load(void)
{
    real_pread64 = (pread_fn)dlsym(RTLD_NEXT, "pread64");
    real_pwrite64 = (pwrite_fn)dlsym(RTLD_NEXT, "pwrite64");
    const char *file = getenv("UBDSIM_FAULT_FILE");
    const char *spec = getenv("UBDSIM_FAULT");
    const char *log = getenv("UBDSIM_FAULT_LOG");
    struct stat st;
    if (file == NULL || spec == NULL || stat(file, &st) != 0)
        return;
    target_dev = st.st_dev;
    target_ino = st.st_ino;
    parse_spec(spec);
    if (log != NULL && strlen(log) < sizeof(log_path))
        strcpy(log_path, log);
    armed = 1;
}

static int is_target(int fd)
{
    struct stat st;
    if (syscall(SYS_fstat, fd, &st) != 0)
        return 0;
    return st.st_dev == target_dev && st.st_ino == target_ino;
}

/* Does this call fail? Counts it when it matches. */
static int hit(int fd, size_t len, off64_t offset, int writing)
{
    if (!armed || writing != want_write || !is_target(fd))
        return 0;
    unsigned long long lo = (unsigned long long)offset, hi = lo + len;
    if (hi <= range_from || (range_to && lo >= range_to))
        return 0;
    if (only_len && len != only_len)
        return 0;
    unsigned long n = __atomic_add_fetch(&matched, 1, __ATOMIC_SEQ_CST);
    return n >= nth && (count == 0 || n < nth + count);
}

static void put_number(char *line, size_t *pos, unsigned long long v)
{
    char digits[24];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        line[(*pos)++] = digits[--n];
}

static void note(const char *op, off64_t offset, size_t len, const char *what, long value)
{
    if (!log_path[0])
        return;
    char line[160];
    size_t pos = 0;
    for (const char *c = op; *c; c++)
        line[pos++] = *c;
    line[pos++] = '\t';
    put_number(line, &pos, (unsigned long long)offset);
    line[pos++] = '\t';
    put_number(line, &pos, len);
    line[pos++] = '\t';
    for (const char *c = what; *c; c++)
        line[pos++] = *c;
    if (value >= 0)
        put_number(line, &pos, (unsigned long long)value);
    line[pos++] = '\n';
    long fd = syscall(SYS_openat, AT_FDCWD, log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                      0644);
    if (fd < 0)
        return;
    syscall(SYS_write, (int)fd, line, pos);
    syscall(SYS_close, (int)fd);
}

ssize_t pread64(int fd, void *buf, size_t len, off64_t offset)
{
    if (hit(fd, len, offset, 0)) {
        note("read", offset, len, "errno=", fail_errno);
        errno = fail_errno;
        return -1;
    }
    return real_pread64(fd, buf, len, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t offset)
{
    if (!hit(fd, len, offset, 1))
        return real_pwrite64(fd, buf, len, offset);
    if (crash) {
        ssize_t done = real_pwrite64(fd, buf, len, offset);
        note("write", offset, len, "crash", -1);
        syscall(SYS_kill, 0, SIGKILL);
        return done;
    }
    if (short_bytes >= 0) {
        if ((size_t)short_bytes >= len)
            return real_pwrite64(fd, buf, len, offset);     /* nothing to tear */
        note("write", offset, len, "short=", short_bytes);
        return real_pwrite64(fd, buf, (size_t)short_bytes, offset);
    }
    note("write", offset, len, "errno=", fail_errno);
    errno = fail_errno;
    return -1;
}
