/* The network functions' argument and state checks (a table of named cases, each checking the
 * status, the message and that no output was written), a failed reshape keeping the shape in
 * force, temperatures, attention and threads through the network, and forward's promise to
 * allocate nothing (the golden networks under the allocation counter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

#include "alloc_count.h"
#include "netfile.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------------------- */
/* Argument and state checks                                                                */
/* ---------------------------------------------------------------------------------------- */

/* What the error cases work on: a dynamic network (its dynamic layer is "conv"), unshaped and
 * shaped, and a network whose 3x3 kernel has no padding. */
typedef struct api_ctx {
    unsigned char *bytes, *nopad_bytes;
    size_t size, nopad_size;
    dynconv_network *fresh, *shaped, *nopad;
    float *x, *y;
    size_t x_count, y_count;
} api_ctx;

static api_ctx ctx;
/* A dynamic layer with its batch norm and ReLU6 (folded into one node "conv"). */
static const fold_case API_CASE_DATA = {"dynamic3x3_bias_bn_relu6", true, true, 3, 6, 3, 1, 1, 1, 4, 3,
                                        "relu6", 3, 6, 7};
static const fold_case *API_CASE = &API_CASE_DATA;
static const fold_case NOPAD_CASE = {"nopad", false, true, 3, 4, 3, 1, 0, 1, 1, 0, NULL, 1, 5, 5};
static fold_net api_net, nopad_net;

static int api_setup(void **state) {
    (void)state;
    ctx.bytes = build_fold(API_CASE, &api_net, &ctx.size);
    ctx.nopad_bytes = build_fold(&NOPAD_CASE, &nopad_net, &ctx.nopad_size);
    if (dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &ctx.fresh) != DYNCONV_OK ||
        dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &ctx.shaped) != DYNCONV_OK ||
        dynconv_network_create_from_memory(ctx.nopad_bytes, ctx.nopad_size, 0, &ctx.nopad) !=
            DYNCONV_OK ||
        dynconv_network_reshape(ctx.shaped, API_CASE->n, API_CASE->h, API_CASE->w, NULL) !=
            DYNCONV_OK) {
        return -1;
    }
    ctx.x_count = (size_t)(API_CASE->n * API_CASE->cin * API_CASE->h * API_CASE->w);
    ctx.y_count = (size_t)(API_CASE->n * API_CASE->cout * API_CASE->h * API_CASE->w);
    ctx.x = tu_alloc((ctx.x_count + ctx.y_count) * sizeof(float));
    ctx.y = tu_alloc(ctx.y_count * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    tu_fill_uniform(&rng, ctx.x, ctx.x_count, -1.0f, 1.0f);
    return 0;
}

static int api_teardown(void **state) {
    (void)state;
    dynconv_network_destroy(ctx.fresh);
    dynconv_network_destroy(ctx.shaped);
    dynconv_network_destroy(ctx.nopad);
    free(ctx.bytes);
    free(ctx.nopad_bytes);
    free(ctx.x);
    free(ctx.y);
    st_free(&api_net.file);
    st_free(&nopad_net.file);
    return 0;
}

static dynconv_network *sentinel_net(void) { return (dynconv_network *)(uintptr_t)0x10; }

