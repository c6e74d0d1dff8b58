/* B panels from a zero-padded copy of the input, split into stride phases: phase (a, b) of a
 * channel holds padded[i * sh + a][j * sw + b] as row i, column j (Hq x Wq, Hq = ceil(Hp / sh),
 * Wq = ceil(Wp / sw)). Tap (ki, kj) of output (oh, ow) reads padded[oh * sh + ki * dh]
 * [ow * sw + kj * dw], which is phase ((ki * dh) % sh, (kj * dw) % sw) at row
 * oh + (ki * dh) / sh, column ow + (kj * dw) / sw: consecutive output columns read consecutive
 * floats, for every stride and dilation. With the border and the phases materialised once per
 * sample, every panel row is a few contiguous runs (one per output row the panel's columns
 * cross), at offsets that depend on the panel and not on the reduction index: they are worked
 * out once per call, and each of the kc rows is then only copies, each one or two masked vector
 * moves on AVX-512. (Stride 1 has a single phase: the padded input itself. Phases no tap reads,
 * as with a kernel smaller than its stride, are not built.) */
#include "gemm.h"

#include "tensor.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(DYNCONV_PORTABLE)
#define DC_PAD_X86 1
#include <immintrin.h>
#endif

/* Columns a call handles at a time (its runs fit a stack array). */
enum { PIECE_COLS = 512 };

typedef struct piece {
    size_t dst;               /* floats from the first panel's row to the run's first lane */
    size_t src;               /* floats from the tap's first input to the run's first value */
    size_t len;
} piece;

bool dc_engine_uses_padded(const dc_conv_shape *s) { return !dc_conv_is_pointwise(s); }

/* Rows and columns of one phase plane. */
static size_t phase_rows(const dc_conv_shape *s) {
    return (s->height + 2 * s->pad_h + s->stride_h - 1) / s->stride_h;
}
static size_t phase_cols(const dc_conv_shape *s) {
    return (s->width + 2 * s->pad_w + s->stride_w - 1) / s->stride_w;
}

bool dc_engine_padded_floats(const dc_conv_shape *s, size_t *out) {
    size_t hp, wp;
    if (!dc_add_size(s->height, 2 * s->pad_h, &hp) || !dc_add_size(s->width, 2 * s->pad_w, &wp) ||
        !dc_add_size(hp, s->stride_h - 1, &hp) || !dc_add_size(wp, s->stride_w - 1, &wp)) {
        return false;
    }
    const size_t dims[5] = {s->in_channels / s->groups, s->stride_h, s->stride_w,
                            hp / s->stride_h, wp / s->stride_w};
    return dc_product(dims, 5, out);
}

/* Floats of the padded row make_phase_rows lays out on the stack; wider rows go through
 * make_phase. */
enum { TMP_ROW = 1024 };

/* One phase (a, b) of one channel: plane[i][j] = padded[i * sh + a][j * sw + b], 0 outside. */
static void make_phase(const dc_conv_shape *s, const float *xc, size_t a, size_t b,
                       float *plane) {
    const size_t hq = phase_rows(s), wq = phase_cols(s), sh = s->stride_h, sw = s->stride_w;
    for (size_t i = 0; i < hq; ++i) {
        float *row = plane + i * wq;
        const size_t r = i * sh + a; /* padded row */
        if (r < s->pad_h || r - s->pad_h >= s->height) {
            memset(row, 0, wq * sizeof(float));
            continue;
        }
        const float *src = xc + (r - s->pad_h) * s->width;
        for (size_t j = 0; j < wq; ++j) {
            const size_t col = j * sw + b;
            row[j] = col < s->pad_w || col - s->pad_w >= s->width ? 0.0f : src[col - s->pad_w];
        }
    }
}

/* Whether some tap reads row phase a (of stride sh, taps ki * dh) or column phase b. A kernel
 * smaller than its stride (a strided 1x1 reads phase (0, 0) alone) leaves the other phases
 * unread, and they are not built. */
static bool phase_read(size_t taps, size_t dilation, size_t stride, size_t phase) {
    for (size_t k = 0; k < taps && k < stride; ++k) {
        if (k * dilation % stride == phase) {
            return true;
        }
    }
    return false;
}

