/* Numerical edge cases through the public API, as the header documents them:
 *   - the attention stays a finite distribution and the output stays finite for huge logits and
 *     for temperatures from the smallest subnormal to FLT_MAX;
 *   - a NaN in a sample's input makes that sample's attention and output entirely NaN, an Inf
 *     makes them non-finite, the call still succeeds, and the other samples of the batch are
 *     bitwise what they are without the bad value. */
#include <float.h>
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

#include "reference.h"
#include "testutil.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* 4 -> 5 channels, 3x3, padding 1, K = 4, hidden 3; batch 3 of 6x5. */
enum { CIN = 4, COUT = 5, KS = 3, K = 4, HID = 3, N = 3, H = 6, W = 5 };
#define SAMPLE_IN ((size_t)CIN * H * W)
#define SAMPLE_OUT ((size_t)COUT * H * W)

static const dynconv_conv2d_geometry geometry = {
    .in_channels = CIN, .out_channels = COUT, .kernel_h = KS, .kernel_w = KS, .stride_h = 1,
    .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 1,
    .num_kernels = K, .hidden = HID};

typedef struct params {
    float weight[K * COUT * CIN * KS * KS], bias[K * COUT], fc1[HID * CIN], fc1_b[HID],
        fc2[K * HID], fc2_b[K];
} params;

/* fc_scale multiplies the attention weights: 1000 turns logits into the thousands. */
static void make_params(params *p, uint64_t seed, float fc_scale) {
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    tu_fill_uniform(&rng, p->weight, COUNT(p->weight), -0.5f, 0.5f);
    tu_fill_uniform(&rng, p->bias, COUNT(p->bias), -0.5f, 0.5f);
    tu_fill_uniform(&rng, p->fc1, COUNT(p->fc1), -fc_scale, fc_scale);
    tu_fill_uniform(&rng, p->fc1_b, COUNT(p->fc1_b), -0.5f, 0.5f);
    tu_fill_uniform(&rng, p->fc2, COUNT(p->fc2), -fc_scale, fc_scale);
    tu_fill_uniform(&rng, p->fc2_b, COUNT(p->fc2_b), -0.5f, 0.5f);
}

static dynconv_conv2d *make_layer(const params *p, float temperature) {
    const dynconv_conv2d_weights w = {p->weight, p->bias, p->fc1, p->fc1_b, p->fc2, p->fc2_b};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&geometry, &w, temperature, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, NULL, NULL, NULL), DYNCONV_OK);
    return layer;
}

static bool all_finite(const float *p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (!isfinite(p[i])) {
            return false;
        }
    }
    return true;
}

static bool all_nan(const float *p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (!isnan(p[i])) {
            return false;
        }
    }
    return true;
}

static void assert_distribution(const float *pi, size_t rows, size_t k) {
    for (size_t r = 0; r < rows; ++r) {
        double sum = 0.0;
        for (size_t j = 0; j < k; ++j) {
            const float v = pi[r * k + j];
            assert_true(isfinite(v));
            assert_true(v >= 0.0f && v <= 1.0f);
            sum += v;
        }
        assert_true(fabs(sum - 1.0) <= 1e-5);
    }
}

/* ---------------------------------------------------------------------------------------- */

/* Logits in the thousands at every temperature down to the smallest subnormal and up to
 * FLT_MAX: a softmax that does not subtract the maximum first gives Inf / Inf = NaN. At the
 * extremes the attention is known without computing it: one-hot on the largest logit for tiny
 * T, uniform for huge T. */
static void extreme_temperatures_keep_attention_finite(void **state) {
    (void)state;
    static const float temps[] = {1e-45f, FLT_MIN, 1e-20f, 1e-3f, 1.f, 1e20f, FLT_MAX};
    params p;
    make_params(&p, 11, 1000.f);
    float x[N * SAMPLE_IN], y[N * SAMPLE_OUT], att[N * K], att_cold[N * K];
    tu_rng rng;
    tu_rng_seed(&rng, 12);
    tu_fill_uniform(&rng, x, COUNT(x), -1.f, 1.f);
    dynconv_conv2d *layer = make_layer(&p, 1.f);
    for (size_t i = 0; i < COUNT(temps); ++i) {
        print_message("  T = %g\n", (double)temps[i]);
        assert_int_equal(dynconv_conv2d_set_temperature(layer, temps[i]), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
        assert_distribution(att, N, K);
        assert_true(all_finite(y, COUNT(y)));
        if (i == 0) {
            memcpy(att_cold, att, sizeof att);
        }
    }
    /* T = FLT_MAX: every logit difference vanishes, the attention is uniform. */
    for (size_t j = 0; j < COUNT(att); ++j) {
        assert_true(fabsf(att[j] - 1.0f / K) <= 1e-6f);
    }
    /* T = 1e-45: one-hot rows, and they pick the largest logit, as the double reference does. */
    const dynconv_conv2d_weights w = {p.weight, p.bias, p.fc1, p.fc1_b, p.fc2, p.fc2_b};
    double pi_ref[N * K];
    static double y_ref[N * SAMPLE_OUT];
    ref_conv2d_forward(&geometry, &w, 1.0, N, H, W, x, y_ref, pi_ref);
    for (size_t r = 0; r < N; ++r) {
        size_t best = 0;
        for (size_t j = 1; j < K; ++j) {
            best = pi_ref[r * K + j] > pi_ref[r * K + best] ? j : best;
        }
        for (size_t j = 0; j < K; ++j) {
            assert_true(att_cold[r * K + j] == (j == best ? 1.0f : 0.0f));
        }
    }
    dynconv_conv2d_destroy(layer);
}

/* Two samples clean, the middle one poisoned at one position. */
static void run_poisoned(float bad, float *y, float *att, float *y_clean, float *att_clean) {
    params p;
    make_params(&p, 21, 1.f);
    static float x[N * SAMPLE_IN];
    tu_rng rng;
    tu_rng_seed(&rng, 22);
    tu_fill_uniform(&rng, x, COUNT(x), -1.f, 1.f);
    dynconv_conv2d *layer = make_layer(&p, 0.8f);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y_clean, att_clean, NULL, 0), DYNCONV_OK);
    x[SAMPLE_IN + 2 * H * W + 7] = bad; /* sample 1, channel 2, row 1, column 2 */
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    dynconv_conv2d_destroy(layer);
}

