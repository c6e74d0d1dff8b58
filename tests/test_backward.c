/* Backward pass of the dynamic layers against central finite differences of the double-precision
 * forward (tests/common/reference_grad.c), on a table of small cases covering every
 * hyper-parameter of the forward; then the semantics around it: accumulation, skipped
 * gradients, both workspace modes, and the temperature schedule. */
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
#if defined(DC_TEST_ENGINE_VARIANTS)
#include "exec.h"
#include "gemm.h"
#endif
#include "gradcheck.h"
#include "reference_grad.h"
#include "testutil.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Relative step of the finite differences: small enough that the O(e^2) truncation error is
 * ~1e-10, large enough that double rounding of the loss stays far below the tolerance. */
#define FD_STEP 1e-5

typedef struct bw_case {
    const char *name;
    bool linear;                 /* run through the dynconv_linear API (1x1, h = w = 1) */
    dynconv_conv2d_geometry g;
    float temperature;
    int64_t n, h, w;
    bool bias, fc1_bias, fc2_bias;
} bw_case;

#define CONV(cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, grp, k, hid) \
    {.in_channels = cin, .out_channels = cout, .kernel_h = kh, .kernel_w = kw, .stride_h = sh, \
     .stride_w = sw, .pad_h = ph, .pad_w = pw, .dilation_h = dh, .dilation_w = dw,           \
     .groups = grp, .num_kernels = k, .hidden = hid}
#define LINEAR(din, dout, k, hid) CONV(din, dout, 1, 1, 1, 1, 0, 0, 1, 1, 1, k, hid)

/* clang-format off */
static const bw_case cases[] = {
    /* name                        linear  geometry: cin cout kh kw sh sw ph pw dh dw g K hid     T    n  h  w  biases */
    {"basic_3x3_pad1",             false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 2),       1.0f, 2, 5, 5, true, true, true},
    {"no_biases",                  false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 2),       1.0f, 2, 5, 5, false, false, false},
    {"weight_bias_only",           false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 2),       1.0f, 2, 5, 5, true, false, false},
    {"stride2_pad1_odd",           false, CONV(2, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 2, 3),       1.0f, 2, 7, 6, true, true, true},
    {"dilation2_pad2",             false, CONV(2, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1, 3, 2),       1.0f, 2, 6, 6, true, true, true},
    {"asymmetric",                 false, CONV(2, 2, 3, 2, 2, 1, 1, 2, 1, 2, 1, 3, 2),       1.0f, 2, 7, 6, true, true, true},
    {"groups2_stride2_dilation2",  false, CONV(4, 2, 3, 3, 2, 2, 2, 1, 2, 2, 2, 3, 2),       1.0f, 2, 7, 7, true, true, true},
    {"depthwise",                  false, CONV(3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3, 3, 2),       1.0f, 2, 5, 5, true, true, true},
    {"channel_multiplier2",        false, CONV(2, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 2),       1.0f, 2, 5, 4, true, true, true},
    {"depthwise_dilation2_pad_asym", false, CONV(3, 3, 3, 2, 1, 1, 2, 1, 2, 2, 3, 3, 2),     1.0f, 2, 7, 6, true, true, true},
    {"multiplier2_stride2_dil",    false, CONV(3, 6, 3, 2, 2, 1, 2, 1, 2, 2, 3, 3, 2),       1.0f, 2, 8, 7, true, true, true},
    {"pointwise_1x1",              false, CONV(4, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, 3, 2),       1.0f, 2, 4, 5, true, true, true},
    {"pointwise_1x1_stride2",      false, CONV(4, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1, 3, 2),       1.0f, 2, 5, 5, true, true, true},
    {"strided_1x1_s3_groups2_b3",  false, CONV(4, 4, 1, 1, 3, 3, 0, 0, 1, 1, 2, 3, 2),       1.0f, 3, 7, 8, true, true, true},
    {"strided_1x1_s2x3_b1",        false, CONV(3, 4, 1, 1, 2, 3, 0, 0, 1, 1, 1, 3, 2),       1.0f, 1, 7, 8, true, false, true},
    {"strided_1x1_s2_pad1_g2",     false, CONV(4, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 3, 2),       1.0f, 2, 5, 6, true, true, true},
    {"output_1x1",                 false, CONV(2, 3, 3, 4, 1, 1, 0, 0, 1, 1, 1, 3, 2),       1.0f, 2, 3, 4, true, true, true},
    {"single_kernel_k1",           false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2),       1.0f, 2, 5, 5, true, true, true},
    {"temperature_0p5",            false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 2),       0.5f, 2, 5, 5, true, true, true},
    {"temperature_30",             false, CONV(3, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 2),      30.0f, 2, 5, 5, true, true, true},
    {"batch3_hidden1",             false, CONV(3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 1),       1.0f, 3, 4, 4, true, true, true},
    {"linear_basic",               true,  LINEAR(6, 4, 3, 3),                                 1.0f, 3, 1, 1, true, true, true},
    {"linear_no_bias",             true,  LINEAR(6, 4, 3, 3),                                 1.0f, 3, 1, 1, false, false, false},
    {"linear_k1",                  true,  LINEAR(5, 3, 1, 2),                                 1.0f, 2, 1, 1, true, true, true},
    {"linear_temperature_30",      true,  LINEAR(6, 4, 3, 3),                                30.0f, 3, 1, 1, true, true, true},
};
/* clang-format on */

/* The arrays of one case, in float (for the library) and in double (for the reference). */
enum { P_WEIGHT, P_BIAS, P_FC1_W, P_FC1_B, P_FC2_W, P_FC2_B, P_COUNT };
static const char *const param_names[P_COUNT] = {"weight",     "bias",       "fc1_weight",
                                                 "fc1_bias",   "fc2_weight", "fc2_bias"};

typedef struct bw_data {
    int64_t oh, ow;
    size_t x_count, y_count, count[P_COUNT]; /* count 0: the case has no such parameter */
    float *x, *dy, *param[P_COUNT];
} bw_data;

static size_t param_count(const bw_case *c, int which)
{
    const dynconv_conv2d_geometry *g = &c->g;
    const size_t k = (size_t)g->num_kernels, hid = (size_t)g->hidden;
    const size_t cin = (size_t)g->in_channels, cout = (size_t)g->out_channels;
    switch (which) {
    case P_WEIGHT: return k * cout * (cin / (size_t)g->groups) * (size_t)(g->kernel_h * g->kernel_w);
    case P_BIAS: return c->bias ? k * cout : 0;
    case P_FC1_W: return hid * cin;
    case P_FC1_B: return c->fc1_bias ? hid : 0;
    case P_FC2_W: return k * hid;
    default: return c->fc2_bias ? k : 0;
    }
}

