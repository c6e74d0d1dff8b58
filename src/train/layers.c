/* ReLU, pooling and the static linear layer. */
#include "train_internal.h"

#include "attention.h"

#include <cblas.h>
#include <limits.h>
#include <string.h>

/* ---- ReLU ---------------------------------------------------------------------------------- */

static dynconv_status check_count(const char *fn, int64_t count, size_t *total) {
    static const char *const names[] = {"count"};
    return dct_check_sizes(fn, names, &count, 1, total);
}

dynconv_status dct_relu_forward(int64_t count, const float *x, float *y) {
    static const char fn[] = "dct_relu_forward";
    size_t total;
    DCT_TRY(check_count(fn, count, &total));
    if (x == NULL || y == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn, x == NULL ? "x" : "y");
    }
    const size_t bytes = total * sizeof(float);
    if (x != y && dc_ranges_overlap(x, bytes, y, bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: y must be x itself (in place) or not overlap it", fn);
    }
    for (size_t i = 0; i < total; ++i) {
        /* Written so that NaN passes through, as torch.relu does. */
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
    }
    return DYNCONV_OK;
}

dynconv_status dct_relu_backward(int64_t count, const float *y, const float *dy, float *dx) {
    static const char fn[] = "dct_relu_backward";
    size_t total;
    DCT_TRY(check_count(fn, count, &total));
    if (y == NULL || dy == NULL || dx == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        y == NULL ? "y" : dy == NULL ? "dy" : "dx");
    }
    const size_t bytes = total * sizeof(float);
    if ((dx != dy && dc_ranges_overlap(dx, bytes, dy, bytes)) || dc_ranges_overlap(dx, bytes, y, bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: dx must be dy itself (in place) or not overlap it, and must not "
                        "overlap y",
                        fn);
    }
    for (size_t i = 0; i < total; ++i) {
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    }
    return DYNCONV_OK;
}

/* ---- Global average pooling ------------------------------------------------------------------ */

static dynconv_status check_nchw(const char *fn, int64_t batch, int64_t channels, int64_t height,
                                 int64_t width, size_t *total) {
    static const char *const names[] = {"batch", "channels", "height", "width"};
    const int64_t sizes[] = {batch, channels, height, width};
    return dct_check_sizes(fn, names, sizes, 4, total);
}

dynconv_status dct_global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height,
                                           int64_t width, const float *x, float *y) {
    static const char fn[] = "dct_global_avg_pool_forward";
    size_t total;
    DCT_TRY(check_nchw(fn, batch, channels, height, width, &total));
    if (x == NULL || y == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn, x == NULL ? "x" : "y");
    }
    const size_t plane = (size_t)height * (size_t)width, rows = total / plane;
    if (dc_ranges_overlap(x, total * sizeof(float), y, rows * sizeof(float))) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: y must not overlap x", fn);
    }
    /* The dynamic layers' own pooling (the attention layer's). */
    dc_global_avg_pool(x, rows, 1, plane, y);
    return DYNCONV_OK;
}

dynconv_status dct_global_avg_pool_backward(int64_t batch, int64_t channels, int64_t height,
                                            int64_t width, const float *dy, float *dx) {
    static const char fn[] = "dct_global_avg_pool_backward";
    size_t total;
    DCT_TRY(check_nchw(fn, batch, channels, height, width, &total));
    if (dy == NULL || dx == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        dy == NULL ? "dy" : "dx");
    }
    const size_t plane = (size_t)height * (size_t)width, rows = total / plane;
    if (dc_ranges_overlap(dx, total * sizeof(float), dy, rows * sizeof(float))) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: dx must not overlap dy", fn);
    }
    /* The attention layer's adjoint adds into dx; this one overwrites it. */
    memset(dx, 0, total * sizeof(float));
    dc_global_avg_pool_backward(dy, rows, 1, plane, dx);
    return DYNCONV_OK;
}

/* ---- Max pooling ----------------------------------------------------------------------------- */

dynconv_status dct_maxpool2d_output_size(int64_t height, int64_t width, int64_t kernel,
                                         int64_t stride, int64_t *out_h, int64_t *out_w) {
    static const char fn[] = "dct_maxpool2d_output_size";
    if (out_h == NULL || out_w == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        out_h == NULL ? "out_h" : "out_w");
    }
    static const char *const names[] = {"height", "width", "kernel", "stride"};
    const int64_t sizes[] = {height, width, kernel, stride};
    for (size_t i = 0; i < 4; ++i) {
        if (sizes[i] <= 0) {
            return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be > 0, got %lld", fn,
                            names[i], (long long)sizes[i]);
        }
    }
    if (kernel > height || kernel > width) {
        return dct_fail(DYNCONV_ERROR_INVALID_SHAPE,
                        "%s: kernel %lld is larger than the input (%lld x %lld)", fn,
                        (long long)kernel, (long long)height, (long long)width);
    }
    *out_h = (height - kernel) / stride + 1;
    *out_w = (width - kernel) / stride + 1;
    return DYNCONV_OK;
}

