/* The training module against PyTorch: batch norm (training and inference, running statistics,
 * gradients), the linear layer, softmax cross-entropy, max pooling and SGD, on the golden cases
 * of train/train_golden.c. Every gradient buffer starts from a non-zero value: by default the
 * backward overwrites it, and with DYNCONV_BACKWARD_ACCUMULATE it adds into it (dx included),
 * as the header documents; both are checked. */
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
#include "train/train_golden.h"

#define CHECK(what, got, want, n)                                                         \
    do {                                                                                  \
        assert_true(tu_nontrivial_f((want), (n)));                                        \
        assert_int_equal(tu_count_mismatches_f((what), (got), (want), (n), TU_RTOL, TU_ATOL), 0); \
    } while (0)

static float *copy_of(const float *src, size_t n) {
    float *p = tu_alloc(n * sizeof *p);
    memcpy(p, src, n * sizeof *p);
    return p;
}

static float *filled(size_t n, float value) {
    float *p = tu_alloc(n * sizeof *p);
    for (size_t i = 0; i < n; ++i) {
        p[i] = value;
    }
    return p;
}

/* p[i] -= v: takes the starting value back out of an accumulated gradient. */
static void subtract(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; ++i) {
        p[i] -= v;
    }
}

static void batchnorm_matches_pytorch(void **state) {
    (void)state;
    for (size_t ci = 0; ci < golden_bn_case_count; ++ci) {
        const golden_bn_case *g = &golden_bn_cases[ci];
        printf("case %s\n", g->name);
        const size_t c = (size_t)g->c, total = (size_t)(g->n * g->c * g->h * g->w);
        float *rm = copy_of(g->running_mean_in, c), *rv = copy_of(g->running_var_in, c);
        const dct_batchnorm2d bn = {g->c, g->eps, g->momentum, g->gamma, g->beta, rm, rv};
        float *y = filled(total, 7.0f), *mean = filled(c, 0.0f), *invstd = filled(c, 0.0f);
        assert_int_equal(dct_batchnorm2d_forward_train(&bn, g->n, g->h, g->w, g->x, y, mean,
                                                       invstd),
                         DYNCONV_OK);
        CHECK("y", y, g->y, total);
        CHECK("running_mean", rm, g->running_mean_out, c);
        CHECK("running_var", rv, g->running_var_out, c);

        float *dx = NULL, *dgamma = NULL, *dbeta = NULL;
        for (int accumulate = 0; accumulate <= 1; ++accumulate) {
            free(dx);
            free(dgamma);
            free(dbeta);
            dx = filled(total, 7.0f);
            dgamma = filled(c, 0.5f);
            dbeta = filled(c, -0.25f);
            const uint32_t flags = accumulate ? (uint32_t)DYNCONV_BACKWARD_ACCUMULATE : 0u;
            assert_int_equal(dct_batchnorm2d_backward(&bn, g->n, g->h, g->w, g->x, g->dy, mean,
                                                      invstd, dx, dgamma, dbeta, flags),
                             DYNCONV_OK);
            if (accumulate) {
                subtract(dx, total, 7.0f);
                subtract(dgamma, c, 0.5f);
                subtract(dbeta, c, -0.25f);
            }
            CHECK("dx", dx, g->dx, total);
            CHECK("dgamma", dgamma, g->dgamma, c);
            CHECK("dbeta", dbeta, g->dbeta, c);
        }

        float *y_eval = filled(total, 7.0f);
        assert_int_equal(dct_batchnorm2d_forward_eval(&bn, g->n, g->h, g->w, g->x, y_eval),
                         DYNCONV_OK);
        CHECK("y_eval", y_eval, g->y_eval, total);
        /* In place gives the same numbers. */
        float *inplace = copy_of(g->x, total);
        assert_int_equal(dct_batchnorm2d_forward_eval(&bn, g->n, g->h, g->w, inplace, inplace),
                         DYNCONV_OK);
        assert_memory_equal(inplace, y_eval, total * sizeof(float));
        free(inplace);
        free(y_eval);
        free(dx);
        free(dgamma);
        free(dbeta);
        free(y);
        free(mean);
        free(invstd);
        free(rm);
        free(rv);
    }
}

