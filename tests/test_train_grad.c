/* Finite-difference checks of every backward in the training module. Each case computes a scalar
 * L = sum(r * y) (or the loss itself) with a double-precision forward written here from the
 * definitions, differentiates it numerically by central differences in double, and compares
 * with the module's float gradients for dy = r. The last case chains linear -> batch norm ->
 * ReLU -> linear -> cross-entropy, as a training step does. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dynconv_train.h"
#include "testutil.h"

/* Step of the central difference: truncation error ~ h^2, rounding ~ 1e-16 / h, both far below
 * the float error of the gradients being checked. */
#define FD_STEP 1e-5

typedef double (*loss_fn)(const void *ctx);

/* Central differences of f with respect to every element of p (which f reads through ctx),
 * compared with the float gradient `analytic`. */
static void fd_check(const char *what, double *p, size_t n, loss_fn f, const void *ctx,
                     const float *analytic) {
    double *num = tu_alloc(n * sizeof *num);
    for (size_t i = 0; i < n; ++i) {
        const double keep = p[i];
        p[i] = keep + FD_STEP;
        const double up = f(ctx);
        p[i] = keep - FD_STEP;
        const double down = f(ctx);
        p[i] = keep;
        num[i] = (up - down) / (2.0 * FD_STEP);
    }
    assert_true(tu_nontrivial(num, n));
    assert_int_equal(tu_count_mismatches(what, analytic, num, n, TU_RTOL, TU_ATOL), 0);
    free(num);
}

static double *to_double(const float *src, size_t n) {
    double *d = tu_alloc(n * sizeof *d);
    for (size_t i = 0; i < n; ++i) {
        d[i] = src[i];
    }
    return d;
}

static float *random_floats(tu_rng *rng, size_t n, float lo, float hi) {
    float *p = tu_alloc(n * sizeof *p);
    tu_fill_uniform(rng, p, n, lo, hi);
    return p;
}

static float *zeros(size_t n) {
    float *p = tu_alloc(n * sizeof *p);
    memset(p, 0, n * sizeof *p);
    return p;
}

/* ---- batch norm --------------------------------------------------------------------------- */

typedef struct bn_ctx {
    size_t n, c, plane;
    double eps;
    double *x, *gamma, *beta;
    const double *r;
} bn_ctx;

/* Training-mode batch norm in double, y[i] written through `out` when not NULL. */
static double bn_loss_out(const bn_ctx *b, double *out) {
    double loss = 0.0;
    const size_t m = b->n * b->plane;
    for (size_t c = 0; c < b->c; ++c) {
        double mean = 0.0, var = 0.0;
        for (size_t i = 0; i < b->n; ++i) {
            for (size_t j = 0; j < b->plane; ++j) {
                mean += b->x[(i * b->c + c) * b->plane + j];
            }
        }
        mean /= (double)m;
        for (size_t i = 0; i < b->n; ++i) {
            for (size_t j = 0; j < b->plane; ++j) {
                const double d = b->x[(i * b->c + c) * b->plane + j] - mean;
                var += d * d;
            }
        }
        var /= (double)m;
        for (size_t i = 0; i < b->n; ++i) {
            for (size_t j = 0; j < b->plane; ++j) {
                const size_t at = (i * b->c + c) * b->plane + j;
                const double y = b->gamma[c] * (b->x[at] - mean) / sqrt(var + b->eps) + b->beta[c];
                if (out != NULL) {
                    out[at] = y;
                }
                loss += b->r[at] * y;
            }
        }
    }
    return loss;
}

static double bn_loss(const void *ctx) { return bn_loss_out(ctx, NULL); }

