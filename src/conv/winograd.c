/* Winograd F(2x2, 3x3) for 3x3 convolutions of stride 1 (Lavin and Gray, 2016).
 *
 * Each 2x2 block of outputs (a tile) comes from the 4x4 patch of input around it:
 *   Y = A^T [ sum_c (G g_c G^T) (.) (B^T d_c B) ] A
 * with g_c the 3x3 kernel of input channel c, d_c the patch and (.) the elementwise product.
 * Over all output channels and tiles the sum over c is sixteen independent matrix products,
 * one per element xi of the 4x4 transformed domain:
 *   M[xi] (C_out x T) = U[xi] (C_out x C_in) * V[xi] (C_in x T),
 * done by cblas_sgemm: 16 * C_in * C_out * T multiply-adds against the direct convolution's
 * 9 * 4 * C_in * C_out * T, 2.25 times fewer.
 *
 * The transforms are additions and halvings only (G has entries 0, 1 and 1/2; B and A 0, 1
 * and -1), so small integer data give exact results, and the rounding of random data stays
 * close to the direct sum's (the tests hold it to the same tolerance against the double
 * reference).
 *
 * Mixing is linear, so a dynamic layer's K kernels are transformed once, at create, and a
 * sample's transformed kernel is the attention-weighted sum of the K transformed ones.
 *
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 *
 * Layout. U [16][C_out][C_in]: U[xi] is a row-major C_out x C_in matrix. The tiles are worked
 * through in blocks of whole tile rows; for a block of Tb tiles, V [16][C_in][Tb] and
 * M [16][C_out][Tb] (one block at a time, sized to stay in L2). A tile row's tiles are
 * consecutive, so both transforms run along unit-stride rows: each input row is split once
 * into its even and odd columns, and a patch's four columns are then e[t], o[t], e[t+1] and
 * o[t+1] for tile t. */
#include "conv.h"

#include "tensor.h"

#include <cblas.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#define DC_WINO_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DC_WINO_CLONES
#endif

/* Bytes of L2 a block's V and M take together (the header's workspace formula repeats it).
 * Measured on AMD EPYC Zen 4 (1 MiB L2), one thread, 64 channels at 56x56, 128 at 28x28 and
 * 256 at 14x14: blocks of 256 KiB to 768 KiB within the noise of each other (about 10%),
 * 1.5 MiB 0.85 to 0.95 of their speed. */
#define DC_WINO_BLOCK_BYTES ((size_t)512 << 10)

bool dc_wino_applies(const dc_conv_shape *s) {
    return s->kernel_h == 3 && s->kernel_w == 3 && s->stride_h == 1 && s->stride_w == 1 &&
           s->dilation_h == 1 && s->dilation_w == 1 && s->groups == 1;
}

bool dc_wino_kernel_floats(const dc_conv_shape *s, size_t *out) {
    const size_t dims[3] = {16, s->out_channels, s->in_channels};
    return dc_product(dims, 3, out);
}

void dc_wino_transform_kernels(const dc_conv_shape *s, size_t kernels, const float *w,
                               float *u) {
    const size_t co = s->out_channels, ci = s->in_channels, len = 16 * co * ci;
    for (size_t k = 0; k < kernels; ++k) {
        const float *wk = w + k * co * ci * 9;
        float *uk = u + k * len;
        for (size_t o = 0; o < co; ++o) {
            for (size_t c = 0; c < ci; ++c) {
                const float *g = wk + (o * ci + c) * 9;
                float t[4][3]; /* G g */
                for (int q = 0; q < 3; ++q) {
                    t[0][q] = g[q];
                    t[1][q] = 0.5f * ((g[q] + g[3 + q]) + g[6 + q]);
                    t[2][q] = 0.5f * ((g[q] - g[3 + q]) + g[6 + q]);
                    t[3][q] = g[6 + q];
                }
                for (int r = 0; r < 4; ++r) { /* (G g) G^T */
                    const float v[4] = {t[r][0], 0.5f * ((t[r][0] + t[r][1]) + t[r][2]),
                                        0.5f * ((t[r][0] - t[r][1]) + t[r][2]), t[r][2]};
                    for (int q = 0; q < 4; ++q) {
                        uk[((size_t)(r * 4 + q) * co + o) * ci + c] = v[q];
                    }
                }
            }
        }
    }
}

