/* reshape and forward of a network: the output shape of every node, the activation arena
 * planned by liveness, the shared workspace, and the run itself (which never allocates). */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, for the per-node timing */
#include "net.h"

#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A value's shape while reshape works it out (committed to the nodes only on success). */
typedef struct vshape {
    int rank;
    size_t dims[4];
    size_t count;
} vshape;

#define SHAPE_FAIL(...) dc_fail(DYNCONV_ERROR_INVALID_SHAPE, __VA_ARGS__)

static void describe(const vshape *s, char *buf, size_t size) {
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < s->rank && at < size; ++d) {
        at += (size_t)snprintf(buf + at, size - at, d ? ", %zu" : "%zu", s->dims[d]);
    }
    if (at < size) {
        snprintf(buf + at, size - at, "]");
    }
}

static bool set_count(vshape *s) {
    return dc_product(s->dims, (size_t)s->rank, &s->count) &&
           s->count <= (size_t)PTRDIFF_MAX / sizeof(float);
}

/* The output shape of node n from its inputs' shapes. */
static dynconv_status infer(const char *fn, const net_node *n, const vshape *const *in,
                            vshape *out) {
    const vshape *x = in[0];
    char a[96], b[96];
    const char *name = n->name, *op = net_op_name(n->op);
    const bool images = n->op == OP_CONV2D || n->op == OP_DYNAMIC_CONV2D ||
                        n->op == OP_BATCHNORM2D || n->op == OP_MAX_POOL2D ||
                        n->op == OP_AVG_POOL2D || n->op == OP_GLOBAL_AVG_POOL2D ||
                        n->op == OP_CAT;
    for (size_t j = 0; j < n->num_inputs; ++j) {
        if ((images && in[j]->rank != 4) ||
            ((n->op == OP_LINEAR || n->op == OP_DYNAMIC_LINEAR) && in[j]->rank != 2)) {
            describe(in[j], a, sizeof a);
            return SHAPE_FAIL("%s: node '%s' (%s): input of shape %s, expected %s", fn, name, op,
                              a, images ? "[N, C, H, W]" : "[N, D]");
        }
    }
    *out = *x;
    switch (n->op) {
    case OP_CONV2D:
    case OP_DYNAMIC_CONV2D:
    case OP_MAX_POOL2D:
    case OP_AVG_POOL2D: {
        const bool conv = n->op == OP_CONV2D || n->op == OP_DYNAMIC_CONV2D;
        if (conv && x->dims[1] != n->c_in) {
            return SHAPE_FAIL("%s: node '%s' (%s): input has %zu channels, the kernels take %zu",
                              fn, name, op, x->dims[1], n->c_in);
        }
        const size_t kh = conv ? n->kh : n->kernel[0], kw = conv ? n->kw : n->kernel[1];
        if (!net_window_out(x->dims[2], kh, n->stride[0], n->padding[0], n->dilation[0],
                            &out->dims[2]) ||
            !net_window_out(x->dims[3], kw, n->stride[1], n->padding[1], n->dilation[1],
                            &out->dims[3])) {
            return SHAPE_FAIL("%s: node '%s' (%s): the kernel %zu x %zu (dilation %zu x %zu) is "
                              "larger than the padded input %zu x %zu (padding %zu x %zu)",
                              fn, name, op, kh, kw, n->dilation[0], n->dilation[1], x->dims[2],
                              x->dims[3], n->padding[0], n->padding[1]);
        }
        if (conv) {
            out->dims[1] = n->c_out;
        }
        break;
    }
    case OP_LINEAR:
    case OP_DYNAMIC_LINEAR:
        if (x->dims[1] != n->c_in) {
            return SHAPE_FAIL("%s: node '%s' (%s): input has %zu features, the weight takes %zu",
                              fn, name, op, x->dims[1], n->c_in);
        }
        out->dims[1] = n->c_out;
        break;
    case OP_BATCHNORM2D:
        if (x->dims[1] != n->c_in) {
            return SHAPE_FAIL("%s: node '%s' (%s): input has %zu channels, the batch norm %zu",
                              fn, name, op, x->dims[1], n->c_in);
        }
        break;
    case OP_ADD:
        if (in[0]->rank != in[1]->rank ||
            memcmp(in[0]->dims, in[1]->dims, (size_t)in[0]->rank * sizeof(size_t)) != 0) {
            describe(in[0], a, sizeof a);
            describe(in[1], b, sizeof b);
            return SHAPE_FAIL("%s: node '%s' (add): shapes %s and %s differ", fn, name, a, b);
        }
        break;
    case OP_GLOBAL_AVG_POOL2D: out->dims[2] = out->dims[3] = 1; break;
    case OP_FLATTEN:
        out->rank = 2;
        out->dims[1] = x->count / x->dims[0];
        out->dims[2] = out->dims[3] = 1;
        break;
    case OP_CAT:
        out->dims[1] = 0;
        for (size_t j = 0; j < n->num_inputs; ++j) {
            if (in[j]->dims[0] != x->dims[0] || in[j]->dims[2] != x->dims[2] ||
                in[j]->dims[3] != x->dims[3]) {
                describe(x, a, sizeof a);
                describe(in[j], b, sizeof b);
                return SHAPE_FAIL("%s: node '%s' (cat): inputs of shapes %s and %s differ "
                                  "outside the channels", fn, name, a, b);
            }
            if (!dc_add_size(out->dims[1], in[j]->dims[1], &out->dims[1])) {
                return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: node '%s': sizes overflow", fn,
                               name);
            }
        }
        break;
    default: break;
    }
    if (!set_count(out)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: node '%s': the output size overflows",
                       fn, name);
    }
    return DYNCONV_OK;
}