static void batchnorm_gradients(void **state) {
    (void)state;
    static const struct {
        size_t n, c, h, w;
        float eps;
    } cases[] = {{3, 2, 3, 4, 1e-5f}, {5, 3, 1, 1, 1e-5f}, {2, 2, 2, 2, 0.1f}};
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ++ci) {
        const size_t n = cases[ci].n, c = cases[ci].c, plane = cases[ci].h * cases[ci].w;
        const size_t total = n * c * plane;
        float *x = random_floats(&rng, total, -2, 2), *r = random_floats(&rng, total, -1, 1);
        float *gamma = random_floats(&rng, c, 0.5f, 1.5f), *beta = random_floats(&rng, c, -1, 1);
        float *rm = zeros(c), *rv = zeros(c), *y = zeros(total), *mean = zeros(c);
        float *invstd = zeros(c), *dx = zeros(total), *dgamma = zeros(c), *dbeta = zeros(c);
        const dct_batchnorm2d bn = {(int64_t)c, cases[ci].eps, 0.1f, gamma, beta, rm, rv};
        const int64_t N = (int64_t)n, H = (int64_t)cases[ci].h, W = (int64_t)cases[ci].w;
        assert_int_equal(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, invstd),
                         DYNCONV_OK);
        assert_int_equal(
            dct_batchnorm2d_backward(&bn, N, H, W, x, r, mean, invstd, dx, dgamma, dbeta, 0),
            DYNCONV_OK);

        bn_ctx b = {n, c, plane, cases[ci].eps, to_double(x, total), to_double(gamma, c),
                    to_double(beta, c), to_double(r, total)};
        double *want_y = tu_alloc(total * sizeof *want_y);
        bn_loss_out(&b, want_y);
        assert_int_equal(tu_count_mismatches("y", y, want_y, total, TU_RTOL, TU_ATOL), 0);
        fd_check("dx", b.x, total, bn_loss, &b, dx);
        fd_check("dgamma", b.gamma, c, bn_loss, &b, dgamma);
        fd_check("dbeta", b.beta, c, bn_loss, &b, dbeta);

        /* Parameters only: dx NULL gives the same parameter gradients, here accumulated. */
        assert_int_equal(dct_batchnorm2d_backward(&bn, N, H, W, x, r, mean, invstd, NULL, dgamma,
                                                  dbeta, DYNCONV_BACKWARD_ACCUMULATE),
                         DYNCONV_OK);
        for (size_t i = 0; i < c; ++i) {
            dgamma[i] *= 0.5f;
            dbeta[i] *= 0.5f;
        }
        fd_check("dgamma (accumulated twice, halved)", b.gamma, c, bn_loss, &b, dgamma);
        fd_check("dbeta (accumulated twice, halved)", b.beta, c, bn_loss, &b, dbeta);

        free(want_y);
        free(b.x);
        free(b.gamma);
        free(b.beta);
        free((void *)b.r);
        float *bufs[] = {x, r, gamma, beta, rm, rv, y, mean, invstd, dx, dgamma, dbeta};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; ++i) {
            free(bufs[i]);
        }
    }
}

/* ---- linear ------------------------------------------------------------------------------- */

typedef struct linear_ctx {
    size_t n, din, dout;
    double *x, *w, *b;
    const double *r;
} linear_ctx;

static double linear_loss(const void *ctx) {
    const linear_ctx *l = ctx;
    double loss = 0.0;
    for (size_t i = 0; i < l->n; ++i) {
        for (size_t o = 0; o < l->dout; ++o) {
            double y = l->b[o];
            for (size_t k = 0; k < l->din; ++k) {
                y += l->w[o * l->din + k] * l->x[i * l->din + k];
            }
            loss += l->r[i * l->dout + o] * y;
        }
    }
    return loss;
}

static void linear_gradients(void **state) {
    (void)state;
    enum { N = 4, DIN = 6, DOUT = 3 };
    tu_rng rng;
    tu_rng_seed(&rng, 12);
    float *x = random_floats(&rng, N * DIN, -1, 1), *w = random_floats(&rng, DOUT * DIN, -1, 1);
    float *b = random_floats(&rng, DOUT, -1, 1), *r = random_floats(&rng, N * DOUT, -1, 1);
    float *dx = zeros(N * DIN), *dw = zeros(DOUT * DIN), *db = zeros(DOUT);
    assert_int_equal(dct_linear_backward(N, DIN, DOUT, x, w, r, dx, dw, db, 0), DYNCONV_OK);
    linear_ctx l = {N, DIN, DOUT, to_double(x, N * DIN), to_double(w, DOUT * DIN),
                    to_double(b, DOUT), to_double(r, N * DOUT)};
    fd_check("dx", l.x, N * DIN, linear_loss, &l, dx);
    fd_check("dweight", l.w, DOUT * DIN, linear_loss, &l, dw);
    fd_check("dbias", l.b, DOUT, linear_loss, &l, db);
    free(l.x);
    free(l.w);
    free(l.b);
    free((void *)l.r);
    float *bufs[] = {x, w, b, r, dx, dw, db};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; ++i) {
        free(bufs[i]);
    }
}

