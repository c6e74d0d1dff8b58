/* The training module's contract outside the numbers: every invalid argument gives its
 * documented status and a message naming the function, and leaves every output untouched; plus
 * exact small cases (ties in max pooling, NaN through ReLU, extreme logits, exact integers). */
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

#define SENTINEL 12345.0f

static void fill(float *p, size_t n, float v) {
    for (size_t i = 0; i < n; ++i) {
        p[i] = v;
    }
}

static void assert_all(const float *p, size_t n, float v) {
    for (size_t i = 0; i < n; ++i) {
        assert_true(p[i] == v);
    }
}

/* The status, and a message that names the failing function. */
static void expect_fail(dynconv_status got, dynconv_status want, const char *fn) {
    assert_int_equal(got, want);
    assert_non_null(strstr(dct_last_error_message(), fn));
}

enum { N = 2, C = 3, H = 2, W = 2, T = N * C * H * W };

static void batchnorm_errors(void **state) {
    (void)state;
    float x[T], y[T], mean[C], invstd[C], dx[T], dg[C], db[C];
    float gamma[C] = {1, 1, 1}, beta[C] = {0, 0, 0}, rm[C] = {0, 0, 0}, rv[C] = {1, 1, 1};
    for (int i = 0; i < T; ++i) {
        x[i] = (float)(i % 5);
    }
    fill(y, T, SENTINEL);
    fill(mean, C, SENTINEL);
    fill(invstd, C, SENTINEL);
    dct_batchnorm2d bn = {C, 1e-5f, 0.1f, gamma, beta, rm, rv};
    static const char fwd[] = "dct_batchnorm2d_forward_train";

    expect_fail(dct_batchnorm2d_forward_train(NULL, N, H, W, x, y, mean, invstd),
                DYNCONV_ERROR_NULL_POINTER, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, NULL, y, mean, invstd),
                DYNCONV_ERROR_NULL_POINTER, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, 0, H, W, x, y, mean, invstd),
                DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, N, -1, W, x, y, mean, invstd),
                DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, INT64_MAX / 2, 4, W, x, y, mean, invstd),
                DYNCONV_ERROR_SIZE_OVERFLOW, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, 1, 1, 1, x, y, mean, invstd),
                DYNCONV_ERROR_INVALID_SHAPE, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, x, x, mean, invstd),
                DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, mean),
                DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    const float bad_eps[] = {0.0f, -1.0f, INFINITY, NAN};
    for (size_t i = 0; i < 4; ++i) {
        bn.eps = bad_eps[i];
        expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, invstd),
                    DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    }
    bn.eps = 1e-5f;
    const float bad_momentum[] = {-0.1f, 1.5f, NAN};
    for (size_t i = 0; i < 3; ++i) {
        bn.momentum = bad_momentum[i];
        expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, invstd),
                    DYNCONV_ERROR_INVALID_ARGUMENT, fwd);
    }
    bn.momentum = 0.1f;
    bn.running_var = NULL;
    expect_fail(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, invstd),
                DYNCONV_ERROR_NULL_POINTER, fwd);
    bn.running_var = rv;
    assert_all(y, T, SENTINEL);
    assert_all(mean, C, SENTINEL);
    assert_all(invstd, C, SENTINEL);
    assert_all(rm, C, 0.0f);
    assert_all(rv, C, 1.0f);

    /* Eval: in place is fine, a shifted overlap is not. */
    float big[T + 1];
    fill(big, T + 1, 1.0f);
    expect_fail(dct_batchnorm2d_forward_eval(&bn, N, H, W, big, big + 1),
                DYNCONV_ERROR_INVALID_ARGUMENT, "dct_batchnorm2d_forward_eval");
    assert_all(big, T + 1, 1.0f);

    assert_int_equal(dct_batchnorm2d_forward_train(&bn, N, H, W, x, y, mean, invstd), DYNCONV_OK);
    fill(dx, T, SENTINEL);
    fill(dg, C, SENTINEL);
    fill(db, C, SENTINEL);
    static const char bwd[] = "dct_batchnorm2d_backward";
    expect_fail(dct_batchnorm2d_backward(&bn, N, H, W, x, y, mean, invstd, dx, NULL, db, 0),
                DYNCONV_ERROR_NULL_POINTER, bwd);
    expect_fail(dct_batchnorm2d_backward(&bn, N, H, W, x, y, mean, invstd, y, dg, db, 0),
                DYNCONV_ERROR_INVALID_ARGUMENT, bwd);
    expect_fail(dct_batchnorm2d_backward(&bn, N, H, W, x, y, mean, invstd, dx, dg, dg, 0),
                DYNCONV_ERROR_INVALID_ARGUMENT, bwd);
    expect_fail(dct_batchnorm2d_backward(&bn, N, 0, W, x, y, mean, invstd, dx, dg, db, 0),
                DYNCONV_ERROR_INVALID_ARGUMENT, bwd);
    /* Flags as the library's backward: only DYNCONV_BACKWARD_ACCUMULATE is known. */
    expect_fail(dct_batchnorm2d_backward(&bn, N, H, W, x, y, mean, invstd, dx, dg, db, 1u << 7),
                DYNCONV_ERROR_UNSUPPORTED, bwd);
    assert_all(dx, T, SENTINEL);
    assert_all(dg, C, SENTINEL);
    assert_all(db, C, SENTINEL);
}

