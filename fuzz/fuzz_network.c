/* Fuzz target: dynconv_network_create_from_memory on arbitrary bytes (the JSON reader, the
 * safetensors container, the graph schema, folding), then, for what it accepts, the queries,
 * a reshape to a small input and a forward. Beyond "never crash, never read outside the
 * buffer" (ASan) it checks the API's promises: a known status, a message and an untouched *out
 * on failure; on success consistent queries, a reshape that either works or is refused with a
 * shape status, and outputs of the size get_output_shape reports (ASan sees any overrun). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Networks whose input or outputs would exceed this many floats, or whose reshape needs more
 * than MAX_PEAK bytes (a huge padding makes huge activations), are not run. */
#define MAX_FLOATS ((size_t)1 << 22)
#define MAX_PEAK ((size_t)1 << 28)

static void die(const char *what) {
    fprintf(stderr, "fuzz_network: %s (%s)\n", what, dynconv_last_error_message());
    abort();
}

static void run(dynconv_network *net) {
    int64_t channels = 0, outputs = 0, nodes = 0;
    if (dynconv_network_get_input_channels(net, &channels) != DYNCONV_OK || channels <= 0 ||
        dynconv_network_get_num_outputs(net, &outputs) != DYNCONV_OK || outputs <= 0 ||
        dynconv_network_get_num_nodes(net, &nodes) != DYNCONV_OK || nodes <= 0) {
        die("queries of an accepted network");
    }
    for (int64_t i = 0; i < nodes; ++i) {
        dynconv_network_node_info info;
        if (dynconv_network_get_node_info(net, i, &info) != DYNCONV_OK || info.name == NULL ||
            info.op == NULL || info.module == NULL || info.rank != 0) {
            die("node info");
        }
    }
    (void)dynconv_network_set_num_threads(net, 1);
    size_t peak = 0;
    const dynconv_status st = dynconv_network_reshape(net, 2, 9, 8, &peak);
    if (st == DYNCONV_ERROR_INVALID_SHAPE || st == DYNCONV_ERROR_SIZE_OVERFLOW ||
        st == DYNCONV_ERROR_OUT_OF_MEMORY) {
        return;
    }
    if (st != DYNCONV_OK) {
        die("reshape status");
    }
    const size_t in_count = (size_t)(2 * channels * 9 * 8);
    if ((uint64_t)channels > MAX_FLOATS / 144 || peak > MAX_PEAK) {
        return;
    }
    float **outs = calloc((size_t)outputs, sizeof *outs);
    size_t total = 0;
    bool small = outs != NULL;
    for (int64_t i = 0; small && i < outputs; ++i) {
        int64_t shape[4];
        int rank = 0;
        if (dynconv_network_get_output_shape(net, i, shape, &rank) != DYNCONV_OK ||
            (rank != 2 && rank != 4) || shape[0] != 2) {
            die("output shape");
        }
        size_t count = 1;
        for (int d = 0; d < 4; ++d) {
            count = shape[d] > 0 && (uint64_t)shape[d] <= MAX_FLOATS ? count * (size_t)shape[d]
                                                                      : MAX_FLOATS + 1;
            count = count > MAX_FLOATS ? MAX_FLOATS + 1 : count;
        }
        small = count <= MAX_FLOATS && (total += count) <= MAX_FLOATS;
        if (small) {
            outs[i] = malloc(count * sizeof(float));
            small = outs[i] != NULL;
        }
    }
    float *input = small ? malloc(in_count * sizeof(float)) : NULL;
    if (input != NULL) {
        for (size_t i = 0; i < in_count; ++i) {
            input[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
        }
        if (dynconv_network_forward(net, input, outs) != DYNCONV_OK) {
            die("forward of a shaped network");
        }
    }
    free(input);
    for (int64_t i = 0; outs != NULL && i < outputs; ++i) {
        free(outs[i]);
    }
    free(outs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dynconv_network *sentinel = (dynconv_network *)(uintptr_t)0x10, *net = sentinel;
    const dynconv_status st = dynconv_network_create_from_memory(data, size, size % 2 ? 0u :
                                                                 DYNCONV_NETWORK_NO_FUSION,
                                                                 &net);
    if (st != DYNCONV_OK) {
        if (net != sentinel || dynconv_last_error_message()[0] == '\0' ||
            (st != DYNCONV_ERROR_INVALID_MODEL && st != DYNCONV_ERROR_OUT_OF_MEMORY &&
             st != DYNCONV_ERROR_SIZE_OVERFLOW)) {
            die("create refused without a message, with another status, or wrote *out");
        }
        return 0;
    }
    run(net);
    dynconv_network_destroy(net);
    return 0;
}
