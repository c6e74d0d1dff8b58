/* What create does to the ordered graph before it runs: BatchNorm folding and activation fusion
 * (unless DYNCONV_NETWORK_NO_FUSION), the parameters each op holds, and the layer handles of
 * the convolutions and linear layers. */
#include "net.h"

#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_conv(const net_node *n) {
    return n->op == OP_CONV2D || n->op == OP_DYNAMIC_CONV2D;
}

static bool is_layer(const net_node *n) {
    return is_conv(n) || n->op == OP_LINEAR || n->op == OP_DYNAMIC_LINEAR;
}

/* W'_k = W_k * g/s and b'_k = (b_k - m) * g/s + beta per output channel, s = sqrt(var + eps),
 * for each of the K kernels: exact for a dynamic layer too, since its attention sums to one
 * (sum_k pi_k b'_k = (sum_k pi_k b_k - m) g/s + beta). Computed in double, rounded once. */
static dynconv_status fold_batchnorm(const char *fn, net_node *conv, const net_node *bn) {
    const size_t k = conv->kernels, c_out = conv->c_out;
    const size_t per_channel = conv->c_in / conv->groups * conv->kh * conv->kw;
    size_t wcount, total;
    if (!dc_mul_size(k, c_out * per_channel, &wcount) || !dc_add_size(wcount, k * c_out, &total)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: node '%s': folded sizes overflow", fn,
                       conv->name);
    }
    float *owned = dc_aligned_alloc(total * sizeof(float));
    if (owned == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                       "%s: node '%s': cannot allocate the folded parameters", fn, conv->name);
    }
    const float *g = bn->tensors[SLOT_WEIGHT]->data, *beta = bn->tensors[SLOT_BIAS]->data;
    const float *mean = bn->tensors[SLOT_RUNNING_MEAN]->data;
    const float *var = bn->tensors[SLOT_RUNNING_VAR]->data;
    float *w = owned, *b = owned + wcount;
    for (size_t kk = 0; kk < k; ++kk) {
        for (size_t c = 0; c < c_out; ++c) {
            const double scale = (double)g[c] / sqrt((double)var[c] + bn->eps);
            const size_t row = kk * c_out + c;
            for (size_t i = 0; i < per_channel; ++i) {
                w[row * per_channel + i] = (float)((double)conv->weight[row * per_channel + i] *
                                                   scale);
            }
            const double bias = conv->bias != NULL ? (double)conv->bias[row] : 0.0;
            b[row] = (float)((bias - (double)mean[c]) * scale + (double)beta[c]);
        }
    }
    dc_aligned_free(conv->owned);
    conv->owned = owned;
    conv->weight = w;
    conv->bias = b;
    conv->fused |= DYNCONV_NETWORK_FUSED_BATCHNORM;
    return DYNCONV_OK;
}

/* Every reference to value `from` (node inputs after `at`, the outputs) now reads `to`. */
static void redirect(dynconv_network *net, size_t at, net_value from, net_value to) {
    for (size_t i = at; i < net->num_nodes; ++i) {
        for (size_t j = 0; j < net->nodes[i].num_inputs; ++j) {
            if (net->nodes[i].inputs[j] == from) {
                net->nodes[i].inputs[j] = to;
            }
        }
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        if (net->outputs[i] == from) {
            net->outputs[i] = to;
        }
    }
}

