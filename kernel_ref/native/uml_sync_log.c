/*
 * uml_sync_log.so: an LD_PRELOAD library that logs the host sync calls (and the opens, with
 * their O_SYNC/O_DSYNC/O_DIRECT flags) of the process it is loaded into, so the host side of
 * a guest flush can be measured the same way under linux.uml and under `ubdsim run`.
 *
 * Why. A guest fsync(), fdatasync(), sync(), `dd conv=fsync`, `oflag=dsync`... ends, on the
 * host, in whatever the block driver does with REQ_OP_FLUSH (arch/um/drivers/ubd_kern.c
 * ubd_submit_request() / io_thread() / do_io() [6.1]) and in how it opened its files
 * (os_open_file() [6.1]: O_SYNC for flag s or ubd=sync). linux.uml calls glibc for both
 * (os_sync_file(): fdatasync(); os_fsync_file(): fsync(); os_open_file(): open64()), and so
 * does Python (os.fsync, os.fdatasync, os.sync, os.open, mmap.flush), so interposing glibc
 * sees both backends' calls, measured identically.
 *
 * What. Calls to fsync, fdatasync, sync_file_range, syncfs, sync, msync and the open family
 * (open, open64, openat, openat64, their _FORTIFY_SOURCE __*_2 forms, creat, creat64) are
 * passed to glibc unchanged; each appends one line to the file named by $UBDSIM_SYNC_LOG
 * (nothing is logged when it is unset):
 *
 *     call <TAB> pid <TAB> exe <TAB> fd <TAB> path <TAB> arg <TAB> result
 *
 * exe is the basename of /proc/self/exe when the library was loaded; path is readlink of
 * /proc/self/fd/FD (an open's new descriptor; the name given when the open failed; the file
 * behind the address for msync, "-" for sync); arg is the open's flags (access mode, then
 * |SYNC |DSYNC |DIRECT |CREAT |TRUNC), sync_file_range's "offset,nbytes,flags", msync's
 * "MS_SYNC"/"MS_ASYNC"(+"|MS_INVALIDATE"), else "-"; result is the return value, with
 * "/errno" when it is -1. Tabs, newlines and backslashes in paths are written \t \n \\.
 * kernel_ref/sync_log.py reads and normalises the lines.
 *
 * Constraints. linux.uml's ubd I/O thread runs on ONE page of stack (ubd_kern.c ubd_init():
 * alloc_stack(0, 0) [6.1]) and was made by a bare clone() that shares the main thread's TLS,
 * so nothing here uses much stack, TLS, stdio or malloc: the lines are built in static
 * buffers under a try-lock (after a bounded wait a contender logs "<busy>" for the path
 * rather than risk waiting forever on itself), with raw system calls for the log's own
 * open/write/close, so the library never logs itself. The log file is opened and closed for
 * each line (O_APPEND, one write per line): no descriptor of ours lives in the process, so
 * the guest programs of `ubdsim run`, which inherit LD_PRELOAD and log their own calls, see
 * their usual descriptor numbers. The real functions are looked up once, at load.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define LOG_VARIABLE "UBDSIM_SYNC_LOG"
#define NAME_BYTES 4096
#define LINE_BYTES (3 * NAME_BYTES + 256)
#define LOCK_TRIES 100000

typedef int (*fd_fn)(int);
typedef void (*void_fn)(void);
typedef int (*sfr_fn)(int, off64_t, off64_t, unsigned int);
typedef int (*msync_fn)(void *, size_t, int);
typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*creat_fn)(const char *, mode_t);

static fd_fn real_fsync, real_fdatasync, real_syncfs;
static void_fn real_sync;
static sfr_fn real_sync_file_range;
static msync_fn real_msync;
static open_fn real_open, real_open64;
static openat_fn real_openat, real_openat64;
static open2_fn real_open_2, real_open64_2;
static openat2_fn real_openat_2, real_openat64_2;
static creat_fn real_creat, real_creat64;

static char log_path[NAME_BYTES];     /* empty: logging is off */
static char exe_name[256] = "?";
static int lock;                      /* 0 free, 1 held (the static buffers below) */
static char name_buf[NAME_BYTES];
static char line_buf[LINE_BYTES];
static char maps_buf[8192];

