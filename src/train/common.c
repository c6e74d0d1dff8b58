/* Error messages, size checks, the seeded generator and initialisers, schedules. */
#include "train_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* One buffer per thread, so a failure in one thread never garbles another's message. */
static _Thread_local char last_error[512];

const char *dct_last_error_message(void) { return last_error; }

dynconv_status dct_fail(dynconv_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
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

bool dct_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
    if (a == NULL || b == NULL || a_bytes == 0 || b_bytes == 0) {
        return false;
    }
    const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return pa < pb + b_bytes && pb < pa + a_bytes;
}

void dct_zero(float *p, size_t count) {
    if (p != NULL && count > 0) {
        memset(p, 0, count * sizeof *p);
    }
}

void dct_rng_seed(dct_rng *rng, uint64_t seed) { rng->state = seed; }

uint64_t dct_rng_next(dct_rng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

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