static dynconv_status fuse(const char *fn, dynconv_network *net) {
    const size_t count = net->num_nodes;
    /* readers[v]: how many times value v is read (edges and outputs). */
    size_t *readers = calloc(count + 1, sizeof *readers);
    bool *removed = calloc(count, sizeof *removed);
    size_t *map = calloc(count + 1, sizeof *map);
    dynconv_status st = DYNCONV_OK;
    if (readers == NULL || removed == NULL || map == NULL) {
        st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    for (size_t i = 0; i < count; ++i) {
        for (size_t j = 0; j < net->nodes[i].num_inputs; ++j) {
            ++readers[net->nodes[i].inputs[j]];
        }
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        ++readers[net->outputs[i]];
    }
    for (size_t i = 0; st == DYNCONV_OK && i < count; ++i) {
        net_node *n = &net->nodes[i];
        const net_value v = n->inputs[0];
        if (v == 0 || readers[v] != 1) {
            continue;
        }
        net_node *p = &net->nodes[v - 1];
        /* A ReLU behind a residual add (ResNet's blocks) runs in the add's pass too. */
        const bool add_act = p->op == OP_ADD && (n->op == OP_RELU || n->op == OP_RELU6);
        if (!is_conv(p) && !add_act) {
            continue;
        }
        if (n->op == OP_BATCHNORM2D && p->fused == 0 && p->c_out == n->c_in) {
            st = fold_batchnorm(fn, p, n);
        } else if ((n->op == OP_RELU || n->op == OP_RELU6) &&
                   !(p->fused & (DYNCONV_NETWORK_FUSED_RELU | DYNCONV_NETWORK_FUSED_RELU6))) {
            p->fused |= n->op == OP_RELU ? DYNCONV_NETWORK_FUSED_RELU : DYNCONV_NETWORK_FUSED_RELU6;
        } else {
            continue;
        }
        if (st == DYNCONV_OK) {
            removed[i] = true;
            readers[v] = readers[1 + i];
            redirect(net, i + 1, 1 + i, v);
        }
    }
    if (st != DYNCONV_OK) {
        goto done;
    }
    /* Compact: the removed nodes go, values are renumbered. */
    size_t kept = 0;
    for (size_t i = 0; i < count; ++i) {
        if (removed[i]) {
            net_free_node(&net->nodes[i]);
            continue;
        }
        map[1 + i] = 1 + kept;
        net->nodes[kept++] = net->nodes[i];
    }
    net->num_nodes = kept;
    for (size_t i = 0; i < kept; ++i) {
        for (size_t j = 0; j < net->nodes[i].num_inputs; ++j) {
            net->nodes[i].inputs[j] = map[net->nodes[i].inputs[j]];
        }
    }
    for (size_t i = 0; i < net->num_outputs; ++i) {
        net->outputs[i] = map[net->outputs[i]];
    }
done:
    free(readers);
    free(removed);
    free(map);
    return st;
}

dynconv_status net_fold(const char *fn, dynconv_network *net, bool fusion) {
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        if (is_layer(n)) {
            n->weight = n->tensors[SLOT_WEIGHT]->data;
            n->bias = n->tensors[SLOT_BIAS] ? n->tensors[SLOT_BIAS]->data : NULL;
        }
    }
    if (fusion) {
        TRY(fuse(fn, net));
    }
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        int64_t p = 0;
        if (is_layer(n)) {
            p = (int64_t)(n->kernels * n->c_out * (n->c_in / n->groups) * n->kh * n->kw);
            p += n->bias != NULL ? (int64_t)(n->kernels * n->c_out) : 0;
            for (int s = SLOT_FC1_WEIGHT; s <= SLOT_FC2_BIAS; ++s) {
                p += n->tensors[s] ? (int64_t)n->tensors[s]->count : 0;
            }
        } else if (n->op == OP_BATCHNORM2D) {
            p = 4 * (int64_t)n->c_in;
            n->bn_scale = malloc(2 * (n->c_in ? n->c_in : 1) * sizeof(float));
            if (n->bn_scale == NULL) {
                return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
            }
            n->bn_shift = n->bn_scale + n->c_in;
            for (size_t c = 0; c < n->c_in; ++c) {
                const double scale = (double)n->tensors[SLOT_WEIGHT]->data[c] /
                                     sqrt((double)n->tensors[SLOT_RUNNING_VAR]->data[c] + n->eps);
                n->bn_scale[c] = (float)scale;
                n->bn_shift[c] = (float)((double)n->tensors[SLOT_BIAS]->data[c] -
                                         (double)n->tensors[SLOT_RUNNING_MEAN]->data[c] * scale);
            }
        }
        n->parameters = p;
    }
    return DYNCONV_OK;
}

