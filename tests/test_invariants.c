/* Properties the layer must have whatever its parameters: they hold exactly or nearly exactly
 * by construction, so they catch bugs a tolerance-based comparison with the reference could
 * let through (a mixed-up sample, a stale shape, weights read from the wrong copy). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "reference.h"
#include "testutil.h"

/* A conv layer's parameters, owned by the test. */
typedef struct conv_data {
    dynconv_conv2d_geometry g;
    size_t wlen; /* C_out * C_in/g * kh * kw: one kernel set */
    float *weight, *bias, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} conv_data;

/* 6 -> 8 channels, groups 2, stride 2 with padding: enough to exercise the general path. */
static dynconv_conv2d_geometry base_geometry(int64_t kernels)
{
    const dynconv_conv2d_geometry g = {.in_channels = 6, .out_channels = 8, .kernel_h = 3,
                                       .kernel_w = 3, .stride_h = 2, .stride_w = 1, .pad_h = 1,
                                       .pad_w = 1, .dilation_h = 1, .dilation_w = 2, .groups = 2,
                                       .num_kernels = kernels, .hidden = 5};
    return g;
}

static float *rand_array(tu_rng *rng, size_t n, float scale)
{
    float *p = tu_alloc(n * sizeof(float));
    tu_fill_uniform(rng, p, n, -scale, scale);
    return p;
}

/* fc_scale multiplies the attention weights: 1 gives logits of order one, 1000 huge ones. */
static void make_conv(conv_data *d, dynconv_conv2d_geometry g, uint64_t seed, float fc_scale)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    d->g = g;
    const size_t k = (size_t)g.num_kernels, hid = (size_t)g.hidden, cin = (size_t)g.in_channels;
    const size_t fan_in = (size_t)(g.in_channels / g.groups * g.kernel_h * g.kernel_w);
    d->wlen = (size_t)g.out_channels * fan_in;
    d->weight = rand_array(&rng, k * d->wlen, 1.5f / sqrtf((float)fan_in));
    d->bias = rand_array(&rng, k * (size_t)g.out_channels, 0.5f);
    d->fc1_w = rand_array(&rng, hid * cin, fc_scale * 2.f / sqrtf((float)cin));
    d->fc1_b = rand_array(&rng, hid, fc_scale * 0.5f);
    d->fc2_w = rand_array(&rng, k * hid, fc_scale * 2.f / sqrtf((float)hid));
    d->fc2_b = rand_array(&rng, k, fc_scale * 0.5f);
}

static dynconv_conv2d_weights conv_weights(const conv_data *d)
{
    const dynconv_conv2d_weights w = {d->weight, d->bias,  d->fc1_w,
                                      d->fc1_b,  d->fc2_w, d->fc2_b};
    return w;
}

static void free_conv(conv_data *d)
{
    free(d->weight);
    free(d->bias);
    free(d->fc1_w);
    free(d->fc1_b);
    free(d->fc2_w);
    free(d->fc2_b);
}

/* Input with a per-(sample, channel) offset, so that samples get clearly different attention. */
static float *make_input(uint64_t seed, size_t n, size_t c, size_t spatial)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    float *x = tu_alloc(n * c * spatial * sizeof(float));
    for (size_t i = 0; i < n * c; ++i) {
        const float offset = tu_uniform(&rng, -1.f, 1.f);
        for (size_t j = 0; j < spatial; ++j) {
            x[i * spatial + j] = offset + tu_uniform(&rng, -1.f, 1.f);
        }
    }
    return x;
}

static size_t out_len(const dynconv_conv2d_geometry *g, int64_t n, int64_t h, int64_t w)
{
    return (size_t)(n * g->out_channels *
                    ref_out_size(h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h) *
                    ref_out_size(w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w));
}

static dynconv_conv2d *create_conv(const conv_data *d, float t, uint32_t flags)
{
    dynconv_conv2d *layer = NULL;
    const dynconv_conv2d_weights w = conv_weights(d);
    assert_int_equal(dynconv_conv2d_create(&d->g, &w, t, flags, &layer), DYNCONV_OK);
    assert_non_null(layer);
    return layer;
}

