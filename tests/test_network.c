/* Networks read from files (section 8 of the header): the golden networks of tests/networks
 * against PyTorch's logits, with and without folding, at batch 1 and after a reshape to another
 * size and back; and files made invalid by editing a golden file's header, each refused with
 * DYNCONV_ERROR_INVALID_MODEL and its reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dynconv/dynconv.h>

#include "dcio.h"
#include "testutil.h"

#ifndef DYNCONV_NETWORKS_DIR
#error "the build must define DYNCONV_NETWORKS_DIR, the directory of the golden networks"
#endif

static unsigned char *read_all(const char *name, size_t *size) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", DYNCONV_NETWORKS_DIR, name);
    unsigned char *data = NULL;
    dcio_error err;
    if (!dcio_read_file(path, (size_t)64 << 20, &data, size, &err)) {
        fail_msg("%s: %s", path, err.message);
    }
    return data;
}

static float *read_npy(const char *name, int64_t shape[4], int *rank) {
    size_t size;
    unsigned char *bytes = read_all(name, &size);
    dcio_npy npy;
    dcio_error err;
    if (!dcio_npy_parse(bytes, size, &npy, &err)) {
        fail_msg("%s: %s", name, err.message);
    }
    float *v = tu_alloc(npy.numel * sizeof(float));
    dcio_npy_to_f32(&npy, v);
    *rank = npy.rank;
    for (int d = 0; d < npy.rank && d < 4; ++d) {
        shape[d] = npy.shape[d];
    }
    free(bytes);
    return v;
}

/* ---------------------------------------------------------------------------------------- */
/* Golden networks                                                                          */
/* ---------------------------------------------------------------------------------------- */

typedef struct golden_net {
    const char *name;
    int64_t nodes_in_file;    /* networks.json's "nodes" */
} golden_net;

static const golden_net GOLDEN[] = {
    {"dy_resnet", 41},
    {"dy_mobilenetv2", 57},
    {"mixed", 13},
    {"mobilenet_v2_025", 153},
};

/* max |got - want| / max |want|: the error relative to the largest logit. */
static double relative_to_largest(const float *got, const float *want, size_t n) {
    double largest = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        largest = fmax(largest, fabs((double)want[i]));
    }
    for (size_t i = 0; i < n; ++i) {
        const double d = fabs((double)got[i] - (double)want[i]);
        worst = isnan(d) ? INFINITY : fmax(worst, d);
    }
    return worst / largest;
}

static dynconv_network *open_net(const char *name, uint32_t flags) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, name);
    dynconv_network *net = NULL;
    const dynconv_status st = dynconv_network_create_from_file(path, flags, &net);
    if (st != DYNCONV_OK) {
        fail_msg("%s: %s: %s", name, dynconv_status_string(st), dynconv_last_error_message());
    }
    return net;
}

/* The tolerance asked of a network reader (1e-3 of the largest logit) and the one the library
 * holds on these networks, float32 against PyTorch's float32: the largest error seen is 1e-5
 * (mobilenet_v2_025, 66 folded ops), so twice that leaves room for another BLAS kernel's
 * rounding without hiding a wrong op (those are off by far more). */
#define GOLDEN_RTOL 1e-3
#define GOLDEN_HELD 2e-5

