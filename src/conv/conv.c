#include "conv.h"

#include "tensor.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#include <immintrin.h>
#endif


/* Hot loops are built twice, for AVX2 and for baseline x86-64, and the dynamic loader picks one
 * (the distribution's library cannot assume AVX2; valgrind runs either). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#define DC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DC_CLONES
#endif

#if defined(__GNUC__)
#define DC_CODE_ALIGN __attribute__((aligned(64))) /* a function's start on a cache line */
#else
#define DC_CODE_ALIGN
#endif

enum { DW_LANES = 8 }; /* depthwise output columns summed side by side: one AVX register */

bool dc_conv_output_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation,
                         size_t *out) {
    const size_t padded = in + 2 * pad;
    /* Extent of the dilated kernel minus one. The caller checked that this product fits, but
     * the extent itself may not: dilation * (kernel - 1) can be exactly SIZE_MAX, and adding
     * one would wrap to 0 and accept any input. */
    const size_t reach = dilation * (kernel - 1);
    if (reach >= padded) {
        return false;
    }
    *out = (padded - reach - 1) / stride + 1;
    return true;
}

bool dc_conv_is_pointwise(const dc_conv_shape *s) {
    return s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 &&
           s->pad_h == 0 && s->pad_w == 0;
}

size_t dc_conv_col_floats(const dc_conv_shape *s) {
    if (dc_conv_is_pointwise(s)) {
        return 0;
    }
    return s->in_channels / s->groups * s->kernel_h * s->kernel_w * s->out_h * s->out_w;
}

/* First and one-past-last output index whose input coordinate o*stride - pad + offset lies in
 * [0, in). Computing the valid range once per kernel tap keeps the inner loop branch-free. */
static void valid_range(size_t out, size_t in, size_t stride, size_t pad, size_t offset,
                        size_t *lo, size_t *hi) {
    /* o*stride + offset >= pad  <=>  o >= ceil((pad - offset) / stride) */
    size_t first = offset >= pad ? 0 : (pad - offset + stride - 1) / stride;
    /* o*stride + offset - pad < in  <=>  o*stride < in + pad - offset */
    size_t last = 0;
    if (in + pad > offset) {
        last = (in + pad - offset + stride - 1) / stride; /* one past the last valid o */
    }
    if (last > out) {
        last = out;
    }
    if (first > last) {
        first = last;
    }
    *lo = first;
    *hi = last;
}

/* Rows [oh0, oh1) of the im2col matrix: col [c*kh*kw, (oh1-oh0)*out_w]. */
DC_CLONES
static void im2col_rows(const dc_conv_shape *s, const float *x, size_t c, size_t oh0, size_t oh1,
                        float *col) {
    const size_t ow_n = s->out_w, plane = (oh1 - oh0) * ow_n;
    for (size_t ch = 0; ch < c; ++ch) {
        const float *xc = x + ch * s->height * s->width;
        for (size_t ki = 0; ki < s->kernel_h; ++ki) {
            const size_t off_h = ki * s->dilation_h;
            size_t oh_lo, oh_hi;
            valid_range(s->out_h, s->height, s->stride_h, s->pad_h, off_h, &oh_lo, &oh_hi);
            oh_lo = oh_lo < oh0 ? oh0 : oh_lo > oh1 ? oh1 : oh_lo;
            oh_hi = oh_hi > oh1 ? oh1 : oh_hi < oh_lo ? oh_lo : oh_hi;
            for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                const size_t off_w = kj * s->dilation_w;
                size_t ow_lo, ow_hi;
                valid_range(ow_n, s->width, s->stride_w, s->pad_w, off_w, &ow_lo, &ow_hi);
                float *row = col + ((ch * s->kernel_h + ki) * s->kernel_w + kj) * plane;

                memset(row, 0, (oh_lo - oh0) * ow_n * sizeof(float));
                for (size_t oh = oh_lo; oh < oh_hi; ++oh) {
                    float *dst = row + (oh - oh0) * ow_n;
                    const float *src = xc + (oh * s->stride_h + off_h - s->pad_h) * s->width;
                    for (size_t ow = 0; ow < ow_lo; ++ow) {
                        dst[ow] = 0.0f;
                    }
                    /* The index is formed in size_t before it meets the pointer: src +
                     * ow_lo + off_w could point past the address space when the padding is
                     * near 2^63, and an empty run has no valid index at all. */
                    if (s->stride_w == 1 && ow_hi > ow_lo) {
                        memcpy(dst + ow_lo, src + (ow_lo + off_w - s->pad_w),
                               (ow_hi - ow_lo) * sizeof(float));
                    } else {
                        for (size_t ow = ow_lo; ow < ow_hi; ++ow) {
                            dst[ow] = src[ow * s->stride_w + off_w - s->pad_w];
                        }
                    }
                    for (size_t ow = ow_hi; ow < ow_n; ++ow) {
                        dst[ow] = 0.0f;
                    }
                }
                memset(row + (oh_hi - oh0) * ow_n, 0, (oh1 - oh_hi) * ow_n * sizeof(float));
            }
        }
    }
}

void dc_im2col(const dc_conv_shape *s, const float *x, size_t c, float *col) {
    im2col_rows(s, x, c, 0, s->out_h, col);
}

bool dc_conv_is_depthwise(const dc_conv_shape *s) {
    return s->groups == s->in_channels && !dc_conv_is_pointwise(s);
}

bool dc_conv_is_strided_1x1(const dc_conv_shape *s) {
    return s->kernel_h == 1 && s->kernel_w == 1 && s->pad_h == 0 && s->pad_w == 0 &&
           !dc_conv_is_pointwise(s) && !dc_conv_is_depthwise(s);
}

/* Output rows [oh0, oh1) of a strided 1x1 convolution's GEMM operand: col [c, (oh1-oh0)*out_w]
 * with col[ch, (oh-oh0)*out_w + ow] = x[ch, oh*sh, ow*sw]. The same values, in the same places,
 * as im2col_rows for such a shape, without its per-tap range arithmetic and zero fills (a 1x1
 * kernel without padding never reads outside the input; dilation does not apply). */
DC_CLONES
static void gather_rows(const dc_conv_shape *s, const float *x, size_t c, size_t oh0, size_t oh1,
                        float *col) {
    const size_t ow_n = s->out_w, sw = s->stride_w, plane = (oh1 - oh0) * ow_n;
    const size_t in_plane = s->height * s->width, row_step = s->stride_h * s->width;
    for (size_t ch = 0; ch < c; ++ch) {
        const float *src = x + ch * in_plane + oh0 * row_step;
        float *dst = col + ch * plane;
        for (size_t oh = oh0; oh < oh1; ++oh, src += row_step, dst += ow_n) {
            if (sw == 1) {
                memcpy(dst, src, ow_n * sizeof(float));
            } else {
                for (size_t ow = 0; ow < ow_n; ++ow) {
                    dst[ow] = src[ow * sw];
                }
            }
        }
    }
}

void dc_conv_gather_strided_1x1(const dc_conv_shape *s, const float *x, size_t c, float *out) {
    gather_rows(s, x, c, 0, s->out_h, out);
}

/* Adjoint of gather_rows over all rows: x[ch, oh*sh, ow*sw] += col[ch, oh*out_w + ow]. Each input
 * position receives at most one entry, so this is the same sum as dc_col2im_add. */
