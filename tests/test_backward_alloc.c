/* Backward never allocates: once the handle is shaped and prepared (and one backward has let
 * OpenBLAS set up its buffers), further backward calls make no allocation of libdynconv's own,
 * through the handle's own workspace or a caller-owned one, for the GEMM, depthwise and
 * pointwise paths and the linear layer. The program replaces malloc and friends to count the
 * calls and attributes each to its caller (alloc_count.h): what the BLAS allocates is reported,
 * not counted against the library. Under AddressSanitizer or valgrind (which replace the
 * allocator themselves) the test is skipped. */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "alloc_count.h"
#include "testutil.h"


typedef struct alloc_case {
    const char *name;
    bool linear;
    int64_t cin, cout, k, stride, pad, groups, kernels, hidden, n, hw;
} alloc_case;

static const alloc_case cases[] = {
    {"3x3", false, 8, 12, 3, 1, 1, 1, 4, 3, 4, 10},
    {"3x3_stride2_groups2", false, 8, 12, 3, 2, 1, 2, 3, 2, 3, 9},
    {"depthwise", false, 8, 8, 3, 1, 1, 8, 4, 2, 4, 10},
    {"pointwise", false, 8, 12, 1, 1, 0, 1, 4, 2, 4, 6},
    {"linear", true, 16, 10, 1, 1, 0, 1, 4, 4, 5, 1},
    /* Wide enough for the input gradient on the engine where its rule takes it (its own
     * scratch in the workspace); ctest runs this test on OpenBLAS's AVX2 kernels as well. */
    {"3x3_64_outputs", false, 8, 64, 3, 1, 1, 1, 3, 2, 2, 10},
    {"pointwise_64_outputs", false, 8, 64, 1, 1, 0, 1, 3, 2, 2, 16},
};

static void run_case(const alloc_case *c, bool external)
{
    const dynconv_conv2d_geometry g = {
        .in_channels = c->cin, .out_channels = c->cout, .kernel_h = c->k, .kernel_w = c->k,
        .stride_h = c->stride, .stride_w = c->stride, .pad_h = c->pad, .pad_w = c->pad,
        .dilation_h = 1, .dilation_w = 1, .groups = c->groups, .num_kernels = c->kernels,
        .hidden = c->hidden};
    const size_t wlen = (size_t)(c->kernels * c->cout * (c->cin / c->groups) * c->k * c->k);
    const size_t blen = (size_t)(c->kernels * c->cout), f1 = (size_t)(c->hidden * c->cin);
    const size_t f2 = (size_t)(c->kernels * c->hidden);
    float *p = tu_alloc((wlen + blen + f1 + f2 + (size_t)c->kernels) * sizeof(float));
    float *w = p, *b = w + wlen, *fc1 = b + blen, *fc2 = fc1 + f1, *fc2b = fc2 + f2;
    assert_int_equal(dynconv_conv2d_init_parameters(&g, 3, DYNCONV_INIT_BIAS_UNIFORM, w, b, fc1,
                                                    NULL, fc2, fc2b),
                     DYNCONV_OK);
    const int64_t oh = (c->hw + 2 * c->pad - c->k) / c->stride + 1;
    const size_t xlen = (size_t)(c->n * c->cin * c->hw * c->hw);
    const size_t ylen = (size_t)(c->n * c->cout * oh * oh);
    float *x = tu_alloc(xlen * sizeof(float)), *dy = tu_alloc(ylen * sizeof(float));
    float *g_all = tu_alloc((xlen + wlen + blen + f1 + f2 + (size_t)c->kernels) * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    tu_fill_uniform(&rng, x, xlen, -1.f, 1.f);
    tu_fill_uniform(&rng, dy, ylen, -1.f, 1.f);
    float *gx = g_all, *gw = gx + xlen, *gb = gw + wlen, *gf1 = gb + blen, *gf2 = gf1 + f1;
    float *gf2b = gf2 + f2;
    const uint32_t flags = external ? (uint32_t)DYNCONV_FLAG_EXTERNAL_WORKSPACE : 0u;
    size_t ws_size = 0;
    void *ws = NULL;
    dynconv_status st = DYNCONV_OK;
    tu_alloc_counts counted = {0, 0, 0};

    if (c->linear) {
        const dynconv_linear_geometry lg = {c->cin, c->cout, c->kernels, c->hidden};
        const dynconv_linear_weights lw = {w, b, fc1, NULL, fc2, fc2b};
        dynconv_linear *layer = NULL;
        assert_int_equal(dynconv_linear_create(&lg, &lw, 2.0f, flags, &layer), DYNCONV_OK);
        assert_int_equal(dynconv_linear_reshape(layer, c->n, NULL), DYNCONV_OK);
        assert_int_equal(dynconv_linear_prepare_backward(layer, &ws_size), DYNCONV_OK);
        if (external) {
            ws = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (ws_size + 63) / 64 * 64);
        }
        const dynconv_linear_gradients gr = {gx, gw, gb, gf1, NULL, gf2, gf2b};
        assert_int_equal(dynconv_linear_backward(layer, x, dy, &gr, 0, ws, ws_size), DYNCONV_OK);
        tu_alloc_count_begin();
        for (int r = 0; r < 5 && st == DYNCONV_OK; ++r) {
            st = dynconv_linear_backward(layer, x, dy, &gr, DYNCONV_BACKWARD_ACCUMULATE, ws,
                                         ws_size);
        }
        counted = tu_alloc_count_end();
        dynconv_linear_destroy(layer);
    } else {
        const dynconv_conv2d_weights cw = {w, b, fc1, NULL, fc2, fc2b};
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &cw, 2.0f, flags, &layer), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->hw, c->hw, NULL, NULL, NULL),
                         DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_prepare_backward(layer, &ws_size), DYNCONV_OK);
        if (external) {
            ws = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (ws_size + 63) / 64 * 64);
        }
        const dynconv_conv2d_gradients gr = {gx, gw, gb, gf1, NULL, gf2, gf2b};
        assert_int_equal(dynconv_conv2d_backward(layer, x, dy, &gr, 0, ws, ws_size), DYNCONV_OK);
        tu_alloc_count_begin();
        for (int r = 0; r < 5 && st == DYNCONV_OK; ++r) {
            st = dynconv_conv2d_backward(layer, x, dy, &gr, DYNCONV_BACKWARD_ACCUMULATE, ws,
                                         ws_size);
        }
        counted = tu_alloc_count_end();
        dynconv_conv2d_destroy(layer);
    }
    assert_int_equal(st, DYNCONV_OK);
    if (tu_alloc_counts_total(counted) != 0) {
        print_message("  %s (%s workspace), 5 backwards: %zu allocations by libdynconv, %zu by "
                      "the BLAS, %zu by others\n",
                      c->name, external ? "caller's" : "own", counted.library, counted.blas,
                      counted.other);
    }
    assert_int_equal(counted.library, 0);
    free(ws);
    free(g_all);
    free(dy);
    free(x);
    free(p);
}

static void backward_allocates_nothing(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        print_message("  allocations are not counted under AddressSanitizer or valgrind\n");
        skip();
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        run_case(&cases[i], false);
        run_case(&cases[i], true);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backward_allocates_nothing),
    };
    return cmocka_run_group_tests_name("backward_alloc", tests, NULL, NULL);
}