/* True when every hidden unit of the attention is active for some sample (else its gradients
 * are zero by construction and prove nothing) and no pre-activation sits near the ReLU's kink
 * (where a finite difference straddles it). */
static bool attention_alive(const bw_case *c, const bw_data *d)
{
    const dynconv_conv2d_geometry *g = &c->g;
    const int64_t cin = g->in_channels, plane = c->linear ? 1 : c->h * c->w;
    for (int64_t j = 0; j < g->hidden; ++j) {
        bool active = false;
        for (int64_t n = 0; n < c->n; ++n) {
            double a = d->param[P_FC1_B] ? (double)d->param[P_FC1_B][j] : 0.0;
            for (int64_t ch = 0; ch < cin; ++ch) {
                double sum = 0.0;
                for (int64_t i = 0; i < plane; ++i) {
                    sum += (double)d->x[(n * cin + ch) * plane + i];
                }
                a += (double)d->param[P_FC1_W][j * cin + ch] * sum / (double)plane;
            }
            if (fabs(a) < 1e-2) {
                return false;
            }
            active = active || a > 0.0;
        }
        if (!active) {
            return false;
        }
    }
    return true;
}

static void free_data(bw_data *d);

static void draw_data(const bw_case *c, uint64_t seed, bw_data *d)
{
    const dynconv_conv2d_geometry *g = &c->g;
    d->oh = ref_out_size(c->h, g->kernel_h, g->stride_h, g->pad_h, g->dilation_h);
    d->ow = ref_out_size(c->w, g->kernel_w, g->stride_w, g->pad_w, g->dilation_w);
    d->x_count = (size_t)(c->n * g->in_channels * c->h * c->w);
    d->y_count = (size_t)(c->n * g->out_channels * d->oh * d->ow);
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    d->x = tu_alloc(d->x_count * sizeof(float));
    tu_fill_uniform(&rng, d->x, d->x_count, -1.0f, 1.0f);
    /* A per-sample, per-channel offset so the pooled vectors, and so the attention, differ
     * between samples. */
    const size_t plane = (size_t)(c->h * c->w);
    for (size_t row = 0; row < d->x_count / plane; ++row) {
        const float offset = tu_uniform(&rng, -1.0f, 1.0f);
        for (size_t i = 0; i < plane; ++i) {
            d->x[row * plane + i] += offset;
        }
    }
    d->dy = tu_alloc(d->y_count * sizeof(float));
    tu_fill_uniform(&rng, d->dy, d->y_count, -1.0f, 1.0f);
    const float range[P_COUNT] = {0.6f, 0.5f, 1.5f, 0.5f, 1.5f, 0.5f};
    for (int p = 0; p < P_COUNT; ++p) {
        d->count[p] = param_count(c, p);
        d->param[p] = NULL;
        if (d->count[p] > 0) {
            d->param[p] = tu_alloc(d->count[p] * sizeof(float));
            tu_fill_uniform(&rng, d->param[p], d->count[p], -range[p], range[p]);
        }
    }
}

/* Deterministic: the first seed from `seed` on whose data passes attention_alive. */
static void make_data(const bw_case *c, uint64_t seed, bw_data *d)
{
    for (uint64_t attempt = 0; attempt < 100; ++attempt) {
        draw_data(c, seed + 1000 * attempt, d);
        if (attention_alive(c, d)) {
            return;
        }
        free_data(d);
    }
    fail_msg("%s: no usable data in 100 draws", c->name);
}

static void free_data(bw_data *d)
{
    free(d->x);
    free(d->dy);
    for (int p = 0; p < P_COUNT; ++p) {
        free(d->param[p]);
    }
}

static double *to_double(const float *src, size_t count)
{
    if (src == NULL) {
        return NULL;
    }
    double *dst = tu_alloc((count ? count : 1) * sizeof(double));
    for (size_t i = 0; i < count; ++i) {
        dst[i] = (double)src[i];
    }
    return dst;
}

/* Gradient buffers: [0] is dL/dx, [1 + p] the gradient of parameter p. */
enum { G_INPUT, G_COUNT = 1 + P_COUNT };

typedef struct bw_grads {
    float *g[G_COUNT];
    size_t count[G_COUNT];
} bw_grads;

static void alloc_grads(const bw_data *d, bw_grads *out, float fill)
{
    out->count[G_INPUT] = d->x_count;
    for (int p = 0; p < P_COUNT; ++p) {
        out->count[1 + p] = d->count[p];
    }
    for (int i = 0; i < G_COUNT; ++i) {
        out->g[i] = NULL;
        if (out->count[i] > 0) {
            out->g[i] = tu_alloc(out->count[i] * sizeof(float));
            for (size_t j = 0; j < out->count[i]; ++j) {
                out->g[i][j] = fill;
            }
        }
    }
}

static void free_grads(bw_grads *gr)
{
    for (int i = 0; i < G_COUNT; ++i) {
        free(gr->g[i]);
    }
}

/* Runs the library's backward for case c on data d into gr (buffers left NULL are skipped;
 * `skip` is a bit mask of G_* indices to pass as NULL). external: a caller-owned workspace. */
