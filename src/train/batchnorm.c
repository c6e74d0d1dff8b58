/* BatchNorm2d: batch statistics per channel over N * H * W values. Sums are accumulated in
 * double: a channel holds up to N * H * W values and float sums of that many terms lose digits
 * that the backward formula (a difference of sums) would then amplify. */
#include "train_internal.h"

#include <math.h>

static dynconv_status check_bn(const char *fn, const dct_batchnorm2d *bn, int64_t batch,
                               int64_t height, int64_t width, size_t *count, size_t *plane) {
    if (bn == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: bn is NULL", fn);
    }
    if (bn->gamma == NULL || bn->beta == NULL || bn->running_mean == NULL ||
        bn->running_var == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: bn->%s is NULL", fn,
                        bn->gamma == NULL          ? "gamma"
                        : bn->beta == NULL         ? "beta"
                        : bn->running_mean == NULL ? "running_mean"
                                                   : "running_var");
    }
    if (!(bn->eps > 0.0f) || isinf(bn->eps)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: eps must be finite and > 0, got %g",
                        fn, (double)bn->eps);
    }
    if (!(bn->momentum >= 0.0f && bn->momentum <= 1.0f)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: momentum must be in [0, 1], got %g",
                        fn, (double)bn->momentum);
    }
    static const char *const names[] = {"batch", "channels", "height", "width"};
    const int64_t sizes[] = {batch, bn->channels, height, width};
    DCT_TRY(dct_check_sizes(fn, names, sizes, 4, count));
    *plane = (size_t)height * (size_t)width;
    return DYNCONV_OK;
}

dynconv_status dct_batchnorm2d_forward_train(const dct_batchnorm2d *bn, int64_t batch,
                                             int64_t height, int64_t width, const float *x,
                                             float *y, float *save_mean, float *save_invstd) {
    static const char fn[] = "dct_batchnorm2d_forward_train";
    size_t count, plane;
    DCT_TRY(check_bn(fn, bn, batch, height, width, &count, &plane));
    if (x == NULL || y == NULL || save_mean == NULL || save_invstd == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        x == NULL ? "x" : y == NULL ? "y" : save_mean == NULL ? "save_mean"
                                                                              : "save_invstd");
    }
    const size_t n = (size_t)batch, channels = (size_t)bn->channels, m = n * plane;
    if (m < 2) {
        return dct_fail(DYNCONV_ERROR_INVALID_SHAPE,
                        "%s: batch * height * width must be > 1 to estimate a variance", fn);
    }
    const size_t bytes = count * sizeof(float), cbytes = channels * sizeof(float);
    if (dc_ranges_overlap(x, bytes, y, bytes) || dc_ranges_overlap(y, bytes, save_mean, cbytes) ||
        dc_ranges_overlap(y, bytes, save_invstd, cbytes) ||
        dc_ranges_overlap(save_mean, cbytes, save_invstd, cbytes) ||
        dc_ranges_overlap(x, bytes, save_mean, cbytes) || dc_ranges_overlap(x, bytes, save_invstd, cbytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: x, y, save_mean and save_invstd must not overlap", fn);
    }

    for (size_t c = 0; c < channels; ++c) {
        double sum = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                sum += p[j];
            }
        }
        const double mean = sum / (double)m;
        double sq = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                const double d = p[j] - mean;
                sq += d * d;
            }
        }
        const double var = sq / (double)m;
        const double invstd = 1.0 / sqrt(var + (double)bn->eps);
        const float scale = (float)((double)bn->gamma[c] * invstd);
        const float shift = (float)((double)bn->beta[c] - mean * (double)bn->gamma[c] * invstd);
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            float *q = y + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                q[j] = p[j] * scale + shift;
            }
        }
        save_mean[c] = (float)mean;
        save_invstd[c] = (float)invstd;
        const double mom = bn->momentum;
        bn->running_mean[c] = (float)((1.0 - mom) * bn->running_mean[c] + mom * mean);
        bn->running_var[c] =
            (float)((1.0 - mom) * bn->running_var[c] + mom * var * (double)m / (double)(m - 1));
    }
    return DYNCONV_OK;
}

