/* Attention layer: the squeeze-and-excitation branch that gives each sample K weights.
 *   pooled[n, c] = mean over hw of x[n, c, :]
 *   hidden[n, :] = ReLU(fc1_weight @ pooled[n] + fc1_bias)
 *   pi[n, :]     = softmax((fc2_weight @ hidden[n] + fc2_bias) / T)
 * Uses only the tensor layer and BLAS. */
#ifndef DYNCONV_SRC_ATTENTION_H
#define DYNCONV_SRC_ATTENTION_H

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

#endif
