/* The engine's part of the backward: the input gradient's GEMM of one group,
 *   dcol [depth x plane] (+)= W_g^T [depth x g_out] * dY_g [g_out x plane],
 * on the forward's micro-kernels. The rows of the tile are reduction indices of the forward
 * (depth = C_in/g * kh * kw) and the reduction runs over the group's output channels, so the
 * A panels hold W_g transposed: panel i, reduction index o, lane r = W_g[o][i * MR + r], MR
 * consecutive floats of one kernel row, packed block by block as the driver reaches them. The
 * B panels are rows of dY_g as they lie (row stride = the output plane), as the forward reads a
 * pointwise input: only the last, partial panel of a block of columns is copied, zero padded
 * (copying every panel, as BLAS does, was measured slower: 29 against 21 ms on
 * r18_3x3_64_56). Depends on the micro-kernels only. */
#include "gemm.h"

#include "tensor.h"

/* KC: reduction slice (output channels), as the forward's: a B panel of KC x NR floats stays
 * in L1. MC: A rows (depth) per block: the block's A slices (MC x KC floats, 256 KiB) are packed
 * right before use and stay in L2 while every B panel of the group's columns streams past them,
 * so the kernel travels from memory once, straight into the block (a whole packed copy would
 * go to memory and back). NC: columns per tail copy (a multiple of every NR). */
enum { BW_KC = DC_ENGINE_KC, BW_MC = 256, BW_NC = 512 };

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Rows of A a block holds: BW_MC, or the depth rounded up to whole panels when smaller. */
static size_t block_rows(size_t depth, size_t mr) {
    const size_t rows = (depth + mr - 1) / mr * mr, mc = BW_MC / mr * mr;
    return min_size(rows, mc > 0 ? mc : mr);
}

bool dc_engine_input_grad_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k,
                                         size_t *out) {
    const size_t g_out = s->out_channels / s->groups, kc = min_size(g_out, BW_KC);
    const size_t dims[3] = {s->in_channels / s->groups, s->kernel_h, s->kernel_w};
    size_t depth, block, tail;
    /* depth + MR cannot overflow once the product exists: it is at most a checked kernel size */
    return dc_product(dims, 3, &depth) && dc_mul_size(block_rows(depth, k->mr), kc, &block) &&
           dc_mul_size(kc, k->nr, &tail) && dc_add_size(block, tail, out);
}

/* Panels [i0, i1) of W^T, reduction indices [p0, p0 + kc), from w [g_out, depth] (row-major):
 * panel i - i0, index o - p0, lane r at dst[((i - i0) * kc + o - p0) * mr + r] =
 * w[o][i * mr + r], zeros past depth. */
static void pack_block(const float *w, size_t depth, size_t mr, size_t i0, size_t i1, size_t p0,
                       size_t kc, float *dst) {
    for (size_t i = i0; i < i1; ++i) {
        const size_t r0 = i * mr, m = min_size(mr, depth - r0);
        float *panel = dst + (i - i0) * kc * mr;
        for (size_t q = 0; q < kc; ++q) {
            const float *src = w + (p0 + q) * depth + r0;
            float *d = panel + q * mr;
            for (size_t r = 0; r < m; ++r) {
                d[r] = src[r];
            }
            for (size_t r = m; r < mr; ++r) {
                d[r] = 0.0f;
            }
        }
    }
}

/* One tile: the m rows of A panel `a` by column panel jp of a block (`full` whole panels read
 * in place from dy, row stride plane, then `rest` columns from the copy in tail). */
static inline void run_tile(const dc_gemm_kernel *k, size_t kc, const float *a, const float *dy,
                            const float *tail, size_t plane, size_t full, size_t rest, size_t jp,
                            float *c, size_t m, bool add) {
    const bool direct = jp < full;
    k->tile(kc, a, direct ? dy + jp * k->nr : tail, direct ? plane : k->nr, c + jp * k->nr,
            plane, m, direct ? k->nr : rest, NULL, add);
}

void dc_engine_input_grad(const dc_gemm_kernel *k, const float *w, size_t depth, size_t g_out,
                          const float *dy, size_t plane, float *dcol, bool accumulate,
                          float *scratch) {
    const size_t mr = k->mr, nr = k->nr, panels = (depth + mr - 1) / mr;
    const size_t mc_panels = block_rows(depth, mr) / mr;
    float *block = scratch;
    float *tail = scratch + block_rows(depth, mr) * min_size(g_out, BW_KC);
    for (size_t p0 = 0; p0 < g_out; p0 += BW_KC) {
        const size_t kc = min_size(BW_KC, g_out - p0);
        /* The first slice overwrites dcol (unless the caller accumulates), later ones add:
         * every element is its start plus the products in the order o = 0, 1, ... */
        const bool add = accumulate || p0 > 0;
        for (size_t i0 = 0; i0 < panels; i0 += mc_panels) {
            const size_t i1 = min_size(panels, i0 + mc_panels);
            pack_block(w, depth, mr, i0, i1, p0, kc, block);
            for (size_t c = 0; c < plane; c += BW_NC) {
                const size_t nc = min_size(BW_NC, plane - c), npan = (nc + nr - 1) / nr;
                const size_t full = nc / nr, rest = nc % nr;
                if (rest != 0) {
                    /* The partial panel: kc rows of `rest` columns, zeros past them. */
                    const float *src = dy + p0 * plane + c + full * nr;
                    for (size_t q = 0; q < kc; ++q) {
                        float *d = tail + q * nr;
                        for (size_t j = 0; j < rest; ++j) {
                            d[j] = src[q * plane + j];
                        }
                        for (size_t j = rest; j < nr; ++j) {
                            d[j] = 0.0f;
                        }
                    }
                }
                /* Row panels outer: each A panel (kc x MR) stays in L1 while its MR rows of
                 * dcol are written left to right (MR streams, which the prefetchers follow)
                 * from B panels in L2. With one or two panels of columns (7x7 outputs) the rows
                 * are too short for that to matter, and the B panels are kept in L1 instead
                 * while the A block streams from L2. Measured at batch 16 (AVX-512 kernel, the
                 * machine of dc_exec_backward_prefers_engine): this GEMM of r18_3x3_64_56 took
                 * 21 ms with row panels outer against 26 ms the other way round, that of
                 * mb2_1x1_144_24_56 6.4 against 9.1 ms, while r18_3x3_512_7 (two column
                 * panels) took 35 ms with B in L1 against 41 ms. Either order sums each element
                 * the same way. */
                const float *dyc = dy + p0 * plane + c;
                if (npan > 2) {
                    for (size_t i = i0; i < i1; ++i) {
                        for (size_t jp = 0; jp < npan; ++jp) {
                            run_tile(k, kc, block + (i - i0) * kc * mr, dyc, tail, plane, full,
                                     rest, jp, dcol + i * mr * plane + c,
                                     min_size(mr, depth - i * mr), add);
                        }
                    }
                } else {
                    for (size_t jp = 0; jp < npan; ++jp) {
                        for (size_t i = i0; i < i1; ++i) {
                            run_tile(k, kc, block + (i - i0) * kc * mr, dyc, tail, plane, full,
                                     rest, jp, dcol + i * mr * plane + c,
                                     min_size(mr, depth - i * mr), add);
                        }
                    }
                }
            }
        }
    }
}
