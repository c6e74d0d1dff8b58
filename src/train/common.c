/* Error messages, size checks, the seeded generator and initialisers, schedules. */
#include "train_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

/* The library's own per-thread message (tensor layer): dct_last_error_message() and
 * dynconv_last_error_message() are the same text. */
const char *dct_last_error_message(void) { return dc_error_message(); }

dynconv_status dct_fail(dynconv_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    dc_error_vset(fmt, args);
    va_end(args);
    return status;
}

dynconv_status dct_check_sizes(const char *fn, const char *const *names, const int64_t *sizes,
                               size_t count, size_t *total) {
    for (size_t i = 0; i < count; ++i) {
        if (sizes[i] <= 0) {
            return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be > 0, got %lld", fn,
                            names[i], (long long)sizes[i]);
        }
    }
    /* Bytes must fit in ptrdiff_t so that pointer arithmetic on the buffers is defined. */
    const uint64_t limit = (uint64_t)PTRDIFF_MAX / sizeof(float);
    uint64_t product = 1;
    for (size_t i = 0; i < count; ++i) {
        if ((uint64_t)sizes[i] > limit / product) {
            return dct_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                            "%s: the tensor size (product including %s = %lld) overflows", fn,
                            names[i], (long long)sizes[i]);
        }
        product *= (uint64_t)sizes[i];
    }
    *total = (size_t)product;
    return DYNCONV_OK;
}

dynconv_status dct_check_backward_flags(const char *fn, uint32_t flags) {
    const uint32_t known = (uint32_t)DYNCONV_BACKWARD_ACCUMULATE;
    if ((flags & ~known) != 0) {
        return dct_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                        (unsigned)(flags & ~known));
    }
    return DYNCONV_OK;
}

void dct_zero(float *p, size_t count) {
    if (p != NULL && count > 0) {
        memset(p, 0, count * sizeof *p);
    }
}

void dct_rng_seed(dct_rng *rng, uint64_t seed) { rng->state = seed; }

uint64_t dct_rng_next(dct_rng *rng) { return dc_splitmix64(&rng->state); }

float dct_rng_uniform(dct_rng *rng) {
    return (float)(dct_rng_next(rng) >> 40) * (1.0f / 16777216.0f);
}

float dct_rng_normal(dct_rng *rng) {
    /* 1 - u lies in (0, 1], so the logarithm is finite. */
    const double u1 = 1.0 - (double)dct_rng_uniform(rng);
    const double u2 = (double)dct_rng_uniform(rng);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2));
}

uint64_t dct_rng_below(dct_rng *rng, uint64_t bound) {
    /* Rejection keeps the result unbiased for any bound. */
    const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t v;
    do {
        v = dct_rng_next(rng);
    } while (v >= limit);
    return v % bound;
}

void dct_fill_uniform(dct_rng *rng, float *p, size_t count, float lo, float hi) {
    for (size_t i = 0; i < count; ++i) {
        p[i] = lo + (hi - lo) * dct_rng_uniform(rng);
    }
}

dynconv_status dct_init_fan_in_uniform(dct_rng *rng, float *p, size_t count, int64_t fan_in) {
    if (rng == NULL || (p == NULL && count > 0)) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "dct_init_fan_in_uniform: %s is NULL",
                        rng == NULL ? "rng" : "p");
    }
    if (fan_in <= 0) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "dct_init_fan_in_uniform: fan_in must be > 0, got %lld",
                        (long long)fan_in);
    }
    const float bound = (float)(1.0 / sqrt((double)fan_in));
    dct_fill_uniform(rng, p, count, -bound, bound);
    return DYNCONV_OK;
}

float dct_linear_schedule(float from, float to, int64_t step, int64_t steps) {
    if (steps <= 0 || step >= steps) {
        return to;
    }
    if (step <= 0) {
        return from;
    }
    const double t = (double)step / (double)steps;
    return (float)((double)from + ((double)to - (double)from) * t);
}
