/*
 * uml_xstate_fix.so: an LD_PRELOAD library that lets Debian's linux.uml 6.1 run on hosts
 * whose XSAVE area is larger than the kernel's fixed FP buffer (AMX hosts: 11008 bytes).
 *
 * Why. arch/x86/um/os-Linux/registers.c save_fp_registers() / restore_fp_registers() [6.1]
 * call ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, pid, NT_X86_XSTATE, {buf, FP_SIZE * 8})
 * with a buffer of 2696 bytes (arch/x86/um/user-offsets.c: DEFINE_LONGS(HOST_FP_SIZE, 2696),
 * the AVX-512 XSAVE size). The host's ptrace_regset() truncates a short GET silently, but
 * xstateregs_set() (arch/x86/kernel/fpu/regset.c) wants exactly fpu_user_cfg.max_size bytes
 * and fails a short SET with EFAULT, so userspace() dies at the first user process with
 * "userspace - ptrace set fp regs failed, errno = 14".
 *
 * What. Every UML register buffer (known by its address: a thread's regs->fp, its
 * aux_fp_regs, exec_fp_regs, thread_fp_regs) gets a shadow image of the host's full size.
 * A GET reads the whole state into the buffer's shadow and copies UML's part out; a SET lays
 * UML's bytes over the same shadow and writes it whole. So each UML call is still exactly one
 * host ptrace call, and the state past UML's buffer (AMX TILECFG/TILEDATA) stays with the
 * buffer it was read into: one guest thread's state is never handed to another. A buffer that
 * was never read into (thread_fp_regs, a memcpy of exec_fp_regs in copy_context_skas0(), a
 * forked thread's copy of its parent's regs) gets zeros there, the init state of those parts.
 * The first XSTATE call asks the host for its full size once (one extra GET per process).
 *
 * Every other ptrace request goes to glibc's ptrace() unchanged. UML 6.1 is uniprocessor and
 * makes its XSTATE calls from one host thread, so the table takes no lock.
 *
 * Optional report: UBDSIM_XSTATE_REPORT=<file> appends one line when the first XSTATE call is
 * shadowed and one at exit ("uml_xstate_fix: host=<bytes> uml=<bytes> ...").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define PROBE_BYTES (64 * 1024)   /* larger than any XSAVE area (CPUID 0xD allows < 64 KiB) */
#define MAX_BUFFERS 4096          /* register buffers remembered; UML tasks reuse addresses */
#define IMAGES_PER_CHUNK 64

struct shadow {
    const void *key;              /* UML's buffer (iov_base) */
    unsigned char *image;         /* host_size bytes: the buffer's full XSAVE image */
};

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static ptrace_fn real_ptrace;
static size_t host_size;          /* 0 until probed */
static size_t uml_size;           /* the first XSTATE buffer length UML passed */
static struct shadow table[MAX_BUFFERS];
static unsigned char *chunk;      /* bump allocator for images, IMAGES_PER_CHUNK at a time */
static size_t chunk_left;
static unsigned char zero_image[PROBE_BYTES];  /* shadow of last resort: table full */
static unsigned char probe_buf[PROBE_BYTES];
static unsigned long gets, sets, buffers, unknown_sets, overflow;
static int reported;

static long sys_ptrace(long request, pid_t pid, void *addr, void *data)
{
    return syscall(SYS_ptrace, request, pid, addr, data);
}

static void report(const char *what)
{
    const char *path = getenv("UBDSIM_XSTATE_REPORT");
    char line[256];
    int fd, n;

    if (path == NULL || *path == '\0')
        return;
    n = snprintf(line, sizeof line,
                 "uml_xstate_fix: %s host=%zu uml=%zu gets=%lu sets=%lu buffers=%lu "
                 "unknown_sets=%lu overflow=%lu\n",
                 what, host_size, uml_size, gets, sets, buffers, unknown_sets, overflow);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) < 0) {
        /* a report that cannot be written changes nothing for the kernel */
    }
    close(fd);
}

