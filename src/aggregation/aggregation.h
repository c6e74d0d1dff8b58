/* Aggregation layer: mixes K parameter sets with per-sample attention weights.
 *   out[n, :] = sum_k pi[n, k] * params[k, :]
 * one cblas_sgemm of [n x k] by [k x len] for the whole batch. */
#ifndef DYNCONV_SRC_AGGREGATION_H
#define DYNCONV_SRC_AGGREGATION_H

#include <stddef.h>

/* pi [n, k], params [k, len], out [n, len]. Sizes must fit BLAS's int (checked by the caller). */
void dc_aggregate(size_t n, size_t k, size_t len, const float *pi, const float *params,
                  float *out);

#endif
