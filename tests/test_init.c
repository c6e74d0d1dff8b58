/* Parameter initialisation helpers: the documented distributions (bounds and moments, checked
 * with tolerances several standard errors wide, on arrays large enough for that to be tight),
 * reproducibility from the seed, independence of the arrays' streams, and bad arguments. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "testutil.h"

/* 64 -> 32 channels in 2 groups, 3x3, K = 8, hidden 48: fan_in = 32 * 9 = 288. */
static const dynconv_conv2d_geometry geo = {
    .in_channels = 64, .out_channels = 32, .kernel_h = 3, .kernel_w = 3, .stride_h = 1,
    .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 2,
    .num_kernels = 8, .hidden = 48};
enum { N_W = 8 * 32 * 32 * 9, N_B = 8 * 32, N_FC1 = 48 * 64, N_FC1B = 48, N_FC2 = 8 * 48 };

typedef struct params {
    float w[N_W], b[N_B], fc1[N_FC1], fc1b[N_FC1B], fc2[N_FC2], fc2b[8];
} params;

static void fill(params *p, float v)
{
    float *arrays[] = {p->w, p->b, p->fc1, p->fc1b, p->fc2, p->fc2b};
    const size_t counts[] = {N_W, N_B, N_FC1, N_FC1B, N_FC2, 8};
    for (size_t a = 0; a < 6; ++a) {
        for (size_t i = 0; i < counts[a]; ++i) {
            arrays[a][i] = v;
        }
    }
}

static dynconv_status init(params *p, uint64_t seed, uint32_t flags)
{
    return dynconv_conv2d_init_parameters(&geo, seed, flags, p->w, p->b, p->fc1, p->fc1b, p->fc2,
                                          p->fc2b);
}

static void moments(const float *v, size_t n, double *mean, double *var)
{
    double s = 0.0, s2 = 0.0;
    for (size_t i = 0; i < n; ++i) {
        s += v[i];
    }
    *mean = s / (double)n;
    for (size_t i = 0; i < n; ++i) {
        s2 += ((double)v[i] - *mean) * ((double)v[i] - *mean);
    }
    *var = s2 / (double)n;
}

/* Uniform in [-bound, bound): inside the interval, reaching near both ends, mean 0 and variance
 * bound^2 / 3 within 5 standard errors. */
static void expect_uniform(const float *v, size_t n, double bound)
{
    double lo = v[0], hi = v[0], mean, var;
    for (size_t i = 0; i < n; ++i) {
        assert_true(v[i] >= -bound && v[i] < bound);
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
    }
    assert_true(lo < -0.95 * bound && hi > 0.95 * bound);
    moments(v, n, &mean, &var);
    const double want_var = bound * bound / 3.0;
    assert_true(fabs(mean) < 5.0 * sqrt(want_var / (double)n));
    /* the variance of a uniform's squared deviation is (4/45) b^4 */
    assert_true(fabs(var - want_var) < 5.0 * sqrt(4.0 / 45.0 * pow(bound, 4) / (double)n));
}

/* Normal(0, std^2): mean, variance (standard error std^2 sqrt(2/n)) and the share within one
 * standard deviation (0.6827, standard error sqrt(p(1-p)/n)). */
static void expect_normal(const float *v, size_t n, double std)
{
    double mean, var;
    moments(v, n, &mean, &var);
    assert_true(fabs(mean) < 5.0 * std / sqrt((double)n));
    assert_true(fabs(var - std * std) < 5.0 * std * std * sqrt(2.0 / (double)n));
    size_t inside = 0;
    for (size_t i = 0; i < n; ++i) {
        inside += fabs((double)v[i]) < std;
    }
    const double p = 0.682689492;
    assert_true(fabs((double)inside / (double)n - p) < 5.0 * sqrt(p * (1 - p) / (double)n));
}

static void test_conv2d_distributions(void **state)
{
    (void)state;
    params *p = tu_alloc(sizeof *p);
    fill(p, NAN);
    assert_int_equal(init(p, 42, 0), DYNCONV_OK);
    const double bound = 1.0 / sqrt(32.0 * 9.0);
    expect_uniform(p->w, N_W, bound);
    /* each of the K kernels on its own, as K separate nn.Conv2d layers would be */
    for (int k = 0; k < 8; ++k) {
        expect_uniform(p->w + k * (N_W / 8), N_W / 8, bound);
    }
    for (int i = 0; i < N_B; ++i) {
        assert_true(p->b[i] == 0.0f);
    }
    expect_normal(p->fc1, N_FC1, sqrt(2.0 / 48.0)); /* fan_out of fc1 = hidden */
    expect_normal(p->fc2, N_FC2, sqrt(2.0 / 8.0));  /* fan_out of fc2 = K */
    for (int i = 0; i < N_FC1B; ++i) {
        assert_true(p->fc1b[i] == 0.0f);
    }
    for (int i = 0; i < 8; ++i) {
        assert_true(p->fc2b[i] == 0.0f);
    }
    assert_int_equal(init(p, 42, DYNCONV_INIT_BIAS_UNIFORM), DYNCONV_OK);
    expect_uniform(p->b, N_B, bound);
    free(p);
}