static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

/* The real function, looked up now if a call comes before our constructor ran (another
 * preloaded library's constructor). */
static void *resolve(void **slot, const char *name)
{
    if (*slot == NULL)
        *slot = next(name);
    return *slot;
}
#define REAL(var, name) ((__typeof__(var))resolve((void **)&var, name))

__attribute__((constructor)) static void load(void)
{
    real_fsync = (fd_fn)next("fsync");
    real_fdatasync = (fd_fn)next("fdatasync");
    real_syncfs = (fd_fn)next("syncfs");
    real_sync = (void_fn)next("sync");
    real_sync_file_range = (sfr_fn)next("sync_file_range");
    real_msync = (msync_fn)next("msync");
    real_open = (open_fn)next("open");
    real_open64 = (open_fn)next("open64");
    real_openat = (openat_fn)next("openat");
    real_openat64 = (openat_fn)next("openat64");
    real_open_2 = (open2_fn)next("__open_2");
    real_open64_2 = (open2_fn)next("__open64_2");
    real_openat_2 = (openat2_fn)next("__openat_2");
    real_openat64_2 = (openat2_fn)next("__openat64_2");
    real_creat = (creat_fn)next("creat");
    real_creat64 = (creat_fn)next("creat64");

    const char *target = getenv(LOG_VARIABLE);
    if (target != NULL && *target && strlen(target) < sizeof(log_path))
        strcpy(log_path, target);
    char exe[NAME_BYTES];
    long n = syscall(SYS_readlink, "/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = 0;
        const char *base = strrchr(exe, '/');
        base = base ? base + 1 : exe;
        if (strlen(base) < sizeof(exe_name))
            strcpy(exe_name, base);
    }
}

/* ---- the line, built in line_buf at *pos -------------------------------------------- */

static void put(size_t *pos, const char *text)
{
    while (*text && *pos < LINE_BYTES - 2)
        line_buf[(*pos)++] = *text++;
}

static void put_escaped(size_t *pos, const char *text)
{
    for (; *text && *pos < LINE_BYTES - 3; text++) {
        char c = *text;
        if (c == '\t' || c == '\n' || c == '\\') {
            line_buf[(*pos)++] = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : '\\';
        }
        line_buf[(*pos)++] = c;
    }
}

static void put_long(size_t *pos, long long value)
{
    char digits[24];
    int n = 0;
    unsigned long long v = value < 0 ? -(unsigned long long)value : (unsigned long long)value;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (value < 0)
        put(pos, "-");
    while (n && *pos < LINE_BYTES - 2)
        line_buf[(*pos)++] = digits[--n];
}

static void put_tab(size_t *pos)
{
    put(pos, "\t");
}

/* readlink of /proc/self/fd/FD into name_buf ("?" when it cannot be read). */
static const char *fd_name(int fd)
{
    char link[40] = "/proc/self/fd/";
    size_t pos = strlen(link);
    char digits[12];
    int n = 0;
    unsigned int v = (unsigned int)fd;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        link[pos++] = digits[--n];
    link[pos] = 0;
    long got = syscall(SYS_readlink, link, name_buf, sizeof(name_buf) - 1);
    if (got <= 0)
        return "?";
    name_buf[got] = 0;
    return name_buf;
}

