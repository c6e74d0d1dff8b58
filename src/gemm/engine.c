/* Packing and the per-sample driver of the engine: y_g = W_g * im2col(x_g) for each group,
 * without an im2col matrix. The columns are cut into blocks of DC_NC and the reduction into
 * slices of DC_KC; for each (column block, slice) the B panels are built straight from the
 * input (for a pointwise kernel full panels are read in place from the input rows), and every
 * row panel of W_g runs over each of them: one B panel (KC x NR floats) stays in L1 while the A
 * slices (KC x MR floats each) come from L2 (with the channel-lanes tiles, whose A slice is the
 * larger operand, the other way round: tiles_by_row_panel). */
#include "gemm.h"

#include "tensor.h"

#include <string.h>

/* KC x NR floats of a B panel fit in L1 (32 KiB at NR = 32) beside the A slice; KC x NC in
 * L2 (512 KiB). A block is the whole panels within DC_NC columns (all of them for NR = 8, 16,
 * 32; 511 columns for NR = 7), so that no block but the range's last ends in a partial panel
 * and the padded packer's pieces (PIECE_COLS = DC_NC) start on a panel edge. */
enum { DC_KC = DC_ENGINE_KC, DC_NC = 512 };

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

bool dc_engine_packed_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t *out) {
    const size_t g_out = s->out_channels / s->groups;
    const size_t dims[5] = {s->groups, round_up(g_out, k->mr),
                            s->in_channels / s->groups * s->kernel_h, s->kernel_w, 1};
    return dc_product(dims, 5, out);
}

void dc_engine_pack_a(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *w,
                      float *packed) {
    const size_t g_out = s->out_channels / s->groups, mr = k->mr;
    const size_t depth = s->in_channels / s->groups * s->kernel_h * s->kernel_w;
    const size_t panels = (g_out + mr - 1) / mr;
    for (size_t g = 0; g < s->groups; ++g) {
        for (size_t j = 0; j < panels; ++j) {
            dc_engine_pack_rows(w + (g * g_out + j * mr) * depth, depth,
                                min_size(mr, g_out - j * mr), depth, mr,
                                packed + (g * panels + j) * depth * mr);
        }
    }
}

/* First and one-past-last output index whose input coordinate o*stride - pad + offset lies in
 * [0, in) (as conv.c's im2col computes it). */
static void valid_range(size_t out, size_t in, size_t stride, size_t pad, size_t offset,
                        size_t *lo, size_t *hi) {
    size_t first = offset >= pad ? 0 : (pad - offset + stride - 1) / stride;
    size_t last = in + pad > offset ? (in + pad - offset + stride - 1) / stride : 0;
    last = last > out ? out : last;
    *lo = first > last ? last : first;
    *hi = last;
}

/* Copies run floats (src == NULL: zeros; else src[i * stride]) to columns [c, c + run) of a
 * block of B panels (column c at dst + (c / nr) * panel + c % nr), split at panel edges. Plain
 * loops: the pieces are a few floats to a few dozen, where calls to memcpy cost more than the
 * copy. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns"), always_inline))
#endif
static inline void put_run(float *restrict dst, size_t panel, size_t nr, size_t c, size_t run,
                    const float *restrict src, size_t stride) {
    while (run > 0) {
        const size_t lane = c % nr, n = min_size(run, nr - lane);
        float *restrict d = dst + c / nr * panel + lane;
        if (src == NULL) {
            for (size_t i = 0; i < n; ++i) {
                d[i] = 0.0f;
            }
        } else if (stride == 1) {
            for (size_t i = 0; i < n; ++i) {
                d[i] = src[i];
            }
            src += n;
        } else {
            for (size_t i = 0; i < n; ++i) {
                d[i] = src[i * stride];
            }
            src += n * stride;
        }
        c += n;
        run -= n;
    }
}

/* Built for AVX-512, AVX2 and baseline x86-64 (the loader picks one): the copies are short, and
 * wide masked vectors do them in one or two instructions each. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#if defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
void dc_engine_pack_b(const dc_conv_shape *s, const float *xg, size_t p0, size_t kc, size_t col0,
                      size_t n, size_t nr, float *panels) {
    const size_t taps = s->kernel_h * s->kernel_w, ow_n = s->out_w;
    const size_t in_plane = s->height * s->width, panel = kc * nr;
    const size_t padded = (n + nr - 1) / nr * nr;
    for (size_t q = 0; q < kc; ++q) {
        const size_t p = p0 + q, ch = p / taps, ki = p % taps / s->kernel_w;
        const size_t kj = p % s->kernel_w;
        const size_t off_h = ki * s->dilation_h, off_w = kj * s->dilation_w;
        const float *xc = xg + ch * in_plane;
        float *dst = panels + q * nr;
        size_t oh_lo, oh_hi, ow_lo, ow_hi;
        valid_range(s->out_h, s->height, s->stride_h, s->pad_h, off_h, &oh_lo, &oh_hi);
        valid_range(ow_n, s->width, s->stride_w, s->pad_w, off_w, &ow_lo, &ow_hi);
        /* Output row by output row: zeros left of ow_lo, input in [ow_lo, ow_hi), zeros from
         * ow_hi; whole rows of zeros above oh_lo and from oh_hi. */
        size_t j = 0;
        while (j < n) {
            const size_t col = col0 + j, oh = col / ow_n, ow = col % ow_n;
            const size_t run = min_size(ow_n - ow, n - j), end = ow + run;
            if (oh < oh_lo || oh >= oh_hi) {
                put_run(dst, panel, nr, j, run, NULL, 0);
            } else {
                const float *src = xc + (oh * s->stride_h + off_h - s->pad_h) * s->width;
                const size_t a = ow < ow_lo ? min_size(ow_lo, end) : ow;
                const size_t e = end < ow_hi ? end : ow_hi > a ? ow_hi : a;
                put_run(dst, panel, nr, j, a - ow, NULL, 0);
                if (e > a) {
                    put_run(dst, panel, nr, j + (a - ow), e - a,
                            src + (a * s->stride_w + off_w - s->pad_w), s->stride_w);
                }
                put_run(dst, panel, nr, j + (e - ow), end - e, NULL, 0);
            }
            j += run;
        }
        put_run(dst, panel, nr, n, padded - n, NULL, 0);
    }
}

