#include "reference_grad.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "reference.h"
#include "testutil.h"

void ref_conv2d_forward_d(const dynconv_conv2d_geometry *g, const ref_params_d *p,
                          double temperature, int64_t n, int64_t h, int64_t w, const double *x,
                          double *y)
{
    const int64_t oh = ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    const int64_t cin = g->in_channels, cout = g->out_channels, kk = g->num_kernels;
    const int64_t hid = g->hidden, kh = g->kernel_h, kw = g->kernel_w;
    const int64_t cin_g = cin / g->groups, cout_g = cout / g->groups;
    const int64_t wlen = cout * cin_g * kh * kw;

    double *s = tu_alloc((size_t)cin * sizeof(double));
    double *u = tu_alloc((size_t)hid * sizeof(double));
    double *z = tu_alloc((size_t)kk * sizeof(double));
    double *wn = tu_alloc((size_t)wlen * sizeof(double));
    double *bn = tu_alloc((size_t)cout * sizeof(double));

    for (int64_t ni = 0; ni < n; ++ni) {
        const double *xn = x + ni * cin * h * w;
        double *yn = y + ni * cout * oh * ow;
        /* squeeze */
        for (int64_t c = 0; c < cin; ++c) {
            double sum = 0.0;
            for (int64_t i = 0; i < h * w; ++i) {
                sum += xn[c * h * w + i];
            }
            s[c] = sum / (double)(h * w);
        }
        /* excitation: u = ReLU(fc1 s + b1), z = fc2 u + b2, pi = softmax(z / T) (into z) */
        for (int64_t j = 0; j < hid; ++j) {
            double acc = p->fc1_bias ? p->fc1_bias[j] : 0.0;
            for (int64_t c = 0; c < cin; ++c) {
                acc += p->fc1_weight[j * cin + c] * s[c];
            }
            u[j] = acc > 0.0 ? acc : 0.0;
        }
        double zmax = -INFINITY;
        for (int64_t k = 0; k < kk; ++k) {
            double acc = p->fc2_bias ? p->fc2_bias[k] : 0.0;
            for (int64_t j = 0; j < hid; ++j) {
                acc += p->fc2_weight[k * hid + j] * u[j];
            }
            z[k] = acc / temperature;
            zmax = z[k] > zmax ? z[k] : zmax;
        }
        double zsum = 0.0;
        for (int64_t k = 0; k < kk; ++k) {
            z[k] = exp(z[k] - zmax);
            zsum += z[k];
        }
        for (int64_t k = 0; k < kk; ++k) {
            z[k] /= zsum;
        }
        /* aggregated kernel and bias */
        for (int64_t i = 0; i < wlen; ++i) {
            double acc = 0.0;
            for (int64_t k = 0; k < kk; ++k) {
                acc += z[k] * p->weight[k * wlen + i];
            }
            wn[i] = acc;
        }
        for (int64_t o = 0; o < cout; ++o) {
            double acc = 0.0;
            for (int64_t k = 0; k < kk && p->bias; ++k) {
                acc += z[k] * p->bias[k * cout + o];
            }
            bn[o] = acc;
        }
        /* the convolution */
        for (int64_t co = 0; co < cout; ++co) {
            const int64_t grp = co / cout_g;
            for (int64_t oy = 0; oy < oh; ++oy) {
                for (int64_t ox = 0; ox < ow; ++ox) {
                    double acc = bn[co];
                    for (int64_t ci = 0; ci < cin_g; ++ci) {
                        for (int64_t i = 0; i < kh; ++i) {
                            const int64_t iy = oy * g->stride_h - g->pad_h + i * g->dilation_h;
                            for (int64_t j = 0; j < kw; ++j) {
                                const int64_t ix = ox * g->stride_w - g->pad_w + j * g->dilation_w;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) {
                                    continue;
                                }
                                acc += wn[((co * cin_g + ci) * kh + i) * kw + j] *
                                       xn[((grp * cin_g + ci) * h + iy) * w + ix];
                            }
                        }
                    }
                    yn[(co * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    free(bn);
    free(wn);
    free(z);
    free(u);
    free(s);
}

static double loss(const dynconv_conv2d_geometry *g, const ref_params_d *p, double temperature,
                   int64_t n, int64_t h, int64_t w, const double *x, const double *dy, double *y,
                   int64_t y_count)
{
    ref_conv2d_forward_d(g, p, temperature, n, h, w, x, y);
    double acc = 0.0;
    for (int64_t i = 0; i < y_count; ++i) {
        acc += dy[i] * y[i];
    }
    return acc;
}

void ref_conv2d_finite_diff(const dynconv_conv2d_geometry *g, const ref_params_d *p,
                            double temperature, int64_t n, int64_t h, int64_t w, double *x,
                            const double *dy, double *target, int64_t count, double step,
                            double *grad)
{
    const int64_t oh = ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    const int64_t y_count = n * g->out_channels * oh * ow;
    double *y = tu_alloc((size_t)y_count * sizeof(double));
    for (int64_t i = 0; i < count; ++i) {
        const double saved = target[i];
        const double e = step * fmax(1.0, fabs(saved));
        target[i] = saved + e;
        const double up = loss(g, p, temperature, n, h, w, x, dy, y, y_count);
        target[i] = saved - e;
        const double down = loss(g, p, temperature, n, h, w, x, dy, y, y_count);
        target[i] = saved;
        grad[i] = (up - down) / (2.0 * e);
    }
    free(y);
}