/* ---- pooling, ReLU, cross-entropy ------------------------------------------------------------ */

typedef struct pool_ctx {
    size_t planes, h, w, k, s, oh, ow;
    double *x;
    const double *r;
} pool_ctx;

static double avg_loss(const void *ctx) {
    const pool_ctx *p = ctx;
    double loss = 0.0;
    for (size_t q = 0; q < p->planes; ++q) {
        double sum = 0.0;
        for (size_t j = 0; j < p->h * p->w; ++j) {
            sum += p->x[q * p->h * p->w + j];
        }
        loss += p->r[q] * sum / (double)(p->h * p->w);
    }
    return loss;
}

static double max_loss(const void *ctx) {
    const pool_ctx *p = ctx;
    double loss = 0.0;
    for (size_t q = 0; q < p->planes; ++q) {
        for (size_t oh = 0; oh < p->oh; ++oh) {
            for (size_t ow = 0; ow < p->ow; ++ow) {
                double best = -INFINITY;
                for (size_t i = 0; i < p->k; ++i) {
                    for (size_t j = 0; j < p->k; ++j) {
                        best = fmax(best, p->x[(q * p->h + oh * p->s + i) * p->w + ow * p->s + j]);
                    }
                }
                loss += p->r[(q * p->oh + oh) * p->ow + ow] * best;
            }
        }
    }
    return loss;
}

static double relu_loss(const void *ctx) {
    const pool_ctx *p = ctx; /* planes = count; r per element */
    double loss = 0.0;
    for (size_t i = 0; i < p->planes; ++i) {
        loss += p->r[i] * fmax(p->x[i], 0.0);
    }
    return loss;
}

static void pooling_and_relu_gradients(void **state) {
    (void)state;
    enum { N = 2, C = 3, H = 5, W = 6, K = 3, S = 2 };
    tu_rng rng;
    tu_rng_seed(&rng, 13);
    /* Values on a coarse grid plus a small jitter: no two are within FD_STEP of each other or of
     * zero, so the max and the ReLU are differentiable at every point checked. */
    float *x = tu_alloc(N * C * H * W * sizeof *x);
    for (size_t i = 0; i < N * C * H * W; ++i) {
        x[i] = (float)((double)((int)(i * 37 % 181) - 90) / 40.0 + 0.0013);
    }
    float *r = random_floats(&rng, N * C * H * W, -1, 1);
    float *dx = zeros(N * C * H * W);

    assert_int_equal(dct_global_avg_pool_backward(N, C, H, W, r, dx), DYNCONV_OK);
    pool_ctx p = {N * C, H, W, 0, 0, 0, 0, to_double(x, N * C * H * W), to_double(r, N * C * H * W)};
    fd_check("avgpool dx", p.x, N * C * H * W, avg_loss, &p, dx);

    int64_t oh, ow;
    assert_int_equal(dct_maxpool2d_output_size(H, W, K, S, &oh, &ow), DYNCONV_OK);
    assert_int_equal(oh, 2);
    assert_int_equal(ow, 2);
    float *y = zeros(N * C * 4);
    int64_t idx[N * C * 4];
    assert_int_equal(dct_maxpool2d_forward(N, C, H, W, K, S, x, y, idx), DYNCONV_OK);
    assert_int_equal(dct_maxpool2d_backward(N, C, H, W, K, S, r, idx, dx), DYNCONV_OK);
    p.k = K;
    p.s = S;
    p.oh = 2;
    p.ow = 2;
    /* Mostly zero by nature: compare directly rather than through fd_check's triviality test. */
    double *num = tu_alloc(N * C * H * W * sizeof *num);
    for (size_t i = 0; i < N * C * H * W; ++i) {
        const double keep = p.x[i];
        p.x[i] = keep + FD_STEP;
        const double up = max_loss(&p);
        p.x[i] = keep - FD_STEP;
        num[i] = (up - max_loss(&p)) / (2.0 * FD_STEP);
        p.x[i] = keep;
    }
    assert_int_equal(tu_count_mismatches("maxpool dx", dx, num, N * C * H * W, TU_RTOL, TU_ATOL),
                     0);
    size_t nonzero = 0;
    for (size_t i = 0; i < N * C * H * W; ++i) {
        nonzero += num[i] != 0.0;
    }
    assert_true(nonzero >= N * C * 2); /* at least half the windows have distinct maxima */

    float *relu_y = zeros(N * C * H * W);
    assert_int_equal(dct_relu_forward(N * C * H * W, x, relu_y), DYNCONV_OK);
    assert_int_equal(dct_relu_backward(N * C * H * W, relu_y, r, dx), DYNCONV_OK);
    pool_ctx q = {N * C * H * W, 0, 0, 0, 0, 0, 0, p.x, p.r};
    fd_check("relu dx", q.x, N * C * H * W, relu_loss, &q, dx);

    free(num);
    free(relu_y);
    free(p.x);
    free((void *)p.r);
    free(x);
    free(r);
    free(dx);
    free(y);
}

