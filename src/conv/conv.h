/* Convolution layer: one sample of a grouped 2-D convolution (cross-correlation, as PyTorch's
 * conv2d) through im2col + cblas_sgemm, one GEMM per group; pointwise kernels use the input as
 * the GEMM operand directly, strided 1x1 kernels a strided copy of it, and depthwise ones (one
 * input channel per group) a direct loop.
 * Weights are whatever the caller hands in; here they are the aggregated kernel of one sample. */
#ifndef DYNCONV_SRC_CONV_H
#define DYNCONV_SRC_CONV_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dc_conv_shape {
    size_t in_channels, out_channels, groups;
    size_t height, width;             /* input spatial size */
    size_t kernel_h, kernel_w;
    size_t stride_h, stride_w;
    size_t pad_h, pad_w;
    size_t dilation_h, dilation_w;
    size_t out_h, out_w;              /* from dc_conv_output_size */
} dc_conv_shape;

/* floor((in + 2*pad - dilation*(kernel-1) - 1) / stride) + 1, or false when that is < 1.
 * Arguments must already be positive and small enough not to overflow (checked by the caller). */
bool dc_conv_output_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation,
                         size_t *out);

/* True when the input itself is the im2col matrix (1x1 kernel, stride 1, no padding). */
bool dc_conv_is_pointwise(const dc_conv_shape *s);

/* Floats of im2col scratch one sample needs: (C_in/g)*kh*kw * out_h*out_w, or 0 when the
 * convolution is pointwise. The caller checks this product for overflow beforehand. */
size_t dc_conv_col_floats(const dc_conv_shape *s);

/* col [c*kh*kw, out_h*out_w] from x [c, H, W] (c channels of one group), zero padded. */
void dc_im2col(const dc_conv_shape *s, const float *x, size_t c, float *col);

/* True when every group has one input channel (groups == C_in; C_out = m * C_in is a channel
 * multiplier) and the kernel is not pointwise: such layers skip im2col + GEMM for a direct,
 * vectorised loop over a zero-padded copy of the input channel. */
bool dc_conv_is_depthwise(const dc_conv_shape *s);

/* True for a 1x1 kernel without padding whose stride exceeds 1 on some axis, unless depthwise
 * (which keeps its direct loop): the GEMM's right operand is the input subsampled, gathered row
 * by row into a compact [C_in/g, out_h*out_w] buffer (what im2col would produce, at the cost of
 * a strided copy). With padding, a 1x1 kernel goes through im2col (the zero border). */
bool dc_conv_is_strided_1x1(const dc_conv_shape *s);

/* The GEMM operand of such a layer for channels [0, c): out [c, out_h * out_w] with
 * out[ch, oh * out_w + ow] = x[ch, oh * sh, ow * sw]. */
void dc_conv_gather_strided_1x1(const dc_conv_shape *s, const float *x, size_t c, float *out);

/* Floats of scratch dc_conv2d_rows / dc_conv2d_sample / dc_conv2d_channels use: 0 for the
 * pointwise path, the padded input channel plus 8 * stride_w for the depthwise path, else
 * dc_conv_col_floats (for a strided 1x1 kernel: the gathered input of a group). False on
 * overflow. */
bool dc_conv_scratch_floats(const dc_conv_shape *s, size_t *out);

/* y [C_out, out_h, out_w] = conv(x [C_in, H, W], w [C_out, C_in/g, kh, kw]) + b [C_out] (b may
 * be NULL). col is scratch of dc_conv_scratch_floats floats (may be NULL when that is 0). */
void dc_conv2d_sample(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                      float *y, float *col);
/* The same for an input just read into cache (pooled right before): a pointwise kernel with
 * many input channels is multiplied in one GEMM over the whole plane, not in prefetched bands
 * of columns (which only pay when the input comes from memory; the same bits either way when
 * the BLAS sums each element in the same order whatever the matrix width). */
void dc_conv2d_sample_cached(const dc_conv_shape *s, const float *x, const float *w,
                             const float *b, float *y, float *col);

/* Adjoint of dc_im2col: x [c, H, W] += the entries of col [c*kh*kw, out_h*out_w] scattered back
 * to the input positions they were copied from (padding entries are dropped). */
void dc_col2im_add(const dc_conv_shape *s, const float *col, size_t c, float *x);

/* Floats of scratch dc_conv2d_sample_backward needs: the im2col matrix of a group, or for a
 * single-input-channel group with stride 1 (depthwise) the padded input, its gradient and the
 * output gradient laid out on the padded width. False when that overflows. */
bool dc_conv_backward_scratch_floats(const dc_conv_shape *s, size_t *out);

/* Backward of dc_conv2d_sample for one sample, with y = conv(x, w) + b:
 *   dw [C_out, C_in/g, kh, kw]  = dL/dw, overwritten
 *   dx [C_in, H, W]             += dL/dx (skipped when dx is NULL)
 * from dy [C_out, out_h, out_w]. dw may alias w: for each group the input gradient is formed
 * from w before dw overwrites that group's slice, which lets the caller reuse one buffer for the
 * aggregated kernel and its gradient. scratch holds dc_conv_backward_scratch_floats floats. */
