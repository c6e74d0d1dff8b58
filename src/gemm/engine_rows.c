/* The row-panel driver of the engine: the loop order of dc_engine_conv_clamped turned inside
 * out, for a sample whose kernel is made while it is convolved. The caller owns a range of A
 * panels (output channels); for each reduction slice the B panels of every column are built
 * once and kept in L2 (KC x round_up(columns, NR) floats: 64 KiB for a 7x7 image, 224 KiB for
 * 14x14), then each owned A panel slice is fetched from the caller (mixed from the K kernel
 * sets into a KC x MR buffer that stays in L1, or taken where it lies) and run against all of
 * them. While one panel slice's tiles run, the caller is asked to prefetch the sources of the
 * next one, a part before each tile call, so that the stream of the K sets from memory runs
 * under the multiply-adds instead of before them; and no mixed kernel is ever written to
 * memory. Threads that split the panels between them need no barrier between mixing and
 * convolution: each reads only the panel slices it made. */
#include "gemm.h"
#include "tensor.h"

enum { DC_KC = DC_ENGINE_KC };

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Rows [0, m) (row stride ld) of n columns, clamped in place (the comparisons of
 * dc_engine_clamp). */
static void clamp_rows(float *y, size_t ld, size_t m, size_t n, const dc_engine_clamp *cl) {
    const float lo = cl->lo, hi = cl->hi;
    for (size_t r = 0; r < m; ++r) {
        float *row = y + r * ld;
        for (size_t j = 0; j < n; ++j) {
            const float v = row[j] < lo ? lo : row[j];
            row[j] = v > hi ? hi : v;
        }
    }
}

/* Where the loop goes after panel gp of slice p0 of the column block at c (`block` wide; panels
 * [first, last) of one group, the call's panels ending at gp1): the next panel, else the first
 * panel of the next slice, else of the next column block's first slice, else the next group's
 * first panel. False after the call's last slice. */
static bool next_step(size_t first, size_t last, size_t gp1, size_t depth, size_t plane,
                      size_t block, size_t gp, size_t p0, size_t c, size_t *ngp, size_t *np0) {
    if (gp + 1 < last) {
        *ngp = gp + 1;
        *np0 = p0;
        return true;
    }
    *ngp = first;
    if (p0 + DC_KC < depth) {
        *np0 = p0 + DC_KC;
        return true;
    }
    *np0 = 0;
    if (c + block < plane) {
        return true;
    }
    *ngp = last;
    return last < gp1;
}

