/* Softmax cross-entropy with PyTorch's mean reduction. */
#include "train_internal.h"

#include <math.h>

dynconv_status dct_softmax_cross_entropy(int64_t batch, int64_t classes, const float *logits,
                                         const int32_t *labels, float *loss, float *dlogits,
                                         int64_t *correct) {
    static const char fn[] = "dct_softmax_cross_entropy";
    static const char *const names[] = {"batch", "classes"};
    const int64_t sizes[] = {batch, classes};
    size_t total;
    DCT_TRY(dct_check_sizes(fn, names, sizes, 2, &total));
    if (logits == NULL || labels == NULL || loss == NULL) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        logits == NULL ? "logits" : labels == NULL ? "labels" : "loss");
    }
    const size_t n = (size_t)batch, k = (size_t)classes, bytes = total * sizeof(float);
    for (size_t i = 0; i < n; ++i) {
        if (labels[i] < 0 || (int64_t)labels[i] >= classes) {
            return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                            "%s: labels[%zu] = %d is outside [0, %lld)", fn, i, (int)labels[i],
                            (long long)classes);
        }
    }
    if (dc_ranges_overlap(dlogits, bytes, logits, bytes) ||
        dc_ranges_overlap(dlogits, bytes, labels, n * sizeof(int32_t)) ||
        dc_ranges_overlap(loss, sizeof(float), logits, bytes) ||
        dc_ranges_overlap(loss, sizeof(float), dlogits, bytes) ||
        dc_ranges_overlap(correct, sizeof(int64_t), logits, bytes) ||
        dc_ranges_overlap(correct, sizeof(int64_t), dlogits, bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: loss, dlogits and correct must not overlap the inputs or each other",
                        fn);
    }

    double sum = 0.0;
    int64_t hits = 0;
    const double inv_n = 1.0 / (double)n;
    for (size_t i = 0; i < n; ++i) {
        const float *z = logits + i * k;
        size_t best = 0;
        for (size_t j = 1; j < k; ++j) {
            if (z[j] > z[best]) {
                best = j;
            }
        }
        hits += best == (size_t)labels[i];
        /* log-sum-exp around the maximum: no overflow for any finite logits. */
        const double zmax = z[best];
        double denom = 0.0;
        for (size_t j = 0; j < k; ++j) {
            denom += exp((double)z[j] - zmax);
        }
        const double log_denom = log(denom);
        sum += log_denom - ((double)z[labels[i]] - zmax);
        if (dlogits != NULL) {
            for (size_t j = 0; j < k; ++j) {
                const double p = exp((double)z[j] - zmax - log_denom);
                dlogits[i * k + j] = (float)((p - (j == (size_t)labels[i] ? 1.0 : 0.0)) * inv_n);
            }
        }
    }
    *loss = (float)(sum * inv_n);
    if (correct != NULL) {
        *correct = hits;
    }
    return DYNCONV_OK;
}