/* Row i of every phase (a, b) of one channel from padded row r = i * sh + a: the padded row
 * laid out once in `tmp` (Wq * sw floats: the border's zeros, the input row, zeros to the end),
 * then split by column phase, plane (a, b)[i][j] = tmp[j * sw + b]. Stride 2 spelled out with
 * both phases in one loop, which the compiler turns into vector shuffles. */
static void make_phase_rows(const dc_conv_shape *s, const float *xc, size_t r, float *tmp,
                            float *chan) {
    const size_t hq = phase_rows(s), wq = phase_cols(s), sh = s->stride_h, sw = s->stride_w;
    const size_t i = r / sh, a = r % sh, phase = hq * wq;
    float *dst = chan + a * sw * phase + i * wq; /* phase (a, 0), row i */
    if (!phase_read(s->kernel_h, s->dilation_h, sh, a)) {
        return;
    }
    if (r < s->pad_h || r - s->pad_h >= s->height) {
        for (size_t b = 0; b < sw; ++b) {
            memset(dst + b * phase, 0, wq * sizeof(float));
        }
        return;
    }
    const size_t tail = wq * sw - s->pad_w - s->width; /* >= pad_w, and the rounding */
    memset(tmp, 0, s->pad_w * sizeof(float));
    memcpy(tmp + s->pad_w, xc + (r - s->pad_h) * s->width, s->width * sizeof(float));
    memset(tmp + s->pad_w + s->width, 0, tail * sizeof(float));
    const bool all_columns = s->kernel_w >= sw && s->dilation_w == 1;
    if (sw == 2 && all_columns) {
        float *restrict d0 = dst, *restrict d1 = dst + phase;
        const float *restrict t2 = tmp;
        for (size_t j = 0; j < wq; ++j) {
            d0[j] = t2[2 * j];
            d1[j] = t2[2 * j + 1];
        }
        return;
    }
    for (size_t b = 0; b < sw; ++b) {
        if (!all_columns && !phase_read(s->kernel_w, s->dilation_w, sw, b)) {
            continue;
        }
        float *restrict d = dst + b * phase;
        for (size_t j = 0; j < wq; ++j) {
            d[j] = tmp[j * sw + b];
        }
    }
}

void dc_engine_pad_input(const dc_conv_shape *s, const float *xg, size_t c0, size_t c1,
                         float *xp) {
    const size_t wp = s->width + 2 * s->pad_w, hp = s->height + 2 * s->pad_h;
    if (s->stride_h != 1 || s->stride_w != 1) {
        const size_t hq = phase_rows(s), wq = phase_cols(s);
        const size_t chan = s->stride_h * s->stride_w * hq * wq;
        /* One padded row at a time (Wq * sw floats; a row too wide for it goes a piece at a
         * time through the plain loops below). */
        float tmp[TMP_ROW];
        for (size_t c = c0; c < c1 && wq * s->stride_w <= TMP_ROW; ++c) {
            for (size_t r = 0; r < hq * s->stride_h; ++r) {
                make_phase_rows(s, xg + c * s->height * s->width, r, tmp, xp + c * chan);
            }
        }
        for (size_t c = c0; c < c1 && wq * s->stride_w > TMP_ROW; ++c) {
            for (size_t a = 0; a < s->stride_h; ++a) {
                for (size_t b = 0; b < s->stride_w; ++b) {
                    if (!phase_read(s->kernel_h, s->dilation_h, s->stride_h, a) ||
                        !phase_read(s->kernel_w, s->dilation_w, s->stride_w, b)) {
                        continue;
                    }
                    make_phase(s, xg + c * s->height * s->width, a, b,
                               xp + ((c * s->stride_h + a) * s->stride_w + b) * hq * wq);
                }
            }
        }
        return;
    }
    for (size_t c = c0; c < c1; ++c) {
        float *dst = xp + c * hp * wp;
        const float *src = xg + c * s->height * s->width;
        memset(dst, 0, s->pad_h * wp * sizeof(float));
        for (size_t r = 0; r < s->height; ++r) {
            float *row = dst + (s->pad_h + r) * wp;
            memset(row, 0, s->pad_w * sizeof(float));
            memcpy(row + s->pad_w, src + r * s->width, s->width * sizeof(float));
            memset(row + s->pad_w + s->width, 0, s->pad_w * sizeof(float));
        }
        memset(dst + (s->pad_h + s->height) * wp, 0, s->pad_h * wp * sizeof(float));
    }
}