void dc_engine_build_b(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *xg,
                       const float *xp, size_t p0, size_t kc, size_t col0, size_t n,
                       float *panels) {
    const size_t nr = k->nr;
    if (xp != NULL) {
        dc_engine_pack_b_padded(s, k, xp, p0, kc, col0, n, nr, panels);
    } else if (!dc_conv_is_pointwise(s)) {
        dc_engine_pack_b(s, xg, p0, kc, col0, n, nr, panels);
    } else if (n % nr != 0) {
        /* Pointwise: only the last, partial panel is copied (zero padded); full panels are
         * read in place from the input rows. */
        const size_t full = n / nr * nr;
        dc_engine_pack_b(s, xg, p0, kc, col0 + full, n - full, nr, panels + full / nr * kc * nr);
    }
}

bool dc_engine_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t cols,
                              size_t *out) {
    size_t depth;
    const size_t dims[3] = {s->in_channels / s->groups, s->kernel_h, s->kernel_w};
    if (!dc_product(dims, 3, &depth)) {
        return false;
    }
    /* Never more than one block of columns; a block is whole B panels. */
    const size_t nc = round_up(min_size(cols, DC_NC), k->nr);
    size_t panels, padded = 0, rows = 0;
    if (!(dc_mul_size(min_size(depth, DC_KC), nc, &panels) &&
          (!dc_engine_uses_padded(s) || dc_engine_padded_floats(s, &padded)) &&
          dc_add_size(panels, padded, out))) {
        return false;
    }
    /* Room for either path (the choice can be forced after the scratch was sized). */
    if (dc_engine_inplace_possible(s, k)) {
        if (!dc_engine_inplace_floats(s, k, &rows)) {
            return false;
        }
        *out = rows > *out ? rows : *out;
    }
    return true;
}

void dc_engine_conv(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                    const float *a, size_t a_stride, size_t a_p0, const float *b, float *y,
                    float *scratch, size_t col0, size_t col1, size_t p_begin, size_t p_end) {
    dc_engine_conv_clamped(s, k, x, a, a_stride, a_p0, b, y, scratch, col0, col1, p_begin, p_end,
                           NULL);
}

/* Rows [0, m) (row stride ld) of n columns, clamped in place. */
static void clamp_block(float *y, size_t ld, size_t m, size_t n, const dc_engine_clamp *cl) {
    const float lo = cl->lo, hi = cl->hi;
    for (size_t r = 0; r < m; ++r) {
        float *row = y + r * ld;
        for (size_t j = 0; j < n; ++j) {
            const float v = row[j] < lo ? lo : row[j];
            row[j] = v > hi ? hi : v;
        }
    }
}

/* One (column block, slice) of dc_engine_conv_clamped with the channel-lanes tiles: row panels
 * outer, B panels inner. There the A panel slice is the larger operand (kc x 32 floats against
 * kc x 7 of a B panel): it stays in L1 while the block's B panels (a 7x7 plane's 7, 49 KiB at
 * kc = 256; a 14x14 plane's 28) come from L2. With B panels outer, each B panel streamed the
 * whole kernel slice again, 7 times a slice at 7x7. One sample, static kernel, the two orders
 * in one process, interleaved, process CPU time, medians of 21 rounds (Xeon model 167,
 * AVX-512, shared machine): pointwise 1280 -> 1280 at 7x7 0.75 of the time, 960 -> 960 0.86,
 * 3x3 512 at 7x7 0.96, 256 at 14x14 0.98. Each tile's outputs are the same sums either way.
 * clamp: this is the reduction's last slice. */
