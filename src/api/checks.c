/* Argument checks shared by every entry point of the API layer (conv2d, linear, backward,
 * training): each size is converted to size_t once, here, with its error message. */
#include "internal.h"

#include "tensor.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

dynconv_status dc_check_workspace(const char *fn, const void *workspace, size_t size,
                                  size_t needed) {
    if (size < needed) {
        return dc_fail(DYNCONV_ERROR_INSUFFICIENT_WORKSPACE,
                       "%s: workspace of %zu bytes is smaller than the %zu bytes needed", fn, size,
                       needed);
    }
    if ((uintptr_t)workspace % DYNCONV_WORKSPACE_ALIGNMENT != 0) {
        return dc_fail(DYNCONV_ERROR_MISALIGNED_WORKSPACE,
                       "%s: workspace is not aligned to %d bytes", fn,
                       DYNCONV_WORKSPACE_ALIGNMENT);
    }
    return DYNCONV_OK;
}

dynconv_status dc_check_disjoint(const char *fn, const dc_buffer *written, size_t n_written,
                                 const dc_buffer *read, size_t n_read) {
    for (size_t i = 0; i < n_written; ++i) {
        const dc_buffer *w = &written[i];
        if (w->ptr == NULL) {
            continue;
        }
        for (size_t j = i + 1; j < n_written; ++j) {
            if (written[j].ptr != NULL &&
                dc_ranges_overlap(w->ptr, w->bytes, written[j].ptr, written[j].bytes)) {
                return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s overlaps %s", fn, w->name,
                               written[j].name);
            }
        }
        for (size_t j = 0; j < n_read; ++j) {
            if (read[j].ptr != NULL && dc_ranges_overlap(w->ptr, w->bytes, read[j].ptr,
                                                          read[j].bytes)) {
                return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s overlaps %s", fn, w->name,
                               read[j].name);
            }
        }
    }
    return DYNCONV_OK;
}

dynconv_status dc_check_temperature(const char *fn, float temperature) {
    if (!(temperature > 0.0f) || isinf(temperature)) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: temperature must be a finite number > 0, got %g", fn,
                       (double)temperature);
    }
    return DYNCONV_OK;
}

/* Each size is converted once, here, so the rest of the library works in size_t. */
dynconv_status dc_check_positive(const char *fn, const char *name, int64_t v, size_t *out) {
    if (v <= 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be > 0, got %lld", fn, name,
                       (long long)v);
    }
    if ((uint64_t)v > SIZE_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: %s = %lld does not fit in size_t", fn,
                       name, (long long)v);
    }
    *out = (size_t)v;
    return DYNCONV_OK;
}

static dynconv_status non_negative(const char *fn, const char *name, int64_t v, size_t *out) {
    if (v < 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be >= 0, got %lld", fn, name,
                       (long long)v);
    }
    if ((uint64_t)v > SIZE_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: %s = %lld does not fit in size_t", fn,
                       name, (long long)v);
    }
    *out = (size_t)v;
    return DYNCONV_OK;
}

/* OpenBLAS takes int dimensions: every GEMM extent and leading dimension must fit. */
dynconv_status dc_check_blas_fits(const char *fn, const char *what, size_t v) {
    if (v > (size_t)INT_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: %s = %zu exceeds the BLAS index range (%d)", fn, what, v, INT_MAX);
    }
    return DYNCONV_OK;
}


dynconv_status dc_read_geometry(const char *fn, const dynconv_conv2d_geometry *g,
                                dynconv_conv2d *l) {
    dc_conv_shape *s = &l->core.shape;
    TRY(dc_check_positive(fn, "in_channels", g->in_channels, &s->in_channels));
    TRY(dc_check_positive(fn, "out_channels", g->out_channels, &s->out_channels));
    TRY(dc_check_positive(fn, "kernel_h", g->kernel_h, &s->kernel_h));
    TRY(dc_check_positive(fn, "kernel_w", g->kernel_w, &s->kernel_w));
    TRY(dc_check_positive(fn, "stride_h", g->stride_h, &s->stride_h));
    TRY(dc_check_positive(fn, "stride_w", g->stride_w, &s->stride_w));
    TRY(non_negative(fn, "pad_h", g->pad_h, &s->pad_h));
    TRY(non_negative(fn, "pad_w", g->pad_w, &s->pad_w));
    TRY(dc_check_positive(fn, "dilation_h", g->dilation_h, &s->dilation_h));
    TRY(dc_check_positive(fn, "dilation_w", g->dilation_w, &s->dilation_w));
    TRY(dc_check_positive(fn, "groups", g->groups, &s->groups));
    TRY(dc_check_positive(fn, "num_kernels", g->num_kernels, &l->core.kernels));
    TRY(dc_check_positive(fn, "hidden", g->hidden, &l->core.hidden));
    if (s->in_channels % s->groups != 0 || s->out_channels % s->groups != 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: groups (%zu) must divide in_channels (%zu) and out_channels (%zu)",
                       fn, s->groups, s->in_channels, s->out_channels);
    }

    /* Everything reshape and forward will multiply is checked once here. */
    size_t depth, span_h, span_w, twice_pad;
    const size_t kdims[3] = {s->in_channels / s->groups, s->kernel_h, s->kernel_w};
    if (!dc_product(kdims, 3, &depth) || !dc_mul_size(depth, s->out_channels, &l->core.kernel_len) ||
        !dc_mul_size(s->dilation_h, s->kernel_h - 1, &span_h) ||
        !dc_mul_size(s->dilation_w, s->kernel_w - 1, &span_w) ||
        !dc_mul_size(s->pad_h > s->pad_w ? s->pad_h : s->pad_w, 2, &twice_pad)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: kernel size (out_channels * in_channels/groups * kernel_h * kernel_w, "
                       "dilated extent or padding) overflows",
                       fn);
    }
    TRY(dc_check_blas_fits(fn, "in_channels/groups * kernel_h * kernel_w", depth));
    TRY(dc_check_blas_fits(fn, "out_channels * in_channels/groups * kernel_h * kernel_w", l->core.kernel_len));
    TRY(dc_check_blas_fits(fn, "in_channels", s->in_channels));
    TRY(dc_check_blas_fits(fn, "hidden", l->core.hidden));
    TRY(dc_check_blas_fits(fn, "num_kernels", l->core.kernels));
    return DYNCONV_OK;
}

dynconv_status dc_check_create_args(const char *fn, const dynconv_conv2d_weights *weights,
                                    uint32_t flags, float temperature) {
    if (weights->weight == NULL || weights->fc1_weight == NULL || weights->fc2_weight == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: weights->%s is NULL (required)", fn,
                       weights->weight == NULL       ? "weight"
                       : weights->fc1_weight == NULL ? "fc1_weight"
                                                     : "fc2_weight");
    }
    if ((flags & ~KNOWN_FLAGS) != 0) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)(flags & ~KNOWN_FLAGS));
    }
    return dc_check_temperature(fn, temperature);
}

