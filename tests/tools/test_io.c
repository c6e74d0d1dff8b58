/* The file readers of the tools (dynconv_io) on memory buffers: valid files read back exactly,
 * every truncation and a sweep of corrupted header bytes fail cleanly (under ASan in the
 * sanitizer build), dtype conversions give exact values, and the layer loader takes sizes from
 * shapes and hyper-parameters from metadata or overrides, never from defaults. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dcio.h"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct image {
    unsigned char *bytes;
    size_t size;
} image;

static image serialize(const dcio_st_entry *e, size_t n, const char *const *keys,
                       const char *const *values, size_t meta) {
    image im = {NULL, 0};
    dcio_error err;
    assert_true(dcio_st_serialize(e, n, keys, values, meta, &im.bytes, &im.size, &err));
    return im;
}

/* A small layer: K 3, C_out 4, C_in 6, groups 2 (C_in/g 3), kernel 3x2, hidden 2. */
enum { K = 3, COUT = 4, CIN = 6, CING = 3, KH = 3, KW = 2, HID = 2 };
static float weight[K * COUT * CING * KH * KW], bias[K * COUT], fc1[HID * CIN], fc1b[HID],
    fc2[K * HID], fc2b[K];
static const int64_t weight_shape[] = {K, COUT, CING, KH, KW}, bias_shape[] = {K, COUT},
                     fc1_shape4[] = {HID, CIN, 1, 1}, fc1b_shape[] = {HID},
                     fc2_shape[] = {K, HID}, fc2b_shape[] = {K};

static void fill(float *p, size_t n, float base) {
    for (size_t i = 0; i < n; ++i) {
        p[i] = base + (float)i * 0.25f; /* exact in float32 */
    }
}

static int setup_layer(void **state) {
    (void)state;
    fill(weight, sizeof weight / sizeof *weight, -9.0f);
    fill(bias, sizeof bias / sizeof *bias, 1.0f);
    fill(fc1, sizeof fc1 / sizeof *fc1, -2.0f);
    fill(fc1b, sizeof fc1b / sizeof *fc1b, 0.5f);
    fill(fc2, sizeof fc2 / sizeof *fc2, 3.0f);
    fill(fc2b, sizeof fc2b / sizeof *fc2b, -0.75f);
    return 0;
}

/* The layer's tensors under `prefix` with the fc (scheme 0) or net (scheme 1) names. */
static image layer_image(const char *prefix, int scheme, const char *const *keys,
                         const char *const *values, size_t meta) {
    static char names[6][128];
    const char *suffix[2][6] = {
        {"weight", "bias", "attention.fc1.weight", "attention.fc1.bias", "attention.fc2.weight",
         "attention.fc2.bias"},
        {"weight", "bias", "attention.net.0.weight", "attention.net.0.bias",
         "attention.net.2.weight", "attention.net.2.bias"}};
    for (int i = 0; i < 6; ++i) {
        snprintf(names[i], sizeof names[i], "%s%s", prefix, suffix[scheme][i]);
    }
    const dcio_st_entry e[] = {
        {names[0], 5, weight_shape, weight}, {names[1], 2, bias_shape, bias},
        {names[2], 4, fc1_shape4, fc1},      {names[3], 1, fc1b_shape, fc1b},
        {names[4], 2, fc2_shape, fc2},       {names[5], 1, fc2b_shape, fc2b}};
    return serialize(e, 6, keys, values, meta);
}

/* ---- safetensors -------------------------------------------------------------------------- */

static void safetensors_round_trip(void **state) {
    (void)state;
    const char *keys[] = {"groups", "note"}, *values[] = {"2", "hello"};
    image im = layer_image("", 0, keys, values, 2);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_int_equal(st->count, 6);
    assert_string_equal(dcio_st_metadata(st, "note"), "hello");
    assert_null(dcio_st_metadata(st, "stride"));
    const dcio_st_tensor *t = dcio_st_find(st, "weight");
    assert_non_null(t);
    assert_int_equal(t->rank, 5);
    assert_memory_equal(t->shape, weight_shape, sizeof weight_shape);
    assert_int_equal(t->numel, sizeof weight / sizeof *weight);
    float *got = malloc(sizeof weight);
    assert_non_null(got);
    assert_true(dcio_st_tensor_to_f32(t, got, &err));
    assert_memory_equal(got, weight, sizeof weight);
    free(got);
    assert_null(dcio_st_find(st, "attention.net.0.weight"));
    dcio_st_free(st);
    free(im.bytes);
}

static void safetensors_every_truncation_fails(void **state) {
    (void)state;
    image im = layer_image("", 0, NULL, NULL, 0);
    for (size_t len = 0; len < im.size; ++len) {
        /* A fresh allocation of exactly len bytes, so ASan sees any read past the end. */
        unsigned char *cut = malloc(len > 0 ? len : 1);
        assert_non_null(cut);
        memcpy(cut, im.bytes, len);
        dcio_safetensors *st = (dcio_safetensors *)0x1;
        dcio_error err = {"unset"};
        assert_false(dcio_st_parse(cut, len, &st, &err));
        assert_ptr_equal(st, (dcio_safetensors *)0x1); /* output untouched */
        assert_string_not_equal(err.message, "unset");
        free(cut);
    }
    free(im.bytes);
}

/* Every byte of the header replaced by a few values: never a crash, and a success only when
 * the result still describes the same tensors consistently. */
