/*
 * dynconv_train: the pieces needed to train a small network around the dynamic layers.
 *
 * NOT part of libdynconv's stable ABI. This is a separate static library (CMake target
 * dynconv_train) used by the examples and tests; it is not exported from libdynconv.so, not
 * installed, and its functions may change between versions. The library's core stays the
 * dynamic layers of <dynconv/dynconv.h>. It is built on the core's own code (its error
 * message, generator and pooling), statically: a program links dynconv_train, which brings
 * the whole library with it (the static archive dynconv_internal), and not libdynconv.so.
 *
 * Contents, in the order a network uses them:
 *   1. errors         - statuses are dynconv_status values; dct_last_error_message() explains
 *   2. random init    - a seeded generator and uniform / Kaiming-uniform fills
 *   3. batch norm     - BatchNorm2d forward (training and inference) and backward
 *   4. activations    - ReLU forward and backward
 *   5. pooling        - global average pooling and max pooling, forward and backward
 *   6. linear         - a static fully connected layer y = x W^T + b, forward and backward
 *   7. loss           - softmax cross-entropy (mean over the batch) and its gradient
 *   8. optimiser      - SGD with momentum and weight decay, PyTorch's update rule
 *
 * Conventions (the same as libdynconv's)
 *   - float32 tensors, NCHW, contiguous row-major. Sizes are int64_t; a non-positive size is
 *     DYNCONV_ERROR_INVALID_ARGUMENT, a product of sizes that overflows is
 *     DYNCONV_ERROR_SIZE_OVERFLOW.
 *   - On any error nothing is written and a message is left for dct_last_error_message(),
 *     which is the library's own per-thread message (dynconv_last_error_message()).
 *   - Gradients, as the library's own backward functions: every gradient buffer is
 *     OVERWRITTEN by default; the backward functions with parameters (batch norm, linear) take
 *     flags, and with DYNCONV_BACKWARD_ACCUMULATE they add into every gradient buffer instead
 *     (dx included), e.g. to sum micro-batches. Unknown flag bits: DYNCONV_ERROR_UNSUPPORTED.
 *     A network can mix these with dynconv_conv2d_backward under one rule.
 *   - Output and input buffers must not overlap, except where a function says "in place".
 *   - No function allocates memory; all buffers belong to the caller.
 *   - No global state besides the thread-local error message: threads may call any function
 *     concurrently on distinct buffers. The linear layer's GEMMs run on the BLAS's threads.
 */
#ifndef DYNCONV_TRAIN_H
#define DYNCONV_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dynconv/dynconv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------- */
/* 1. Errors                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* Explanation of the latest failure in the calling thread, of a dct_* or dynconv_* call alike
 * ("" if none). */
const char *dct_last_error_message(void);

/* Sets every one of the count floats of p to zero (e.g. parameter gradients before a step). */
void dct_zero(float *p, size_t count);

/* ---------------------------------------------------------------------------------------- */
/* 2. Random initialisation                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* splitmix64 (the library's own generator): any seed, including 0, gives a good stream; the
 * same seed gives the same numbers on every platform. */
typedef struct dct_rng {
    uint64_t state;
} dct_rng;

void dct_rng_seed(dct_rng *rng, uint64_t seed);
uint64_t dct_rng_next(dct_rng *rng);
/* Uniform in [0, 1), 24 random bits (exact in float). */
float dct_rng_uniform(dct_rng *rng);
/* Standard normal (Box-Muller). */
float dct_rng_normal(dct_rng *rng);
/* Uniform integer in [0, bound), bound > 0. */
uint64_t dct_rng_below(dct_rng *rng, uint64_t bound);

/* p[i] ~ U(lo, hi) for i < count. */
void dct_fill_uniform(dct_rng *rng, float *p, size_t count, float lo, float hi);

/* PyTorch's default for nn.Linear and nn.Conv2d weights (kaiming_uniform_ with a = sqrt(5)):
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = in_features, or C_in/groups * kh * kw.
 * The same bound is PyTorch's default for their biases. fan_in must be > 0. */
dynconv_status dct_init_fan_in_uniform(dct_rng *rng, float *p, size_t count, int64_t fan_in);

/* ---------------------------------------------------------------------------------------- */
/* 3. BatchNorm2d                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Per channel c, over the N * H * W values of x[:, c]:
 *   training:  mean, var = batch mean and biased variance
 *              y = gamma[c] * (x - mean) / sqrt(var + eps) + beta[c]
 *              running_mean = (1 - momentum) * running_mean + momentum * mean
 *              running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1),
 *              M = N * H * W (the unbiased variance, as PyTorch)
 *   inference: y = gamma[c] * (x - running_mean) / sqrt(running_var + eps) + beta[c]
 * A 1-D batch norm over features is the case H = W = 1. */
