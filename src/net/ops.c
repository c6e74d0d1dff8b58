/* The ops a network runs itself (everything but the layers): plain loops, on the threads of
 * the network's pool like the layers (each thread a range of planes, elements or samples; every
 * value is computed the same way whatever the split), or in the calling thread alone when the
 * op is too small to be worth waking a worker. Shapes were checked by reshape. */
#include "net.h"

#include "plan.h"

#include "attention.h"

#include <cblas.h>

#include <math.h>
#include <string.h>

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

/* Planes [p0, p1) of an average pool (its sum in double). */
static void avg_pool2d(const net_node *n, const float *x, float *y, size_t p0, size_t p1) {
    const size_t ho = n->shape[2], wo = n->shape[3];
    const size_t h = n->in_h, w = n->in_w;
    const size_t kh = n->kernel[0], kw = n->kernel[1], sh = n->stride[0], sw = n->stride[1];
    const size_t ph = n->padding[0], pw = n->padding[1];
    const size_t dh = n->dilation[0], dw = n->dilation[1];
    /* count_include_pad: the whole window (in double: kh * kw may not fit size_t). */
    const double window = (double)kh * (double)kw;
    for (size_t plane = p0; plane < p1; ++plane) {
        const float *xp = x + plane * h * w;
        float *yp = y + plane * ho * wo;
        for (size_t oy = 0; oy < ho; ++oy) {
            size_t i0, i1;
            taps_inside(oy * sh, kh, dh, ph, h, &i0, &i1);
            for (size_t ox = 0; ox < wo; ++ox) {
                size_t j0, j1;
                taps_inside(ox * sw, kw, dw, pw, w, &j0, &j1);
                double sum = 0.0;
                for (size_t i = i0; i < i1; ++i) {
                    const float *row = xp + (oy * sh + i * dh - ph) * w;
                    for (size_t j = j0; j < j1; ++j) {
                        sum += row[ox * sw + j * dw - pw];
                    }
                }
                const double inside = (double)(i1 - i0) * (double)(j1 - j0);
                const double divisor = n->count_include_pad ? window : inside;
                yp[oy * wo + ox] = (float)(sum / (divisor > 0.0 ? divisor : 1.0));
            }
        }
    }
}

/* Output columns [*lo, *hi) whose tap at padded offset `off` lies inside [0, in) of the input
 * (ox * s + off - pad in range), as ranges, so that the inner loop has no test. */
static void columns_inside(size_t out, size_t in, size_t s, size_t pad, size_t off, size_t *lo,
                           size_t *hi) {
    size_t first = off >= pad ? 0 : (pad - off + s - 1) / s;
    size_t last = in + pad > off ? (in + pad - off + s - 1) / s : 0;
    last = last > out ? out : last;
    *lo = first > last ? last : first;
    *hi = last;
}

/* Planes [p0, p1) of a max pool, tap by tap over whole output rows: each output row starts at
 * -infinity (the padding's value) and takes the maximum with one tap of every window at a
 * time, a loop the compiler vectorises. The maximum is the same in any order; a NaN wins (as in
 * PyTorch), once there it stays (NaN > v and v > NaN are both false). */
static void max_rows(const net_node *n, const float *x, float *y, size_t p0, size_t p1) {
    const size_t ho = n->shape[2], wo = n->shape[3];
    const size_t h = n->in_h, w = n->in_w;
    const size_t kh = n->kernel[0], kw = n->kernel[1], sh = n->stride[0], sw = n->stride[1];
    const size_t ph = n->padding[0], pw = n->padding[1];
    const size_t dh = n->dilation[0], dw = n->dilation[1];
    for (size_t plane = p0; plane < p1; ++plane) {
        const float *xp = x + plane * h * w;
        for (size_t oy = 0; oy < ho; ++oy) {
            float *restrict yr = y + (plane * ho + oy) * wo;
            for (size_t ox = 0; ox < wo; ++ox) {
                yr[ox] = -INFINITY;
            }
            size_t i0, i1;
            taps_inside(oy * sh, kh, dh, ph, h, &i0, &i1);
            for (size_t i = i0; i < i1; ++i) {
                const float *row = xp + (oy * sh + i * dh - ph) * w;
                for (size_t j = 0; j < kw; ++j) {
                    size_t lo, hi;
                    columns_inside(wo, w, sw, pw, j * dw, &lo, &hi);
                    const float *restrict src = row + j * dw - pw;
                    for (size_t ox = lo; ox < hi; ++ox) {
                        const float v = src[ox * sw], b = yr[ox];
                        yr[ox] = (v > b || v != v) && b == b ? v : b;
                    }
                }
            }
        }
    }
}

