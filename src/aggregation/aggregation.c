#include "aggregation.h"

#include <cblas.h>

void dc_aggregate(size_t n, size_t k, size_t len, const float *pi, const float *params,
                  float *out) {
    /* out[n x len] = pi[n x k] * params[k x len]: for the whole batch at once, so that BLAS
     * streams each of the K parameter sets through the cache once rather than N times. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)len, (blasint)k,
                1.0f, pi, (blasint)k, params, (blasint)len, 0.0f, out, (blasint)len);
}

void dc_aggregate_backward(size_t n, size_t k, size_t len, const float *pi, const float *params,
                           const float *dagg, float *dparams, int accumulate, float *dpi) {
    if (dparams != NULL) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)k, (blasint)len,
                    (blasint)n, 1.0f, pi, (blasint)k, dagg, (blasint)len,
                    accumulate ? 1.0f : 0.0f, dparams, (blasint)len);
    }
    if (dpi != NULL) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)k,
                    (blasint)len, 1.0f, dagg, (blasint)len, params, (blasint)len, 1.0f, dpi,
                    (blasint)k);
    }
}