typedef struct block {
    size_t offset, end;
    size_t owner;             /* value */
} block;

/* Greedy best fit over the live blocks (sorted by offset): the smallest gap between them that
 * holds `bytes`, else the end of the last block. Greedy in execution order, so not optimal: in
 * the folded `mixed` network the concatenation's buffer cannot use the gap its input's input
 * leaves, and the arena ends 64 KiB above the sum of the values live at once. */
static bool place(block *live, size_t *n_live, size_t bytes, size_t owner, size_t *offset,
                  size_t *peak) {
    size_t at = 0, best = SIZE_MAX, best_gap = SIZE_MAX, best_pos = 0, pos = 0;
    for (; pos < *n_live; ++pos) {
        if (live[pos].offset >= at && live[pos].offset - at >= bytes &&
            live[pos].offset - at < best_gap) {
            best = at;
            best_gap = live[pos].offset - at;
            best_pos = pos;
        }
        if (live[pos].end > at) {
            at = live[pos].end;
        }
    }
    if (best == SIZE_MAX) {
        best = at;
        best_pos = *n_live;
    }
    size_t end;
    if (!dc_add_size(best, bytes, &end)) {
        return false;
    }
    memmove(&live[best_pos + 1], &live[best_pos], (*n_live - best_pos) * sizeof *live);
    live[best_pos] = (block){best, end, owner};
    ++*n_live;
    *offset = best;
    if (end > *peak) {
        *peak = end;
    }
    return true;
}

/* Offsets of every value's buffer in the arena: a buffer is taken at its node's step and given
 * back after the last step that reads it (flatten reads through to its input's buffer). */
static dynconv_status plan_arena(const char *fn, const dynconv_network *net, const vshape *vs,
                                 const net_value *root, size_t *offsets, size_t *arena_bytes) {
    const size_t count = net->num_nodes;
    size_t *last = calloc(count + 1, sizeof *last);
    block *live = malloc((count + 1) * sizeof *live);
    if (last == NULL || live == NULL) {
        free(last);
        free(live);
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < count; ++i) {
        last[1 + i] = i; /* a value nobody reads lives for its own step */
        for (size_t j = 0; j < net->nodes[i].num_inputs; ++j) {
            last[root[net->nodes[i].inputs[j]]] = i;
        }
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        last[root[net->outputs[i]]] = count; /* copied out after the last step */
    }
    size_t n_live = 0, peak = 0;
    dynconv_status st = DYNCONV_OK;
    for (size_t i = 0; i < count && st == DYNCONV_OK; ++i) {
        for (size_t b = 0; b < n_live;) {
            if (last[live[b].owner] < i) {
                memmove(&live[b], &live[b + 1], (n_live - b - 1) * sizeof *live);
                --n_live;
            } else {
                ++b;
            }
        }
        offsets[1 + i] = 0;
        if (root[1 + i] != 1 + i) {
            continue; /* a view */
        }
        size_t bytes;
        if (!dc_mul_size(vs[1 + i].count, sizeof(float), &bytes) || !dc_align_up(bytes, &bytes) ||
            !place(live, &n_live, bytes, 1 + i, &offsets[1 + i], &peak)) {
            st = dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: the activation buffers overflow", fn);
        }
    }
    free(last);
    free(live);
    *arena_bytes = peak;
    return st;
}

