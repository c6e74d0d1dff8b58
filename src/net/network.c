/* The public network functions (section 8 of the header): argument checks, create from a file
 * or a buffer, the queries, temperatures, attention and threads. reshape and forward are in
 * plan.c, the file's contents in container.c and graph.c, folding in fold.c. */
#include "net.h"

#include "tensor.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KNOWN_NETWORK_FLAGS ((uint32_t)DYNCONV_NETWORK_NO_FUSION)

void net_free_node(net_node *n) {
    free(n->name);
    free(n->module);
    free(n->inputs);
    free(n->input_len);
    dc_aligned_free(n->owned);
    free(n->bn_scale);
    dynconv_conv2d_destroy(n->layer);
    memset(n, 0, sizeof *n);
}

void net_free(dynconv_network *net) {
    if (net == NULL) {
        return;
    }
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_free_node(&net->nodes[i]);
    }
    free(net->nodes);
    for (size_t i = 0; i < net->num_tensors; ++i) {
        free(net->tensors[i].name);
    }
    free(net->tensors);
    dc_aligned_free(net->params);
    free(net->zeros);
    free(net->input_name);
    free(net->outputs);
    free(net->input_ptrs);
    dc_threadpool_release(net->pool);
    dc_aligned_free(net->arena);
    dc_aligned_free(net->workspace);
    dc_aligned_free(net->attention);
    free(net);
}

dynconv_status net_load(const char *fn, const char *source, const unsigned char *data,
                        size_t size, uint32_t flags, dynconv_network **out) {
    dynconv_network *net = calloc(1, sizeof *net);
    if (net == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the network", fn);
    }
    char *graph = NULL;
    size_t graph_len = 0;
    dynconv_status st = net_read_container(fn, source, data, size, net, &graph, &graph_len);
    if (st == DYNCONV_OK) {
        st = net_read_graph(fn, source, graph, graph_len, net);
    }
    free(graph);
    if (st == DYNCONV_OK) {
        st = net_fold(fn, net, !(flags & DYNCONV_NETWORK_NO_FUSION));
    }
    for (size_t i = 0; st == DYNCONV_OK && i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        n->input_len = calloc(n->num_inputs, sizeof *n->input_len);
        if (n->input_len == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        }
        if (n->num_inputs > net->max_inputs) {
            net->max_inputs = n->num_inputs;
        }
    }
    if (st == DYNCONV_OK) {
        net->input_ptrs = calloc(net->max_inputs, sizeof *net->input_ptrs);
        if (net->input_ptrs == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        }
    }
    if (st == DYNCONV_OK) {
        /* The network's own reference to the pool its layers share (also when it has none). */
        st = dc_threadpool_acquire(fn, NULL, &net->pool);
    }
    if (st == DYNCONV_OK) {
        st = net_create_layers(fn, source, net);
    }
    if (st != DYNCONV_OK) {
        net_free(net);
        return st;
    }
    *out = net;
    return DYNCONV_OK;
}

static dynconv_status check_create(const char *fn, const void *what, const char *what_name,
                                   uint32_t flags, dynconv_network **out) {
    if (what == NULL || out == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       what == NULL ? what_name : "out");
    }
    if (flags & ~KNOWN_NETWORK_FLAGS) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)(flags & ~KNOWN_NETWORK_FLAGS));
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_network_create_from_memory(const void *data, size_t size, uint32_t flags,
                                                  dynconv_network **out) {
    TRY(check_create(__func__, data, "data", flags, out));
    return net_load(__func__, "<memory>", data, size, flags, out);
}

dynconv_status dynconv_network_create_from_file(const char *path, uint32_t flags,
                                                dynconv_network **out) {
    const char *fn = __func__;
    TRY(check_create(fn, path, "path", flags, out));
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: cannot open '%s': %s", fn, path,
                       strerror(errno));
    }
    /* The whole file, read in growing chunks until its end (no seek: a directory or a pipe
     * then fails or works as a plain read does). */
    size_t size = 0, capacity = 0;
    unsigned char *data = NULL;
    int read_errno = 0;
    for (;;) {
        if (size == capacity) {
            const size_t grown = capacity ? capacity * 2 : (size_t)1 << 16;
            unsigned char *bigger = grown > capacity ? realloc(data, grown) : NULL;
            if (bigger == NULL) {
                free(data);
                fclose(f);
                return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                               "%s: cannot allocate %zu bytes for '%s'", fn, grown, path);
            }
            data = bigger;
            capacity = grown;
        }
        errno = 0;
        const size_t got = fread(data + size, 1, capacity - size, f);
        size += got;
        if (got == 0 || ferror(f)) {
            read_errno = errno;
            break;
        }
    }
    const bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        free(data);
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: cannot read '%s': %s", fn, path,
                       read_errno ? strerror(read_errno) : "read error");
    }
    const dynconv_status st = net_load(fn, path, data, size, flags, out);
    free(data);
    return st;
}

void dynconv_network_destroy(dynconv_network *network) { net_free(network); }