typedef struct pool_dims {
    size_t planes, height, width, out_h, out_w, kernel, stride, in_total, out_total;
} pool_dims;

static dynconv_status check_pool(const char *fn, int64_t batch, int64_t channels, int64_t height,
                                 int64_t width, int64_t kernel, int64_t stride, pool_dims *d) {
    size_t total;
    DCT_TRY(check_nchw(fn, batch, channels, height, width, &total));
    int64_t oh = 0, ow = 0;
    dynconv_status st = dct_maxpool2d_output_size(height, width, kernel, stride, &oh, &ow);
    if (st != DYNCONV_OK) {
        /* Re-issue the message under the caller's name. */
        return dct_fail(st, "%s: kernel %lld / stride %lld invalid for %lld x %lld input", fn,
                        (long long)kernel, (long long)stride, (long long)height,
                        (long long)width);
    }
    d->planes = (size_t)batch * (size_t)channels;
    d->height = (size_t)height;
    d->width = (size_t)width;
    d->out_h = (size_t)oh;
    d->out_w = (size_t)ow;
    d->kernel = (size_t)kernel;
    d->stride = (size_t)stride;
    d->in_total = total;
    /* No larger than the input count, so the product cannot overflow; but argmax holds 8-byte
     * indices, whose byte count must be checked separately. */
    d->out_total = d->planes * d->out_h * d->out_w;
    if (d->out_total > (size_t)PTRDIFF_MAX / sizeof(int64_t)) {
        return dct_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: argmax of %zu indices overflows", fn,
                        d->out_total);
    }
    return DYNCONV_OK;
}

dynconv_status dct_maxpool2d_forward(int64_t batch, int64_t channels, int64_t height,
                                     int64_t width, int64_t kernel, int64_t stride,
                                     const float *x, float *y, int64_t *argmax) {
    static const char fn[] = "dct_maxpool2d_forward";
    pool_dims d;
    DCT_TRY(check_pool(fn, batch, channels, height, width, kernel, stride, &d));
    if (x == NULL || y == NULL || argmax == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        x == NULL ? "x" : y == NULL ? "y" : "argmax");
    }
    const size_t in_bytes = d.in_total * sizeof(float), out_bytes = d.out_total * sizeof(float);
    const size_t idx_bytes = d.out_total * sizeof(int64_t);
    if (dc_ranges_overlap(x, in_bytes, y, out_bytes) || dc_ranges_overlap(x, in_bytes, argmax, idx_bytes) ||
        dc_ranges_overlap(y, out_bytes, argmax, idx_bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: x, y and argmax must not overlap",
                        fn);
    }
    const size_t plane = d.height * d.width, out_plane = d.out_h * d.out_w;
    for (size_t p = 0; p < d.planes; ++p) {
        const float *src = x + p * plane;
        for (size_t oh = 0; oh < d.out_h; ++oh) {
            for (size_t ow = 0; ow < d.out_w; ++ow) {
                size_t best = oh * d.stride * d.width + ow * d.stride;
                float best_v = src[best];
                for (size_t kh = 0; kh < d.kernel; ++kh) {
                    for (size_t kw = 0; kw < d.kernel; ++kw) {
                        const size_t at = (oh * d.stride + kh) * d.width + ow * d.stride + kw;
                        const float v = src[at];
                        /* Strictly greater keeps the first maximum; a NaN, once found, stays. */
                        if (best_v == best_v && (v > best_v || v != v)) {
                            best = at;
                            best_v = v;
                        }
                    }
                }
                y[p * out_plane + oh * d.out_w + ow] = best_v;
                argmax[p * out_plane + oh * d.out_w + ow] = (int64_t)best;
            }
        }
    }
    return DYNCONV_OK;
}

dynconv_status dct_maxpool2d_backward(int64_t batch, int64_t channels, int64_t height,
                                      int64_t width, int64_t kernel, int64_t stride,
                                      const float *dy, const int64_t *argmax, float *dx) {
    static const char fn[] = "dct_maxpool2d_backward";
    pool_dims d;
    DCT_TRY(check_pool(fn, batch, channels, height, width, kernel, stride, &d));
    if (dy == NULL || argmax == NULL || dx == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        dy == NULL ? "dy" : argmax == NULL ? "argmax" : "dx");
    }
    const size_t in_bytes = d.in_total * sizeof(float), out_bytes = d.out_total * sizeof(float);
    if (dc_ranges_overlap(dx, in_bytes, dy, out_bytes) ||
        dc_ranges_overlap(dx, in_bytes, argmax, d.out_total * sizeof(int64_t))) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: dx must not overlap dy or argmax",
                        fn);
    }
    const size_t plane = d.height * d.width, out_plane = d.out_h * d.out_w;
    for (size_t i = 0; i < d.out_total; ++i) {
        if (argmax[i] < 0 || (uint64_t)argmax[i] >= plane) {
            return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                            "%s: argmax[%zu] = %lld lies outside the %zu-element plane", fn, i,
                            (long long)argmax[i], plane);
        }
    }
    memset(dx, 0, in_bytes);
    for (size_t p = 0; p < d.planes; ++p) {
        for (size_t j = 0; j < out_plane; ++j) {
            dx[p * plane + (size_t)argmax[p * out_plane + j]] += dy[p * out_plane + j];
        }
    }
    return DYNCONV_OK;
}