static void run_backward(const bw_case *c, const bw_data *d, const bw_grads *gr, unsigned skip,
                         uint32_t flags, bool external)
{
    float *g[G_COUNT];
    for (int i = 0; i < G_COUNT; ++i) {
        g[i] = (skip & (1u << i)) ? NULL : gr->g[i];
    }
    const uint32_t create_flags = external ? (uint32_t)DYNCONV_FLAG_EXTERNAL_WORKSPACE : 0u;
    size_t ws_size = 0;
    void *ws = NULL;
    if (c->linear) {
        const dynconv_linear_geometry lg = {c->g.in_channels, c->g.out_channels,
                                            c->g.num_kernels, c->g.hidden};
        const dynconv_linear_weights w = {d->param[0], d->param[1], d->param[2],
                                          d->param[3], d->param[4], d->param[5]};
        dynconv_linear *layer = NULL;
        assert_int_equal(dynconv_linear_create(&lg, &w, c->temperature, create_flags, &layer),
                         DYNCONV_OK);
        assert_int_equal(dynconv_linear_reshape(layer, c->n, NULL), DYNCONV_OK);
        assert_int_equal(dynconv_linear_prepare_backward(layer, &ws_size), DYNCONV_OK);
        if (external) {
            ws = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (ws_size + 63) / 64 * 64);
            assert_non_null(ws);
        }
        const dynconv_linear_gradients lgr = {g[0], g[1], g[2], g[3], g[4], g[5], g[6]};
        assert_int_equal(dynconv_linear_backward(layer, d->x, d->dy, &lgr, flags, ws, ws_size),
                         DYNCONV_OK);
        dynconv_linear_destroy(layer);
    } else {
        const dynconv_conv2d_weights w = {d->param[0], d->param[1], d->param[2],
                                          d->param[3], d->param[4], d->param[5]};
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&c->g, &w, c->temperature, create_flags, &layer),
                         DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                         DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_prepare_backward(layer, &ws_size), DYNCONV_OK);
        if (external) {
            ws = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (ws_size + 63) / 64 * 64);
            assert_non_null(ws);
        }
        const dynconv_conv2d_gradients cgr = {g[0], g[1], g[2], g[3], g[4], g[5], g[6]};
        assert_int_equal(dynconv_conv2d_backward(layer, d->x, d->dy, &cgr, flags, ws, ws_size),
                         DYNCONV_OK);
        dynconv_conv2d_destroy(layer);
    }
    free(ws);
}

/* ------------------------------------------------------------------------------------------ */
/* Finite differences                                                                         */
/* ------------------------------------------------------------------------------------------ */

static void test_finite_differences(void **state)
{
    const bw_case *c = *state;
    bw_data d;
    make_data(c, 1234, &d);
    bw_grads gr;
    alloc_grads(&d, &gr, NAN);
    run_backward(c, &d, &gr, 0, 0, false);

    double *x = to_double(d.x, d.x_count);
    double *dy = to_double(d.dy, d.y_count);
    double *p[P_COUNT];
    for (int i = 0; i < P_COUNT; ++i) {
        p[i] = to_double(d.param[i], d.count[i]);
    }
    const ref_params_d rp = {p[0], p[1], p[2], p[3], p[4], p[5]};
    const int64_t h = c->linear ? 1 : c->h, w = c->linear ? 1 : c->w;

    size_t bad = 0;
    for (int i = 0; i < G_COUNT; ++i) {
        if (gr.count[i] == 0) {
            continue;
        }
        double *target = i == G_INPUT ? x : p[i - 1];
        double *want = tu_alloc(gr.count[i] * sizeof(double));
        ref_conv2d_finite_diff(&c->g, &rp, (double)c->temperature, c->n, h, w, x, dy, target,
                               (int64_t)gr.count[i], FD_STEP, want);
        char what[96];
        snprintf(what, sizeof what, "%s d%s", c->name, i == G_INPUT ? "input" : param_names[i - 1]);
        /* The attention gradients vanish by construction when K = 1 (softmax of one logit);
         * everything else must be a real, varied gradient or the comparison proves nothing. */
        const bool attention_grad = i >= 1 + P_FC1_W;
        if (!(attention_grad && c->g.num_kernels == 1)) {
            if (!gc_nontrivial_d(want, gr.count[i])) {
                printf("  %s: finite-difference gradient is trivial\n", what);
                ++bad;
            }
        }
        bad += gc_compare(what, gr.g[i], want, gr.count[i]);
        free(want);
    }
    assert_int_equal(bad, 0);

    free(x);
    free(dy);
    for (int i = 0; i < P_COUNT; ++i) {
        free(p[i]);
    }
    free_grads(&gr);
    free_data(&d);
}

/* ------------------------------------------------------------------------------------------ */
/* Semantics                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static const bw_case *find_case(const char *name)
{
    for (size_t i = 0; i < COUNT(cases); ++i) {
        if (strcmp(cases[i].name, name) == 0) {
            return &cases[i];
        }
    }
    fail_msg("no case %s", name);
    return NULL;
}

/* Accumulating twice into zeroed buffers gives twice the overwriting result; accumulating into
 * buffers holding v gives v + gradient; overwriting ignores what was there (NaN included). */
static void test_accumulate(void **state)
{
    (void)state;
    const char *names[] = {"groups2_stride2_dilation2", "pointwise_1x1", "linear_basic"};
    for (size_t k = 0; k < COUNT(names); ++k) {
        const bw_case *c = find_case(names[k]);
        bw_data d;
        make_data(c, 99, &d);
        bw_grads once, twice, onto;
        alloc_grads(&d, &once, NAN);
        alloc_grads(&d, &twice, 0.0f);
        alloc_grads(&d, &onto, 0.25f);
        run_backward(c, &d, &once, 0, 0, false);
        run_backward(c, &d, &twice, 0, DYNCONV_BACKWARD_ACCUMULATE, false);
        run_backward(c, &d, &twice, 0, DYNCONV_BACKWARD_ACCUMULATE, true);
        run_backward(c, &d, &onto, 0, DYNCONV_BACKWARD_ACCUMULATE, false);
        size_t bad = 0;
        for (int i = 0; i < G_COUNT; ++i) {
            double *want2 = tu_alloc((once.count[i] + 1) * sizeof(double));
            double *want_onto = tu_alloc((once.count[i] + 1) * sizeof(double));
            for (size_t j = 0; j < once.count[i]; ++j) {
                want2[j] = 2.0 * (double)once.g[i][j];
                want_onto[j] = 0.25 + (double)once.g[i][j];
            }
            if (once.count[i] > 0) {
                assert_true(tu_nontrivial(want2, once.count[i]));
            }
            bad += tu_count_mismatches(c->name, twice.g[i], want2, once.count[i], 1e-6, 1e-6);
            bad += tu_count_mismatches(c->name, onto.g[i], want_onto, once.count[i], 1e-6, 1e-6);
            free(want2);
            free(want_onto);
        }
        assert_int_equal(bad, 0);
        free_grads(&once);
        free_grads(&twice);
        free_grads(&onto);
        free_data(&d);
    }
}

/* Each gradient asked for alone equals the same gradient computed with all the others, and the
 * buffers passed as NULL are, of course, untouched: nothing else is written. */