/* The layers' shapes: the new one (restore false), or back to the committed one. */
static dynconv_status shape_layers(const char *fn, dynconv_network *net, const vshape *vs,
                                   size_t *workspace) {
    *workspace = 0;
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        if (n->layer == NULL) {
            continue;
        }
        const vshape *x = &vs[n->inputs[0]];
        const bool image = x->rank == 4;
        size_t bytes = 0;
        dynconv_status st = dc_conv2d_reshape_named(fn, n->layer, (int64_t)x->dims[0],
                                                    image ? (int64_t)x->dims[2] : 1,
                                                    image ? (int64_t)x->dims[3] : 1, NULL, NULL,
                                                    &bytes);
        if (st != DYNCONV_OK) {
            return st;
        }
        if (bytes > *workspace) {
            *workspace = bytes;
        }
    }
    return DYNCONV_OK;
}

/* Back to the shape in force (every layer accepted it before, and with caller-owned
 * workspaces their reshape allocates nothing, so this cannot fail). */
static void restore_layers(const char *fn, dynconv_network *net) {
    if (!net->shaped) {
        return;
    }
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        if (n->layer != NULL) {
            (void)dc_conv2d_reshape_named(fn, n->layer, (int64_t)net->batch,
                                          (int64_t)n->layer_h, (int64_t)n->layer_w, NULL, NULL,
                                          NULL);
        }
    }
}

/* Per-sample outputs from which a layer hands its channel means over: smaller ones stay in
 * cache until the next layer pools them itself, and handing over saves nothing there. Only from
 * layers on the generic path (im2col + BLAS, the depthwise loop), whose activation pass pools
 * each channel as it goes; on the engine and the Winograd path the means would take a pass of
 * their own over outputs that have left L2, about what the next layer's pooling costs.
 * Measured on DY-MobileNetV2 at batch 16, one thread (Xeon model 167, dynconv-net-profile):
 * the depthwise stride-2 layer from 112x112 took 15.4 ms instead of 20.8 with its input's
 * means handed over, the depthwise 144 at 56x56 13.5 instead of 15.0, the 1x1 144 -> 24 5.6
 * instead of 7.5; handing over from every convolution made the engine's producers slower by
 * about what their consumers gained (the stem 5.7 -> 6.8 ms, the 1x1 -> 32 layers at 28x28 0.3
 * to 0.7 ms each). */
enum { HANDOFF_BYTES = 1 << 20 };

static int handoff_mode = NET_HANDOFF_RULE;

void net_set_handoff(int mode) {
    handoff_mode = mode;
}

/* A dynamic convolution, which pools its input for the attention. */
static bool takes_over(const net_node *node) {
    return node->layer != NULL && node->kernels > 1 && node->op == OP_DYNAMIC_CONV2D;
}

/* Whether node i is a convolution whose output some dynamic convolution reads as its input:
 * its forward then writes the output's channel means for it. */
static bool hands_over(const dynconv_network *net, const vshape *vs, size_t i) {
    const net_node *node = &net->nodes[i];
    if (handoff_mode == NET_HANDOFF_NEVER || node->layer == NULL ||
        (node->op != OP_CONV2D && node->op != OP_DYNAMIC_CONV2D)) {
        return false;
    }
    if (handoff_mode == NET_HANDOFF_RULE &&
        (node->layer->core.engine_on || node->layer->core.wino_on ||
         vs[1 + i].count / vs[0].dims[0] < HANDOFF_BYTES / sizeof(float))) {
        return false;
    }
    for (size_t j = i + 1; j < net->num_nodes; ++j) {
        if (takes_over(&net->nodes[j]) && net->nodes[j].inputs[0] == 1 + i) {
            return true;
        }
    }
    return false;
}

