/* Shared helpers of the test suite: a seeded generator, tolerant comparison, and the check that
 * an expected output is not trivially zero or constant (a comparison against such data could
 * not fail). */
#ifndef DYNCONV_TESTS_TESTUTIL_H
#define DYNCONV_TESTS_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tolerances for float32 results against a double reference or PyTorch. */
#define TU_RTOL 1e-4
#define TU_ATOL 1e-5

typedef struct tu_rng {
    uint64_t state;
} tu_rng;

void tu_rng_seed(tu_rng *rng, uint64_t seed);
uint64_t tu_rng_next(tu_rng *rng);
/* Uniform in [lo, hi). */
float tu_uniform(tu_rng *rng, float lo, float hi);
void tu_fill_uniform(tu_rng *rng, float *p, size_t n, float lo, float hi);
/* Integers in [lo, hi] stored as floats (exactly representable). */
void tu_fill_int(tu_rng *rng, float *p, size_t n, int lo, int hi);

/* Number of i with |got[i] - want[i]| > atol + rtol * |want[i]| (NaN counts as a mismatch).
 * Prints the first few mismatches prefixed by `what`. */
size_t tu_count_mismatches(const char *what, const float *got, const double *want, size_t n,
                           double rtol, double atol);
/* Same against float expectations. */
size_t tu_count_mismatches_f(const char *what, const float *got, const float *want, size_t n,
                             double rtol, double atol);

/* False when more than half of want is zero or all of it is (nearly) one value. */
bool tu_nontrivial(const double *want, size_t n);
bool tu_nontrivial_f(const float *want, size_t n);

/* Checked malloc for tests: fails the test process on NULL. Free with free(). */
void *tu_alloc(size_t bytes);

#endif
