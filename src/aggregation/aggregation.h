/* Aggregation layer: mixes K parameter sets with per-sample attention weights.
 *   out[n, :] = sum_k pi[n, k] * params[k, :]
 * either one cblas_sgemm of [n x k] by [k x len] for a whole batch, or one sample (a slice of
 * it) at a time, just before that sample's convolution. */
#ifndef DYNCONV_SRC_AGGREGATION_H
#define DYNCONV_SRC_AGGREGATION_H

#include <stddef.h>

/* pi [n, k], params [k, len], out [n, len]. Sizes must fit BLAS's int (checked by the caller). */
void dc_aggregate(size_t n, size_t k, size_t len, const float *pi, const float *params,
                  float *out);

/* Backward of dc_aggregate, given dagg [n, len] = dL/dout:
 *   dparams [k, len] = pi^T dagg, added to dparams when accumulate, else overwriting it; skipped
 *                      when dparams is NULL
 *   dpi [n, k]      += dagg params^T (dL/dpi[i, j] = <dagg[i], params[j]>), skipped when NULL
 * Each is one cblas_sgemm over the whole batch. */
void dc_aggregate_backward(size_t n, size_t k, size_t len, const float *pi, const float *params,
                           const float *dagg, float *dparams, int accumulate, float *dpi);

/* out[i] = sum_k pi[k] * params[k * len + i] for i in [begin, end): one sample's mixture (pi [k])
 * of the K rows of params [k, len], summed in the order k = 0, 1, ..., so the result does not
 * depend on how [0, len) is cut into slices. */
void dc_aggregate_range(size_t k, size_t len, const float *pi, const float *params, float *out,
                        size_t begin, size_t end);

/* The same for `samples` samples at once: pi [samples, k], out [samples, len]; each sample's
 * values are bitwise those dc_aggregate_range gives, but the K parameter rows are read from
 * memory once for all the samples. */
void dc_aggregate_samples(size_t k, size_t len, size_t samples, const float *pi,
                          const float *params, float *out, size_t begin, size_t end);

/* The general form of both: out[n * out_stride + i] = sum_j pi[n, j] * params[j * stride + i]
 * for i in [0, count), n in [0, samples), summed in the order j = 0, 1, ... (each value bitwise
 * what dc_aggregate_range gives for it), so a slice of a parameter set can be mixed into a
 * buffer of its own size. */
void dc_aggregate_block(size_t k, size_t stride, size_t samples, const float *pi,
                        const float *params, float *out, size_t out_stride, size_t count);

#endif
