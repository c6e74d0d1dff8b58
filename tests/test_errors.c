/* Every way to call the API wrongly, as a table of named cases. Each case makes exactly one bad
 * call and the driver then checks the whole error contract of the header:
 *   - the documented status,
 *   - a non-empty dynconv_last_error_message() right after the call,
 *   - no output buffer written (outputs are filled with a sentinel beforehand), *out handle and
 *     reshape's out_h / out_w / workspace_size untouched, the input untouched,
 *   - the handle keeps its previous state: it still runs the old shape at the old temperature and
 *     gives bitwise the result it gave before the bad call. */
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

/* Output buffers are filled with this NaN payload: a write of any real value changes it. */
#define SENTINEL_BITS 0x7fc0deadu
#define SENTINEL_I64 INT64_C(-777)
#define SENTINEL_SIZE ((size_t)0x5e17e1u)

/* The fixture geometry: 4 -> 6 channels, groups 2, 3x3, pad 1 along h but 0 along w, so that a
 * narrow input (W < 3) is an invalid shape. */
#define CONV_N 2
#define CONV_H 6
#define CONV_W 7
#define CONV_T 1.5f
#define LIN_N 3
#define LIN_T 0.75f

/* Stand-ins for a handle that a failed create must not write over. Never dereferenced. */
static max_align_t conv_sentinel_obj, linear_sentinel_obj;
#define CONV_SENTINEL ((dynconv_conv2d *)(void *)&conv_sentinel_obj)
#define LINEAR_SENTINEL ((dynconv_linear *)(void *)&linear_sentinel_obj)

typedef struct fx {
    /* dynamic conv2d */
    dynconv_conv2d_geometry g;
    float *weight, *bias, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    dynconv_conv2d *layer;   /* reshaped to CONV_N x CONV_H x CONV_W */
    dynconv_conv2d *fresh;   /* created, never reshaped */
    dynconv_conv2d *ext;     /* DYNCONV_FLAG_EXTERNAL_WORKSPACE, reshaped like layer */
    dynconv_conv2d *created; /* *out of the create calls */
    size_t x_len, y_len, att_len;
    float *x, *x_copy;       /* x_len + y_len floats: room for an overlapping output */
    float *y, *att, *y_base, *att_base;
    void *ws;                /* ws_size + 128 bytes, 64-byte aligned */
    size_t ws_size;
    int64_t out_h, out_w;    /* reshape's out-parameters, sentinel filled */
    size_t ws_report;
    float t_got;

    /* dynamic linear */
    dynconv_linear_geometry lg;
    float *lweight, *lbias, *lfc1_w, *lfc1_b, *lfc2_w, *lfc2_b;
    dynconv_linear *llayer, *lfresh, *lext, *lcreated;
    size_t lx_len, ly_len, latt_len;
    float *lx, *lx_copy, *ly, *latt, *ly_base;
    void *lws;
    size_t lws_size;

    /* what the case saw right after its bad call */
    bool msg_taken;
    char msg[512];
} fx;

typedef struct err_case err_case;
typedef dynconv_status (*case_fn)(fx *f, const err_case *c);

struct err_case {
    const char *name;
    dynconv_status expected;
    case_fn call;
    size_t field;  /* offsetof the geometry field a bad-geometry case changes */
    int64_t value; /* the bad size (geometry field, batch, height, width) */
    float t;       /* the bad temperature */
    uint32_t flags;
};

/* ---------------------------------------------------------------------------------------- */
/* Fixture                                                                                  */

static float *rand_array(tu_rng *rng, size_t n)
{
    float *p = tu_alloc(n * sizeof(float));
    tu_fill_uniform(rng, p, n, -0.5f, 0.5f);
    return p;
}

static void fill_sentinel(float *p, size_t n)
{
    const uint32_t bits = SENTINEL_BITS;
    for (size_t i = 0; i < n; ++i) {
        memcpy(&p[i], &bits, sizeof bits);
    }
}

static bool is_sentinel(const float *p, size_t n)
{
    const uint32_t bits = SENTINEL_BITS;
    for (size_t i = 0; i < n; ++i) {
        if (memcmp(&p[i], &bits, sizeof bits) != 0) {
            return false;
        }
    }
    return true;
}

static void *alloc_aligned(size_t bytes)
{
    const size_t a = DYNCONV_WORKSPACE_ALIGNMENT;
    void *p = aligned_alloc(a, ((bytes + a - 1) / a + 1) * a);
    assert_non_null(p);
    return p;
}

static dynconv_conv2d_weights conv_weights(const fx *f)
{
    const dynconv_conv2d_weights w = {f->weight, f->bias,  f->fc1_w,
                                      f->fc1_b,  f->fc2_w, f->fc2_b};
    return w;
}

static dynconv_linear_weights linear_weights(const fx *f)
{
    const dynconv_linear_weights w = {f->lweight, f->lbias,  f->lfc1_w,
                                      f->lfc1_b,  f->lfc2_w, f->lfc2_b};
    return w;
}

static void setup_conv(fx *f, tu_rng *rng)
{
    const dynconv_conv2d_geometry g = {.in_channels = 4, .out_channels = 6, .kernel_h = 3,
                                       .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1,
                                       .pad_w = 0, .dilation_h = 1, .dilation_w = 1, .groups = 2,
                                       .num_kernels = 3, .hidden = 5};
    f->g = g;
    f->weight = rand_array(rng, 3 * 6 * 2 * 9);
    f->bias = rand_array(rng, 3 * 6);
    f->fc1_w = rand_array(rng, 5 * 4);
    f->fc1_b = rand_array(rng, 5);
    f->fc2_w = rand_array(rng, 3 * 5);
    f->fc2_b = rand_array(rng, 3);
    const dynconv_conv2d_weights wt = conv_weights(f);
    assert_int_equal(dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, &f->layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, &f->fresh), DYNCONV_OK);
    assert_int_equal(
        dynconv_conv2d_create(&f->g, &wt, CONV_T, DYNCONV_FLAG_EXTERNAL_WORKSPACE, &f->ext),
        DYNCONV_OK);
    int64_t oh = 0, ow = 0;
    size_t ws_ext = 0;
    assert_int_equal(
        dynconv_conv2d_reshape(f->layer, CONV_N, CONV_H, CONV_W, &oh, &ow, &f->ws_size),
        DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(f->ext, CONV_N, CONV_H, CONV_W, NULL, NULL, &ws_ext),
                     DYNCONV_OK);
    assert_int_equal(ws_ext, f->ws_size);
    assert_int_equal(oh, CONV_H);
    assert_int_equal(ow, CONV_W - 2);

    f->x_len = (size_t)(CONV_N * 4 * CONV_H * CONV_W);
    f->y_len = (size_t)(CONV_N * 6 * oh * ow);
    f->att_len = (size_t)CONV_N * 3;
    f->x = tu_alloc((f->x_len + f->y_len) * sizeof(float));
    tu_fill_uniform(rng, f->x, f->x_len, -1.f, 1.f);
    fill_sentinel(f->x + f->x_len, f->y_len);
    f->x_copy = tu_alloc((f->x_len + f->y_len) * sizeof(float));
    memcpy(f->x_copy, f->x, (f->x_len + f->y_len) * sizeof(float));
    f->y = tu_alloc(f->y_len * sizeof(float));
    f->att = tu_alloc(f->att_len * sizeof(float));
    f->y_base = tu_alloc(f->y_len * sizeof(float));
    f->att_base = tu_alloc(f->att_len * sizeof(float));
    f->ws = alloc_aligned(f->ws_size + 128);

    /* what the handle gives before any bad call */
    assert_int_equal(dynconv_conv2d_forward(f->layer, f->x, f->y_base, f->att_base, NULL, 0),
                     DYNCONV_OK);
    fill_sentinel(f->y, f->y_len);
    fill_sentinel(f->att, f->att_len);
    f->created = CONV_SENTINEL;
    f->out_h = SENTINEL_I64;
    f->out_w = SENTINEL_I64;
    f->ws_report = SENTINEL_SIZE;
    fill_sentinel(&f->t_got, 1);
}