static void scatter_add(const dc_conv_shape *s, const float *col, size_t c, float *x) {
    const size_t ow_n = s->out_w, sw = s->stride_w;
    const size_t in_plane = s->height * s->width, row_step = s->stride_h * s->width;
    for (size_t ch = 0; ch < c; ++ch) {
        float *dst = x + ch * in_plane;
        const float *src = col + ch * s->out_h * ow_n;
        for (size_t oh = 0; oh < s->out_h; ++oh, dst += row_step, src += ow_n) {
            for (size_t ow = 0; ow < ow_n; ++ow) {
                dst[ow * sw] += src[ow];
            }
        }
    }
}

/* Small "same" planes at stride 1 (7x7, 14x14, 28x28 with a 3x3 kernel and padding 1): the
 * outputs of a channel are taken as one flat run q = oh * W + ow, W = width = out_w, and tap
 * (ki, kj) of output q reads input q + dy * W + dx (dy = ki*dh - ph, dx = kj*dw - pw) of the
 * unpadded plane, so every tap is one contiguous vector load per 16 outputs, with no lanes lost
 * to the end of short rows (a 7-wide row filled 7 of 8 lanes and was stored float by float).
 * Rows above and below the plane are zeros around it; a column shift dx != 0 wraps the lanes
 * at the row ends onto the neighbouring row, so tap column kj reads its own copy of the plane
 * in which the columns only those lanes read (the last -dx of a row, or the first dx) are zero:
 * each output still sums the bias and all kh*kw taps in (ki, kj) order, padding zeros
 * included, the same operations as the row loop, so the same bits. */
enum {
    FLAT_LANES = 16,       /* outputs per vector: one AVX-512 register, two AVX, four SSE */
    FLAT_BLOCKS = 4,       /* vectors summed side by side (independent chains of adds) */
    FLAT_MAX_PLANE = 1024, /* larger planes keep the row loop (its rows fill the vectors) */
    FLAT_MAX_KW = 16       /* copies of the plane, one per kernel column */
};

static bool use_flat(const dc_conv_shape *s) {
#if defined(__GNUC__)
    return dc_conv_is_depthwise(s) && s->stride_h == 1 && s->stride_w == 1 &&
           s->out_w == s->width && s->pad_w < s->width && s->kernel_w <= FLAT_MAX_KW &&
           s->height <= FLAT_MAX_PLANE &&
           s->out_h <= FLAT_MAX_PLANE && s->width <= FLAT_MAX_PLANE &&
           s->height * s->width <= FLAT_MAX_PLANE && s->out_h * s->width <= FLAT_MAX_PLANE &&
           s->pad_h <= FLAT_MAX_PLANE;
#else
    (void)s;
    return false;
#endif
}

/* Zeros before the plane in each copy: the furthest a tap reads back (row -ph, column -pw). */
static size_t flat_lead(const dc_conv_shape *s) { return s->pad_h * s->width + s->pad_w; }

/* One copy: the lead, the plane, and as many zeros after it (the furthest reach forward of the
 * last output: (kh-1)*dh - ph = ph rows, pw columns, since out_w == W) plus a vector's overrun. */
static size_t flat_span(const dc_conv_shape *s) {
    return s->height * s->width + 2 * flat_lead(s) + FLAT_LANES;
}

bool dc_conv_scratch_floats(const dc_conv_shape *s, size_t *out) {
    if (!dc_conv_is_depthwise(s)) {
        const size_t dims[3] = {s->in_channels / s->groups * s->kernel_h * s->kernel_w, s->out_h,
                                s->out_w};
        if (dc_conv_is_pointwise(s)) {
            *out = 0;
            return true;
        }
        return dc_product(dims, 3, out);
    }
    /* The zero-padded rows of one input channel, and the slack read past the last one. */
    size_t hp, wp, plane, slack;
    if (!dc_add_size(s->height, 2 * s->pad_h, &hp) || !dc_add_size(s->width, 2 * s->pad_w, &wp) ||
        !dc_mul_size(hp, wp, &plane) || !dc_mul_size(DW_LANES, s->stride_w, &slack) ||
        !dc_add_size(plane, slack, out)) {
        return false;
    }
    if (use_flat(s)) {
        /* the flat path's kw shifted copies (small: the plane is at most FLAT_MAX_PLANE) */
        const size_t flat = s->kernel_w * flat_span(s);
        *out = *out > flat ? *out : flat;
    }
    return true;
}

/* Padded rows [r0, r1) of one input channel (row r of the zero-padded input is input row
 * r - pad_h), each pad_w + W + pad_w wide, followed by `slack` zeros. */
#if defined(__GNUC__) && !defined(__clang__)
/* Keeps GCC from turning the short loops below back into memset / memcpy calls. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void pad_rows(const dc_conv_shape *s, const float *xc, size_t r0, size_t r1, float *p,
                     size_t slack) {
    const size_t wp = s->width + 2 * s->pad_w;
    /* Rows of small images are a few floats: plain loops beat memset / memcpy calls there
     * (half the time of a 7x7 depthwise layer went into those calls). */
    const bool short_rows = s->width < 32;
    for (size_t r = r0; r < r1; ++r) {
        float *row = p + (r - r0) * wp;
        if (r < s->pad_h || r - s->pad_h >= s->height) {
            for (size_t i = 0; i < wp; ++i) {
                row[i] = 0.0f;
            }
            continue;
        }
        for (size_t i = 0; i < s->pad_w; ++i) {
            row[i] = 0.0f;
            row[s->pad_w + s->width + i] = 0.0f;
        }
        const float *src = xc + (r - s->pad_h) * s->width;
        if (short_rows) {
            for (size_t i = 0; i < s->width; ++i) {
                row[s->pad_w + i] = src[i];
            }
        } else {
            memcpy(row + s->pad_w, src, s->width * sizeof(float));
        }
    }
    float *tail = p + (r1 - r0) * wp;
    for (size_t i = 0; i < slack; ++i) {
        tail[i] = 0.0f;
    }
}

/* Output rows [oh0, oh1) of one depthwise channel from its padded rows p (p's first row is
 * padded row oh0 * stride_h). Each output value is the bias plus all kh*kw taps in (ki, kj)
 * order, padding zeros included, as im2col + GEMM would see them; eight neighbouring outputs
 * are summed in one register, tap after tap, so the loop vectorises and nothing goes back to
 * memory between taps. The last block of a row may read up to 7 * stride_w floats past the
 * row (7 * 2 + 1 at stride 2, whose loads are two whole vectors): the next padded row, or the
 * slack of 8 * stride_w floats after the last one. */
#if defined(__GNUC__)
/* Inlined into each clone below, so that it is compiled for that clone's instruction set. */
#define DC_INLINE inline __attribute__((always_inline))
/* Eight floats as one value: one AVX register, or two SSE registers in the baseline build. */
typedef float dc_v8f __attribute__((vector_size(32)));

/* nv blocks of 8 outputs: block v reads its taps from in + v * in_step and writes its first
 * valid[v] lanes to out + v * out_step (neighbouring blocks of one row, or the same columns of
 * consecutive rows when a row is narrower than a block). nv independent sums in flight hide the
 * latency of the additions (one chain of kh*kw dependent adds per register). */
