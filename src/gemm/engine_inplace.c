/* Stride-1 kernels larger than 1x1 without B panels: the micro-kernel reads its B rows in place
 * from a zero-padded copy of the input whose rows share their borders.
 *
 * The copy of channel c holds padded row r (0 <= r < Hp = H + 2ph) at pitch P = W + pw:
 * xp[pw + c * Hp * P + r * P + j] is the input at (r - ph, j) for j < W and 0 for W <= j < P,
 * with pw zeros before the first row. A column left of a row (j = -k, k <= pw) is then the
 * zero tail of the row above, so one gap of pw zeros is both the right border of a row and the
 * left border of the next. Output (oh, ow) gets the padded position q = oh * P + ow, and its tap
 * (c, ki, kj) reads xp[c * Hp * P + ki * dh * P + kj * dw + q]: for NR consecutive positions,
 * NR consecutive floats at an offset that depends only on the reduction index. The last
 * P - out_w = (kw - 1) * dw - pw positions of each padded row are not outputs (one in 57 at
 * 56x56, one in 29 at 28x28, one in 15 at 14x14 for a 3x3 kernel of pad 1): their lanes are
 * computed and dropped, and the kept lanes of a tile, in order, are consecutive outputs, which
 * the micro-kernel stores compacted.
 *
 * For "same" padding (out_w = W) on AVX-512 a second form drops nothing: rows at pitch W with
 * no border columns, the border cleared by masked B loads (see same_avx512).
 *
 * Every output is its start (the bias, or y for a later slice) plus the same products in the
 * same order as in dc_engine_conv's packed path, so the two give the same bits, whatever the
 * column range or the reduction's split into calls. */
#include "gemm.h"

#include "tensor.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DYNCONV_PORTABLE)
#define DC_ROWS_X86 1
#include <immintrin.h>
#endif

/* Padded positions per block (whole tiles at every NR) and the reduction slice. */
enum { ROWS_NC = 512, ROWS_KC = DC_ENGINE_KC, ROWS_MAX_NR = 32 };
/* The masked "same" form's tile (vectors of 16 positions, positions) and block (same_avx512). */
enum { SAME_NV = 3, SAME_NR = 16 * SAME_NV, SAME_NC = 10 * SAME_NR };

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* C rows [0, m) (stride ldc) from a kc-long A panel slice and B rows b + off[p] (NR floats
 * each); lane j of the tile is kept when bit j of `keep` is set, and the kept lanes go in order
 * to c[0], c[1], ... of each row. Start and order of the sums as in dc_gemm_tile_fn. */
typedef void (*rows_tile_fn)(size_t kc, const float *a, const float *b, const size_t *off,
                             float *c, size_t ldc, size_t m, uint32_t keep, const float *bias,
                             bool accumulate);

enum { BASE_MR = 4, BASE_NR = 8 };

static void rows_baseline(size_t kc, const float *a, const float *b, const size_t *off,
                          float *c, size_t ldc, size_t m, uint32_t keep, const float *bias,
                          bool accumulate) {
    float acc[BASE_MR][BASE_NR];
    for (size_t r = 0; r < BASE_MR; ++r) {
        const float start = bias != NULL && !accumulate && r < m ? bias[r] : 0.0f;
        for (size_t j = 0; j < BASE_NR; ++j) {
            acc[r][j] = start;
        }
    }
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + off[p], *ap = a + p * BASE_MR;
        for (size_t r = 0; r < BASE_MR; ++r) {
            for (size_t j = 0; j < BASE_NR; ++j) {
                acc[r][j] += ap[r] * bp[j];
            }
        }
    }
    for (size_t r = 0; r < m; ++r) {
        float *cr = c + r * ldc;
        size_t o = 0;
        for (size_t j = 0; j < BASE_NR; ++j) {
            if (keep >> j & 1u) {
                cr[o] = accumulate ? cr[o] + acc[r][j] : acc[r][j];
                ++o;
            }
        }
    }
}

#if defined(DC_ROWS_X86)
enum { AVX2_MR = 6, AVX2_NR = 16, AVX512_MR = 8, AVX512_NR = 32 };

