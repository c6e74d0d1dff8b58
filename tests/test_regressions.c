/* Failures the fuzz targets found, each as a named case that states the rule it broke. The raw
 * inputs are also kept in fuzz/corpus/ (regress-*), which ctest replays. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
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

/* A stride larger than the padded input is legal (one output row or column), but the engine's
 * stride-phase copy sized one plane per phase: sh * ceil(Hp / sh) rows, 2^62 of them for a
 * stride of 2^62 on a 5 x 5 input, so reshape reported SIZE_OVERFLOW for a layer of 36
 * weights. Such shapes now take im2col + BLAS. Output row 0 reads the same taps whatever the
 * stride, so it must equal row 0 of the stride-1 layer (the case found had pad_h 3, whose row 0
 * reads only padding). */
static void stride_beyond_padded_input_reshapes_and_runs(void **state) {
    (void)state;
    enum { N = 2, CIN = 2, H = 5, W = 5, K = 2, HID = 3 };
    float weight[K * 1 * CIN * 9], fc1[HID * CIN], fc2[K * HID], x[N * CIN * H * W];
    float *arrays[] = {weight, fc1, fc2, x};
    const size_t lens[] = {sizeof weight, sizeof fc1, sizeof fc2, sizeof x};
    for (size_t a = 0; a < 4; ++a) {
        for (size_t i = 0; i < lens[a] / sizeof(float); ++i) {
            arrays[a][i] = (float)((int)((i * 7 + a * 3) % 11) - 5) / 4.0f;
        }
    }
    const int64_t strides[] = {INT64_C(1) << 62, 12, 1};
    float first_row[3][N * 7];
    for (size_t c = 0; c < 3; ++c) {
        const dynconv_conv2d_geometry g = {
            .in_channels = CIN, .out_channels = 1, .kernel_h = 3, .kernel_w = 3,
            .stride_h = strides[c], .stride_w = 1, .pad_h = 1, .pad_w = 4, .dilation_h = 1,
            .dilation_w = 3, .groups = 1, .num_kernels = K, .hidden = HID};
        const dynconv_conv2d_weights w = {weight, NULL, fc1, NULL, fc2, NULL};
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer), DYNCONV_OK);
        int64_t oh = 0, ow = 0;
        size_t ws = 0;
        assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, &oh, &ow, &ws), DYNCONV_OK);
        assert_int_equal(ow, 7);
        assert_int_equal(oh, strides[c] == 1 ? 5 : 1);
        float y[N * 9 * 7];
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
        for (size_t n = 0; n < N; ++n) {
            memcpy(&first_row[c][n * 7], &y[n * (size_t)oh * 7], 7 * sizeof(float));
        }
        dynconv_conv2d_destroy(layer);
    }
    double scale = 0.0;
    for (size_t i = 0; i < N * 7; ++i) {
        scale = fmax(scale, fabs((double)first_row[2][i]));
    }
    assert_true(scale > 0.1); /* the data do reach the output */
    for (size_t c = 0; c < 2; ++c) {
        for (size_t i = 0; i < N * 7; ++i) {
            assert_float_equal(first_row[c][i], first_row[2][i], 1e-5 * scale);
        }
    }
}

/* The softmax summed its exponentials in float: with 65537 kernels a row of attention weights
 * summed to 0.9998 (fuzz_api allows 1e-4). The sum is now accumulated in double. */