typedef struct dct_batchnorm2d {
    int64_t channels;      /* C > 0 */
    float eps;             /* finite, > 0 (PyTorch: 1e-5) */
    float momentum;        /* in [0, 1] (PyTorch: 0.1) */
    const float *gamma;    /* [C] required (PyTorch's weight; init 1) */
    const float *beta;     /* [C] required (PyTorch's bias; init 0) */
    float *running_mean;   /* [C] required for training and inference (init 0) */
    float *running_var;    /* [C] required for training and inference (init 1) */
} dct_batchnorm2d;

/* Training forward. x, y [N, C, H, W]; save_mean, save_invstd [C] receive the batch mean and
 * 1/sqrt(var + eps) that backward needs. Updates running_mean and running_var.
 * Errors: NULL_POINTER, INVALID_ARGUMENT (sizes <= 0, eps or momentum out of range, y overlaps
 * x or the saved statistics), INVALID_SHAPE (N * H * W == 1: no variance to estimate),
 * SIZE_OVERFLOW. */
dynconv_status dct_batchnorm2d_forward_train(const dct_batchnorm2d *bn, int64_t batch,
                                             int64_t height, int64_t width, const float *x,
                                             float *y, float *save_mean, float *save_invstd);

/* Inference forward with the running statistics; y == x (in place) is allowed. */
dynconv_status dct_batchnorm2d_forward_eval(const dct_batchnorm2d *bn, int64_t batch,
                                            int64_t height, int64_t width, const float *x,
                                            float *y);

/* Backward of the training forward, given the same x and the saved statistics:
 *   xhat = (x - mean) * invstd
 *   dgamma[c] = sum dy * xhat            dbeta[c] = sum dy
 *   dx = gamma * invstd / M * (M * dy - sum dy - xhat * sum(dy * xhat))
 * each overwritten, or added (+=) with DYNCONV_BACKWARD_ACCUMULATE in flags. dx may be NULL
 * (parameters only); dgamma and dbeta are required. dx must not overlap x or dy.
 * Errors as for the forward, and UNSUPPORTED (unknown flags). */
dynconv_status dct_batchnorm2d_backward(const dct_batchnorm2d *bn, int64_t batch, int64_t height,
                                        int64_t width, const float *x, const float *dy,
                                        const float *save_mean, const float *save_invstd,
                                        float *dx, float *dgamma, float *dbeta, uint32_t flags);

/* ---------------------------------------------------------------------------------------- */
/* 4. ReLU                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* y[i] = max(x[i], 0) for i < count; in place (y == x) allowed. NaN stays NaN. */
dynconv_status dct_relu_forward(int64_t count, const float *x, float *y);

/* dx[i] = y[i] > 0 ? dy[i] : 0, from the forward's OUTPUT y (so x may have been overwritten);
 * in place (dx == dy) allowed. */
dynconv_status dct_relu_backward(int64_t count, const float *y, const float *dy, float *dx);

/* ---------------------------------------------------------------------------------------- */
/* 5. Pooling                                                                               */
/* ---------------------------------------------------------------------------------------- */

/* Global average pooling: x [N, C, H, W] -> y [N, C], y[n, c] = mean of x[n, c]. */
dynconv_status dct_global_avg_pool_forward(int64_t batch, int64_t channels, int64_t height,
                                           int64_t width, const float *x, float *y);
/* dx[n, c, h, w] = dy[n, c] / (H * W) (overwritten). */
dynconv_status dct_global_avg_pool_backward(int64_t batch, int64_t channels, int64_t height,
                                            int64_t width, const float *dy, float *dx);

/* Max pooling, square window `kernel`, step `stride`, no padding (PyTorch's MaxPool2d with
 * padding 0, dilation 1, floor mode):
 *   H_out = (H - kernel) / stride + 1, W_out likewise (kernel must be <= H and <= W)
 * x [N, C, H, W] -> y [N, C, H_out, W_out]; argmax [N, C, H_out, W_out] receives the index
 * h * W + w of the maximum inside its input plane (the first one on ties, as PyTorch); NaN wins
 * over numbers. */
dynconv_status dct_maxpool2d_output_size(int64_t height, int64_t width, int64_t kernel,
                                         int64_t stride, int64_t *out_h, int64_t *out_w);