static void tiles_by_row_panel(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *ag,
                               size_t a_stride, size_t p0, size_t kc, const float *xg,
                               const float *panels_b, float *yg, size_t c, size_t nc,
                               const float *bias, bool accumulate,
                               const dc_engine_clamp *clamp) {
    const size_t g_out = s->out_channels / s->groups, plane = s->out_h * s->out_w;
    const size_t mr = k->mr, nr = k->nr, panels = (g_out + mr - 1) / mr;
    const size_t npan = (nc + nr - 1) / nr, in_plane = s->height * s->width;
    const bool pointwise = dc_conv_is_pointwise(s);
    for (size_t i = 0; i < panels; ++i) {
        const size_t m = min_size(mr, g_out - i * mr);
        const float *ai = ag + i * a_stride + p0 * mr;
        float *yi = yg + i * mr * plane + c;
        for (size_t jp = 0; jp < npan; ++jp) {
            const size_t n = min_size(nr, nc - jp * nr);
            /* Pointwise: a full panel is kc input rows as they are (as below). */
            const bool direct = pointwise && n == nr;
            const float *bp = direct ? xg + p0 * in_plane + c + jp * nr : panels_b + jp * kc * nr;
            k->tile(kc, ai, bp, direct ? in_plane : nr, yi + jp * nr, plane, m, n,
                    bias != NULL ? bias + i * mr : NULL, accumulate);
            if (clamp != NULL) {
                clamp_block(yi + jp * nr, plane, m, n, clamp);
            }
        }
    }
}

void dc_engine_conv_clamped(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                            const float *a, size_t a_stride, size_t a_p0, const float *b,
                            float *y, float *scratch, size_t col0, size_t col1, size_t p_begin,
                            size_t p_end, const dc_engine_clamp *clamp) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t mr = k->mr, nr = k->nr, panels = (g_out + mr - 1) / mr;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const bool pointwise = dc_conv_is_pointwise(s), padded = dc_engine_uses_padded(s);
    const size_t taps = s->kernel_h * s->kernel_w;
    if (col0 >= col1 || p_begin >= p_end) {
        return;
    }
    if (dc_engine_uses_inplace(s, k)) {
        dc_engine_conv_inplace(s, k, x, a, a_stride, a_p0, b, y, scratch, col0, col1, p_begin,
                            p_end, clamp);
        return;
    }
    /* The padded copy of the group's input lies after the panels (the channels this range of
     * the reduction reads). */
    float *xp = scratch + min_size(g_in * taps, DC_KC) * round_up(min_size(col1 - col0, DC_NC), nr);
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        const float *ag = a + g * panels * a_stride - a_p0 * mr;
        float *yg = y + g * g_out * plane;
        if (padded) {
            dc_engine_pad_input(s, xg, p_begin / taps, (p_end - 1) / taps + 1, xp);
        }
        for (size_t c = col0; c < col1; c += DC_NC / nr * nr) {
            const size_t nc = min_size(DC_NC / nr * nr, col1 - c), npan = (nc + nr - 1) / nr;
            for (size_t p0 = p_begin; p0 < p_end; p0 += DC_KC) {
                const size_t kc = min_size(DC_KC, p_end - p0);
                dc_engine_build_b(s, k, xg, padded ? xp : NULL, p0, kc, c, nc, scratch);
                /* The first slice starts from the bias, the others add to y. */
                const bool accumulate = p0 > 0;
                if (k->channel_lanes) {
                    tiles_by_row_panel(s, k, ag, a_stride, p0, kc, xg, scratch, yg, c, nc,
                                       b != NULL ? b + g * g_out : NULL, accumulate,
                                       p0 + kc == p_end ? clamp : NULL);
                    continue;
                }
                /* B panel outer, row panels inner: the B panel (kc x NR floats, the larger
                 * operand per step) stays in L1 while the A slices stream from L2. */
                for (size_t jp = 0; jp < npan; ++jp) {
                    const size_t n = min_size(nr, nc - jp * nr);
                    /* Pointwise: a full panel is kc input rows as they are. */
                    const bool direct = pointwise && n == nr;
                    const float *bp = direct ? xg + p0 * in_plane + c + jp * nr
                                             : scratch + jp * kc * nr;
                    const size_t ldb = direct ? in_plane : nr;
                    for (size_t i = 0; i < panels; ++i) {
                        const size_t m = min_size(mr, g_out - i * mr);
                        k->tile(kc, ag + i * a_stride + p0 * mr, bp, ldb,
                                yg + i * mr * plane + c + jp * nr, plane, m, n,
                                b != NULL ? b + g * g_out + i * mr : NULL, accumulate);
                    }
                    if (clamp != NULL && p0 + kc == p_end) {
                        clamp_block(yg + c + jp * nr, plane, g_out, n, clamp);
                    }
                }
            }
        }
    }
}

void dc_engine_pack_rows(const float *rows, size_t ld, size_t m, size_t np, size_t mr,
                         float *dst) {
    for (size_t p = 0; p < np; ++p) {
        float *d = dst + p * mr;
        for (size_t r = 0; r < m; ++r) {
            d[r] = rows[r * ld + p];
        }
        for (size_t r = m; r < mr; ++r) {
            d[r] = 0.0f;
        }
    }
}