static void setup_linear(fx *f, tu_rng *rng)
{
    const dynconv_linear_geometry g = {.in_features = 8, .out_features = 5, .num_kernels = 3,
                                       .hidden = 4};
    f->lg = g;
    f->lweight = rand_array(rng, 3 * 5 * 8);
    f->lbias = rand_array(rng, 3 * 5);
    f->lfc1_w = rand_array(rng, 4 * 8);
    f->lfc1_b = rand_array(rng, 4);
    f->lfc2_w = rand_array(rng, 3 * 4);
    f->lfc2_b = rand_array(rng, 3);
    const dynconv_linear_weights wt = linear_weights(f);
    assert_int_equal(dynconv_linear_create(&f->lg, &wt, LIN_T, 0, &f->llayer), DYNCONV_OK);
    assert_int_equal(dynconv_linear_create(&f->lg, &wt, LIN_T, 0, &f->lfresh), DYNCONV_OK);
    assert_int_equal(
        dynconv_linear_create(&f->lg, &wt, LIN_T, DYNCONV_FLAG_EXTERNAL_WORKSPACE, &f->lext),
        DYNCONV_OK);
    size_t ws_ext = 0;
    assert_int_equal(dynconv_linear_reshape(f->llayer, LIN_N, &f->lws_size), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(f->lext, LIN_N, &ws_ext), DYNCONV_OK);
    assert_int_equal(ws_ext, f->lws_size);

    f->lx_len = (size_t)LIN_N * 8;
    f->ly_len = (size_t)LIN_N * 5;
    f->latt_len = (size_t)LIN_N * 3;
    f->lx = tu_alloc((f->lx_len + f->ly_len) * sizeof(float));
    tu_fill_uniform(rng, f->lx, f->lx_len, -1.f, 1.f);
    fill_sentinel(f->lx + f->lx_len, f->ly_len);
    f->lx_copy = tu_alloc((f->lx_len + f->ly_len) * sizeof(float));
    memcpy(f->lx_copy, f->lx, (f->lx_len + f->ly_len) * sizeof(float));
    f->ly = tu_alloc(f->ly_len * sizeof(float));
    f->latt = tu_alloc(f->latt_len * sizeof(float));
    f->ly_base = tu_alloc(f->ly_len * sizeof(float));
    f->lws = alloc_aligned(f->lws_size + 128);

    assert_int_equal(dynconv_linear_forward(f->llayer, f->lx, f->ly_base, NULL, NULL, 0),
                     DYNCONV_OK);
    fill_sentinel(f->ly, f->ly_len);
    fill_sentinel(f->latt, f->latt_len);
    f->lcreated = LINEAR_SENTINEL;
}

/* cmocka fixture: *state comes in as the case and goes out as the fixture (which points back
 * to the case), so the teardown runs even when an assertion of the case fails. */
typedef struct fx_state {
    const err_case *c;
    fx f;
} fx_state;

static int setup_fixture(void **state)
{
    fx_state *s = calloc(1, sizeof(*s));
    if (!s) {
        return -1;
    }
    s->c = *state;
    tu_rng rng;
    tu_rng_seed(&rng, 2024);
    setup_conv(&s->f, &rng);
    setup_linear(&s->f, &rng);
    *state = s;
    return 0;
}

static int teardown_fixture(void **state)
{
    fx_state *s = *state;
    fx *f = &s->f;
    /* a create that wrongly succeeded must not leak */
    if (f->created != CONV_SENTINEL) {
        dynconv_conv2d_destroy(f->created);
    }
    if (f->lcreated != LINEAR_SENTINEL) {
        dynconv_linear_destroy(f->lcreated);
    }
    dynconv_conv2d_destroy(f->layer);
    dynconv_conv2d_destroy(f->fresh);
    dynconv_conv2d_destroy(f->ext);
    dynconv_linear_destroy(f->llayer);
    dynconv_linear_destroy(f->lfresh);
    dynconv_linear_destroy(f->lext);
    float *arrays[] = {f->weight, f->bias,   f->fc1_w, f->fc1_b,   f->fc2_w,   f->fc2_b,
                       f->x,      f->x_copy, f->y,     f->att,     f->y_base,  f->att_base,
                       f->lweight, f->lbias, f->lfc1_w, f->lfc1_b, f->lfc2_w,  f->lfc2_b,
                       f->lx,     f->lx_copy, f->ly,   f->latt,    f->ly_base};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); ++i) {
        free(arrays[i]);
    }
    free(f->ws);
    free(f->lws);
    free(s);
    return 0;
}

/* Every case returns through this, right after its one bad call: the message is only valid
 * until the next libdynconv call (a cleanup destroy, say). */
static dynconv_status done(fx *f, dynconv_status st)
{
    const char *m = dynconv_last_error_message();
    snprintf(f->msg, sizeof f->msg, "%s", m ? m : "(NULL)");
    f->msg_taken = true;
    return st;
}

/* A throw-away conv handle on a modified geometry, for the cases the fixture's cannot reach. */
static dynconv_conv2d *temp_conv(const fx *f, const dynconv_conv2d_geometry *g)
{
    const dynconv_conv2d_weights wt = conv_weights(f);
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(g, &wt, CONV_T, DYNCONV_FLAG_BORROW_WEIGHTS, &layer),
                     DYNCONV_OK);
    return layer;
}

/* ---------------------------------------------------------------------------------------- */
/* Conv2d cases                                                                             */

static dynconv_status conv_create_null_geometry(fx *f, const err_case *c)
{
    (void)c;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(NULL, &wt, CONV_T, 0, &f->created));
}

