#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>

#include "testutil.h"

size_t gc_compare(const char *what, const float *got, const double *want, size_t n)
{
    double scale = 0.0;
    for (size_t i = 0; i < n; ++i) {
        scale = fmax(scale, fabs(want[i]));
    }
    return tu_count_mismatches(what, got, want, n, TU_RTOL, TU_ATOL * scale);
}

size_t gc_compare_f(const char *what, const float *got, const float *want, size_t n)
{
    double *d = tu_alloc((n ? n : 1) * sizeof(double));
    for (size_t i = 0; i < n; ++i) {
        d[i] = (double)want[i];
    }
    const size_t bad = gc_compare(what, got, d, n);
    free(d);
    return bad;
}

bool gc_nontrivial_d(const double *want, size_t n)
{
    if (n == 1) {
        return isfinite(want[0]) && fabs(want[0]) > 1e-7;
    }
    return tu_nontrivial(want, n);
}

bool gc_nontrivial(const float *want, size_t n)
{
    if (n == 1) {
        return isfinite(want[0]) && fabsf(want[0]) > 1e-7f;
    }
    return tu_nontrivial_f(want, n);
}