size_t dc_wino_tile_rows(const dc_conv_shape *s) { return (s->out_h + 1) / 2; }

/* Tile rows of one block: as many as DC_WINO_BLOCK_BYTES holds, at least one. */
static size_t block_rows(const dc_conv_shape *s) {
    const size_t tw = (s->out_w + 1) / 2;
    const size_t per_row = 16 * (s->in_channels + s->out_channels) * tw * sizeof(float);
    const size_t rows = DC_WINO_BLOCK_BYTES / per_row;
    const size_t all = dc_wino_tile_rows(s);
    return rows < 1 ? 1 : rows > all ? all : rows;
}

/* Floats of the input rows of `rows` tile rows split into even and odd columns (split_rows). */
static bool split_floats(const dc_conv_shape *s, size_t rows, size_t *out) {
    const size_t dims[3] = {2 * rows + 2, 2, (s->out_w + 1) / 2 + 1};
    return dc_product(dims, 3, out);
}

bool dc_wino_scratch_floats(const dc_conv_shape *s, size_t *out) {
    const size_t tw = (s->out_w + 1) / 2, rows = block_rows(s);
    size_t tb, vm, split;
    /* V and M of a block, then the block's input rows split into even and odd columns. */
    return dc_mul_size(rows, tw, &tb) &&
           dc_mul_size(tb, 16 * (s->in_channels + s->out_channels), &vm) &&
           split_floats(s, rows, &split) && dc_add_size(vm, split, out);
}

/* Input rows y0 .. y0 + n - 1 of channel plane x, each split into its even and odd columns of
 * the padded row (column j of the padded row is column j - pad_w of the input): e and o of row
 * r at eo + r * 2 * (tw + 1), o after e; rows and columns outside the input are zeros. */
DC_WINO_CLONES
static void split_rows(const dc_conv_shape *s, const float *x, ptrdiff_t y0, size_t n,
                       size_t tw, float *eo) {
    const ptrdiff_t h = (ptrdiff_t)s->height, w = (ptrdiff_t)s->width, pw = (ptrdiff_t)s->pad_w;
    for (size_t r = 0; r < n; ++r) {
        float *e = eo + r * 2 * (tw + 1), *o = e + tw + 1;
        const ptrdiff_t y = y0 + (ptrdiff_t)r;
        if (y < 0 || y >= h) {
            memset(e, 0, 2 * (tw + 1) * sizeof(float));
            continue;
        }
        const float *row = x + y * w;
        for (size_t j = 0; j <= tw; ++j) {
            const ptrdiff_t xe = 2 * (ptrdiff_t)j - pw, xo = xe + 1;
            e[j] = xe >= 0 && xe < w ? row[xe] : 0.0f;
            o[j] = xo >= 0 && xo < w ? row[xo] : 0.0f;
        }
    }
}

/* V for tile rows [ty0, ty0 + rows) of every input channel: V[xi][c][t], t counted from the
 * block's first tile. */
