#include "attention.h"

#include "tensor.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* The pooling streams the whole input: built for AVX2 as well as baseline x86-64 and picked at
 * load time. The partial sums are explicit, so both versions add in the same order (ISO C: no
 * FMA contraction, no reassociation) and give the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#define DC_ATTENTION_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DC_ATTENTION_CLONES
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
#define DC_FC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DC_FC_CLONES
#endif
#if defined(__GNUC__)
/* Inlined into each clone, so that it is compiled for that clone's instruction set. */
#define DC_ATTENTION_INLINE inline __attribute__((always_inline))
#else
#define DC_ATTENTION_INLINE inline
#endif

#if defined(__GNUC__)
/* Sum of one row with 8 partial sums (one vector register: eight floats as one value), and 32
 * for long rows (four registers of independent additions, so that the loop runs at the rate the
 * loads allow instead of waiting on one chain of dependent adds: with one chain the pooling of a
 * stride-2 depthwise layer at 28x28 took as long as its convolution). Short rows (7x7) keep one
 * register, where folding four would cost more than it saves. Fewer terms per partial sum also
 * keep the rounding error of long rows (56x56 = 3136 values) small. */
typedef float dc_pool_v8 __attribute__((vector_size(32)));

/* acc += p[0..8), as an unaligned vector load (through a pointer: a vector returned by value
 * would change the baseline build's ABI). */
static DC_ATTENTION_INLINE void add8(dc_pool_v8 *acc, const float *p) {
    dc_pool_v8 v;
    memcpy(&v, p, sizeof v);
    *acc += v;
}

static DC_ATTENTION_INLINE float row_sum(const float *p, size_t spatial) {
    dc_pool_v8 acc = {0};
    size_t i = 0;
    if (spatial >= 64) {
        dc_pool_v8 a1 = {0}, a2 = {0}, a3 = {0};
        for (; i + 32 <= spatial; i += 32) {
            add8(&acc, p + i);
            add8(&a1, p + i + 8);
            add8(&a2, p + i + 16);
            add8(&a3, p + i + 24);
        }
        acc = (acc + a1) + (a2 + a3);
    }
    for (; i + 8 <= spatial; i += 8) {
        add8(&acc, p + i);
    }
    float sum = 0.0f;
    for (; i < spatial; ++i) {
        sum += p[i];
    }
    return sum + (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}
#else
static float row_sum(const float *p, size_t spatial) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= spatial; i += 8) {
        for (size_t j = 0; j < 8; ++j) {
            acc[j] += p[i + j];
        }
    }
    float sum = 0.0f;
    for (; i < spatial; ++i) {
        sum += p[i];
    }
    return sum + (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}
#endif

DC_ATTENTION_CLONES
void dc_global_avg_pool(const float *x, size_t n, size_t channels, size_t spatial, float *pooled) {
    const float scale = 1.0f / (float)spatial;
    for (size_t row = 0; row < n * channels; ++row) {
        pooled[row] = row_sum(x + row * spatial, spatial) * scale;
    }
}

void dc_softmax_rows(float *logits, size_t n, size_t k, float temperature) {
    for (size_t r = 0; r < n; ++r) {
        float *z = logits + r * k;
        float max = z[0];
        for (size_t j = 1; j < k; ++j) {
            max = z[j] > max ? z[j] : max;
        }
        /* (z - max) / T <= 0: exp never overflows, whatever the logits or the temperature. The
         * largest term is exp(0) = 1, so the sum is >= 1 and the division is safe. The sum is
         * kept in double: in float, tens of thousands of kernels drift the row's total by 1e-4
         * (65537 kernels: 0.9998), against 1 + 1e-7 or so with double. */
        double sum = 0.0;
        for (size_t j = 0; j < k; ++j) {
            z[j] = expf((z[j] - max) / temperature);
            sum += (double)z[j];
        }
        const float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < k; ++j) {
            z[j] *= inv;
        }
    }
}