static void safetensors_corrupted_headers(void **state) {
    (void)state;
    image im = layer_image("", 0, NULL, NULL, 0);
    const size_t header_end = 8 + (size_t)im.bytes[0] + ((size_t)im.bytes[1] << 8);
    const unsigned char replacements[] = {0x00, 0xFF, '"', '9', '}', ',', 0xC3};
    size_t failures = 0, runs = 0;
    for (size_t i = 0; i < header_end; ++i) {
        for (size_t r = 0; r < sizeof replacements; ++r) {
            unsigned char *copy = malloc(im.size);
            assert_non_null(copy);
            memcpy(copy, im.bytes, im.size);
            copy[i] = replacements[r];
            dcio_safetensors *st = NULL;
            dcio_error err;
            if (dcio_st_parse(copy, im.size, &st, &err)) {
                /* whatever parsed must still tile the data exactly */
                size_t total = 0;
                for (size_t t = 0; t < st->count; ++t) {
                    total += st->tensors[t].end - st->tensors[t].begin;
                }
                assert_int_equal(total, im.size - header_end);
                dcio_st_free(st);
            } else {
                failures++;
            }
            runs++;
            free(copy);
        }
    }
    assert_true(failures > runs / 2);
    free(im.bytes);
}

static image raw_file(const char *header, const void *data, size_t data_len) {
    const size_t n = strlen(header);
    image im = {malloc(8 + n + data_len), 8 + n + data_len};
    assert_non_null(im.bytes);
    for (int b = 0; b < 8; ++b) {
        im.bytes[b] = (unsigned char)((uint64_t)n >> (8 * b));
    }
    memcpy(im.bytes + 8, header, n);
    memcpy(im.bytes + 8 + n, data, data_len);
    return im;
}

static void safetensors_converts_f16_bf16_f64_exactly(void **state) {
    (void)state;
    /* F16: 1.0, -2.0, 2^-24 (smallest subnormal), 65504 (largest), +inf.
     * BF16: 1.0, -0.5. F64: 0.1 (rounded to float), -3.0. */
    const unsigned char data[] = {0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xFF, 0x7B, 0x00, 0x7C,
                                  0x80, 0x3F, 0x00, 0xBF,
                                  0x9A, 0x99, 0x99, 0x99, 0x99, 0x99, 0xB9, 0x3F,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0xC0};
    image im = raw_file("{\"h\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[10,14]},"
                        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[14,30]}}",
                        data, sizeof data);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    float h[5], b[2], d[2];
    assert_true(dcio_st_tensor_to_f32(dcio_st_find(st, "h"), h, &err));
    assert_true(dcio_st_tensor_to_f32(dcio_st_find(st, "b"), b, &err));
    assert_true(dcio_st_tensor_to_f32(dcio_st_find(st, "d"), d, &err));
    assert_true(h[0] == 1.0f && h[1] == -2.0f && h[2] == ldexpf(1.0f, -24) && h[3] == 65504.0f);
    assert_true(isinf(h[4]) && h[4] > 0);
    assert_true(b[0] == 1.0f && b[1] == -0.5f);
    assert_true(d[0] == 0.1f && d[1] == -3.0f);
    dcio_st_free(st);
    free(im.bytes);
}

static void safetensors_refuses_what_it_cannot_convert(void **state) {
    (void)state;
    const unsigned char big[8] = {0, 0, 0, 0, 0, 0, 0x00, 0x7F}; /* 2^1009 */
    image im = raw_file("{\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
                        "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]}}",
                        big, 8);
    /* the I64 tensor needs 8 more bytes */
    unsigned char *bytes = realloc(im.bytes, im.size + 8);
    assert_non_null(bytes);
    memset(bytes + im.size, 0, 8);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(bytes, im.size + 8, &st, &err));
    float out[1] = {42.0f};
    assert_false(dcio_st_tensor_to_f32(dcio_st_find(st, "d"), out, &err));
    assert_non_null(strstr(err.message, "outside the float32 range"));
    assert_true(out[0] == 42.0f);
    assert_false(dcio_st_tensor_to_f32(dcio_st_find(st, "i"), out, &err));
    assert_non_null(strstr(err.message, "dtype I64"));
    dcio_st_free(st);
    free(bytes);
}

static void expect_parse_error(const char *header, size_t data_len, const char *phrase) {
    unsigned char zeros[64] = {0};
    assert_true(data_len <= sizeof zeros);
    image im = raw_file(header, zeros, data_len);
    dcio_safetensors *st = NULL;
    dcio_error err = {""};
    const bool ok = dcio_st_parse(im.bytes, im.size, &st, &err);
    if (ok || strstr(err.message, phrase) == NULL) {
        fail_msg("header %s: expected an error with '%s', got %s '%s'", header, phrase,
                 ok ? "success" : "error", err.message);
    }
    free(im.bytes);
}