/* The kept lanes of row r (its two vectors lo, hi), in order, (+)= into cr. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
put_row_avx2(float *cr, __m256 lo, __m256 hi, uint32_t keep, bool accumulate) {
    float t[AVX2_NR];
    _mm256_storeu_ps(t, lo);
    _mm256_storeu_ps(t + 8, hi);
    size_t o = 0;
    for (size_t j = 0; j < AVX2_NR; ++j) {
        if (keep >> j & 1u) {
            cr[o] = accumulate ? cr[o] + t[j] : t[j];
            ++o;
        }
    }
}

/* Named accumulators, as in kernels.c's tile_avx2 (DC_AVX2_TILE_START in gemm.h). */
__attribute__((target("avx2,fma"))) static void
rows_avx2(size_t kc, const float *a, const float *b, const size_t *off, float *c, size_t ldc,
          size_t m, uint32_t keep, const float *bias, bool accumulate) {
    DC_AVX2_TILE_START(bias, m, accumulate);
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + off[p];
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        const float *ap = a + p * AVX2_MR;
        DC_AVX2_TILE_STEP(ap, b0, b1);
    }
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        put_row_avx2(c + (r) * ldc, c##r##0, c##r##1, keep, accumulate);                      \
    }
    DC_STORE_ROW(0)
    DC_STORE_ROW(1)
    DC_STORE_ROW(2)
    DC_STORE_ROW(3)
    DC_STORE_ROW(4)
    DC_STORE_ROW(5)
#undef DC_STORE_ROW
}

/* The kept lanes of v under `lanes`, compacted, (+)= into the first popcount(lanes) floats of
 * cr: a compress in registers, then one masked load and store (the memory forms of compress
 * and expand are slow on some cores). */
#define DC_PUT16(cr, lanes, v)                                                                \
    do {                                                                                      \
        const __mmask16 n_ = (__mmask16)((1u << __builtin_popcount(lanes)) - 1u);             \
        __m512 v_ = _mm512_maskz_compress_ps((__mmask16)(lanes), (v));                        \
        if (accumulate) {                                                                     \
            v_ = _mm512_add_ps(_mm512_maskz_loadu_ps(n_, (cr)), v_);                         \
        }                                                                                     \
        _mm512_mask_storeu_ps((cr), n_, v_);                                                  \
    } while (0)

/* Only lanes 0..15 kept (the last tile of a range): half the work, 8 accumulators. */
__attribute__((target("avx512f"))) static void
rows_avx512_half(size_t kc, const float *a, const float *b, const size_t *off, float *c,
                 size_t ldc, size_t m, uint32_t keep, const float *bias, bool accumulate) {
    __m512 c0[AVX512_MR];
    for (size_t r = 0; r < AVX512_MR; ++r) {
        c0[r] = _mm512_set1_ps(bias != NULL && !accumulate && r < m ? bias[r] : 0.0f);
    }
    for (size_t p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b + off[p]);
        const float *ap = a + p * AVX512_MR;
        for (size_t r = 0; r < AVX512_MR; ++r) {
            c0[r] = _mm512_fmadd_ps(_mm512_set1_ps(ap[r]), b0, c0[r]);
        }
    }
    const unsigned lo = keep & 0xFFFFu;
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        DC_PUT16(c + (r) * ldc, lo, c0[r]);                                                   \
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