dynconv_status dynconv_network_get_input_channels(const dynconv_network *network,
                                                  int64_t *channels) {
    if (network == NULL || channels == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       network == NULL ? "network" : "channels");
    }
    *channels = (int64_t)network->input_channels;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_get_num_outputs(const dynconv_network *network, int64_t *count) {
    if (network == NULL || count == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       network == NULL ? "network" : "count");
    }
    *count = (int64_t)network->num_outputs;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_reshape(dynconv_network *network, int64_t batch, int64_t height,
                                       int64_t width, size_t *peak_bytes) {
    return net_reshape(__func__, network, batch, height, width, peak_bytes);
}

dynconv_status dynconv_network_forward(dynconv_network *network, const float *input,
                                       float *const *outputs) {
    return net_forward(__func__, network, input, outputs);
}

/* Rank and shape of value v (the input's too: an output may be the input itself). */
static void value_shape(const dynconv_network *net, net_value v, int64_t shape[4], int *rank) {
    if (v == 0) {
        const size_t dims[4] = {net->batch, net->input_channels, net->height, net->width};
        for (int d = 0; d < 4; ++d) {
            shape[d] = (int64_t)dims[d];
        }
        *rank = 4;
        return;
    }
    const net_node *n = &net->nodes[v - 1];
    for (int d = 0; d < 4; ++d) {
        shape[d] = (int64_t)n->shape[d];
    }
    *rank = n->rank;
}

dynconv_status dynconv_network_get_output_shape(const dynconv_network *network, int64_t index,
                                                int64_t shape[4], int *rank) {
    const char *fn = __func__;
    if (network == NULL || shape == NULL || rank == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       network == NULL ? "network" : shape == NULL ? "shape" : "rank");
    }
    if (index < 0 || (uint64_t)index >= network->num_outputs) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: index %lld is outside the %zu outputs", fn, (long long)index,
                       network->num_outputs);
    }
    if (!network->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    value_shape(network, network->outputs[index], shape, rank);
    return DYNCONV_OK;
}

dynconv_status dynconv_network_get_num_nodes(const dynconv_network *network, int64_t *count) {
    if (network == NULL || count == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       network == NULL ? "network" : "count");
    }
    *count = (int64_t)network->num_nodes;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_get_node_info(const dynconv_network *network, int64_t index,
                                             dynconv_network_node_info *info) {
    const char *fn = __func__;
    if (network == NULL || info == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       network == NULL ? "network" : "info");
    }
    if (index < 0 || (uint64_t)index >= network->num_nodes) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: index %lld is outside the %zu nodes",
                       fn, (long long)index, network->num_nodes);
    }
    const net_node *n = &network->nodes[index];
    dynconv_network_node_info i;
    memset(&i, 0, sizeof i);
    i.name = n->name;
    i.op = net_op_name(n->op);
    i.module = n->module;
    i.num_kernels =
        n->op == OP_DYNAMIC_CONV2D || n->op == OP_DYNAMIC_LINEAR ? (int64_t)n->kernels : 0;
    i.fused = n->fused;
    i.rank = network->shaped ? n->rank : 0;
    for (int d = 0; d < 4; ++d) {
        i.shape[d] = network->shaped ? (int64_t)n->shape[d] : 1;
    }
    i.parameters = n->parameters;
    *info = i;
    return DYNCONV_OK;
}

static bool is_dynamic(const net_node *n) {
    return n->op == OP_DYNAMIC_CONV2D || n->op == OP_DYNAMIC_LINEAR;
}

/* The dynamic layer named `name`, or NULL (with the message set). */
static const net_node *find_dynamic(const char *fn, const dynconv_network *net,
                                    const char *name) {
    for (size_t i = 0; i < net->num_nodes; ++i) {
        if (is_dynamic(&net->nodes[i]) && strcmp(net->nodes[i].name, name) == 0) {
            return &net->nodes[i];
        }
    }
    dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: '%s' is not a dynamic layer of the network", fn,
            name);
    return NULL;
}

dynconv_status dynconv_network_set_temperature(dynconv_network *network, const char *name,
                                               float temperature) {
    const char *fn = __func__;
    if (network == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: network is NULL", fn);
    }
    TRY(dc_check_temperature(fn, temperature));
    if (name != NULL) {
        const net_node *n = find_dynamic(fn, network, name);
        if (n == NULL) {
            return DYNCONV_ERROR_INVALID_ARGUMENT;
        }
        return dynconv_conv2d_set_temperature(n->layer, temperature);
    }
    bool any = false;
    for (size_t i = 0; i < network->num_nodes; ++i) {
        any = any || is_dynamic(&network->nodes[i]);
    }
    if (!any) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: the network has no dynamic layer",
                       fn);
    }
    for (size_t i = 0; i < network->num_nodes; ++i) {
        if (is_dynamic(&network->nodes[i])) {
            TRY(dynconv_conv2d_set_temperature(network->nodes[i].layer, temperature));
        }
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_network_get_temperature(const dynconv_network *network, const char *name,
                                               float *temperature) {
    const char *fn = __func__;
    if (network == NULL || temperature == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       network == NULL ? "network" : "temperature");
    }
    for (size_t i = 0; name == NULL && i < network->num_nodes; ++i) {
        if (is_dynamic(&network->nodes[i])) {
            return dynconv_conv2d_get_temperature(network->nodes[i].layer, temperature);
        }
    }
    if (name == NULL) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: the network has no dynamic layer",
                       fn);
    }
    const net_node *n = find_dynamic(fn, network, name);
    if (n == NULL) {
        return DYNCONV_ERROR_INVALID_ARGUMENT;
    }
    return dynconv_conv2d_get_temperature(n->layer, temperature);
}