static dynconv_status c_file_null_path(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_file(NULL, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_file_null_out(void) {
    return dynconv_network_create_from_file("x.safetensors", 0, NULL);
}
static dynconv_status c_file_missing(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st =
        dynconv_network_create_from_file("/nonexistent/net.safetensors", 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_file_is_directory(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_file("/", 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_memory_null_data(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(NULL, 10, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_memory_null_out(void) {
    return dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, NULL);
}
static dynconv_status c_memory_empty(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, 0, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_unknown_flag_bit1(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, ctx.size, 2u, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_unknown_flag_bit31(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, ctx.size,
                                                                 1u << 31, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_reshape_null(void) {
    return dynconv_network_reshape(NULL, 1, 8, 8, NULL);
}
static dynconv_status c_reshape_batch_zero(void) {
    return dynconv_network_reshape(ctx.fresh, 0, 8, 8, NULL);
}
static dynconv_status c_reshape_height_negative(void) {
    return dynconv_network_reshape(ctx.fresh, 1, -3, 8, NULL);
}
static dynconv_status c_reshape_width_int64_min(void) {
    return dynconv_network_reshape(ctx.fresh, 1, 8, INT64_MIN, NULL);
}
static dynconv_status c_reshape_kernel_too_large(void) {
    return dynconv_network_reshape(ctx.nopad, 1, 2, 5, NULL);
}
static dynconv_status c_forward_before_reshape(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(ctx.fresh, ctx.x, outs);
}
static dynconv_status c_forward_null_network(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(NULL, ctx.x, outs);
}
static dynconv_status c_forward_null_input(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(ctx.shaped, NULL, outs);
}
static dynconv_status c_forward_null_outputs(void) {
    return dynconv_network_forward(ctx.shaped, ctx.x, NULL);
}
static dynconv_status c_forward_null_output0(void) {
    float *const outs[1] = {NULL};
    return dynconv_network_forward(ctx.shaped, ctx.x, outs);
}
static dynconv_status c_forward_output_overlaps_input(void) {
    float *const outs[1] = {ctx.x + ctx.x_count - 1};
    return dynconv_network_forward(ctx.shaped, ctx.x, outs);
}
static dynconv_status c_output_shape_before_reshape(void) {
    int64_t s[4];
    int r;
    return dynconv_network_get_output_shape(ctx.fresh, 0, s, &r);
}
static dynconv_status c_output_shape_bad_index(void) {
    int64_t s[4];
    int r;
    return dynconv_network_get_output_shape(ctx.shaped, 1, s, &r);
}
static dynconv_status c_output_shape_null_rank(void) {
    int64_t s[4];
    return dynconv_network_get_output_shape(ctx.shaped, 0, s, NULL);
}
static dynconv_status c_node_info_negative(void) {
    dynconv_network_node_info i;
    return dynconv_network_get_node_info(ctx.fresh, -1, &i);
}
static dynconv_status c_node_info_past_end(void) {
    dynconv_network_node_info i;
    return dynconv_network_get_node_info(ctx.fresh, 1, &i);
}
static dynconv_status c_node_info_null(void) {
    return dynconv_network_get_node_info(ctx.fresh, 0, NULL);
}
static dynconv_status c_num_nodes_null(void) { return dynconv_network_get_num_nodes(NULL, NULL); }
static dynconv_status c_channels_null(void) {
    return dynconv_network_get_input_channels(ctx.fresh, NULL);
}
static dynconv_status c_outputs_null(void) {
    return dynconv_network_get_num_outputs(NULL, NULL);
}
static dynconv_status c_temperature_unknown_name(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv2", 1.0f);
}
static dynconv_status c_temperature_not_dynamic(void) {
    return dynconv_network_set_temperature(ctx.nopad, "conv", 1.0f);
}
static dynconv_status c_temperature_none_dynamic(void) {
    return dynconv_network_set_temperature(ctx.nopad, NULL, 1.0f);
}
static dynconv_status c_temperature_zero(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv", 0.0f);
}
static dynconv_status c_temperature_nan(void) {
    return dynconv_network_set_temperature(ctx.fresh, NULL, NAN);
}
static dynconv_status c_temperature_inf(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv", INFINITY);
}
static dynconv_status c_get_temperature_null(void) {
    return dynconv_network_get_temperature(ctx.fresh, "conv", NULL);
}
static dynconv_status c_get_temperature_unknown(void) {
    float t;
    return dynconv_network_get_temperature(ctx.fresh, "bn", &t);
}
static dynconv_status c_attention_before_forward(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv", a, 64);
}
static dynconv_status c_attention_null_name(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, NULL, a, 64);
}
static dynconv_status c_attention_capacity_short(void) {
    static float y[1024];
    assert_true(ctx.y_count <= 1024);
    float *const outs[1] = {y};
    assert_int_equal(dynconv_network_forward(ctx.shaped, ctx.x, outs), DYNCONV_OK);
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv",
                                         a, API_CASE->n * API_CASE->kernels - 1);
}
static dynconv_status c_attention_capacity_negative(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv", a, -1);
}
static dynconv_status c_threads_negative(void) {
    return dynconv_network_set_num_threads(ctx.fresh, -1);
}
static dynconv_status c_threads_too_many(void) {
    return dynconv_network_set_num_threads(ctx.fresh, DYNCONV_MAX_THREADS + 1);
}
static dynconv_status c_threads_null(void) { return dynconv_network_set_num_threads(NULL, 1); }
static dynconv_status c_get_threads_null(void) {
    return dynconv_network_get_num_threads(ctx.fresh, NULL);
}
static dynconv_status c_threadpool_null_network(void) {
    return dynconv_network_set_threadpool(NULL, NULL);
}

typedef struct api_case {
    const char *name;
    dynconv_status (*call)(void);
    dynconv_status expected;
    const char *message;      /* a part of the message */
} api_case;

static const api_case API_CASES[] = {
    {"create_from_file_null_path", c_file_null_path, DYNCONV_ERROR_NULL_POINTER,
     "dynconv_network_create_from_file: path is NULL"},
    {"create_from_file_null_out", c_file_null_out, DYNCONV_ERROR_NULL_POINTER, "out is NULL"},
    {"create_from_file_missing", c_file_missing, DYNCONV_ERROR_INVALID_ARGUMENT,
     "cannot open '/nonexistent/net.safetensors': No such file or directory"},
    {"create_from_file_directory", c_file_is_directory, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'/'"},
    {"create_from_memory_null_data", c_memory_null_data, DYNCONV_ERROR_NULL_POINTER,
     "dynconv_network_create_from_memory: data is NULL"},
    {"create_from_memory_null_out", c_memory_null_out, DYNCONV_ERROR_NULL_POINTER,
     "out is NULL"},
    {"create_from_memory_empty", c_memory_empty, DYNCONV_ERROR_INVALID_MODEL,
     "<memory>: too short"},
    {"create_unknown_flag_bit1", c_unknown_flag_bit1, DYNCONV_ERROR_UNSUPPORTED,
     "unknown flags 0x2"},
    {"create_unknown_flag_bit31", c_unknown_flag_bit31, DYNCONV_ERROR_UNSUPPORTED,
     "unknown flags 0x80000000"},
    {"reshape_null_network", c_reshape_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"reshape_batch_zero", c_reshape_batch_zero, DYNCONV_ERROR_INVALID_ARGUMENT,
     "batch must be > 0, got 0"},
    {"reshape_height_negative", c_reshape_height_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "height must be > 0"},
    {"reshape_width_int64_min", c_reshape_width_int64_min, DYNCONV_ERROR_INVALID_ARGUMENT,
     "width must be > 0"},
    {"reshape_kernel_larger_than_input", c_reshape_kernel_too_large,
     DYNCONV_ERROR_INVALID_SHAPE, "node 'conv' (conv2d): the kernel 3 x 3"},
    {"forward_before_reshape", c_forward_before_reshape, DYNCONV_ERROR_INVALID_STATE,
     "call reshape first"},
    {"forward_null_network", c_forward_null_network, DYNCONV_ERROR_NULL_POINTER,
     "network is NULL"},
    {"forward_null_input", c_forward_null_input, DYNCONV_ERROR_NULL_POINTER, "input is NULL"},
    {"forward_null_outputs", c_forward_null_outputs, DYNCONV_ERROR_NULL_POINTER,
     "outputs is NULL"},
    {"forward_null_output0", c_forward_null_output0, DYNCONV_ERROR_NULL_POINTER,
     "outputs[0] is NULL"},
    {"forward_output_overlaps_input", c_forward_output_overlaps_input,
     DYNCONV_ERROR_INVALID_ARGUMENT, "outputs[0] overlaps input"},
    {"output_shape_before_reshape", c_output_shape_before_reshape, DYNCONV_ERROR_INVALID_STATE,
     "call reshape first"},
    {"output_shape_bad_index", c_output_shape_bad_index, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index 1 is outside the 1 outputs"},
    {"output_shape_null_rank", c_output_shape_null_rank, DYNCONV_ERROR_NULL_POINTER,
     "rank is NULL"},
    {"node_info_negative_index", c_node_info_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index -1 is outside the 1 nodes"},
    {"node_info_past_end", c_node_info_past_end, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index 1 is outside"},
    {"node_info_null_info", c_node_info_null, DYNCONV_ERROR_NULL_POINTER, "info is NULL"},
    {"num_nodes_null", c_num_nodes_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"input_channels_null", c_channels_null, DYNCONV_ERROR_NULL_POINTER, "channels is NULL"},
    {"num_outputs_null", c_outputs_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"set_temperature_unknown_name", c_temperature_unknown_name,
     DYNCONV_ERROR_INVALID_ARGUMENT, "'conv2' is not a dynamic layer"},
    {"set_temperature_static_layer", c_temperature_not_dynamic, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'conv' is not a dynamic layer"},
    {"set_temperature_no_dynamic_layer", c_temperature_none_dynamic,
     DYNCONV_ERROR_INVALID_ARGUMENT, "has no dynamic layer"},
    {"set_temperature_zero", c_temperature_zero, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be a finite number > 0"},
    {"set_temperature_nan_all", c_temperature_nan, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be a finite number > 0"},
    {"set_temperature_inf", c_temperature_inf, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be"},
    {"get_temperature_null", c_get_temperature_null, DYNCONV_ERROR_NULL_POINTER,
     "temperature is NULL"},
    {"get_temperature_folded_name", c_get_temperature_unknown, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'bn' is not a dynamic layer"},
    {"attention_before_forward", c_attention_before_forward, DYNCONV_ERROR_INVALID_STATE,
     "no forward since the last reshape"},
    {"attention_null_name", c_attention_null_name, DYNCONV_ERROR_NULL_POINTER, "name is NULL"},
    {"attention_capacity_too_small", c_attention_capacity_short,
     DYNCONV_ERROR_INVALID_ARGUMENT, "capacity 11 is below the 12 floats"},
    {"attention_capacity_negative", c_attention_capacity_negative,
     DYNCONV_ERROR_INVALID_ARGUMENT, "capacity -1"},
    {"set_num_threads_negative", c_threads_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "threads must be in [0, 1024]"},
    {"set_num_threads_too_many", c_threads_too_many, DYNCONV_ERROR_INVALID_ARGUMENT,
     "got 1025"},
    {"set_num_threads_null", c_threads_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"get_num_threads_null", c_get_threads_null, DYNCONV_ERROR_NULL_POINTER,
     "threads is NULL"},
    {"set_threadpool_null_network", c_threadpool_null_network, DYNCONV_ERROR_NULL_POINTER,
     "network is NULL"},
};

static void api_errors(void **state) {
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof API_CASES / sizeof API_CASES[0]; ++i) {
        const api_case *c = &API_CASES[i];
        for (size_t j = 0; j < ctx.y_count; ++j) {
            ctx.y[j] = -12345.0f;
        }
        const dynconv_status st = c->call();
        const char *msg = dynconv_last_error_message();
        bool untouched = true;
        for (size_t j = 0; j < ctx.y_count; ++j) {
            untouched = untouched && ctx.y[j] == -12345.0f;
        }
        if (st != c->expected || strstr(msg, c->message) == NULL || !untouched) {
            print_message("  %s: %s \"%s\" (expected %s and \"%s\")%s\n", c->name,
                          dynconv_status_string(st), msg, dynconv_status_string(c->expected),
                          c->message, untouched ? "" : "; the output was written");
            ++failures;
        }
    }
    assert_int_equal(failures, 0);
    dynconv_network_destroy(NULL);
    assert_string_equal(dynconv_status_string(DYNCONV_ERROR_INVALID_MODEL), "invalid model");
    assert_int_equal(DYNCONV_ERROR_INVALID_MODEL, 10); /* ABI value */
}

/* A failed reshape keeps the previous shape: forward still runs it, with the same result. */
static void failed_reshape_keeps_shape(void **state) {
    (void)state;
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(ctx.nopad_bytes, ctx.nopad_size, 0, &net),
                     DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, 1, 5, 5, NULL), DYNCONV_OK);
    float x[75], a[36], b[36];
    for (int i = 0; i < 75; ++i) {
        x[i] = (float)((i * 37) % 11) - 5.0f;
    }
    float *const oa[1] = {a}, *const ob[1] = {b};
    assert_int_equal(dynconv_network_forward(net, x, oa), DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, 4, 2, 2, NULL), DYNCONV_ERROR_INVALID_SHAPE);
    int64_t shape[4];
    int rank;
    assert_int_equal(dynconv_network_get_output_shape(net, 0, shape, &rank), DYNCONV_OK);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[2], 3);
    assert_int_equal(dynconv_network_forward(net, x, ob), DYNCONV_OK);
    assert_memory_equal(a, b, 4 * 9 * sizeof(float));
    dynconv_network_destroy(net);
}

/* Temperature, attention and threads through the network. */
static void dynamic_controls(void **state) {
    (void)state;
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &net),
                     DYNCONV_OK);
    float t = 0.0f;
    assert_int_equal(dynconv_network_get_temperature(net, NULL, &t), DYNCONV_OK);
    assert_true(t == 1.7f);
    assert_int_equal(dynconv_network_set_temperature(net, "conv", 0.5f), DYNCONV_OK);
    assert_int_equal(dynconv_network_get_temperature(net, "conv", &t), DYNCONV_OK);
    assert_true(t == 0.5f);
    assert_int_equal(dynconv_network_reshape(net, API_CASE->n, API_CASE->h, API_CASE->w, NULL),
                     DYNCONV_OK);
    float *y1 = tu_alloc(ctx.y_count * sizeof(float)), *y2 = tu_alloc(ctx.y_count * sizeof(float));
    float *const o1[1] = {y1}, *const o2[1] = {y2};
    assert_int_equal(dynconv_network_set_num_threads(net, 1), DYNCONV_OK);
    int threads = 0;
    assert_int_equal(dynconv_network_get_num_threads(net, &threads), DYNCONV_OK);
    assert_int_equal(threads, 1);
    assert_int_equal(dynconv_network_forward(net, ctx.x, o1), DYNCONV_OK);
    float att[64];
    assert_int_equal(dynconv_network_get_attention(net, "conv", att, 64), DYNCONV_OK);
    for (int64_t s = 0; s < API_CASE->n; ++s) {
        double sum = 0.0;
        for (int64_t k = 0; k < API_CASE->kernels; ++k) {
            assert_true(att[s * API_CASE->kernels + k] >= 0.0f);
            sum += att[s * API_CASE->kernels + k];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_network_set_threadpool(net, pool), DYNCONV_OK);
    dynconv_threadpool_destroy(pool); /* the network keeps its reference */
    assert_int_equal(dynconv_network_set_num_threads(net, 0), DYNCONV_OK);
    assert_int_equal(dynconv_network_get_num_threads(net, &threads), DYNCONV_OK);
    assert_int_equal(threads, 3);
    assert_int_equal(dynconv_network_forward(net, ctx.x, o2), DYNCONV_OK);
    assert_int_equal(tu_count_mismatches_f("threads", y2, y1, ctx.y_count, 1e-5, 1e-6), 0);
    dynconv_network_destroy(net);
    free(y1);
    free(y2);
}

/* ---------------------------------------------------------------------------------------- */
/* forward never allocates                                                                  */
/* ---------------------------------------------------------------------------------------- */

static void forward_never_allocates(void **state) {
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    static const char *const names[] = {"dy_resnet", "dy_mobilenetv2", "mixed",
                                        "mobilenet_v2_025"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, names[i]);
        for (int threads = 1; threads <= 2; ++threads) {
            dynconv_network *net = NULL;
            assert_int_equal(dynconv_network_create_from_file(path, 0, &net), DYNCONV_OK);
            assert_int_equal(dynconv_network_set_num_threads(net, threads), DYNCONV_OK);
            assert_int_equal(dynconv_network_reshape(net, 2, 32, 32, NULL), DYNCONV_OK);
            const size_t xn = 2 * 3 * 32 * 32;
            float *x = tu_alloc(xn * sizeof(float)), y[64];
            tu_rng rng;
            tu_rng_seed(&rng, 3);
            tu_fill_uniform(&rng, x, xn, -1.0f, 1.0f);
            float *const outs[1] = {y};
            assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK); /* warm up */
            tu_alloc_count_begin();
            dynconv_status st = DYNCONV_OK;
            for (int r = 0; r < 3 && st == DYNCONV_OK; ++r) {
                st = dynconv_network_forward(net, x, outs);
            }
            const tu_alloc_counts counted = tu_alloc_count_end();
            assert_int_equal(st, DYNCONV_OK);
            if (tu_alloc_counts_total(counted) != 0) {
                print_message("  %s, %d thread(s): %zu allocations by libdynconv, %zu by the "
                              "BLAS, %zu by others\n", names[i], threads, counted.library,
                              counted.blas, counted.other);
            }
            assert_int_equal(counted.library, 0);
            dynconv_network_destroy(net);
            free(x);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(api_errors),
        cmocka_unit_test(failed_reshape_keeps_shape),
        cmocka_unit_test(dynamic_controls),
        cmocka_unit_test(forward_never_allocates),
    };
    return cmocka_run_group_tests(tests, api_setup, api_teardown);
}