void dc_engine_conv_rows_batch(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t count,
                               const float *x, size_t x_stride, const dc_engine_rows_src *src,
                               size_t gp0, size_t gp1, const float *b, size_t b_stride,
                               float *y, size_t y_stride, float *scratch, float *abuf,
                               const dc_engine_clamp *clamp) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t mr = k->mr, nr = k->nr, panels = (g_out + mr - 1) / mr;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t taps = s->kernel_h * s->kernel_w, depth = g_in * taps;
    const bool pointwise = dc_conv_is_pointwise(s), padded = dc_engine_uses_padded(s);
    /* Per sample the scratch of dc_engine_conv_clamped without the padded copy (a block of B
     * panels for a slice), then one padded copy that every sample's slices are built from in
     * turn; the block's width follows from the sizes (they were checked when the workspace
     * was planned). */
    size_t total = 0, pad = 0;
    if (count == 0 || gp0 >= gp1 || !dc_engine_scratch_floats(s, k, plane, &total) ||
        (padded && !dc_engine_padded_floats(s, &pad))) {
        return;
    }
    const size_t per_sample = total - pad;
    float *xp = scratch + count * per_sample;
    const void *pf[2 * DC_KC]; /* the next slice's lines for one tile call */
    const size_t block = per_sample / min_size(depth, DC_KC); /* whole B panels */
    for (size_t g = gp0 / panels; g * panels < gp1; ++g) {
        const size_t first = gp0 > g * panels ? gp0 : g * panels;
        const size_t last = gp1 < (g + 1) * panels ? gp1 : (g + 1) * panels;
        for (size_t c = 0; c < plane; c += block) {
            const size_t nc = min_size(block, plane - c), npan = (nc + nr - 1) / nr;
            for (size_t p0 = 0; p0 < depth; p0 += DC_KC) {
                const size_t kc = min_size(DC_KC, depth - p0);
                /* Every sample's B panels of the slice, each from the channels the slice
                 * reads (padded into the one copy just before). */
                for (size_t n = 0; n < count; ++n) {
                    const float *xg = x + n * x_stride + g * g_in * in_plane;
                    if (padded) {
                        dc_engine_pad_input(s, xg, p0 / taps, (p0 + kc - 1) / taps + 1, xp);
                    }
                    dc_engine_build_b(s, k, xg, padded ? xp : NULL, p0, kc, c, nc,
                                      scratch + n * per_sample);
                }
                const bool accumulate = p0 > 0, ends = p0 + kc == depth;
                for (size_t gp = first; gp < last; ++gp) {
                    const size_t i = gp - g * panels, m = min_size(mr, g_out - i * mr);
                    const float *a = src->slice(src->ctx, gp, p0, kc, abuf);
                    size_t ngp = 0, np0 = 0;
                    const bool ahead = src->prefetch != NULL &&
                                       next_step(first, last, gp1, depth, plane, block, gp,
                                                 p0, c, &ngp, &np0);
                    const size_t nkc = min_size(DC_KC, depth - np0), parts = count * npan;
                    for (size_t n = 0; n < count; ++n) {
                        const float *xg = x + n * x_stride + g * g_in * in_plane;
                        const float *an = a + n * src->sample_stride;
                        const float *bn = scratch + n * per_sample;
                        float *yi = y + n * y_stride + (g * g_out + i * mr) * plane + c;
                        const float *bias =
                            b != NULL ? b + n * b_stride + g * g_out + i * mr : NULL;
                        for (size_t jp = 0; jp < npan; ++jp) {
                            /* The next slice's lines, spread over all the tile calls of this
                             * one: over this tile's steps where the kernel can (spread
                             * evenly), else prefetched before it at once. */
                            const size_t part = n * npan + jp;
                            size_t pf_n = 0;
                            if (ahead && k->tile_pf != NULL && src->prefetch_lines != NULL) {
                                pf_n = src->prefetch_lines(src->ctx, ngp, np0, nkc, part, parts,
                                                           pf, 2 * kc);
                            }
                            if (ahead && (pf_n == 0 || pf_n > 2 * kc)) {
                                pf_n = 0;
                                src->prefetch(src->ctx, ngp, np0, nkc, part, parts);
                            }
                            const size_t cols = min_size(nr, nc - jp * nr);
                            const bool direct = pointwise && cols == nr;
                            const float *bp = direct ? xg + p0 * in_plane + c + jp * nr
                                                     : bn + jp * kc * nr;
                            if (pf_n > 0) {
                                k->tile_pf(kc, an, bp, direct ? in_plane : nr, yi + jp * nr,
                                           plane, m, cols, bias, accumulate, pf, pf_n);
                            } else {
                                k->tile(kc, an, bp, direct ? in_plane : nr, yi + jp * nr, plane,
                                        m, cols, bias, accumulate);
                            }
                        }
                        if (clamp != NULL && ends) {
                            clamp_rows(yi, plane, m, nc, clamp);
                        }
                    }
                }
            }
        }
    }
}

void dc_engine_conv_rows(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                         const dc_engine_rows_src *src, size_t gp0, size_t gp1, const float *b,
                         float *y, float *scratch, float *abuf, const dc_engine_clamp *clamp) {
    dc_engine_conv_rows_batch(s, k, 1, x, 0, src, gp0, gp1, b, 0, y, 0, scratch, abuf, clamp);
}

bool dc_engine_rows_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k,
                                   size_t count, size_t *out) {
    size_t total = 0, pad = 0, blocks;
    if (!dc_engine_scratch_floats(s, k, s->out_h * s->out_w, &total) ||
        (dc_engine_uses_padded(s) && !dc_engine_padded_floats(s, &pad))) {
        return false;
    }
    return dc_mul_size(count, total - pad, &blocks) && dc_add_size(blocks, pad, out);
}