static void safetensors_malformed_headers(void **state) {
    (void)state;
    expect_parse_error("[]", 0, "not a JSON object");
    expect_parse_error("{\"a\":1", 0, "not valid JSON");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                       "beyond the data section");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                       "span 8 bytes");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                       "end before they begin");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 8,
                       "overlap");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                       "belong to no tensor");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                       "cover only 4");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                       "\"data_offsets\":[0,4]}}", 4, "overflows");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                       "\"data_offsets\":[0,4]}}", 4, "rank 9");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4,
                       "shape[0]");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
                       "data_offsets");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing");
    expect_parse_error("{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "unknown dtype");
    expect_parse_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                       "duplicate");
    expect_parse_error("{\"__metadata__\":{\"k\":[1]}}", 0, "not a string");
    expect_parse_error("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                       "empty name");
    expect_parse_error("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                       4, "not valid JSON");
    expect_parse_error("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                       4, "not valid JSON");
}

/* ---- the layer loader --------------------------------------------------------------------- */

static void layer_from_shapes_and_metadata(void **state) {
    (void)state;
    const char *keys[] = {"stride", "padding", "dilation", "groups", "temperature"};
    const char *values[] = {"2,1", "1", "1,2", "2", "0.5"};
    for (int scheme = 0; scheme < 2; ++scheme) {
        image im = layer_image("", scheme, keys, values, 5);
        dcio_safetensors *st = NULL;
        dcio_error err;
        assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
        dcio_layer layer;
        if (!dcio_layer_load(st, NULL, &layer, &err)) {
            fail_msg("%s", err.message);
        }
        const dynconv_conv2d_geometry *g = &layer.geometry;
        assert_int_equal(g->in_channels, CIN);
        assert_int_equal(g->out_channels, COUT);
        assert_int_equal(g->kernel_h, KH);
        assert_int_equal(g->kernel_w, KW);
        assert_int_equal(g->num_kernels, K);
        assert_int_equal(g->hidden, HID);
        assert_int_equal(g->groups, 2);
        assert_true(g->stride_h == 2 && g->stride_w == 1 && g->pad_h == 1 && g->pad_w == 1 &&
                    g->dilation_h == 1 && g->dilation_w == 2);
        assert_true(layer.temperature == 0.5f);
        const dynconv_conv2d_weights w = dcio_layer_weights(&layer);
        assert_memory_equal(w.weight, weight, sizeof weight);
        assert_memory_equal(w.bias, bias, sizeof bias);
        assert_memory_equal(w.fc1_weight, fc1, sizeof fc1);
        assert_memory_equal(w.fc1_bias, fc1b, sizeof fc1b);
        assert_memory_equal(w.fc2_weight, fc2, sizeof fc2);
        assert_memory_equal(w.fc2_bias, fc2b, sizeof fc2b);
        dcio_layer_free(&layer);
        dcio_st_free(st);
        free(im.bytes);
    }
}

static void layer_prefix_and_overrides(void **state) {
    (void)state;
    /* per-layer metadata wins over the plain key; overrides win over both */
    const char *keys[] = {"groups", "stride", "conv.stride", "temperature", "padding",
                          "conv.dilation"};
    const char *values[] = {"2", "3", "2", "4", "0", "1,2"};
    image im = layer_image("conv.", 0, keys, values, 6);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    dcio_layer layer;
    dcio_layer_options o = {0};
    o.prefix = "conv";
    assert_true(dcio_layer_load(st, &o, &layer, &err));
    assert_false(layer.linear);
    assert_int_equal(layer.geometry.stride_h, 2);
    assert_int_equal(layer.geometry.pad_h, 0);
    assert_int_equal(layer.geometry.dilation_w, 2);
    assert_true(layer.temperature == 4.0f);
    assert_string_equal(layer.name[DCIO_LAYER_FC2_BIAS], "conv.attention.fc2.bias");
    dcio_layer_free(&layer);
    o.set_stride = o.set_temperature = true;
    o.stride[0] = 1;
    o.stride[1] = 3;
    o.temperature = 0.25f;
    assert_true(dcio_layer_load(st, &o, &layer, &err));
    assert_true(layer.geometry.stride_h == 1 && layer.geometry.stride_w == 3);
    assert_true(layer.temperature == 0.25f);
    dcio_layer_free(&layer);
    /* without the prefix: the error names the prefix that holds a layer; out untouched */
    memset(&layer, 0xAB, sizeof layer);
    dcio_layer before;
    memcpy(&before, &layer, sizeof layer);
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "'conv.'"));
    assert_memory_equal(&layer, &before, sizeof layer);
    dcio_st_free(st);
    free(im.bytes);
}