/* The file mapped at addr, from /proc/self/maps, into name_buf ("[anon]" when none). */
static const char *mapped_name(const void *addr)
{
    unsigned long target = (unsigned long)addr;
    long fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return "?";
    size_t kept = 0;
    const char *found = "[anon]";
    for (;;) {
        long got = syscall(SYS_read, (int)fd, maps_buf + kept, sizeof(maps_buf) - 1 - kept);
        if (got <= 0)
            break;
        kept += (size_t)got;
        maps_buf[kept] = 0;
        char *line = maps_buf, *end;
        while ((end = strchr(line, '\n')) != NULL) {
            *end = 0;
            char *dash;
            unsigned long lo = strtoul(line, &dash, 16);
            unsigned long hi = *dash == '-' ? strtoul(dash + 1, NULL, 16) : 0;
            if (lo <= target && target < hi) {
                char *path = strchr(line, '/');
                if (path != NULL && strlen(path) < sizeof(name_buf)) {
                    strcpy(name_buf, path);
                    found = name_buf;
                }
                goto done;
            }
            line = end + 1;
        }
        kept = strlen(line);
        memmove(maps_buf, line, kept);
    }
done:
    syscall(SYS_close, (int)fd);
    return found;
}

static int take_lock(void)
{
    for (int i = 0; i < LOCK_TRIES; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&lock, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return 1;
        syscall(SYS_sched_yield);
    }
    return 0;
}

static void give_lock(void)
{
    __atomic_store_n(&lock, 0, __ATOMIC_RELEASE);
}

/* One line. what: 'f' = fd's path, 'm' = the file mapped at addr, 'n' = `name` as given,
 * '-' = no file. */