static DC_INLINE void depthwise_block(const dc_conv_shape *s, size_t sw, size_t nv,
                                      const float *in, size_t in_step, const float *wc,
                                      float bias, float *out, size_t out_step,
                                      const size_t valid[4]) {
    const size_t wp = s->width + 2 * s->pad_w;
    const size_t kh = s->kernel_h, kw = s->kernel_w, dh = s->dilation_h, dw = s->dilation_w;
    dc_v8f acc[4];
    for (size_t v = 0; v < nv; ++v) {
        acc[v] = (dc_v8f){bias, bias, bias, bias, bias, bias, bias, bias};
    }
    for (size_t ki = 0; ki < kh; ++ki) {
        const float *rk = in + ki * dh * wp;
        for (size_t kj = 0; kj < kw; ++kj) {
            const float wv = wc[ki * kw + kj];
            const dc_v8f wvv = {wv, wv, wv, wv, wv, wv, wv, wv};
            for (size_t v = 0; v < nv; ++v) {
                const float *src = rk + kj * dw + v * in_step;
                dc_v8f x;
                if (sw == 1) {
                    memcpy(&x, src, sizeof x); /* an unaligned vector load */
                } else if (sw == 2) {
                    /* Two contiguous loads and one shuffle keep the even lanes: a third of the
                     * instructions of eight scalar loads (stride-2 layers ran at a third of
                     * the stride-1 rate with the gather). */
                    dc_v8f lo, hi;
                    memcpy(&lo, src, sizeof lo);
                    memcpy(&hi, src + DW_LANES, sizeof hi);
                    x = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
                } else {
                    for (size_t l = 0; l < DW_LANES; ++l) {
                        x[l] = src[l * sw];
                    }
                }
                acc[v] += wvv * x;
            }
        }
    }
    for (size_t v = 0; v < nv; ++v) {
        float *dst = out + v * out_step;
        if (valid[v] == DW_LANES) {
            memcpy(dst, &acc[v], sizeof acc[v]);
        } else {
            for (size_t l = 0; l < valid[v]; ++l) {
                dst[l] = acc[v][l];
            }
        }
    }
}

/* Literal block counts, so that each call unrolls and keeps acc in registers. */
static DC_INLINE void depthwise_blocks(const dc_conv_shape *s, size_t sw, size_t nv,
                                       const float *in, size_t in_step, const float *wc,
                                       float bias, float *out, size_t out_step,
                                       const size_t valid[4]) {
    switch (nv) {
    case 1: depthwise_block(s, sw, 1, in, in_step, wc, bias, out, out_step, valid); break;
    case 2: depthwise_block(s, sw, 2, in, in_step, wc, bias, out, out_step, valid); break;
    case 3: depthwise_block(s, sw, 3, in, in_step, wc, bias, out, out_step, valid); break;
    default: depthwise_block(s, sw, 4, in, in_step, wc, bias, out, out_step, valid); break;
    }
}

static DC_INLINE void depthwise_rows_stride(const dc_conv_shape *s, size_t sw, const float *p,
                                            const float *wc, float bias, float *yc, size_t oh0,
                                            size_t oh1) {
    const size_t wp = s->width + 2 * s->pad_w, ow_n = s->out_w;
    const size_t row_step = s->stride_h * wp; /* padded input between two output rows */
    if (ow_n <= DW_LANES) {
        /* Narrow rows (7x7 layers): up to four rows at once, one block each. */
        const size_t valid[4] = {ow_n, ow_n, ow_n, ow_n};
        for (size_t oh = oh0; oh < oh1; oh += 4) {
            const size_t nv = oh1 - oh < 4 ? oh1 - oh : 4;
            depthwise_blocks(s, sw, nv, p + (oh - oh0) * row_step, row_step, wc, bias,
                             yc + oh * ow_n, ow_n, valid);
        }
        return;
    }
    for (size_t oh = oh0; oh < oh1; ++oh) {
        const float *base = p + (oh - oh0) * row_step;
        float *dst = yc + oh * ow_n;
        for (size_t ow = 0; ow < ow_n; ow += 4 * DW_LANES) {
            const size_t nv = (ow_n - ow + DW_LANES - 1) / DW_LANES;
            size_t valid[4];
            for (size_t v = 0; v < 4; ++v) {
                const size_t at = ow + v * DW_LANES;
                valid[v] = at >= ow_n ? 0 : ow_n - at < DW_LANES ? ow_n - at : DW_LANES;
            }
            depthwise_blocks(s, sw, nv, base + ow * sw, DW_LANES * sw, wc, bias, dst + ow,
                             DW_LANES, valid);
        }
    }
}
#else
static inline void depthwise_rows_stride(const dc_conv_shape *s, size_t sw, const float *p,
                                         const float *wc, float bias, float *yc, size_t oh0,
                                         size_t oh1) {
    const size_t wp = s->width + 2 * s->pad_w, ow_n = s->out_w;
    const size_t kh = s->kernel_h, kw = s->kernel_w, dh = s->dilation_h, dw = s->dilation_w;
    for (size_t oh = oh0; oh < oh1; ++oh) {
        const float *base = p + (oh - oh0) * s->stride_h * wp;
        float *dst = yc + oh * ow_n;
        for (size_t ow = 0; ow < ow_n; ow += DW_LANES) {
            float acc[DW_LANES];
            for (size_t l = 0; l < DW_LANES; ++l) {
                acc[l] = bias;
            }
            for (size_t ki = 0; ki < kh; ++ki) {
                const float *rk = base + ki * dh * wp + ow * sw;
                for (size_t kj = 0; kj < kw; ++kj) {
                    const float wv = wc[ki * kw + kj];
                    for (size_t l = 0; l < DW_LANES; ++l) {
                        acc[l] += wv * rk[kj * dw + l * sw];
                    }
                }
            }
            for (size_t l = 0; l < DW_LANES && ow + l < ow_n; ++l) {
                dst[ow + l] = acc[l];
            }
        }
    }
}
#endif

/* Built twice (AVX2 and baseline x86-64) and picked at load time. The project compiles as ISO C,
 * so there is no FMA contraction: both versions do the same operations and give the same bits. */
/* At a 64-byte boundary: otherwise its loops move with unrelated code elsewhere in the file,
 * and one such placement measured 5-8% slower on a stride-2 layer (same instructions). */
