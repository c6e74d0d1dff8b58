/* Double-precision reference of the dynamic layers. Every step is a direct loop over the
 * definition in include/dynconv/dynconv.h, in the same order as it is written there, so that a
 * reader can check it line by line. Speed does not matter here; obviousness does. */
#include "reference.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "testutil.h"

/* Floor division for a possibly negative numerator and a positive divisor: C's `/` truncates
 * toward zero, which would turn an impossible shape into a size of 1. */
static int64_t floor_div(int64_t num, int64_t den)
{
    int64_t q = num / den;
    if (num % den != 0 && num < 0) {
        q -= 1;
    }
    return q;
}

int64_t ref_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation)
{
    return floor_div(in + 2 * pad - dilation * (kernel - 1) - 1, stride) + 1;
}

/* pi = softmax(z / T), with the maximum subtracted first so that exp never overflows. */
static void softmax_t(const double *z, int64_t k, double temperature, double *pi)
{
    double zmax = z[0] / temperature;
    for (int64_t i = 1; i < k; ++i) {
        if (z[i] / temperature > zmax) {
            zmax = z[i] / temperature;
        }
    }
    double sum = 0.0;
    for (int64_t i = 0; i < k; ++i) {
        pi[i] = exp(z[i] / temperature - zmax);
        sum += pi[i];
    }
    for (int64_t i = 0; i < k; ++i) {
        pi[i] /= sum;
    }
}

/* The attention branch on an already squeezed vector s [channels]:
 * u = ReLU(fc1_w @ s + fc1_b), z = fc2_w @ u + fc2_b, pi = softmax(z / T). */
static void attention(const float *fc1_w, const float *fc1_b, const float *fc2_w,
                      const float *fc2_b, int64_t channels, int64_t hidden, int64_t kernels,
                      const double *s, double temperature, double *pi)
{
    double *u = tu_alloc((size_t)hidden * sizeof(double));
    double *z = tu_alloc((size_t)kernels * sizeof(double));
    for (int64_t j = 0; j < hidden; ++j) {
        double acc = fc1_b ? (double)fc1_b[j] : 0.0;
        for (int64_t c = 0; c < channels; ++c) {
            acc += (double)fc1_w[j * channels + c] * s[c];
        }
        u[j] = acc > 0.0 ? acc : 0.0;
    }
    for (int64_t k = 0; k < kernels; ++k) {
        double acc = fc2_b ? (double)fc2_b[k] : 0.0;
        for (int64_t j = 0; j < hidden; ++j) {
            acc += (double)fc2_w[k * hidden + j] * u[j];
        }
        z[k] = acc;
    }
    softmax_t(z, kernels, temperature, pi);
    free(z);
    free(u);
}

/* out[i] = sum_k pi[k] * params[k, i] for params [K, len]; all zero when params is NULL. */
static void aggregate(const float *params, const double *pi, int64_t kernels, int64_t len,
                      double *out)
{
    for (int64_t i = 0; i < len; ++i) {
        double acc = 0.0;
        if (params) {
            for (int64_t k = 0; k < kernels; ++k) {
                acc += pi[k] * (double)params[k * len + i];
            }
        }
        out[i] = acc;
    }
}

/* One sample of a grouped, strided, padded, dilated cross-correlation:
 *   y[co, oy, ox] = b[co] + sum_{ci, i, j} w[co, ci, i, j] * x[grp*C_in/g + ci, iy, ix]
 *   iy = oy*sh - ph + i*dh, ix = ox*sw - pw + j*dw, terms outside the input are zero padding. */