typedef struct op_ctx {
    const net_node *n;
    size_t batch;
    const float *const *in;
    float *out;
} op_ctx;

/* The activation fused into an add (a ReLU behind it), on y[i0, i1). */
static void add_range(const net_node *n, const float *a, const float *b, float *y, size_t i0,
                      size_t i1) {
    if (n->fused & DYNCONV_NETWORK_FUSED_RELU) {
        for (size_t i = i0; i < i1; ++i) {
            const float v = a[i] + b[i];
            y[i] = v < 0.0f ? 0.0f : v; /* NaN stays NaN */
        }
    } else if (n->fused & DYNCONV_NETWORK_FUSED_RELU6) {
        for (size_t i = i0; i < i1; ++i) {
            const float v = a[i] + b[i], r = v < 0.0f ? 0.0f : v;
            y[i] = r > 6.0f ? 6.0f : r;
        }
    } else {
        for (size_t i = i0; i < i1; ++i) {
            y[i] = a[i] + b[i];
        }
    }
}

/* What thread `index` of `count` does of the op. */
static void op_task(void *p, size_t index, size_t count) {
    const op_ctx *c = p;
    const net_node *n = c->n;
    const float *x = c->in[0];
    float *out = c->out;
    size_t a, b;
    switch (n->op) {
    case OP_RELU:
        dc_exec_share(n->count, index, count, &a, &b);
        for (size_t i = a; i < b; ++i) {
            out[i] = x[i] < 0.0f ? 0.0f : x[i]; /* NaN stays NaN */
        }
        break;
    case OP_RELU6:
        dc_exec_share(n->count, index, count, &a, &b);
        for (size_t i = a; i < b; ++i) {
            const float v = x[i] < 0.0f ? 0.0f : x[i];
            out[i] = v > 6.0f ? 6.0f : v;
        }
        break;
    case OP_ADD:
        dc_exec_share(n->count, index, count, &a, &b);
        add_range(n, x, c->in[1], out, a, b);
        break;
    case OP_BATCHNORM2D: {
        const size_t ch_n = n->shape[1], plane = n->shape[2] * n->shape[3];
        dc_exec_share(c->batch * ch_n, index, count, &a, &b);
        for (size_t q = a; q < b; ++q) {
            const size_t ch = q % ch_n;
            const float *xp = x + q * plane;
            float *yp = out + q * plane;
            for (size_t i = 0; i < plane; ++i) {
                yp[i] = xp[i] * n->bn_scale[ch] + n->bn_shift[ch];
            }
        }
        break;
    }
    case OP_MAX_POOL2D:
        dc_exec_share(c->batch * n->shape[1], index, count, &a, &b);
        max_rows(n, x, out, a, b);
        break;
    case OP_AVG_POOL2D:
        dc_exec_share(c->batch * n->shape[1], index, count, &a, &b);
        avg_pool2d(n, x, out, a, b);
        break;
    case OP_GLOBAL_AVG_POOL2D: {
        const size_t plane = n->in_h * n->in_w;
        dc_exec_share(c->batch * n->shape[1], index, count, &a, &b);
        for (size_t q = a; q < b; ++q) {
            double sum = 0.0;
            for (size_t i = 0; i < plane; ++i) {
                sum += x[q * plane + i];
            }
            out[q] = (float)(sum / (double)plane);
        }
        break;
    }
    case OP_CAT: {
        /* Per sample, the inputs' channel blocks one after the other. */
        const size_t per_sample = n->count / c->batch;
        dc_exec_share(c->batch, index, count, &a, &b);
        for (size_t s = a; s < b; ++s) {
            float *dst = out + s * per_sample;
            for (size_t j = 0; j < n->num_inputs; ++j) {
                const size_t len = n->input_len[j];
                memcpy(dst, c->in[j] + s * len, len * sizeof(float));
                dst += len;
            }
        }
        break;
    }
    default: break; /* flatten is a view; the layers run through their handles */
    }
}