__attribute__((target("avx512f"))) static void
rows_avx512(size_t kc, const float *a, const float *b, const size_t *off, float *c, size_t ldc,
            size_t m, uint32_t keep, const float *bias, bool accumulate) {
    if (keep >> 16 == 0) {
        rows_avx512_half(kc, a, b, off, c, ldc, m, keep, bias, accumulate);
        return;
    }
    __m512 c0[AVX512_MR], c1[AVX512_MR];
    for (size_t r = 0; r < AVX512_MR; ++r) {
        c0[r] = _mm512_set1_ps(bias != NULL && !accumulate && r < m ? bias[r] : 0.0f);
        c1[r] = c0[r];
    }
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + off[p];
        const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
        const float *ap = a + p * AVX512_MR;
        for (size_t r = 0; r < AVX512_MR; ++r) {
            const __m512 av = _mm512_set1_ps(ap[r]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
    const unsigned lo = keep & 0xFFFFu, hi = keep >> 16;
    const size_t nlo = (size_t)__builtin_popcount(lo);
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        DC_PUT16(c + (r) * ldc, lo, c0[r]);                                                   \
        DC_PUT16(c + (r) * ldc + nlo, hi, c1[r]);                                             \
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
#undef DC_PUT16

/* "Same" padding (out_w = W): rows at pitch W with no border columns at all, position q the
 * output index itself, and the border read as zeros by masking the B loads instead: row p of
 * the tile loads lanes 16v..16v+15 under keep[SAME_NV * p + v], masks which clear the lanes
 * whose tap falls left or right of the input row. A cleared lane is a product with +0, as with
 * a zero of the padded copy: the same bits as the panels. Stores as dc_gemm_tile_fn (n
 * columns).
 *
 * The tile is 8 rows (the A panels' MR) by 48 positions, three vectors per row: 24
 * accumulators instead of the 8 x 32 tile's 16, so that each reduction step issues 24
 * multiply-adds for its 3 B loads, 3 masks and 8 broadcasts (16 for 2, 2 and 8), with enough
 * independent chains to cover their latency while B loads that straddle cache lines (every tap
 * column but one in 16) wait. This path over one sample, 48-wide tiles against 32-wide ones
 * in one process, interleaved, process CPU time, medians of 31 rounds (Xeon model 167,
 * AVX-512, shared machine; 3x3 kernels of pad 1, C_in = C_out): 64 channels at 56x56 0.92 to
 * 0.93 of the time, 128 at 28x28 0.91 to 0.95, 256 at 14x14 0.91 to 0.93, 512 at 7x7 0.95.
 * A range's last tile takes one or two vectors when they cover it. */
__attribute__((target("avx512f"), always_inline)) static inline void
same_avx512_body(size_t kc, const float *a, const float *b, const size_t *off,
                 const uint16_t *keep, float *c, size_t ldc, size_t m, size_t n,
                 const float *bias, bool accumulate, const int nv) {
    __m512 acc[AVX512_MR][SAME_NV];
    for (size_t r = 0; r < AVX512_MR; ++r) {
        const __m512 start = _mm512_set1_ps(bias != NULL && !accumulate && r < m ? bias[r] : 0.0f);
        for (int v = 0; v < nv; ++v) {
            acc[r][v] = start;
        }
    }
    for (size_t p = 0; p < kc; ++p) {
        const float *bp = b + off[p];
        __m512 bv[SAME_NV];
        for (int v = 0; v < nv; ++v) {
            bv[v] = _mm512_maskz_loadu_ps((__mmask16)keep[SAME_NV * p + (size_t)v], bp + 16 * v);
        }
        const float *ap = a + p * AVX512_MR;
        for (size_t r = 0; r < AVX512_MR; ++r) {
            const __m512 av = _mm512_set1_ps(ap[r]);
            for (int v = 0; v < nv; ++v) {
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
            }
        }
    }
    __mmask16 cols[SAME_NV];
    for (int v = 0; v < nv; ++v) {
        const size_t lo = 16 * (size_t)v;
        cols[v] = n >= lo + 16 ? (__mmask16)0xFFFF
                  : n > lo     ? (__mmask16)((1u << (n - lo)) - 1u)
                               : (__mmask16)0;
    }
    /* Rows spelled out with constant indices, so that the accumulators stay in registers. */
#define DC_STORE_ROW(r)                                                                       \
    if ((r) < m) {                                                                            \
        float *cr = c + (r) * ldc;                                                            \
        for (int v = 0; v < nv; ++v) {                                                        \
            __m512 o = acc[r][v];                                                             \
            if (accumulate) {                                                                 \
                o = _mm512_add_ps(_mm512_maskz_loadu_ps(cols[v], cr + 16 * v), o);           \
            }                                                                                 \
            _mm512_mask_storeu_ps(cr + 16 * v, cols[v], o);                                   \
        }                                                                                     \
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

/* The tile for n columns: three vectors, or fewer when they cover n. */
__attribute__((target("avx512f"))) static void
same_avx512(size_t kc, const float *a, const float *b, const size_t *off, const uint16_t *keep,
            float *c, size_t ldc, size_t m, size_t n, const float *bias, bool accumulate) {
    if (n > 32) {
        same_avx512_body(kc, a, b, off, keep, c, ldc, m, n, bias, accumulate, 3);
    } else if (n > 16) {
        same_avx512_body(kc, a, b, off, keep, c, ldc, m, n, bias, accumulate, 2);
    } else {
        same_avx512_body(kc, a, b, off, keep, c, ldc, m, n, bias, accumulate, 1);
    }
}
#endif

/* The tile of kernel k's shape, or NULL when there is none. */
static rows_tile_fn rows_tile_for(const dc_gemm_kernel *k) {
    switch (k->isa) {
    case DC_ISA_BASELINE:
        return k->mr == BASE_MR && k->nr == BASE_NR ? rows_baseline : NULL;
#if defined(DC_ROWS_X86)
    case DC_ISA_AVX2:
        return k->mr == AVX2_MR && k->nr == AVX2_NR ? rows_avx2 : NULL;
    case DC_ISA_AVX512:
        return k->mr == AVX512_MR && k->nr == AVX512_NR ? rows_avx512 : NULL;
#endif
    default:
        return NULL;
    }
}

/* -1: the rule; 0: never; 1: whenever the shape allows; 2: as 1, never the masked form. */
static atomic_int rows_mode = -1;

void dc_engine_force_inplace(int mode) {
    atomic_store(&rows_mode, mode < 0 ? -1 : mode > 2 ? 2 : mode);
}

bool dc_engine_inplace_possible(const dc_conv_shape *s, const dc_gemm_kernel *k) {
    /* The shared border needs pw <= (kw - 1) * dw: no output left of the row's first input or
     * right of its last is then more than pw columns away from it. */
    return s->stride_h == 1 && s->stride_w == 1 && s->kernel_h * s->kernel_w > 1 &&
           s->pad_w <= (s->kernel_w - 1) * s->dilation_w && rows_tile_for(k) != NULL;
}

/* Whether the masked "same" form applies: out_w = W, on the AVX-512 kernel, kw <= 16. */
static bool same_form(const dc_conv_shape *s, const dc_gemm_kernel *k) {
#if defined(DC_ROWS_X86)
    return k->isa == DC_ISA_AVX512 && k->mr == AVX512_MR && k->nr == AVX512_NR &&
           s->out_w == s->width && s->kernel_w <= 16;
#else
    (void)s;
    (void)k;
    return false;
#endif
}

/* The rule, from the engine alone (dc_engine_conv_clamped over one sample, static 3x3 kernel
 * of pad 1, C_in = C_out; each form against the B panels in the same binary, interleaved,
 * process CPU time, median of 81 ratios; AMD EPYC Zen 5, 2 cores shared with other work):
 *                       AVX-512 masked   AVX-512 unmasked   AVX2 (unmasked)
 *   64 ch, 56x56             0.84             0.83-0.86          0.84
 *   128 ch, 28x28            0.92             0.94-0.95          0.97
 *   256 ch, 14x14            0.94             0.99               1.08
 *   512 ch, 7x7              0.96             0.98-1.01          0.98
 * and, AVX-512 unmasked: 144 ch 56x56 0.89, 32 ch 112x112 0.70, 64 ch 5x5 (pad 2) 56x56 0.82;
 * reduction slice by slice (the fused mixing's calls) and two threads splitting the columns
 * within a few % of the same. The gain is the panel build saved (14% of the time at 56x56, 9%
 * at 28x28, 5% at 14x14); the unmasked form pays for it with the dropped positions, one in
 * P = W + pw per row for a 3x3 kernel of pad 1 (one in 15 at 14x14, where the two cancel). So:
 * the masked form whenever it applies ("same" padding on AVX-512), else the unmasked one on
 * the wide kernels when at most one position in 24 is dropped; the baseline kernel keeps its
 * panels (not measured). The whole layer (dynconv-bench, K = 1 static / K = 4 dynamic, this
 * rule against the panels everywhere, interleaved builds, process CPU time, medians of 9):
 *                        b1 t1        b16 t1       b1 t2        b16 t2
 *   r18_3x3_64_56      0.88 / 0.89  0.90 / 0.95  0.90 / 0.90  0.90 / 0.88
 *   r18_3x3_128_28     0.90 / 0.91  0.91 / 0.90  0.96 / 0.93  0.92 / 0.86
 *   r18_3x3_256_14     0.95 / 1.00  0.96 / 0.97  0.93 / 0.93  0.95 / 0.91
 *   32 ch 112x112      0.85 / 0.86  0.78 / 0.84  0.83 / 0.85  0.85 / 0.86 */
static bool rule_prefers_rows(const dc_conv_shape *s, const dc_gemm_kernel *k) {
    const size_t pitch = s->width + s->pad_w, dropped = pitch - s->out_w;
    if (same_form(s, k)) {
        return true;
    }
    return (k->isa == DC_ISA_AVX512 || k->isa == DC_ISA_AVX2) && dropped * 24 <= pitch;
}

bool dc_engine_uses_inplace(const dc_conv_shape *s, const dc_gemm_kernel *k) {
    const int mode = atomic_load(&rows_mode);
    return mode != 0 && dc_engine_inplace_possible(s, k) && (mode > 0 || rule_prefers_rows(s, k));
}

bool dc_engine_inplace_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t *out) {
    size_t hp, pitch, chan, all;
    return dc_add_size(s->height, 2 * s->pad_h, &hp) &&
           dc_add_size(s->width, s->pad_w, &pitch) && dc_mul_size(hp, pitch, &chan) &&
           dc_mul_size(chan, s->in_channels / s->groups, &all) &&
           dc_add_size(all, 2 * s->pad_w + (k->nr > SAME_NR ? k->nr : SAME_NR), out);
}

/* Channels [c0, c1) of a group's input into the shared-border copy (layout above), the pw
 * zeros before channel c0's first row, and NR zeros after channel c1 - 1: the last tile of a
 * range reads up to NR - 1 floats past its channel's rows, for lanes that are dropped. */
static void pad_rows(const dc_conv_shape *s, const float *xg, size_t c0, size_t c1, size_t nr,
                     float *xp) {
    const size_t w = s->width, pw = s->pad_w, pitch = w + pw, hp = s->height + 2 * s->pad_h;
    const size_t chan = hp * pitch;
    memset(xp + c0 * chan, 0, pw * sizeof(float));
    for (size_t c = c0; c < c1; ++c) {
        float *dst = xp + pw + c * chan;
        const float *src = xg + c * s->height * w;
        memset(dst, 0, s->pad_h * pitch * sizeof(float));
        for (size_t r = 0; r < s->height; ++r) {
            float *row = dst + (s->pad_h + r) * pitch;
            memcpy(row, src + r * w, w * sizeof(float));
            memset(row + w, 0, pw * sizeof(float));
        }
        memset(dst + (s->pad_h + s->height) * pitch, 0, s->pad_h * pitch * sizeof(float));
    }
    memset(xp + pw + c1 * chan, 0, nr * sizeof(float));
}

/* Rows [0, m) (row stride ld) of n columns, clamped in place (as dc_engine_conv_clamped). */
static void clamp_cols(float *y, size_t ld, size_t m, size_t n, const dc_engine_clamp *cl) {
    const float lo = cl->lo, hi = cl->hi;
    for (size_t r = 0; r < m; ++r) {
        float *row = y + r * ld;
        for (size_t j = 0; j < n; ++j) {
            const float v = row[j] < lo ? lo : row[j];
            row[j] = v > hi ? hi : v;
        }
    }
}

#if defined(DC_ROWS_X86)
/* Channels [c0, c1) at pitch W, zero rows above and below (the layout of pad_rows with no
 * border columns: row r of channel c at pw + c * Hp * W + r * W), pw zeros before channel c0
 * and NR + pw after channel c1 - 1, for the masked lanes of the first and last tiles. */
static void pad_same(const dc_conv_shape *s, const float *xg, size_t c0, size_t c1, size_t nr,
                     float *xp) {
    const size_t w = s->width, pw = s->pad_w, top = s->pad_h * w, body = s->height * w;
    const size_t chan = body + 2 * top;
    memset(xp + c0 * chan, 0, pw * sizeof(float));
    for (size_t c = c0; c < c1; ++c) {
        float *dst = xp + pw + c * chan;
        memset(dst, 0, top * sizeof(float));
        memcpy(dst + top, xg + c * body, body * sizeof(float));
        memset(dst + top + body, 0, top * sizeof(float));
    }
    memset(xp + pw + c1 * chan, 0, (nr + pw) * sizeof(float));
}

/* dc_engine_conv_inplace for same_form shapes: blocks of SAME_NC outputs in tiles of SAME_NR
 * (the outputs in order, row after row; a tile may span rows). */
static void conv_same(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                      const float *a, size_t a_stride, size_t a_p0, const float *b, float *y,
                      float *scratch, size_t col0, size_t col1, size_t p_begin, size_t p_end,
                      const dc_engine_clamp *clamp) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t mr = k->mr, nr = SAME_NR, panels = (g_out + mr - 1) / mr;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t taps = s->kernel_h * s->kernel_w, w = s->width, kw = s->kernel_w;
    const size_t chan = (s->height + 2 * s->pad_h) * w;
    enum { MAX_KW = 16 };
    size_t off[ROWS_KC];
    uint16_t keep[SAME_NV * ROWS_KC];
    uint64_t tap_keep[SAME_NC / SAME_NR * MAX_KW];
    unsigned char col_of[ROWS_KC];
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        const float *ag = a + g * panels * a_stride - a_p0 * mr;
        float *yg = y + g * g_out * plane;
        pad_same(s, xg, p_begin / taps, (p_end - 1) / taps + 1, nr, scratch);
        for (size_t c = col0; c < col1; c += SAME_NC) {
            const size_t nc = min_size(SAME_NC, col1 - c), npan = (nc + nr - 1) / nr;
            /* Tile jp's lanes kept for tap column kj (reading input column ow + kj * dw - pw):
             * those inside the row. Once per block, for every slice. */
            for (size_t jp = 0; jp < npan; ++jp) {
                const size_t ow0 = (c + jp * nr) % w;
                for (size_t kj = 0; kj < kw; ++kj) {
                    uint64_t bits = 0;
                    for (size_t j = 0, ow = ow0; j < nr; ++j, ow = ow + 1 == w ? 0 : ow + 1) {
                        const size_t iw = ow + kj * s->dilation_w;
                        bits |= (uint64_t)(iw >= s->pad_w && iw - s->pad_w < w) << j;
                    }
                    tap_keep[jp * kw + kj] = bits;
                }
            }
            for (size_t p0 = p_begin; p0 < p_end; p0 += ROWS_KC) {
                const size_t kc = min_size(ROWS_KC, p_end - p0);
                for (size_t i = 0; i < kc; ++i) {
                    const size_t p = p0 + i, ch = p / taps, ki = p % taps / kw, kj = p % kw;
                    off[i] = ch * chan + ki * s->dilation_h * w + kj * s->dilation_w;
                    col_of[i] = (unsigned char)kj;
                }
                const bool accumulate = p0 > 0;
                for (size_t jp = 0; jp < npan; ++jp) {
                    const size_t q0 = c + jp * nr, n = min_size(nr, nc - jp * nr);
                    const uint64_t *tk = tap_keep + jp * kw;
                    for (size_t i = 0; i < kc; ++i) {
                        for (size_t v = 0; v < SAME_NV; ++v) {
                            keep[SAME_NV * i + v] = (uint16_t)(tk[col_of[i]] >> (16 * v));
                        }
                    }
                    for (size_t i = 0; i < panels; ++i) {
                        const size_t m = min_size(mr, g_out - i * mr);
                        same_avx512(kc, ag + i * a_stride + p0 * mr, scratch + q0, off, keep,
                                    yg + i * mr * plane + q0, plane, m, n,
                                    b != NULL ? b + g * g_out + i * mr : NULL, accumulate);
                    }
                    if (clamp != NULL && p0 + kc == p_end) {
                        clamp_cols(yg + q0, plane, g_out, n, clamp);
                    }
                }
            }
        }
    }
}
#endif

void dc_engine_conv_inplace(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                         const float *a, size_t a_stride, size_t a_p0, const float *b, float *y,
                         float *scratch, size_t col0, size_t col1, size_t p_begin, size_t p_end,
                         const dc_engine_clamp *clamp) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t mr = k->mr, nr = k->nr, panels = (g_out + mr - 1) / mr;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t taps = s->kernel_h * s->kernel_w, ow_n = s->out_w;
    const size_t pitch = s->width + s->pad_w, chan = (s->height + 2 * s->pad_h) * pitch;
    const rows_tile_fn tile = rows_tile_for(k);
    if (col0 >= col1 || p_begin >= p_end || tile == NULL) {
        return;
    }
#if defined(DC_ROWS_X86)
    if (same_form(s, k) && atomic_load(&rows_mode) != 2) {
        conv_same(s, k, x, a, a_stride, a_p0, b, y, scratch, col0, col1, p_begin, p_end, clamp);
        return;
    }
#endif
    /* Padded positions of the first and one past the last output of the range. */
    const size_t qa = col0 / ow_n * pitch + col0 % ow_n;
    const size_t qb = (col1 - 1) / ow_n * pitch + (col1 - 1) % ow_n + 1;
    size_t off[ROWS_KC];
    uint32_t keep[ROWS_NC / BASE_NR];
    size_t out[ROWS_NC / BASE_NR], kept[ROWS_NC / BASE_NR];
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        const float *ag = a + g * panels * a_stride - a_p0 * mr;
        float *yg = y + g * g_out * plane;
        pad_rows(s, xg, p_begin / taps, (p_end - 1) / taps + 1, nr, scratch);
        for (size_t qc = qa; qc < qb; qc += ROWS_NC) {
            const size_t nq = min_size(ROWS_NC, qb - qc), tiles = (nq + nr - 1) / nr;
            /* Which lanes of each tile are outputs, and where the first one goes. */
            for (size_t t = 0; t < tiles; ++t) {
                uint32_t bits = 0;
                size_t first = SIZE_MAX;
                for (size_t j = 0; j < nr; ++j) {
                    const size_t q = qc + t * nr + j;
                    if (q < qb && q % pitch < ow_n) {
                        bits |= (uint32_t)1 << j;
                        first = first == SIZE_MAX ? q / pitch * ow_n + q % pitch : first;
                    }
                }
                keep[t] = bits;
                out[t] = first;
                kept[t] = (size_t)__builtin_popcount(bits);
            }
            for (size_t p0 = p_begin; p0 < p_end; p0 += ROWS_KC) {
                const size_t kc = min_size(ROWS_KC, p_end - p0);
                for (size_t i = 0; i < kc; ++i) {
                    const size_t p = p0 + i, ch = p / taps, ki = p % taps / s->kernel_w;
                    const size_t kj = p % s->kernel_w;
                    off[i] = ch * chan + ki * s->dilation_h * pitch + kj * s->dilation_w;
                }
                /* The first slice starts from the bias, the others add to y. */
                const bool accumulate = p0 > 0;
                for (size_t t = 0; t < tiles; ++t) {
                    if (keep[t] == 0) {
                        continue; /* only dropped positions (a wide kernel's border) */
                    }
                    const float *bt = scratch + qc + t * nr;
                    for (size_t i = 0; i < panels; ++i) {
                        const size_t m = min_size(mr, g_out - i * mr);
                        tile(kc, ag + i * a_stride + p0 * mr, bt, off,
                             yg + i * mr * plane + out[t], plane, m, keep[t],
                             b != NULL ? b + g * g_out + i * mr : NULL, accumulate);
                    }
                    if (clamp != NULL && p0 + kc == p_end) {
                        clamp_cols(yg + out[t], plane, g_out, kept[t], clamp);
                    }
                }
            }
        }
    }
}