void dc_conv2d_sample_backward(const dc_conv_shape *s, const float *x, const float *w,
                               const float *dy, float *dw, float *dx, float *scratch);

/* The same, restricted to output rows [oh0, oh1) of every output channel (the rest of y is not
 * touched), so that threads can share one sample. The direct loops compute each output value
 * the same way whatever the row range; through the GEMM that holds when the BLAS sums every
 * element in the same order whatever the matrix width (the tests compare thread counts). */
void dc_conv2d_rows(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                    float *y, float *col, size_t oh0, size_t oh1);

/* True when output channels can be computed apart with little or no repeated work: the
 * depthwise loop, a pointwise kernel of one group (no im2col shared by all channels), and a
 * strided 1x1 kernel of one group (each thread gathers the subsampled input, C_in * out_h *
 * out_w floats, a small fraction of the C_out * C_in * out_h * out_w multiply-adds). */
bool dc_conv_channels_split(const dc_conv_shape *s);

/* Output channels [oc0, oc1) of one sample (all rows), for the shapes dc_conv_channels_split
 * accepts; w and b are the whole kernel and bias. The depthwise loop computes each value as
 * dc_conv2d_sample does; the pointwise GEMM over a subset of rows may round differently in the
 * last bits. col: dc_conv_scratch_floats floats. */
void dc_conv2d_channels(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                        float *y, float *col, size_t oc0, size_t oc1);

/* For tests: true makes the depthwise loop on small stride-1 planes run over its zero-padded
 * copies of the input even where the CPU has the masked AVX-512 form (which gives the same
 * bits); false (the default) restores the choice. */
void dc_conv_force_flat_copies(bool on);

/* Winograd F(2x2, 3x3) (conv/winograd.c): 3x3 kernels of stride 1, dilation 1 and one group,
 * any padding, with 2.25 times fewer multiply-adds than the direct convolution. */
bool dc_wino_applies(const dc_conv_shape *s);
/* Floats of one transformed kernel, 16 * C_out * C_in (false on overflow). */
bool dc_wino_kernel_floats(const dc_conv_shape *s, size_t *out);
/* Transforms `kernels` kernels w [kernels][C_out][C_in][3][3] into u [kernels][16][C_out][C_in]
 * (each u[k][xi] a row-major C_out x C_in matrix). Linear: mixing commutes with it. */
void dc_wino_transform_kernels(const dc_conv_shape *s, size_t kernels, const float *w,
                               float *u);
/* Rows of 2x2 output tiles of the current shape, ceil(out_h / 2): the unit dc_wino_conv's
 * callers share between threads. */
size_t dc_wino_tile_rows(const dc_conv_shape *s);
/* Floats of dc_wino_conv's scratch (false on overflow). */
bool dc_wino_scratch_floats(const dc_conv_shape *s, size_t *out);
/* Output channels [oc0, oc1) of one sample, in the output rows of tile rows [ty0, ty1)
 * (output rows 2 * ty0 up to 2 * ty1, within out_h), from the transformed kernel u (one of
 * dc_wino_transform_kernels's; only its rows oc0 .. oc1 - 1 are read) and the bias (NULL:
 * none), each value then clamped: v < lo ? lo : v, then v > hi ? hi : v (lo = -INFINITY,
 * hi = INFINITY for none). scratch: dc_wino_scratch_floats floats. A value's sum does not
 * depend on the ranges beyond the BLAS's own blocking. */
void dc_wino_conv(const dc_conv_shape *s, const float *x, const float *u, const float *bias,
                  float *out, float *scratch, size_t ty0, size_t ty1, size_t oc0, size_t oc1,
                  float lo, float hi);

/* The same convolution in three steps over one sample's whole image, for callers that mix each
 * transformed kernel's rows just before their product (exec/forward.c, for K sets too large
 * to mix whole per sample). T = dc_wino_tiles (all tiles); a sample's V [16][C_in][T] and
 * M [16][C_out][T] take dc_wino_image_floats floats together (V first), and the input
 * transform needs dc_wino_split_floats more of scratch. False on overflow. */
size_t dc_wino_tiles(const dc_conv_shape *s);
bool dc_wino_image_floats(const dc_conv_shape *s, size_t *out);
bool dc_wino_split_floats(const dc_conv_shape *s, size_t *out);
/* V of the whole image x; eo: dc_wino_split_floats floats. */
void dc_wino_input_image(const dc_conv_shape *s, const float *x, float *v, float *eo);
/* Rows [oc0, oc0 + rows) of M[xi] = U[xi] V[xi]: u holds those rows of U[xi] (rows x C_in,
 * row-major), v and m a sample's whole V and M. */
void dc_wino_product(const dc_conv_shape *s, size_t xi, size_t oc0, size_t rows, const float *u,
                     const float *v, float *m);
/* The output of the whole image from M, as dc_wino_conv's (bias, lo, hi alike). */
void dc_wino_output_image(const dc_conv_shape *s, const float *m, const float *bias, float lo,
                          float hi, float *out);

#endif
