/* The micro-kernels and their run-time choice. Each keeps a whole C tile in registers for the
 * length of the reduction slice: per step p it loads one row of the B panel (NR floats) and
 * broadcasts the MR values of the A panel's row p, one fused multiply-add per (row, vector).
 *   AVX-512: 8 x 32, 16 zmm accumulators (two vectors per row), the edges stored under masks;
 *   AVX2 + FMA: 6 x 16, 12 ymm accumulators, edges through a small tile buffer;
 *   baseline: 4 x 8 in plain C (multiply then add: ISO C does not contract), which the compiler
 *   vectorises for whatever the build targets.
 * The wide kernels are compiled with target attributes and called through a table chosen once
 * per layer, never through load-time resolvers, so the ThreadSanitizer build (which cannot run
 * resolvers) could keep them; DYNCONV_PORTABLE leaves them out anyway. */
#include "gemm.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DYNCONV_PORTABLE)
#define DC_GEMM_X86 1
#include <immintrin.h>
#endif

enum { BASE_MR = 4, BASE_NR = 8 };

static void tile_baseline(size_t kc, const float *a, const float *b, size_t ldb, float *c,
                          size_t ldc, size_t m, size_t n, const float *bias, bool accumulate) {
    float acc[BASE_MR][BASE_NR];
    for (size_t r = 0; r < BASE_MR; ++r) {
        const float start = bias != NULL && !accumulate && r < m ? bias[r] : 0.0f;
        for (size_t j = 0; j < BASE_NR; ++j) {
            acc[r][j] = start;
        }
    }
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + p * ldb, *ap = a + p * BASE_MR;
        for (size_t r = 0; r < BASE_MR; ++r) {
            for (size_t j = 0; j < BASE_NR; ++j) {
                acc[r][j] += ap[r] * bp[j];
            }
        }
    }
    for (size_t r = 0; r < m; ++r) {
        float *cr = c + r * ldc;
        for (size_t j = 0; j < n; ++j) {
            cr[j] = accumulate ? cr[j] + acc[r][j] : acc[r][j];
        }
    }
}

#if defined(DC_GEMM_X86)
enum { AVX2_MR = 6, AVX2_NR = 16, AVX512_MR = 8, AVX512_NR = 32 };

__attribute__((target("avx2,fma"))) static void tile_avx2(size_t kc, const float *a,
                                                          const float *b, size_t ldb, float *c,
                                                          size_t ldc, size_t m, size_t n,
                                                          const float *bias, bool accumulate) {
    __m256 c0[AVX2_MR], c1[AVX2_MR];
    for (size_t r = 0; r < AVX2_MR; ++r) {
        c0[r] = _mm256_set1_ps(bias != NULL && !accumulate && r < m ? bias[r] : 0.0f);
        c1[r] = c0[r];
    }
    for (size_t p = 0; p < kc; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
        const float *ap = a + p * AVX2_MR;
        for (size_t r = 0; r < AVX2_MR; ++r) {
            const __m256 av = _mm256_broadcast_ss(ap + r);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }
    /* Rows spelled out with constant indices, as in the AVX-512 kernel; a partial tile goes
     * through a row buffer (AVX2 has no cheap masked store of any width). */
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        float *cr = c + (r) * ldc;                                                            \
        if (n == AVX2_NR) {                                                                   \
            if (accumulate) {                                                                 \
                c0[r] = _mm256_add_ps(_mm256_loadu_ps(cr), c0[r]);                           \
                c1[r] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), c1[r]);                       \
            }                                                                                 \
            _mm256_storeu_ps(cr, c0[r]);                                                      \
            _mm256_storeu_ps(cr + 8, c1[r]);                                                  \
        } else {                                                                              \
            float t[AVX2_NR];                                                                 \
            _mm256_storeu_ps(t, c0[r]);                                                       \
            _mm256_storeu_ps(t + 8, c1[r]);                                                   \
            for (size_t j = 0; j < n; ++j) {                                                  \
                cr[j] = accumulate ? cr[j] + t[j] : t[j];                                     \
            }                                                                                 \
        }                                                                                     \
    }
    DC_STORE_ROW(0)
    DC_STORE_ROW(1)
    DC_STORE_ROW(2)
    DC_STORE_ROW(3)
    DC_STORE_ROW(4)
    DC_STORE_ROW(5)