#if defined(__GNUC__)
typedef float dc_fc_v16 __attribute__((vector_size(64)));

/* The sixteen lanes of *v summed in a fixed order (through a pointer, as add8). */
static DC_ATTENTION_INLINE float fc_lanes_sum(const dc_fc_v16 *v) {
    float h[8];
    for (int i = 0; i < 8; ++i) {
        h[i] = (*v)[i] + (*v)[i + 8];
    }
    return ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]));
}

/* Columns [j0, j1) of y[n x out] = x[n x in] * w[out x in]^T for a few rows of x (the
 * attention of a small batch): w read once per four rows of x, two of its rows at a time
 * against four of x (eight accumulators of sixteen lanes), where sgemm first copies the whole of
 * w into its packed layout on every call (fc1 of 960 channels: 920 KB). A depthwise 960-channel
 * layer at 7x7, batch 16, one thread: 0.94 of its time (AVX-512 Xeon, in-process,
 * interleaved). Each output: sixteen lane sums over the reduction, folded in a fixed order,
 * then the tail, so the same bits on every instruction set and thread count, and whatever the
 * range of columns a call computes. */
enum { FC_ROWS = 4 };
DC_FC_CLONES
static void fc_few_rows(size_t n, size_t in, size_t out, const float *x, const float *w,
                        size_t j0, size_t j1, float *y) {
    const size_t whole = in / 16 * 16;
    for (size_t r0 = 0; r0 < n; r0 += FC_ROWS) {
        const size_t rows = n - r0 < FC_ROWS ? n - r0 : FC_ROWS;
        const float *xr[FC_ROWS];
        for (size_t i = 0; i < FC_ROWS; ++i) {
            xr[i] = x + (r0 + (i < rows ? i : rows - 1)) * in; /* a repeat, never stored */
        }
        for (size_t j = j0; j < j1; j += 2) {
            const size_t cols = j1 - j < 2 ? j1 - j : 2;
            const float *w0 = w + j * in, *w1 = w + (j + cols - 1) * in;
            const float *next = w + (j + 2 < j1 ? j + 2 : j) * in; /* as in fc_one_row */
            dc_fc_v16 a0[FC_ROWS] = {{0}}, a1[FC_ROWS] = {{0}};
            for (size_t c = 0; c < whole; c += 16) {
                dc_fc_v16 u0, u1;
                DC_PREFETCH(next + 2 * c);
                DC_PREFETCH(next + 2 * c + 16);
                memcpy(&u0, w0 + c, sizeof u0);
                memcpy(&u1, w1 + c, sizeof u1);
                for (size_t i = 0; i < FC_ROWS; ++i) {
                    dc_fc_v16 v;
                    memcpy(&v, xr[i] + c, sizeof v);
                    a0[i] += u0 * v;
                    a1[i] += u1 * v;
                }
            }
            for (size_t i = 0; i < rows; ++i) {
                float s0 = fc_lanes_sum(&a0[i]), s1 = fc_lanes_sum(&a1[i]);
                for (size_t c = whole; c < in; ++c) {
                    s0 += w0[c] * xr[i][c];
                    s1 += w1[c] * xr[i][c];
                }
                float *yr = y + (r0 + i) * out + j;
                yr[0] = s0;
                if (cols == 2) {
                    yr[1] = s1;
                }
            }
        }
    }
}

/* The same for one row of x (one sample): four rows of w at a time, each output summed exactly
 * as fc_few_rows sums it (the same products, lane sums and tail, in the same order), so a
 * sample's attention has the same bits at batch 1 as in a small batch. The four accumulators
 * are named: an array of them GCC 12 may keep on the stack. */