static dynconv_status conv_create_null_weights(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_create(&f->g, NULL, CONV_T, 0, &f->created));
}

static dynconv_status conv_create_null_out(fx *f, const err_case *c)
{
    (void)c;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, NULL));
}

static dynconv_status conv_create_null_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_conv2d_weights wt = conv_weights(f);
    wt.weight = NULL;
    return done(f, dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, &f->created));
}

static dynconv_status conv_create_null_fc1_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_conv2d_weights wt = conv_weights(f);
    wt.fc1_weight = NULL;
    return done(f, dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, &f->created));
}

static dynconv_status conv_create_null_fc2_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_conv2d_weights wt = conv_weights(f);
    wt.fc2_weight = NULL;
    return done(f, dynconv_conv2d_create(&f->g, &wt, CONV_T, 0, &f->created));
}

/* One geometry field set to c->value; every field is an int64_t. */
static dynconv_status conv_create_bad_field(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    memcpy((char *)&g + c->field, &c->value, sizeof(int64_t));
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&g, &wt, CONV_T, c->flags, &f->created));
}

/* Channel counts set together with groups: c->value packs (C_in, C_out, groups) as 16-bit
 * fields, to keep the table one line per case. */
static dynconv_status conv_create_bad_groups(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    g.in_channels = (c->value >> 32) & 0xffff;
    g.out_channels = (c->value >> 16) & 0xffff;
    g.groups = c->value & 0xffff;
    /* generous arrays: the create must reject the geometry before reading them anyway */
    float *w = calloc((size_t)(g.num_kernels * g.out_channels * g.in_channels * 9), sizeof(float));
    float *fc1 = calloc((size_t)(g.hidden * g.in_channels), sizeof(float));
    assert_non_null(w);
    assert_non_null(fc1);
    dynconv_conv2d_weights wt = conv_weights(f);
    wt.weight = w;
    wt.bias = NULL;
    wt.fc1_weight = fc1;
    const dynconv_status st = done(f, dynconv_conv2d_create(&g, &wt, CONV_T, 0, &f->created));
    free(fc1);
    free(w);
    return st;
}
#define GROUPS(cin, cout, g) (((int64_t)(cin) << 32) | ((int64_t)(cout) << 16) | (int64_t)(g))

static dynconv_status conv_create_bad_temperature(fx *f, const err_case *c)
{
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&f->g, &wt, c->t, 0, &f->created));
}

static dynconv_status conv_create_bad_flags(fx *f, const err_case *c)
{
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&f->g, &wt, CONV_T, c->flags, &f->created));
}

/* Sizes each valid on their own whose parameter counts overflow. The fixture's small arrays
 * are passed: a create that reads them before checking would be caught by a sanitizer. */
static dynconv_status conv_create_overflow_weight_count(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    g.in_channels = INT64_C(1) << 31;
    g.out_channels = INT64_C(1) << 31;
    g.groups = 1;
    g.kernel_h = INT64_C(1) << 20;
    g.kernel_w = INT64_C(1) << 20;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&g, &wt, CONV_T, c->flags, &f->created));
}

static dynconv_status conv_create_overflow_kernel_area(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    g.kernel_h = INT64_C(1) << 32;
    g.kernel_w = INT64_C(1) << 32;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&g, &wt, CONV_T, c->flags, &f->created));
}

static dynconv_status conv_create_overflow_kernels(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    g.num_kernels = INT64_MAX;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&g, &wt, CONV_T, c->flags, &f->created));
}

static dynconv_status conv_create_overflow_hidden(fx *f, const err_case *c)
{
    dynconv_conv2d_geometry g = f->g;
    g.hidden = INT64_MAX;
    const dynconv_conv2d_weights wt = conv_weights(f);
    return done(f, dynconv_conv2d_create(&g, &wt, CONV_T, c->flags, &f->created));
}

static dynconv_status conv_set_temperature_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_set_temperature(NULL, CONV_T));
}

static dynconv_status conv_set_temperature_bad(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_set_temperature(f->layer, c->t));
}

static dynconv_status conv_get_temperature_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_get_temperature(NULL, &f->t_got));
}

static dynconv_status conv_get_temperature_null_out(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_get_temperature(f->layer, NULL));
}

static dynconv_status conv_reshape_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_reshape(NULL, CONV_N, CONV_H, CONV_W, &f->out_h, &f->out_w,
                                          &f->ws_report));
}

static dynconv_status conv_reshape_bad_batch(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_reshape(f->layer, c->value, CONV_H, CONV_W, &f->out_h,
                                          &f->out_w, &f->ws_report));
}

static dynconv_status conv_reshape_bad_height(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_reshape(f->layer, CONV_N, c->value, CONV_W, &f->out_h,
                                          &f->out_w, &f->ws_report));
}

static dynconv_status conv_reshape_bad_width(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_reshape(f->layer, CONV_N, CONV_H, c->value, &f->out_h,
                                          &f->out_w, &f->ws_report));
}

/* N * C * H * W far beyond 2^64 with every size individually fine. */
static dynconv_status conv_reshape_overflow_elements(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_reshape(f->layer, INT64_C(1) << 40, INT64_C(1) << 20,
                                          INT64_C(1) << 20, &f->out_h, &f->out_w,
                                          &f->ws_report));
}

/* A dilated kernel (extent 7) on a 6-row input without padding: nothing to compute. */
static dynconv_status conv_reshape_dilated_kernel_too_large(fx *f, const err_case *c)
{
    (void)c;
    dynconv_conv2d_geometry g = f->g;
    g.pad_h = 0;
    g.dilation_h = 3;
    dynconv_conv2d *tmp = temp_conv(f, &g);
    const dynconv_status st =
        done(f, dynconv_conv2d_reshape(tmp, CONV_N, 6, CONV_W, &f->out_h, &f->out_w,
                                       &f->ws_report));
    dynconv_conv2d_destroy(tmp);
    return st;
}

/* Padding of 2^62 on both sides: H + 2*pad no longer fits int64_t. */
static dynconv_status conv_reshape_overflow_padding(fx *f, const err_case *c)
{
    (void)c;
    dynconv_conv2d_geometry g = f->g;
    g.pad_h = INT64_C(1) << 62;
    g.pad_w = INT64_C(1) << 62;
    dynconv_conv2d *tmp = temp_conv(f, &g);
    const dynconv_status st =
        done(f, dynconv_conv2d_reshape(tmp, CONV_N, CONV_H, CONV_W, &f->out_h, &f->out_w,
                                       &f->ws_report));
    dynconv_conv2d_destroy(tmp);
    return st;
}

static dynconv_status conv_forward_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(NULL, f->x, f->y, f->att, NULL, 0));
}

static dynconv_status conv_forward_null_input(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->layer, NULL, f->y, f->att, NULL, 0));
}