DC_CLONES DC_CODE_ALIGN
static void depthwise_rows(const dc_conv_shape *s, const float *p, const float *wc, float bias,
                           float *yc, size_t oh0, size_t oh1) {
    if (s->stride_w == 1) {
        depthwise_rows_stride(s, 1, p, wc, bias, yc, oh0, oh1); /* contiguous loads */
    } else if (s->stride_w == 2) {
        depthwise_rows_stride(s, 2, p, wc, bias, yc, oh0, oh1); /* loads and a shuffle */
    } else {
        depthwise_rows_stride(s, s->stride_w, p, wc, bias, yc, oh0, oh1);
    }
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
/* The flat loop has an AVX-512 version of its own (its 16-float vectors are then one register)
 * and an AVX2 one beside the baseline's (vectors of 8 floats in pairs). */
#define DC_FLAT_AVX512 1
#define DC_FLAT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DC_FLAT_CLONES
#endif

#if defined(__GNUC__)
typedef float dc_v16f __attribute__((vector_size(64)));

/* nv vectors of outputs from q on: copies[kj] points at input (0, 0) of tap column kj's copy. */
static DC_INLINE void flat_block16(const dc_conv_shape *s, size_t nv, float *const *copies,
                                   size_t q, size_t q1, const float *wc, float bias,
                                   float *yc) {
    const size_t kh = s->kernel_h, kw = s->kernel_w, wd = s->width;
    dc_v16f acc[FLAT_BLOCKS];
    for (size_t v = 0; v < nv; ++v) {
        for (size_t l = 0; l < FLAT_LANES; ++l) {
            acc[v][l] = bias;
        }
    }
    for (size_t ki = 0; ki < kh; ++ki) {
        /* row offset, possibly negative: reads land in the copy's leading zeros */
        const ptrdiff_t dy = (ptrdiff_t)(ki * s->dilation_h) - (ptrdiff_t)s->pad_h;
        for (size_t kj = 0; kj < kw; ++kj) {
            const ptrdiff_t dx = (ptrdiff_t)(kj * s->dilation_w) - (ptrdiff_t)s->pad_w;
            const float *src = copies[kj] + (ptrdiff_t)q + dy * (ptrdiff_t)wd + dx;
            const float wv = wc[ki * kw + kj];
            for (size_t v = 0; v < nv; ++v) {
                dc_v16f xv;
                memcpy(&xv, src + v * FLAT_LANES, sizeof xv); /* an unaligned vector load */
                acc[v] += wv * xv;
            }
        }
    }
    for (size_t v = 0; v < nv; ++v) {
        const size_t at = q + v * FLAT_LANES;
        if (at + FLAT_LANES <= q1) {
            memcpy(yc + at, &acc[v], sizeof acc[v]);
        } else {
            for (size_t l = 0; at + l < q1; ++l) {
                yc[at + l] = acc[v][l];
            }
        }
    }
}

/* flat_block16 with each 16-float vector as two of 8 floats: the same sums lane by lane. For the
 * AVX2 and baseline builds: there GCC 12 lowers the 64-byte vectors through the stack (the
 * weight's broadcast and the accumulators stored and reloaded every tap), and 960 channels at
 * 7x7 ran at 1.2 GFLOP/s on an AMD EPYC Zen (family 23). */
static DC_INLINE void flat_block8(const dc_conv_shape *s, size_t nv, float *const *copies,
                                  size_t q, size_t q1, const float *wc, float bias, float *yc) {
    const size_t kh = s->kernel_h, kw = s->kernel_w, wd = s->width;
    const dc_v8f start = {bias, bias, bias, bias, bias, bias, bias, bias};
    dc_v8f lo[FLAT_BLOCKS], hi[FLAT_BLOCKS];
    for (size_t v = 0; v < nv; ++v) {
        lo[v] = start;
        hi[v] = start;
    }
    for (size_t ki = 0; ki < kh; ++ki) {
        const ptrdiff_t dy = (ptrdiff_t)(ki * s->dilation_h) - (ptrdiff_t)s->pad_h;
        for (size_t kj = 0; kj < kw; ++kj) {
            const ptrdiff_t dx = (ptrdiff_t)(kj * s->dilation_w) - (ptrdiff_t)s->pad_w;
            const float *src = copies[kj] + (ptrdiff_t)q + dy * (ptrdiff_t)wd + dx;
            const float wv = wc[ki * kw + kj];
            const dc_v8f wvv = {wv, wv, wv, wv, wv, wv, wv, wv};
            for (size_t v = 0; v < nv; ++v) {
                dc_v8f x0, x1;
                memcpy(&x0, src + v * FLAT_LANES, sizeof x0);
                memcpy(&x1, src + v * FLAT_LANES + 8, sizeof x1);
                lo[v] += wvv * x0;
                hi[v] += wvv * x1;
            }
        }
    }
    for (size_t v = 0; v < nv; ++v) {
        const size_t at = q + v * FLAT_LANES;
        if (at + FLAT_LANES <= q1) {
            memcpy(yc + at, &lo[v], sizeof lo[v]);
            memcpy(yc + at + 8, &hi[v], sizeof hi[v]);
        } else {
            float t[FLAT_LANES];
            memcpy(t, &lo[v], sizeof lo[v]);
            memcpy(t + 8, &hi[v], sizeof hi[v]);
            for (size_t l = 0; at + l < q1; ++l) {
                yc[at + l] = t[l];
            }
        }
    }
}

static DC_INLINE void flat_block(const dc_conv_shape *s, size_t nv, float *const *copies,
                                 size_t q, size_t q1, const float *wc, float bias, float *yc,
                                 bool halves) {
    if (halves) {
        flat_block8(s, nv, copies, q, q1, wc, bias, yc);
    } else {
        flat_block16(s, nv, copies, q, q1, wc, bias, yc);
    }
}

/* Outputs [q0, q1) of one channel, FLAT_BLOCKS vectors at a time (the remainder spread so that
 * no pass runs a lone chain of dependent adds). */
static DC_INLINE void flat_channel(const dc_conv_shape *s, float *const *copies, size_t q0,
                                   size_t q1, const float *wc, float bias, float *yc,
                                   bool halves) {
    size_t left = (q1 - q0 + FLAT_LANES - 1) / FLAT_LANES;
    for (size_t q = q0; left > 0;) {
        size_t nv = left;
        if (left > FLAT_BLOCKS) {
            nv = left % FLAT_BLOCKS == 0 || left % FLAT_BLOCKS == FLAT_BLOCKS - 1 ? FLAT_BLOCKS
                                                                                 : FLAT_BLOCKS - 1;
        }
        switch (nv) {
        case 1: flat_block(s, 1, copies, q, q1, wc, bias, yc, halves); break;
        case 2: flat_block(s, 2, copies, q, q1, wc, bias, yc, halves); break;
        case 3: flat_block(s, 3, copies, q, q1, wc, bias, yc, halves); break;
        default: flat_block(s, FLAT_BLOCKS, copies, q, q1, wc, bias, yc, halves); break;
        }
        q += nv * FLAT_LANES;
        left -= nv;
    }
}

/* Output rows [oh0, oh1) of output channels [oc0, oc1), through the flat view (use_flat). buf:
 * kw * flat_span floats; each input channel is copied into it once for the output channels it
 * feeds. */
static DC_INLINE void flat_body(const dc_conv_shape *s, const float *x, const float *w,
                                const float *b, float *y, float *buf, size_t oc0, size_t oc1,
                                size_t oh0, size_t oh1, bool halves) {
    const size_t kw = s->kernel_w, wd = s->width, in_plane = s->height * wd;
    const size_t span = flat_span(s), lead = flat_lead(s);
    const size_t g_out = s->out_channels / s->groups, depth = s->kernel_h * kw;
    const size_t plane = s->out_h * s->out_w;
    float *copies[FLAT_MAX_KW];
    /* The zeros around the planes are written once; the copies below only rewrite the plane. */
    for (size_t i = 0; i < kw * span; ++i) {
        buf[i] = 0.0f;
    }
    for (size_t kj = 0; kj < kw; ++kj) {
        copies[kj] = buf + kj * span + lead;
    }
    size_t loaded = SIZE_MAX;
    for (size_t oc = oc0; oc < oc1; ++oc) {
        const size_t ic = oc / g_out;
        if (ic != loaded) {
            const float *xc = x + ic * in_plane;
            for (size_t kj = 0; kj < kw; ++kj) {
                float *c = copies[kj];
                const ptrdiff_t dx = (ptrdiff_t)(kj * s->dilation_w) - (ptrdiff_t)s->pad_w;
                for (size_t i = 0; i < in_plane; ++i) {
                    c[i] = xc[i];
                }
                /* dx < 0: the lanes of the first -dx columns read the last -dx columns of the
                 * row above; dx > 0: those of the last dx columns read the first dx columns of
                 * the row below. No other lane reads those columns through this copy. */
                const size_t z0 = dx < 0 ? wd - (size_t)(-dx) : 0;
                const size_t z1 = dx < 0 ? wd : (size_t)dx;
                for (size_t r = 0; r < s->height; ++r) {
                    for (size_t col = z0; col < z1; ++col) {
                        c[r * wd + col] = 0.0f;
                    }
                }
            }
            loaded = ic;
        }
        flat_channel(s, copies, oh0 * wd, oh1 * wd, w + oc * depth, b != NULL ? b[oc] : 0.0f,
                     y + oc * plane, halves);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#define DC_NO_PATTERNS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define DC_NO_PATTERNS
#endif
#if defined(DC_FLAT_AVX512)
/* 16-float vectors, one register each. */
DC_NO_PATTERNS DC_CODE_ALIGN __attribute__((target("avx512f"))) static void
depthwise_flat16(const dc_conv_shape *s, const float *x, const float *w, const float *b, float *y,
                 float *buf, size_t oc0, size_t oc1, size_t oh0, size_t oh1) {
    flat_body(s, x, w, b, y, buf, oc0, oc1, oh0, oh1, false);
}
#endif
/* Pairs of 8-float vectors (flat_block8), for AVX2 and the baseline. */
DC_NO_PATTERNS DC_FLAT_CLONES DC_CODE_ALIGN /* see depthwise_rows */
static void depthwise_flat8(const dc_conv_shape *s, const float *x, const float *w,
                            const float *b, float *y, float *buf, size_t oc0, size_t oc1,
                            size_t oh0, size_t oh1) {
    flat_body(s, x, w, b, y, buf, oc0, oc1, oh0, oh1, true);
}

static void depthwise_flat(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                           float *y, float *buf, size_t oc0, size_t oc1, size_t oh0, size_t oh1) {
#if defined(DC_FLAT_AVX512)
    /* __builtin_cpu_supports also checks that the OS saves the AVX-512 registers */
    if (__builtin_cpu_supports("avx512f")) {
        depthwise_flat16(s, x, w, b, y, buf, oc0, oc1, oh0, oh1);
        return;
    }
#endif
    depthwise_flat8(s, x, w, b, y, buf, oc0, oc1, oh0, oh1);
}
#else
static void depthwise_flat(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                           float *y, float *buf, size_t oc0, size_t oc1, size_t oh0, size_t oh1) {
    (void)s, (void)x, (void)w, (void)b, (void)y, (void)buf, (void)oc0, (void)oc1, (void)oh0,
        (void)oh1; /* use_flat is false without GNU C's vector types */
}
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#define DC_DW_MASKED 1
/* The flat loop on AVX-512 without the copies: each tap's vector is loaded from the input
 * plane itself, the lanes a copy would have read as zeros (borders, and the columns that wrap
 * onto the neighbouring row) masked off, which loads them as +0.0f, as the copies held. So
 * every output sums the same values in the same order (bias, then the kh*kw taps in (ki, kj)
 * order, a multiply and an add each), and the bits are those of the flat loop. The copies
 * cost more than the taps on small planes: each is written and read back at once at another
 * alignment, so its loads wait for the stores. The masks depend on the shape alone and are
 * made once per call; masked-off lanes are never read (AVX-512 suppresses their faults), and
 * addresses are formed as integers, so a tap's vector may start before the plane. */
enum {
    DW_MASKED_TAPS = 49,     /* kernels up to 7x7 */
    DW_MASKED_PLANE = 256,   /* output positions (H_out x W) up to 16x16 */
    DW_MASKED_VECTORS = DW_MASKED_PLANE / 16
};

/* Measured against the copies (AVX-512 Xeon, in-process, interleaved, batch 1 and 16, 1 and 2
 * threads): 960 channels at 7x7 0.57 to 0.72 of the time, 576 at 14x14 0.75 to 0.86, 32 at
 * 16x16 0.92; at 28x28 even (0.97 to 1.09: there the copies are read long after they are
 * written), so only planes of up to 256 positions. */
static atomic_bool masked_off; /* for tests: the copies always */

void dc_conv_force_flat_copies(bool on) { atomic_store(&masked_off, on); }

static bool use_masked(const dc_conv_shape *s) {
    return s->kernel_h * s->kernel_w <= DW_MASKED_TAPS &&
           s->out_h * s->width <= DW_MASKED_PLANE && !atomic_load(&masked_off);
}

__attribute__((target("avx512f"))) static void
depthwise_masked(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                 float *y, size_t oc0, size_t oc1, size_t oh0, size_t oh1) {
    const size_t kh = s->kernel_h, kw = s->kernel_w, taps = kh * kw, wd = s->width;
    const size_t g_out = s->out_channels / s->groups, in_plane = s->height * wd;
    const size_t plane = s->out_h * s->out_w, q0 = oh0 * wd, q1 = oh1 * wd;
    const size_t nvec = (q1 - q0 + 15) / 16;
    __mmask16 masks[DW_MASKED_VECTORS * DW_MASKED_TAPS];
    ptrdiff_t shift[DW_MASKED_TAPS];
    /* Row and column of every output lane, counted up (no division per lane). */
    int32_t rows[DW_MASKED_VECTORS * 16], cols[DW_MASKED_VECTORS * 16];
    for (size_t i = 0, r = q0 / wd, c = q0 % wd; i < nvec * 16; ++i) {
        rows[i] = (int32_t)r;
        cols[i] = (int32_t)c;
        if (++c == wd) {
            c = 0;
            ++r;
        }
    }
    for (size_t v = 0; v < nvec; ++v) {
        const size_t left = q1 - (q0 + v * 16);
        const __mmask16 tail = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        const __m512i rv = _mm512_loadu_si512(rows + v * 16);
        const __m512i cv = _mm512_loadu_si512(cols + v * 16);
        for (size_t ki = 0; ki < kh; ++ki) {
            const int32_t dy = (int32_t)(ki * s->dilation_h) - (int32_t)s->pad_h;
            /* 0 <= r + dy < H */
            const __mmask16 rm = _mm512_mask_cmplt_epi32_mask(
                _mm512_mask_cmpge_epi32_mask(tail, rv, _mm512_set1_epi32(-dy)), rv,
                _mm512_set1_epi32((int32_t)s->height - dy));
            for (size_t kj = 0; kj < kw; ++kj) {
                const int32_t dx = (int32_t)(kj * s->dilation_w) - (int32_t)s->pad_w;
                shift[ki * kw + kj] = (ptrdiff_t)dy * (ptrdiff_t)wd + dx;
                masks[v * taps + ki * kw + kj] = _mm512_mask_cmplt_epi32_mask(
                    _mm512_mask_cmpge_epi32_mask(rm, cv, _mm512_set1_epi32(-dx)), cv,
                    _mm512_set1_epi32((int32_t)wd - dx));
            }
        }
    }
    for (size_t oc = oc0; oc < oc1; ++oc) {
        const uintptr_t xc = (uintptr_t)(x + oc / g_out * in_plane);
        const float *wc = w + oc * (kh * kw);
        const __m512 bias = _mm512_set1_ps(b != NULL ? b[oc] : 0.0f);
        float *yc = y + oc * plane;
        for (size_t v0 = 0; v0 < nvec; v0 += 4) {
            const size_t nv = nvec - v0 < 4 ? nvec - v0 : 4;
            if (nv == 4) {
                /* Four named accumulators: GCC 12 kept the array below on the stack, a store
                 * and a load per tap and vector (960 channels at 7x7, batch 16: 0.8 ms). */
                const ptrdiff_t at = (ptrdiff_t)(q0 + v0 * 16);
                const __mmask16 *mk = masks + v0 * taps;
                __m512 a0 = bias, a1 = bias, a2 = bias, a3 = bias;
                for (size_t t = 0; t < taps; ++t) {
                    const __m512 wv = _mm512_set1_ps(wc[t]);
                    const uintptr_t p = xc + (uintptr_t)((at + shift[t]) * (ptrdiff_t)sizeof(float));
                    a0 = _mm512_add_ps(a0, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(
                                                                 mk[t], (const void *)p)));
                    a1 = _mm512_add_ps(a1, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(
                                                                 mk[taps + t],
                                                                 (const void *)(p + 64))));
                    a2 = _mm512_add_ps(a2, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(
                                                                 mk[2 * taps + t],
                                                                 (const void *)(p + 128))));
                    a3 = _mm512_add_ps(a3, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(
                                                                 mk[3 * taps + t],
                                                                 (const void *)(p + 192))));
                }
                const size_t last = q0 + (v0 + 3) * 16;
                const __mmask16 m3 = q1 - last >= 16 ? (__mmask16)0xFFFF
                                                     : (__mmask16)((1u << (q1 - last)) - 1u);
                _mm512_storeu_ps(yc + at, a0);
                _mm512_storeu_ps(yc + at + 16, a1);
                _mm512_storeu_ps(yc + at + 32, a2);
                _mm512_mask_storeu_ps(yc + at + 48, m3, a3);
                continue;
            }
            __m512 acc[4] = {bias, bias, bias, bias};
            for (size_t t = 0; t < taps; ++t) {
                const __m512 wv = _mm512_set1_ps(wc[t]);
                for (size_t v = 0; v < nv; ++v) {
                    const ptrdiff_t at = (ptrdiff_t)(q0 + (v0 + v) * 16) + shift[t];
                    const __m512 xv = _mm512_maskz_loadu_ps(
                        masks[(v0 + v) * taps + t],
                        (const void *)(xc + (uintptr_t)(at * (ptrdiff_t)sizeof(float))));
                    acc[v] = _mm512_add_ps(acc[v], _mm512_mul_ps(wv, xv));
                }
            }
            for (size_t v = 0; v < nv; ++v) {
                const size_t at = q0 + (v0 + v) * 16;
                const __mmask16 m = q1 - at >= 16 ? (__mmask16)0xFFFF
                                                  : (__mmask16)((1u << (q1 - at)) - 1u);
                _mm512_mask_storeu_ps(yc + at, m, acc[v]);
            }
        }
    }
}

