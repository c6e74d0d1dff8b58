#include "aggregation.h"

#include <cblas.h>
#include <string.h>

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

/* Memory-bound: K loads per element and one store per sample, nothing else. Sixteen (then
 * eight) outputs at a time are summed in a register across the K parameter rows; with several
 * samples, each tile of the K rows is read from memory once and reused for every sample.
 * Cloned for AVX2 like the other streaming loops; the project compiles as ISO C (no FMA
 * contraction), so both versions give the same bits. */
#if defined(__GNUC__)
typedef float dc_v16f __attribute__((vector_size(64)));
/* Sixteen outputs of every sample from K rows held in registers (K a constant where it is
 * inlined): the rows are loaded once for all samples, where the general loop has to load
 * them again for each sample (its stores may alias them). Same operations in the same order
 * as the general loop, so the same bits. */
static inline __attribute__((always_inline)) void
block16_fixed(const size_t k, size_t stride, size_t samples, const float *pi,
              const float *params, float *out, size_t out_stride, size_t i) {
    dc_v16f row[8];
    for (size_t j = 0; j < k; ++j) {
        memcpy(&row[j], params + j * stride + i, sizeof row[j]);
    }
    for (size_t n = 0; n < samples; ++n) {
        const float *p = pi + n * k;
        dc_v16f acc = p[0] * row[0];
        for (size_t j = 1; j < k; ++j) {
            acc += p[j] * row[j];
        }
        memcpy(out + n * out_stride + i, &acc, sizeof acc);
    }
}
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void dc_aggregate_block(size_t k, size_t stride, size_t samples, const float *pi,
                        const float *params, float *out, size_t out_stride, size_t count) {
    size_t i = 0;
#if defined(__GNUC__)
    /* K = 2 to 8 with its rows in registers: with the 8 samples of a chunk, the blocked
     * pointwise layers at 7x7 (batch 16, one thread) took 0.90 (160 -> 960) and 0.95
     * (320 -> 1280) of their time, the strided 256 -> 512 at 14x14 0.97 (AVX-512 Xeon,
     * in-process, interleaved); a single sample, or the fused large kernels whose mixing waits
     * on the cache, no change. */
    if (k >= 2 && k <= 8) {
        for (; i + 16 <= count; i += 16) {
            switch (k) {
            case 2: block16_fixed(2, stride, samples, pi, params, out, out_stride, i); break;
            case 3: block16_fixed(3, stride, samples, pi, params, out, out_stride, i); break;
            case 4: block16_fixed(4, stride, samples, pi, params, out, out_stride, i); break;
            case 5: block16_fixed(5, stride, samples, pi, params, out, out_stride, i); break;
            case 6: block16_fixed(6, stride, samples, pi, params, out, out_stride, i); break;
            case 7: block16_fixed(7, stride, samples, pi, params, out, out_stride, i); break;
            default: block16_fixed(8, stride, samples, pi, params, out, out_stride, i); break;
            }
        }
    }
    /* Sixteen outputs at a time first: one zmm register on AVX-512 (half the instructions of
     * two ymm ones; mixing took a fifth to a quarter of the dynamic engine layers' time on
     * small images), two ymm ones on AVX2. */
    typedef float v16f __attribute__((vector_size(64)));
    for (; i + 16 <= count; i += 16) {
        for (size_t n = 0; n < samples; ++n) {
            const float *p = pi + n * k;
            v16f acc, row;
            memcpy(&row, params + i, sizeof row);
            acc = p[0] * row;
            for (size_t j = 1; j < k; ++j) {
                memcpy(&row, params + j * stride + i, sizeof row);
                acc += p[j] * row;
            }
            memcpy(out + n * out_stride + i, &acc, sizeof acc);
        }
    }
    typedef float v8f __attribute__((vector_size(32)));
    for (; i + 8 <= count; i += 8) {
        for (size_t n = 0; n < samples; ++n) {
            const float *p = pi + n * k;
            v8f acc, row;
            memcpy(&row, params + i, sizeof row);
            acc = p[0] * row;
            for (size_t j = 1; j < k; ++j) {
                memcpy(&row, params + j * stride + i, sizeof row);
                acc += p[j] * row;
            }
            memcpy(out + n * out_stride + i, &acc, sizeof acc);
        }
    }
#endif
    for (; i < count; ++i) {
        for (size_t n = 0; n < samples; ++n) {
            const float *p = pi + n * k;
            float acc = p[0] * params[i];
            for (size_t j = 1; j < k; ++j) {
                acc += p[j] * params[j * stride + i];
            }
            out[n * out_stride + i] = acc;
        }
    }
}

void dc_aggregate_samples(size_t k, size_t len, size_t samples, const float *pi,
                          const float *params, float *out, size_t begin, size_t end) {
    dc_aggregate_block(k, len, samples, pi, params + begin, out + begin, len, end - begin);
}

void dc_aggregate_range(size_t k, size_t len, const float *pi, const float *params, float *out,
                        size_t begin, size_t end) {
    dc_aggregate_samples(k, len, 1, pi, params, out, begin, end);
}