dynconv_status dct_batchnorm2d_forward_eval(const dct_batchnorm2d *bn, int64_t batch,
                                            int64_t height, int64_t width, const float *x,
                                            float *y) {
    static const char fn[] = "dct_batchnorm2d_forward_eval";
    size_t count, plane;
    DCT_TRY(check_bn(fn, bn, batch, height, width, &count, &plane));
    if (x == NULL || y == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn, x == NULL ? "x" : "y");
    }
    const size_t bytes = count * sizeof(float);
    if (x != y && dc_ranges_overlap(x, bytes, y, bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: y must be x itself (in place) or not overlap it", fn);
    }
    const size_t n = (size_t)batch, channels = (size_t)bn->channels;
    for (size_t c = 0; c < channels; ++c) {
        const double invstd = 1.0 / sqrt((double)bn->running_var[c] + (double)bn->eps);
        const float scale = (float)((double)bn->gamma[c] * invstd);
        const float shift =
            (float)((double)bn->beta[c] - (double)bn->running_mean[c] * (double)bn->gamma[c] * invstd);
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            float *q = y + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                q[j] = p[j] * scale + shift;
            }
        }
    }
    return DYNCONV_OK;
}

dynconv_status dct_batchnorm2d_backward(const dct_batchnorm2d *bn, int64_t batch, int64_t height,
                                        int64_t width, const float *x, const float *dy,
                                        const float *save_mean, const float *save_invstd,
                                        float *dx, float *dgamma, float *dbeta, uint32_t flags) {
    static const char fn[] = "dct_batchnorm2d_backward";
    DCT_TRY(dct_check_backward_flags(fn, flags));
    const bool accumulate = (flags & DYNCONV_BACKWARD_ACCUMULATE) != 0;
    size_t count, plane;
    DCT_TRY(check_bn(fn, bn, batch, height, width, &count, &plane));
    if (x == NULL || dy == NULL || save_mean == NULL || save_invstd == NULL || dgamma == NULL ||
        dbeta == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        x == NULL            ? "x"
                        : dy == NULL         ? "dy"
                        : save_mean == NULL  ? "save_mean"
                        : save_invstd == NULL ? "save_invstd"
                        : dgamma == NULL     ? "dgamma"
                                             : "dbeta");
    }
    const size_t n = (size_t)batch, channels = (size_t)bn->channels, m = n * plane;
    const size_t bytes = count * sizeof(float), cbytes = channels * sizeof(float);
    if (dc_ranges_overlap(dx, bytes, x, bytes) || dc_ranges_overlap(dx, bytes, dy, bytes) ||
        dc_ranges_overlap(dx, bytes, dgamma, cbytes) || dc_ranges_overlap(dx, bytes, dbeta, cbytes) ||
        dc_ranges_overlap(dgamma, cbytes, dbeta, cbytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: dx, dgamma and dbeta must not overlap each other, x or dy", fn);
    }

    for (size_t c = 0; c < channels; ++c) {
        const double mean = save_mean[c], invstd = save_invstd[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            const float *g = dy + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                sum_dy += g[j];
                sum_dy_xhat += g[j] * ((p[j] - mean) * invstd);
            }
        }
        dgamma[c] = (accumulate ? dgamma[c] : 0.0f) + (float)sum_dy_xhat;
        dbeta[c] = (accumulate ? dbeta[c] : 0.0f) + (float)sum_dy;
        if (dx == NULL) {
            continue;
        }
        /* dx = k * (dy - mean(dy) - xhat * mean(dy * xhat)), k = gamma * invstd. */
        const double k = (double)bn->gamma[c] * invstd;
        const double mean_dy = sum_dy / (double)m, mean_dy_xhat = sum_dy_xhat / (double)m;
        for (size_t i = 0; i < n; ++i) {
            const float *p = x + (i * channels + c) * plane;
            const float *g = dy + (i * channels + c) * plane;
            float *q = dx + (i * channels + c) * plane;
            for (size_t j = 0; j < plane; ++j) {
                const double xhat = (p[j] - mean) * invstd;
                const float v = (float)(k * (g[j] - mean_dy - xhat * mean_dy_xhat));
                q[j] = accumulate ? q[j] + v : v;
            }
        }
    }
    return DYNCONV_OK;
}
