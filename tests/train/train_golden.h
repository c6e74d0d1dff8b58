/* Golden data for the training module, computed by PyTorch (see generate_train_golden.py) and
 * stored in train_golden.c. Arrays are float32 (labels int32, argmax int64), contiguous,
 * row-major, in the layouts of src/train/dynconv_train.h. */
#ifndef DYNCONV_TESTS_TRAIN_GOLDEN_H
#define DYNCONV_TESTS_TRAIN_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

/* F.batch_norm in training mode, then in inference mode with the updated running statistics;
 * gradients by autograd for the upstream gradient dy. */
typedef struct golden_bn_case {
    const char *name;
    int64_t n, c, h, w;
    float eps, momentum;
    const float *x, *gamma, *beta, *running_mean_in, *running_var_in, *dy;
    const float *y, *running_mean_out, *running_var_out, *y_eval;
    const float *dx, *dgamma, *dbeta;
} golden_bn_case;

/* F.linear and its gradients for dy. */
typedef struct golden_linear_train_case {
    const char *name;
    int64_t n, din, dout;
    const float *x, *weight, *bias, *dy;
    const float *y, *dx, *dweight, *dbias;
} golden_linear_train_case;

/* F.cross_entropy (mean) and d loss / d logits. */
typedef struct golden_ce_case {
    const char *name;
    int64_t n, k;
    const float *logits;
    const int32_t *labels;
    float loss;
    const float *dlogits;
    int64_t correct;
} golden_ce_case;

/* F.max_pool2d(kernel k, stride s) with indices, and its gradient for dy. */
typedef struct golden_maxpool_case {
    const char *name;
    int64_t n, c, h, w, k, s, oh, ow;
    const float *x, *y;
    const int64_t *argmax;
    const float *dy, *dx;
} golden_maxpool_case;

/* torch.optim.SGD over `steps` steps of the given gradients; trajectory [steps, count] holds
 * the parameter after every step. */
typedef struct golden_sgd_case {
    const char *name;
    int64_t count;
    float lr, momentum, weight_decay;
    int64_t steps;
    const float *start, *grads, *trajectory;
} golden_sgd_case;

extern const golden_bn_case golden_bn_cases[];
extern const size_t golden_bn_case_count;
extern const golden_linear_train_case golden_linear_train_cases[];
extern const size_t golden_linear_train_case_count;
extern const golden_ce_case golden_ce_cases[];
extern const size_t golden_ce_case_count;
extern const golden_maxpool_case golden_maxpool_cases[];
extern const size_t golden_maxpool_case_count;
extern const golden_sgd_case golden_sgd_cases[];
extern const size_t golden_sgd_case_count;

#endif
