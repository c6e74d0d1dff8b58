/* The squeeze handed over between a network's layers (net_node.pooled_out / pooled_in): a
 * convolution whose output a dynamic convolution reads writes that output's channel means, and
 * the dynamic layer takes them instead of pooling its input itself. The means are the same
 * sums either way, so the logits and every layer's attention must be the same bits as when
 * each dynamic layer pools its own input: checked on the golden networks, with the hand-over
 * forced onto every producer (any path: generic, engine, Winograd; whole samples per thread,
 * samples shared by the threads), at several batch sizes and thread counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

#include "exec.h"
#include "net.h"
#include "testutil.h"

#if !defined(DYNCONV_NETWORKS_DIR)
#error "the build must define DYNCONV_NETWORKS_DIR, the directory of the golden networks"
#endif

typedef struct handoff_case {
    const char *name;
    int64_t height, width;    /* an input size of the test's own (odd sizes on purpose) */
} handoff_case;

/* The larger sizes give the first layers enough work for a team of threads (samples shared
 * by the threads at batches 1 and 2 on 3 threads, whole samples at 3). */
static const handoff_case CASES[] = {
    {"dy_resnet", 35, 29},
    {"dy_resnet", 97, 89},
    {"dy_mobilenetv2", 33, 40},
    {"dy_mobilenetv2", 96, 112},
    {"mixed", 17, 23},
    {"mobilenet_v2_025", 32, 32},
};

/* The network's logits and the attention of every dynamic node for one input, with the
 * hand-over planned by `mode`; *handoffs receives how many layers hand their means over. */
static float *run(const handoff_case *c, int mode, int64_t batch, int threads, const float *x,
                  size_t *count, size_t *handoffs) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, c->name);
    net_set_handoff(mode);
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_file(path, 0, &net), DYNCONV_OK);
    assert_int_equal(dynconv_network_set_num_threads(net, threads), DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, batch, c->height, c->width, NULL), DYNCONV_OK);
    int64_t shape[4], nodes = 0;
    int rank = 0;
    assert_int_equal(dynconv_network_get_output_shape(net, 0, shape, &rank), DYNCONV_OK);
    size_t logits = 1;
    for (int d = 0; d < rank; ++d) {
        logits *= (size_t)shape[d];
    }
    assert_int_equal(dynconv_network_get_num_nodes(net, &nodes), DYNCONV_OK);
    /* logits, then [batch, K] of each dynamic node in order (K at most 16 here) */
    const size_t total = logits + (size_t)nodes * (size_t)batch * 16;
    float *out = tu_alloc(total * sizeof(float));
    memset(out, 0, total * sizeof(float));
    float *const outs[1] = {out};
    assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);
    size_t at = logits;
    for (int64_t i = 0; i < nodes; ++i) {
        dynconv_network_node_info info;
        assert_int_equal(dynconv_network_get_node_info(net, i, &info), DYNCONV_OK);
        if (info.num_kernels > 1) {
            assert_true(info.num_kernels <= 16);
            const int64_t len = batch * info.num_kernels;
            assert_int_equal(dynconv_network_get_attention(net, info.name, out + at, len),
                             DYNCONV_OK);
            at += (size_t)len;
        }
    }
    *count = at;
    *handoffs = net->handoffs;
    dynconv_network_destroy(net);
    net_set_handoff(NET_HANDOFF_RULE);
    return out;
}

static int64_t channels_of(const handoff_case *c) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, c->name);
    dynconv_network *net = NULL;
    int64_t channels = 0;
    assert_int_equal(dynconv_network_create_from_file(path, 0, &net), DYNCONV_OK);
    assert_int_equal(dynconv_network_get_input_channels(net, &channels), DYNCONV_OK);
    dynconv_network_destroy(net);
    return channels;
}

static void same_bits_with_and_without(void **state) {
    (void)state;
    static const int engine_modes[] = {DC_ENGINE_NEVER, DC_ENGINE_AUTO, DC_ENGINE_ALWAYS};
    static const char *const engine_names[] = {"im2col + BLAS", "the rule", "engine"};
    tu_rng rng;
    tu_rng_seed(&rng, 2029);
    for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ++ci) {
        const handoff_case *c = &CASES[ci];
        for (size_t e = 0; e < sizeof engine_modes / sizeof engine_modes[0]; ++e) {
            dc_exec_set_engine_mode(engine_modes[e]);
            for (int64_t batch = 1; batch <= 3; ++batch) {
                const size_t in = (size_t)(batch * channels_of(c) * c->height * c->width);
                float *x = tu_alloc(in * sizeof(float));
                tu_fill_uniform(&rng, x, in, -1.0f, 1.0f);
                for (int threads = 1; threads <= 3; threads += 2) {
                    size_t n0 = 0, n1 = 0, h0 = 0, h1 = 0, hr = 0, nr = 0;
                    float *y0 = run(c, NET_HANDOFF_NEVER, batch, threads, x, &n0, &h0);
                    float *y1 = run(c, NET_HANDOFF_ALWAYS, batch, threads, x, &n1, &h1);
                    float *yr = run(c, NET_HANDOFF_RULE, batch, threads, x, &nr, &hr);
                    assert_int_equal(h0, 0);
                    /* every golden network but the static one has a dynamic layer reading a
                     * convolution's output */
                    if (strcmp(c->name, "mobilenet_v2_025") != 0 && h1 == 0) {
                        fail_msg("%s: no hand-over planned", c->name);
                    }
                    assert_true(hr <= h1);
                    assert_int_equal(n0, n1);
                    assert_int_equal(n0, nr);
                    assert_true(tu_nontrivial_f(y0, n0));
                    if (memcmp(y0, y1, n0 * sizeof(float)) != 0 ||
                        memcmp(y0, yr, n0 * sizeof(float)) != 0) {
                        fail_msg("%s, %s, batch %lld, %d thread(s): results differ with the "
                                 "means handed over (%zu layers hand over)",
                                 c->name, engine_names[e], (long long)batch, threads, h1);
                    }
                    print_message("  %-17s %-13s batch %lld, %d thread(s): %zu hand-overs "
                                  "(%zu by the rule), the same bits\n",
                                  c->name, engine_names[e], (long long)batch, threads, h1, hr);
                    free(y0);
                    free(y1);
                    free(yr);
                }
                free(x);
            }
        }
    }
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_bits_with_and_without),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