DC_WINO_CLONES
static void input_transform(const dc_conv_shape *s, const float *x, size_t ty0, size_t rows,
                            float *v, size_t tb, float *eo) {
    const size_t ci = s->in_channels, tw = (s->out_w + 1) / 2, hw = s->height * s->width;
    const size_t stride = 2 * (tw + 1);
    for (size_t c = 0; c < ci; ++c) {
        split_rows(s, x + c * hw, 2 * (ptrdiff_t)ty0 - (ptrdiff_t)s->pad_h, 2 * rows + 2, tw, eo);
        for (size_t ty = 0; ty < rows; ++ty) {
            const float *r0 = eo + 2 * ty * stride;
            const float *restrict e0 = r0, *restrict o0 = r0 + tw + 1;
            const float *restrict e1 = r0 + stride, *restrict o1 = e1 + tw + 1;
            const float *restrict e2 = r0 + 2 * stride, *restrict o2 = e2 + tw + 1;
            const float *restrict e3 = r0 + 3 * stride, *restrict o3 = e3 + tw + 1;
            float *restrict dst = v + c * tb + ty * tw;
            const size_t xs = ci * tb; /* from one xi to the next */
            for (size_t t = 0; t < tw; ++t) {
                /* d B along each of the four rows: columns e[t], o[t], e[t+1], o[t+1] */
                const float a00 = e0[t] - e0[t + 1], a01 = o0[t] + e0[t + 1],
                            a02 = e0[t + 1] - o0[t], a03 = o0[t] - o0[t + 1];
                const float a10 = e1[t] - e1[t + 1], a11 = o1[t] + e1[t + 1],
                            a12 = e1[t + 1] - o1[t], a13 = o1[t] - o1[t + 1];
                const float a20 = e2[t] - e2[t + 1], a21 = o2[t] + e2[t + 1],
                            a22 = e2[t + 1] - o2[t], a23 = o2[t] - o2[t + 1];
                const float a30 = e3[t] - e3[t + 1], a31 = o3[t] + e3[t + 1],
                            a32 = e3[t + 1] - o3[t], a33 = o3[t] - o3[t + 1];
                /* B^T (d B) down each column */
                dst[0 * xs + t] = a00 - a20;
                dst[1 * xs + t] = a01 - a21;
                dst[2 * xs + t] = a02 - a22;
                dst[3 * xs + t] = a03 - a23;
                dst[4 * xs + t] = a10 + a20;
                dst[5 * xs + t] = a11 + a21;
                dst[6 * xs + t] = a12 + a22;
                dst[7 * xs + t] = a13 + a23;
                dst[8 * xs + t] = a20 - a10;
                dst[9 * xs + t] = a21 - a11;
                dst[10 * xs + t] = a22 - a12;
                dst[11 * xs + t] = a23 - a13;
                dst[12 * xs + t] = a10 - a30;
                dst[13 * xs + t] = a11 - a31;
                dst[14 * xs + t] = a12 - a32;
                dst[15 * xs + t] = a13 - a33;
            }
        }
    }
}

/* Y = A^T M A for tile rows [ty0, ty0 + rows) of every output channel, plus its bias, clamped
 * to [lo, hi] by the same comparisons as the layer's activation pass (a NaN stays NaN). */
DC_WINO_CLONES
static void output_transform(const dc_conv_shape *s, const float *m, size_t tb,
                             const float *bias, size_t ty0, size_t rows, size_t oc0,
                             size_t oc1, float lo, float hi, float *out) {
    const size_t tw = (s->out_w + 1) / 2;
    const size_t oh = s->out_h, ow = s->out_w, xs = (oc1 - oc0) * tb;
    for (size_t o = oc0; o < oc1; ++o) {
        const float b = bias != NULL ? bias[o] : 0.0f;
        float *plane = out + o * oh * ow;
        for (size_t ty = 0; ty < rows; ++ty) {
            const float *restrict src = m + (o - oc0) * tb + ty * tw;
            const size_t y = 2 * (ty0 + ty);
            float *restrict row0 = plane + y * ow;
            float *restrict row1 = y + 1 < oh ? row0 + ow : NULL;
            for (size_t t = 0; t < tw; ++t) {
                float mm[16];
                for (int xi = 0; xi < 16; ++xi) {
                    mm[xi] = src[(size_t)xi * xs + t];
                }
                /* A^T M: two rows of four */
                float s0[4], s1[4];
                for (int q = 0; q < 4; ++q) {
                    s0[q] = (mm[q] + mm[4 + q]) + mm[8 + q];
                    s1[q] = (mm[4 + q] - mm[8 + q]) - mm[12 + q];
                }
                float y00 = ((s0[0] + s0[1]) + s0[2]) + b, y01 = ((s0[1] - s0[2]) - s0[3]) + b;
                float y10 = ((s1[0] + s1[1]) + s1[2]) + b, y11 = ((s1[1] - s1[2]) - s1[3]) + b;
                y00 = y00 < lo ? lo : y00;
                y00 = y00 > hi ? hi : y00;
                y01 = y01 < lo ? lo : y01;
                y01 = y01 > hi ? hi : y01;
                y10 = y10 < lo ? lo : y10;
                y10 = y10 > hi ? hi : y10;
                y11 = y11 < lo ? lo : y11;
                y11 = y11 > hi ? hi : y11;
                const size_t x0 = 2 * t;
                row0[x0] = y00;
                if (x0 + 1 < ow) {
                    row0[x0 + 1] = y01;
                }
                if (row1 != NULL) {
                    row1[x0] = y10;
                    if (x0 + 1 < ow) {
                        row1[x0 + 1] = y11;
                    }
                }
            }
        }
    }
}