#else
void dc_conv_force_flat_copies(bool on) { (void)on; }
#endif

/* The flat loop (use_flat): with masked loads where the CPU has them, else over the copies. */
static void depthwise_small(const dc_conv_shape *s, const float *x, const float *w,
                            const float *b, float *y, float *buf, size_t oc0, size_t oc1,
                            size_t oh0, size_t oh1) {
#if defined(DC_DW_MASKED)
    /* __builtin_cpu_supports also checks that the OS saves the AVX-512 registers */
    if (use_masked(s) && __builtin_cpu_supports("avx512f")) {
        depthwise_masked(s, x, w, b, y, oc0, oc1, oh0, oh1);
        return;
    }
#endif
    depthwise_flat(s, x, w, b, y, buf, oc0, oc1, oh0, oh1);
}

/* A pointwise GEMM y[m x cols] (+)= w[m x depth] * x[depth x cols], x and y with row stride
 * `plane`. With many input channels OpenBLAS's copy of x reads `depth` rows side by side, more
 * streams than the hardware prefetchers follow, and waits on memory for each: 144 -> 24
 * channels at 56x56 (1.8 MB of input a sample) ran its copy at a third of the rate it reaches
 * from L2. So such GEMMs go in bands of columns of about 256 KiB of input, each band's rows
 * prefetched one after the other first (a run per row, which the prefetchers do follow), then
 * multiplied from cache. Static layers at batch 16 (Xeon model 167, OpenBLAS on its SkylakeX
 * kernels, in-process, interleaved): 144 -> 24 at 56x56 0.52 to 0.58 of the time on 1 thread,
 * 0.63 on 2; 96 -> 24 0.54 to 0.60 and 0.53 to 0.69; 64 -> 64 0.82 to 1.0; batch 1 on 2
 * threads (channel ranges) 144 -> 24 0.74. The same bits: each element's sum does not depend on
 * the matrix width (the exact tests check it). With 16 to 32 input channels the copy keeps up
 * as it is and the bands only add calls (16 -> 96 and 32 -> 16 at 112x112: 1.04 to 1.2), hence
 * the bound on depth. */