DC_FC_CLONES
static void fc_one_row(size_t in, const float *x, const float *w, size_t j0, size_t j1,
                       float *y) {
    const size_t whole = in / 16 * 16;
    for (size_t j = j0; j < j1; j += 4) {
        const size_t units = j1 - j < 4 ? j1 - j : 4;
        const float *w0 = w + j * in, *w1 = w + (j + (units > 1 ? 1 : 0)) * in;
        const float *w2 = w + (j + (units > 2 ? 2 : 0)) * in;
        const float *w3 = w + (j + (units > 3 ? 3 : 0)) * in; /* repeats, never stored */
        /* The next four rows (one block of 4 * in floats) are prefetched four lines a step, as
         * fast as these rows are read: four streams that jump a row ahead at each group are
         * what the hardware prefetcher follows worst (the last group: its own rows again). */
        const float *next = w + (j + 4 < j1 ? j + 4 : j) * in;
        dc_fc_v16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (size_t c = 0; c < whole; c += 16) {
            dc_fc_v16 v, u0, u1, u2, u3;
            DC_PREFETCH(next + 4 * c);
            DC_PREFETCH(next + 4 * c + 16);
            DC_PREFETCH(next + 4 * c + 32);
            DC_PREFETCH(next + 4 * c + 48);
            memcpy(&v, x + c, sizeof v);
            memcpy(&u0, w0 + c, sizeof u0);
            memcpy(&u1, w1 + c, sizeof u1);
            memcpy(&u2, w2 + c, sizeof u2);
            memcpy(&u3, w3 + c, sizeof u3);
            a0 += u0 * v;
            a1 += u1 * v;
            a2 += u2 * v;
            a3 += u3 * v;
        }
        const dc_fc_v16 *acc[4] = {&a0, &a1, &a2, &a3};
        const float *wr[4] = {w0, w1, w2, w3};
        for (size_t u = 0; u < units; ++u) {
            float sum = fc_lanes_sum(acc[u]);
            for (size_t c = whole; c < in; ++c) {
                sum += wr[u][c] * x[c];
            }
            y[j + u] = sum;
        }
    }
}
#endif

/* Batches up to this size take fc_few_rows (one sample: fc_one_row). It reads w n/4 times,
 * sgemm once (into its packed copy), so large batches stay with sgemm; the bound was not tuned
 * (the workload's batches are 1 and 16). */
enum { FC_FEW_ROWS = 32 };

/* Columns [j0, j1) of y[n x out] = x[n x in] * w[out x in]^T + b, then optionally ReLU. The
 * whole range only, unless dc_attention_splits(n). */
static void fully_connected(size_t n, size_t in, size_t out, const float *x, const float *w,
                            const float *b, int relu, size_t j0, size_t j1, float *y) {
#if defined(__GNUC__)
    if (n == 1) {
        fc_one_row(in, x, w, j0, j1, y);
    } else if (n <= FC_FEW_ROWS) {
        fc_few_rows(n, in, out, x, w, j0, j1, y);
    } else
#endif
    if (n == 1) {
        /* One sample: a matrix-vector product reads w once, where sgemm would first pack it. */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)out, (blasint)in, 1.0f, w,
                    (blasint)in, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)out,
                    (blasint)in, 1.0f, x, (blasint)in, w, (blasint)in, 0.0f, y, (blasint)out);
    }
    for (size_t r = 0; r < n; ++r) {
        float *row = y + r * out;
        for (size_t j = j0; j < j1; ++j) {
            float v = row[j] + (b != NULL ? b[j] : 0.0f);
            row[j] = relu && !(v > 0.0f) && !isnan(v) ? 0.0f : v;
        }
    }
}

bool dc_attention_splits(size_t n) {
#if defined(__GNUC__)
    return n >= 1 && n <= FC_FEW_ROWS;
#else
    (void)n;
    return false;
#endif
}

void dc_fc_forward(size_t n, size_t in, size_t out, const float *x, const float *w,
                   const float *b, size_t j0, size_t j1, float *y) {
    fully_connected(n, in, out, x, w, b, 0, j0, j1, y);
}

void dc_attention_hidden(const dc_attention *att, size_t n, const float *pooled,
                         float *hidden_buf, size_t j0, size_t j1) {
    fully_connected(n, att->channels, att->hidden, pooled, att->fc1_weight, att->fc1_bias, 1, j0,
                    j1, hidden_buf);
}