dynconv_status net_reshape(const char *fn, dynconv_network *net, int64_t batch, int64_t height,
                           int64_t width, size_t *peak_bytes) {
    if (net == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: network is NULL", fn);
    }
    size_t n, h, w;
    TRY(dc_check_positive(fn, "batch", batch, &n));
    TRY(dc_check_positive(fn, "height", height, &h));
    TRY(dc_check_positive(fn, "width", width, &w));
    const size_t count = net->num_nodes;
    vshape *vs = calloc(count + 1, sizeof *vs);
    net_value *root = calloc(count + 1, sizeof *root);
    size_t *offsets = calloc(count + 1, sizeof *offsets);
    const vshape **ins = calloc(net->max_inputs, sizeof *ins);
    char *arena = NULL;
    void *workspace = NULL;
    float *attention = NULL;
    dynconv_status st = DYNCONV_OK;
    if (vs == NULL || root == NULL || offsets == NULL || ins == NULL) {
        st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    vs[0] = (vshape){4, {n, net->input_channels, h, w}, 0};
    if (!set_count(&vs[0])) {
        st = dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: the input size overflows", fn);
        goto done;
    }
    for (size_t i = 0; i < count && st == DYNCONV_OK; ++i) {
        const net_node *node = &net->nodes[i];
        for (size_t j = 0; j < node->num_inputs; ++j) {
            ins[j] = &vs[node->inputs[j]];
        }
        st = infer(fn, node, ins, &vs[1 + i]);
        root[1 + i] = node->op == OP_FLATTEN ? root[node->inputs[0]] : 1 + i;
    }
    size_t arena_bytes = 0, ws_bytes = 0, att_floats = 0;
    if (st == DYNCONV_OK) {
        st = plan_arena(fn, net, vs, root, offsets, &arena_bytes);
    }
    for (size_t i = 0; i < count && st == DYNCONV_OK; ++i) {
        const net_node *node = &net->nodes[i];
        if (node->layer != NULL && node->kernels > 1) {
            /* Each layer's rows start on a cache line. */
            const size_t rows = (n * node->kernels + 15) / 16 * 16;
            if (!dc_add_size(att_floats, rows, &att_floats) ||
                att_floats > SIZE_MAX / sizeof(float)) {
                st = dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: the attention rows overflow", fn);
            }
        }
    }
    if (st == DYNCONV_OK) {
        st = shape_layers(fn, net, vs, &ws_bytes);
        if (st != DYNCONV_OK) {
            restore_layers(fn, net);
        }
    }
    /* Layers whose output a dynamic layer reads as its input hand it the channel means. */
    size_t pooled_at = att_floats, handoffs = 0;
    for (size_t i = 0; i < count && st == DYNCONV_OK; ++i) {
        if (hands_over(net, vs, i)) {
            const net_node *node = &net->nodes[i];
            const size_t rows = (n * node->c_out + 15) / 16 * 16;
            if (node->c_out > SIZE_MAX / n - 15 || !dc_add_size(att_floats, rows, &att_floats) ||
                att_floats > SIZE_MAX / sizeof(float)) {
                restore_layers(fn, net);
                st = dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: the attention rows overflow", fn);
            }
            ++handoffs;
        }
    }
    if (st == DYNCONV_OK) {
        arena = arena_bytes ? dc_aligned_alloc(arena_bytes) : NULL;
        workspace = ws_bytes ? dc_aligned_alloc(ws_bytes) : NULL;
        attention = att_floats ? dc_aligned_alloc(att_floats * sizeof(float)) : NULL;
        if ((arena_bytes && arena == NULL) || (ws_bytes && workspace == NULL) ||
            (att_floats && attention == NULL)) {
            restore_layers(fn, net);
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                         "%s: cannot allocate %zu bytes of activations, %zu of workspace", fn,
                         arena_bytes, ws_bytes);
            goto done;
        }
        /* Commit. */
        dc_aligned_free(net->arena);
        dc_aligned_free(net->workspace);
        dc_aligned_free(net->attention);
        net->arena = arena, net->arena_bytes = arena_bytes;
        net->workspace = workspace, net->workspace_bytes = ws_bytes;
        net->attention = attention, net->attention_floats = att_floats;
        arena = NULL, workspace = NULL, attention = NULL;
        size_t att_at = 0;
        for (size_t i = 0; i < count; ++i) {
            net_node *node = &net->nodes[i];
            const vshape *x = &vs[node->inputs[0]];
            node->rank = vs[1 + i].rank;
            memcpy(node->shape, vs[1 + i].dims, sizeof node->shape);
            for (int d = node->rank; d < 4; ++d) {
                node->shape[d] = 1;
            }
            node->count = vs[1 + i].count;
            node->alias = root[1 + i];
            node->offset = offsets[1 + i];
            node->in_h = x->rank == 4 ? x->dims[2] : 1;
            node->in_w = x->rank == 4 ? x->dims[3] : 1;
            node->layer_h = node->in_h;
            node->layer_w = node->in_w;
            for (size_t j = 0; j < node->num_inputs; ++j) {
                node->input_len[j] = vs[node->inputs[j]].count / n;
            }
            node->attention = NULL;
            if (node->layer != NULL && node->kernels > 1) {
                node->attention = net->attention + att_at;
                att_at += (n * node->kernels + 15) / 16 * 16;
            }
            node->pooled_out = NULL;
            node->pooled_in = NULL;
            if (hands_over(net, vs, i)) {
                node->pooled_out = net->attention + pooled_at;
                pooled_at += (n * node->c_out + 15) / 16 * 16;
            }
        }
        for (size_t i = 0; i < count; ++i) {
            net_node *node = &net->nodes[i];
            if (takes_over(node) && node->inputs[0] > 0) {
                node->pooled_in = net->nodes[node->inputs[0] - 1].pooled_out;
            }
        }
        net->handoffs = handoffs;
        net->batch = n, net->height = h, net->width = w;
        net->input_count = vs[0].count;
        net->shaped = true;
        net->ran = false;
        if (peak_bytes != NULL) {
            *peak_bytes = arena_bytes + ws_bytes + att_floats * sizeof(float);
        }
    }
done:
    dc_aligned_free(arena);
    dc_aligned_free(workspace);
    dc_aligned_free(attention);
    free(vs);
    free(root);
    free(offsets);
    free(ins);
    return st;
}

