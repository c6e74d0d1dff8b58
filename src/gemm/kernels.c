/* The micro-kernels and their run-time choice. Each keeps a whole C tile in registers for the
 * length of the reduction slice: per step p it loads one row of the B panel (NR floats) and
 * broadcasts the MR values of the A panel's row p, one fused multiply-add per (row, vector).
 *   AVX-512: 8 x 32, 16 zmm accumulators (two vectors per row), the edges stored under masks;
 *   AVX2 + FMA: 6 x 16, 12 ymm accumulators, edges through a small tile buffer;
 *   baseline: 4 x 8 in plain C (multiply then add: ISO C does not contract), which the compiler
 *   vectorises for whatever the build targets.
 * And the channel-lanes shape, for small planes: the vectors run along the A panel's rows
 * (output channels) and the B panel's values are broadcast, so that a tile is 32 channels by 7
 * positions and 7x7, 14x14, 28x28 and 56x56 planes split into whole tiles:
 *   AVX-512: 32 x 7, 14 zmm accumulators (two vectors of channels per position), transposed in
 *   registers at the store;
 *   baseline: 32 x 7 in plain C (so that every build and machine tests the shape).
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

enum { BASE_CH_MR = 32, BASE_CH_NR = 7 };

/* The channel-lanes shape in plain C: acc[position][channel], the inner loop along the
 * channels (contiguous in the A panel). The same sums as every tile: start, then p in order. */
static void tile_baseline_ch(size_t kc, const float *a, const float *b, size_t ldb, float *c,
                             size_t ldc, size_t m, size_t n, const float *bias,
                             bool accumulate) {
    float acc[BASE_CH_NR][BASE_CH_MR];
    for (size_t j = 0; j < BASE_CH_NR; ++j) {
        for (size_t r = 0; r < BASE_CH_MR; ++r) {
            acc[j][r] = bias != NULL && !accumulate && r < m ? bias[r] : 0.0f;
        }
    }
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + p * ldb, *ap = a + p * BASE_CH_MR;
        for (size_t j = 0; j < BASE_CH_NR; ++j) {
            const float bj = bp[j];
            for (size_t r = 0; r < BASE_CH_MR; ++r) {
                acc[j][r] += ap[r] * bj;
            }
        }
    }
    for (size_t r = 0; r < m; ++r) {
        float *cr = c + r * ldc;
        for (size_t j = 0; j < n; ++j) {
            cr[j] = accumulate ? cr[j] + acc[j][r] : acc[j][r];
        }
    }
}

#if defined(DC_GEMM_X86)
enum { AVX2_MR = 6, AVX2_NR = 16, AVX512_MR = 8, AVX512_NR = 32 };

/* Row r of an AVX2 tile (its two vectors lo, hi) into cr: n == NR straight, else through a
 * row buffer (AVX2 has no cheap masked store of any width). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
store_row_avx2(float *cr, __m256 lo, __m256 hi, size_t n, bool accumulate) {
    if (n == AVX2_NR) {
        if (accumulate) {
            lo = _mm256_add_ps(_mm256_loadu_ps(cr), lo);
            hi = _mm256_add_ps(_mm256_loadu_ps(cr + 8), hi);
        }
        _mm256_storeu_ps(cr, lo);
        _mm256_storeu_ps(cr + 8, hi);
        return;
    }
    float t[AVX2_NR];
    _mm256_storeu_ps(t, lo);
    _mm256_storeu_ps(t + 8, hi);
    for (size_t j = 0; j < n; ++j) {
        cr[j] = accumulate ? cr[j] + t[j] : t[j];
    }
}

/* Named accumulators (DC_AVX2_TILE_START in gemm.h): with arrays of them this kernel ran at
 * 16 GFLOP/s of the 38 an AMD EPYC Zen (family 23) reaches. The AVX-512 kernels, with 32
 * registers, keep their arrays in registers without stores. */
