/* Does this core run a stream of loads from memory under register-blocked multiply-adds?
 *
 * A standalone probe, not part of the build (AVX-512 only):
 *     gcc -O3 -march=native -funroll-loops -o overlap bench/probes/overlap.c
 *     ./overlap [MiB]      (the four streamed sets together; default 256)
 *
 * "tiles" is the shape of the engine's inner loop: 14 accumulators (2 x 16 rows by 7
 * columns), two A vectors and seven broadcasts from L1 a step. "mix" is what mixing K = 4 sets
 * inside that loop would add: every e-th step, one vector from each of four sequential streams
 * of the sets, combined by multiply-adds and stored to an L1 buffer. If the stream ran under
 * the multiply-adds, "both" would take max(tiles, mix); it takes close to their sum. The
 * figures and what they mean for batch 1 are in docs/benchmarks-engine.md. */
#if !defined(__AVX512F__)
#error "build with -march=native on an AVX-512 CPU"
#endif
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { STEPS = 256, MIXED = 8192 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static void run(const float *a, const float *b, float *c, long reps,
                                          const float *sets, size_t len, float *mixed,
                                          int every, int tiles) {
    __m512 acc[14];
    for (int i = 0; i < 14; ++i) {
        acc[i] = _mm512_setzero_ps();
    }
    const __m512 p0 = _mm512_set1_ps(0.1f), p1 = _mm512_set1_ps(0.2f);
    const __m512 p2 = _mm512_set1_ps(0.3f), p3 = _mm512_set1_ps(0.4f);
    size_t q = 0, out = 0;
    for (long r = 0; r < reps; ++r) {
        for (int k = 0; k < STEPS; ++k) {
            if (tiles) {
                const __m512 a0 = _mm512_loadu_ps(a + k * 32);
                const __m512 a1 = _mm512_loadu_ps(a + k * 32 + 16);
                for (int j = 0; j < 7; ++j) {
                    const __m512 bj = _mm512_set1_ps(b[k * 7 + j]);
                    acc[2 * j] = _mm512_fmadd_ps(a0, bj, acc[2 * j]);
                    acc[2 * j + 1] = _mm512_fmadd_ps(a1, bj, acc[2 * j + 1]);
                }
            }
            if (every > 0 && k % every == 0) {
                __m512 m = _mm512_mul_ps(p0, _mm512_loadu_ps(sets + q));
                m = _mm512_fmadd_ps(p1, _mm512_loadu_ps(sets + len + q), m);
                m = _mm512_fmadd_ps(p2, _mm512_loadu_ps(sets + 2 * len + q), m);
                m = _mm512_fmadd_ps(p3, _mm512_loadu_ps(sets + 3 * len + q), m);
                _mm512_storeu_ps(mixed + out % MIXED, m);
                out += 16;
                q = q + 16 < len ? q + 16 : 0;
            }
        }
    }
    for (int i = 1; i < 14; ++i) {
        acc[0] = _mm512_add_ps(acc[0], acc[i]);
    }
    _mm512_storeu_ps(c, acc[0]);
}

int main(int argc, char **argv) {
    const size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    const size_t len = mib * ((size_t)1 << 20) / sizeof(float) / 4;
    float *sets = aligned_alloc(64, len * 4 * sizeof(float));
    float *mixed = aligned_alloc(64, MIXED * sizeof(float));
    static float a[STEPS * 32], b[STEPS * 7];
    float c[16];
    if (len < 16 || sets == NULL || mixed == NULL) {
        fprintf(stderr, "overlap: bad size or out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < len * 4; ++i) {
        sets[i] = 1e-3f * (float)(i & 7);
    }
    for (int i = 0; i < STEPS * 32; ++i) {
        a[i] = 1e-3f;
    }
    for (int i = 0; i < STEPS * 7; ++i) {
        b[i] = 1e-3f;
    }
    const long reps = 40000;
    const int everies[] = {1, 2, 3, 4, 6, 8};
    double t = now();
    run(a, b, c, reps, sets, len, mixed, 0, 1);
    const double tt = now() - t;
    printf("%zu MiB of sets; tiles alone %.3f s (%.1f GFLOP/s)\n", mib, tt,
           (double)reps * STEPS * 14 * 32 / tt * 1e-9);
    for (size_t e = 0; e < sizeof everies / sizeof everies[0]; ++e) {
        const double bytes = (double)reps * STEPS / everies[e] * 64 * 4;
        t = now();
        run(a, b, c, reps, sets, len, mixed, everies[e], 0);
        const double tm = now() - t;
        t = now();
        run(a, b, c, reps, sets, len, mixed, everies[e], 1);
        const double tb = now() - t;
        printf("mix every %d steps: mix alone %.3f s (%.1f GB/s), both %.3f s; "
               "sum %.3f, max %.3f\n",
               everies[e], tm, bytes / tm * 1e-9, tb, tt + tm, tt > tm ? tt : tm);
    }
    printf("(checksum %g)\n", (double)c[0]);
    free(sets);
    free(mixed);
    return 0;
}