enum { POINTWISE_BAND_DEPTH = 64, POINTWISE_BAND_FLOATS = 65536 };

static void pointwise_gemm(size_t m, size_t cols, size_t depth, const float *w, const float *x,
                           size_t plane, float beta, float *y) {
    size_t band = cols;
    if (depth >= POINTWISE_BAND_DEPTH && depth * cols > POINTWISE_BAND_FLOATS) {
        band = POINTWISE_BAND_FLOATS / depth / 16 * 16; /* whole cache lines of a row */
        band = band > 64 ? band : 64;
    }
    for (size_t j0 = 0; j0 < cols; j0 += band) {
        const size_t n = cols - j0 < band ? cols - j0 : band;
        if (band < cols) {
            for (size_t i = 0; i < depth; ++i) {
                const float *row = x + i * plane + j0;
                for (size_t j = 0; j < n; j += 16) {
                    DC_PREFETCH(row + j);
                }
                DC_PREFETCH(row + n - 1);
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n,
                    (blasint)depth, 1.0f, w, (blasint)depth, x + j0, (blasint)plane, beta,
                    y + j0, (blasint)plane);
    }
}

/* dc_conv2d_rows; `banded`: pointwise GEMMs through pointwise_gemm's bands, else in one call
 * (the input is in cache already). */
static void conv_rows(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                      float *y, float *col, size_t oh0, size_t oh1, bool banded) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t rows_plane = (oh1 - oh0) * s->out_w; /* GEMM columns of this slice */
    const size_t depth = g_in * s->kernel_h * s->kernel_w; /* GEMM inner dimension */
    const bool pointwise = dc_conv_is_pointwise(s);
    if (oh0 >= oh1) {
        return;
    }

    if (use_flat(s)) {
        depthwise_small(s, x, w, b, y, col, 0, s->out_channels, oh0, oh1);
        return;
    }
    if (dc_conv_is_depthwise(s)) {
        /* Pad the input rows this band needs once per input channel, then run its g_out output
         * channels (the channel multiplier) over them. */
        const size_t r0 = oh0 * s->stride_h;
        const size_t r1 = (oh1 - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
        for (size_t ic = 0; ic < s->in_channels; ++ic) {
            pad_rows(s, x + ic * in_plane, r0, r1, col, DW_LANES * s->stride_w);
            for (size_t oc = ic * g_out; oc < (ic + 1) * g_out; ++oc) {
                depthwise_rows(s, col, w + oc * depth, b != NULL ? b[oc] : 0.0f, y + oc * plane,
                               oh0, oh1);
            }
        }
        return;
    }

    /* The bias is written first and the GEMM accumulates onto it (beta = 1): one pass over y. */
    if (b != NULL) {
        for (size_t oc = 0; oc < s->out_channels; ++oc) {
            float *yc = y + oc * plane + oh0 * s->out_w;
            for (size_t i = 0; i < rows_plane; ++i) {
                yc[i] = b[oc];
            }
        }
    }
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        /* Pointwise: the input rows are the GEMM's right operand as they are. */
        const float *a = pointwise ? xg + oh0 * s->out_w : col;
        const size_t lda = pointwise ? plane : rows_plane;
        if (dc_conv_is_strided_1x1(s)) {
            gather_rows(s, xg, g_in, oh0, oh1, col);
        } else if (!pointwise) {
            im2col_rows(s, xg, g_in, oh0, oh1, col);
        }
        if (pointwise && banded) {
            pointwise_gemm(g_out, rows_plane, depth, w + g * g_out * depth, a, plane,
                           b != NULL ? 1.0f : 0.0f, y + g * g_out * plane + oh0 * s->out_w);
            continue;
        }
        /* y_g[g_out x rows_plane] = w_g[g_out x depth] * col[depth x rows_plane] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)g_out,
                    (blasint)rows_plane, (blasint)depth, 1.0f, w + g * g_out * depth,
                    (blasint)depth, a, (blasint)lda, b != NULL ? 1.0f : 0.0f,
                    y + g * g_out * plane + oh0 * s->out_w, (blasint)plane);
    }
}

/* Strided 1x1 layers split by channels rather than by bands of rows: on 256 -> 512 channels at
 * 14x14, stride 2, batch 1, 2 threads, bands of 3 and 4 of the 7 output rows made narrow GEMMs
 * and a barrier after the mixing step; channel ranges took about 0.8 of their CPU time. */
bool dc_conv_channels_split(const dc_conv_shape *s) {
    return dc_conv_is_depthwise(s) ||
           ((dc_conv_is_pointwise(s) || dc_conv_is_strided_1x1(s)) && s->groups == 1);
}

void dc_conv2d_channels(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                        float *y, float *col, size_t oc0, size_t oc1) {
    const size_t g_out = s->out_channels / s->groups;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t depth = s->in_channels / s->groups * s->kernel_h * s->kernel_w;
    if (oc0 >= oc1) {
        return;
    }
    if (use_flat(s)) {
        depthwise_small(s, x, w, b, y, col, oc0, oc1, 0, s->out_h);
        return;
    }
    if (dc_conv_is_depthwise(s)) {
        /* Each input channel is padded once for the output channels of the range it feeds. */
        const size_t r1 = (s->out_h - 1) * s->stride_h + (s->kernel_h - 1) * s->dilation_h + 1;
        size_t padded = SIZE_MAX;
        for (size_t oc = oc0; oc < oc1; ++oc) {
            const size_t ic = oc / g_out;
            if (ic != padded) {
                pad_rows(s, x + ic * in_plane, 0, r1, col, DW_LANES * s->stride_w);
                padded = ic;
            }
            depthwise_rows(s, col, w + oc * depth, b != NULL ? b[oc] : 0.0f, y + oc * plane, 0,
                           s->out_h);
        }
        return;
    }
    /* Pointwise, one group: rows [oc0, oc1) of W times the input, as it is; strided 1x1: times
     * the subsampled input, which each thread gathers whole into its own scratch. */
    const float *a = x;
    const bool strided = dc_conv_is_strided_1x1(s);
    if (strided) {
        gather_rows(s, x, s->in_channels, 0, s->out_h, col);
        a = col;
    }
    if (b != NULL) {
        for (size_t oc = oc0; oc < oc1; ++oc) {
            float *yc = y + oc * plane;
            for (size_t i = 0; i < plane; ++i) {
                yc[i] = b[oc];
            }
        }
    }
    if (!strided) {
        pointwise_gemm(oc1 - oc0, plane, depth, w + oc0 * depth, a, plane,
                       b != NULL ? 1.0f : 0.0f, y + oc0 * plane);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)(oc1 - oc0), (blasint)plane,
                (blasint)depth, 1.0f, w + oc0 * depth, (blasint)depth, a, (blasint)plane,
                b != NULL ? 1.0f : 0.0f, y + oc0 * plane, (blasint)plane);
}

void dc_conv2d_rows(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                    float *y, float *col, size_t oh0, size_t oh1) {
    conv_rows(s, x, w, b, y, col, oh0, oh1, true);
}

void dc_conv2d_sample(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                      float *y, float *col) {
    conv_rows(s, x, w, b, y, col, 0, s->out_h, true);
}

void dc_conv2d_sample_cached(const dc_conv_shape *s, const float *x, const float *w,
                             const float *b, float *y, float *col) {
    conv_rows(s, x, w, b, y, col, 0, s->out_h, false);
}

void dc_col2im_add(const dc_conv_shape *s, const float *col, size_t c, float *x) {
    /* The same index ranges as dc_im2col, with the copy reversed into an accumulation: the two
     * are exact transposes of each other for every stride, padding and dilation. */
    const size_t oh_n = s->out_h, ow_n = s->out_w, plane = oh_n * ow_n;
    for (size_t ch = 0; ch < c; ++ch) {
        float *xc = x + ch * s->height * s->width;
        for (size_t ki = 0; ki < s->kernel_h; ++ki) {
            const size_t off_h = ki * s->dilation_h;
            size_t oh_lo, oh_hi;
            valid_range(oh_n, s->height, s->stride_h, s->pad_h, off_h, &oh_lo, &oh_hi);
            for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                const size_t off_w = kj * s->dilation_w;
                size_t ow_lo, ow_hi;
                valid_range(ow_n, s->width, s->stride_w, s->pad_w, off_w, &ow_lo, &ow_hi);
                const float *row = col + ((ch * s->kernel_h + ki) * s->kernel_w + kj) * plane;
                for (size_t oh = oh_lo; oh < oh_hi; ++oh) {
                    const float *src = row + oh * ow_n;
                    float *dst = xc + (oh * s->stride_h + off_h - s->pad_h) * s->width;
                    if (s->stride_w == 1) {
                        /* dst + off_w - pad_w may point before the input: index instead */
                        for (size_t ow = ow_lo; ow < ow_hi; ++ow) {
                            dst[ow + off_w - s->pad_w] += src[ow];
                        }
                    } else {
                        for (size_t ow = ow_lo; ow < ow_hi; ++ow) {
                            dst[ow * s->stride_w + off_w - s->pad_w] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/* sum over i of a[i] * b[i * stride]; eight partial sums when contiguous, so that it
 * vectorises without reassociation by the compiler. */
static float strided_dot(const float *a, const float *b, size_t n, size_t stride) {
    float sum = 0.0f;
    size_t i = 0;
    if (stride == 1) {
        float acc[8] = {0};
        for (; i + 8 <= n; i += 8) {
            for (size_t j = 0; j < 8; ++j) {
                acc[j] += a[i + j] * b[i + j];
            }
        }
        sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    for (; i < n; ++i) {
        sum += a[i] * b[i * stride];
    }
    return sum;
}

/* One group with a single input channel (depthwise, channel multipliers): its GEMMs would have
 * an inner dimension of kh*kw or 1, where a BLAS call costs more than the arithmetic, so the
 * taps are looped over directly. Each tap of w is read before the same tap of dw is written,
 * which keeps dw == w aliasing safe. */
static void single_channel_backward(const dc_conv_shape *s, size_t g_out, const float *x,
                                    const float *w, const float *dy, float *dw, float *dx) {
    const size_t oh_n = s->out_h, ow_n = s->out_w, plane = oh_n * ow_n;
    for (size_t o = 0; o < g_out; ++o) {
        const float *dyo = dy + o * plane;
        for (size_t ki = 0; ki < s->kernel_h; ++ki) {
            const size_t off_h = ki * s->dilation_h;
            size_t oh_lo, oh_hi;
            valid_range(oh_n, s->height, s->stride_h, s->pad_h, off_h, &oh_lo, &oh_hi);
            for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                const size_t off_w = kj * s->dilation_w;
                size_t ow_lo, ow_hi;
                valid_range(ow_n, s->width, s->stride_w, s->pad_w, off_w, &ow_lo, &ow_hi);
                const size_t tap = (o * s->kernel_h + ki) * s->kernel_w + kj;
                const float wv = w[tap];
                float acc = 0.0f;
                for (size_t oh = oh_lo; oh < oh_hi && ow_lo < ow_hi; ++oh) {
                    const float *g = dyo + oh * ow_n + ow_lo;
                    /* input index of output column ow_lo in this row */
                    const size_t start = (oh * s->stride_h + off_h - s->pad_h) * s->width +
                                         ow_lo * s->stride_w + off_w - s->pad_w;
                    acc += strided_dot(g, x + start, ow_hi - ow_lo, s->stride_w);
                    if (dx != NULL) {
                        float *d = dx + start;
                        for (size_t i = 0; i < ow_hi - ow_lo; ++i) {
                            d[i * s->stride_w] += wv * g[i];
                        }
                    }
                }
                dw[tap] = acc;
            }
        }
    }
}

/* Slack after a padded plane: a tap's flat view reaches (kw-1)*dw floats past the last row. */
static size_t padded_slack(const dc_conv_shape *s) { return (s->kernel_w - 1) * s->dilation_w; }

static bool use_padded_plane(const dc_conv_shape *s) {
    return s->in_channels == s->groups && s->stride_h == 1 && s->stride_w == 1 &&
           !dc_conv_is_pointwise(s);
}

bool dc_conv_backward_scratch_floats(const dc_conv_shape *s, size_t *out) {
    if (!use_padded_plane(s)) {
        const size_t dims[4] = {s->in_channels / s->groups, s->kernel_h * s->kernel_w, s->out_h,
                                s->out_w};
        if (dc_conv_is_pointwise(s)) {
            *out = 0;
            return true;
        }
        return dc_product(dims, 4, out);
    }
    /* input and its gradient, each padded plane + slack, and dy on the padded width */
    size_t hp, wp, plane, one, two, dy_floats;
    if (!dc_add_size(s->height, 2 * s->pad_h, &hp) || !dc_add_size(s->width, 2 * s->pad_w, &wp) ||
        !dc_mul_size(hp, wp, &plane) || !dc_add_size(plane, padded_slack(s), &one) ||
        !dc_mul_size(one, 2, &two) || !dc_mul_size(s->out_h, wp, &dy_floats) ||
        !dc_add_size(two, dy_floats, out)) {
        return false;
    }
    return true;
}

/* Single-input-channel groups with stride 1: with the input zero-padded and dy laid out on the
 * padded width (zeros in the extra columns), every tap is one flat dot product and one flat
 * axpy over out_h * padded-width floats, which vectorise, instead of out_h short rows. The
 * extra columns meet dy = 0, so they add exactly nothing. */
static void padded_plane_backward(const dc_conv_shape *s, size_t g_out, const float *x,
                                  const float *w, const float *dy, float *dw, float *dx,
                                  float *scratch) {
    const size_t wp = s->width + 2 * s->pad_w, hp = s->height + 2 * s->pad_h;
    const size_t one = hp * wp + padded_slack(s), flat = s->out_h * wp;
    float *xp = scratch, *dxp = scratch + one, *dyp = scratch + 2 * one;
    memset(xp, 0, one * sizeof(float));
    for (size_t r = 0; r < s->height; ++r) {
        memcpy(xp + (r + s->pad_h) * wp + s->pad_w, x + r * s->width, s->width * sizeof(float));
    }
    if (dx != NULL) {
        memset(dxp, 0, one * sizeof(float));
    }
    const size_t plane = s->out_h * s->out_w, taps = s->kernel_h * s->kernel_w;
    for (size_t o = 0; o < g_out; ++o) {
        memset(dyp, 0, flat * sizeof(float));
        for (size_t r = 0; r < s->out_h; ++r) {
            memcpy(dyp + r * wp, dy + o * plane + r * s->out_w, s->out_w * sizeof(float));
        }
        for (size_t ki = 0; ki < s->kernel_h; ++ki) {
            for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                const size_t tap = o * taps + ki * s->kernel_w + kj;
                const size_t at = ki * s->dilation_h * wp + kj * s->dilation_w;
                const float wv = w[tap]; /* read before dw (which may alias w) is written */
                if (dx != NULL) {
                    float *d = dxp + at;
                    for (size_t i = 0; i < flat; ++i) {
                        d[i] += wv * dyp[i];
                    }
                }
                dw[tap] = strided_dot(dyp, xp + at, flat, 1);
            }
        }
    }
    if (dx != NULL) {
        for (size_t r = 0; r < s->height; ++r) {
            const float *src = dxp + (r + s->pad_h) * wp + s->pad_w;
            float *dst = dx + r * s->width;
            for (size_t c = 0; c < s->width; ++c) {
                dst[c] += src[c];
            }
        }
    }
}

void dc_conv2d_sample_backward(const dc_conv_shape *s, const float *x, const float *w,
                               const float *dy, float *dw, float *dx, float *col) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t depth = g_in * s->kernel_h * s->kernel_w;
    const bool pointwise = dc_conv_is_pointwise(s), strided_1x1 = dc_conv_is_strided_1x1(s);

    if (use_padded_plane(s)) {
        for (size_t g = 0; g < s->groups; ++g) {
            padded_plane_backward(s, g_out, x + g * in_plane, w + g * g_out * depth,
                                  dy + g * g_out * plane, dw + g * g_out * depth,
                                  dx != NULL ? dx + g * in_plane : NULL, col);
        }
        return;
    }
    if (g_in == 1 && !pointwise) {
        for (size_t g = 0; g < s->groups; ++g) {
            single_channel_backward(s, g_out, x + g * in_plane, w + g * g_out * depth,
                                    dy + g * g_out * plane, dw + g * g_out * depth,
                                    dx != NULL ? dx + g * in_plane : NULL);
        }
        return;
    }
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        const float *wg = w + g * g_out * depth;
        const float *dyg = dy + g * g_out * plane;
        float *dwg = dw + g * g_out * depth;
        if (dx != NULL) {
            float *dxg = dx + g * g_in * in_plane;
            /* dcol[depth x plane] = w_g^T[depth x g_out] * dy_g[g_out x plane]; for a pointwise
             * convolution dcol is dx_g itself, so the GEMM accumulates straight into it. */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)depth, (blasint)plane,
                        (blasint)g_out, 1.0f, wg, (blasint)depth, dyg, (blasint)plane,
                        pointwise ? 1.0f : 0.0f, pointwise ? dxg : col, (blasint)plane);
            if (strided_1x1) {
                scatter_add(s, col, g_in, dxg);
            } else if (!pointwise) {
                dc_col2im_add(s, col, g_in, dxg);
            }
        }
        const float *a = pointwise ? xg : col;
        if (strided_1x1) {
            gather_rows(s, xg, g_in, 0, s->out_h, col);
        } else if (!pointwise) {
            dc_im2col(s, xg, g_in, col);
        }
        /* dw_g[g_out x depth] = dy_g[g_out x plane] * col^T[plane x depth] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)g_out, (blasint)depth,
                    (blasint)plane, 1.0f, dyg, (blasint)plane, a, (blasint)plane, 0.0f, dwg,
                    (blasint)depth);
    }
}
