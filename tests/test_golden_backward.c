/* Backward of the dynamic layers against PyTorch autograd (tests/golden/: same cases as the
 * forward golden test, with a random dL/dy and every gradient autograd computed). */
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

#include "golden/golden.h"
#include "gradcheck.h"
#include "testutil.h"

/* The gradients of one case, the library's in got[], PyTorch's in want[]:
 * [0] dL/dx, then weight, bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias. */
typedef struct grad_set {
    const char *name[7];
    const float *want[7];
    float *got[7];
    size_t count[7];
} grad_set;

static void setup_set(grad_set *s, const float *dx, size_t x_count, const float *const want[6],
                      const size_t counts[6])
{
    static const char *const names[7] = {"dx",       "dweight",    "dbias",      "dfc1_weight",
                                         "dfc1_bias", "dfc2_weight", "dfc2_bias"};
    for (int i = 0; i < 7; ++i) {
        s->name[i] = names[i];
        s->want[i] = i == 0 ? dx : want[i - 1];
        s->count[i] = i == 0 ? x_count : counts[i - 1];
        s->got[i] = NULL;
        if (s->want[i] != NULL) {
            s->got[i] = tu_alloc(s->count[i] * sizeof(float));
            for (size_t j = 0; j < s->count[i]; ++j) {
                s->got[i][j] = NAN; /* overwrite mode must write every element */
            }
        }
    }
}

static void check_set(const char *case_name, grad_set *s, bool k1)
{
    size_t bad = 0;
    for (int i = 0; i < 7; ++i) {
        if (s->want[i] == NULL) {
            continue;
        }
        char what[96];
        snprintf(what, sizeof what, "%s %s", case_name, s->name[i]);
        /* With K = 1 the attention's gradients are zero by construction. */
        if (!(k1 && i >= 3) && !gc_nontrivial(s->want[i], s->count[i])) {
            printf("  %s: PyTorch's gradient is trivial\n", what);
            ++bad;
        }
        bad += gc_compare_f(what, s->got[i], s->want[i], s->count[i]);
        free(s->got[i]);
    }
    assert_int_equal(bad, 0);
}

static void test_conv2d_case(void **state)
{
    const golden_conv2d_case *c = *state;
    const dynconv_conv2d_geometry *g = &c->geometry;
    const size_t k = (size_t)g->num_kernels, hid = (size_t)g->hidden;
    const size_t cin = (size_t)g->in_channels, cout = (size_t)g->out_channels;
    const size_t x_count = (size_t)(c->batch * c->height * c->width) * cin;
    const float *const want[6] = {c->dweights.weight,     c->dweights.bias,
                                  c->dweights.fc1_weight, c->dweights.fc1_bias,
                                  c->dweights.fc2_weight, c->dweights.fc2_bias};
    const size_t counts[6] = {
        k * cout * cin / (size_t)g->groups * (size_t)(g->kernel_h * g->kernel_w),
        k * cout, hid * cin, hid, k * hid, k};
    assert_non_null(c->dy);
    grad_set s;
    setup_set(&s, c->dx, x_count, want, counts);

    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(g, &c->weights, c->temperature, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->batch, c->height, c->width, NULL, NULL,
                                            NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, NULL), DYNCONV_OK);
    const dynconv_conv2d_gradients gr = {s.got[0], s.got[1], s.got[2], s.got[3],
                                         s.got[4], s.got[5], s.got[6]};
    assert_int_equal(dynconv_conv2d_backward(layer, c->x, c->dy, &gr, 0, NULL, 0), DYNCONV_OK);
    dynconv_conv2d_destroy(layer);
    check_set(c->name, &s, k == 1);
}

static void test_linear_case(void **state)
{
    const golden_linear_case *c = *state;
    const dynconv_linear_geometry *g = &c->geometry;
    const size_t k = (size_t)g->num_kernels, hid = (size_t)g->hidden;
    const size_t din = (size_t)g->in_features, dout = (size_t)g->out_features;
    const float *const want[6] = {c->dweights.weight,     c->dweights.bias,
                                  c->dweights.fc1_weight, c->dweights.fc1_bias,
                                  c->dweights.fc2_weight, c->dweights.fc2_bias};
    const size_t counts[6] = {k * dout * din, k * dout, hid * din, hid, k * hid, k};
    assert_non_null(c->dy);
    grad_set s;
    setup_set(&s, c->dx, (size_t)c->batch * din, want, counts);

    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(g, &c->weights, c->temperature, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(layer, c->batch, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_prepare_backward(layer, NULL), DYNCONV_OK);
    const dynconv_linear_gradients gr = {s.got[0], s.got[1], s.got[2], s.got[3],
                                         s.got[4], s.got[5], s.got[6]};
    assert_int_equal(dynconv_linear_backward(layer, c->x, c->dy, &gr, 0, NULL, 0), DYNCONV_OK);
    dynconv_linear_destroy(layer);
    check_set(c->name, &s, k == 1);
}

int main(void)
{
    if (!golden_load()) {
        return 1;
    }
    const size_t count = golden_conv2d_case_count + golden_linear_case_count;
    struct CMUnitTest *tests = tu_alloc(count * sizeof *tests);
    for (size_t i = 0; i < count; ++i) {
        if (i < golden_conv2d_case_count) {
            tests[i] = (struct CMUnitTest){golden_conv2d_cases[i].name, test_conv2d_case, NULL,
                                           NULL, (void *)&golden_conv2d_cases[i]};
        } else {
            const golden_linear_case *c = &golden_linear_cases[i - golden_conv2d_case_count];
            tests[i] = (struct CMUnitTest){c->name, test_linear_case, NULL, NULL, (void *)c};
        }
    }
    const int failed = _cmocka_run_group_tests("golden_backward", tests, count, NULL, NULL);
    free(tests);
    return failed;
}
