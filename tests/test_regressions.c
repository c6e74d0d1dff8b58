/* Failures the fuzz targets found, each as a named case that states the rule it broke. The raw
 * inputs are also kept in fuzz/corpus/ (regress-*), which ctest replays. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

static float params[64];

/* dilation * (kernel - 1) == 2^64 - 1 fits in size_t, so create accepts it (with borrowed
 * weights nothing big is allocated), but the extent, one more, wrapped to 0: reshape accepted
 * a 1x1 input and reported a 2x1 output, and forward would have read far outside the input. */
static void dilated_extent_of_2_pow_64_is_invalid_shape(void **state) {
    (void)state;
    static const struct {
        int64_t kernel_h, dilation_h, num_kernels;
        uint32_t flags;
    } cases[] = {
        {4, INT64_C(6148914691236517205), 2, 0},                          /* 3 * (2^64-1)/3 */
        {1722007170, INT64_C(10712350335), 2, DYNCONV_FLAG_BORROW_WEIGHTS}, /* 257*6700417 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        const dynconv_conv2d_geometry g = {
            .in_channels = 1, .out_channels = 1, .kernel_h = cases[i].kernel_h, .kernel_w = 1,
            .stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0,
            .dilation_h = cases[i].dilation_h, .dilation_w = 1, .groups = 1,
            .num_kernels = cases[i].num_kernels, .hidden = 2};
        const dynconv_conv2d_weights w = {params, NULL, params, NULL, params, NULL};
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f,
                                               cases[i].flags | DYNCONV_FLAG_EXTERNAL_WORKSPACE,
                                               &layer),
                         DYNCONV_OK);
        int64_t oh = -7, ow = -7;
        size_t ws = 7;
        assert_int_equal(dynconv_conv2d_reshape(layer, 1, 1, 1, &oh, &ow, &ws),
                         DYNCONV_ERROR_INVALID_SHAPE);
        assert_int_equal(oh, -7);
        assert_int_equal(ow, -7);
        assert_int_equal(ws, 7);
        /* the largest input that fits in the index types is still too small */
        assert_int_equal(dynconv_conv2d_reshape(layer, 1, INT64_C(1) << 40, 1, &oh, &ow, &ws),
                         DYNCONV_ERROR_INVALID_SHAPE);
        dynconv_conv2d_destroy(layer);
    }
}

/* The linear create checked its sizes before its required arrays, so a NULL weight with a bad
 * size was INVALID_ARGUMENT while conv2d says NULL_POINTER: both now report the NULL first. */
static void linear_null_weight_is_reported_before_sizes(void **state) {
    (void)state;
    const dynconv_linear_geometry g = {.in_features = 4, .out_features = -1, .num_kernels = 3,
                                       .hidden = 2};
    const dynconv_linear_weights w = {NULL, NULL, params, NULL, params, NULL};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&g, &w, 1.0f, 0, &layer),
                     DYNCONV_ERROR_NULL_POINTER);
    assert_null(layer);
    assert_non_null(strstr(dynconv_last_error_message(), "weight"));
}

/* The linear create checked its size products before the temperature, so an infinite
 * temperature with overflowing sizes was SIZE_OVERFLOW while conv2d says INVALID_ARGUMENT: the
 * flags and the temperature are now checked first in both. */
static void linear_temperature_is_checked_before_size_overflow(void **state) {
    (void)state;
    const dynconv_linear_geometry g = {.in_features = 1,
                                       .out_features = INT64_C(288795532994073812),
                                       .num_kernels = 46341, .hidden = 46341};
    const dynconv_linear_weights w = {params, NULL, params, NULL, params, NULL};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&g, &w, INFINITY, 0, &layer),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "temperature"));
    assert_int_equal(dynconv_linear_create(&g, &w, 1.0f, 1u << 7, &layer),
                     DYNCONV_ERROR_UNSUPPORTED); /* unknown flags: INVALID_ARGUMENT before 1.1 */
    assert_int_equal(dynconv_linear_create(&g, &w, 1.0f, 0, &layer),
                     DYNCONV_ERROR_SIZE_OVERFLOW);
    assert_null(layer);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dilated_extent_of_2_pow_64_is_invalid_shape),
        cmocka_unit_test(linear_null_weight_is_reported_before_sizes),
        cmocka_unit_test(linear_temperature_is_checked_before_size_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