/* The runs of columns [col0, col0 + n) (n <= PIECE_COLS): split at output rows and at panel
 * edges. Returns their count. */
static size_t make_pieces(const dc_conv_shape *s, size_t col0, size_t n, size_t kc, size_t nr,
                          piece *out) {
    const size_t wp = phase_cols(s), ow_n = s->out_w;
    size_t count = 0;
    for (size_t j = 0; j < n;) {
        const size_t col = col0 + j, oh = col / ow_n, ow = col % ow_n, lane = j % nr;
        size_t len = ow_n - ow;
        len = len < n - j ? len : n - j;
        len = len < nr - lane ? len : nr - lane;
        out[count++] = (piece){j / nr * kc * nr + lane, oh * wp + ow, len};
        j += len;
    }
    return count;
}

/* The body, stamped once per copy routine below. */
#define DC_PACK_PADDED_BODY(COPY)                                                             \
    const size_t taps = s->kernel_h * s->kernel_w, wq = phase_cols(s);                       \
    const size_t sh = s->stride_h, sw = s->stride_w, phase = phase_rows(s) * wq;             \
    piece pieces[PIECE_COLS];                                                                 \
    const size_t step = PIECE_COLS / nr * nr; /* whole panels per round */                    \
    for (size_t j0 = 0; j0 < n; j0 += step) {                                                 \
        const size_t nj = n - j0 < step ? n - j0 : step;                                      \
        float *block = panels + j0 / nr * kc * nr;                                            \
        const size_t count = make_pieces(s, col0 + j0, nj, kc, nr, pieces);                   \
        const size_t tail = nj % nr == 0 ? 0 : nr - nj % nr;                                  \
        const size_t tail_at = (nj / nr) * kc * nr + nj % nr;                                 \
        for (size_t q = 0; q < kc; ++q) {                                                     \
            const size_t p = p0 + q, ch = p / taps, ki = p % taps / s->kernel_w;              \
            const size_t kj = p % s->kernel_w;                                                \
            const size_t dy = ki * s->dilation_h, dx = kj * s->dilation_w;                    \
            const float *base = xp + ((ch * sh + dy % sh) * sw + dx % sw) * phase +           \
                                dy / sh * wq + dx / sw;                                       \
            float *row = block + q * nr;                                                      \
            for (size_t i = 0; i < count; ++i) {                                              \
                COPY(row + pieces[i].dst, base + pieces[i].src, pieces[i].len);               \
            }                                                                                 \
            for (size_t i = 0; i < tail; ++i) {                                               \
                row[tail_at + i] = 0.0f;                                                      \
            }                                                                                 \
        }                                                                                     \
    }

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static inline void copy_plain(float *restrict d, const float *restrict src, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        d[i] = src[i];
    }
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void pack_plain(const dc_conv_shape *s, const float *xp, size_t p0, size_t kc,
                       size_t col0, size_t n, size_t nr, float *panels) {
    DC_PACK_PADDED_BODY(copy_plain)
}

#if defined(DC_PAD_X86)
__attribute__((target("avx512f"))) static inline void copy_avx512(float *d, const float *src,
                                                                  size_t len) {
    for (; len >= 16; len -= 16, d += 16, src += 16) {
        _mm512_storeu_ps(d, _mm512_loadu_ps(src));
    }
    if (len > 0) {
        const __mmask16 m = (__mmask16)((1u << len) - 1u);
        _mm512_mask_storeu_ps(d, m, _mm512_maskz_loadu_ps(m, src));
    }
}

__attribute__((target("avx512f"))) static void pack_avx512(const dc_conv_shape *s,
                                                           const float *xp, size_t p0, size_t kc,
                                                           size_t col0, size_t n, size_t nr,
                                                           float *panels) {
    DC_PACK_PADDED_BODY(copy_avx512)
}
#endif

void dc_engine_pack_b_padded(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *xp,
                             size_t p0, size_t kc, size_t col0, size_t n, size_t nr,
                             float *panels) {
#if defined(DC_PAD_X86)
    /* The AVX-512 micro-kernel is only ever chosen on a CPU that has it. */
    if (k->isa == DC_ISA_AVX512) {
        pack_avx512(s, xp, p0, kc, col0, n, nr, panels);
        return;
    }
#endif
    (void)k;
    pack_plain(s, xp, p0, kc, col0, n, nr, panels);
}