__attribute__((target("avx2,fma"))) static void tile_avx2(size_t kc, const float *a,
                                                          const float *b, size_t ldb, float *c,
                                                          size_t ldc, size_t m, size_t n,
                                                          const float *bias, bool accumulate) {
    DC_AVX2_TILE_START(bias, m, accumulate);
    for (size_t p = 0; p < kc; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b + p * ldb), b1 = _mm256_loadu_ps(b + p * ldb + 8);
        const float *ap = a + p * AVX2_MR;
        DC_AVX2_TILE_STEP(ap, b0, b1);
    }
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        store_row_avx2(c + (r) * ldc, c##r##0, c##r##1, n, accumulate);                       \
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

enum { AVX512_CH_MR = 32, AVX512_CH_NR = 7 };

/* 16 channels x 8 positions (v[p] holds channels 0..15 of position p; v[7] is zero) into eight
 * registers of two channels each: out[k] = channel 2k in lanes 0..7, channel 2k + 1 in lanes
 * 8..15, position p in lane p of each half. A transpose by bit swaps: an element's register
 * index (3 bits, the position) and its lane (4 bits, the channel) trade one bit per stage, the
 * last stage also ordering the lanes as (channel bit 0, position). */
__attribute__((target("avx512f"))) static inline void transpose_16x8(const __m512 v[8],
                                                                     __m512 out[8]) {
    __m512 s1[8], s2[8];
    /* register bit 0 <-> lane bit 1: pairs of floats */
    for (int i = 0; i < 8; i += 2) {
        s1[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(v[i]),
                                                    _mm512_castps_pd(v[i + 1])));
        s1[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(v[i]),
                                                        _mm512_castps_pd(v[i + 1])));
    }
    /* register bit 1 <-> lane bit 2: groups of four */
    const __m512i lo2 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi2 = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    static const int pair2[4] = {0, 1, 4, 5}; /* registers with bit 1 clear */
    for (int q = 0; q < 4; ++q) {
        const int i = pair2[q];
        s2[i] = _mm512_permutex2var_ps(s1[i], lo2, s1[i + 2]);
        s2[i + 2] = _mm512_permutex2var_ps(s1[i], hi2, s1[i + 2]);
    }
    /* register bit 2 <-> lane bit 3, then lanes (position, channel bit 0) reordered to
     * (channel bit 0, position) */
    const __m512i lo3 = _mm512_setr_epi32(0, 2, 4, 6, 16, 18, 20, 22, 1, 3, 5, 7, 17, 19, 21, 23);
    const __m512i hi3 = _mm512_setr_epi32(8, 10, 12, 14, 24, 26, 28, 30, 9, 11, 13, 15, 25, 27, 29, 31);
    for (int i = 0; i < 4; ++i) {
        out[i] = _mm512_permutex2var_ps(s2[i], lo3, s2[i + 4]);
        out[i + 4] = _mm512_permutex2var_ps(s2[i], hi3, s2[i + 4]);
    }
}

/* Rows [r0, r0 + 16) of the tile, from their accumulators (acc[p]: 16 channels of position
 * p), rows past m left alone. Two rows per transposed register: the upper half moved down for
 * the second (a masked store at c + ldc - 8 would reach before c). */
__attribute__((target("avx512f"))) static inline void store_16_rows(const __m512 acc[7],
                                                                    float *c, size_t ldc,
                                                                    size_t rows, size_t n,
                                                                    bool accumulate) {
    __m512 v[8], t[8];
    for (int p = 0; p < 7; ++p) {
        v[p] = acc[p];
    }
    v[7] = _mm512_setzero_ps();
    transpose_16x8(v, t);
    const __mmask16 cols = (__mmask16)((1u << n) - 1u);
    for (size_t k = 0; k < 8; ++k) {
        const size_t r = 2 * k;
        if (r >= rows) {
            break;
        }
        __m512 first = t[k], second = _mm512_shuffle_f32x4(t[k], t[k], 0xEE);
        float *c0 = c + r * ldc, *c1 = c0 + ldc;
        if (accumulate) {
            first = _mm512_add_ps(_mm512_maskz_loadu_ps(cols, c0), first);
        }
        _mm512_mask_storeu_ps(c0, cols, first);
        if (r + 1 < rows) {
            if (accumulate) {
                second = _mm512_add_ps(_mm512_maskz_loadu_ps(cols, c1), second);
            }
            _mm512_mask_storeu_ps(c1, cols, second);
        }
    }
}

/* The channel-lanes tile, with or without prefetches (pf_n 0: none; inlined into both). */
__attribute__((target("avx512f"))) static inline void
tile_avx512_ch_body(size_t kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc,
                    size_t m, size_t n, const float *bias, bool accumulate,
                    const void *const *pf, size_t pf_n) {
    const __mmask16 lo = m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1u);
    const __mmask16 hi = m >= 32   ? (__mmask16)0xFFFF
                         : m > 16 ? (__mmask16)((1u << (m - 16)) - 1u)
                                  : (__mmask16)0;
    __m512 start0 = _mm512_setzero_ps(), start1 = _mm512_setzero_ps();
    if (bias != NULL && !accumulate) {
        start0 = _mm512_maskz_loadu_ps(lo, bias);
        start1 = _mm512_maskz_loadu_ps(hi, bias + 16);
    }
    __m512 c0[AVX512_CH_NR], c1[AVX512_CH_NR];
    for (size_t j = 0; j < AVX512_CH_NR; ++j) {
        c0[j] = start0;
        c1[j] = start1;
    }
    /* The lines spread evenly over the steps (after step p, floor((p + 1) * pf_n / kc) of
     * them issued). Two a step from the first step put them all in the first part of the
     * tile, queued for the core's few line-fill buffers (each held until memory answers),
     * and left the rest of the tile with no stream under it: 512 channels at 7x7, one sample,
     * took 0.91 of the time with the even spread, 256 at 14x14 0.96 (AVX-512 Xeon, in-process
     * interleaved). */
    size_t q = 0, due = 0;
    for (size_t p = 0; p < kc; ++p) {
        for (due += pf_n; due >= kc && q < pf_n; due -= kc) {
            _mm_prefetch((const char *)pf[q++], _MM_HINT_T1);
        }
        const __m512 a0 = _mm512_loadu_ps(a + p * AVX512_CH_MR);
        const __m512 a1 = _mm512_loadu_ps(a + p * AVX512_CH_MR + 16);
        const float *bp = b + p * ldb;
        for (size_t j = 0; j < AVX512_CH_NR; ++j) {
            const __m512 bv = _mm512_set1_ps(bp[j]);
            c0[j] = _mm512_fmadd_ps(a0, bv, c0[j]);
            c1[j] = _mm512_fmadd_ps(a1, bv, c1[j]);
        }
    }
    store_16_rows(c0, c, ldc, m < 16 ? m : 16, n, accumulate);
    if (m > 16) {
        store_16_rows(c1, c + 16 * ldc, ldc, m - 16, n, accumulate);
    }
}