static dynconv_status conv_forward_null_output(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->layer, f->x, NULL, f->att, NULL, 0));
}

static dynconv_status conv_forward_before_reshape(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->fresh, f->x, f->y, f->att, NULL, 0));
}

/* c->value bytes fewer than reported, on an aligned workspace. */
static dynconv_status conv_forward_short_workspace(fx *f, const err_case *c)
{
    if (f->ws_size < (size_t)c->value) {
        skip(); /* the layer needs no workspace at this shape: nothing can be too small */
    }
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->y, f->att, f->ws,
                                          f->ws_size - (size_t)c->value));
}

static dynconv_status conv_forward_ext_short_workspace(fx *f, const err_case *c)
{
    if (f->ws_size < (size_t)c->value) {
        skip();
    }
    return done(f, dynconv_conv2d_forward(f->ext, f->x, f->y, f->att, f->ws,
                                          f->ws_size - (size_t)c->value));
}

/* An aligned workspace pointer with a size of 0. */
static dynconv_status conv_forward_zero_size_workspace(fx *f, const err_case *c)
{
    (void)c;
    if (f->ws_size == 0) {
        skip();
    }
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->y, f->att, f->ws, 0));
}

/* Large enough, but c->value bytes past an aligned address. */
static dynconv_status conv_forward_misaligned_workspace(fx *f, const err_case *c)
{
    if (f->ws_size == 0) {
        skip(); /* a workspace of size 0 has no alignment to get wrong */
    }
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->y, f->att,
                                          (char *)f->ws + c->value, f->ws_size));
}

static dynconv_status conv_forward_ext_misaligned_workspace(fx *f, const err_case *c)
{
    if (f->ws_size == 0) {
        skip();
    }
    return done(f, dynconv_conv2d_forward(f->ext, f->x, f->y, f->att, (char *)f->ws + c->value,
                                          f->ws_size));
}

static dynconv_status conv_forward_ext_null_workspace(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->ext, f->x, f->y, f->att, NULL, f->ws_size));
}

/* Output placed c->value floats after the start of the input (0: in place). */
static dynconv_status conv_forward_output_in_input(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->x + c->value, f->att, NULL, 0));
}

/* Input placed c->value floats after the start of the output. */
static dynconv_status conv_forward_input_in_output(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_forward(f->layer, f->x + c->value, f->x, f->att, NULL, 0));
}

/* Attention placed c->value floats after the start of the input (or of the output). */
static dynconv_status conv_forward_attention_in_input(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->y, f->x + c->value, NULL, 0));
}

static dynconv_status conv_forward_attention_in_output(fx *f, const err_case *c)
{
    return done(f, dynconv_conv2d_forward(f->layer, f->x, f->y, f->y + c->value, NULL, 0));
}

/* A workspace of the full size starting at the first aligned address inside the input (or the
 * output): aligned and large enough, so only the overlap is wrong. */
static void *aligned_inside(const void *p)
{
    const uintptr_t a = DYNCONV_WORKSPACE_ALIGNMENT;
    return (void *)(((uintptr_t)p + a - 1) / a * a);
}

static dynconv_status conv_forward_workspace_in_input(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->ext, f->x, f->y, f->att, aligned_inside(f->x),
                                          f->ws_size));
}

static dynconv_status conv_forward_workspace_in_output(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_conv2d_forward(f->ext, f->x, f->y, f->att, aligned_inside(f->y),
                                          f->ws_size));
}

/* ---------------------------------------------------------------------------------------- */
/* Linear cases                                                                             */

static dynconv_status lin_create_null_geometry(fx *f, const err_case *c)
{
    (void)c;
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(NULL, &wt, LIN_T, 0, &f->lcreated));
}

static dynconv_status lin_create_null_weights(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_create(&f->lg, NULL, LIN_T, 0, &f->lcreated));
}

static dynconv_status lin_create_null_out(fx *f, const err_case *c)
{
    (void)c;
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(&f->lg, &wt, LIN_T, 0, NULL));
}

static dynconv_status lin_create_null_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_linear_weights wt = linear_weights(f);
    wt.weight = NULL;
    return done(f, dynconv_linear_create(&f->lg, &wt, LIN_T, 0, &f->lcreated));
}

static dynconv_status lin_create_null_fc1_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_linear_weights wt = linear_weights(f);
    wt.fc1_weight = NULL;
    return done(f, dynconv_linear_create(&f->lg, &wt, LIN_T, 0, &f->lcreated));
}

static dynconv_status lin_create_null_fc2_weight(fx *f, const err_case *c)
{
    (void)c;
    dynconv_linear_weights wt = linear_weights(f);
    wt.fc2_weight = NULL;
    return done(f, dynconv_linear_create(&f->lg, &wt, LIN_T, 0, &f->lcreated));
}

static dynconv_status lin_create_bad_field(fx *f, const err_case *c)
{
    dynconv_linear_geometry g = f->lg;
    memcpy((char *)&g + c->field, &c->value, sizeof(int64_t));
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(&g, &wt, LIN_T, c->flags, &f->lcreated));
}

static dynconv_status lin_create_bad_temperature(fx *f, const err_case *c)
{
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(&f->lg, &wt, c->t, 0, &f->lcreated));
}

static dynconv_status lin_create_bad_flags(fx *f, const err_case *c)
{
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(&f->lg, &wt, LIN_T, c->flags, &f->lcreated));
}

/* K * D_out * D_in = 3 * 2^80 */
static dynconv_status lin_create_overflow_weight_count(fx *f, const err_case *c)
{
    dynconv_linear_geometry g = f->lg;
    g.in_features = INT64_C(1) << 40;
    g.out_features = INT64_C(1) << 40;
    const dynconv_linear_weights wt = linear_weights(f);
    return done(f, dynconv_linear_create(&g, &wt, LIN_T, c->flags, &f->lcreated));
}

static dynconv_status lin_set_temperature_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_set_temperature(NULL, LIN_T));
}

static dynconv_status lin_set_temperature_bad(fx *f, const err_case *c)
{
    return done(f, dynconv_linear_set_temperature(f->llayer, c->t));
}

static dynconv_status lin_get_temperature_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_get_temperature(NULL, &f->t_got));
}

static dynconv_status lin_get_temperature_null_out(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_get_temperature(f->llayer, NULL));
}

static dynconv_status lin_reshape_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_reshape(NULL, LIN_N, &f->ws_report));
}

static dynconv_status lin_reshape_bad_batch(fx *f, const err_case *c)
{
    return done(f, dynconv_linear_reshape(f->llayer, c->value, &f->ws_report));
}

static dynconv_status lin_forward_null_layer(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_forward(NULL, f->lx, f->ly, f->latt, NULL, 0));
}

static dynconv_status lin_forward_null_input(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_forward(f->llayer, NULL, f->ly, f->latt, NULL, 0));
}