static void layer_without_metadata_is_refused(void **state) {
    (void)state;
    /* A file saved from a bare state_dict: no key is guessed, every missing one is named. */
    image im = layer_image("", 0, NULL, NULL, 0);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    dcio_layer layer, before;
    memset(&layer, 0xCD, sizeof layer);
    memcpy(&before, &layer, sizeof layer);
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_memory_equal(&layer, &before, sizeof layer);
    assert_non_null(strstr(err.message, "'stride', 'padding', 'dilation', 'groups', "
                                        "'temperature'"));
    /* some given: only the others are named */
    dcio_layer_options o = {0};
    o.set_stride = o.set_groups = true;
    o.stride[0] = o.stride[1] = 1;
    o.groups = 2;
    assert_false(dcio_layer_load(st, &o, &layer, &err));
    assert_non_null(strstr(err.message, "no metadata 'padding', 'dilation', 'temperature'"));
    assert_null(strstr(err.message, "'stride'"));
    /* all given: loads */
    o.set_padding = o.set_dilation = o.set_temperature = true;
    o.padding[0] = 1;
    o.padding[1] = 0;
    o.dilation[0] = o.dilation[1] = 1;
    o.temperature = 2.0f;
    if (!dcio_layer_load(st, &o, &layer, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(layer.geometry.pad_h == 1 && layer.geometry.pad_w == 0 &&
                layer.geometry.groups == 2 && layer.temperature == 2.0f);
    dcio_layer_free(&layer);
    dcio_st_free(st);
    free(im.bytes);
}

static void linear_layer_from_shapes(void **state) {
    (void)state;
    /* weight [K, D_out, D_in] = [3, 4, 6], fc1 [hidden, D_in] = [2, 6] */
    const int64_t w3[] = {K, COUT, CIN}, fc1_2[] = {HID, CIN};
    static float wl[K * COUT * CIN];
    fill(wl, sizeof wl / sizeof *wl, -4.0f);
    const dcio_st_entry e[] = {{"fc.weight", 3, w3, wl},
                               {"fc.bias", 2, bias_shape, bias},
                               {"fc.attention.fc1.weight", 2, fc1_2, fc1},
                               {"fc.attention.fc2.weight", 2, fc2_shape, fc2},
                               {"fc.attention.fc2.bias", 1, fc2b_shape, fc2b}};
    const char *keys[] = {"fc.temperature", "fc.layer"}, *values[] = {"0.5", "linear"};
    image im = serialize(e, 5, keys, values, 2);
    dcio_safetensors *st = NULL;
    dcio_error err;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    dcio_layer layer;
    dcio_layer_options o = {0};
    o.prefix = "fc";
    if (!dcio_layer_load(st, &o, &layer, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(layer.linear);
    assert_int_equal(layer.linear_geometry.in_features, CIN);
    assert_int_equal(layer.linear_geometry.out_features, COUT);
    assert_int_equal(layer.linear_geometry.num_kernels, K);
    assert_int_equal(layer.linear_geometry.hidden, HID);
    assert_int_equal(layer.geometry.in_channels, 0);
    assert_true(layer.temperature == 0.5f);
    const dynconv_linear_weights w = dcio_layer_linear_weights(&layer);
    assert_memory_equal(w.weight, wl, sizeof wl);
    assert_memory_equal(w.fc2_bias, fc2b, sizeof fc2b);
    assert_null(w.fc1_bias);
    dcio_layer_free(&layer);
    /* a convolution's option does not apply */
    o.set_padding = true;
    assert_false(dcio_layer_load(st, &o, &layer, &err));
    assert_non_null(strstr(err.message, "linear layer"));
    dcio_st_free(st);
    free(im.bytes);

    /* no temperature: named; "layer" disagreeing with the weight's rank: refused */
    const char *k2[] = {"layer"}, *v2[] = {"conv2d"};
    const dcio_st_entry e2[] = {{"weight", 3, w3, wl},
                                {"attention.fc1.weight", 2, fc1_2, fc1},
                                {"attention.fc2.weight", 2, fc2_shape, fc2}};
    im = serialize(e2, 3, NULL, NULL, 0);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "no metadata 'temperature' for the linear layer"));
    dcio_st_free(st);
    free(im.bytes);
    im = serialize(e2, 3, k2, v2, 1);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "metadata 'layer' = \"conv2d\""));
    dcio_st_free(st);
    free(im.bytes);
    /* fc1 must take D_in inputs */
    const int64_t fc1_bad[] = {HID, CIN - 1};
    const dcio_st_entry e3[] = {{"weight", 3, w3, wl},
                                {"attention.fc1.weight", 2, fc1_bad, fc1},
                                {"attention.fc2.weight", 2, fc2_shape, fc2}};
    const char *k3[] = {"temperature"}, *v3[] = {"1"};
    im = serialize(e3, 3, k3, v3, 1);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "D_in = 5"));
    dcio_st_free(st);
    free(im.bytes);
}

static void layer_inconsistencies_are_named(void **state) {
    (void)state;
    const char *keys[] = {"groups", "stride", "padding", "dilation", "temperature"};
    const char *one[] = {"1", "1", "0", "1", "1"}, *bad[] = {"x", "1", "0", "1", "1"};
    image im = layer_image("", 0, keys, one, 5);
    dcio_safetensors *st = NULL;
    dcio_error err;
    dcio_layer layer;
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "set groups = 2"));
    dcio_st_free(st);
    free(im.bytes);

    im = layer_image("", 0, keys, bad, 5);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "'groups'"));
    dcio_st_free(st);
    free(im.bytes);

    /* groups is one integer: "2,2" (once taken as 2) is refused like any pair. */
    const char *pair[] = {"2,2", "1", "0", "1", "1"};
    im = layer_image("", 0, keys, pair, 5);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "metadata 'groups' = \"2,2\" is not an integer >= 1"));
    dcio_st_free(st);
    free(im.bytes);

    /* fc2 with the wrong hidden size */
    const int64_t fc2_bad[] = {K, HID + 1};
    float fc2_data[K * (HID + 1)] = {0};
    const dcio_st_entry e[] = {{"weight", 5, weight_shape, weight},
                               {"attention.fc1.weight", 4, fc1_shape4, fc1},
                               {"attention.fc2.weight", 2, fc2_bad, fc2_data}};
    const char *g2[] = {"2", "1", "0", "1", "1"};
    im = serialize(e, 3, keys, g2, 5);
    assert_true(dcio_st_parse(im.bytes, im.size, &st, &err));
    assert_false(dcio_layer_load(st, NULL, &layer, &err));
    assert_non_null(strstr(err.message, "'attention.fc2.weight' has hidden = 3"));
    assert_non_null(strstr(err.message, "'attention.fc1.weight'"));
    dcio_st_free(st);
    free(im.bytes);
}

