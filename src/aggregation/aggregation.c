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

/* Memory-bound (K loads and one store per element): a tile of the output stays in registers or
 * L1 while the K parameter rows stream past it. Cloned for AVX2 like the other streaming loops;
 * no FMA contraction in ISO C, so both versions give the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
void dc_aggregate_range(size_t k, size_t len, const float *pi, const float *params, float *out,
                        size_t begin, size_t end) {
    enum { TILE = 256 };
    for (size_t t0 = begin; t0 < end; t0 += TILE) {
        const size_t t1 = end - t0 < TILE ? end : t0 + TILE;
        const float p0 = pi[0];
        const float *r0 = params;
        for (size_t i = t0; i < t1; ++i) {
            out[i] = p0 * r0[i];
        }
        for (size_t j = 1; j < k; ++j) {
            const float pj = pi[j];
            const float *rj = params + j * len;
            for (size_t i = t0; i < t1; ++i) {
                out[i] += pj * rj[i];
            }
        }
    }
}