/* create -> reshape -> forward -> destroy in one go, on the handle's own workspace. */
static void run_conv(const conv_data *d, float t, int64_t n, int64_t h, int64_t w,
                     const float *x, float *y, float *att)
{
    dynconv_conv2d *layer = create_conv(d, t, 0);
    assert_int_equal(dynconv_conv2d_reshape(layer, n, h, w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    dynconv_conv2d_destroy(layer);
}

static bool all_finite(const float *p, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        if (!isfinite(p[i])) {
            return false;
        }
    }
    return true;
}

/* Every row of pi [n, k] is a probability distribution. */
static void assert_distribution(const float *pi, size_t n, size_t k)
{
    for (size_t i = 0; i < n; ++i) {
        double sum = 0.0;
        for (size_t j = 0; j < k; ++j) {
            const float v = pi[i * k + j];
            if (!isfinite(v) || v < 0.f) {
                fail_msg("pi[%zu][%zu] = %g is not a probability", i, j, (double)v);
            }
            sum += (double)v;
        }
        if (fabs(sum - 1.0) > 1e-6) {
            fail_msg("row %zu of pi sums to %.9g", i, sum);
        }
    }
}

/* Largest |a[i] - b[i]|: used where two results are expected to differ. */
static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; ++i) {
        m = fmax(m, fabs((double)a[i] - (double)b[i]));
    }
    return m;
}

/* 64-byte aligned block of at least `bytes` (aligned_alloc wants a multiple of the alignment). */
static void *alloc_workspace(size_t bytes)
{
    const size_t a = DYNCONV_WORKSPACE_ALIGNMENT;
    void *p = aligned_alloc(a, ((bytes + a - 1) / a + 1) * a);
    assert_non_null(p);
    return p;
}

/* ---------------------------------------------------------------------------------------- */

