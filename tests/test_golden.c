/* The library and the double-precision reference against PyTorch's results (tests/golden: the
 * case table and its .npy files).
 *
 * One test per golden case, named after the case. Each test runs the layer through the public
 * API twice (with the handle's own workspace, then with a caller-owned one) and compares y and
 * the attention pi with PyTorch's, then checks the test suite's reference against the same data:
 * that comparison is what lets the other tests trust the reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "golden/golden.h"
#include "reference.h"
#include "testutil.h"

/* Per-test state handed to cmocka: exactly one of the two pointers is set. */
typedef struct golden_test {
    const golden_conv2d_case *conv2d;
    const golden_linear_case *linear;
} golden_test;

static void expect_ok(dynconv_status status, const char *case_name, const char *call)
{
    if (status != DYNCONV_OK) {
        print_error("%s: %s failed: %s (%s)\n", case_name, call, dynconv_status_string(status),
                    dynconv_last_error_message());
        fail();
    }
}

/* Fails the test if got and want differ beyond the tolerance (or at all when exact). */
static void expect_close_f(const char *case_name, const char *what, const float *got,
                           const float *want, size_t n, bool exact)
{
    char label[160];
    snprintf(label, sizeof label, "%s: %s", case_name, what);
    size_t bad = tu_count_mismatches_f(label, got, want, n, exact ? 0.0 : TU_RTOL,
                                       exact ? 0.0 : TU_ATOL);
    if (bad != 0) {
        print_error("%s: %zu of %zu values differ\n", label, bad, n);
        fail();
    }
}

static void expect_close_ref(const char *case_name, const char *what, const float *golden,
                             const double *reference, size_t n)
{
    char label[160];
    snprintf(label, sizeof label, "%s: %s", case_name, what);
    size_t bad = tu_count_mismatches(label, golden, reference, n, TU_RTOL, TU_ATOL);
    if (bad != 0) {
        print_error("%s: %zu of %zu values differ\n", label, bad, n);
        fail();
    }
}

/* A caller-owned workspace: aligned_alloc needs a size that is a multiple of the alignment. */
static void *workspace_alloc(size_t bytes)
{
    size_t a = DYNCONV_WORKSPACE_ALIGNMENT;
    size_t rounded = bytes == 0 ? a : (bytes + a - 1) / a * a;
    void *p = aligned_alloc(a, rounded);
    assert_non_null(p);
    return p;
}

/* ------------------------------------------------------------------------------------------ */
/* conv2d                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* create -> reshape -> forward -> destroy. With external_workspace the handle is created with
 * DYNCONV_FLAG_EXTERNAL_WORKSPACE and forward gets an aligned buffer of the reported size. */
static void run_conv2d(const golden_conv2d_case *c, bool external_workspace, float *y, float *pi)
{
    dynconv_conv2d *layer = NULL;
    uint32_t flags = external_workspace ? (uint32_t)DYNCONV_FLAG_EXTERNAL_WORKSPACE : 0u;
    expect_ok(dynconv_conv2d_create(&c->geometry, &c->weights, c->temperature, flags, &layer),
              c->name, "dynconv_conv2d_create");
    assert_non_null(layer);

    int64_t out_h = -1, out_w = -1;
    size_t ws_size = 0;
    expect_ok(dynconv_conv2d_reshape(layer, c->batch, c->height, c->width, &out_h, &out_w,
                                     &ws_size),
              c->name, "dynconv_conv2d_reshape");
    assert_int_equal(out_h, c->out_h);
    assert_int_equal(out_w, c->out_w);

    void *ws = external_workspace ? workspace_alloc(ws_size) : NULL;
    expect_ok(dynconv_conv2d_forward(layer, c->x, y, pi, ws, external_workspace ? ws_size : 0),
              c->name, "dynconv_conv2d_forward");
    free(ws);
    dynconv_conv2d_destroy(layer);
}

static void test_conv2d_case(void **state)
{
    const golden_conv2d_case *c = ((const golden_test *)*state)->conv2d;
    const dynconv_conv2d_geometry *g = &c->geometry;

    /* The golden shapes agree with the documented output-size formula. */
    assert_int_equal(c->out_h, ref_out_size(c->height, g->kernel_h, g->stride_h, g->pad_h,
                                            g->dilation_h));
    assert_int_equal(c->out_w, ref_out_size(c->width, g->kernel_w, g->stride_w, g->pad_w,
                                            g->dilation_w));

    size_t y_count = (size_t)(c->batch * g->out_channels * c->out_h * c->out_w);
    size_t pi_count = (size_t)(c->batch * g->num_kernels);
    /* A comparison against zero or constant data could not fail. */
    assert_true(tu_nontrivial_f(c->y, y_count));

    float *y = tu_alloc(y_count * sizeof *y);
    float *pi = tu_alloc(pi_count * sizeof *pi);
    float *y_ext = tu_alloc(y_count * sizeof *y_ext);
    float *pi_ext = tu_alloc(pi_count * sizeof *pi_ext);
    double *y_ref = tu_alloc(y_count * sizeof *y_ref);
    double *pi_ref = tu_alloc(pi_count * sizeof *pi_ref);

    /* The library, with the handle's own workspace. */
    run_conv2d(c, false, y, pi);
    expect_close_f(c->name, "library y vs PyTorch", y, c->y, y_count, false);
    expect_close_f(c->name, "library pi vs PyTorch", pi, c->pi, pi_count, false);

    /* The library, with a caller-owned workspace: the same computation, the same result. */
    run_conv2d(c, true, y_ext, pi_ext);
    expect_close_f(c->name, "library y (caller workspace) vs PyTorch", y_ext, c->y, y_count,
                   false);
    expect_close_f(c->name, "library pi (caller workspace) vs PyTorch", pi_ext, c->pi, pi_count,
                   false);
    expect_close_f(c->name, "library y: caller vs own workspace", y_ext, y, y_count, true);
    expect_close_f(c->name, "library pi: caller vs own workspace", pi_ext, pi, pi_count, true);

    /* The double-precision reference of the test suite. */
    ref_conv2d_forward(g, &c->weights, (double)c->temperature, c->batch, c->height, c->width,
                       c->x, y_ref, pi_ref);
    expect_close_ref(c->name, "PyTorch y vs reference", c->y, y_ref, y_count);
    expect_close_ref(c->name, "PyTorch pi vs reference", c->pi, pi_ref, pi_count);

    free(y);
    free(pi);
    free(y_ext);
    free(pi_ext);
    free(y_ref);
    free(pi_ref);
}