static void conv_sample(const dynconv_conv2d_geometry *g, const double *w, const double *b,
                        int64_t h, int64_t wd, const float *x, double *y)
{
    const int64_t oh = ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(wd, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    const int64_t cin_g = g->in_channels / g->groups;
    const int64_t cout_g = g->out_channels / g->groups;
    const int64_t kh = g->kernel_h, kw = g->kernel_w;

    for (int64_t co = 0; co < g->out_channels; ++co) {
        const int64_t grp = co / cout_g;
        for (int64_t oy = 0; oy < oh; ++oy) {
            for (int64_t ox = 0; ox < ow; ++ox) {
                double acc = b ? b[co] : 0.0;
                for (int64_t ci = 0; ci < cin_g; ++ci) {
                    const int64_t c = grp * cin_g + ci;
                    for (int64_t i = 0; i < kh; ++i) {
                        const int64_t iy = oy * g->stride_h - g->pad_h + i * g->dilation_h;
                        if (iy < 0 || iy >= h) {
                            continue;
                        }
                        for (int64_t j = 0; j < kw; ++j) {
                            const int64_t ix = ox * g->stride_w - g->pad_w + j * g->dilation_w;
                            if (ix < 0 || ix >= wd) {
                                continue;
                            }
                            acc += w[((co * cin_g + ci) * kh + i) * kw + j] *
                                   (double)x[(c * h + iy) * wd + ix];
                        }
                    }
                }
                y[(co * oh + oy) * ow + ox] = acc;
            }
        }
    }
}

static int64_t conv_weight_len(const dynconv_conv2d_geometry *g)
{
    return g->out_channels * (g->in_channels / g->groups) * g->kernel_h * g->kernel_w;
}

void ref_conv2d_forward(const dynconv_conv2d_geometry *g, const dynconv_conv2d_weights *wt,
                        double temperature, int64_t n, int64_t h, int64_t w, const float *x,
                        double *y, double *pi)
{
    const int64_t oh = ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    const int64_t cin = g->in_channels, cout = g->out_channels, kk = g->num_kernels;
    const int64_t wlen = conv_weight_len(g);
    const int64_t x_stride = cin * h * w, y_stride = cout * oh * ow;

    double *s = tu_alloc((size_t)cin * sizeof(double));
    double *p = tu_alloc((size_t)kk * sizeof(double));
    double *wn = tu_alloc((size_t)wlen * sizeof(double));
    double *bn = tu_alloc((size_t)cout * sizeof(double));

    for (int64_t ni = 0; ni < n; ++ni) {
        const float *xn = x + ni * x_stride;
        /* 1. squeeze: mean over the spatial positions of every channel */
        for (int64_t c = 0; c < cin; ++c) {
            double sum = 0.0;
            for (int64_t i = 0; i < h * w; ++i) {
                sum += (double)xn[c * h * w + i];
            }
            s[c] = sum / (double)(h * w);
        }
        /* 2-3. excitation and softmax over the K kernels */
        attention(wt->fc1_weight, wt->fc1_bias, wt->fc2_weight, wt->fc2_bias, cin, g->hidden,
                  kk, s, temperature, p);
        /* 4. aggregated kernel and bias of this sample */
        aggregate(wt->weight, p, kk, wlen, wn);
        aggregate(wt->bias, p, kk, cout, bn);
        /* 5. the convolution itself */
        conv_sample(g, wn, wt->bias ? bn : NULL, h, w, xn, y + ni * y_stride);
        if (pi) {
            for (int64_t k = 0; k < kk; ++k) {
                pi[ni * kk + k] = p[k];
            }
        }
    }
    free(bn);
    free(wn);
    free(p);
    free(s);
}

void ref_linear_forward(const dynconv_linear_geometry *g, const dynconv_linear_weights *wt,
                        double temperature, int64_t n, const float *x, double *y, double *pi)
{
    const int64_t din = g->in_features, dout = g->out_features, kk = g->num_kernels;
    double *s = tu_alloc((size_t)din * sizeof(double));
    double *p = tu_alloc((size_t)kk * sizeof(double));
    double *wn = tu_alloc((size_t)(dout * din) * sizeof(double));
    double *bn = tu_alloc((size_t)dout * sizeof(double));

    for (int64_t ni = 0; ni < n; ++ni) {
        const float *xn = x + ni * din;
        /* the attention looks at x itself: there is nothing to pool */
        for (int64_t i = 0; i < din; ++i) {
            s[i] = (double)xn[i];
        }
        attention(wt->fc1_weight, wt->fc1_bias, wt->fc2_weight, wt->fc2_bias, din, g->hidden, kk,
                  s, temperature, p);
        aggregate(wt->weight, p, kk, dout * din, wn);
        aggregate(wt->bias, p, kk, dout, bn);
        for (int64_t o = 0; o < dout; ++o) {
            double acc = bn[o];
            for (int64_t i = 0; i < din; ++i) {
                acc += wn[o * din + i] * s[i];
            }
            y[ni * dout + o] = acc;
        }
        if (pi) {
            for (int64_t k = 0; k < kk; ++k) {
                pi[ni * kk + k] = p[k];
            }
        }
    }
    free(bn);
    free(wn);
    free(p);
    free(s);
}

void ref_static_conv2d(const dynconv_conv2d_geometry *g, const float *weight, const float *bias,
                       int64_t n, int64_t h, int64_t w, const float *x, double *y)
{
    const int64_t oh = ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    const int64_t wlen = conv_weight_len(g);
    double *wd = tu_alloc((size_t)wlen * sizeof(double));
    double *bd = tu_alloc((size_t)g->out_channels * sizeof(double));
    for (int64_t i = 0; i < wlen; ++i) {
        wd[i] = (double)weight[i];
    }
    for (int64_t i = 0; i < g->out_channels; ++i) {
        bd[i] = bias ? (double)bias[i] : 0.0;
    }
    for (int64_t ni = 0; ni < n; ++ni) {
        conv_sample(g, wd, bias ? bd : NULL, h, w, x + ni * g->in_channels * h * w,
                    y + ni * g->out_channels * oh * ow);
    }
    free(bd);
    free(wd);
}