typedef struct ce_ctx {
    size_t n, k;
    double *z;
    const int32_t *labels;
} ce_ctx;

static double ce_loss(const void *ctx) {
    const ce_ctx *c = ctx;
    double loss = 0.0;
    for (size_t i = 0; i < c->n; ++i) {
        double denom = 0.0;
        for (size_t j = 0; j < c->k; ++j) {
            denom += exp(c->z[i * c->k + j]);
        }
        loss += log(denom) - c->z[i * c->k + (size_t)c->labels[i]];
    }
    return loss / (double)c->n;
}

static void cross_entropy_gradient(void **state) {
    (void)state;
    enum { N = 5, K = 4 };
    tu_rng rng;
    tu_rng_seed(&rng, 14);
    float *z = random_floats(&rng, N * K, -3, 3), *dz = zeros(N * K), loss = 0.0f;
    const int32_t labels[N] = {0, 3, 1, 1, 2};
    assert_int_equal(dct_softmax_cross_entropy(N, K, z, labels, &loss, dz, NULL), DYNCONV_OK);
    ce_ctx c = {N, K, to_double(z, N * K), labels};
    const double want = ce_loss(&c);
    assert_int_equal(tu_count_mismatches("loss", &loss, &want, 1, TU_RTOL, TU_ATOL), 0);
    fd_check("dlogits", c.z, N * K, ce_loss, &c, dz);
    free(c.z);
    free(z);
    free(dz);
}

/* ---- a chain, as a training step runs it ------------------------------------------------------ */

enum { CN = 6, CIN = 5, CHID = 4, CCLS = 3 };

typedef struct chain_ctx {
    double *w1, *b1, *gamma, *beta, *w2, *b2;
    const double *x;
    const int32_t *labels;
} chain_ctx;

/* linear(w1, b1) -> batch norm over the batch (H = W = 1) -> ReLU -> linear(w2, b2) -> CE. */
static double chain_loss(const void *ctx) {
    const chain_ctx *c = ctx;
    double h[CN][CHID], z[CN * CCLS];
    for (size_t i = 0; i < CN; ++i) {
        for (size_t o = 0; o < CHID; ++o) {
            h[i][o] = c->b1[o];
            for (size_t k = 0; k < CIN; ++k) {
                h[i][o] += c->w1[o * CIN + k] * c->x[i * CIN + k];
            }
        }
    }
    for (size_t o = 0; o < CHID; ++o) {
        double mean = 0.0, var = 0.0;
        for (size_t i = 0; i < CN; ++i) {
            mean += h[i][o] / CN;
        }
        for (size_t i = 0; i < CN; ++i) {
            var += (h[i][o] - mean) * (h[i][o] - mean) / CN;
        }
        for (size_t i = 0; i < CN; ++i) {
            h[i][o] = fmax(c->gamma[o] * (h[i][o] - mean) / sqrt(var + 1e-5) + c->beta[o], 0.0);
        }
    }
    for (size_t i = 0; i < CN; ++i) {
        for (size_t o = 0; o < CCLS; ++o) {
            z[i * CCLS + o] = c->b2[o];
            for (size_t k = 0; k < CHID; ++k) {
                z[i * CCLS + o] += c->w2[o * CHID + k] * h[i][k];
            }
        }
    }
    const ce_ctx ce = {CN, CCLS, z, c->labels};
    return ce_loss(&ce);
}

