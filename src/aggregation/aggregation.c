#include "aggregation.h"

#include <cblas.h>

void dc_aggregate(size_t n, size_t k, size_t len, const float *pi, const float *params,
                  float *out) {
    /* out[n x len] = pi[n x k] * params[k x len]: for the whole batch at once, so that BLAS
     * streams each of the K parameter sets through the cache once rather than N times. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)len, (blasint)k,
                1.0f, pi, (blasint)k, params, (blasint)len, 0.0f, out, (blasint)len);
}