__attribute__((destructor)) static void report_at_exit(void)
{
    if (reported)
        report("exit");
}

/* The host's full XSTATE regset size, asked once from the host (ptrace_regset() returns the
 * length it filled: regset->n * regset->size, that is fpu_user_cfg.max_size). */
static int probe(pid_t pid)
{
    struct iovec iov = { probe_buf, sizeof probe_buf };

    if (sys_ptrace(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) < 0)
        return -1;
    host_size = iov.iov_len;
    return 0;
}

static unsigned char *new_image(void)
{
    unsigned char *image;

    if (chunk_left == 0) {
        void *mem = mmap(NULL, host_size * IMAGES_PER_CHUNK, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
            return NULL;
        chunk = mem;          /* zero-filled: the init state for the parts past UML's buffer */
        chunk_left = IMAGES_PER_CHUNK;
    }
    image = chunk;
    chunk += host_size;
    chunk_left--;
    return image;
}

/* The shadow image of UML's buffer `key`, made (zeroed) on first sight. `fresh` says whether
 * it was just made. Falls back to one shared zeroed image when the table is full: a SET then
 * still succeeds, with the init state past UML's buffer. */
static unsigned char *shadow_of(const void *key, int *fresh)
{
    uintptr_t h = ((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull;
    size_t i, slot;

    *fresh = 0;
    for (i = 0; i < MAX_BUFFERS; i++) {
        slot = (h + i) % MAX_BUFFERS;
        if (table[slot].key == key)
            return table[slot].image;
        if (table[slot].key == NULL) {
            unsigned char *image = new_image();
            if (image == NULL)
                break;
            table[slot].key = key;
            table[slot].image = image;
            buffers++;
            *fresh = 1;
            return image;
        }
    }
    overflow++;
    memset(zero_image, 0, host_size);
    *fresh = 1;
    return zero_image;
}

static long xstate_get(pid_t pid, struct iovec *iov)
{
    int fresh;
    unsigned char *image = shadow_of(iov->iov_base, &fresh);
    struct iovec whole = { image, host_size };
    size_t n;

    if (sys_ptrace(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &whole) < 0)
        return -1;
    n = iov->iov_len < whole.iov_len ? iov->iov_len : whole.iov_len;
    memcpy(iov->iov_base, image, n);
    iov->iov_len = n;           /* what the host itself reports for a short GET */
    gets++;
    return 0;
}

static long xstate_set(pid_t pid, struct iovec *iov)
{
    int fresh;
    unsigned char *image = shadow_of(iov->iov_base, &fresh);
    struct iovec whole = { image, host_size };
    size_t n = iov->iov_len < host_size ? iov->iov_len : host_size;

    if (fresh)
        unknown_sets++;
    memcpy(image, iov->iov_base, n);
    sets++;
    return sys_ptrace(PTRACE_SETREGSET, pid, (void *)NT_X86_XSTATE, &whole);
}

long ptrace(enum __ptrace_request request, ...)
{
    va_list ap;
    pid_t pid;
    void *addr, *data;
    struct iovec *iov;

    va_start(ap, request);
    pid = va_arg(ap, pid_t);
    addr = va_arg(ap, void *);
    data = va_arg(ap, void *);
    va_end(ap);

    if (real_ptrace == NULL)
        real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    iov = data;
    if ((request != PTRACE_GETREGSET && request != PTRACE_SETREGSET)
        || (uintptr_t)addr != NT_X86_XSTATE || iov == NULL)
        return real_ptrace(request, pid, addr, data);
    if (host_size == 0 && probe(pid) < 0)
        return real_ptrace(request, pid, addr, data);   /* the host's own answer, errno too */
    if (uml_size == 0)
        uml_size = iov->iov_len;
    if (!reported) {
        reported = 1;
        report("applied");
    }
    return request == PTRACE_GETREGSET ? xstate_get(pid, iov) : xstate_set(pid, iov);
}