__attribute__((target("avx512f"))) static void tile_avx512_ch(size_t kc, const float *a,
                                                              const float *b, size_t ldb,
                                                              float *c, size_t ldc, size_t m,
                                                              size_t n, const float *bias,
                                                              bool accumulate) {
    tile_avx512_ch_body(kc, a, b, ldb, c, ldc, m, n, bias, accumulate, NULL, 0);
}

__attribute__((target("avx512f"))) static void
tile_avx512_ch_pf(size_t kc, const float *a, const float *b, size_t ldb, float *c, size_t ldc,
                  size_t m, size_t n, const float *bias, bool accumulate, const void *const *pf,
                  size_t pf_n) {
    tile_avx512_ch_body(kc, a, b, ldb, c, ldc, m, n, bias, accumulate, pf, pf_n);
}

static const dc_gemm_kernel kernel_avx2 = {DC_ISA_AVX2, "avx2", AVX2_MR, AVX2_NR, tile_avx2,
                                           NULL, false};
static const dc_gemm_kernel kernel_avx512 = {DC_ISA_AVX512, "avx512", AVX512_MR, AVX512_NR,
                                             tile_avx512, NULL, false};
static const dc_gemm_kernel kernel_avx512_ch = {DC_ISA_AVX512, "avx512-channels", AVX512_CH_MR,
                                                AVX512_CH_NR, tile_avx512_ch,
                                                tile_avx512_ch_pf, true};
#endif

static const dc_gemm_kernel kernel_baseline = {DC_ISA_BASELINE, "baseline", BASE_MR, BASE_NR,
                                               tile_baseline, NULL, false};
static const dc_gemm_kernel kernel_baseline_ch = {DC_ISA_BASELINE, "baseline-channels",
                                                  BASE_CH_MR, BASE_CH_NR, tile_baseline_ch,
                                                  NULL, true};

const dc_gemm_kernel *dc_gemm_kernel_of(dc_isa isa, bool channel_lanes) {
    switch (isa) {
    case DC_ISA_BASELINE:
        return channel_lanes ? &kernel_baseline_ch : &kernel_baseline;
#if defined(DC_GEMM_X86)
    case DC_ISA_AVX2:
        /* __builtin_cpu_supports also checks that the OS saves the wide registers. No
         * channel-lanes kernel: 14 accumulators and the loads do not fit in 16 ymm registers,
         * and fewer positions per tile lose the tail advantage the shape is for. */
        return !channel_lanes && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                   ? &kernel_avx2
                   : NULL;
    case DC_ISA_AVX512:
        return !__builtin_cpu_supports("avx512f") ? NULL
               : channel_lanes                    ? &kernel_avx512_ch
                                                  : &kernel_avx512;
#endif
    default:
        return NULL;
    }
}

const dc_gemm_kernel *dc_gemm_kernel_for(dc_isa isa) { return dc_gemm_kernel_of(isa, false); }

/* -1: automatic; else 2 * isa + channel_lanes of the kernel tests asked for. Atomic, so that a
 * test forcing a variant while other threads create layers is not a data race (the choice
 * itself is theirs). */
static atomic_int forced_kernel = -1;

const dc_gemm_kernel *dc_gemm_forced(void) {
    const int forced = atomic_load(&forced_kernel);
    return forced >= 0 ? dc_gemm_kernel_of((dc_isa)(forced / 2), forced % 2 != 0) : NULL;
}

const dc_gemm_kernel *dc_gemm_select(void) {
    const dc_gemm_kernel *k = dc_gemm_forced();
    if (k != NULL) {
        return k;
    }
    k = dc_gemm_kernel_for(DC_ISA_AVX512);
    if (k == NULL) {
        k = dc_gemm_kernel_for(DC_ISA_AVX2);
    }
    return k != NULL ? k : &kernel_baseline;
}

bool dc_gemm_force(dc_isa isa, bool channel_lanes) {
    if (dc_gemm_kernel_of(isa, channel_lanes) == NULL) {
        return false;
    }
    atomic_store(&forced_kernel, 2 * (int)isa + (channel_lanes ? 1 : 0));
    return true;
}

bool dc_gemm_force_isa(dc_isa isa) { return dc_gemm_force(isa, false); }

void dc_gemm_force_auto(void) { atomic_store(&forced_kernel, -1); }
