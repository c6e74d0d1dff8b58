/* The API's contract outside the numbers: versions, status strings, the lifecycle and the
 * workspace protocol as the header documents them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "testutil.h"

/* A small layer: 4 -> 6 channels, 3x3, padding 1, K = 3, hidden 2. */
enum { CIN = 4, COUT = 6, KS = 3, K = 3, HID = 2, N = 2, H = 5, W = 7 };
static float weight[K * COUT * CIN * KS * KS], bias[K * COUT];
static float fc1[HID * CIN], fc2[K * HID];
static float input[N * CIN * H * W];

static const dynconv_conv2d_geometry geometry = {
    .in_channels = CIN, .out_channels = COUT, .kernel_h = KS, .kernel_w = KS,
    .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1,
    .groups = 1, .num_kernels = K, .hidden = HID};

static int fill(void **state) {
    (void)state;
    tu_rng rng;
    tu_rng_seed(&rng, 7);
    tu_fill_uniform(&rng, weight, sizeof weight / sizeof *weight, -1, 1);
    tu_fill_uniform(&rng, bias, sizeof bias / sizeof *bias, -1, 1);
    tu_fill_uniform(&rng, fc1, sizeof fc1 / sizeof *fc1, -2, 2);
    tu_fill_uniform(&rng, fc2, sizeof fc2 / sizeof *fc2, -2, 2);
    tu_fill_uniform(&rng, input, sizeof input / sizeof *input, -1, 1);
    return 0;
}

static dynconv_conv2d *make_layer(uint32_t flags) {
    const dynconv_conv2d_weights w = {weight, bias, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&geometry, &w, 1.0f, flags, &layer), DYNCONV_OK);
    assert_non_null(layer);
    return layer;
}

static void version_matches_header(void **state) {
    (void)state;
    assert_int_equal(dynconv_version_number(), DYNCONV_VERSION_NUMBER);
    assert_string_equal(dynconv_version_string(), DYNCONV_VERSION_STRING);
    assert_int_equal(DYNCONV_VERSION_NUMBER, DYNCONV_VERSION_MAJOR * 10000 +
                                                 DYNCONV_VERSION_MINOR * 100 +
                                                 DYNCONV_VERSION_PATCH);
}

static void status_strings_are_distinct(void **state) {
    (void)state;
    for (int a = 0; a <= DYNCONV_ERROR_UNSUPPORTED; ++a) {
        const char *sa = dynconv_status_string((dynconv_status)a);
        assert_non_null(sa);
        assert_true(strlen(sa) > 0);
        assert_string_not_equal(sa, dynconv_status_string((dynconv_status)1000));
        for (int b = 0; b < a; ++b) {
            assert_string_not_equal(sa, dynconv_status_string((dynconv_status)b));
        }
    }
}

static void error_message_names_the_function(void **state) {
    (void)state;
    dynconv_conv2d_geometry g = geometry;
    g.groups = 3; /* divides neither 4 nor 6 */
    const dynconv_conv2d_weights w = {weight, NULL, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer), DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_null(layer);
    assert_non_null(strstr(dynconv_last_error_message(), "dynconv_conv2d_create"));
    assert_non_null(strstr(dynconv_last_error_message(), "groups"));
}

static void reshape_reports_sizes(void **state) {
    (void)state;
    dynconv_conv2d *layer = make_layer(0);
    int64_t oh = -1, ow = -1;
    size_t ws = 0;
    assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, &oh, &ow, &ws), DYNCONV_OK);
    assert_int_equal(oh, H);
    assert_int_equal(ow, W);
    assert_true(ws > 0);
    /* Every out-parameter is optional. */
    assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, NULL, NULL, NULL), DYNCONV_OK);
    dynconv_conv2d_destroy(layer);
}

static void temperature_round_trips(void **state) {
    (void)state;
    dynconv_conv2d *layer = make_layer(0);
    float t = 0;
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 1.0f);
    assert_int_equal(dynconv_conv2d_set_temperature(layer, 30.0f), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 30.0f);
    dynconv_conv2d_destroy(layer);
}

/* The handle's own workspace and a caller-owned one of exactly the reported size give the same
 * bits; one byte less is refused. */
