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

/* The taps [*first, *last) of a window starting at padded position `start` (stride d, k taps)
 * that land inside the input [pad, pad + in): only those are read, so that a huge kernel over a
 * small input (valid once the padding makes room for it) costs what the input does. */
static void taps_inside(size_t start, size_t k, size_t d, size_t pad, size_t in, size_t *first,
                        size_t *last) {
    size_t lo = 0;
    if (start < pad) {
        lo = (pad - start + d - 1) / d;
    }
    size_t hi = 0;
    if (pad + in - 1 >= start) {
        hi = (pad + in - 1 - start) / d + 1;
    }
    *first = lo < k ? lo : k;
    *last = hi < k ? hi : k;
    if (*last < *first) {
        *last = *first;
    }
}

static void pool2d(const net_node *n, size_t batch, const float *x, float *y, bool max) {
    const size_t c = n->shape[1], ho = n->shape[2], wo = n->shape[3];
    const size_t h = n->in_h, w = n->in_w;
    const size_t kh = n->kernel[0], kw = n->kernel[1], sh = n->stride[0], sw = n->stride[1];
    const size_t ph = n->padding[0], pw = n->padding[1];
    const size_t dh = n->dilation[0], dw = n->dilation[1];
    /* count_include_pad: the whole window (in double: kh * kw may not fit size_t). */
    const double window = (double)kh * (double)kw;
    for (size_t plane = 0; plane < batch * c; ++plane) {
        const float *xp = x + plane * h * w;
        float *yp = y + plane * ho * wo;
        for (size_t oy = 0; oy < ho; ++oy) {
            size_t i0, i1;
            taps_inside(oy * sh, kh, dh, ph, h, &i0, &i1);
            for (size_t ox = 0; ox < wo; ++ox) {
                size_t j0, j1;
                taps_inside(ox * sw, kw, dw, pw, w, &j0, &j1);
                float best = -INFINITY; /* padding counts as -infinity */
                double sum = 0.0;
                for (size_t i = i0; i < i1; ++i) {
                    const float *row = xp + (oy * sh + i * dh - ph) * w;
                    for (size_t j = j0; j < j1; ++j) {
                        const float v = row[ox * sw + j * dw - pw];
                        /* A NaN wins, as in PyTorch's max pooling. */
                        if (v > best || isnan(v)) {
                            best = isnan(best) ? best : v;
                        }
                        sum += v;
                    }
                }
                if (max) {
                    yp[oy * wo + ox] = best;
                } else {
                    const double inside = (double)(i1 - i0) * (double)(j1 - j0);
                    const double divisor = n->count_include_pad ? window : inside;
                    yp[oy * wo + ox] = (float)(sum / (divisor > 0.0 ? divisor : 1.0));
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