/* ---- Linear ---------------------------------------------------------------------------------- */

/* Sizes, and the BLAS int range (OpenBLAS takes int extents). */
static dynconv_status check_linear(const char *fn, int64_t batch, int64_t in_features,
                                   int64_t out_features) {
    static const char *const names[] = {"batch", "in_features", "out_features"};
    const int64_t sizes[] = {batch, in_features, out_features};
    size_t unused;
    /* Every pairwise product (x, weight, y) is at most the product of all three. */
    DCT_TRY(dct_check_sizes(fn, names, sizes, 3, &unused));
    for (size_t i = 0; i < 3; ++i) {
        if (sizes[i] > INT_MAX) {
            return dct_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                            "%s: %s = %lld exceeds the BLAS index range", fn, names[i],
                            (long long)sizes[i]);
        }
    }
    return DYNCONV_OK;
}

dynconv_status dct_linear_forward(int64_t batch, int64_t in_features, int64_t out_features,
                                  const float *x, const float *weight, const float *bias,
                                  float *y) {
    static const char fn[] = "dct_linear_forward";
    DCT_TRY(check_linear(fn, batch, in_features, out_features));
    if (x == NULL || weight == NULL || y == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        x == NULL ? "x" : weight == NULL ? "weight" : "y");
    }
    const size_t n = (size_t)batch, din = (size_t)in_features, dout = (size_t)out_features;
    const size_t y_bytes = n * dout * sizeof(float);
    if (dc_ranges_overlap(y, y_bytes, x, n * din * sizeof(float)) ||
        dc_ranges_overlap(y, y_bytes, weight, dout * din * sizeof(float)) ||
        dc_ranges_overlap(y, y_bytes, bias, dout * sizeof(float))) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: y must not overlap x, weight or bias", fn);
    }
    float beta = 0.0f;
    if (bias != NULL) {
        for (size_t i = 0; i < n; ++i) {
            memcpy(y + i * dout, bias, dout * sizeof(float));
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)dout, (int)din, 1.0f, x,
                (int)din, weight, (int)din, beta, y, (int)dout);
    return DYNCONV_OK;
}

dynconv_status dct_linear_backward(int64_t batch, int64_t in_features, int64_t out_features,
                                   const float *x, const float *weight, const float *dy,
                                   float *dx, float *dweight, float *dbias, uint32_t flags) {
    static const char fn[] = "dct_linear_backward";
    DCT_TRY(dct_check_backward_flags(fn, flags));
    DCT_TRY(check_linear(fn, batch, in_features, out_features));
    if (x == NULL || weight == NULL || dy == NULL || dweight == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        x == NULL ? "x" : weight == NULL ? "weight" : dy == NULL ? "dy"
                                                                                  : "dweight");
    }
    const size_t n = (size_t)batch, din = (size_t)in_features, dout = (size_t)out_features;
    const size_t x_bytes = n * din * sizeof(float), w_bytes = dout * din * sizeof(float);
    const size_t dy_bytes = n * dout * sizeof(float), b_bytes = dout * sizeof(float);
    const struct {
        const void *p;
        size_t bytes;
    } in[] = {{x, x_bytes}, {weight, w_bytes}, {dy, dy_bytes}},
      out[] = {{dx, x_bytes}, {dweight, w_bytes}, {dbias, b_bytes}};
    for (size_t o = 0; o < 3; ++o) {
        for (size_t i = 0; i < 3; ++i) {
            if (dc_ranges_overlap(out[o].p, out[o].bytes, in[i].p, in[i].bytes) ||
                (i > o && dc_ranges_overlap(out[o].p, out[o].bytes, out[i].p, out[i].bytes))) {
                return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                                "%s: dx, dweight and dbias must not overlap each other or the "
                                "inputs",
                                fn);
            }
        }
    }
    /* GEMM's beta: 0 overwrites, 1 adds into the caller's gradients. */
    const float beta = (flags & DYNCONV_BACKWARD_ACCUMULATE) != 0 ? 1.0f : 0.0f;
    if (dx != NULL) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)din, (int)dout, 1.0f,
                    dy, (int)dout, weight, (int)din, beta, dx, (int)din);
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)dout, (int)din, (int)n, 1.0f, dy,
                (int)dout, x, (int)din, beta, dweight, (int)din);
    if (dbias != NULL) {
        if (beta == 0.0f) {
            memset(dbias, 0, dout * sizeof(float));
        }
        for (size_t i = 0; i < n; ++i) {
            for (size_t j = 0; j < dout; ++j) {
                dbias[j] += dy[i * dout + j];
            }
        }
    }
    return DYNCONV_OK;
}