static void run_golden(const golden_net *g, uint32_t flags) {
    char name[256];
    int64_t in_shape[4] = {0}, lg_shape[4] = {0};
    int in_rank, lg_rank;
    snprintf(name, sizeof name, "%s.input.npy", g->name);
    float *input = read_npy(name, in_shape, &in_rank);
    snprintf(name, sizeof name, "%s.logits.npy", g->name);
    float *logits = read_npy(name, lg_shape, &lg_rank);
    assert_int_equal(in_rank, 4);
    assert_int_equal(lg_rank, 2);
    assert_true(tu_nontrivial_f(logits, (size_t)(lg_shape[0] * lg_shape[1])));

    dynconv_network *net = open_net(g->name, flags);
    int64_t channels = 0, outputs = 0, nodes = 0;
    assert_int_equal(dynconv_network_get_input_channels(net, &channels), DYNCONV_OK);
    assert_int_equal(channels, in_shape[1]);
    assert_int_equal(dynconv_network_get_num_outputs(net, &outputs), DYNCONV_OK);
    assert_int_equal(outputs, 1);
    assert_int_equal(dynconv_network_get_num_nodes(net, &nodes), DYNCONV_OK);
    if (flags & DYNCONV_NETWORK_NO_FUSION) {
        assert_int_equal(nodes, g->nodes_in_file);
    } else {
        assert_true(nodes <= g->nodes_in_file);
    }

    size_t peak = 0;
    assert_int_equal(dynconv_network_reshape(net, in_shape[0], in_shape[2], in_shape[3], &peak),
                     DYNCONV_OK);
    int64_t shape[4];
    int rank = 0;
    assert_int_equal(dynconv_network_get_output_shape(net, 0, shape, &rank), DYNCONV_OK);
    assert_int_equal(rank, 2);
    assert_int_equal(shape[0], lg_shape[0]);
    assert_int_equal(shape[1], lg_shape[1]);
    assert_int_equal(shape[2], 1);
    const size_t n_out = (size_t)(lg_shape[0] * lg_shape[1]);
    float *out = tu_alloc(n_out * sizeof(float));
    float *const outs[1] = {out};

    const clock_t t0 = clock();
    assert_int_equal(dynconv_network_forward(net, input, outs), DYNCONV_OK);
    const double ms = 1e3 * (double)(clock() - t0) / CLOCKS_PER_SEC;
    const double err = relative_to_largest(out, logits, n_out);
    print_message("  %-17s %-9s nodes %3lld peak %8zu bytes, forward %.2f ms CPU, max error "
                  "%.2e of the largest logit\n", g->name, flags ? "no-fusion" : "folded",
                  (long long)nodes, peak, ms, err);
    assert_true(err <= GOLDEN_RTOL);
    assert_true(err <= GOLDEN_HELD);

    /* Batch 1: the first sample alone gives the first row. */
    assert_int_equal(dynconv_network_reshape(net, 1, in_shape[2], in_shape[3], NULL), DYNCONV_OK);
    float *row = tu_alloc((size_t)lg_shape[1] * sizeof(float));
    float *const row_out[1] = {row};
    assert_int_equal(dynconv_network_forward(net, input, row_out), DYNCONV_OK);
    assert_true(relative_to_largest(row, logits, (size_t)lg_shape[1]) <= GOLDEN_HELD);

    /* Another size, then back: the same result as the first time. */
    assert_int_equal(dynconv_network_reshape(net, 2, in_shape[2] + 8, in_shape[3] + 16, NULL),
                     DYNCONV_OK);
    const size_t big = (size_t)(2 * in_shape[1] * (in_shape[2] + 8) * (in_shape[3] + 16));
    float *x2 = tu_alloc(big * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 7);
    tu_fill_uniform(&rng, x2, big, -1.0f, 1.0f);
    assert_int_equal(dynconv_network_forward(net, x2, outs), DYNCONV_OK);
    for (size_t i = 0; i < n_out; ++i) {
        assert_true(isfinite(out[i]));
    }
    assert_int_equal(dynconv_network_reshape(net, in_shape[0], in_shape[2], in_shape[3], NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_network_forward(net, input, outs), DYNCONV_OK);
    assert_true(relative_to_largest(out, logits, n_out) <= GOLDEN_HELD);

    dynconv_network_destroy(net);
    free(x2);
    free(row);
    free(out);
    free(input);
    free(logits);
}

/* The table is networks.json's list: every network it names (and its node count) is here. */
static void table_matches_networks_json(void **state) {
    (void)state;
    size_t size;
    char *text = (char *)read_all("networks.json", &size);
    char *json = tu_alloc(size + 1);
    memcpy(json, text, size);
    json[size] = '\0';
    size_t files = 0;
    for (const char *p = json; (p = strstr(p, "\"file\":")) != NULL; ++p) {
        ++files;
    }
    assert_int_equal(files, sizeof GOLDEN / sizeof GOLDEN[0]);
    for (size_t i = 0; i < sizeof GOLDEN / sizeof GOLDEN[0]; ++i) {
        char key[128];
        snprintf(key, sizeof key, "\"%s\": {", GOLDEN[i].name);
        const char *entry = strstr(json, key);
        if (entry == NULL) {
            fail_msg("networks.json has no entry %s", key);
        }
        const char *nodes = strstr(entry, "\"nodes\": ");
        assert_non_null(nodes);
        assert_int_equal(strtoll(nodes + 9, NULL, 10), GOLDEN[i].nodes_in_file);
    }
    free(json);
    free(text);
}

static void golden_folded(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof GOLDEN / sizeof GOLDEN[0]; ++i) {
        run_golden(&GOLDEN[i], 0);
    }
}