static void test_reproducible_and_independent(void **state)
{
    (void)state;
    params *a = tu_alloc(sizeof *a), *b = tu_alloc(sizeof *b);
    fill(a, 0.0f);
    fill(b, 0.0f);
    assert_int_equal(init(a, 7, DYNCONV_INIT_BIAS_UNIFORM), DYNCONV_OK);
    assert_int_equal(init(b, 7, DYNCONV_INIT_BIAS_UNIFORM), DYNCONV_OK);
    assert_memory_equal(a, b, sizeof *a);
    /* another seed changes every random array */
    assert_int_equal(init(b, 8, DYNCONV_INIT_BIAS_UNIFORM), DYNCONV_OK);
    assert_memory_not_equal(a->w, b->w, sizeof a->w);
    assert_memory_not_equal(a->b, b->b, sizeof a->b);
    assert_memory_not_equal(a->fc1, b->fc1, sizeof a->fc1);
    assert_memory_not_equal(a->fc2, b->fc2, sizeof a->fc2);
    /* the arrays do not share one stream: fc1 is not a continuation or copy of the weights */
    assert_memory_not_equal(a->fc1, a->fc2, sizeof a->fc2);
    /* skipping arrays leaves the others' values as they were */
    fill(b, 3.0f);
    assert_int_equal(dynconv_conv2d_init_parameters(&geo, 7, DYNCONV_INIT_BIAS_UNIFORM, NULL,
                                                    NULL, NULL, NULL, b->fc2, NULL),
                     DYNCONV_OK);
    assert_memory_equal(a->fc2, b->fc2, sizeof a->fc2);
    for (int i = 0; i < N_W; ++i) {
        assert_true(b->w[i] == 3.0f);
    }
    free(a);
    free(b);
}

static void test_linear(void **state)
{
    (void)state;
    enum { DI = 50, DO = 40, K = 4, HID = 30 };
    const dynconv_linear_geometry g = {DI, DO, K, HID};
    float *w = tu_alloc(K * DO * DI * sizeof(float));
    float b[K * DO], fc1[HID * DI], fc1b[HID], fc2[K * HID], fc2b[K];
    assert_int_equal(dynconv_linear_init_parameters(&g, 1, DYNCONV_INIT_BIAS_UNIFORM, w, b, fc1,
                                                    fc1b, fc2, fc2b),
                     DYNCONV_OK);
    expect_uniform(w, K * DO * DI, 1.0 / sqrt((double)DI));
    expect_uniform(b, K * DO, 1.0 / sqrt((double)DI));
    expect_normal(fc1, HID * DI, sqrt(2.0 / HID));
    for (int i = 0; i < HID; ++i) {
        assert_true(fc1b[i] == 0.0f);
    }
    /* the layer built from them runs */
    const dynconv_linear_weights wt = {w, b, fc1, fc1b, fc2, fc2b};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&g, &wt, 1.0f, 0, &layer), DYNCONV_OK);
    dynconv_linear_destroy(layer);
    free(w);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    params *p = tu_alloc(sizeof *p), *untouched = tu_alloc(sizeof *untouched);
    fill(p, 5.0f);
    fill(untouched, 5.0f);
    static const char fn[] = "dynconv_conv2d_init_parameters";
    assert_int_equal(dynconv_conv2d_init_parameters(NULL, 1, 0, p->w, p->b, p->fc1, p->fc1b,
                                                    p->fc2, p->fc2b),
                     DYNCONV_ERROR_NULL_POINTER);
    assert_non_null(strstr(dynconv_last_error_message(), fn));
    assert_int_equal(init(p, 1, 0x80u), DYNCONV_ERROR_UNSUPPORTED);
    assert_non_null(strstr(dynconv_last_error_message(), "flags"));
    dynconv_conv2d_geometry g = geo;
    g.groups = 3;
    assert_int_equal(dynconv_conv2d_init_parameters(&g, 1, 0, p->w, p->b, p->fc1, p->fc1b, p->fc2,
                                                    p->fc2b),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "groups"));
    g = geo;
    g.hidden = 0;
    assert_int_equal(dynconv_conv2d_init_parameters(&g, 1, 0, p->w, p->b, p->fc1, p->fc1b, p->fc2,
                                                    p->fc2b),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    g = geo;
    g.out_channels = INT64_MAX / 2;
    g.groups = 1;
    assert_int_equal(dynconv_conv2d_init_parameters(&g, 1, 0, p->w, p->b, p->fc1, p->fc1b, p->fc2,
                                                    p->fc2b),
                     DYNCONV_ERROR_SIZE_OVERFLOW);
    assert_memory_equal(p, untouched, sizeof *p);

    const dynconv_linear_geometry lg = {4, 0, 2, 2};
    assert_int_equal(dynconv_linear_init_parameters(NULL, 1, 0, p->w, NULL, p->fc1, NULL, p->fc2,
                                                    NULL),
                     DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_linear_init_parameters(&lg, 1, 0, p->w, NULL, p->fc1, NULL, p->fc2,
                                                    NULL),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "out_features"));
    const dynconv_linear_geometry lg2 = {4, 3, 2, 2};
    assert_int_equal(dynconv_linear_init_parameters(&lg2, 1, 2u, p->w, NULL, p->fc1, NULL, p->fc2,
                                                    NULL),
                     DYNCONV_ERROR_UNSUPPORTED);
    assert_non_null(strstr(dynconv_last_error_message(), "dynconv_linear_init_parameters"));
    assert_memory_equal(p, untouched, sizeof *p);
    free(p);
    free(untouched);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d_distributions),
        cmocka_unit_test(test_reproducible_and_independent),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests_name("init", tests, NULL, NULL);
}
