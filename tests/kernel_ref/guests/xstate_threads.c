/*
 * xstate_threads THREADS ROUNDS: threads whose vector state must survive every context switch.
 *
 * Under linux.uml every switch between guest threads saves and restores the FP/vector state
 * with PTRACE_GETREGSET/SETREGSET NT_X86_XSTATE (arch/um/os-Linux/skas/process.c userspace()
 * [6.1]); on AMX hosts that goes through kernel_ref's XSAVE fix. Each thread here works on its
 * own data with:
 *   - glibc string functions (memset, memcpy, memmove, memchr, memcmp, strlen, strchr), which
 *     glibc runs in their AVX2 or EVEX (ymm16-31) variants on such CPUs;
 *   - where the CPU has AVX-512F/BW, a loop that keeps 24 accumulators live in zmm registers
 *     (so zmm16-31 are used) and the opmask registers, with no call inside, so the guest
 *     kernel's timer preempts it with live vector state;
 *   - sched_yield() between rounds, a switch on every round.
 * It prints one line per thread: its number, whether the AVX-512 loop ran, and a hash of
 * everything it computed. Run natively and under linux.uml, the lines must be equal: a switch
 * that lost, truncated or swapped a thread's state changes its hash.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUFFER (256 * 1024)
#define LANES 24

struct job {
    int index;
    long rounds;
    int wide;                  /* AVX-512 loop */
    uint64_t hash;
};

static uint64_t mix(uint64_t hash, uint64_t value)
{
    hash ^= value + 0x9E3779B97F4A7C15ull + (hash << 6) + (hash >> 2);
    return hash * 0x100000001B3ull;
}

static uint64_t fnv(const unsigned char *data, size_t n)
{
    uint64_t hash = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i += 61)          /* a sample: the point is the string calls */
        hash = (hash ^ data[i]) * 0x100000001B3ull;
    return hash;
}

__attribute__((target("avx512f,avx512bw")))
static uint64_t zmm_work(uint64_t seed, int steps)
{
    __m512i acc[LANES];
    const __m512i one = _mm512_set1_epi64(1);
    const __m512i key = _mm512_set1_epi64((long long)(seed * 0x2545F4914F6CDD1Dull));
    uint64_t out = 0;

    for (int i = 0; i < LANES; i++)
        acc[i] = _mm512_set_epi64(seed + i, seed * 3 + i, seed * 5 + i, seed * 7 + i,
                                  seed * 11 + i, seed * 13 + i, seed * 17 + i, seed * 19 + i);
    for (int s = 0; s < steps; s++) {
#pragma GCC unroll 24          /* constant indices: the accumulators stay in zmm registers */
        for (int i = 0; i < LANES; i++) {
            __m512i next = acc[(i + 1) % LANES];
            __mmask8 less = _mm512_cmplt_epu64_mask(acc[i], acc[(i + 5) % LANES]);
            acc[i] = _mm512_add_epi64(_mm512_rol_epi64(acc[i], 7), _mm512_xor_si512(next, key));
            acc[i] = _mm512_mask_add_epi64(acc[i], less, acc[i], one);
        }
    }
    for (int i = 0; i < LANES; i++)
        out = mix(out, (uint64_t)_mm512_reduce_add_epi64(acc[i]));
    return out;
}

static void *work(void *arg)
{
    struct job *job = arg;
    unsigned char *a = malloc(BUFFER), *b = malloc(BUFFER);
    uint64_t hash = (uint64_t)job->index * 0x51ED27ull + 1;

    for (long r = 0; r < job->rounds; r++) {
        unsigned char fill = (unsigned char)(job->index * 37 + r * 11 + 1);
        size_t cut = (size_t)((job->index * 7919 + r * 104729) % (BUFFER - 1)) + 1;
        const unsigned char *found;
        char *c;

        memset(a, fill, BUFFER);
        a[cut] = (unsigned char)(fill + 1);
        memcpy(b, a, BUFFER);
        memmove(b + 1, b, BUFFER - 1);
        found = memchr(a, fill + 1, BUFFER);
        hash = mix(hash, (uint64_t)(found - a));
        hash = mix(hash, (uint64_t)(memcmp(a, b, BUFFER) > 0));
        b[BUFFER - 1] = 0;
        b[cut / 2 + 1] = 0;
        hash = mix(hash, strlen((char *)b));
        c = strchr((char *)b, fill + 1);
        hash = mix(hash, c ? (uint64_t)(c - (char *)b) : 0);
        hash = mix(hash, fnv(b, BUFFER));
        if (job->wide)
            hash = mix(hash, zmm_work(hash, 20000));
        sched_yield();
    }
    free(a);
    free(b);
    job->hash = hash;
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long rounds = argc > 2 ? atol(argv[2]) : 50;
    int wide = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    struct job *jobs = calloc((size_t)threads, sizeof *jobs);

    if (threads < 1 || rounds < 1 || ids == NULL || jobs == NULL) {
        fprintf(stderr, "usage: xstate_threads THREADS ROUNDS\n");
        return 2;
    }
    for (int i = 0; i < threads; i++) {
        jobs[i] = (struct job){ .index = i, .rounds = rounds, .wide = wide };
        if (pthread_create(&ids[i], NULL, work, &jobs[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < threads; i++)
        pthread_join(ids[i], NULL);
    for (int i = 0; i < threads; i++)
        printf("thread %d avx512=%d hash=%016llx\n", i, wide, (unsigned long long)jobs[i].hash);
    return 0;
}
