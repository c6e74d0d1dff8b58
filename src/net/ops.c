/* The ops a network runs itself (everything but the layers): plain loops in the calling thread.
 * Their share of a network's time is small; the layers run on the pool. Shapes were checked by
 * reshape. */
#include "net.h"

#include <math.h>

bool net_window_out(size_t in, size_t k, size_t s, size_t p, size_t d, size_t *out) {
    /* floor((in + 2p - d(k-1) - 1) / s) + 1, in steps that cannot overflow. */
    if (p > (SIZE_MAX - in) / 2 || (k > 1 && d > (SIZE_MAX - 1) / (k - 1))) {
        return false;
    }
    const size_t padded = in + 2 * p, reach = d * (k - 1) + 1;
    if (reach > padded) {
        return false;
    }
    *out = (padded - reach) / s + 1;
    return true;
}

static void pool2d(const net_node *n, size_t batch, const float *x, float *y, bool max) {
    const size_t c = n->shape[1], ho = n->shape[2], wo = n->shape[3];
    const size_t h = n->in_h, w = n->in_w;
    const size_t kh = n->kernel[0], kw = n->kernel[1], sh = n->stride[0], sw = n->stride[1];
    const size_t ph = n->padding[0], pw = n->padding[1];
    const size_t dh = n->dilation[0], dw = n->dilation[1];
    for (size_t plane = 0; plane < batch * c; ++plane) {
        const float *xp = x + plane * h * w;
        float *yp = y + plane * ho * wo;
        for (size_t oy = 0; oy < ho; ++oy) {
            for (size_t ox = 0; ox < wo; ++ox) {
                float best = -INFINITY;
                double sum = 0.0;
                size_t inside = 0;
                for (size_t i = 0; i < kh; ++i) {
                    /* Row in the padded input; outside the input it is padding. */
                    const size_t ry = oy * sh + i * dh;
                    if (ry < ph || ry - ph >= h) {
                        continue;
                    }
                    const float *row = xp + (ry - ph) * w;
                    for (size_t j = 0; j < kw; ++j) {
                        const size_t rx = ox * sw + j * dw;
                        if (rx < pw || rx - pw >= w) {
                            continue;
                        }
                        const float v = row[rx - pw];
                        /* NaN wins, as in PyTorch's max pooling. */
                        if (v > best || isnan(v)) {
                            best = isnan(best) ? best : v;
                        }
                        sum += v;
                        ++inside;
                    }
                }
                if (max) {
                    yp[oy * wo + ox] = best;
                } else {
                    const size_t divisor = n->count_include_pad ? kh * kw : inside;
                    yp[oy * wo + ox] = (float)(sum / (double)(divisor ? divisor : 1));
                }
            }
        }
    }
}

void net_run_op(const net_node *n, size_t batch, const float *const *in, float *out) {
    const float *x = in[0];
    switch (n->op) {
    case OP_RELU:
        for (size_t i = 0; i < n->count; ++i) {
            out[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN stays NaN */
        }
        break;
    case OP_RELU6:
        for (size_t i = 0; i < n->count; ++i) {
            const float v = x[i] < 0.0f ? 0.0f : x[i];
            out[i] = v > 6.0f ? 6.0f : v;
        }
        break;
    case OP_ADD:
        for (size_t i = 0; i < n->count; ++i) {
            out[i] = x[i] + in[1][i];
        }
        break;
    case OP_BATCHNORM2D: {
        const size_t c = n->shape[1], plane = n->shape[2] * n->shape[3];
        for (size_t s = 0; s < batch; ++s) {
            for (size_t ch = 0; ch < c; ++ch) {
                const float *xp = x + (s * c + ch) * plane;
                float *yp = out + (s * c + ch) * plane;
                for (size_t i = 0; i < plane; ++i) {
                    yp[i] = xp[i] * n->bn_scale[ch] + n->bn_shift[ch];
                }
            }
        }
        break;
    }
    case OP_MAX_POOL2D: pool2d(n, batch, x, out, true); break;
    case OP_AVG_POOL2D: pool2d(n, batch, x, out, false); break;
    case OP_GLOBAL_AVG_POOL2D: {
        const size_t planes = batch * n->shape[1], plane = n->in_h * n->in_w;
        for (size_t p = 0; p < planes; ++p) {
            double sum = 0.0;
            for (size_t i = 0; i < plane; ++i) {
                sum += x[p * plane + i];
            }
            out[p] = (float)(sum / (double)plane);
        }
        break;
    }
    case OP_CAT: {
        /* Per sample, the inputs' channel blocks one after the other. */
        const size_t per_sample = n->count / batch;
        for (size_t s = 0; s < batch; ++s) {
            float *dst = out + s * per_sample;
            for (size_t j = 0; j < n->num_inputs; ++j) {
                const size_t len = n->input_len[j];
                const float *src = in[j] + s * len;
                for (size_t i = 0; i < len; ++i) {
                    dst[i] = src[i];
                }
                dst += len;
            }
        }
        break;
    }
    default: break; /* flatten is a view; the layers run through their handles */
    }
}
