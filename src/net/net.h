/* Network layer: a whole network read from a safetensors file (docs/file-format.md, section
 * "Networks") and run with the API layer's conv2d handles. Shared by the layer's translation
 * units only. */
#ifndef DYNCONV_SRC_NET_H
#define DYNCONV_SRC_NET_H

#include "internal.h"
#include "json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The ops of graph version 1, in the order of the format's table. */
typedef enum net_op {
    OP_CONV2D,
    OP_DYNAMIC_CONV2D,
    OP_LINEAR,
    OP_DYNAMIC_LINEAR,
    OP_BATCHNORM2D,
    OP_RELU,
    OP_RELU6,
    OP_ADD,
    OP_MAX_POOL2D,
    OP_AVG_POOL2D,
    OP_GLOBAL_AVG_POOL2D,
    OP_FLATTEN,
    OP_CAT,
    OP_COUNT
} net_op;

const char *net_op_name(net_op op);

/* Tensor slots (a node's `tensors` keys). */
enum {
    SLOT_WEIGHT,
    SLOT_BIAS,
    SLOT_FC1_WEIGHT,
    SLOT_FC1_BIAS,
    SLOT_FC2_WEIGHT,
    SLOT_FC2_BIAS,
    SLOT_RUNNING_MEAN,
    SLOT_RUNNING_VAR,
    SLOT_COUNT
};

#define NET_MAX_RANK 8

/* One F32 tensor of the file, its data copied into the network's parameter block. */
typedef struct net_tensor {
    char *name;
    int rank;
    size_t shape[NET_MAX_RANK];
    size_t count;             /* elements */
    const float *data;
    bool used;
} net_tensor;

/* A value is 0 for the graph input, 1 + i for the output of node i of net->nodes. */
typedef size_t net_value;

typedef struct net_node {
    char *name, *module;
    net_op op;
    net_value *inputs;
    size_t num_inputs;
    size_t node_index;        /* position in the file, for messages before ordering */

    /* Attributes (those the op takes). */
    size_t stride[2], padding[2], dilation[2], kernel[2], groups;
    double temperature, eps;
    bool count_include_pad;

    const net_tensor *tensors[SLOT_COUNT];

    /* Layers (conv2d, dynamic_conv2d, linear, dynamic_linear): the handle, its parameters
     * (folded copies owned here, or the file's tensors), its sizes. */
    dynconv_conv2d *layer;
    float *owned;             /* folded weight and bias */
    const float *weight, *bias;
    size_t kernels, c_in, c_out, kh, kw, hidden;
    uint32_t fused;           /* DYNCONV_NETWORK_FUSED_* */
    int64_t parameters;
    float *bn_scale, *bn_shift; /* batchnorm2d run as an op: per channel, from doubles */

    /* Set by reshape. */
    int rank;
    size_t shape[4];
    size_t count;             /* elements of the output */
    size_t in_h, in_w;        /* the (first) input's spatial size (pools) */
    size_t layer_h, layer_w;  /* the spatial size the layer handle is shaped for */
    size_t *input_len;        /* floats per sample of each input (cat), num_inputs entries */
    net_value alias;          /* flatten: the value whose buffer this one is (else itself) */
    size_t offset;            /* byte offset in the activation arena */
    size_t last_use;          /* last step that reads the value's buffer */
    float *attention;         /* dynamic layers: [N, K] rows inside net->attention */
    /* The squeeze handed from a layer to a dynamic layer that reads its output (set by
     * reshape; NULL when not planned): the producer writes its output's channel means to
     * pooled_out [N, c_out] while each sample's output is in cache, and the consumer takes
     * them as pooled_in instead of reading its input once more. */
    float *pooled_out;
    const float *pooled_in;
} net_node;

struct dynconv_network {
    net_tensor *tensors;
    size_t num_tensors;
    float *params;            /* every tensor's data */
    float *zeros;             /* the attention arrays of static layers (never read) */

    char *input_name;
    size_t input_channels;
    net_node *nodes;          /* in execution order (after folding) */
    size_t num_nodes;
    net_value *outputs;
    size_t num_outputs;

    size_t max_inputs;        /* most inputs of one node */
    const float **input_ptrs; /* max_inputs entries: forward's inputs of a node */

    /* Threads shared by every layer. */
    dynconv_threadpool *pool;
    size_t threads_requested;