void dc_wino_conv(const dc_conv_shape *s, const float *x, const float *u, const float *bias,
                  float *out, float *scratch, size_t ty0, size_t ty1, size_t oc0, size_t oc1,
                  float lo, float hi) {
    const size_t tw = (s->out_w + 1) / 2, rows = block_rows(s);
    const size_t ci = s->in_channels, co = s->out_channels, tb_max = rows * tw;
    const size_t mo = oc1 - oc0;
    float *v = scratch, *m = v + 16 * ci * tb_max, *eo = m + 16 * co * tb_max;
    for (size_t ty = ty0; ty < ty1; ty += rows) {
        const size_t n = ty1 - ty < rows ? ty1 - ty : rows, tb = n * tw;
        input_transform(s, x, ty, n, v, tb, eo);
        for (size_t xi = 0; xi < 16; ++xi) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)mo, (blasint)tb,
                        (blasint)ci, 1.0f, u + (xi * co + oc0) * ci, (blasint)ci,
                        v + xi * ci * tb, (blasint)tb, 0.0f, m + xi * mo * tb, (blasint)tb);
        }
        output_transform(s, m, tb, bias, ty, n, oc0, oc1, lo, hi, out);
    }
}

size_t dc_wino_tiles(const dc_conv_shape *s) {
    return dc_wino_tile_rows(s) * ((s->out_w + 1) / 2); /* fits: at most the output plane */
}

bool dc_wino_image_floats(const dc_conv_shape *s, size_t *out) {
    const size_t dims[3] = {16, s->in_channels + s->out_channels, dc_wino_tiles(s)};
    return s->in_channels <= SIZE_MAX - s->out_channels && dc_product(dims, 3, out);
}

bool dc_wino_split_floats(const dc_conv_shape *s, size_t *out) {
    return split_floats(s, dc_wino_tile_rows(s), out);
}

void dc_wino_input_image(const dc_conv_shape *s, const float *x, float *v, float *eo) {
    input_transform(s, x, 0, dc_wino_tile_rows(s), v, dc_wino_tiles(s), eo);
}

void dc_wino_product(const dc_conv_shape *s, size_t xi, size_t oc0, size_t rows, const float *u,
                     const float *v, float *m) {
    const size_t ci = s->in_channels, co = s->out_channels, t = dc_wino_tiles(s);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)t,
                (blasint)ci, 1.0f, u, (blasint)ci, v + xi * ci * t, (blasint)t, 0.0f,
                m + (xi * co + oc0) * t, (blasint)t);
}

void dc_wino_output_image(const dc_conv_shape *s, const float *m, const float *bias, float lo,
                          float hi, float *out) {
    output_transform(s, m, dc_wino_tiles(s), bias, 0, dc_wino_tile_rows(s), 0, s->out_channels,
                     lo, hi, out);
}