static void golden_no_fusion(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof GOLDEN / sizeof GOLDEN[0]; ++i) {
        run_golden(&GOLDEN[i], DYNCONV_NETWORK_NO_FUSION);
    }
}

/* Large enough images that the layers share samples between threads (batch 1: bands of rows or
 * ranges of channels; batch 3 on 2 threads: whole samples and one shared), so that the fused
 * ReLU / ReLU6 runs in every output pass of the forward: the folded network on 2 threads
 * against the file run as written on 1 thread. */
static void fused_activation_in_every_output_pass(void **state) {
    (void)state;
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(2, 0, &pool), DYNCONV_OK);
    for (size_t i = 0; i < sizeof GOLDEN / sizeof GOLDEN[0]; ++i) {
        for (int64_t batch = 1; batch <= 3; batch += 2) {
            dynconv_network *folded = open_net(GOLDEN[i].name, 0);
            dynconv_network *plain = open_net(GOLDEN[i].name, DYNCONV_NETWORK_NO_FUSION);
            assert_int_equal(dynconv_network_set_threadpool(folded, pool), DYNCONV_OK);
            assert_int_equal(dynconv_network_set_num_threads(plain, 1), DYNCONV_OK);
            assert_int_equal(dynconv_network_reshape(folded, batch, 96, 80, NULL), DYNCONV_OK);
            assert_int_equal(dynconv_network_reshape(plain, batch, 96, 80, NULL), DYNCONV_OK);
            const size_t xn = (size_t)batch * 3 * 96 * 80;
            float *x = tu_alloc(xn * sizeof(float)), a[64], b[64];
            tu_rng rng;
            tu_rng_seed(&rng, 17);
            tu_fill_uniform(&rng, x, xn, -1.0f, 1.0f);
            float *const oa[1] = {a}, *const ob[1] = {b};
            assert_int_equal(dynconv_network_forward(folded, x, oa), DYNCONV_OK);
            assert_int_equal(dynconv_network_forward(plain, x, ob), DYNCONV_OK);
            int64_t shape[4];
            int rank;
            assert_int_equal(dynconv_network_get_output_shape(folded, 0, shape, &rank),
                             DYNCONV_OK);
            const size_t n = (size_t)(shape[0] * shape[1]);
            assert_true(n <= 64);
            const double err = relative_to_largest(a, b, n);
            if (!(err <= 1e-4)) {
                fail_msg("%s, batch %lld: folded on 2 threads and unfolded on 1 differ by %.2e",
                         GOLDEN[i].name, (long long)batch, err);
            }
            dynconv_network_destroy(folded);
            dynconv_network_destroy(plain);
            free(x);
        }
    }
    dynconv_threadpool_destroy(pool);
}

/* The folded DY-ResNet lists what it folded: every batch norm of the file went into a
 * convolution, and the ReLUs behind them run in the convolutions' output pass. */
static void folding_is_reported(void **state) {
    (void)state;
    dynconv_network *net = open_net("dy_resnet", 0);
    int64_t nodes = 0;
    assert_int_equal(dynconv_network_get_num_nodes(net, &nodes), DYNCONV_OK);
    size_t bn = 0, relu = 0, dynamic = 0;
    for (int64_t i = 0; i < nodes; ++i) {
        dynconv_network_node_info info;
        assert_int_equal(dynconv_network_get_node_info(net, i, &info), DYNCONV_OK);
        assert_string_not_equal(info.op, "batchnorm2d");
        bn += (info.fused & DYNCONV_NETWORK_FUSED_BATCHNORM) != 0;
        relu += (info.fused & DYNCONV_NETWORK_FUSED_RELU) != 0;
        if (strcmp(info.op, "dynamic_conv2d") == 0) {
            ++dynamic;
            assert_true(info.num_kernels > 1);
            assert_true(info.parameters > 0);
        }
        assert_int_equal(info.rank, 0); /* not shaped yet */
    }
    assert_true(bn > 0);
    assert_true(relu > 0);
    assert_true(dynamic > 0);
    dynconv_network_destroy(net);
}