static void test_skipped_gradients(void **state)
{
    (void)state;
    const bw_case *c = find_case("stride2_pad1_odd");
    bw_data d;
    make_data(c, 5, &d);
    bw_grads all;
    alloc_grads(&d, &all, NAN);
    run_backward(c, &d, &all, 0, 0, false);
    for (int only = 0; only < G_COUNT; ++only) {
        bw_grads one;
        alloc_grads(&d, &one, 7.0f);
        const unsigned skip = ((1u << G_COUNT) - 1) & ~(1u << only);
        run_backward(c, &d, &one, skip, 0, false);
        for (int i = 0; i < G_COUNT; ++i) {
            for (size_t j = 0; j < one.count[i]; ++j) {
                if (i == only) {
                    assert_true(fabsf(one.g[i][j] - all.g[i][j]) <=
                                1e-6f * (1.0f + fabsf(all.g[i][j])));
                } else {
                    assert_true(one.g[i][j] == 7.0f);
                }
            }
        }
        free_grads(&one);
    }
    free_grads(&all);
    free_data(&d);
}

/* The handle's own workspace and a caller-owned one give the same bits. */
static void test_workspaces_agree(void **state)
{
    (void)state;
    const bw_case *c = find_case("dilation2_pad2");
    bw_data d;
    make_data(c, 8, &d);
    bw_grads own, ext;
    alloc_grads(&d, &own, 0.0f);
    alloc_grads(&d, &ext, 0.0f);
    run_backward(c, &d, &own, 0, 0, false);
    run_backward(c, &d, &ext, 0, 0, true);
    for (int i = 0; i < G_COUNT; ++i) {
        if (own.count[i] > 0) {
            assert_memory_equal(own.g[i], ext.g[i], own.count[i] * sizeof(float));
        }
    }
    free_grads(&own);
    free_grads(&ext);
    free_data(&d);
}

/* Backward does not use the handle's threads: its result is the same bits whatever their
 * count, also after a thread change on a prepared handle (which regrows the workspace). */
static void test_thread_count_irrelevant(void **state)
{
    (void)state;
    const bw_case *c = find_case("groups2_stride2_dilation2");
    bw_data d;
    make_data(c, 12, &d);
    const dynconv_conv2d_weights w = {d.param[0], d.param[1], d.param[2],
                                      d.param[3], d.param[4], d.param[5]};
    bw_grads first, other;
    alloc_grads(&d, &first, 0.0f);
    alloc_grads(&d, &other, 0.0f);
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&c->g, &w, c->temperature, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 1), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, NULL), DYNCONV_OK);
    const dynconv_conv2d_gradients g1 = {first.g[0], first.g[1], first.g[2], first.g[3],
                                         first.g[4], first.g[5], first.g[6]};
    const dynconv_conv2d_gradients g3 = {other.g[0], other.g[1], other.g[2], other.g[3],
                                         other.g[4], other.g[5], other.g[6]};
    assert_int_equal(dynconv_conv2d_backward(layer, d.x, d.dy, &g1, 0, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 3), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_backward(layer, d.x, d.dy, &g3, 0, NULL, 0), DYNCONV_OK);
    for (int i = 0; i < G_COUNT; ++i) {
        if (first.count[i] > 0) {
            assert_memory_equal(first.g[i], other.g[i], first.count[i] * sizeof(float));
        }
    }
    dynconv_conv2d_destroy(layer);
    free_grads(&first);
    free_grads(&other);
    free_data(&d);
}

/* The own workspace must be enabled for backward; a later reshape to a larger shape keeps it
 * sized for backward, and the result matches a fresh layer of that shape. */
static void test_own_workspace_protocol(void **state)
{
    (void)state;
    const bw_case *c = find_case("basic_3x3_pad1");
    bw_data d;
    make_data(c, 3, &d);
    const dynconv_conv2d_weights w = {d.param[0], d.param[1], d.param[2],
                                      d.param[3], d.param[4], d.param[5]};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&c->g, &w, 1.0f, 0, &layer), DYNCONV_OK);
    /* One thread: the forward's workspace then holds a single aggregated kernel, so the
     * backward's (all N kernels and the attention gradients) is the larger. */
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 1), DYNCONV_OK);
    float *dx = tu_alloc(d.x_count * sizeof(float));
    const dynconv_conv2d_gradients gr = {.input = dx};
    size_t fwd = 0, bwd = 0, bwd2 = 0;
    assert_int_equal(dynconv_conv2d_backward_workspace_size(layer, &bwd),
                     DYNCONV_ERROR_INVALID_STATE);
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, &bwd), DYNCONV_ERROR_INVALID_STATE);
    /* a smaller shape first, then the case's shape; 2x2 outputs, fewer than any of the own
     * engine's tiles is wide, run on im2col + BLAS, whose forward holds the one kernel */
    assert_int_equal(dynconv_conv2d_reshape(layer, 1, 2, 2, NULL, NULL, &fwd), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_backward(layer, d.x, d.dy, &gr, 0, NULL, 0),
                     DYNCONV_ERROR_INVALID_STATE);
    assert_int_equal(dynconv_conv2d_backward_workspace_size(layer, &bwd), DYNCONV_OK);
    assert_true(bwd > fwd);
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, &bwd2), DYNCONV_OK);
    assert_int_equal(bwd, bwd2);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_backward(layer, d.x, d.dy, &gr, 0, NULL, 0), DYNCONV_OK);

    bw_grads ref;
    alloc_grads(&d, &ref, 0.0f);
    run_backward(c, &d, &ref, ~1u, 0, true);
    assert_memory_equal(dx, ref.g[G_INPUT], d.x_count * sizeof(float));
    free_grads(&ref);
    free(dx);
    dynconv_conv2d_destroy(layer);
    free_data(&d);
}

/* K = 1: the softmax of a single logit is 1 whatever the logit, so the gradients of the
 * attention parameters are exactly zero (pi * (dpi - pi * dpi) with pi == 1). */
static void test_single_kernel_attention_grads_zero(void **state)
{
    (void)state;
    const bw_case *c = find_case("single_kernel_k1");
    bw_data d;
    make_data(c, 21, &d);
    bw_grads gr;
    alloc_grads(&d, &gr, NAN);
    run_backward(c, &d, &gr, 0, 0, false);
    for (int i = 1 + P_FC1_W; i < G_COUNT; ++i) {
        for (size_t j = 0; j < gr.count[i]; ++j) {
            assert_true(gr.g[i][j] == 0.0f);
        }
    }
    free_grads(&gr);
    free_data(&d);
}