static dynconv_status lin_forward_null_output(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_forward(f->llayer, f->lx, NULL, f->latt, NULL, 0));
}

static dynconv_status lin_forward_before_reshape(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_forward(f->lfresh, f->lx, f->ly, f->latt, NULL, 0));
}

static dynconv_status lin_forward_short_workspace(fx *f, const err_case *c)
{
    if (f->lws_size < (size_t)c->value) {
        skip();
    }
    return done(f, dynconv_linear_forward(f->llayer, f->lx, f->ly, f->latt, f->lws,
                                          f->lws_size - (size_t)c->value));
}

static dynconv_status lin_forward_ext_short_workspace(fx *f, const err_case *c)
{
    if (f->lws_size < (size_t)c->value) {
        skip();
    }
    return done(f, dynconv_linear_forward(f->lext, f->lx, f->ly, f->latt, f->lws,
                                          f->lws_size - (size_t)c->value));
}

static dynconv_status lin_forward_misaligned_workspace(fx *f, const err_case *c)
{
    if (f->lws_size == 0) {
        skip();
    }
    return done(f, dynconv_linear_forward(f->llayer, f->lx, f->ly, f->latt,
                                          (char *)f->lws + c->value, f->lws_size));
}

static dynconv_status lin_forward_ext_null_workspace(fx *f, const err_case *c)
{
    (void)c;
    return done(f, dynconv_linear_forward(f->lext, f->lx, f->ly, f->latt, NULL, f->lws_size));
}

static dynconv_status lin_forward_output_in_input(fx *f, const err_case *c)
{
    return done(f, dynconv_linear_forward(f->llayer, f->lx, f->lx + c->value, f->latt, NULL, 0));
}

static dynconv_status lin_forward_input_in_output(fx *f, const err_case *c)
{
    return done(f, dynconv_linear_forward(f->llayer, f->lx + c->value, f->lx, f->latt, NULL, 0));
}

/* ---------------------------------------------------------------------------------------- */
/* The tables                                                                               */

#define ST_NULL DYNCONV_ERROR_NULL_POINTER
#define ST_ARG DYNCONV_ERROR_INVALID_ARGUMENT
#define ST_SHAPE DYNCONV_ERROR_INVALID_SHAPE
#define ST_OVERFLOW DYNCONV_ERROR_SIZE_OVERFLOW
#define ST_STATE DYNCONV_ERROR_INVALID_STATE
#define ST_SHORT DYNCONV_ERROR_INSUFFICIENT_WORKSPACE
#define ST_ALIGN DYNCONV_ERROR_MISALIGNED_WORKSPACE
#define ST_UNSUP DYNCONV_ERROR_UNSUPPORTED

#define CASE(name, st, fn) {name, st, fn, 0, 0, 0.f, 0}
#define VALUE(name, st, fn, v) {name, st, fn, 0, v, 0.f, 0}
#define TEMP(name, st, fn, t) {name, st, fn, 0, 0, t, 0}
#define FLAGS(name, st, fn, fl) {name, st, fn, 0, 0, 0.f, fl}
#define CGEOM(name, fld, v) \
    {name, ST_ARG, conv_create_bad_field, offsetof(dynconv_conv2d_geometry, fld), v, 0.f, 0}
#define LGEOM(name, fld, v) \
    {name, ST_ARG, lin_create_bad_field, offsetof(dynconv_linear_geometry, fld), v, 0.f, 0}