    /* The shape in force. */
    bool shaped, ran;
    size_t batch, height, width;
    size_t input_count;       /* floats of the input */
    char *arena;              /* activations */
    size_t arena_bytes;
    void *workspace;          /* shared by every layer handle */
    size_t workspace_bytes;
    float *attention;         /* the attention rows of every dynamic layer, then the handed
                               * over channel means (net_node.pooled_out) */
    size_t attention_floats;
    size_t handoffs;          /* layers whose output's means reshape planned to hand over */

    /* Per-node timing (bench/net_profile.c, through the internal layers): when not NULL,
     * forward adds each node's wall time in seconds to profile[i] (num_nodes entries, in
     * execution order). NULL (always, through the public API): forward reads no clock. */
    double *profile;
};

/* The file's bytes as a network: container, graph, tensors, order, folding, layer handles.
 * `source` names the file in messages ("<memory>"). */
dynconv_status net_load(const char *fn, const char *source, const unsigned char *data,
                        size_t size, uint32_t flags, dynconv_network **out);
/* Frees what one node owns (names, edges, parameters it made, its layer) and zeroes it. */
void net_free_node(net_node *n);
void net_free(dynconv_network *net);

/* The container: tensors (F32 only, data copied) and the graph's JSON text (malloc'd). */
dynconv_status net_read_container(const char *fn, const char *source, const unsigned char *data,
                                  size_t size, dynconv_network *net, char **graph_text,
                                  size_t *graph_len);

/* The graph: checks every rule of the format and fills net->nodes in execution order. */
dynconv_status net_read_graph(const char *fn, const char *source, const char *text, size_t len,
                              dynconv_network *net);

/* An INVALID_MODEL failure: "<fn>: <source>: <text>". */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
dynconv_status net_bad(const char *fn, const char *source, const char *fmt, ...);
#define BAD(...) net_bad(fn, source, __VA_ARGS__)

/* Kahn's algorithm: order[] receives the file indices of the nodes in an order that runs
 * (inputs are 0 for the graph input, 1 + file index otherwise); a cycle is INVALID_MODEL. */
dynconv_status net_order_nodes(const char *fn, const char *source, net_node *nodes,
                               size_t count, size_t *order);

/* BatchNorm folding and activation fusion on the ordered nodes. */
dynconv_status net_fold(const char *fn, dynconv_network *net, bool fusion);

/* The layer handles of the conv2d / linear nodes (after folding). */
dynconv_status net_create_layers(const char *fn, const char *source, dynconv_network *net);

/* For tests: which layers reshape plans to hand their output's channel means over to a
 * dynamic layer that reads it (net_node.pooled_out): NEVER (every dynamic layer pools its own
 * input), RULE (the default: where it pays, plan.c) or ALWAYS (every convolution with such a
 * reader, on any path). The results are the same bits in all three. */
enum { NET_HANDOFF_NEVER = 0, NET_HANDOFF_RULE = 1, NET_HANDOFF_ALWAYS = 2 };
void net_set_handoff(int mode);

/* The bodies of reshape and forward (plan.c). */
dynconv_status net_reshape(const char *fn, dynconv_network *net, int64_t batch, int64_t height,
                           int64_t width, size_t *peak_bytes);
dynconv_status net_forward(const char *fn, dynconv_network *net, const float *input,
                           float *const *outputs);

/* Floats of value v at the shape in force. */
static inline size_t net_value_count(const dynconv_network *net, net_value v) {
    return v == 0 ? net->input_count : net->nodes[v - 1].count;
}

/* The ops the network runs itself (on the network's pool); inputs and output as reshaped. */
void net_run_op(const dynconv_network *net, const net_node *node, const float *const *in,
                float *out);

/* A static linear layer on the whole batch, y [N, out] = x [N, in] W^T + b, which reads W once
 * per four samples instead of once per sample (the layer handle's way: 14.5 ms for
 * MobileNetV2's 1280 -> 1000 classifier at batch 16, about 1 ms this way): up to four samples
 * the attention's small-batch product, each output the same bits whatever the thread count;
 * beyond that sgemm. Either way the network's threads share the outputs. The handle stays for
 * the checks of create and reshape, and for the dynamic linear layers. */
void net_run_linear(const dynconv_network *net, const net_node *node, const float *x,
                    float *out);

/* A pair's output size (floor mode), false when the window does not fit the padded input. */
bool net_window_out(size_t in, size_t k, size_t s, size_t p, size_t d, size_t *out);

#endif