static void linear_matches_pytorch(void **state) {
    (void)state;
    for (size_t ci = 0; ci < golden_linear_train_case_count; ++ci) {
        const golden_linear_train_case *g = &golden_linear_train_cases[ci];
        printf("case %s\n", g->name);
        const size_t nx = (size_t)(g->n * g->din), ny = (size_t)(g->n * g->dout);
        const size_t nw = (size_t)(g->dout * g->din), nb = (size_t)g->dout;
        float *y = filled(ny, 7.0f), *dx = NULL, *dw = NULL, *db = NULL;
        assert_int_equal(dct_linear_forward(g->n, g->din, g->dout, g->x, g->weight, g->bias, y),
                         DYNCONV_OK);
        CHECK("y", y, g->y, ny);
        for (int accumulate = 0; accumulate <= 1; ++accumulate) {
            free(dx);
            free(dw);
            free(db);
            dx = filled(nx, 7.0f);
            dw = filled(nw, 1.0f);
            db = filled(nb, 1.0f);
            const uint32_t flags = accumulate ? (uint32_t)DYNCONV_BACKWARD_ACCUMULATE : 0u;
            assert_int_equal(dct_linear_backward(g->n, g->din, g->dout, g->x, g->weight, g->dy, dx,
                                                 dw, db, flags),
                             DYNCONV_OK);
            if (accumulate) {
                subtract(dx, nx, 7.0f);
                subtract(dw, nw, 1.0f);
                subtract(db, nb, 1.0f);
            }
            CHECK("dx", dx, g->dx, nx);
            CHECK("dweight", dw, g->dweight, nw);
            CHECK("dbias", db, g->dbias, nb);
        }
        free(y);
        free(dx);
        free(dw);
        free(db);
    }
}

static void cross_entropy_matches_pytorch(void **state) {
    (void)state;
    for (size_t ci = 0; ci < golden_ce_case_count; ++ci) {
        const golden_ce_case *g = &golden_ce_cases[ci];
        printf("case %s\n", g->name);
        const size_t total = (size_t)(g->n * g->k);
        float *d = filled(total, 7.0f), loss = -1.0f;
        int64_t correct = -1;
        assert_int_equal(dct_softmax_cross_entropy(g->n, g->k, g->logits, g->labels, &loss, d,
                                                   &correct),
                         DYNCONV_OK);
        assert_int_equal(tu_count_mismatches_f("loss", &loss, &g->loss, 1, TU_RTOL, TU_ATOL), 0);
        CHECK("dlogits", d, g->dlogits, total);
        assert_int_equal(correct, g->correct);
        free(d);
    }
}

static void maxpool_matches_pytorch(void **state) {
    (void)state;
    for (size_t ci = 0; ci < golden_maxpool_case_count; ++ci) {
        const golden_maxpool_case *g = &golden_maxpool_cases[ci];
        printf("case %s\n", g->name);
        int64_t oh = 0, ow = 0;
        assert_int_equal(dct_maxpool2d_output_size(g->h, g->w, g->k, g->s, &oh, &ow), DYNCONV_OK);
        assert_int_equal(oh, g->oh);
        assert_int_equal(ow, g->ow);
        const size_t nin = (size_t)(g->n * g->c * g->h * g->w);
        const size_t nout = (size_t)(g->n * g->c * oh * ow);
        float *y = filled(nout, 7.0f), *dx = filled(nin, 7.0f);
        int64_t *idx = tu_alloc(nout * sizeof *idx);
        assert_int_equal(dct_maxpool2d_forward(g->n, g->c, g->h, g->w, g->k, g->s, g->x, y, idx),
                         DYNCONV_OK);
        assert_memory_equal(y, g->y, nout * sizeof(float));
        assert_memory_equal(idx, g->argmax, nout * sizeof(int64_t));
        assert_int_equal(
            dct_maxpool2d_backward(g->n, g->c, g->h, g->w, g->k, g->s, g->dy, idx, dx),
            DYNCONV_OK);
        /* dx is mostly zero by nature (only window maxima receive gradient), so its anchor is
         * the non-trivial dy that gets routed. Overlapping windows sum into dx in an order
         * that may differ from PyTorch's: compare with a tolerance. */
        assert_true(tu_nontrivial_f(g->dy, nout));
        assert_int_equal(tu_count_mismatches_f("dx", dx, g->dx, nin, TU_RTOL, TU_ATOL), 0);
        free(y);
        free(dx);
        free(idx);
    }
}

static void sgd_matches_pytorch(void **state) {
    (void)state;
    for (size_t ci = 0; ci < golden_sgd_case_count; ++ci) {
        const golden_sgd_case *g = &golden_sgd_cases[ci];
        printf("case %s\n", g->name);
        const size_t n = (size_t)g->count;
        float *value = copy_of(g->start, n), *velocity = filled(n, 0.0f);
        const dct_sgd sgd = {g->lr, g->momentum, g->weight_decay};
        for (int64_t step = 0; step < g->steps; ++step) {
            const dct_param p = {value, g->grads + (size_t)step * n, velocity, g->count, true};
            assert_int_equal(dct_sgd_step(&sgd, &p, 1), DYNCONV_OK);
            CHECK("value", value, g->trajectory + (size_t)step * n, n);
        }
        free(value);
        free(velocity);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batchnorm_matches_pytorch),
        cmocka_unit_test(linear_matches_pytorch),
        cmocka_unit_test(cross_entropy_matches_pytorch),
        cmocka_unit_test(maxpool_matches_pytorch),
        cmocka_unit_test(sgd_matches_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