static void chained_step_gradients(void **state) {
    (void)state;
    tu_rng rng;
    tu_rng_seed(&rng, 15);
    float *x = random_floats(&rng, CN * CIN, -1, 1);
    float *w1 = random_floats(&rng, CHID * CIN, -1, 1), *b1 = random_floats(&rng, CHID, -1, 1);
    float *gamma = random_floats(&rng, CHID, 0.5f, 1.5f), *beta = random_floats(&rng, CHID, 0, 1);
    float *w2 = random_floats(&rng, CCLS * CHID, -1, 1), *b2 = random_floats(&rng, CCLS, -1, 1);
    const int32_t labels[CN] = {0, 1, 2, 2, 1, 0};
    float rm[CHID] = {0}, rv[CHID] = {0}, mean[CHID], invstd[CHID], loss;
    float h[CN * CHID], a[CN * CHID], z[CN * CCLS], dz[CN * CCLS], da[CN * CHID], dh[CN * CHID];
    float dw1[CHID * CIN] = {0}, db1[CHID] = {0}, dgamma[CHID] = {0}, dbeta[CHID] = {0};
    float dw2[CCLS * CHID] = {0}, db2[CCLS] = {0};
    const dct_batchnorm2d bn = {CHID, 1e-5f, 0.1f, gamma, beta, rm, rv};

    assert_int_equal(dct_linear_forward(CN, CIN, CHID, x, w1, b1, h), DYNCONV_OK);
    assert_int_equal(dct_batchnorm2d_forward_train(&bn, CN, 1, 1, h, a, mean, invstd),
                     DYNCONV_OK);
    assert_int_equal(dct_relu_forward(CN * CHID, a, a), DYNCONV_OK);
    assert_int_equal(dct_linear_forward(CN, CHID, CCLS, a, w2, b2, z), DYNCONV_OK);
    assert_int_equal(dct_softmax_cross_entropy(CN, CCLS, z, labels, &loss, dz, NULL), DYNCONV_OK);
    assert_int_equal(dct_linear_backward(CN, CHID, CCLS, a, w2, dz, da, dw2, db2, 0), DYNCONV_OK);
    assert_int_equal(dct_relu_backward(CN * CHID, a, da, da), DYNCONV_OK);
    assert_int_equal(
        dct_batchnorm2d_backward(&bn, CN, 1, 1, h, da, mean, invstd, dh, dgamma, dbeta, 0),
        DYNCONV_OK);
    assert_int_equal(dct_linear_backward(CN, CIN, CHID, x, w1, dh, NULL, dw1, db1, 0), DYNCONV_OK);

    chain_ctx c = {to_double(w1, CHID * CIN), to_double(b1, CHID), to_double(gamma, CHID),
                   to_double(beta, CHID),     to_double(w2, CCLS * CHID), to_double(b2, CCLS),
                   to_double(x, CN * CIN),    labels};
    const double want = chain_loss(&c);
    assert_int_equal(tu_count_mismatches("loss", &loss, &want, 1, TU_RTOL, TU_ATOL), 0);
    fd_check("dw1", c.w1, CHID * CIN, chain_loss, &c, dw1);
    /* b1 is cancelled exactly by the batch norm's mean: its gradient is zero (up to rounding). */
    for (size_t i = 0; i < CHID; ++i) {
        assert_true(fabsf(db1[i]) < 1e-6f);
    }
    fd_check("dgamma", c.gamma, CHID, chain_loss, &c, dgamma);
    fd_check("dbeta", c.beta, CHID, chain_loss, &c, dbeta);
    fd_check("dw2", c.w2, CCLS * CHID, chain_loss, &c, dw2);
    fd_check("db2", c.b2, CCLS, chain_loss, &c, db2);
    double *ptrs[] = {c.w1, c.b1, c.gamma, c.beta, c.w2, c.b2, (double *)c.x};
    for (size_t i = 0; i < sizeof ptrs / sizeof *ptrs; ++i) {
        free(ptrs[i]);
    }
    float *bufs[] = {x, w1, b1, gamma, beta, w2, b2};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; ++i) {
        free(bufs[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batchnorm_gradients),
        cmocka_unit_test(linear_gradients),
        cmocka_unit_test(pooling_and_relu_gradients),
        cmocka_unit_test(cross_entropy_gradient),
        cmocka_unit_test(chained_step_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