static void attention_of_65537_kernels_sums_to_one(void **state) {
    (void)state;
    enum { K = 65537, HID = 2, CIN = 1, COUT = 2, KH = 4, H = 8, W = 5 };
    float *weight = malloc(sizeof(float) * K * COUT * CIN * KH);
    float *fc2 = malloc(sizeof(float) * K * HID);
    float *att = malloc(sizeof(float) * K);
    float fc1[HID * CIN] = {0.75f, 1.25f}, x[CIN * H * W];
    assert_non_null(weight);
    assert_non_null(fc2);
    assert_non_null(att);
    for (size_t i = 0; i < (size_t)K * COUT * CIN * KH; ++i) {
        weight[i] = (float)((int)(i % 13) - 6) / 8.0f;
    }
    for (size_t i = 0; i < (size_t)K * HID; ++i) {
        fc2[i] = (float)((int)(i * 7 % 29) - 14) / 16.0f; /* logits spread over a few units */
    }
    for (size_t i = 0; i < CIN * H * W; ++i) {
        x[i] = 0.5f + (float)(i % 5) / 4.0f;
    }
    const dynconv_conv2d_geometry g = {
        .in_channels = CIN, .out_channels = COUT, .kernel_h = KH, .kernel_w = 1, .stride_h = 3,
        .stride_w = 1, .pad_h = 5, .pad_w = 0, .dilation_h = 1, .dilation_w = 1, .groups = 1,
        .num_kernels = K, .hidden = HID};
    const dynconv_conv2d_weights w = {weight, NULL, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f, DYNCONV_FLAG_BORROW_WEIGHTS, &layer),
                     DYNCONV_OK);
    int64_t oh = 0, ow = 0;
    size_t ws = 0;
    assert_int_equal(dynconv_conv2d_reshape(layer, 1, H, W, &oh, &ow, &ws), DYNCONV_OK);
    float *y = malloc(sizeof(float) * COUT * (size_t)(oh * ow));
    assert_non_null(y);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
    double sum = 0.0, max = 0.0, min = 1.0;
    for (size_t j = 0; j < K; ++j) {
        sum += (double)att[j];
        max = fmax(max, (double)att[j]);
        min = fmin(min, (double)att[j]);
    }
    assert_true(max > 2.0 * min); /* the weights are not all equal */
    assert_true(fabs(sum - 1.0) < 1e-5);
    dynconv_conv2d_destroy(layer);
    free(y);
    free(att);
    free(fc2);
    free(weight);
}

/* Padding and dilation of 2^63 - 2 on a 3x3 kernel: only the centre tap meets the input, so
 * the layer is a 1x1 convolution. The im2col copy and the engine's packing formed the source
 * pointer as (row + column + offset) - pad: the intermediate pointer lay 2^63 floats past the
 * row (clang's UBSan: pointer overflow; gcc's does not see it), and for an empty run there was
 * no valid address at all. The col2im accumulation of backward did the same. Values are small
 * integers, so the sums are exact; K = 1 makes the attention 1 and its gradient 0. The widest
 * input is 3: H + 2 * pad must fit in size_t. */
typedef struct huge_pad_case {
    const char *name;
    int64_t cin, cout, n, h, w;
} huge_pad_case;

static const huge_pad_case HUGE_PAD_CASES[] = {
    {"fuzz input: 3 -> 3, 1x2", 3, 3, 1, 1, 2},
    {"engine sized: 32 -> 64, 3x3", 32, 64, 2, 3, 3},
};