static const float *value_ptr(const dynconv_network *net, const float *input, net_value v) {
    if (v == 0) {
        return input;
    }
    const net_value r = net->nodes[v - 1].alias;
    return r == 0 ? input : (const float *)(const void *)(net->arena + net->nodes[r - 1].offset);
}

dynconv_status net_forward(const char *fn, dynconv_network *net, const float *input,
                           float *const *outputs) {
    if (net == NULL || input == NULL || outputs == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       net == NULL ? "network" : input == NULL ? "input" : "outputs");
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        if (outputs[i] == NULL) {
            return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: outputs[%zu] is NULL", fn, i);
        }
    }
    if (!net->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        const size_t bytes = net_value_count(net, net->outputs[i]) * sizeof(float);
        if (dc_ranges_overlap(outputs[i], bytes, input, net->input_count * sizeof(float))) {
            return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: outputs[%zu] overlaps input", fn,
                           i);
        }
        for (size_t j = 0; j < i; ++j) {
            const size_t other = net_value_count(net, net->outputs[j]) * sizeof(float);
            if (dc_ranges_overlap(outputs[i], bytes, outputs[j], other)) {
                return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: outputs[%zu] overlaps "
                               "outputs[%zu]", fn, i, j);
            }
        }
    }
    for (size_t i = 0; i < net->num_nodes; ++i) {
        const net_node *n = &net->nodes[i];
        for (size_t j = 0; j < n->num_inputs; ++j) {
            net->input_ptrs[j] = value_ptr(net, input, n->inputs[j]);
        }
        struct timespec t0;
        if (net->profile != NULL) {
            clock_gettime(CLOCK_MONOTONIC, &t0);
        }
        float *out = (float *)(void *)(net->arena + n->offset);
        if (n->op == OP_LINEAR) {
            net_run_linear(net, n, net->input_ptrs[0], out);
        } else if (n->layer != NULL) {
            TRY(dc_conv2d_forward_pooled(fn, n->layer, net->input_ptrs[0], out, n->attention,
                                         net->workspace, net->workspace_bytes, n->pooled_in,
                                         n->pooled_out));
        } else if (n->op != OP_FLATTEN) {
            net_run_op(net, n, net->input_ptrs, out);
        }
        if (net->profile != NULL) {
            struct timespec t1;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            net->profile[i] += (double)(t1.tv_sec - t0.tv_sec) +
                               1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        }
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        memcpy(outputs[i], value_ptr(net, input, net->outputs[i]),
               net_value_count(net, net->outputs[i]) * sizeof(float));
    }
    net->ran = true;
    return DYNCONV_OK;
}