dynconv_status dct_maxpool2d_forward(int64_t batch, int64_t channels, int64_t height,
                                     int64_t width, int64_t kernel, int64_t stride,
                                     const float *x, float *y, int64_t *argmax);
/* dx (overwritten) = 0 everywhere, plus dy routed to each window's argmax (summed where windows
 * overlap). argmax values are checked to lie inside the plane (else INVALID_ARGUMENT). */
dynconv_status dct_maxpool2d_backward(int64_t batch, int64_t channels, int64_t height,
                                      int64_t width, int64_t kernel, int64_t stride,
                                      const float *dy, const int64_t *argmax, float *dx);

/* ---------------------------------------------------------------------------------------- */
/* 6. Linear (static fully connected)                                                       */
/* ---------------------------------------------------------------------------------------- */

/* y [N, D_out] = x [N, D_in] @ weight^T + bias; weight [D_out, D_in], bias [D_out] or NULL. */
dynconv_status dct_linear_forward(int64_t batch, int64_t in_features, int64_t out_features,
                                  const float *x, const float *weight, const float *bias,
                                  float *y);
/*   dx      [N, D_in]      = dy @ weight        (may be NULL)
 *   dweight [D_out, D_in]  = dy^T @ x           (required)
 *   dbias   [D_out]        = sum over n of dy   (may be NULL)
 * each overwritten, or added (+=) with DYNCONV_BACKWARD_ACCUMULATE in flags (unknown bits:
 * UNSUPPORTED). */
dynconv_status dct_linear_backward(int64_t batch, int64_t in_features, int64_t out_features,
                                   const float *x, const float *weight, const float *dy,
                                   float *dx, float *dweight, float *dbias, uint32_t flags);

/* ---------------------------------------------------------------------------------------- */
/* 7. Softmax cross-entropy                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* logits [N, classes], labels [N] in [0, classes):
 *   p      = softmax(logits[n])                                  (max-subtracted, stable)
 *   *loss  = -(1/N) * sum_n log p[n, labels[n]]                  (PyTorch's mean reduction)
 *   dlogits[n, j] = (p[n, j] - [j == labels[n]]) / N             (overwritten; may be NULL)
 *   *correct = number of n whose first largest logit is at labels[n]   (may be NULL)
 * Errors: NULL_POINTER, INVALID_ARGUMENT (sizes, a label out of range, dlogits overlapping
 * logits), SIZE_OVERFLOW. */
dynconv_status dct_softmax_cross_entropy(int64_t batch, int64_t classes, const float *logits,
                                         const int32_t *labels, float *loss, float *dlogits,
                                         int64_t *correct);

/* ---------------------------------------------------------------------------------------- */
/* 8. SGD with momentum and weight decay                                                    */
/* ---------------------------------------------------------------------------------------- */

typedef struct dct_sgd {
    float learning_rate;   /* finite, > 0 */
    float momentum;        /* in [0, 1) */
    float weight_decay;    /* finite, >= 0 (L2 coupled into the gradient, as torch.optim.SGD) */
} dct_sgd;

/* One parameter array with its gradient and momentum buffer. */
typedef struct dct_param {
    float *value;          /* [count] */
    const float *grad;     /* [count] */
    float *velocity;       /* [count], zero before the first step; may be NULL if momentum == 0 */
    int64_t count;         /* > 0 */
    bool decay;            /* apply weight decay (commonly off for biases and batch-norm affine) */
} dct_param;

/* For every parameter, as torch.optim.SGD (dampening 0, no Nesterov):
 *   g = grad + weight_decay * value        (weight_decay only where decay is true)
 *   velocity = momentum * velocity + g     (momentum == 0: velocity = g, stored if not NULL)
 *   value   -= learning_rate * velocity
 * Everything is checked before any parameter is touched. Errors: NULL_POINTER,
 * INVALID_ARGUMENT (hyper-parameters out of range, count <= 0, value overlapping grad or
 * velocity). */
dynconv_status dct_sgd_step(const dct_sgd *sgd, const dct_param *params, size_t num_params);

/* A linear ramp, e.g. for the learning rate: `from` at step 0, `to` from step `steps` on, linear
 * in between; steps <= 0 gives `to`. (The dynamic layers anneal their temperature themselves:
 * dynconv_conv2d_set_temperature_schedule.) */
float dct_linear_schedule(float from, float to, int64_t step, int64_t steps);

#ifdef __cplusplus
}
#endif

#endif /* DYNCONV_TRAIN_H */