static void parse_pair_and_temperature(void **state) {
    (void)state;
    int64_t v[2] = {-1, -1};
    assert_true(dcio_parse_pair("3", 1, v) && v[0] == 3 && v[1] == 3);
    assert_true(dcio_parse_pair("0,2", 0, v) && v[0] == 0 && v[1] == 2);
    const char *bad[] = {"", "0", "a", "1,", ",1", "1,2,3", "-1", "+1", " 1", "1 ",
                         "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        v[0] = v[1] = 77;
        assert_false(dcio_parse_pair(bad[i], 1, v));
        assert_true(v[0] == 77 && v[1] == 77);
    }
    float t = 0;
    assert_true(dcio_parse_temperature("0.5", &t) && t == 0.5f);
    assert_true(dcio_parse_temperature("1e-05", &t) && t == 1e-5f);
    assert_true(dcio_parse_temperature(".5", &t) && t == 0.5f);
    assert_true(dcio_parse_temperature("2.", &t) && t == 2.0f);
    assert_true(dcio_parse_temperature("1E+1", &t) && t == 10.0f);
    /* strtod would take the white space, the sign, hex and "infinity": the format does not. */
    const char *tbad[] = {"", "0", "-1", "nan", "inf", "1e39", "1e-50", "1x", " 1", "+1",
                          "0x1p3", "infinity", ".", "1e", "1e+", "1_0", "1.5 "};
    for (size_t i = 0; i < sizeof tbad / sizeof *tbad; ++i) {
        assert_false(dcio_parse_temperature(tbad[i], &t));
    }
}

/* ---- .npy --------------------------------------------------------------------------------- */

static void npy_header_round_trip_every_rank(void **state) {
    (void)state;
    const int64_t shape[DCIO_MAX_RANK] = {2, 1, 3, 1, 2, 1, 1, 2};
    for (int rank = 0; rank <= DCIO_MAX_RANK; ++rank) {
        size_t numel = 1;
        for (int i = 0; i < rank; ++i) {
            numel *= (size_t)shape[i];
        }
        char header[DCIO_NPY_MAX_HEADER];
        const size_t hlen = dcio_npy_header(shape, rank, header, sizeof header);
        assert_true(hlen > 0 && hlen % 64 == 0 && header[hlen - 1] == '\n');
        unsigned char *file = malloc(hlen + 4 * numel);
        assert_non_null(file);
        memcpy(file, header, hlen);
        float values[24];
        fill(values, numel, -3.0f);
        memcpy(file + hlen, values, 4 * numel);
        dcio_npy npy;
        dcio_error err;
        if (!dcio_npy_parse(file, hlen + 4 * numel, &npy, &err)) {
            fail_msg("rank %d: %s", rank, err.message);
        }
        assert_int_equal(npy.rank, rank);
        assert_memory_equal(npy.shape, shape, (size_t)rank * sizeof *shape);
        assert_int_equal(npy.numel, numel);
        float got[24];
        dcio_npy_to_f32(&npy, got);
        assert_memory_equal(got, values, 4 * numel);
        /* every truncation fails, into an exactly sized buffer */
        for (size_t len = 0; len < hlen + 4 * numel; ++len) {
            unsigned char *cut = malloc(len > 0 ? len : 1);
            assert_non_null(cut);
            memcpy(cut, file, len);
            assert_false(dcio_npy_parse(cut, len, &npy, &err));
            free(cut);
        }
        free(file);
    }
}

static void expect_npy(const char *dict, int major, bool ok, const char *phrase) {
    unsigned char file[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    const size_t n = strlen(dict), start = major == 1 ? 10 : 12;
    file[8] = (unsigned char)n;
    memcpy(file + start, dict, n);
    /* data: one float (shape (1,) in the good cases) */
    const size_t total = start + n + 4;
    dcio_npy npy;
    dcio_error err = {""};
    const bool got = dcio_npy_parse(file, total, &npy, &err);
    if (got != ok || (!ok && strstr(err.message, phrase) == NULL)) {
        fail_msg("%s: expected %s '%s', got %s '%s'", dict, ok ? "success" : "error", phrase,
                 got ? "success" : "error", err.message);
    }
}

static void npy_headers_as_numpy_writes_them_and_not(void **state) {
    (void)state;
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 1, true, "");
    expect_npy("{\"shape\": (1,), \"fortran_order\": False, \"descr\": \"<f4\"}", 2, true, "");
    expect_npy("{'descr':'<f4','fortran_order':False,'shape':(1, )}", 1, true, "");
    expect_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 1, false, "'<f8'");
    expect_npy("{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }", 1, false, "'|u1'");
    expect_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", 1, false,
               "Fortran");
    expect_npy("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }", 1, false, "neither");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,,), }", 1, false, "shape");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 1, false, "shape");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}", 1, false,
               "'x'");
    expect_npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", 1,
               false, "repeated");
    expect_npy("{'descr': '<f4', 'fortran_order': False}", 1, false, "lacks 'shape'");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", 1, false,
               "after the header");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, false,
               "truncated");
    expect_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 3, false,
               "version 3.0");
}

/* ---- output files ------------------------------------------------------------------------- */