dynconv_status dynconv_network_get_attention(const dynconv_network *network, const char *name,
                                             float *attention, int64_t capacity) {
    const char *fn = __func__;
    if (network == NULL || name == NULL || attention == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       network == NULL ? "network" : name == NULL ? "name" : "attention");
    }
    const net_node *n = find_dynamic(fn, network, name);
    if (n == NULL) {
        return DYNCONV_ERROR_INVALID_ARGUMENT;
    }
    if (!network->shaped || !network->ran) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE,
                       "%s: no forward since the last reshape: there is no attention yet", fn);
    }
    const size_t needed = network->batch * n->kernels;
    if (capacity < 0 || (uint64_t)capacity < needed) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: capacity %lld is below the %zu floats (N * K) of '%s'", fn,
                       (long long)capacity, needed, name);
    }
    if (n->attention != NULL) {
        memcpy(attention, n->attention, needed * sizeof(float));
    } else {
        for (size_t i = 0; i < needed; ++i) {
            attention[i] = 1.0f; /* K = 1: the attention is exactly one */
        }
    }
    return DYNCONV_OK;
}

/* Threads a forward of every layer uses for a request on `pool` (as the layers count them). */
static size_t team_for(size_t requested, const dynconv_threadpool *pool) {
    return requested == 0 || requested > pool->threads ? pool->threads : requested;
}

/* Makes the shared workspace large enough for every layer on `team` threads (the layers'
 * slots per thread), before any layer changes: nothing changes on failure. */
static dynconv_status grow_workspace(const char *fn, dynconv_network *net, size_t team) {
    if (!net->shaped) {
        return DYNCONV_OK;
    }
    size_t needed = 0;
    for (size_t i = 0; i < net->num_nodes; ++i) {
        const net_node *n = &net->nodes[i];
        size_t chunk, bytes;
        if (n->layer == NULL) {
            continue;
        }
        if (!dc_plan_forward(&n->layer->core, net->batch, team, &chunk, &bytes)) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                           "%s: the workspace for %zu threads overflows", fn, team);
        }
        needed = bytes > needed ? bytes : needed;
    }
    if (needed <= net->workspace_bytes) {
        return DYNCONV_OK;
    }
    void *grown = dc_aligned_alloc(needed);
    if (grown == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                       "%s: cannot allocate a workspace of %zu bytes", fn, needed);
    }
    dc_aligned_free(net->workspace);
    net->workspace = grown;
    net->workspace_bytes = needed;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_set_num_threads(dynconv_network *network, int threads) {
    const char *fn = __func__;
    if (network == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: network is NULL", fn);
    }
    if (threads < 0 || threads > DYNCONV_MAX_THREADS) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: threads must be in [0, %d] (0: all of the pool's threads), got %d",
                       fn, DYNCONV_MAX_THREADS, threads);
    }
    TRY(grow_workspace(fn, network, team_for((size_t)threads, network->pool)));
    for (size_t i = 0; i < network->num_nodes; ++i) {
        if (network->nodes[i].layer != NULL) {
            TRY(dc_conv2d_set_num_threads_named(fn, network->nodes[i].layer, threads));
        }
    }
    network->threads_requested = (size_t)threads;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_set_threadpool(dynconv_network *network,
                                              dynconv_threadpool *pool) {
    const char *fn = __func__;
    if (network == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: network is NULL", fn);
    }
    dynconv_threadpool *next = NULL;
    TRY(dc_threadpool_acquire(fn, pool, &next));
    dynconv_status st = grow_workspace(fn, network, team_for(network->threads_requested, next));
    /* With the network's reference held, the layers' acquire of the same pool cannot fail. */
    for (size_t i = 0; st == DYNCONV_OK && i < network->num_nodes; ++i) {
        if (network->nodes[i].layer != NULL) {
            st = dc_conv2d_set_threadpool_named(fn, network->nodes[i].layer, next);
        }
    }
    if (st != DYNCONV_OK) {
        dc_threadpool_release(next);
        return st;
    }
    dc_threadpool_release(network->pool);
    network->pool = next;
    return DYNCONV_OK;
}

dynconv_status dynconv_network_get_num_threads(const dynconv_network *network, int *threads) {
    if (network == NULL || threads == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       network == NULL ? "network" : "threads");
    }
    *threads = (int)(network->threads_requested == 0 ? network->pool->threads
                                                     : network->threads_requested);
    return DYNCONV_OK;
}