/* ------------------------------------------------------------------------------------------ */
/* linear                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void run_linear(const golden_linear_case *c, bool external_workspace, float *y, float *pi)
{
    dynconv_linear *layer = NULL;
    uint32_t flags = external_workspace ? (uint32_t)DYNCONV_FLAG_EXTERNAL_WORKSPACE : 0u;
    expect_ok(dynconv_linear_create(&c->geometry, &c->weights, c->temperature, flags, &layer),
              c->name, "dynconv_linear_create");
    assert_non_null(layer);

    size_t ws_size = 0;
    expect_ok(dynconv_linear_reshape(layer, c->batch, &ws_size), c->name,
              "dynconv_linear_reshape");

    void *ws = external_workspace ? workspace_alloc(ws_size) : NULL;
    expect_ok(dynconv_linear_forward(layer, c->x, y, pi, ws, external_workspace ? ws_size : 0),
              c->name, "dynconv_linear_forward");
    free(ws);
    dynconv_linear_destroy(layer);
}

static void test_linear_case(void **state)
{
    const golden_linear_case *c = ((const golden_test *)*state)->linear;
    const dynconv_linear_geometry *g = &c->geometry;

    size_t y_count = (size_t)(c->batch * g->out_features);
    size_t pi_count = (size_t)(c->batch * g->num_kernels);
    assert_true(tu_nontrivial_f(c->y, y_count));

    float *y = tu_alloc(y_count * sizeof *y);
    float *pi = tu_alloc(pi_count * sizeof *pi);
    float *y_ext = tu_alloc(y_count * sizeof *y_ext);
    float *pi_ext = tu_alloc(pi_count * sizeof *pi_ext);
    double *y_ref = tu_alloc(y_count * sizeof *y_ref);
    double *pi_ref = tu_alloc(pi_count * sizeof *pi_ref);

    run_linear(c, false, y, pi);
    expect_close_f(c->name, "library y vs PyTorch", y, c->y, y_count, false);
    expect_close_f(c->name, "library pi vs PyTorch", pi, c->pi, pi_count, false);

    run_linear(c, true, y_ext, pi_ext);
    expect_close_f(c->name, "library y (caller workspace) vs PyTorch", y_ext, c->y, y_count,
                   false);
    expect_close_f(c->name, "library pi (caller workspace) vs PyTorch", pi_ext, c->pi, pi_count,
                   false);
    expect_close_f(c->name, "library y: caller vs own workspace", y_ext, y, y_count, true);
    expect_close_f(c->name, "library pi: caller vs own workspace", pi_ext, pi, pi_count, true);

    ref_linear_forward(g, &c->weights, (double)c->temperature, c->batch, c->x, y_ref, pi_ref);
    expect_close_ref(c->name, "PyTorch y vs reference", c->y, y_ref, y_count);
    expect_close_ref(c->name, "PyTorch pi vs reference", c->pi, pi_ref, pi_count);

    free(y);
    free(pi);
    free(y_ext);
    free(pi_ext);
    free(y_ref);
    free(pi_ref);
}

/* ------------------------------------------------------------------------------------------ */

int main(void)
{
    if (!golden_load()) {
        return 1;
    }
    size_t count = golden_conv2d_case_count + golden_linear_case_count;
    golden_test *states = tu_alloc(count * sizeof *states);
    struct CMUnitTest *tests = tu_alloc(count * sizeof *tests);

    for (size_t i = 0; i < count; ++i) {
        golden_test *s = &states[i];
        if (i < golden_conv2d_case_count) {
            s->conv2d = &golden_conv2d_cases[i];
            s->linear = NULL;
            tests[i] = (struct CMUnitTest){ s->conv2d->name, test_conv2d_case, NULL, NULL, s };
        } else {
            s->conv2d = NULL;
            s->linear = &golden_linear_cases[i - golden_conv2d_case_count];
            tests[i] = (struct CMUnitTest){ s->linear->name, test_linear_case, NULL, NULL, s };
        }
    }

    int failed = _cmocka_run_group_tests("golden", tests, count, NULL, NULL);
    free(tests);
    free(states);
    return failed;
}