/* With one kernel, softmax gives pi = 1 and the layer is a plain static convolution. */
static void k1_equals_static_conv(void **state)
{
    (void)state;
    conv_data d;
    make_conv(&d, base_geometry(1), 11, 1.f);
    const int64_t n = 3, h = 9, w = 8;
    const size_t ylen = out_len(&d.g, n, h, w);
    float *x = make_input(12, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    float att[3];
    double *want = tu_alloc(ylen * sizeof(double));

    run_conv(&d, 1.f, n, h, w, x, y, att);
    ref_static_conv2d(&d.g, d.weight, d.bias, n, h, w, x, want);
    assert_true(tu_nontrivial(want, ylen));
    assert_int_equal(tu_count_mismatches("y", y, want, ylen, TU_RTOL, TU_ATOL), 0);
    for (int i = 0; i < 3; ++i) {
        assert_true(att[i] == 1.f); /* softmax of a single logit is exactly 1 */
    }

    free(want);
    free(y);
    free(x);
    free_conv(&d);
}

/* With one kernel the attention branch cannot matter: two layers that share the kernel but not
 * the fc weights (nor the temperature) must give bitwise the same output. */
static void k1_output_ignores_attention_branch(void **state)
{
    (void)state;
    conv_data a, b;
    make_conv(&a, base_geometry(1), 21, 1.f);
    make_conv(&b, base_geometry(1), 22, 1000.f);
    memcpy(b.weight, a.weight, a.wlen * sizeof(float));
    memcpy(b.bias, a.bias, (size_t)a.g.out_channels * sizeof(float));
    const int64_t n = 2, h = 7, w = 7;
    const size_t ylen = out_len(&a.g, n, h, w);
    float *x = make_input(23, (size_t)n, (size_t)a.g.in_channels, (size_t)(h * w));
    float *ya = tu_alloc(ylen * sizeof(float));
    float *yb = tu_alloc(ylen * sizeof(float));

    run_conv(&a, 1.f, n, h, w, x, ya, NULL);
    run_conv(&b, 0.05f, n, h, w, x, yb, NULL);
    assert_true(tu_nontrivial_f(ya, ylen));
    assert_memory_equal(ya, yb, ylen * sizeof(float));

    free(yb);
    free(ya);
    free(x);
    free_conv(&b);
    free_conv(&a);
}

/* K copies of one kernel (and one bias): sum_k pi_k W = W for any pi, so the output is the
 * static convolution whatever the attention says. */
static void identical_kernels_equal_static_conv(void **state)
{
    (void)state;
    conv_data d;
    make_conv(&d, base_geometry(4), 31, 1.f);
    for (size_t k = 1; k < 4; ++k) {
        memcpy(d.weight + k * d.wlen, d.weight, d.wlen * sizeof(float));
        memcpy(d.bias + k * (size_t)d.g.out_channels, d.bias,
               (size_t)d.g.out_channels * sizeof(float));
    }
    const int64_t n = 3, h = 8, w = 9;
    const size_t ylen = out_len(&d.g, n, h, w);
    float *x = make_input(32, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    double *want = tu_alloc(ylen * sizeof(double));

    run_conv(&d, 1.f, n, h, w, x, y, NULL);
    ref_static_conv2d(&d.g, d.weight, d.bias, n, h, w, x, want);
    assert_true(tu_nontrivial(want, ylen));
    assert_int_equal(tu_count_mismatches("y", y, want, ylen, TU_RTOL, TU_ATOL), 0);

    free(want);
    free(y);
    free(x);
    free_conv(&d);
}

/* Same identical kernels, two different attention branches and temperatures: the attention
 * must really differ (else the test proves nothing) while the outputs agree. */
static void identical_kernels_ignore_attention(void **state)
{
    (void)state;
    conv_data a, b;
    make_conv(&a, base_geometry(4), 41, 1.f);
    make_conv(&b, base_geometry(4), 42, 3.f);
    for (size_t k = 1; k < 4; ++k) {
        memcpy(a.weight + k * a.wlen, a.weight, a.wlen * sizeof(float));
        memcpy(a.bias + k * (size_t)a.g.out_channels, a.bias,
               (size_t)a.g.out_channels * sizeof(float));
    }
    memcpy(b.weight, a.weight, 4 * a.wlen * sizeof(float));
    memcpy(b.bias, a.bias, 4 * (size_t)a.g.out_channels * sizeof(float));
    const int64_t n = 2, h = 8, w = 8;
    const size_t ylen = out_len(&a.g, n, h, w);
    float *x = make_input(43, (size_t)n, (size_t)a.g.in_channels, (size_t)(h * w));
    float *ya = tu_alloc(ylen * sizeof(float));
    float *yb = tu_alloc(ylen * sizeof(float));
    float pa[8], pb[8];

    run_conv(&a, 30.f, n, h, w, x, ya, pa);
    run_conv(&b, 0.5f, n, h, w, x, yb, pb);
    assert_true(max_abs_diff(pa, pb, 8) > 1e-2);
    assert_true(tu_nontrivial_f(ya, ylen));
    assert_int_equal(tu_count_mismatches_f("y", yb, ya, ylen, TU_RTOL, TU_ATOL), 0);

    free(yb);
    free(ya);
    free(x);
    free_conv(&b);
    free_conv(&a);
}

/* pi is a distribution at every temperature; also checked against the reference where the
 * float result is well conditioned (moderate logits). */
static void attention_is_distribution_moderate_logits(void **state)
{
    (void)state;
    static const float temps[] = {0.05f, 0.5f, 1.f, 30.f, 1000.f};
    conv_data d;
    make_conv(&d, base_geometry(6), 51, 1.f);
    const int64_t n = 5, h = 6, w = 6;
    const size_t ylen = out_len(&d.g, n, h, w), plen = (size_t)(n * 6);
    float *x = make_input(52, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    float *att = tu_alloc(plen * sizeof(float));
    double *y_ref = tu_alloc(ylen * sizeof(double));
    double *pi_ref = tu_alloc(plen * sizeof(double));
    const dynconv_conv2d_weights wt = conv_weights(&d);

    for (size_t i = 0; i < sizeof(temps) / sizeof(temps[0]); ++i) {
        print_message("  T = %g\n", (double)temps[i]);
        run_conv(&d, temps[i], n, h, w, x, y, att);
        assert_distribution(att, (size_t)n, 6);
        assert_true(all_finite(y, ylen));
        ref_conv2d_forward(&d.g, &wt, (double)temps[i], n, h, w, x, y_ref, pi_ref);
        assert_int_equal(tu_count_mismatches("pi", att, pi_ref, plen, TU_RTOL, TU_ATOL), 0);
    }

    free(pi_ref);
    free(y_ref);
    free(att);
    free(y);
    free(x);
    free_conv(&d);
}

/* fc weights x1000 make logits in the thousands: a softmax without max subtraction overflows
 * exp() and returns NaN. The values are too ill-conditioned to compare, but the rows must
 * still be finite distributions and the output finite. */
static void attention_is_distribution_large_logits(void **state)
{
    (void)state;
    static const float temps[] = {0.05f, 1.f, 1000.f};
    conv_data d;
    make_conv(&d, base_geometry(6), 61, 1000.f);
    const int64_t n = 5, h = 6, w = 6;
    const size_t ylen = out_len(&d.g, n, h, w), plen = (size_t)(n * 6);
    float *x = make_input(62, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    float *att = tu_alloc(plen * sizeof(float));

    for (size_t i = 0; i < sizeof(temps) / sizeof(temps[0]); ++i) {
        print_message("  T = %g\n", (double)temps[i]);
        run_conv(&d, temps[i], n, h, w, x, y, att);
        assert_distribution(att, (size_t)n, 6);
        assert_true(all_finite(y, ylen));
    }

    free(att);
    free(y);
    free(x);
    free_conv(&d);
}

/* The attention is per sample: a batch of 4 equals its samples run one at a time (on the same
 * handle, reshaped to N = 1), and the samples' attentions differ from each other. */
static void batch_equals_single_samples(void **state)
{
    (void)state;
    conv_data d;
    make_conv(&d, base_geometry(4), 71, 1.f);
    const int64_t n = 4, h = 9, w = 7;
    const size_t ylen = out_len(&d.g, n, h, w), ylen1 = ylen / (size_t)n;
    const size_t xlen1 = (size_t)(d.g.in_channels * h * w);
    float *x = make_input(72, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    float *y1 = tu_alloc(ylen1 * sizeof(float));
    float att[16], att1[4];

    dynconv_conv2d *layer = create_conv(&d, 1.f, 0);
    assert_int_equal(dynconv_conv2d_reshape(layer, n, h, w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    /* samples 0 and 1 must not share one (averaged) attention */
    assert_true(max_abs_diff(att, att + 4, 4) > 1e-3);

    assert_int_equal(dynconv_conv2d_reshape(layer, 1, h, w, NULL, NULL, NULL), DYNCONV_OK);
    bool bitwise = true;
    for (int64_t i = 0; i < n; ++i) {
        assert_int_equal(
            dynconv_conv2d_forward(layer, x + (size_t)i * xlen1, y1, att1, NULL, 0), DYNCONV_OK);
        assert_int_equal(tu_count_mismatches_f("pi", att1, att + i * 4, 4, 1e-6, 1e-7), 0);
        assert_int_equal(
            tu_count_mismatches_f("y", y1, y + (size_t)i * ylen1, ylen1, 1e-6, 1e-6), 0);
        bitwise = bitwise && memcmp(y1, y + (size_t)i * ylen1, ylen1 * sizeof(float)) == 0;
    }
    print_message("  batch vs single samples: %s\n", bitwise ? "bitwise equal" : "within 1e-6");

    dynconv_conv2d_destroy(layer);
    free(y1);
    free(y);
    free(x);
    free_conv(&d);
}

/* set_temperature between forwards: get_temperature reports it and pi follows softmax(z / T)
 * for the new T, i.e. the log-ratios of pi scale by T_old / T_new. */
static void temperature_change_between_calls(void **state)
{
    (void)state;
    static const float temps[] = {1.f, 4.f, 0.25f, 30.f};
    conv_data d;
    make_conv(&d, base_geometry(4), 81, 1.f);
    const int64_t n = 3, h = 6, w = 6;
    const size_t ylen = out_len(&d.g, n, h, w), plen = (size_t)(n * 4);
    float *x = make_input(82, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y = tu_alloc(ylen * sizeof(float));
    float att[12], att_t1[12];
    double *y_ref = tu_alloc(ylen * sizeof(double));
    double pi_ref[12];
    const dynconv_conv2d_weights wt = conv_weights(&d);

    dynconv_conv2d *layer = create_conv(&d, temps[0], 0);
    assert_int_equal(dynconv_conv2d_reshape(layer, n, h, w, NULL, NULL, NULL), DYNCONV_OK);
    for (size_t i = 0; i < sizeof(temps) / sizeof(temps[0]); ++i) {
        const float t = temps[i];
        if (i > 0) {
            assert_int_equal(dynconv_conv2d_set_temperature(layer, t), DYNCONV_OK);
        }
        float got_t = 0.f;
        assert_int_equal(dynconv_conv2d_get_temperature(layer, &got_t), DYNCONV_OK);
        assert_true(got_t == t);
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
        ref_conv2d_forward(&d.g, &wt, (double)t, n, h, w, x, y_ref, pi_ref);
        assert_int_equal(tu_count_mismatches("pi", att, pi_ref, plen, TU_RTOL, TU_ATOL), 0);
        assert_int_equal(tu_count_mismatches("y", y, y_ref, ylen, TU_RTOL, TU_ATOL), 0);
        if (i == 0) {
            memcpy(att_t1, att, sizeof(att));
            continue;
        }
        /* log(pi_a / pi_b) = (z_a - z_b) / T: compare with the T = 1 run */
        for (size_t s = 0; s < (size_t)n; ++s) {
            for (size_t k = 1; k < 4; ++k) {
                const double r1 = log((double)att_t1[s * 4 + k] / (double)att_t1[s * 4]);
                const double rt = log((double)att[s * 4 + k] / (double)att[s * 4]);
                assert_true(fabs(rt - r1 / (double)t) <= 1e-4 * (1.0 + fabs(r1 / (double)t)));
            }
        }
    }

    dynconv_conv2d_destroy(layer);
    free(y_ref);
    free(y);
    free(x);
    free_conv(&d);
}

/* Reshape to another size (which grows the workspace) and back: the second run at the first
 * size is bitwise the first one, and the other size matches the reference. */
static void reshape_to_new_size_and_back(void **state)
{
    (void)state;
    conv_data d;
    make_conv(&d, base_geometry(4), 91, 1.f);
    const int64_t n1 = 2, h1 = 8, w1 = 8, n2 = 3, h2 = 15, w2 = 11;
    const size_t y1len = out_len(&d.g, n1, h1, w1), y2len = out_len(&d.g, n2, h2, w2);
    float *x1 = make_input(92, (size_t)n1, (size_t)d.g.in_channels, (size_t)(h1 * w1));
    float *x2 = make_input(93, (size_t)n2, (size_t)d.g.in_channels, (size_t)(h2 * w2));
    float *y1 = tu_alloc(y1len * sizeof(float));
    float *y1b = tu_alloc(y1len * sizeof(float));
    float *y2 = tu_alloc(y2len * sizeof(float));
    double *want2 = tu_alloc(y2len * sizeof(double));
    const dynconv_conv2d_weights wt = conv_weights(&d);

    dynconv_conv2d *layer = create_conv(&d, 1.f, 0);
    int64_t oh = 0, ow = 0;
    assert_int_equal(dynconv_conv2d_reshape(layer, n1, h1, w1, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x1, y1, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, n2, h2, w2, &oh, &ow, NULL), DYNCONV_OK);
    assert_int_equal(oh, ref_out_size(h2, 3, 2, 1, 1));
    assert_int_equal(ow, ref_out_size(w2, 3, 1, 1, 2));
    assert_int_equal(dynconv_conv2d_forward(layer, x2, y2, NULL, NULL, 0), DYNCONV_OK);
    ref_conv2d_forward(&d.g, &wt, 1.0, n2, h2, w2, x2, want2, NULL);
    assert_int_equal(tu_count_mismatches("y (second size)", y2, want2, y2len, TU_RTOL, TU_ATOL),
                     0);
    assert_int_equal(dynconv_conv2d_reshape(layer, n1, h1, w1, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x1, y1b, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(y1, y1b, y1len * sizeof(float));

    dynconv_conv2d_destroy(layer);
    free(want2);
    free(y2);
    free(y1b);
    free(y1);
    free(x2);
    free(x1);
    free_conv(&d);
}

/* Two handles on the same arrays, one borrowing and one copying. After the caller rewrites its
 * kernels and attention bias, only the borrowing handle sees the change. */
static void borrowed_vs_copied_weights(void **state)
{
    (void)state;
    conv_data d, upd;
    make_conv(&d, base_geometry(4), 101, 1.f);
    make_conv(&upd, base_geometry(4), 102, 1.f); /* the values written over d's arrays */
    const int64_t n = 2, h = 7, w = 7;
    const size_t ylen = out_len(&d.g, n, h, w);
    float *x = make_input(103, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *yb0 = tu_alloc(ylen * sizeof(float));
    float *yc0 = tu_alloc(ylen * sizeof(float));
    float *yb1 = tu_alloc(ylen * sizeof(float));
    float *yc1 = tu_alloc(ylen * sizeof(float));
    double *want = tu_alloc(ylen * sizeof(double));
    double pi_want[8];
    float pb1[8];

    dynconv_conv2d *borrowed = create_conv(&d, 1.f, DYNCONV_FLAG_BORROW_WEIGHTS);
    dynconv_conv2d *copied = create_conv(&d, 1.f, 0);
    assert_int_equal(dynconv_conv2d_reshape(borrowed, n, h, w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(copied, n, h, w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(borrowed, x, yb0, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(copied, x, yc0, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(yb0, yc0, ylen * sizeof(float));

    /* update in place, as a training loop would */
    memcpy(d.weight, upd.weight, 4 * d.wlen * sizeof(float));
    memcpy(d.fc2_b, upd.fc2_b, 4 * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(borrowed, x, yb1, pb1, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(copied, x, yc1, NULL, NULL, 0), DYNCONV_OK);

    const dynconv_conv2d_weights wt = conv_weights(&d);
    ref_conv2d_forward(&d.g, &wt, 1.0, n, h, w, x, want, pi_want);
    assert_int_equal(tu_count_mismatches("borrowed y", yb1, want, ylen, TU_RTOL, TU_ATOL), 0);
    assert_int_equal(tu_count_mismatches("borrowed pi", pb1, pi_want, 8, TU_RTOL, TU_ATOL), 0);
    assert_true(max_abs_diff(yb0, yb1, ylen) > 1e-2);
    assert_memory_equal(yc0, yc1, ylen * sizeof(float));

    dynconv_conv2d_destroy(copied);
    dynconv_conv2d_destroy(borrowed);
    free(want);
    free(yc1);
    free(yb1);
    free(yc0);
    free(yb0);
    free(x);
    free_conv(&upd);
    free_conv(&d);
}

/* A caller-owned workspace (exactly the reported size, or larger) computes bitwise the same as
 * the handle's own, with and without DYNCONV_FLAG_EXTERNAL_WORKSPACE. */
static void caller_workspace_matches_own(void **state)
{
    (void)state;
    conv_data d;
    make_conv(&d, base_geometry(4), 111, 1.f);
    const int64_t n = 3, h = 10, w = 9;
    const size_t ylen = out_len(&d.g, n, h, w);
    float *x = make_input(112, (size_t)n, (size_t)d.g.in_channels, (size_t)(h * w));
    float *y_own = tu_alloc(ylen * sizeof(float));
    float *y_ws = tu_alloc(ylen * sizeof(float));
    float *y_ext = tu_alloc(ylen * sizeof(float));
    float a_own[12], a_ws[12], a_ext[12];

    dynconv_conv2d *own = create_conv(&d, 1.f, 0);
    dynconv_conv2d *ext = create_conv(&d, 1.f, DYNCONV_FLAG_EXTERNAL_WORKSPACE);
    size_t ws_own = 0, ws_ext = 0;
    assert_int_equal(dynconv_conv2d_reshape(own, n, h, w, NULL, NULL, &ws_own), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(ext, n, h, w, NULL, NULL, &ws_ext), DYNCONV_OK);
    assert_int_equal(ws_own, ws_ext);
    void *ws = alloc_workspace(ws_own + 256);
    /* garbage in the workspace must not leak into the result */
    memset(ws, 0xAB, ws_own + 256);

    assert_int_equal(dynconv_conv2d_forward(own, x, y_own, a_own, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(own, x, y_ws, a_ws, ws, ws_own), DYNCONV_OK);
    assert_memory_equal(y_own, y_ws, ylen * sizeof(float));
    assert_memory_equal(a_own, a_ws, sizeof(a_own));
    memset(ws, 0xCD, ws_own + 256);
    assert_int_equal(dynconv_conv2d_forward(ext, x, y_ext, a_ext, ws, ws_own + 256), DYNCONV_OK);
    assert_memory_equal(y_own, y_ext, ylen * sizeof(float));
    assert_memory_equal(a_own, a_ext, sizeof(a_own));

    free(ws);
    dynconv_conv2d_destroy(ext);
    dynconv_conv2d_destroy(own);
    free(y_ext);
    free(y_ws);
    free(y_own);
    free(x);
    free_conv(&d);
}

/* ---------------------------------------------------------------------------------------- */
/* The dynamic linear layer: the same invariants in their simplest form.                    */

typedef struct linear_data {
    dynconv_linear_geometry g;
    float *weight, *bias, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} linear_data;

static void make_linear(linear_data *d, dynconv_linear_geometry g, uint64_t seed)
{
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    d->g = g;
    const size_t k = (size_t)g.num_kernels, hid = (size_t)g.hidden;
    const size_t din = (size_t)g.in_features, dout = (size_t)g.out_features;
    d->weight = rand_array(&rng, k * dout * din, 1.5f / sqrtf((float)din));
    d->bias = rand_array(&rng, k * dout, 0.5f);
    d->fc1_w = rand_array(&rng, hid * din, 2.f / sqrtf((float)din));
    d->fc1_b = rand_array(&rng, hid, 0.5f);
    d->fc2_w = rand_array(&rng, k * hid, 2.f / sqrtf((float)hid));
    d->fc2_b = rand_array(&rng, k, 0.5f);
}

static void free_linear(linear_data *d)
{
    free(d->weight);
    free(d->bias);
    free(d->fc1_w);
    free(d->fc1_b);
    free(d->fc2_w);
    free(d->fc2_b);
}

static dynconv_linear *create_linear(const linear_data *d, float t)
{
    const dynconv_linear_weights w = {d->weight, d->bias,  d->fc1_w,
                                      d->fc1_b,  d->fc2_w, d->fc2_b};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&d->g, &w, t, 0, &layer), DYNCONV_OK);
    assert_non_null(layer);
    return layer;
}

/* K = 1: y = W x + b, computed here directly in double. */
static void linear_k1_equals_static(void **state)
{
    (void)state;
    const dynconv_linear_geometry g = {.in_features = 13, .out_features = 7, .num_kernels = 1,
                                       .hidden = 4};
    linear_data d;
    make_linear(&d, g, 121);
    float *x = make_input(122, 3, 1, 13);
    float y[21], att[3];
    double want[21];
    for (size_t s = 0; s < 3; ++s) {
        for (size_t o = 0; o < 7; ++o) {
            double acc = (double)d.bias[o];
            for (size_t i = 0; i < 13; ++i) {
                acc += (double)d.weight[o * 13 + i] * (double)x[s * 13 + i];
            }
            want[s * 7 + o] = acc;
        }
    }

    dynconv_linear *layer = create_linear(&d, 1.f);
    assert_int_equal(dynconv_linear_reshape(layer, 3, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    assert_true(tu_nontrivial(want, 21));
    assert_int_equal(tu_count_mismatches("y", y, want, 21, TU_RTOL, TU_ATOL), 0);
    for (int i = 0; i < 3; ++i) {
        assert_true(att[i] == 1.f);
    }

    dynconv_linear_destroy(layer);
    free(x);
    free_linear(&d);
}

static void linear_batch_equals_single_samples(void **state)
{
    (void)state;
    const dynconv_linear_geometry g = {.in_features = 10, .out_features = 6, .num_kernels = 4,
                                       .hidden = 3};
    linear_data d;
    make_linear(&d, g, 131);
    float *x = make_input(132, 4, 1, 10);
    float y[24], y1[6], att[16], att1[4];

    dynconv_linear *layer = create_linear(&d, 1.f);
    assert_int_equal(dynconv_linear_reshape(layer, 4, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    assert_distribution(att, 4, 4);
    assert_int_equal(dynconv_linear_reshape(layer, 1, NULL), DYNCONV_OK);
    for (size_t i = 0; i < 4; ++i) {
        assert_int_equal(dynconv_linear_forward(layer, x + i * 10, y1, att1, NULL, 0),
                         DYNCONV_OK);
        assert_int_equal(tu_count_mismatches_f("pi", att1, att + i * 4, 4, 1e-6, 1e-7), 0);
        assert_int_equal(tu_count_mismatches_f("y", y1, y + i * 6, 6, 1e-6, 1e-6), 0);
    }

    dynconv_linear_destroy(layer);
    free(x);
    free_linear(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(k1_equals_static_conv),
        cmocka_unit_test(k1_output_ignores_attention_branch),
        cmocka_unit_test(identical_kernels_equal_static_conv),
        cmocka_unit_test(identical_kernels_ignore_attention),
        cmocka_unit_test(attention_is_distribution_moderate_logits),
        cmocka_unit_test(attention_is_distribution_large_logits),
        cmocka_unit_test(batch_equals_single_samples),
        cmocka_unit_test(temperature_change_between_calls),
        cmocka_unit_test(reshape_to_new_size_and_back),
        cmocka_unit_test(borrowed_vs_copied_weights),
        cmocka_unit_test(caller_workspace_matches_own),
        cmocka_unit_test(linear_k1_equals_static),
        cmocka_unit_test(linear_batch_equals_single_samples),
    };
    return cmocka_run_group_tests_name("invariants", tests, NULL, NULL);
}