static const err_case conv_cases[] = {
    /* NULL pointers */
    CASE("conv_create_null_geometry", ST_NULL, conv_create_null_geometry),
    CASE("conv_create_null_weights", ST_NULL, conv_create_null_weights),
    CASE("conv_create_null_out", ST_NULL, conv_create_null_out),
    CASE("conv_create_null_weight", ST_NULL, conv_create_null_weight),
    CASE("conv_create_null_fc1_weight", ST_NULL, conv_create_null_fc1_weight),
    CASE("conv_create_null_fc2_weight", ST_NULL, conv_create_null_fc2_weight),
    CASE("conv_set_temperature_null_layer", ST_NULL, conv_set_temperature_null_layer),
    CASE("conv_get_temperature_null_layer", ST_NULL, conv_get_temperature_null_layer),
    CASE("conv_get_temperature_null_out", ST_NULL, conv_get_temperature_null_out),
    CASE("conv_reshape_null_layer", ST_NULL, conv_reshape_null_layer),
    CASE("conv_forward_null_layer", ST_NULL, conv_forward_null_layer),
    CASE("conv_forward_null_input", ST_NULL, conv_forward_null_input),
    CASE("conv_forward_null_output", ST_NULL, conv_forward_null_output),
    /* every geometry size: zero, negative */
    CGEOM("conv_create_in_channels_zero", in_channels, 0),
    CGEOM("conv_create_in_channels_negative", in_channels, -4),
    CGEOM("conv_create_in_channels_int64_min", in_channels, INT64_MIN),
    CGEOM("conv_create_out_channels_zero", out_channels, 0),
    CGEOM("conv_create_out_channels_negative", out_channels, -6),
    CGEOM("conv_create_kernel_h_zero", kernel_h, 0),
    CGEOM("conv_create_kernel_h_negative", kernel_h, -3),
    CGEOM("conv_create_kernel_w_zero", kernel_w, 0),
    CGEOM("conv_create_kernel_w_negative", kernel_w, -3),
    CGEOM("conv_create_stride_h_zero", stride_h, 0),
    CGEOM("conv_create_stride_h_negative", stride_h, -1),
    CGEOM("conv_create_stride_w_zero", stride_w, 0),
    CGEOM("conv_create_stride_w_negative", stride_w, -1),
    CGEOM("conv_create_pad_h_negative", pad_h, -1),
    CGEOM("conv_create_pad_w_negative", pad_w, -1),
    CGEOM("conv_create_pad_h_int64_min", pad_h, INT64_MIN),
    CGEOM("conv_create_dilation_h_zero", dilation_h, 0),
    CGEOM("conv_create_dilation_h_negative", dilation_h, -1),
    CGEOM("conv_create_dilation_w_zero", dilation_w, 0),
    CGEOM("conv_create_dilation_w_negative", dilation_w, -1),
    CGEOM("conv_create_groups_zero", groups, 0),
    CGEOM("conv_create_groups_negative", groups, -2),
    CGEOM("conv_create_num_kernels_zero", num_kernels, 0),
    CGEOM("conv_create_num_kernels_negative", num_kernels, -3),
    CGEOM("conv_create_hidden_zero", hidden, 0),
    CGEOM("conv_create_hidden_negative", hidden, -5),
    /* groups that do not divide the channels */
    VALUE("conv_create_groups_not_dividing_in_channels", ST_ARG, conv_create_bad_groups,
          GROUPS(6, 4, 4)),
    VALUE("conv_create_groups_not_dividing_out_channels", ST_ARG, conv_create_bad_groups,
          GROUPS(4, 6, 4)),
    VALUE("conv_create_groups_larger_than_channels", ST_ARG, conv_create_bad_groups,
          GROUPS(4, 4, 8)),
    /* temperature must be finite and > 0 */
    TEMP("conv_create_temperature_zero", ST_ARG, conv_create_bad_temperature, 0.f),
    TEMP("conv_create_temperature_negative_zero", ST_ARG, conv_create_bad_temperature, -0.f),
    TEMP("conv_create_temperature_negative", ST_ARG, conv_create_bad_temperature, -1.f),
    TEMP("conv_create_temperature_nan", ST_ARG, conv_create_bad_temperature, NAN),
    TEMP("conv_create_temperature_inf", ST_ARG, conv_create_bad_temperature, INFINITY),
    TEMP("conv_create_temperature_minus_inf", ST_ARG, conv_create_bad_temperature, -INFINITY),
    TEMP("conv_set_temperature_zero", ST_ARG, conv_set_temperature_bad, 0.f),
    TEMP("conv_set_temperature_negative", ST_ARG, conv_set_temperature_bad, -2.f),
    TEMP("conv_set_temperature_nan", ST_ARG, conv_set_temperature_bad, NAN),
    TEMP("conv_set_temperature_inf", ST_ARG, conv_set_temperature_bad, INFINITY),
    TEMP("conv_set_temperature_minus_inf", ST_ARG, conv_set_temperature_bad, -INFINITY),
    /* unknown flag bits */
    FLAGS("conv_create_unknown_flag_bit2", ST_UNSUP, conv_create_bad_flags, 1u << 2),
    FLAGS("conv_create_unknown_flag_bit31", ST_UNSUP, conv_create_bad_flags, 1u << 31),
    FLAGS("conv_create_all_flag_bits", ST_UNSUP, conv_create_bad_flags, 0xffffffffu),
    /* parameter counts that overflow, copied and borrowed */
    CASE("conv_create_overflow_weight_count", ST_OVERFLOW, conv_create_overflow_weight_count),
    FLAGS("conv_create_overflow_weight_count_borrowed", ST_OVERFLOW,
          conv_create_overflow_weight_count, DYNCONV_FLAG_BORROW_WEIGHTS),
    CASE("conv_create_overflow_kernel_area", ST_OVERFLOW, conv_create_overflow_kernel_area),
    CASE("conv_create_overflow_num_kernels", ST_OVERFLOW, conv_create_overflow_kernels),
    CASE("conv_create_overflow_hidden", ST_OVERFLOW, conv_create_overflow_hidden),
    FLAGS("conv_create_overflow_hidden_borrowed", ST_OVERFLOW, conv_create_overflow_hidden,
          DYNCONV_FLAG_BORROW_WEIGHTS),
    /* reshape */
    CASE("conv_reshape_null_layer", ST_NULL, conv_reshape_null_layer),
    VALUE("conv_reshape_batch_zero", ST_ARG, conv_reshape_bad_batch, 0),
    VALUE("conv_reshape_batch_negative", ST_ARG, conv_reshape_bad_batch, -1),
    VALUE("conv_reshape_batch_int64_min", ST_ARG, conv_reshape_bad_batch, INT64_MIN),
    VALUE("conv_reshape_height_zero", ST_ARG, conv_reshape_bad_height, 0),
    VALUE("conv_reshape_height_negative", ST_ARG, conv_reshape_bad_height, -6),
    VALUE("conv_reshape_width_zero", ST_ARG, conv_reshape_bad_width, 0),
    VALUE("conv_reshape_width_negative", ST_ARG, conv_reshape_bad_width, -7),
    VALUE("conv_reshape_kernel_wider_than_input", ST_SHAPE, conv_reshape_bad_width, 2),
    VALUE("conv_reshape_kernel_wider_than_1_column", ST_SHAPE, conv_reshape_bad_width, 1),
    CASE("conv_reshape_dilated_kernel_too_large", ST_SHAPE,
         conv_reshape_dilated_kernel_too_large),
    CASE("conv_reshape_overflow_elements", ST_OVERFLOW, conv_reshape_overflow_elements),
    VALUE("conv_reshape_overflow_batch_int64_max", ST_OVERFLOW, conv_reshape_bad_batch,
          INT64_MAX),
    VALUE("conv_reshape_overflow_height_int64_max", ST_OVERFLOW, conv_reshape_bad_height,
          INT64_MAX),
    CASE("conv_reshape_overflow_padding", ST_OVERFLOW, conv_reshape_overflow_padding),
    /* forward: state, workspace, overlap */
    CASE("conv_forward_before_reshape", ST_STATE, conv_forward_before_reshape),
    VALUE("conv_forward_workspace_one_byte_short", ST_SHORT, conv_forward_short_workspace, 1),
    VALUE("conv_forward_external_workspace_one_byte_short", ST_SHORT,
          conv_forward_ext_short_workspace, 1),
    CASE("conv_forward_workspace_size_zero", ST_SHORT, conv_forward_zero_size_workspace),
    VALUE("conv_forward_misaligned_workspace_4", ST_ALIGN, conv_forward_misaligned_workspace, 4),
    VALUE("conv_forward_misaligned_workspace_32", ST_ALIGN, conv_forward_misaligned_workspace,
          32),
    VALUE("conv_forward_external_misaligned_workspace", ST_ALIGN,
          conv_forward_ext_misaligned_workspace, 4),
    /* the header names no status for this one; a required pointer is NULL */
    CASE("conv_forward_external_null_workspace", ST_NULL, conv_forward_ext_null_workspace),
    VALUE("conv_forward_output_is_input", ST_ARG, conv_forward_output_in_input, 0),
    VALUE("conv_forward_output_overlaps_input_by_one", ST_ARG, conv_forward_output_in_input,
          (int64_t)(CONV_N * 4 * CONV_H * CONV_W) - 1),
    VALUE("conv_forward_output_inside_input", ST_ARG, conv_forward_output_in_input, 5),
    VALUE("conv_forward_input_overlaps_output_by_one", ST_ARG, conv_forward_input_in_output,
          (int64_t)(CONV_N * 6 * CONV_H * (CONV_W - 2)) - 1),
    VALUE("conv_forward_attention_is_input", ST_ARG, conv_forward_attention_in_input, 0),
    VALUE("conv_forward_attention_overlaps_input_by_one", ST_ARG,
          conv_forward_attention_in_input, (int64_t)(CONV_N * 4 * CONV_H * CONV_W) - 1),
    VALUE("conv_forward_attention_inside_output", ST_ARG, conv_forward_attention_in_output, 3),
    CASE("conv_forward_workspace_inside_input", ST_ARG, conv_forward_workspace_in_input),
    CASE("conv_forward_workspace_inside_output", ST_ARG, conv_forward_workspace_in_output),
};