static void pending_outputs_appear_only_on_commit(void **state) {
    (void)state;
    char dir[] = "/tmp/dcio-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/out.npy", dir);
    const int64_t shape[] = {2};
    const float data[] = {1.5f, -2.0f};
    dcio_pending p = {NULL, NULL};
    dcio_error err;
    assert_true(dcio_npy_write_pending(path, shape, 1, data, &p, &err));
    assert_int_not_equal(access(path, F_OK), 0); /* not there before commit */
    assert_true(dcio_pending_commit(&p, &err));
    dcio_pending_discard(&p);
    unsigned char *bytes = NULL;
    size_t size = 0;
    assert_true(dcio_read_file(path, 1 << 20, &bytes, &size, &err));
    dcio_npy npy;
    assert_true(dcio_npy_parse(bytes, size, &npy, &err));
    float got[2];
    dcio_npy_to_f32(&npy, got);
    assert_memory_equal(got, data, sizeof data);
    free(bytes);
    /* a discarded output leaves nothing behind and keeps the committed file */
    const float other[] = {7.0f, 8.0f};
    assert_true(dcio_npy_write_pending(path, shape, 1, other, &p, &err));
    char temp[64];
    snprintf(temp, sizeof temp, "%s", p.temp_path);
    dcio_pending_discard(&p);
    assert_int_not_equal(access(temp, F_OK), 0);
    assert_true(dcio_read_file(path, 1 << 20, &bytes, &size, &err));
    assert_true(dcio_npy_parse(bytes, size, &npy, &err));
    dcio_npy_to_f32(&npy, got);
    assert_memory_equal(got, data, sizeof data);
    free(bytes);
    /* size limit and a directory that does not exist */
    assert_false(dcio_read_file(path, 8, &bytes, &size, &err));
    assert_non_null(strstr(err.message, "exceeds the limit"));
    snprintf(path, sizeof path, "%s/missing/out.npy", dir);
    assert_false(dcio_npy_write_pending(path, shape, 1, data, &p, &err));
    assert_non_null(strstr(err.message, "missing/out.npy"));
    snprintf(path, sizeof path, "%s/out.npy", dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

/* OpenBLAS's core is replaced only when it is a generic fallback and the CPU can run better. */
static void blas_core_advice(void **state) {
    (void)state;
    dcio_cpu sse = {0}, avx2 = {0}, avx512 = {0}, avx512f_only = {0};
    sse.sse42 = true;
    avx2 = sse;
    avx2.avx = avx2.avx2 = avx2.fma = true;
    avx512 = avx2;
    avx512.avx512f = avx512.avx512_skylakex = true;
    avx512f_only = avx2;
    avx512f_only.avx512f = true; /* without BW/VL/DQ: SkylakeX's kernels would not run */
    static const struct {
        const char *name, *core;
        int cpu; /* 0 sse, 1 avx2, 2 avx512, 3 avx512f only */
        const char *want;
    } cases[] = {
        {"prescott_on_avx512", "Prescott", 2, "SkylakeX"},
        {"prescott_on_avx2", "Prescott", 1, "Haswell"},
        {"lower_case_name", "prescott", 1, "Haswell"},
        {"core2_on_avx2", "Core2", 1, "Haswell"},
        {"sandybridge_on_avx512", "Sandybridge", 2, "SkylakeX"},
        {"prescott_on_avx512f_only", "Prescott", 3, "Haswell"},
        {"prescott_on_sse_cpu", "Prescott", 0, NULL},
        {"zen_recognised", "Zen", 1, NULL},
        {"haswell_on_avx512_kept", "Haswell", 2, NULL},
        {"cooperlake_recognised", "Cooperlake", 2, NULL},
        {"skylakex_recognised", "SkylakeX", 2, NULL},
        {"prefix_is_not_a_match", "Prescott2", 1, NULL},
    };
    const dcio_cpu *cpus[] = {&sse, &avx2, &avx512, &avx512f_only};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        const char *got = dcio_blas_better_core(cases[i].core, cpus[cases[i].cpu]);
        if ((got == NULL) != (cases[i].want == NULL) ||
            (got != NULL && strcmp(got, cases[i].want) != 0)) {
            fail_msg("%s: got %s, expected %s", cases[i].name, got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
        }
    }
    dcio_cpu here;
    dcio_cpu_detect(&here);
    assert_true(here.model[0] != '\0');
    assert_true(!here.avx512_skylakex || here.avx512f);
}

/* ---- the benchmark workload ----------------------------------------------------------------- */

#define MALFORMED                                                                               \
    "expected 'name in out kernel stride pad groups size' with positive sizes (channels <= "   \
    "65536, kernel/stride/pad <= 15, size <= 4096), groups dividing both channel counts and "  \
    "the kernel fitting the padded input"

/* A text of `n` bytes: `head`, then `pad` spaces, then `tail` (for lines of a given length). */
static char *padded_text(const char *head, size_t pad, const char *tail, size_t *n) {
    const size_t a = strlen(head), c = strlen(tail);
    char *t = malloc(a + pad + c + 1);
    assert_non_null(t);
    memcpy(t, head, a);
    memset(t + a, ' ', pad);
    memcpy(t + a + pad, tail, c + 1);
    *n = a + pad + c;
    return t;
}

/* Every line of the grammar (bench/layers.txt), accepted or refused with the exact message;
 * a refused text leaves the outputs as they were. */
static void workload_lines(void **state) {
    (void)state;
    static const struct {
        const char *name;
        const char *text;
        size_t size;         /* 0: strlen(text) */
        long layers;         /* layers read, or -1 when refused */
        const char *message; /* the whole message when refused */
    } cases[] = {
        {"plain", "a 4 4 3 1 1 1 5\n", 0, 1, NULL},
        {"no_final_newline", "a 4 4 3 1 1 1 5", 0, 1, NULL},
        {"comments_and_blanks",
         "# name in out ...\n\n  \t\na 4 8 3 2 1 1 7   # comment\nb 8 8 3 1 1 8 6", 0, 2, NULL},
        {"comment_right_after_a_number", "a 4 4 3 1 1 1 5#x\n", 0, 1, NULL},
        {"crlf", "a 4 4 3 1 1 1 5\r\nb 4 4 1 1 0 1 3\r\n", 0, 2, NULL},
        {"tabs_vt_ff_and_signs", "a\t+4\v4\f3 1 -0 1 05\n", 0, 1, NULL},
        {"largest_sizes", "big 65536 65536 15 15 15 65536 4096\n", 0, 1, NULL},
        {"kernel_just_fits", "a 4 4 5 1 1 1 3\n", 0, 1, NULL},
        {"name_63", "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn 4 4 3 1 1 1 5",
         0, 1, NULL},
        {"empty", "", 0, -1, "t lists no layers"},
        {"only_comments", "# nothing\n\n   \n", 0, -1, "t lists no layers"},
        {"seven_fields", "a 4 4 3 1 1 1\n", 0, -1, "t:1: " MALFORMED},
        {"nine_fields", "a 4 4 3 1 1 1 5 6\n", 0, -1, "t:1: " MALFORMED},
        {"name_only", "a\n", 0, -1, "t:1: " MALFORMED},
        {"hash_in_name_cuts_the_line", "a#b 4 4 3 1 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"not_an_integer", "a 4 4 3 1 1 1 5.5\n", 0, -1, "t:1: " MALFORMED},
        {"hex", "a 4 4 3 1 1 1 0x5\n", 0, -1, "t:1: " MALFORMED},
        {"trailing_letter", "a 4 4 3 1 1 1 5x\n", 0, -1, "t:1: " MALFORMED},
        {"sign_alone", "a 4 4 3 1 + 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"two_signs", "a 4 4 3 1 +-1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"overflowing_digits", "a 4 4 3 1 1 1 99999999999999999999999\n", 0, -1,
         "t:1: " MALFORMED},
        {"overflowing_negative", "a -99999999999999999999999 4 3 1 1 1 5\n", 0, -1,
         "t:1: " MALFORMED},
        {"zero_channels", "a 0 4 3 1 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"channels_65537", "a 65537 4 3 1 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"zero_out", "a 4 0 3 1 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"zero_kernel", "a 4 4 0 1 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"kernel_16", "a 4 4 16 1 1 1 50\n", 0, -1, "t:1: " MALFORMED},
        {"zero_stride", "a 4 4 3 0 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"stride_16", "a 4 4 3 16 1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"negative_pad", "a 4 4 3 1 -1 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"pad_16", "a 4 4 3 1 16 1 5\n", 0, -1, "t:1: " MALFORMED},
        {"zero_groups", "a 4 4 3 1 1 0 5\n", 0, -1, "t:1: " MALFORMED},
        {"groups_not_dividing_out", "a 4 6 3 1 1 4 5\n", 0, -1, "t:1: " MALFORMED},
        {"groups_not_dividing_in", "a 6 4 3 1 1 4 5\n", 0, -1, "t:1: " MALFORMED},
        {"zero_size", "a 4 4 1 1 0 1 0\n", 0, -1, "t:1: " MALFORMED},
        {"size_4097", "a 4 4 3 1 1 1 4097\n", 0, -1, "t:1: " MALFORMED},
        {"kernel_beyond_input", "a 4 4 5 1 0 1 3\n", 0, -1, "t:1: " MALFORMED},
        {"name_64",
         "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn 4 4 3 1 1 1 5\n", 0,
         -1, "t:1: " MALFORMED},
        {"line_number_counts_every_line", "# c\n\na 4 4 3 1 1 1 5\nb 4 4 3 1 1 1\n", 0, -1,
         "t:4: " MALFORMED},
        {"nul_byte", "a 4 4 3 1 1 1 5\nb 4\0004 3 1 1 1 5\n", 32, -1,
         "t:2: not a text line (contains NUL bytes)"},
        {"nul_in_a_comment", "a 4 4 3 1 1 1 5 # \000\n", 20, -1,
         "t:1: not a text line (contains NUL bytes)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        const size_t size = cases[i].size != 0 ? cases[i].size : strlen(cases[i].text);
        dcio_workload_layer sentinel, *layers = &sentinel;
        size_t count = 12345;
        dcio_error err;
        memset(&err, 0, sizeof err);
        const bool ok = dcio_workload_parse(cases[i].text, size, "t", &layers, &count, &err);
        if (cases[i].layers >= 0) {
            if (!ok || count != (size_t)cases[i].layers) {
                fail_msg("%s: expected %ld layers, got %s (%s)", cases[i].name, cases[i].layers,
                         ok ? "others" : "an error", err.message);
            }
            free(layers);
        } else {
            if (ok || strcmp(err.message, cases[i].message) != 0) {
                fail_msg("%s: expected '%s', got %s '%s'", cases[i].name, cases[i].message,
                         ok ? "success" : "", err.message);
            }
            assert_ptr_equal(layers, &sentinel);
            assert_int_equal(count, 12345);
        }
    }
}

/* The fields land where they belong; lines as long as the grammar allows, and one more. */
static void workload_values_and_line_length(void **state) {
    (void)state;
    dcio_workload_layer *l = NULL;
    size_t n = 0;
    dcio_error err;
    const char *text = "x1\t+64 128 3 2 1 2 56 # a comment\ndw 144 144 3 1 1 144 7\n";
    assert_true(dcio_workload_parse(text, strlen(text), "t", &l, &n, &err));
    assert_int_equal(n, 2);
    assert_string_equal(l[0].name, "x1");
    assert_int_equal(l[0].in, 64);
    assert_int_equal(l[0].out, 128);
    assert_int_equal(l[0].kernel, 3);
    assert_int_equal(l[0].stride, 2);
    assert_int_equal(l[0].pad, 1);
    assert_int_equal(l[0].groups, 2);
    assert_int_equal(l[0].size, 56);
    assert_string_equal(l[1].name, "dw");
    assert_int_equal(l[1].groups, 144);
    /* As the benchmarks build it: hidden = in / 4, at least 1; square; dilation 1. */
    const dynconv_conv2d_geometry g = dcio_workload_geometry(&l[0], 4);
    const dynconv_conv2d_geometry want = {64, 128, 3, 3, 2, 2, 1, 1, 1, 1, 2, 4, 16};
    assert_memory_equal(&g, &want, sizeof g);
    dcio_workload_layer tiny = l[1];
    tiny.in = 3;
    assert_int_equal(dcio_workload_geometry(&tiny, 1).hidden, 1);
    assert_int_equal(dcio_workload_geometry(&tiny, 1).num_kernels, 1);
    free(l);
    /* 510 bytes before the newline (the '\r' of a CRLF line counts) pass, 511 do not. */
    static const char *const ends[] = {"\n", "", "\r\n"};
    for (size_t e = 0; e < 3; ++e) {
        const size_t cr = e == 2 ? 1 : 0;
        for (size_t len = 509; len <= 512; ++len) {
            size_t size;
            char *t = padded_text("a 4 4 3 1 1 1 5", len - 15 - cr, ends[e], &size);
            l = NULL;
            const bool ok = dcio_workload_parse(t, size, "t", &l, &n, &err);
            if (ok != (len <= 510) || (!ok && strcmp(err.message, "t:1: line too long") != 0)) {
                fail_msg("line of %zu bytes, end %zu: %s (%s)", len, e, ok ? "read" : "refused",
                         err.message);
            }
            free(l);
            free(t);
        }
    }
    /* The second line too long: the message names it. */
    size_t size;
    char *t = padded_text("a 4 4 3 1 1 1 5\n", 600, "b", &size);
    assert_false(dcio_workload_parse(t, size, "f.txt", &l, &n, &err));
    assert_string_equal(err.message, "f.txt:2: line too long");
    free(t);
}

/* Every prefix of a valid text parses or fails cleanly (ASan in the sanitizer build watches
 * the reads), and the parse never reads past `size`: the text is not NUL-terminated. */
static void workload_every_truncation(void **state) {
    (void)state;
    const char text[] = "# head\nr18 64 64 3 1 1 1 56  # c\n\tdw 8 8 3 2 1 8 7\r\n";
    const size_t len = sizeof text - 1;
    for (size_t n = 0; n <= len; ++n) {
        char *copy = malloc(n > 0 ? n : 1);
        assert_non_null(copy);
        memcpy(copy, text, n);
        dcio_workload_layer *l = NULL;
        size_t count = 0;
        dcio_error err;
        if (dcio_workload_parse(copy, n, "t", &l, &count, &err)) {
            assert_true(count == 1 || count == 2);
            free(l);
        } else {
            assert_true(strncmp(err.message, "t", 1) == 0);
        }
        free(copy);
    }
}

/* The shipped workload reads (as `dynconv bench` and dynconv-bench read it); a missing file is
 * named. */
static void workload_file(void **state) {
    (void)state;
    dcio_workload_layer *l = NULL;
    size_t n = 0;
    dcio_error err;
    if (!dcio_workload_read(DYNCONV_WORKLOAD_FILE, &l, &n, &err)) {
        fail_msg("%s", err.message);
    }
    assert_true(n >= 2);
    assert_string_equal(l[0].name, "r18_3x3_64_56");
    free(l);
    l = NULL;
    assert_false(dcio_workload_read("/nonexistent/layers.txt", &l, &n, &err));
    assert_null(l);
    assert_non_null(strstr(err.message, "/nonexistent/layers.txt: cannot open"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(safetensors_round_trip),
        cmocka_unit_test(safetensors_every_truncation_fails),
        cmocka_unit_test(safetensors_corrupted_headers),
        cmocka_unit_test(safetensors_converts_f16_bf16_f64_exactly),
        cmocka_unit_test(safetensors_refuses_what_it_cannot_convert),
        cmocka_unit_test(safetensors_malformed_headers),
        cmocka_unit_test(layer_from_shapes_and_metadata),
        cmocka_unit_test(layer_prefix_and_overrides),
        cmocka_unit_test(layer_without_metadata_is_refused),
        cmocka_unit_test(linear_layer_from_shapes),
        cmocka_unit_test(layer_inconsistencies_are_named),
        cmocka_unit_test(parse_pair_and_temperature),
        cmocka_unit_test(npy_header_round_trip_every_rank),
        cmocka_unit_test(npy_headers_as_numpy_writes_them_and_not),
        cmocka_unit_test(pending_outputs_appear_only_on_commit),
        cmocka_unit_test(blas_core_advice),
        cmocka_unit_test(workload_lines),
        cmocka_unit_test(workload_values_and_line_length),
        cmocka_unit_test(workload_every_truncation),
        cmocka_unit_test(workload_file),
    };
    return cmocka_run_group_tests(tests, setup_layer, NULL);
}