dynconv_status net_create_layers(const char *fn, const char *source, dynconv_network *net) {
    /* The attention arrays of one-kernel layers are required by the layer API but never read
     * (with K = 1 the attention is not run): one zero array serves them all. */
    size_t widest = 1;
    for (size_t i = 0; i < net->num_nodes; ++i) {
        if (is_layer(&net->nodes[i]) && net->nodes[i].kernels == 1 &&
            net->nodes[i].c_in > widest) {
            widest = net->nodes[i].c_in;
        }
    }
    net->zeros = calloc(widest, sizeof(float));
    if (net->zeros == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    for (size_t i = 0; i < net->num_nodes; ++i) {
        net_node *n = &net->nodes[i];
        if (!is_layer(n)) {
            continue;
        }
        const bool dynamic = n->op == OP_DYNAMIC_CONV2D || n->op == OP_DYNAMIC_LINEAR;
        const bool conv = is_conv(n);
        const dynconv_conv2d_geometry g = {
            (int64_t)n->c_in,  (int64_t)n->c_out, (int64_t)n->kh,
            (int64_t)n->kw,    conv ? (int64_t)n->stride[0] : 1,
            conv ? (int64_t)n->stride[1] : 1,    conv ? (int64_t)n->padding[0] : 0,
            conv ? (int64_t)n->padding[1] : 0,   conv ? (int64_t)n->dilation[0] : 1,
            conv ? (int64_t)n->dilation[1] : 1,  (int64_t)n->groups,
            (int64_t)n->kernels, dynamic ? (int64_t)n->hidden : 1};
        const dynconv_conv2d_weights w = {
            n->weight,
            n->bias,
            dynamic ? n->tensors[SLOT_FC1_WEIGHT]->data : net->zeros,
            dynamic && n->tensors[SLOT_FC1_BIAS] ? n->tensors[SLOT_FC1_BIAS]->data : NULL,
            dynamic ? n->tensors[SLOT_FC2_WEIGHT]->data : net->zeros,
            dynamic && n->tensors[SLOT_FC2_BIAS] ? n->tensors[SLOT_FC2_BIAS]->data : NULL};
        const dynconv_status st = dc_conv2d_create_named(
            fn, &g, &w, dynamic ? (float)n->temperature : 1.0f,
            DYNCONV_FLAG_BORROW_WEIGHTS | DYNCONV_FLAG_EXTERNAL_WORKSPACE, &n->layer);
        if (st == DYNCONV_ERROR_INVALID_ARGUMENT || st == DYNCONV_ERROR_SIZE_OVERFLOW) {
            /* A size the layer cannot take (an empty kernel, more than the BLAS indexes). */
            char why[256];
            snprintf(why, sizeof why, "%s", dynconv_last_error_message());
            return BAD("node '%.120s': the layer is refused: %s", n->name, why);
        }
        TRY(st);
        /* The network never changes its weights: the engine's packed copy is made once here,
         * as for a layer's own weights (borrowed ones would be mixed and packed in every
         * forward, or, K sets over 8 MiB, left to im2col + BLAS: measured on DY-ResNet-18's
         * 512-channel layers at batch 16, 60 ms per layer instead of 83). */
        TRY(dc_conv2d_pack_borrowed(fn, n->layer));
        n->layer->core.activation = (n->fused & DYNCONV_NETWORK_FUSED_RELU)    ? DC_ACTIVATION_RELU
                                    : (n->fused & DYNCONV_NETWORK_FUSED_RELU6) ? DC_ACTIVATION_RELU6
                                                                               : DC_ACTIVATION_NONE;
    }
    return DYNCONV_OK;
}