static const err_case linear_cases[] = {
    CASE("linear_create_null_geometry", ST_NULL, lin_create_null_geometry),
    CASE("linear_create_null_weights", ST_NULL, lin_create_null_weights),
    CASE("linear_create_null_out", ST_NULL, lin_create_null_out),
    CASE("linear_create_null_weight", ST_NULL, lin_create_null_weight),
    CASE("linear_create_null_fc1_weight", ST_NULL, lin_create_null_fc1_weight),
    CASE("linear_create_null_fc2_weight", ST_NULL, lin_create_null_fc2_weight),
    CASE("linear_set_temperature_null_layer", ST_NULL, lin_set_temperature_null_layer),
    CASE("linear_get_temperature_null_layer", ST_NULL, lin_get_temperature_null_layer),
    CASE("linear_get_temperature_null_out", ST_NULL, lin_get_temperature_null_out),
    CASE("linear_reshape_null_layer", ST_NULL, lin_reshape_null_layer),
    CASE("linear_forward_null_layer", ST_NULL, lin_forward_null_layer),
    CASE("linear_forward_null_input", ST_NULL, lin_forward_null_input),
    CASE("linear_forward_null_output", ST_NULL, lin_forward_null_output),
    LGEOM("linear_create_in_features_zero", in_features, 0),
    LGEOM("linear_create_in_features_negative", in_features, -8),
    LGEOM("linear_create_out_features_zero", out_features, 0),
    LGEOM("linear_create_out_features_negative", out_features, -5),
    LGEOM("linear_create_num_kernels_zero", num_kernels, 0),
    LGEOM("linear_create_num_kernels_negative", num_kernels, -3),
    LGEOM("linear_create_hidden_zero", hidden, 0),
    LGEOM("linear_create_hidden_negative", hidden, -4),
    TEMP("linear_create_temperature_zero", ST_ARG, lin_create_bad_temperature, 0.f),
    TEMP("linear_create_temperature_negative", ST_ARG, lin_create_bad_temperature, -1.f),
    TEMP("linear_create_temperature_nan", ST_ARG, lin_create_bad_temperature, NAN),
    TEMP("linear_create_temperature_inf", ST_ARG, lin_create_bad_temperature, INFINITY),
    TEMP("linear_set_temperature_zero", ST_ARG, lin_set_temperature_bad, 0.f),
    TEMP("linear_set_temperature_negative", ST_ARG, lin_set_temperature_bad, -2.f),
    TEMP("linear_set_temperature_nan", ST_ARG, lin_set_temperature_bad, NAN),
    TEMP("linear_set_temperature_inf", ST_ARG, lin_set_temperature_bad, INFINITY),
    FLAGS("linear_create_unknown_flag_bit2", ST_UNSUP, lin_create_bad_flags, 1u << 2),
    FLAGS("linear_create_unknown_flag_bit31", ST_UNSUP, lin_create_bad_flags, 1u << 31),
    CASE("linear_create_overflow_weight_count", ST_OVERFLOW, lin_create_overflow_weight_count),
    FLAGS("linear_create_overflow_weight_count_borrowed", ST_OVERFLOW,
          lin_create_overflow_weight_count, DYNCONV_FLAG_BORROW_WEIGHTS),
    {"linear_create_overflow_num_kernels", ST_OVERFLOW, lin_create_bad_field,
     offsetof(dynconv_linear_geometry, num_kernels), INT64_MAX, 0.f, 0},
    {"linear_create_overflow_hidden", ST_OVERFLOW, lin_create_bad_field,
     offsetof(dynconv_linear_geometry, hidden), INT64_MAX, 0.f, 0},
    CASE("linear_reshape_null_layer", ST_NULL, lin_reshape_null_layer),
    VALUE("linear_reshape_batch_zero", ST_ARG, lin_reshape_bad_batch, 0),
    VALUE("linear_reshape_batch_negative", ST_ARG, lin_reshape_bad_batch, -1),
    VALUE("linear_reshape_overflow_batch_2_62", ST_OVERFLOW, lin_reshape_bad_batch,
          INT64_C(1) << 62),
    VALUE("linear_reshape_overflow_batch_int64_max", ST_OVERFLOW, lin_reshape_bad_batch,
          INT64_MAX),
    CASE("linear_forward_before_reshape", ST_STATE, lin_forward_before_reshape),
    VALUE("linear_forward_workspace_one_byte_short", ST_SHORT, lin_forward_short_workspace, 1),
    VALUE("linear_forward_external_workspace_one_byte_short", ST_SHORT,
          lin_forward_ext_short_workspace, 1),
    VALUE("linear_forward_misaligned_workspace_4", ST_ALIGN, lin_forward_misaligned_workspace,
          4),
    CASE("linear_forward_external_null_workspace", ST_NULL, lin_forward_ext_null_workspace),
    VALUE("linear_forward_output_is_input", ST_ARG, lin_forward_output_in_input, 0),
    VALUE("linear_forward_output_overlaps_input_by_one", ST_ARG, lin_forward_output_in_input,
          (int64_t)(LIN_N * 8) - 1),
    VALUE("linear_forward_input_overlaps_output_by_one", ST_ARG, lin_forward_input_in_output,
          (int64_t)(LIN_N * 5) - 1),
};

/* ---------------------------------------------------------------------------------------- */
/* The driver                                                                               */