static void log_call(const char *call, int fd, char what, const void *addr, const char *name,
                     const char *arg, long long result, int err)
{
    if (!log_path[0])
        return;
    int saved = errno;
    if (!take_lock()) {
        /* Contended for too long (see the header): a line without the path. */
        char small[160];
        size_t n = 0;
        const char *parts[] = {call, "\t?\t", exe_name, "\t?\t<busy>\t-\t?\n"};
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
            for (const char *c = parts[i]; *c && n < sizeof(small) - 1; c++)
                small[n++] = *c;
        long out = syscall(SYS_openat, AT_FDCWD, log_path,
                           O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (out >= 0) {
            syscall(SYS_write, (int)out, small, n);
            syscall(SYS_close, (int)out);
        }
        errno = saved;
        return;
    }
    size_t pos = 0;
    put(&pos, call);
    put_tab(&pos);
    put_long(&pos, (long long)syscall(SYS_getpid));
    put_tab(&pos);
    put_escaped(&pos, exe_name);
    put_tab(&pos);
    put_long(&pos, fd);
    put_tab(&pos);
    if (what == 'f')
        put_escaped(&pos, fd_name(fd));
    else if (what == 'm')
        put_escaped(&pos, mapped_name(addr));
    else if (what == 'n')
        put_escaped(&pos, name ? name : "?");
    else
        put(&pos, "-");
    put_tab(&pos);
    put(&pos, arg);
    put_tab(&pos);
    put_long(&pos, result);
    if (result == -1) {
        put(&pos, "/");
        put_long(&pos, err);
    }
    line_buf[pos++] = '\n';
    long out = syscall(SYS_openat, AT_FDCWD, log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                       0644);
    if (out >= 0) {
        syscall(SYS_write, (int)out, line_buf, pos);
        syscall(SYS_close, (int)out);
    }
    give_lock();
    errno = saved;
}

/* ---- sync calls ---------------------------------------------------------------------- */

int fsync(int fd)
{
    int ret = REAL(real_fsync, "fsync")(fd);
    log_call("fsync", fd, 'f', NULL, NULL, "-", ret, errno);
    return ret;
}

int fdatasync(int fd)
{
    int ret = REAL(real_fdatasync, "fdatasync")(fd);
    log_call("fdatasync", fd, 'f', NULL, NULL, "-", ret, errno);
    return ret;
}

int syncfs(int fd)
{
    int ret = REAL(real_syncfs, "syncfs")(fd);
    log_call("syncfs", fd, 'f', NULL, NULL, "-", ret, errno);
    return ret;
}

void sync(void)
{
    REAL(real_sync, "sync")();
    log_call("sync", -1, '-', NULL, NULL, "-", 0, 0);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags)
{
    int ret = REAL(real_sync_file_range, "sync_file_range")(fd, offset, nbytes, flags);
    int err = errno;
    char arg[80];
    /* "offset,nbytes,flags" without stdio */
    size_t pos = 0;
    long long parts[3] = {offset, nbytes, flags};
    for (int i = 0; i < 3; i++) {
        char digits[24];
        int n = 0;
        unsigned long long v = parts[i] < 0 ? -(unsigned long long)parts[i]
                                            : (unsigned long long)parts[i];
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (parts[i] < 0)
            arg[pos++] = '-';
        while (n)
            arg[pos++] = digits[--n];
        arg[pos++] = i < 2 ? ',' : 0;
    }
    errno = err;
    log_call("sync_file_range", fd, 'f', NULL, NULL, arg, ret, err);
    return ret;
}

int msync(void *addr, size_t length, int flags)
{
    int ret = REAL(real_msync, "msync")(addr, length, flags);
    const char *arg = (flags & MS_SYNC) ? ((flags & MS_INVALIDATE) ? "MS_SYNC|MS_INVALIDATE"
                                                                    : "MS_SYNC")
                                        : ((flags & MS_INVALIDATE) ? "MS_ASYNC|MS_INVALIDATE"
                                                                    : "MS_ASYNC");
    log_call("msync", -1, 'm', addr, NULL, arg, ret, errno);
    return ret;
}

/* ---- opens --------------------------------------------------------------------------- */

static const char *open_flags(int flags, char *out)
{
    int access = flags & O_ACCMODE;
    strcpy(out, access == O_RDONLY ? "O_RDONLY" : access == O_WRONLY ? "O_WRONLY"
                : access == O_RDWR ? "O_RDWR" : "O_ACCMODE");
    if ((flags & O_SYNC) == O_SYNC)
        strcat(out, "|O_SYNC");
    else if (flags & O_DSYNC)
        strcat(out, "|O_DSYNC");
    if (flags & O_DIRECT)
        strcat(out, "|O_DIRECT");
    if (flags & O_CREAT)
        strcat(out, "|O_CREAT");
    if (flags & O_TRUNC)
        strcat(out, "|O_TRUNC");
    return out;
}

static void log_open(const char *call, const char *path, int flags, int ret, int err)
{
    char arg[96];
    open_flags(flags, arg);
    if (ret >= 0)
        log_call(call, ret, 'f', NULL, NULL, arg, ret, err);
    else
        log_call(call, ret, 'n', NULL, path, arg, ret, err);
    errno = err;
}

static mode_t mode_of(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    int ret = REAL(real_open, "open")(path, flags, mode);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    int ret = REAL(real_open64, "open64")(path, flags, mode);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    int ret = REAL(real_openat, "openat")(dirfd, path, flags, mode);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_of(flags, ap);
    va_end(ap);
    int ret = REAL(real_openat64, "openat64")(dirfd, path, flags, mode);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int __open_2(const char *path, int flags)
{
    int ret = REAL(real_open_2, "__open_2")(path, flags);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int __open64_2(const char *path, int flags)
{
    int ret = REAL(real_open64_2, "__open64_2")(path, flags);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int __openat_2(int dirfd, const char *path, int flags)
{
    int ret = REAL(real_openat_2, "__openat_2")(dirfd, path, flags);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    int ret = REAL(real_openat64_2, "__openat64_2")(dirfd, path, flags);
    log_open("open", path, flags, ret, errno);
    return ret;
}

int creat(const char *path, mode_t mode)
{
    int ret = REAL(real_creat, "creat")(path, mode);
    log_open("open", path, O_WRONLY | O_CREAT | O_TRUNC, ret, errno);
    return ret;
}

int creat64(const char *path, mode_t mode)
{
    int ret = REAL(real_creat64, "creat64")(path, mode);
    log_open("open", path, O_WRONLY | O_CREAT | O_TRUNC, ret, errno);
    return ret;
}
