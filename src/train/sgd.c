/* SGD with momentum and weight decay, the update rule of torch.optim.SGD (dampening 0). */
#include "train_internal.h"

#include <math.h>

static dynconv_status check_param(const char *fn, const dct_sgd *sgd, const dct_param *p,
                                  size_t index) {
    if (p->value == NULL || p->grad == NULL || (p->velocity == NULL && sgd->momentum != 0.0f)) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: params[%zu].%s is NULL", fn, index,
                        p->value == NULL ? "value" : p->grad == NULL ? "grad" : "velocity");
    }
    static const char *const names[] = {"count"};
    size_t total;
    dynconv_status st = dct_check_sizes(fn, names, &p->count, 1, &total);
    if (st != DYNCONV_OK) {
        return dct_fail(st, "%s: params[%zu].count = %lld is not a valid size", fn, index,
                        (long long)p->count);
    }
    const size_t bytes = total * sizeof(float);
    if (dc_ranges_overlap(p->value, bytes, p->grad, bytes) ||
        dc_ranges_overlap(p->value, bytes, p->velocity, bytes) ||
        dc_ranges_overlap(p->grad, bytes, p->velocity, bytes)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: params[%zu]: value, grad and velocity must not overlap", fn, index);
    }
    return DYNCONV_OK;
}

dynconv_status dct_sgd_step(const dct_sgd *sgd, const dct_param *params, size_t num_params) {
    static const char fn[] = "dct_sgd_step";
    if (sgd == NULL || (params == NULL && num_params > 0)) {
        return dct_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                        sgd == NULL ? "sgd" : "params");
    }
    if (!(sgd->learning_rate > 0.0f) || isinf(sgd->learning_rate)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: learning_rate must be finite and > 0, got %g", fn,
                        (double)sgd->learning_rate);
    }
    if (!(sgd->momentum >= 0.0f && sgd->momentum < 1.0f)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: momentum must be in [0, 1), got %g",
                        fn, (double)sgd->momentum);
    }
    if (!(sgd->weight_decay >= 0.0f) || isinf(sgd->weight_decay)) {
        return dct_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                        "%s: weight_decay must be finite and >= 0, got %g", fn,
                        (double)sgd->weight_decay);
    }
    /* All checks first, so that a bad entry late in the list leaves every parameter intact. */
    for (size_t i = 0; i < num_params; ++i) {
        DCT_TRY(check_param(fn, sgd, &params[i], i));
    }
    const float lr = sgd->learning_rate, mom = sgd->momentum;
    for (size_t i = 0; i < num_params; ++i) {
        const dct_param *p = &params[i];
        const float wd = p->decay ? sgd->weight_decay : 0.0f;
        const size_t count = (size_t)p->count;
        for (size_t j = 0; j < count; ++j) {
            const float g = p->grad[j] + wd * p->value[j];
            float v = g;
            if (mom != 0.0f) {
                v = mom * p->velocity[j] + g;
                p->velocity[j] = v;
            } else if (p->velocity != NULL) {
                p->velocity[j] = v;
            }
            p->value[j] -= lr * v;
        }
    }
    return DYNCONV_OK;
}