/* ---------------------------------------------------------------------------------------- */
/* Files a reader must refuse: a golden file with its header edited                          */
/* ---------------------------------------------------------------------------------------- */

typedef enum edit_kind { EDIT_REPLACE, EDIT_TRUNCATE, EDIT_LENGTH } edit_kind;

typedef struct bad_file {
    const char *name;
    edit_kind kind;
    const char *find, *replace; /* EDIT_REPLACE: the first occurrence in the header */
    long long amount;           /* EDIT_TRUNCATE: bytes kept; EDIT_LENGTH: the header length */
    const char *reason;         /* a part of the message */
} bad_file;

/* The header of mixed.safetensors holds the graph as a JSON string: its quotes are escaped. */
static const bad_file BAD_FILES[] = {
    {"unknown_op", EDIT_REPLACE, "\\\"op\\\":\\\"relu\\\"", "\\\"op\\\":\\\"gelu\\\"", 0,
     "unknown op 'gelu'"},
    {"dangling_edge", EDIT_REPLACE, "\\\"inputs\\\":[\\\"stem\\\"]",
     "\\\"inputs\\\":[\\\"stem2\\\"]", 0, "dangling edge"},
    {"cycle", EDIT_REPLACE, "\\\"inputs\\\":[\\\"x\\\"]", "\\\"inputs\\\":[\\\"relu\\\"]", 0,
     "cycle: 'stem' <- 'relu' <- 'stem'"},
    {"shape_mismatch", EDIT_REPLACE, "\"shape\":[8,3,3,3]", "\"shape\":[3,8,3,3]", 0,
     "'stem.bias' (bias) has shape [8], expected [3]"},
    {"truncated_tensor_data", EDIT_TRUNCATE, NULL, NULL, 17304 - 4, "outside the data section"},
    {"truncated_header", EDIT_TRUNCATE, NULL, NULL, 8 + 1000, "goes beyond the file"},
    {"header_length_beyond_file", EDIT_LENGTH, NULL, NULL, 1LL << 40, "goes beyond the file"},
    {"non_f32_dtype", EDIT_REPLACE, "\"dtype\":\"F32\"", "\"dtype\":\"I32\"", 0,
     "must be F32"},
    {"tensor_used_by_no_node", EDIT_REPLACE, ",\\\"bias\\\":\\\"stem.bias\\\"", "", 0,
     "'stem.bias' belongs to no node"},
    {"duplicate_node_name", EDIT_REPLACE, "{\\\"name\\\":\\\"relu\\\"",
     "{\\\"name\\\":\\\"stem\\\"", 0, "'stem': the name is used twice"},
    {"wrong_version", EDIT_REPLACE, "\\\"version\\\":1", "\\\"version\\\":2", 0,
     "version 2 is not supported"},
    {"missing_attribute", EDIT_REPLACE, "\\\"dilation\\\":[1,1],\\\"groups\\\":1}",
     "\\\"dilation\\\":[1,1]}", 0, "missing attribute 'groups'"},
    {"unknown_field", EDIT_REPLACE, "\\\"module\\\":\\\"stem\\\"",
     "\\\"module\\\":\\\"stem\\\",\\\"extra\\\":1", 0, "unknown field 'extra'"},
    {"unknown_graph_field", EDIT_REPLACE, "\\\"version\\\":1", "\\\"version\\\":1,\\\"x\\\":0",
     0, "unknown field 'x'"},
    {"overlapping_ranges", EDIT_REPLACE, "\"data_offsets\":[864,896]",
     "\"data_offsets\":[860,892]", 0, "overlaps another"},
    {"not_json", EDIT_REPLACE, "\"__metadata__\":{", "\"__metadata__\":{,", 0,
     "not valid JSON: at byte"},
    {"no_graph", EDIT_REPLACE, "\"dynconv.graph\"", "\"dynconv.graph2\"", 0,
     "no network graph"},
    {"wrong_schema", EDIT_REPLACE, "dynconv.network", "dynconv.netwerk", 0,
     "schema 'dynconv.netwerk'"},
    {"bad_pair", EDIT_REPLACE, "\\\"stride\\\":[1,1]", "\\\"stride\\\":[0,1]", 0,
     "'stride' is not [a, b]"},
};