/* ------------------------------------------------------------------------------------------ */
/* Temperature schedule                                                                       */
/* ------------------------------------------------------------------------------------------ */

static dynconv_conv2d *small_layer(void)
{
    static float weight[2 * 2 * 2], fc1[2], fc2[2];
    const dynconv_conv2d_geometry g = CONV(2, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1, 2, 1);
    const dynconv_conv2d_weights w = {weight, NULL, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer), DYNCONV_OK);
    return layer;
}

static void test_schedule_values(void **state)
{
    (void)state;
    dynconv_conv2d *layer = small_layer();
    float t = 0.0f, stepped = 0.0f;
    assert_int_equal(dynconv_conv2d_set_temperature_schedule(layer, 30.0f, 1.0f, 10), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 30.0f);
    /* 30 -> 1 in 10 steps: 30, 27.1, 24.2, ..., 3.9, 1, then 1 for ever. */
    const double want[] = {27.1, 24.2, 21.3, 18.4, 15.5, 12.6, 9.7, 6.8, 3.9, 1.0, 1.0, 1.0};
    for (size_t s = 0; s < COUNT(want); ++s) {
        assert_int_equal(dynconv_conv2d_step_temperature(layer, &stepped), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
        assert_true(t == stepped);
        assert_true(fabs((double)t - want[s]) <= 1e-6 * want[s]);
    }
    assert_true(t == 1.0f);
    /* Rising schedules work too; the new T may be left unread. */
    assert_int_equal(dynconv_conv2d_set_temperature_schedule(layer, 1.0f, 5.0f, 4), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_step_temperature(layer, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 2.0f);
    /* steps = 0 jumps to t1. */
    assert_int_equal(dynconv_conv2d_set_temperature_schedule(layer, 8.0f, 2.0f, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 2.0f);
    assert_int_equal(dynconv_conv2d_step_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 2.0f);
    /* Setting T directly ends the schedule. */
    assert_int_equal(dynconv_conv2d_set_temperature(layer, 4.0f), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_step_temperature(layer, &t), DYNCONV_ERROR_INVALID_STATE);
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 4.0f);
    dynconv_conv2d_destroy(layer);
}

/* The schedule's T is the one the forward uses: the attention at step s equals that of a layer
 * whose temperature was set directly to the scheduled value. */
static void test_schedule_drives_forward(void **state)
{
    (void)state;
    const bw_case *c = find_case("linear_basic");
    bw_data d;
    make_data(c, 17, &d);
    const dynconv_linear_geometry lg = {c->g.in_channels, c->g.out_channels, c->g.num_kernels,
                                        c->g.hidden};
    const dynconv_linear_weights w = {d.param[0], d.param[1], d.param[2],
                                      d.param[3], d.param[4], d.param[5]};
    dynconv_linear *sched = NULL, *fixed = NULL;
    assert_int_equal(dynconv_linear_create(&lg, &w, 1.0f, 0, &sched), DYNCONV_OK);
    assert_int_equal(dynconv_linear_create(&lg, &w, 1.0f, 0, &fixed), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(sched, c->n, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(fixed, c->n, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_set_temperature_schedule(sched, 6.0f, 0.5f, 3), DYNCONV_OK);
    const float want_t[] = {6.0f, 4.1666665f, 2.3333333f, 0.5f};
    float *y = tu_alloc(d.y_count * sizeof(float)), *y2 = tu_alloc(d.y_count * sizeof(float));
    const size_t k = (size_t)(c->n * c->g.num_kernels);
    float *pi = tu_alloc(k * sizeof(float)), *pi2 = tu_alloc(k * sizeof(float));
    for (size_t s = 0; s < COUNT(want_t); ++s) {
        float t = 0.0f;
        if (s > 0) {
            assert_int_equal(dynconv_linear_step_temperature(sched, &t), DYNCONV_OK);
        } else {
            assert_int_equal(dynconv_linear_get_temperature(sched, &t), DYNCONV_OK);
        }
        assert_true(fabsf(t - want_t[s]) <= 1e-6f * want_t[s]);
        assert_int_equal(dynconv_linear_set_temperature(fixed, t), DYNCONV_OK);
        assert_int_equal(dynconv_linear_forward(sched, d.x, y, pi, NULL, 0), DYNCONV_OK);
        assert_int_equal(dynconv_linear_forward(fixed, d.x, y2, pi2, NULL, 0), DYNCONV_OK);
        assert_memory_equal(pi, pi2, k * sizeof(float));
        assert_memory_equal(y, y2, d.y_count * sizeof(float));
    }
    /* Different temperatures must actually give different attention. */
    assert_true(fabsf(pi[0] - 1.0f / (float)c->g.num_kernels) > 1e-3f);
    free(y);
    free(y2);
    free(pi);
    free(pi2);
    dynconv_linear_destroy(sched);
    dynconv_linear_destroy(fixed);
    free_data(&d);
}

/* ------------------------------------------------------------------------------------------ */
/* Bad arguments: the documented status, a message naming the function, nothing written        */
/* ------------------------------------------------------------------------------------------ */

#define SENTINEL 12345.0f

static void expect_status(dynconv_status got, dynconv_status want, const char *fn)
{
    assert_int_equal(got, want);
    assert_non_null(strstr(dynconv_last_error_message(), fn));
}

static void expect_untouched(const bw_grads *gr)
{
    for (int i = 0; i < G_COUNT; ++i) {
        for (size_t j = 0; j < gr->count[i]; ++j) {
            assert_true(gr->g[i][j] == SENTINEL);
        }
    }
}

static void test_backward_bad_arguments(void **state)
{
    (void)state;
    static const char fn[] = "dynconv_conv2d_backward";
    const bw_case *c = find_case("basic_3x3_pad1");
    bw_data d;
    make_data(c, 31, &d);
    bw_grads gr;
    alloc_grads(&d, &gr, SENTINEL);
    const dynconv_conv2d_gradients all = {gr.g[0], gr.g[1], gr.g[2], gr.g[3],
                                          gr.g[4], gr.g[5], gr.g[6]};
    const dynconv_conv2d_weights w = {d.param[0], d.param[1], d.param[2],
                                      d.param[3], d.param[4], d.param[5]};
    dynconv_conv2d *own = NULL, *ext = NULL, *nobias = NULL;
    assert_int_equal(dynconv_conv2d_create(&c->g, &w, 1.0f, DYNCONV_FLAG_BORROW_WEIGHTS, &own),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_create(&c->g, &w, 1.0f, DYNCONV_FLAG_EXTERNAL_WORKSPACE, &ext),
                     DYNCONV_OK);
    const dynconv_conv2d_weights wnb = {d.param[0], NULL, d.param[2], NULL, d.param[4], NULL};
    assert_int_equal(dynconv_conv2d_create(&c->g, &wnb, 1.0f, 0, &nobias), DYNCONV_OK);

    /* Before reshape. */
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &all, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_STATE, fn);
    size_t size = 0;
    expect_status(dynconv_conv2d_backward_workspace_size(own, &size), DYNCONV_ERROR_INVALID_STATE,
                  "dynconv_conv2d_backward_workspace_size");
    expect_status(dynconv_conv2d_prepare_backward(own, &size), DYNCONV_ERROR_INVALID_STATE,
                  "dynconv_conv2d_prepare_backward");
    expect_status(dynconv_conv2d_backward_workspace_size(NULL, &size), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_conv2d_backward_workspace_size");
    expect_status(dynconv_conv2d_backward_workspace_size(own, NULL), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_conv2d_backward_workspace_size");
    expect_status(dynconv_conv2d_prepare_backward(NULL, &size), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_conv2d_prepare_backward");

    assert_int_equal(dynconv_conv2d_reshape(own, c->n, c->h, c->w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(ext, c->n, c->h, c->w, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(nobias, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    /* Own workspace not enabled for backward yet. */
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &all, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_STATE, fn);
    assert_int_equal(dynconv_conv2d_prepare_backward(own, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_prepare_backward(ext, &size), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_prepare_backward(nobias, NULL), DYNCONV_OK);
    /* 128 spare bytes: room for a misaligned pointer and for overlapping views. */
    char *buf = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (size + 128 + 63) / 64 * 64);
    assert_non_null(buf);

    expect_status(dynconv_conv2d_backward(NULL, d.x, d.dy, &all, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, fn);
    expect_status(dynconv_conv2d_backward(own, NULL, d.dy, &all, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, fn);
    expect_status(dynconv_conv2d_backward(own, d.x, NULL, &all, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, fn);
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, NULL, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, fn);
    expect_status(dynconv_conv2d_backward(ext, d.x, d.dy, &all, 0, NULL, size),
                  DYNCONV_ERROR_NULL_POINTER, fn);
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &all, 2u, NULL, 0),
                  DYNCONV_ERROR_UNSUPPORTED, fn);
    /* A gradient for a parameter the layer does not have. */
    const dynconv_conv2d_gradients extra[3] = {{.bias = gr.g[2]},
                                               {.fc1_bias = gr.g[4]},
                                               {.fc2_bias = gr.g[6]}};
    for (int i = 0; i < 3; ++i) {
        expect_status(dynconv_conv2d_backward(nobias, d.x, d.dy, &extra[i], 0, NULL, 0),
                      DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    }
    expect_status(dynconv_conv2d_backward(ext, d.x, d.dy, &all, 0, buf, size - 1),
                  DYNCONV_ERROR_INSUFFICIENT_WORKSPACE, fn);
    expect_status(dynconv_conv2d_backward(ext, d.x, d.dy, &all, 0, buf + 4, size),
                  DYNCONV_ERROR_MISALIGNED_WORKSPACE, fn);

    /* Overlaps. The gradient of the input aliasing the input is the classic mistake. */
    dynconv_conv2d_gradients bad = all;
    bad.input = d.x;
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &bad, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    bad = all;
    bad.fc1_weight = gr.g[1 + P_WEIGHT] + 1;
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &bad, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    /* own borrows the weights: a gradient written over them would corrupt the computation */
    bad = all;
    bad.weight = d.param[P_WEIGHT];
    expect_status(dynconv_conv2d_backward(own, d.x, d.dy, &bad, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    bad = all;
    bad.fc2_bias = (float *)(void *)(buf + 64);
    expect_status(dynconv_conv2d_backward(ext, d.x, d.dy, &bad, 0, buf, size),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    expect_status(dynconv_conv2d_backward(ext, (const float *)(void *)buf, d.dy, &all, 0, buf,
                                          size),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    expect_status(dynconv_conv2d_backward(ext, d.x, (const float *)(void *)(buf + 64), &all, 0,
                                          buf, size),
                  DYNCONV_ERROR_INVALID_ARGUMENT, fn);
    expect_untouched(&gr);

    /* The linear entry points name themselves and share the checks. */
    const dynconv_linear_gradients lnone = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    expect_status(dynconv_linear_backward(NULL, d.x, d.dy, &lnone, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, "dynconv_linear_backward");
    expect_status(dynconv_linear_backward_workspace_size(NULL, &size), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_linear_backward_workspace_size");
    expect_status(dynconv_linear_prepare_backward(NULL, &size), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_linear_prepare_backward");
    const dynconv_linear_geometry lg = {3, 2, 2, 2};
    float lw[2 * 2 * 3] = {0}, lfc1[2 * 3] = {0}, lfc2[2 * 2] = {0}, lx[3] = {0}, ldy[2] = {0};
    const dynconv_linear_weights lwts = {lw, NULL, lfc1, NULL, lfc2, NULL};
    dynconv_linear *lin = NULL;
    assert_int_equal(dynconv_linear_create(&lg, &lwts, 1.0f, 0, &lin), DYNCONV_OK);
    expect_status(dynconv_linear_backward(lin, lx, ldy, &lnone, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_STATE, "dynconv_linear_backward");
    expect_status(dynconv_linear_prepare_backward(lin, &size), DYNCONV_ERROR_INVALID_STATE,
                  "dynconv_linear_prepare_backward");
    expect_status(dynconv_linear_backward_workspace_size(lin, &size), DYNCONV_ERROR_INVALID_STATE,
                  "dynconv_linear_backward_workspace_size");
    assert_int_equal(dynconv_linear_reshape(lin, 1, NULL), DYNCONV_OK);
    expect_status(dynconv_linear_backward(lin, lx, ldy, NULL, 0, NULL, 0),
                  DYNCONV_ERROR_NULL_POINTER, "dynconv_linear_backward");
    float lbias_grad[4];
    const dynconv_linear_gradients lbad = {.bias = lbias_grad};
    expect_status(dynconv_linear_backward(lin, lx, ldy, &lbad, 0, NULL, 0),
                  DYNCONV_ERROR_INVALID_ARGUMENT, "dynconv_linear_backward");
    dynconv_linear_destroy(lin);

    free(buf);
    dynconv_conv2d_destroy(own);
    dynconv_conv2d_destroy(ext);
    dynconv_conv2d_destroy(nobias);
    free_grads(&gr);
    free_data(&d);
}

static void test_schedule_bad_arguments(void **state)
{
    (void)state;
    static const char set_fn[] = "dynconv_conv2d_set_temperature_schedule";
    static const char step_fn[] = "dynconv_conv2d_step_temperature";
    dynconv_conv2d *layer = small_layer();
    float t = 0.0f;
    expect_status(dynconv_conv2d_set_temperature_schedule(NULL, 2.0f, 1.0f, 3),
                  DYNCONV_ERROR_NULL_POINTER, set_fn);
    expect_status(dynconv_conv2d_step_temperature(NULL, &t), DYNCONV_ERROR_NULL_POINTER, step_fn);
    expect_status(dynconv_conv2d_step_temperature(layer, &t), DYNCONV_ERROR_INVALID_STATE,
                  step_fn);
    assert_int_equal(dynconv_conv2d_set_temperature_schedule(layer, 2.0f, 1.0f, 4), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_step_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 1.75f);
    const float bad_t[] = {0.0f, -1.0f, NAN, INFINITY};
    for (size_t i = 0; i < COUNT(bad_t); ++i) {
        expect_status(dynconv_conv2d_set_temperature_schedule(layer, bad_t[i], 1.0f, 3),
                      DYNCONV_ERROR_INVALID_ARGUMENT, set_fn);
        expect_status(dynconv_conv2d_set_temperature_schedule(layer, 1.0f, bad_t[i], 3),
                      DYNCONV_ERROR_INVALID_ARGUMENT, set_fn);
    }
    expect_status(dynconv_conv2d_set_temperature_schedule(layer, 1.0f, 2.0f, -1),
                  DYNCONV_ERROR_INVALID_ARGUMENT, set_fn);
    /* The failed calls left the running schedule alone: the next step is the second one. */
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 1.75f);
    assert_int_equal(dynconv_conv2d_step_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 1.5f);
    dynconv_conv2d_destroy(layer);

    expect_status(dynconv_linear_set_temperature_schedule(NULL, 2.0f, 1.0f, 3),
                  DYNCONV_ERROR_NULL_POINTER, "dynconv_linear_set_temperature_schedule");
    expect_status(dynconv_linear_step_temperature(NULL, &t), DYNCONV_ERROR_NULL_POINTER,
                  "dynconv_linear_step_temperature");
    const dynconv_linear_geometry lg = {3, 2, 2, 2};
    float lw[2 * 2 * 3] = {0}, lfc1[2 * 3] = {0}, lfc2[2 * 2] = {0};
    const dynconv_linear_weights lwts = {lw, NULL, lfc1, NULL, lfc2, NULL};
    dynconv_linear *lin = NULL;
    assert_int_equal(dynconv_linear_create(&lg, &lwts, 1.0f, 0, &lin), DYNCONV_OK);
    expect_status(dynconv_linear_step_temperature(lin, &t), DYNCONV_ERROR_INVALID_STATE,
                  "dynconv_linear_step_temperature");
    expect_status(dynconv_linear_set_temperature_schedule(lin, 1.0f, NAN, 3),
                  DYNCONV_ERROR_INVALID_ARGUMENT, "dynconv_linear_set_temperature_schedule");
    dynconv_linear_destroy(lin);
}

/* ------------------------------------------------------------------------------------------ */
/* Larger static layers against the definition                                                */
/* ------------------------------------------------------------------------------------------ */

/* Shapes past the engine's blocking of the input gradient (depth over 256 rows, more than 256
 * output channels in a group, more than 512 output positions, partial panels everywhere), too
 * large for finite differences: with K = 1 the attention contributes nothing (softmax of one
 * logit), so dL/dx is the transposed convolution of dy with the kernel and dL/dW the
 * correlation of dy with the input, both computed here in double from the definition. */
typedef struct big_case {
    const char *name;
    dynconv_conv2d_geometry g;
    int64_t n, h, w;
} big_case;

/* clang-format off */
static const big_case big_cases[] = {
    /* name                    geometry: cin cout kh kw sh sw ph pw dh dw g K hid        n  h   w */
    {"big_3x3_depth360_out264", CONV(40, 264, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2),         1, 23, 23},
    {"big_3x3_groups2_odd",     CONV(38, 18, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1, 2),          2, 25, 21},
    {"big_3x3_s2_dil2_g3",      CONV(93, 30, 3, 3, 2, 2, 2, 2, 2, 2, 3, 1, 2),          2, 17, 19},
    {"big_1x1_out300_plane529", CONV(13, 300, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 2),         2, 23, 23},
    {"big_1x1_s2_groups2",      CONV(36, 20, 1, 1, 2, 2, 0, 0, 1, 1, 2, 1, 2),          2, 15, 13},
    {"big_5x3_asym_7x7",        CONV(24, 70, 5, 3, 1, 2, 2, 1, 1, 1, 1, 1, 2),          3, 7, 7},
};
/* clang-format on */

static void test_big_static(void **state)
{
    const big_case *c = *state;
    const dynconv_conv2d_geometry *g = &c->g;
    const int64_t cin = g->in_channels, cout = g->out_channels, grp = g->groups;
    const int64_t gi = cin / grp, go = cout / grp, kh = g->kernel_h, kw = g->kernel_w;
    const int64_t oh = ref_out_size(c->h, kh, g->stride_h, g->pad_h, g->dilation_h);
    const int64_t ow = ref_out_size(c->w, kw, g->stride_w, g->pad_w, g->dilation_w);
    const size_t x_count = (size_t)(c->n * cin * c->h * c->w);
    const size_t y_count = (size_t)(c->n * cout * oh * ow);
    const size_t w_count = (size_t)(cout * gi * kh * kw);
    tu_rng rng;
    tu_rng_seed(&rng, 99);
    float *x = tu_alloc(x_count * sizeof(float)), *dy = tu_alloc(y_count * sizeof(float));
    float *w = tu_alloc(w_count * sizeof(float)), *fc1 = tu_alloc((size_t)(2 * cin) * sizeof(float));
    float *fc2 = tu_alloc(2 * sizeof(float));
    tu_fill_uniform(&rng, x, x_count, -1.0f, 1.0f);
    tu_fill_uniform(&rng, dy, y_count, -1.0f, 1.0f);
    tu_fill_uniform(&rng, w, w_count, -0.5f, 0.5f);
    tu_fill_uniform(&rng, fc1, (size_t)(2 * cin), -0.5f, 0.5f);
    tu_fill_uniform(&rng, fc2, 2, -0.5f, 0.5f);
    double *dx_want = tu_alloc(x_count * sizeof(double));
    double *dw_want = tu_alloc(w_count * sizeof(double));
    memset(dx_want, 0, x_count * sizeof(double));
    memset(dw_want, 0, w_count * sizeof(double));
    for (int64_t n = 0; n < c->n; ++n) {
        for (int64_t o = 0; o < cout; ++o) {
            const int64_t gr = o / go;
            for (int64_t ci = 0; ci < gi; ++ci) {
                const int64_t ch = gr * gi + ci;
                for (int64_t ki = 0; ki < kh; ++ki) {
                    for (int64_t kj = 0; kj < kw; ++kj) {
                        const size_t wi = (size_t)(((o * gi + ci) * kh + ki) * kw + kj);
                        for (int64_t a = 0; a < oh; ++a) {
                            const int64_t ih = a * g->stride_h - g->pad_h + ki * g->dilation_h;
                            if (ih < 0 || ih >= c->h) {
                                continue;
                            }
                            for (int64_t b = 0; b < ow; ++b) {
                                const int64_t iw =
                                    b * g->stride_w - g->pad_w + kj * g->dilation_w;
                                if (iw < 0 || iw >= c->w) {
                                    continue;
                                }
                                const size_t xi = (size_t)(((n * cin + ch) * c->h + ih) * c->w + iw);
                                const double gy = dy[((n * cout + o) * oh + a) * ow + b];
                                dx_want[xi] += (double)w[wi] * gy;
                                dw_want[wi] += (double)x[xi] * gy;
                            }
                        }
                    }
                }
            }
        }
    }
    const dynconv_conv2d_weights wts = {w, NULL, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(g, &wts, 1.0f, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, NULL), DYNCONV_OK);
    float *dx = tu_alloc(x_count * sizeof(float)), *dw = tu_alloc(w_count * sizeof(float));
    const dynconv_conv2d_gradients gr = {dx, dw, NULL, NULL, NULL, NULL, NULL};
    assert_int_equal(dynconv_conv2d_backward(layer, x, dy, &gr, 0, NULL, 0), DYNCONV_OK);
    char what[96];
    snprintf(what, sizeof what, "%s dinput", c->name);
    size_t bad = gc_compare(what, dx, dx_want, x_count);
    snprintf(what, sizeof what, "%s dweight", c->name);
    bad += gc_compare(what, dw, dw_want, w_count);
    /* A strided kernel leaves most of dL/dx at zero: only its weight gradient must be varied,
     * and dL/dx far from all zero. */
    size_t nonzero = 0;
    for (size_t i = 0; i < x_count; ++i) {
        nonzero += dx_want[i] != 0.0;
    }
    assert_true(tu_nontrivial(dw_want, w_count));
    assert_true(nonzero * 8 > x_count);
    assert_int_equal(bad, 0);
    dynconv_conv2d_destroy(layer);
    free(dx), free(dw), free(dx_want), free(dw_want);
    free(x), free(dy), free(w), free(fc1), free(fc2);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    const size_t fd = COUNT(cases);
    const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_accumulate),
        cmocka_unit_test(test_skipped_gradients),
        cmocka_unit_test(test_workspaces_agree),
        cmocka_unit_test(test_own_workspace_protocol),
        cmocka_unit_test(test_thread_count_irrelevant),
        cmocka_unit_test(test_single_kernel_attention_grads_zero),
        cmocka_unit_test(test_schedule_values),
        cmocka_unit_test(test_schedule_drives_forward),
        cmocka_unit_test(test_backward_bad_arguments),
        cmocka_unit_test(test_schedule_bad_arguments),
    };
    const size_t big = COUNT(big_cases), count = fd + big + COUNT(fixed);
    struct CMUnitTest *tests = tu_alloc(count * sizeof *tests);
    for (size_t i = 0; i < fd; ++i) {
        tests[i] = (struct CMUnitTest){cases[i].name, test_finite_differences, NULL, NULL,
                                       (void *)&cases[i]};
    }
    for (size_t i = 0; i < big; ++i) {
        tests[fd + i] = (struct CMUnitTest){big_cases[i].name, test_big_static, NULL, NULL,
                                            (void *)&big_cases[i]};
    }
    for (size_t i = 0; i < COUNT(fixed); ++i) {
        tests[fd + big + i] = fixed[i];
    }
#if defined(DC_TEST_ENGINE_VARIANTS)
    /* Variant 0: the input gradient through BLAS; then on the engine with each micro-kernel
     * (vectors along the positions, then along the channels) (an ISA this CPU lacks is skipped, and said so). The forward's own choice
     * stays automatic: the backward does not use it. */
    int failed = 0;
    static const char *const names[] = {"baseline", "avx2", "avx512", "baseline-channels",
                                        "avx2-channels", "avx512-channels"};
    for (int v = -1; v < 2 * (DC_ISA_AVX512 + 1); ++v) {
        /* v = isa, then 3 + isa for the channel-lanes kernel of isa (none on AVX2) */
        if (v >= 0 && !dc_gemm_force((dc_isa)(v % 3), v >= 3)) {
            printf("[  SKIPPED ] the %s micro-kernel: not built in or not supported here\n",
                   names[v]);
            continue;
        }
        dc_exec_set_backward_engine_mode(v < 0 ? DC_ENGINE_NEVER : DC_ENGINE_ALWAYS);
        char group[64];
        snprintf(group, sizeof group, "backward, %s%s", v < 0 ? "im2col + BLAS" : "engine ",
                 v < 0 ? "" : names[v]);
        failed += _cmocka_run_group_tests(group, tests, count, NULL, NULL);
    }
    dc_gemm_force_auto();
    dc_exec_set_backward_engine_mode(DC_ENGINE_AUTO);
#else
    const int failed = _cmocka_run_group_tests("backward", tests, count, NULL, NULL);
#endif
    free(tests);
    return failed;
}
