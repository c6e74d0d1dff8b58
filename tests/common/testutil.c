#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* How many mismatches are printed before the rest are only counted. */
#define TU_PRINT_LIMIT 5

/* splitmix64: tiny, fast, and every seed (including 0) gives a good stream, so cases can be
 * seeded with small integers. */
void tu_rng_seed(tu_rng *rng, uint64_t seed)
{
    rng->state = seed;
}

uint64_t tu_rng_next(tu_rng *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float tu_uniform(tu_rng *rng, float lo, float hi)
{
    /* 24 random bits: exactly the float mantissa, so u is an exact float in [0, 1). */
    const double u = (double)(tu_rng_next(rng) >> 40) * (1.0 / 16777216.0);
    float v = (float)((double)lo + ((double)hi - (double)lo) * u);
    /* Rounding to float may land on hi itself; keep the interval half-open. */
    if (v >= hi) {
        v = nextafterf(hi, lo);
    }
    return v;
}

void tu_fill_uniform(tu_rng *rng, float *p, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; ++i) {
        p[i] = tu_uniform(rng, lo, hi);
    }
}

void tu_fill_int(tu_rng *rng, float *p, size_t n, int lo, int hi)
{
    const uint64_t span = (uint64_t)((int64_t)hi - (int64_t)lo + 1);
    for (size_t i = 0; i < n; ++i) {
        p[i] = (float)((int64_t)lo + (int64_t)(tu_rng_next(rng) % span));
    }
}

/* Shared by both comparison functions: written so that NaN (in got or want) fails the test. */
static bool tu_close(double got, double want, double rtol, double atol)
{
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static void tu_report(const char *what, size_t i, double got, double want)
{
    printf("  %s[%zu]: got %.9g, want %.9g (diff %.3g)\n", what ? what : "value", i, got, want,
           got - want);
}

size_t tu_count_mismatches(const char *what, const float *got, const double *want, size_t n,
                           double rtol, double atol)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!tu_close((double)got[i], want[i], rtol, atol)) {
            if (bad < TU_PRINT_LIMIT) {
                tu_report(what, i, (double)got[i], want[i]);
            }
            ++bad;
        }
    }
    if (bad > 0) {
        printf("  %s: %zu of %zu values mismatch (rtol %g, atol %g)\n", what ? what : "value",
               bad, n, rtol, atol);
    }
    return bad;
}

size_t tu_count_mismatches_f(const char *what, const float *got, const float *want, size_t n,
                             double rtol, double atol)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!tu_close((double)got[i], (double)want[i], rtol, atol)) {
            if (bad < TU_PRINT_LIMIT) {
                tu_report(what, i, (double)got[i], (double)want[i]);
            }
            ++bad;
        }
    }
    if (bad > 0) {
        printf("  %s: %zu of %zu values mismatch (rtol %g, atol %g)\n", what ? what : "value",
               bad, n, rtol, atol);
    }
    return bad;
}

bool tu_nontrivial(const double *want, size_t n)
{
    if (n == 0) {
        return false;
    }
    size_t zeros = 0;
    double lo = want[0], hi = want[0];
    for (size_t i = 0; i < n; ++i) {
        if (!isfinite(want[i])) {
            return false; /* a NaN or Inf expectation cannot anchor a comparison */
        }
        if (want[i] == 0.0) {
            ++zeros;
        }
        lo = want[i] < lo ? want[i] : lo;
        hi = want[i] > hi ? want[i] : hi;
    }
    if (zeros * 2 > n) {
        return false;
    }
    return hi - lo >= 1e-6 * fmax(1.0, fabs(hi));
}

bool tu_nontrivial_f(const float *want, size_t n)
{
    double *d = tu_alloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; ++i) {
        d[i] = (double)want[i];
    }
    const bool ok = tu_nontrivial(d, n);
    free(d);
    return ok;
}

void *tu_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "tu_alloc: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    return p;
}