/* The edited file's bytes (malloc'd). */
static unsigned char *make_bad(const bad_file *b, const unsigned char *good, size_t size,
                               size_t *out_size) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) {
        n = (n << 8) | good[i];
    }
    unsigned char *data = tu_alloc(size + 256);
    if (b->kind == EDIT_TRUNCATE) {
        memcpy(data, good, (size_t)b->amount);
        *out_size = (size_t)b->amount;
        return data;
    }
    if (b->kind == EDIT_LENGTH) {
        memcpy(data, good, size);
        for (int i = 0; i < 8; ++i) {
            data[i] = (unsigned char)((uint64_t)b->amount >> (8 * i));
        }
        *out_size = size;
        return data;
    }
    const char *header = (const char *)good + 8;
    char *copy = tu_alloc(n + 1);
    memcpy(copy, header, n);
    copy[n] = '\0';
    char *at = strstr(copy, b->find);
    if (at == NULL) {
        fail_msg("%s: '%s' is not in the header", b->name, b->find);
    }
    const size_t before = (size_t)(at - copy), flen = strlen(b->find), rlen = strlen(b->replace);
    const uint64_t m = n - flen + rlen;
    for (int i = 0; i < 8; ++i) {
        data[i] = (unsigned char)(m >> (8 * i));
    }
    memcpy(data + 8, copy, before);
    memcpy(data + 8 + before, b->replace, rlen);
    memcpy(data + 8 + before + rlen, at + flen, n - before - flen);
    memcpy(data + 8 + m, good + 8 + n, size - 8 - n);
    *out_size = 8 + m + (size - 8 - n);
    free(copy);
    return data;
}

static void bad_files_are_refused(void **state) {
    (void)state;
    size_t size;
    unsigned char *good = read_all("mixed.safetensors", &size);
    assert_int_equal(size, 17304); /* the truncation cases count on it */
    dynconv_network *net = NULL;
    /* The unedited file loads: the edits alone make the files invalid. */
    assert_int_equal(dynconv_network_create_from_memory(good, size, 0, &net), DYNCONV_OK);
    dynconv_network_destroy(net);
    for (size_t i = 0; i < sizeof BAD_FILES / sizeof BAD_FILES[0]; ++i) {
        const bad_file *b = &BAD_FILES[i];
        size_t bad_size;
        unsigned char *bad = make_bad(b, good, size, &bad_size);
        dynconv_network *sentinel = (dynconv_network *)(uintptr_t)0x1;
        net = sentinel;
        const dynconv_status st = dynconv_network_create_from_memory(bad, bad_size, 0, &net);
        const char *msg = dynconv_last_error_message();
        print_message("  %-26s -> %s\n", b->name, msg);
        if (st != DYNCONV_ERROR_INVALID_MODEL || strstr(msg, b->reason) == NULL ||
            strstr(msg, "<memory>") == NULL ||
            strstr(msg, "dynconv_network_create_from_memory") == NULL) {
            fail_msg("%s: status %s, message '%s' (expected INVALID_MODEL and '%s')", b->name,
                     dynconv_status_string(st), msg, b->reason);
        }
        assert_ptr_equal(net, sentinel);
        free(bad);
    }
    free(good);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_matches_networks_json),
        cmocka_unit_test(golden_folded),
        cmocka_unit_test(golden_no_fusion),
        cmocka_unit_test(fused_activation_in_every_output_pass),
        cmocka_unit_test(folding_is_reported),
        cmocka_unit_test(bad_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
