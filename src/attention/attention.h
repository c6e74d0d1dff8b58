/* Attention layer: the squeeze-and-excitation branch that gives each sample K weights.
 *   pooled[n, c] = mean over hw of x[n, c, :]
 *   hidden[n, :] = ReLU(fc1_weight @ pooled[n] + fc1_bias)
 *   pi[n, :]     = softmax((fc2_weight @ hidden[n] + fc2_bias) / T)
 * Uses only the tensor layer and BLAS. */
#ifndef DYNCONV_SRC_ATTENTION_H
#define DYNCONV_SRC_ATTENTION_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dc_attention {
    size_t channels;          /* C_in */
    size_t hidden;            /* hidden units */
    size_t kernels;           /* K */
    const float *fc1_weight;  /* [hidden, channels] */
    const float *fc1_bias;    /* [hidden] or NULL */
    const float *fc2_weight;  /* [kernels, hidden] */
    const float *fc2_bias;    /* [kernels] or NULL */
} dc_attention;

/* pooled [n, channels] = mean of x [n, channels, spatial] over its last axis. */
void dc_global_avg_pool(const float *x, size_t n, size_t channels, size_t spatial, float *pooled);

/* Row-wise softmax(z / T) of logits [n, k] in place; finite for any finite logits and T > 0. */
void dc_softmax_rows(float *logits, size_t n, size_t k, float temperature);

/* pi [n, kernels] from pooled [n, channels]; hidden_buf [n, hidden] is scratch. */
void dc_attention_forward(const dc_attention *att, size_t n, const float *pooled,
                          float temperature, float *hidden_buf, float *pi);

/* The same in two steps, so that threads can share the first: dc_attention_hidden writes hidden
 * units [j0, j1) of hidden_buf [n, hidden] (fc1, bias, ReLU); once all of them are there,
 * dc_attention_finish makes pi (fc2, bias, softmax). Each unit is summed the same way whatever
 * the range, so any split gives the bits of dc_attention_forward. A range other than the whole
 * [0, hidden) only where dc_attention_splits(n): batches of 1 to 32 (on GCC and Clang). */
void dc_attention_hidden(const dc_attention *att, size_t n, const float *pooled,
                         float *hidden_buf, size_t j0, size_t j1);
void dc_attention_finish(const dc_attention *att, size_t n, const float *hidden_buf,
                         float temperature, float *pi);
bool dc_attention_splits(size_t n);

/* Columns [j0, j1) of y [n, out] = x [n, in] w [out, in]^T + b (b NULL: none): the attention's
 * fully connected product, which the network's static linear layers share at small batches,
 * where sgemm would copy the whole of w into its packed layout on every call. As above, a
 * range other than the whole [0, out) only where dc_attention_splits(n), and each output has
 * the same bits whatever the range. */
void dc_fc_forward(size_t n, size_t in, size_t out, const float *x, const float *w,
                   const float *b, size_t j0, size_t j1, float *y);

/* Gradients of the attention's parameters; a NULL pointer skips that gradient. */
typedef struct dc_attention_grads {
    float *fc1_weight, *fc1_bias, *fc2_weight, *fc2_bias;
    int accumulate;           /* add into the buffers instead of overwriting them */
} dc_attention_grads;

/* Backward of dc_attention_forward, from what the forward left in pooled, hidden_buf (the ReLU
 * output u) and pi. dpi [n, kernels] = dL/dpi is overwritten with dL/dz (z: the logits). du
 * [n, hidden] is scratch. dpooled [n, channels] receives dL/dpooled (skipped when NULL).
 *   dz  = pi * (dpi - <dpi, pi>) / T            softmax(z / T)
 *   du  = dz fc2_weight, masked where u == 0     (ReLU' = 0 at 0, as PyTorch)
 *   dfc2_weight = dz^T u, dfc1_weight = du^T pooled, biases: column sums */
void dc_attention_backward(const dc_attention *att, size_t n, const float *pooled,
                           const float *hidden_buf, const float *pi, float temperature,
                           float *dpi, float *du, const dc_attention_grads *grads,
                           float *dpooled);

/* x [n, channels, spatial] += dpooled[n, channels] / spatial at every position: the adjoint of
 * dc_global_avg_pool. */
void dc_global_avg_pool_backward(const float *dpooled, size_t n, size_t channels, size_t spatial,
                                 float *dx);

#endif