/* Below this many floats read and written an op runs in the calling thread alone (as the
 * layers do below about a million units of work: waking a worker costs more). */
#define NET_MIN_PARALLEL_FLOATS ((size_t)1 << 16)

void net_run_op(const dynconv_network *net, const net_node *n, const float *const *in,
                float *out) {
    const op_ctx c = {n, net->batch, in, out};
    const dynconv_threadpool *pool = net->pool;
    size_t team = net->threads_requested == 0 || net->threads_requested > pool->threads
                      ? pool->threads
                      : net->threads_requested;
    size_t floats = n->count;
    for (size_t j = 0; j < n->num_inputs; ++j) {
        floats += net_value_count(net, n->inputs[j]);
    }
    if (floats < NET_MIN_PARALLEL_FLOATS) {
        team = 1;
    }
    if (team <= 1) {
        op_task((void *)&c, 0, 1);
    } else {
        dc_pool_run(pool->pool, team, op_task, (void *)&c);
    }
}

/* Below this many multiply-adds a linear layer runs in the calling thread alone. */
#define NET_MIN_PARALLEL_MACS ((size_t)1 << 16)
/* Batches up to this size take the attention's small-batch product, which reads W once per
 * four samples where sgemm first copies all of W into its packed layout; larger ones sgemm.
 * MobileNetV2's 1280 -> 1000 classifier (5 MB of W) on the 2-core Zen 4, one thread: batch 1
 * 0.55 ms with sgemm, 0.27 with the small-batch product; batch 16 0.82 ms with sgemm, 1.0 to
 * 1.1 with the small-batch product (it reads W four times). */
#define NET_FEW_SAMPLES 4

typedef struct linear_ctx {
    const net_node *n;
    size_t batch;
    const float *x;
    float *out;
} linear_ctx;

/* One thread's outputs: groups of four (the unit of dc_fc_forward's loop), or of sixteen
 * columns of one sgemm over the batch (the bias first, the product added onto it: beta = 1,
 * one pass over y). */
static void linear_task(void *p, size_t index, size_t count) {
    const linear_ctx *c = p;
    const size_t batch = c->batch, in = c->n->c_in, outs = c->n->c_out;
    if (batch <= NET_FEW_SAMPLES) {
        size_t a, b;
        dc_exec_share((outs + 3) / 4, index, count, &a, &b);
        const size_t j1 = 4 * b < outs ? 4 * b : outs;
        if (4 * a < j1) {
            dc_fc_forward(batch, in, outs, c->x, c->n->weight, c->n->bias, 4 * a, j1, c->out);
        }
        return;
    }
    size_t a, b;
    dc_exec_share((outs + 15) / 16, index, count, &a, &b);
    const size_t j0 = 16 * a, j1 = 16 * b < outs ? 16 * b : outs;
    if (j0 >= j1) {
        return;
    }
    for (size_t s = 0; s < batch; ++s) {
        float *row = c->out + s * outs;
        for (size_t o = j0; o < j1; ++o) {
            row[o] = c->n->bias != NULL ? c->n->bias[o] : 0.0f;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)batch, (blasint)(j1 - j0),
                (blasint)in, 1.0f, c->x, (blasint)in, c->n->weight + j0 * in, (blasint)in, 1.0f,
                c->out + j0, (blasint)outs);
}

void net_run_linear(const dynconv_network *net, const net_node *n, const float *x, float *out) {
    const linear_ctx c = {n, net->batch, x, out};
    const dynconv_threadpool *pool = net->pool;
    size_t team = net->threads_requested == 0 || net->threads_requested > pool->threads
                      ? pool->threads
                      : net->threads_requested;
    if (n->c_in * n->c_out < NET_MIN_PARALLEL_MACS / net->batch) { /* c_in * c_out: W's size */
        team = 1;
    }
    if (team <= 1) {
        linear_task((void *)&c, 0, 1);
    } else {
        dc_pool_run(pool->pool, team, linear_task, (void *)&c);
    }
}