static void layer_errors(void **state) {
    (void)state;
    float x[T], y[T], dx[T];
    for (int i = 0; i < T; ++i) {
        x[i] = (float)i - 10.0f;
    }
    fill(y, T, SENTINEL);
    fill(dx, T, SENTINEL);
    expect_fail(dct_relu_forward(0, x, y), DYNCONV_ERROR_INVALID_ARGUMENT, "dct_relu_forward");
    expect_fail(dct_relu_forward(T, x, NULL), DYNCONV_ERROR_NULL_POINTER, "dct_relu_forward");
    expect_fail(dct_relu_forward(T - 1, x, x + 1), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_relu_forward");
    expect_fail(dct_relu_backward(T, x, y, x), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_relu_backward");
    expect_fail(dct_global_avg_pool_forward(N, C, H, 0, x, y), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_global_avg_pool_forward");
    expect_fail(dct_global_avg_pool_backward(N, C, H, W, x, x), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_global_avg_pool_backward");

    int64_t oh = -1, ow = -1, idx[T];
    expect_fail(dct_maxpool2d_output_size(2, 2, 3, 1, &oh, &ow), DYNCONV_ERROR_INVALID_SHAPE,
                "dct_maxpool2d_output_size");
    expect_fail(dct_maxpool2d_output_size(2, 2, 2, 0, &oh, &ow), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_maxpool2d_output_size");
    assert_true(oh == -1 && ow == -1);
    expect_fail(dct_maxpool2d_forward(N, C, H, W, 3, 1, x, y, idx), DYNCONV_ERROR_INVALID_SHAPE,
                "dct_maxpool2d_forward");
    expect_fail(dct_maxpool2d_forward(N, C, H, W, 2, 2, x, y, NULL), DYNCONV_ERROR_NULL_POINTER,
                "dct_maxpool2d_forward");
    /* 2^60 floats of input still fit in ptrdiff_t bytes; 2^60 int64 indices do not. */
    expect_fail(dct_maxpool2d_forward((int64_t)1 << 58, 1, 2, 2, 1, 1, x, y, idx),
                DYNCONV_ERROR_SIZE_OVERFLOW, "dct_maxpool2d_forward");
    /* argmax outside the plane is caught before dx is written. */
    const float dy[N * C] = {1, 2, 3, 4, 5, 6};
    int64_t bad[N * C] = {0, 1, 2, 3, 4, 0};
    expect_fail(dct_maxpool2d_backward(N, C, H, W, 2, 2, dy, bad, dx),
                DYNCONV_ERROR_INVALID_ARGUMENT, "dct_maxpool2d_backward");
    bad[4] = -1;
    expect_fail(dct_maxpool2d_backward(N, C, H, W, 2, 2, dy, bad, dx),
                DYNCONV_ERROR_INVALID_ARGUMENT, "dct_maxpool2d_backward");
    assert_all(y, T, SENTINEL);
    assert_all(dx, T, SENTINEL);

    float w[6] = {1, 2, 3, 4, 5, 6}, gw[6], gb[3];
    fill(gw, 6, SENTINEL);
    fill(gb, 3, SENTINEL);
    expect_fail(dct_linear_forward(2, 2, 3, x, w, NULL, NULL), DYNCONV_ERROR_NULL_POINTER,
                "dct_linear_forward");
    expect_fail(dct_linear_forward(2, 2, 3, x, w, NULL, x + 2), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_linear_forward");
    expect_fail(dct_linear_forward(2, (int64_t)1 << 31, 1, x, w, NULL, y),
                DYNCONV_ERROR_SIZE_OVERFLOW, "dct_linear_forward");
    expect_fail(dct_linear_backward(2, 2, 3, x, w, y, dx, NULL, gb, 0), DYNCONV_ERROR_NULL_POINTER,
                "dct_linear_backward");
    expect_fail(dct_linear_backward(2, 2, 3, x, w, y, dx, gw, gw, 0), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_linear_backward");
    expect_fail(dct_linear_backward(2, 2, 3, x, w, y, dx, w, gb, 0), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_linear_backward");
    expect_fail(dct_linear_backward(2, 2, 3, x, w, y, dx, gw, gb, 1u << 7),
                DYNCONV_ERROR_UNSUPPORTED, "dct_linear_backward");
    assert_all(gw, 6, SENTINEL);
    assert_all(gb, 3, SENTINEL);
    assert_all(dx, T, SENTINEL);
}

static void loss_errors(void **state) {
    (void)state;
    const float z[6] = {1, 2, 3, 4, 5, 6};
    float d[6], loss = SENTINEL;
    int64_t correct = 77;
    fill(d, 6, SENTINEL);
    const int32_t bad_high[2] = {0, 3}, bad_neg[2] = {-1, 0}, good[2] = {2, 0};
    static const char fn[] = "dct_softmax_cross_entropy";
    expect_fail(dct_softmax_cross_entropy(2, 3, z, bad_high, &loss, d, &correct),
                DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    assert_non_null(strstr(dct_last_error_message(), "labels[1]"));
    expect_fail(dct_softmax_cross_entropy(2, 3, z, bad_neg, &loss, d, &correct),
                DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    expect_fail(dct_softmax_cross_entropy(2, 3, z, good, NULL, d, &correct),
                DYNCONV_ERROR_NULL_POINTER, fn);
    expect_fail(dct_softmax_cross_entropy(2, 0, z, good, &loss, d, &correct),
                DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    expect_fail(dct_softmax_cross_entropy(2, 3, z, good, &loss, (float *)z, &correct),
                DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    assert_true(loss == SENTINEL);
    assert_int_equal(correct, 77);
    assert_all(d, 6, SENTINEL);
}

static void sgd_errors_touch_nothing(void **state) {
    (void)state;
    float v1[3] = {1, 2, 3}, g1[3] = {1, 1, 1}, m1[3] = {0, 0, 0};
    float v2[2] = {4, 5}, g2[2] = {1, 1};
    static const char fn[] = "dct_sgd_step";
    /* The bad entry comes last: the first must not have been updated either. */
    dct_param params[2] = {{v1, g1, m1, 3, true}, {v2, g2, NULL, 2, false}};
    const dct_sgd sgd = {0.1f, 0.9f, 0.0f};
    expect_fail(dct_sgd_step(&sgd, params, 2), DYNCONV_ERROR_NULL_POINTER, fn);
    assert_non_null(strstr(dct_last_error_message(), "params[1].velocity"));
    params[1].velocity = v2; /* value and velocity the same array */
    expect_fail(dct_sgd_step(&sgd, params, 2), DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    params[1].velocity = NULL;
    params[1].count = 0;
    const dct_sgd plain = {0.1f, 0.0f, 0.0f};
    expect_fail(dct_sgd_step(&plain, params, 2), DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    params[1].count = 2;
    const dct_sgd bad[] = {{0.0f, 0.9f, 0.0f}, {NAN, 0.9f, 0.0f}, {0.1f, 1.0f, 0.0f},
                           {0.1f, -0.5f, 0.0f}, {0.1f, 0.0f, -1.0f}, {0.1f, 0.0f, INFINITY}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        expect_fail(dct_sgd_step(&bad[i], params, 2), DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    }
    expect_fail(dct_sgd_step(NULL, params, 2), DYNCONV_ERROR_NULL_POINTER, fn);
    assert_true(v1[0] == 1 && v1[1] == 2 && v1[2] == 3 && v2[0] == 4 && v2[1] == 5);
    assert_all(m1, 3, 0.0f);

    /* Then a valid step, exact in binary: lr 0.5, momentum 0.5, decay 0.25 on v1 only. */
    const dct_sgd ok = {0.5f, 0.5f, 0.25f};
    float m2[2] = {0, 0};
    params[1].velocity = m2;
    assert_int_equal(dct_sgd_step(&ok, params, 2), DYNCONV_OK);
    /* v1: g = 1 + 0.25 * v = {1.25, 1.5, 1.75}; m = g; v -= 0.5 * m. */
    assert_true(v1[0] == 0.375f && v1[1] == 1.25f && v1[2] == 2.125f);
    assert_true(m1[0] == 1.25f && m1[1] == 1.5f && m1[2] == 1.75f);
    /* v2 has no decay: v -= 0.5 * 1. */
    assert_true(v2[0] == 3.5f && v2[1] == 4.5f);
    /* Second step: m = 0.5 * m + g with g from the new values. */
    assert_int_equal(dct_sgd_step(&ok, params, 2), DYNCONV_OK);
    assert_true(m1[0] == 0.5f * 1.25f + (1.0f + 0.25f * 0.375f));
    assert_true(v2[0] == 3.5f - 0.5f * 1.5f);
}

static void exact_cases(void **state) {
    (void)state;
    /* Ties: the first maximum in scan order wins, as PyTorch. */
    const float x[16] = {1, 3, 3, 0, 3, 2, 0, 3, 5, 5, 1, 1, 5, 5, 1, 1};
    float y[4];
    int64_t idx[4];
    assert_int_equal(dct_maxpool2d_forward(1, 1, 4, 4, 2, 2, x, y, idx), DYNCONV_OK);
    const int64_t want_idx[4] = {1, 2, 8, 10};
    const float want_y[4] = {3, 3, 5, 1};
    assert_memory_equal(idx, want_idx, sizeof want_idx);
    assert_memory_equal(y, want_y, sizeof want_y);
    /* Overlapping windows (kernel 2, stride 1) sum their gradients into a shared maximum. */
    const float x3[9] = {0, 0, 0, 0, 9, 0, 0, 0, 0}, dy[4] = {1, 2, 4, 8};
    float y3[4], dx3[9];
    int64_t idx3[4];
    assert_int_equal(dct_maxpool2d_forward(1, 1, 3, 3, 2, 1, x3, y3, idx3), DYNCONV_OK);
    assert_int_equal(dct_maxpool2d_backward(1, 1, 3, 3, 2, 1, dy, idx3, dx3), DYNCONV_OK);
    const float want_dx3[9] = {0, 0, 0, 0, 15, 0, 0, 0, 0};
    assert_memory_equal(dx3, want_dx3, sizeof want_dx3);

    /* ReLU: NaN passes, negatives become 0, backward masks on the output. */
    float r[4] = {NAN, -0.0f, -2.0f, 3.0f};
    assert_int_equal(dct_relu_forward(4, r, r), DYNCONV_OK);
    assert_true(isnan(r[0]) && r[2] == 0.0f && r[3] == 3.0f);
    float g[4] = {1, 1, 1, 1};
    assert_int_equal(dct_relu_backward(4, r, g, g), DYNCONV_OK);
    assert_true(g[0] == 0.0f && g[1] == 0.0f && g[2] == 0.0f && g[3] == 1.0f);

    /* Extreme logits stay finite; a confident right answer costs (almost) nothing. */
    const float z[4] = {1000.0f, -1000.0f, -1000.0f, 1000.0f};
    const int32_t labels[2] = {0, 0};
    float loss, d[4];
    int64_t correct;
    assert_int_equal(dct_softmax_cross_entropy(2, 2, z, labels, &loss, d, &correct), DYNCONV_OK);
    assert_true(fabsf(loss - 1000.0f) < 1e-3f); /* (0 + 2000) / 2 */
    assert_int_equal(correct, 1);
    assert_true(d[0] == 0.0f && d[1] == 0.0f && d[2] == -0.5f && d[3] == 0.5f);

    /* Linear with small integers is exact. */
    const float lx[4] = {1, 2, 3, 4}, lw[6] = {1, 0, -1, 2, 3, 1}, lb[3] = {10, 20, 30};
    float ly[6];
    assert_int_equal(dct_linear_forward(2, 2, 3, lx, lw, lb, ly), DYNCONV_OK);
    const float want_ly[6] = {11, 23, 35, 13, 25, 43};
    assert_memory_equal(ly, want_ly, sizeof want_ly);

    /* Global average pooling of a constant plane is that constant. */
    const float plane[6] = {2, 2, 2, 4, 4, 4};
    float avg[2];
    assert_int_equal(dct_global_avg_pool_forward(1, 2, 1, 3, plane, avg), DYNCONV_OK);
    assert_true(avg[0] == 2.0f && avg[1] == 4.0f);

    /* The linear schedule hits both ends exactly. */
    assert_true(dct_linear_schedule(30.0f, 1.0f, 0, 100) == 30.0f);
    assert_true(dct_linear_schedule(30.0f, 1.0f, 50, 100) == 15.5f);
    assert_true(dct_linear_schedule(30.0f, 1.0f, 100, 100) == 1.0f);
    assert_true(dct_linear_schedule(30.0f, 1.0f, 7, 0) == 1.0f);
}

static void rng_is_reproducible(void **state) {
    (void)state;
    dct_rng a, b;
    dct_rng_seed(&a, 99);
    dct_rng_seed(&b, 99);
    float pa[64], pb[64];
    assert_int_equal(dct_init_fan_in_uniform(&a, pa, 64, 16), DYNCONV_OK);
    assert_int_equal(dct_init_fan_in_uniform(&b, pb, 64, 16), DYNCONV_OK);
    assert_memory_equal(pa, pb, sizeof pa);
    float lo = 1, hi = -1;
    for (int i = 0; i < 64; ++i) {
        lo = fminf(lo, pa[i]);
        hi = fmaxf(hi, pa[i]);
    }
    assert_true(lo >= -0.25f && hi < 0.25f && hi - lo > 0.3f); /* bound 1/sqrt(16) */
    expect_fail(dct_init_fan_in_uniform(&a, pa, 64, 0), DYNCONV_ERROR_INVALID_ARGUMENT,
                "dct_init_fan_in_uniform");
    for (int i = 0; i < 1000; ++i) {
        assert_true(dct_rng_below(&a, 7) < 7);
    }
}

/* The training module and the library keep one message per thread: a failure of either is
 * what both dct_last_error_message() and dynconv_last_error_message() say. */
static void one_message_for_both(void **state) {
    (void)state;
    assert_int_equal(dct_relu_forward(0, NULL, NULL), DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_string_equal(dct_last_error_message(), dynconv_last_error_message());
    assert_non_null(strstr(dynconv_last_error_message(), "dct_relu_forward"));
    assert_int_equal(dynconv_conv2d_create(NULL, NULL, 1.0f, 0, NULL), DYNCONV_ERROR_NULL_POINTER);
    assert_string_equal(dct_last_error_message(), dynconv_last_error_message());
    assert_non_null(strstr(dct_last_error_message(), "dynconv_conv2d_create"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batchnorm_errors),  cmocka_unit_test(layer_errors),
        cmocka_unit_test(loss_errors),       cmocka_unit_test(sgd_errors_touch_nothing),
        cmocka_unit_test(exact_cases),       cmocka_unit_test(rng_is_reproducible),
        cmocka_unit_test(one_message_for_both),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