void dc_attention_finish(const dc_attention *att, size_t n, const float *hidden_buf,
                         float temperature, float *pi) {
    fully_connected(n, att->hidden, att->kernels, hidden_buf, att->fc2_weight, att->fc2_bias, 0,
                    0, att->kernels, pi);
    dc_softmax_rows(pi, n, att->kernels, temperature);
}

void dc_attention_forward(const dc_attention *att, size_t n, const float *pooled,
                          float temperature, float *hidden_buf, float *pi) {
    dc_attention_hidden(att, n, pooled, hidden_buf, 0, att->hidden);
    dc_attention_finish(att, n, hidden_buf, temperature, pi);
}

/* db[j] (+)= sum over the n rows of d[:, j]. */
static void column_sums(const float *d, size_t n, size_t cols, int accumulate, float *db) {
    for (size_t j = 0; j < cols; ++j) {
        float acc = 0.0f;
        for (size_t r = 0; r < n; ++r) {
            acc += d[r * cols + j];
        }
        db[j] = accumulate ? db[j] + acc : acc;
    }
}

/* Parameter gradients of y = x w^T + b from dy [n x out]: dw [out x in] (+)= dy^T x. */
static void fully_connected_grads(size_t n, size_t in, size_t out, const float *x,
                                  const float *dy, float *dw, float *db, int accumulate) {
    if (dw != NULL) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)out, (blasint)in,
                    (blasint)n, 1.0f, dy, (blasint)out, x, (blasint)in,
                    accumulate ? 1.0f : 0.0f, dw, (blasint)in);
    }
    if (db != NULL) {
        column_sums(dy, n, out, accumulate, db);
    }
}

void dc_attention_backward(const dc_attention *att, size_t n, const float *pooled,
                           const float *hidden_buf, const float *pi, float temperature,
                           float *dpi, float *du, const dc_attention_grads *grads,
                           float *dpooled) {
    const size_t k = att->kernels, h = att->hidden;
    for (size_t r = 0; r < n; ++r) {
        const float *p = pi + r * k;
        float *d = dpi + r * k;
        float dot = 0.0f;
        for (size_t j = 0; j < k; ++j) {
            dot += d[j] * p[j];
        }
        for (size_t j = 0; j < k; ++j) {
            d[j] = p[j] * (d[j] - dot) / temperature;
        }
    }
    fully_connected_grads(n, h, k, hidden_buf, dpi, grads->fc2_weight, grads->fc2_bias,
                          grads->accumulate);
    if (grads->fc1_weight == NULL && grads->fc1_bias == NULL && dpooled == NULL) {
        return;
    }
    /* du[n x h] = dz[n x k] * fc2_weight[k x h], then through the ReLU. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)h, (blasint)k,
                1.0f, dpi, (blasint)k, att->fc2_weight, (blasint)h, 0.0f, du, (blasint)h);
    for (size_t i = 0; i < n * h; ++i) {
        if (!(hidden_buf[i] > 0.0f)) {
            du[i] = 0.0f;
        }
    }
    fully_connected_grads(n, att->channels, h, pooled, du, grads->fc1_weight, grads->fc1_bias,
                          grads->accumulate);
    if (dpooled != NULL) {
        /* dpooled[n x c] = du[n x h] * fc1_weight[h x c] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n,
                    (blasint)att->channels, (blasint)h, 1.0f, du, (blasint)h, att->fc1_weight,
                    (blasint)att->channels, 0.0f, dpooled, (blasint)att->channels);
    }
}

void dc_global_avg_pool_backward(const float *dpooled, size_t n, size_t channels, size_t spatial,
                                 float *dx) {
    const float scale = 1.0f / (float)spatial;
    for (size_t row = 0; row < n * channels; ++row) {
        const float g = dpooled[row] * scale;
        float *p = dx + row * spatial;
        for (size_t i = 0; i < spatial; ++i) {
            p[i] += g;
        }
    }
}