static void external_workspace_protocol(void **state) {
    (void)state;
    dynconv_conv2d *own = make_layer(0);
    dynconv_conv2d *ext = make_layer(DYNCONV_FLAG_EXTERNAL_WORKSPACE);
    size_t ws = 0;
    assert_int_equal(dynconv_conv2d_reshape(own, N, H, W, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(ext, N, H, W, NULL, NULL, &ws), DYNCONV_OK);
    void *buffer = aligned_alloc(DYNCONV_WORKSPACE_ALIGNMENT, (ws + 63) / 64 * 64);
    assert_non_null(buffer);
    float y1[N * COUT * H * W], y2[N * COUT * H * W], pi1[N * K], pi2[N * K];
    assert_int_equal(dynconv_conv2d_forward(own, input, y1, pi1, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(ext, input, y2, pi2, buffer, ws), DYNCONV_OK);
    assert_memory_equal(y1, y2, sizeof y1);
    assert_memory_equal(pi1, pi2, sizeof pi1);
    assert_int_equal(dynconv_conv2d_forward(ext, input, y2, NULL, buffer, ws - 1),
                     DYNCONV_ERROR_INSUFFICIENT_WORKSPACE);
    assert_int_equal(dynconv_conv2d_forward(ext, input, y2, NULL, NULL, 0),
                     DYNCONV_ERROR_NULL_POINTER);
    free(buffer);
    dynconv_conv2d_destroy(own);
    dynconv_conv2d_destroy(ext);
}

static void destroy_accepts_null(void **state) {
    (void)state;
    dynconv_conv2d_destroy(NULL);
    dynconv_linear_destroy(NULL);
}

static void linear_lifecycle(void **state) {
    (void)state;
    enum { DI = 5, DO = 3 };
    float lw[K * DO * DI], lfc1[HID * DI], x[N * DI], y[N * DO], pi[N * K];
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    tu_fill_uniform(&rng, lw, K * DO * DI, -1, 1);
    tu_fill_uniform(&rng, lfc1, HID * DI, -1, 1);
    tu_fill_uniform(&rng, x, N * DI, -1, 1);
    const dynconv_linear_geometry g = {DI, DO, K, HID};
    const dynconv_linear_weights w = {lw, NULL, lfc1, NULL, fc2, NULL};
    dynconv_linear *layer = NULL;
    size_t ws = 0;
    assert_int_equal(dynconv_linear_create(&g, &w, 2.0f, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_linear_forward(layer, x, y, pi, NULL, 0), DYNCONV_ERROR_INVALID_STATE);
    assert_int_equal(dynconv_linear_reshape(layer, N, &ws), DYNCONV_OK);
    assert_true(ws > 0);
    assert_int_equal(dynconv_linear_forward(layer, x, y, pi, NULL, 0), DYNCONV_OK);
    for (int n = 0; n < N; ++n) {
        assert_float_equal(pi[n * K] + pi[n * K + 1] + pi[n * K + 2], 1.0f, 1e-6f);
    }
    float t = 0;
    assert_int_equal(dynconv_linear_get_temperature(layer, &t), DYNCONV_OK);
    assert_true(t == 2.0f);
    dynconv_linear_destroy(layer);
}

/* Forward and backward apply one overlap rule, and the message names the pair that breaks it. */
static void overlap_messages_name_the_pair(void **state) {
    (void)state;
    dynconv_conv2d *layer = make_layer(DYNCONV_FLAG_BORROW_WEIGHTS);
    assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, NULL, NULL, NULL), DYNCONV_OK);
    static float y[N * COUT * H * W], x_and_y[N * CIN * H * W + N * COUT * H * W];
    memcpy(x_and_y, input, sizeof input);
    assert_int_equal(dynconv_conv2d_forward(layer, x_and_y, x_and_y + 1, NULL, NULL, 0),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "output overlaps input"));
    float pi[N * K];
    assert_int_equal(dynconv_conv2d_forward(layer, input, y, y, NULL, 0),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "output overlaps attention"));
    assert_int_equal(dynconv_conv2d_forward(layer, input, y, pi, NULL, 0), DYNCONV_OK);

    /* A gradient written over a borrowed parameter the backward reads. */
    assert_int_equal(dynconv_conv2d_prepare_backward(layer, NULL), DYNCONV_OK);
    const dynconv_conv2d_gradients into_weight = {.fc1_weight = weight};
    assert_int_equal(dynconv_conv2d_backward(layer, input, y, &into_weight, 0, NULL, 0),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(),
                           "gradients->fc1_weight overlaps the layer's parameter weight"));
    dynconv_conv2d_destroy(layer);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_matches_header),
        cmocka_unit_test(status_strings_are_distinct),
        cmocka_unit_test(error_message_names_the_function),
        cmocka_unit_test(reshape_reports_sizes),
        cmocka_unit_test(temperature_round_trips),
        cmocka_unit_test(external_workspace_protocol),
        cmocka_unit_test(destroy_accepts_null),
        cmocka_unit_test(linear_lifecycle),
        cmocka_unit_test(overlap_messages_name_the_pair),
    };
    return cmocka_run_group_tests_name("api", tests, fill, NULL);
}