#undef DC_STORE_ROW
}

__attribute__((target("avx512f"))) static void tile_avx512(size_t kc, const float *a,
                                                           const float *b, size_t ldb, float *c,
                                                           size_t ldc, size_t m, size_t n,
                                                           const float *bias, bool accumulate) {
    __m512 c0[AVX512_MR], c1[AVX512_MR];
    for (size_t r = 0; r < AVX512_MR; ++r) {
        c0[r] = _mm512_set1_ps(bias != NULL && !accumulate && r < m ? bias[r] : 0.0f);
        c1[r] = c0[r];
    }
    for (size_t p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b + p * ldb), b1 = _mm512_loadu_ps(b + p * ldb + 16);
        const float *ap = a + p * AVX512_MR;
        for (size_t r = 0; r < AVX512_MR; ++r) {
            const __m512 av = _mm512_set1_ps(ap[r]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
    const __mmask16 lo = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
    const __mmask16 hi = n >= 32   ? (__mmask16)0xFFFF
                         : n > 16 ? (__mmask16)((1u << (n - 16)) - 1u)
                                  : (__mmask16)0;
    /* Rows spelled out with constant indices: a loop to m would keep the accumulators in
     * memory (the compiler cannot unroll a variable trip count into registers). */
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        float *cr = c + (r) * ldc;                                                            \
        if (accumulate) {                                                                     \
            c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, cr), c0[r]);                     \
            c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, cr + 16), c1[r]);                \
        }                                                                                     \
        _mm512_mask_storeu_ps(cr, lo, c0[r]);                                                 \
        _mm512_mask_storeu_ps(cr + 16, hi, c1[r]);                                            \
    }
    DC_STORE_ROW(0)
    DC_STORE_ROW(1)
    DC_STORE_ROW(2)
    DC_STORE_ROW(3)
    DC_STORE_ROW(4)
    DC_STORE_ROW(5)
    DC_STORE_ROW(6)
    DC_STORE_ROW(7)
#undef DC_STORE_ROW
}

static const dc_gemm_kernel kernel_avx2 = {DC_ISA_AVX2, "avx2", AVX2_MR, AVX2_NR, tile_avx2};
static const dc_gemm_kernel kernel_avx512 = {DC_ISA_AVX512, "avx512", AVX512_MR, AVX512_NR,
                                             tile_avx512};
#endif

static const dc_gemm_kernel kernel_baseline = {DC_ISA_BASELINE, "baseline", BASE_MR, BASE_NR,
                                               tile_baseline};

const dc_gemm_kernel *dc_gemm_kernel_for(dc_isa isa) {
    switch (isa) {
    case DC_ISA_BASELINE:
        return &kernel_baseline;
#if defined(DC_GEMM_X86)
    case DC_ISA_AVX2:
        /* __builtin_cpu_supports also checks that the OS saves the wide registers. */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &kernel_avx2
                                                                                : NULL;
    case DC_ISA_AVX512:
        return __builtin_cpu_supports("avx512f") ? &kernel_avx512 : NULL;
#endif
    default:
        return NULL;
    }
}

/* -1: automatic; else the dc_isa tests asked for. Atomic, so that a test forcing a variant
 * while other threads create layers is not a data race (the choice itself is theirs). */
static atomic_int forced_isa = -1;

const dc_gemm_kernel *dc_gemm_select(void) {
    const int forced = atomic_load(&forced_isa);
    if (forced >= 0) {
        return dc_gemm_kernel_for((dc_isa)forced);
    }
    const dc_gemm_kernel *k = dc_gemm_kernel_for(DC_ISA_AVX512);
    if (k == NULL) {
        k = dc_gemm_kernel_for(DC_ISA_AVX2);
    }
    return k != NULL ? k : &kernel_baseline;
}

bool dc_gemm_force_isa(dc_isa isa) {
    if (dc_gemm_kernel_for(isa) == NULL) {
        return false;
    }
    atomic_store(&forced_isa, (int)isa);
    return true;
}

void dc_gemm_force_auto(void) { atomic_store(&forced_isa, -1); }
