#include "conv.h"

#include <cblas.h>
#include <string.h>

bool dc_conv_output_size(size_t in, size_t kernel, size_t stride, size_t pad, size_t dilation,
                         size_t *out) {
    const size_t padded = in + 2 * pad;
    const size_t span = dilation * (kernel - 1) + 1; /* extent of the dilated kernel */
    if (span > padded) {
        return false;
    }
    *out = (padded - span) / stride + 1;
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

void dc_im2col(const dc_conv_shape *s, const float *x, size_t c, float *col) {
    const size_t oh_n = s->out_h, ow_n = s->out_w, plane = oh_n * ow_n;
    for (size_t ch = 0; ch < c; ++ch) {
        const float *xc = x + ch * s->height * s->width;
        for (size_t ki = 0; ki < s->kernel_h; ++ki) {
            const size_t off_h = ki * s->dilation_h;
            size_t oh_lo, oh_hi;
            valid_range(oh_n, s->height, s->stride_h, s->pad_h, off_h, &oh_lo, &oh_hi);
            for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                const size_t off_w = kj * s->dilation_w;
                size_t ow_lo, ow_hi;
                valid_range(ow_n, s->width, s->stride_w, s->pad_w, off_w, &ow_lo, &ow_hi);
                float *row = col + ((ch * s->kernel_h + ki) * s->kernel_w + kj) * plane;

                memset(row, 0, oh_lo * ow_n * sizeof(float));
                for (size_t oh = oh_lo; oh < oh_hi; ++oh) {
                    float *dst = row + oh * ow_n;
                    const float *src = xc + (oh * s->stride_h + off_h - s->pad_h) * s->width;
                    for (size_t ow = 0; ow < ow_lo; ++ow) {
                        dst[ow] = 0.0f;
                    }
                    if (s->stride_w == 1) {
                        memcpy(dst + ow_lo, src + ow_lo + off_w - s->pad_w,
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
                memset(row + oh_hi * ow_n, 0, (oh_n - oh_hi) * ow_n * sizeof(float));
            }
        }
    }
}

void dc_conv2d_sample(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                      float *y, float *col) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t depth = g_in * s->kernel_h * s->kernel_w; /* GEMM inner dimension */
    const bool pointwise = dc_conv_is_pointwise(s);

    /* The bias is written first and the GEMM accumulates onto it (beta = 1): one pass over y. */
    if (b != NULL) {
        for (size_t oc = 0; oc < s->out_channels; ++oc) {
            float *yc = y + oc * plane;
            for (size_t i = 0; i < plane; ++i) {
                yc[i] = b[oc];
            }
        }
    }
    for (size_t g = 0; g < s->groups; ++g) {
        const float *xg = x + g * g_in * in_plane;
        const float *a = pointwise ? xg : col;
        if (!pointwise) {
            dc_im2col(s, xg, g_in, col);
        }
        /* y_g[g_out x plane] = w_g[g_out x depth] * col[depth x plane] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)g_out, (blasint)plane,
                    (blasint)depth, 1.0f, w + g * g_out * depth, (blasint)depth, a,
                    (blasint)plane, b != NULL ? 1.0f : 0.0f, y + g * g_out * plane,
                    (blasint)plane);
    }
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
                        float *d = dst + off_w - s->pad_w;
                        for (size_t ow = ow_lo; ow < ow_hi; ++ow) {
                            d[ow] += src[ow];
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

void dc_conv2d_sample_backward(const dc_conv_shape *s, const float *x, const float *w,
                               const float *dy, float *dw, float *dx, float *col) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
    const size_t depth = g_in * s->kernel_h * s->kernel_w;
    const bool pointwise = dc_conv_is_pointwise(s);

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
            if (!pointwise) {
                dc_col2im_add(s, col, g_in, dxg);
            }
        }
        const float *a = pointwise ? xg : col;
        if (!pointwise) {
            dc_im2col(s, xg, g_in, col);
        }
        /* dw_g[g_out x depth] = dy_g[g_out x plane] * col^T[plane x depth] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)g_out, (blasint)depth,
                    (blasint)plane, 1.0f, dyg, (blasint)plane, a, (blasint)plane, 0.0f, dwg,
                    (blasint)depth);
    }
}