static void assert_other_samples_untouched(const float *y, const float *att, const float *y_clean,
                                           const float *att_clean) {
    assert_true(all_finite(y_clean, N * SAMPLE_OUT));
    assert_memory_equal(y, y_clean, SAMPLE_OUT * sizeof(float));
    assert_memory_equal(y + 2 * SAMPLE_OUT, y_clean + 2 * SAMPLE_OUT, SAMPLE_OUT * sizeof(float));
    assert_memory_equal(att, att_clean, K * sizeof(float));
    assert_memory_equal(att + 2 * K, att_clean + 2 * K, K * sizeof(float));
}

static void nan_input_poisons_only_its_sample(void **state) {
    (void)state;
    static float y[N * SAMPLE_OUT], y_clean[N * SAMPLE_OUT];
    float att[N * K], att_clean[N * K];
    run_poisoned(NAN, y, att, y_clean, att_clean);
    assert_other_samples_untouched(y, att, y_clean, att_clean);
    /* The pooled mean of the channel is NaN, so every logit, the whole attention row, the
     * aggregated kernel and every output value of the sample are NaN. */
    assert_true(all_nan(att + K, K));
    assert_true(all_nan(y + SAMPLE_OUT, SAMPLE_OUT));
}

static void inf_input_poisons_only_its_sample(void **state) {
    (void)state;
    static const float bads[] = {INFINITY, -INFINITY};
    for (size_t b = 0; b < COUNT(bads); ++b) {
        static float y[N * SAMPLE_OUT], y_clean[N * SAMPLE_OUT];
        float att[N * K], att_clean[N * K];
        print_message("  bad value %g\n", (double)bads[b]);
        run_poisoned(bads[b], y, att, y_clean, att_clean);
        assert_other_samples_untouched(y, att, y_clean, att_clean);
        /* Some of the sample's values are Inf or NaN: which ones depends on the signs met on
         * the way (an Inf logit gives a NaN attention, a finite one an Inf output). */
        assert_false(all_finite(y + SAMPLE_OUT, SAMPLE_OUT));
    }
}

/* The linear layer: a NaN feature makes the sample's whole row NaN. */
static void linear_nan_poisons_only_its_sample(void **state) {
    (void)state;
    enum { D_IN = 7, D_OUT = 4, LK = 3, LH = 2, LN = 3 };
    const dynconv_linear_geometry g = {D_IN, D_OUT, LK, LH};
    float weight[LK * D_OUT * D_IN], fc1[LH * D_IN], fc2[LK * LH];
    float x[LN * D_IN], y[LN * D_OUT], y_clean[LN * D_OUT], att[LN * LK], att_clean[LN * LK];
    tu_rng rng;
    tu_rng_seed(&rng, 31);
    tu_fill_uniform(&rng, weight, COUNT(weight), -1.f, 1.f);
    tu_fill_uniform(&rng, fc1, COUNT(fc1), -1.f, 1.f);
    tu_fill_uniform(&rng, fc2, COUNT(fc2), -1.f, 1.f);
    tu_fill_uniform(&rng, x, COUNT(x), -1.f, 1.f);
    const dynconv_linear_weights w = {weight, NULL, fc1, NULL, fc2, NULL};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&g, &w, 1.f, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(layer, LN, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_forward(layer, x, y_clean, att_clean, NULL, 0), DYNCONV_OK);
    x[D_IN + 3] = NAN;
    assert_int_equal(dynconv_linear_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    assert_true(all_finite(y_clean, COUNT(y_clean)));
    assert_memory_equal(y, y_clean, D_OUT * sizeof(float));
    assert_memory_equal(y + 2 * D_OUT, y_clean + 2 * D_OUT, D_OUT * sizeof(float));
    assert_memory_equal(att + 2 * LK, att_clean + 2 * LK, LK * sizeof(float));
    assert_true(all_nan(att + LK, LK));
    assert_true(all_nan(y + D_OUT, D_OUT));
    dynconv_linear_destroy(layer);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(extreme_temperatures_keep_attention_finite),
        cmocka_unit_test(nan_input_poisons_only_its_sample),
        cmocka_unit_test(inf_input_poisons_only_its_sample),
        cmocka_unit_test(linear_nan_poisons_only_its_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