static void padding_near_2_pow_63_is_the_centre_tap(void **state) {
    (void)state;
    const int64_t huge = INT64_MAX - 1;
    for (size_t t = 0; t < sizeof HUGE_PAD_CASES / sizeof HUGE_PAD_CASES[0]; ++t) {
        const huge_pad_case *c = &HUGE_PAD_CASES[t];
        const size_t cin = (size_t)c->cin, cout = (size_t)c->cout, n = (size_t)c->n;
        const size_t plane = (size_t)(c->h * c->w);
        float *weight = malloc(sizeof(float) * cout * cin * 9);
        float *bias = malloc(sizeof(float) * cout);
        float *x = malloc(sizeof(float) * n * cin * plane);
        float *gy = malloc(sizeof(float) * n * cout * plane);
        float *y = malloc(sizeof(float) * n * cout * plane);
        float *gx = malloc(sizeof(float) * n * cin * plane);
        float *gw = malloc(sizeof(float) * cout * cin * 9);
        assert_true(weight && bias && x && gy && y && gx && gw);
        for (size_t i = 0; i < cout * cin * 9; ++i) {
            weight[i] = (float)((int)((i * 5) % 7) - 3);
        }
        for (size_t o = 0; o < cout; ++o) {
            bias[o] = (float)((int)(o % 5) - 2);
        }
        for (size_t i = 0; i < n * cin * plane; ++i) {
            x[i] = (float)((int)((i * 3) % 5) - 2);
        }
        for (size_t i = 0; i < n * cout * plane; ++i) {
            gy[i] = (float)((int)((i * 7) % 3) - 1);
        }
        float fc1[1 * 64] = {0}, fc2[1] = {0.5f};
        const dynconv_conv2d_geometry g = {
            .in_channels = c->cin, .out_channels = c->cout, .kernel_h = 3, .kernel_w = 3,
            .stride_h = 1, .stride_w = 1, .pad_h = huge, .pad_w = huge, .dilation_h = huge,
            .dilation_w = huge, .groups = 1, .num_kernels = 1, .hidden = 1};
        const dynconv_conv2d_weights w = {weight, bias, fc1, NULL, fc2, NULL};
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer), DYNCONV_OK);
        int64_t oh = 0, ow = 0;
        size_t ws = 0;
        const dynconv_status st = dynconv_conv2d_reshape(layer, c->n, c->h, c->w, &oh, &ow, &ws);
        if (st != DYNCONV_OK) {
            fail_msg("%s: reshape: %s", c->name, dynconv_last_error_message());
        }
        assert_int_equal(oh, c->h);
        assert_int_equal(ow, c->w);
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_prepare_backward(layer, NULL), DYNCONV_OK);
        const dynconv_conv2d_gradients grads = {.input = gx, .weight = gw};
        assert_int_equal(dynconv_conv2d_backward(layer, x, gy, &grads, 0, NULL, 0), DYNCONV_OK);
        for (size_t s = 0; s < n; ++s) {
            for (size_t p = 0; p < plane; ++p) {
                for (size_t o = 0; o < cout; ++o) {
                    double want = bias[o];
                    for (size_t i = 0; i < cin; ++i) {
                        want += (double)weight[(o * cin + i) * 9 + 4] *
                                x[(s * cin + i) * plane + p];
                    }
                    if ((double)y[(s * cout + o) * plane + p] != want) {
                        fail_msg("%s: y[%zu, %zu, %zu] = %g, want %g", c->name, s, o, p,
                                 (double)y[(s * cout + o) * plane + p], want);
                    }
                }
                for (size_t i = 0; i < cin; ++i) {
                    double want = 0.0;
                    for (size_t o = 0; o < cout; ++o) {
                        want += (double)weight[(o * cin + i) * 9 + 4] *
                                gy[(s * cout + o) * plane + p];
                    }
                    if ((double)gx[(s * cin + i) * plane + p] != want) {
                        fail_msg("%s: dx[%zu, %zu, %zu] = %g, want %g", c->name, s, i, p,
                                 (double)gx[(s * cin + i) * plane + p], want);
                    }
                }
            }
        }
        for (size_t o = 0; o < cout; ++o) {
            for (size_t i = 0; i < cin; ++i) {
                for (size_t tap = 0; tap < 9; ++tap) {
                    double want = 0.0;
                    for (size_t s = 0; s < n && tap == 4; ++s) {
                        for (size_t p = 0; p < plane; ++p) {
                            want += (double)gy[(s * cout + o) * plane + p] *
                                    x[(s * cin + i) * plane + p];
                        }
                    }
                    if ((double)gw[(o * cin + i) * 9 + tap] != want) {
                        fail_msg("%s: dW[%zu, %zu, tap %zu] = %g, want %g", c->name, o, i, tap,
                                 (double)gw[(o * cin + i) * 9 + tap], want);
                    }
                }
            }
        }
        dynconv_conv2d_destroy(layer);
        free(weight);
        free(bias);
        free(x);
        free(gy);
        free(y);
        free(gx);
        free(gw);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dilated_extent_of_2_pow_64_is_invalid_shape),
        cmocka_unit_test(linear_null_weight_is_reported_before_sizes),
        cmocka_unit_test(linear_temperature_is_checked_before_size_overflow),
        cmocka_unit_test(stride_beyond_padded_input_reshapes_and_runs),
        cmocka_unit_test(attention_of_65537_kernels_sums_to_one),
        cmocka_unit_test(padding_near_2_pow_63_is_the_centre_tap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