static void run_error_case(void **state)
{
    fx_state *s = *state;
    const err_case *c = s->c;
    fx *f = &s->f;

    const dynconv_status st = c->call(f, c);
    assert_true(f->msg_taken);
    print_message("  %s -> %s: \"%s\"\n", c->name, dynconv_status_string(st), f->msg);
    if (st != c->expected) {
        fail_msg("%s: expected status %d (%s), got %d (%s)", c->name, (int)c->expected,
                 dynconv_status_string(c->expected), (int)st, dynconv_status_string(st));
    }
    assert_true(f->msg[0] != '\0');

    /* nothing written */
    assert_true(is_sentinel(f->y, f->y_len));
    assert_true(is_sentinel(f->att, f->att_len));
    assert_true(is_sentinel(f->ly, f->ly_len));
    assert_true(is_sentinel(f->latt, f->latt_len));
    assert_memory_equal(f->x, f->x_copy, (f->x_len + f->y_len) * sizeof(float));
    assert_memory_equal(f->lx, f->lx_copy, (f->lx_len + f->ly_len) * sizeof(float));
    assert_ptr_equal(f->created, CONV_SENTINEL);
    assert_ptr_equal(f->lcreated, LINEAR_SENTINEL);
    assert_true(f->out_h == SENTINEL_I64 && f->out_w == SENTINEL_I64);
    assert_true(f->ws_report == SENTINEL_SIZE);
    assert_true(is_sentinel(&f->t_got, 1));

    /* the handles keep their previous state: same temperature, same shape, same result */
    float t = 0.f;
    assert_int_equal(dynconv_conv2d_get_temperature(f->layer, &t), DYNCONV_OK);
    assert_true(t == CONV_T);
    assert_int_equal(dynconv_linear_get_temperature(f->llayer, &t), DYNCONV_OK);
    assert_true(t == LIN_T);
    float *y2 = tu_alloc(f->y_len * sizeof(float));
    float *ly2 = tu_alloc(f->ly_len * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(f->layer, f->x, y2, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(y2, f->y_base, f->y_len * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(f->ext, f->x, y2, NULL, f->ws, f->ws_size),
                     DYNCONV_OK);
    assert_memory_equal(y2, f->y_base, f->y_len * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(f->fresh, f->x, y2, NULL, NULL, 0),
                     DYNCONV_ERROR_INVALID_STATE);
    assert_int_equal(dynconv_linear_forward(f->llayer, f->lx, ly2, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(ly2, f->ly_base, f->ly_len * sizeof(float));
    assert_int_equal(dynconv_linear_forward(f->lext, f->lx, ly2, NULL, f->lws, f->lws_size),
                     DYNCONV_OK);
    assert_memory_equal(ly2, f->ly_base, f->ly_len * sizeof(float));
    free(ly2);
    free(y2);
}

/* ---------------------------------------------------------------------------------------- */
/* Named tests outside the tables                                                           */

static void destroy_null_is_noop(void **state)
{
    (void)state;
    dynconv_conv2d_destroy(NULL);
    dynconv_linear_destroy(NULL);
}

static void status_strings_never_empty(void **state)
{
    (void)state;
    static const int statuses[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 999, -1};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); ++i) {
        const char *s = dynconv_status_string((dynconv_status)statuses[i]);
        assert_non_null(s);
        assert_true(s[0] != '\0');
    }
    /* the message accessor itself never returns NULL */
    assert_non_null(dynconv_last_error_message());
}

/* Explicit form of what the driver checks after every failed reshape: the old shape is still
 * in force, so buffers sized for it still work and give the same result. */
static void failed_reshape_keeps_previous_shape(void **state)
{
    fx_state *s = *state;
    fx *f = &s->f;
    size_t ws = SENTINEL_SIZE;
    assert_int_equal(dynconv_conv2d_reshape(f->layer, CONV_N, CONV_H, 2, NULL, NULL, &ws),
                     DYNCONV_ERROR_INVALID_SHAPE);
    assert_true(ws == SENTINEL_SIZE); /* not written */
    assert_int_equal(dynconv_conv2d_reshape(f->layer, 1, INT64_C(1) << 40, INT64_C(1) << 40,
                                            NULL, NULL, NULL),
                     DYNCONV_ERROR_SIZE_OVERFLOW);
    assert_int_equal(dynconv_conv2d_forward(f->layer, f->x, f->y, f->att, NULL, 0), DYNCONV_OK);
    assert_memory_equal(f->y, f->y_base, f->y_len * sizeof(float));
    assert_memory_equal(f->att, f->att_base, f->att_len * sizeof(float));
    /* a caller workspace of the old size is still enough */
    assert_int_equal(dynconv_conv2d_forward(f->ext, f->x, f->y, NULL, f->ws, f->ws_size),
                     DYNCONV_OK);
    assert_memory_equal(f->y, f->y_base, f->y_len * sizeof(float));

    assert_int_equal(dynconv_linear_reshape(f->llayer, 0, NULL), DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_int_equal(dynconv_linear_forward(f->llayer, f->lx, f->ly, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(f->ly, f->ly_base, f->ly_len * sizeof(float));
}

/* Buffers that touch but do not overlap are fine: the overlap check is not off by one. */
static void adjacent_buffers_are_accepted(void **state)
{
    fx_state *s = *state;
    fx *f = &s->f;
    /* output right after the input, in the same allocation */
    assert_int_equal(dynconv_conv2d_forward(f->layer, f->x, f->x + f->x_len, NULL, NULL, 0),
                     DYNCONV_OK);
    assert_memory_equal(f->x + f->x_len, f->y_base, f->y_len * sizeof(float));
    assert_int_equal(dynconv_linear_forward(f->llayer, f->lx, f->lx + f->lx_len, NULL, NULL, 0),
                     DYNCONV_OK);
    assert_memory_equal(f->lx + f->lx_len, f->ly_base, f->ly_len * sizeof(float));
}

/* A workspace larger than reported, and exactly the reported size, are both accepted. */
static void workspace_of_reported_size_or_larger_is_accepted(void **state)
{
    fx_state *s = *state;
    fx *f = &s->f;
    assert_int_equal(dynconv_conv2d_forward(f->ext, f->x, f->y, NULL, f->ws, f->ws_size),
                     DYNCONV_OK);
    assert_memory_equal(f->y, f->y_base, f->y_len * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(f->ext, f->x, f->y, NULL, f->ws, f->ws_size + 128),
                     DYNCONV_OK);
    assert_memory_equal(f->y, f->y_base, f->y_len * sizeof(float));
    assert_int_equal(dynconv_linear_forward(f->lext, f->lx, f->ly, NULL, f->lws, f->lws_size),
                     DYNCONV_OK);
    assert_memory_equal(f->ly, f->ly_base, f->ly_len * sizeof(float));
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static int run_table(const char *group, const err_case *cases, size_t n)
{
    struct CMUnitTest *tests = tu_alloc(n * sizeof(*tests));
    for (size_t i = 0; i < n; ++i) {
        tests[i] = (struct CMUnitTest){cases[i].name, run_error_case, setup_fixture,
                                       teardown_fixture, (void *)&cases[i]};
    }
    const int failed = _cmocka_run_group_tests(group, tests, n, NULL, NULL);
    free(tests);
    return failed;
}

int main(void)
{
    /* the named tests get a fixture too; their case pointer is unused */
    static const err_case none = CASE("none", DYNCONV_OK, NULL);
    const struct CMUnitTest misc[] = {
        cmocka_unit_test(destroy_null_is_noop),
        cmocka_unit_test(status_strings_never_empty),
        {"failed_reshape_keeps_previous_shape", failed_reshape_keeps_previous_shape,
         setup_fixture, teardown_fixture, (void *)&none},
        {"adjacent_buffers_are_accepted", adjacent_buffers_are_accepted, setup_fixture,
         teardown_fixture, (void *)&none},
        {"workspace_of_reported_size_or_larger_is_accepted",
         workspace_of_reported_size_or_larger_is_accepted, setup_fixture, teardown_fixture,
         (void *)&none},
    };
    int failed = 0;
    failed += run_table("conv2d_errors", conv_cases, COUNT(conv_cases));
    failed += run_table("linear_errors", linear_cases, COUNT(linear_cases));
    failed += cmocka_run_group_tests_name("error_contract", misc, NULL, NULL);
    return failed;
}
