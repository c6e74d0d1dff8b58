/* The graph of a network file (docs/file-format.md, "The graph" and "Ops"): every rule
 * python/dynconv/network_format.py's parse_graph checks, with its refusals, in its order where a
 * file breaks one rule. The result is net->nodes in an order that runs (Kahn's algorithm). */
#include "net.h"

#include "tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    A_STRIDE = 1 << 0,
    A_PADDING = 1 << 1,
    A_DILATION = 1 << 2,
    A_KERNEL = 1 << 3,
    A_GROUPS = 1 << 4,
    A_TEMPERATURE = 1 << 5,
    A_EPS = 1 << 6,
    A_COUNT_INCLUDE_PAD = 1 << 7,
    A_AXIS = 1 << 8,
    A_COUNT = 9
};
static const char *const ATTR_NAMES[A_COUNT] = {"stride",      "padding", "dilation",
                                               "kernel_size", "groups",  "temperature",
                                               "eps",         "count_include_pad", "axis"};
static const char *const SLOT_NAMES[SLOT_COUNT] = {"weight",     "bias",       "fc1_weight",
                                                  "fc1_bias",   "fc2_weight", "fc2_bias",
                                                  "running_mean", "running_var"};
#define S(x) (1u << SLOT_##x)
#define CONV_ATTRS (A_STRIDE | A_PADDING | A_DILATION | A_GROUPS)
#define DYN_REQUIRED (S(WEIGHT) | S(FC1_WEIGHT) | S(FC2_WEIGHT))
#define DYN_OPTIONAL (S(BIAS) | S(FC1_BIAS) | S(FC2_BIAS))

/* The ops table of the format: inputs (0: one or more), attributes, tensor slots. */
static const struct {
    const char *name;
    size_t arity;
    unsigned attrs, required, optional;
} OPS[OP_COUNT] = {
    [OP_CONV2D] = {"conv2d", 1, CONV_ATTRS, S(WEIGHT), S(BIAS)},
    [OP_DYNAMIC_CONV2D] = {"dynamic_conv2d", 1, CONV_ATTRS | A_TEMPERATURE, DYN_REQUIRED,
                           DYN_OPTIONAL},
    [OP_LINEAR] = {"linear", 1, 0, S(WEIGHT), S(BIAS)},
    [OP_DYNAMIC_LINEAR] = {"dynamic_linear", 1, A_TEMPERATURE, DYN_REQUIRED, DYN_OPTIONAL},
    [OP_BATCHNORM2D] = {"batchnorm2d", 1, A_EPS,
                        S(WEIGHT) | S(BIAS) | S(RUNNING_MEAN) | S(RUNNING_VAR), 0},
    [OP_RELU] = {"relu", 1, 0, 0, 0},
    [OP_RELU6] = {"relu6", 1, 0, 0, 0},
    [OP_ADD] = {"add", 2, 0, 0, 0},
    [OP_MAX_POOL2D] = {"max_pool2d", 1, A_KERNEL | A_STRIDE | A_PADDING | A_DILATION, 0, 0},
    [OP_AVG_POOL2D] = {"avg_pool2d", 1, A_KERNEL | A_STRIDE | A_PADDING | A_COUNT_INCLUDE_PAD, 0,
                       0},
    [OP_GLOBAL_AVG_POOL2D] = {"global_avg_pool2d", 1, 0, 0, 0},
    [OP_FLATTEN] = {"flatten", 1, 0, 0, 0},
    [OP_CAT] = {"cat", 0, A_AXIS, 0, 0},
};

const char *net_op_name(net_op op) { return OPS[op].name; }

static const char *const NODE_FIELDS[] = {"name",    "op",     "inputs", "attrs",
                                          "tensors", "module", "shape"};
static const char *const GRAPH_FIELDS[] = {"schema", "version", "inputs", "outputs", "nodes"};

/* Messages: "<fn>: <source>: <text>". */
dynconv_status net_bad(const char *fn, const char *source, const char *fmt, ...) {
    char text[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    return dc_fail(DYNCONV_ERROR_INVALID_MODEL, "%s: %s: %s", fn, source, text);
}

static bool is_int(const dj_value *v) { return v != NULL && v->type == DJ_INT; }
static bool is_number(const dj_value *v) {
    return v != NULL && (v->type == DJ_INT || v->type == DJ_DOUBLE);
}

static char *copy_string(const char *s) {
    char *c = malloc(strlen(s) + 1);
    if (c != NULL) {
        strcpy(c, s);
    }
    return c;
}

static dynconv_status read_pair(const char *fn, const char *source, const char *where,
                                const char *key, const dj_value *v, int64_t minimum,
                                size_t out[2]) {
    if (v->type != DJ_ARRAY || v->length != 2 || !is_int(&v->items[0]) ||
        !is_int(&v->items[1]) || v->items[0].integer < minimum ||
        v->items[1].integer < minimum) {
        return BAD("%s: attribute '%s' is not [a, b] with integers >= %lld", where, key,
                   (long long)minimum);
    }
    out[0] = (size_t)v->items[0].integer;
    out[1] = (size_t)v->items[1].integer;
    return DYNCONV_OK;
}

static dynconv_status read_attrs(const char *fn, const char *source, const char *where,
                                 const dj_value *attrs, net_node *n) {
    if (attrs->type != DJ_OBJECT) {
        return BAD("%s: 'attrs' is not an object", where);
    }
    const unsigned want = OPS[n->op].attrs;
    for (int a = 0; a < A_COUNT; ++a) {
        if ((want & (1u << a)) && dj_get(attrs, ATTR_NAMES[a]) == NULL) {
            return BAD("%s: op '%s' is missing attribute '%s'", where, OPS[n->op].name,
                       ATTR_NAMES[a]);
        }
    }
    for (size_t i = 0; i < attrs->length; ++i) {
        int a = 0;
        while (a < A_COUNT && strcmp(attrs->keys[i], ATTR_NAMES[a]) != 0) {
            ++a;
        }
        if (a == A_COUNT || !(want & (1u << a))) {
            return BAD("%s: op '%s' has an unknown attribute '%.80s'", where, OPS[n->op].name,
                       attrs->keys[i]);
        }
    }
    const dj_value *v;
    if ((v = dj_get(attrs, "stride")) != NULL) {
        TRY(read_pair(fn, source, where, "stride", v, 1, n->stride));
    }
    if ((v = dj_get(attrs, "padding")) != NULL) {
        TRY(read_pair(fn, source, where, "padding", v, 0, n->padding));
    }
    n->dilation[0] = n->dilation[1] = 1;
    if ((v = dj_get(attrs, "dilation")) != NULL) {
        TRY(read_pair(fn, source, where, "dilation", v, 1, n->dilation));
    }
    if ((v = dj_get(attrs, "kernel_size")) != NULL) {
        TRY(read_pair(fn, source, where, "kernel_size", v, 1, n->kernel));
    }
    n->groups = 1;
    if ((v = dj_get(attrs, "groups")) != NULL) {
        if (!is_int(v) || v->integer < 1) {
            return BAD("%s: attribute 'groups' is not an integer >= 1", where);
        }
        n->groups = (size_t)v->integer;
    }
    if ((v = dj_get(attrs, "temperature")) != NULL) {
        if (!is_number(v) || !isfinite(v->number) || !(v->number > 0) ||
            !((float)v->number > 0.0f) || isinf((float)v->number)) {
            return BAD("%s: attribute 'temperature' is not a finite number > 0", where);
        }
        n->temperature = v->number;
    }
    if ((v = dj_get(attrs, "eps")) != NULL) {
        if (!is_number(v) || !isfinite(v->number) || !(v->number >= 0)) {
            return BAD("%s: attribute 'eps' is not a finite number >= 0", where);
        }
        n->eps = v->number;
    }
    if ((v = dj_get(attrs, "count_include_pad")) != NULL) {
        if (v->type != DJ_BOOL) {
            return BAD("%s: attribute 'count_include_pad' is not true or false", where);
        }
        n->count_include_pad = v->boolean;
    }
    if ((v = dj_get(attrs, "axis")) != NULL && !(is_int(v) && v->integer == 1)) {
        return BAD("%s: attribute 'axis': only 1 (channels) is supported", where);
    }
    if (n->op == OP_MAX_POOL2D || n->op == OP_AVG_POOL2D) {
        /* As PyTorch: no window may lie in the padding only. */
        for (int d = 0; d < 2; ++d) {
            if (n->padding[d] > n->kernel[d] / 2) {
                return BAD("%s: padding [%zu, %zu] is more than half the kernel [%zu, %zu]",
                           where, n->padding[0], n->padding[1], n->kernel[0], n->kernel[1]);
            }
        }
    }
    return DYNCONV_OK;
}

static const net_tensor *find_tensor(const dynconv_network *net, const char *name) {
    size_t lo = 0, hi = net->num_tensors;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(net->tensors[mid].name, name);
        if (c == 0) {
            return &net->tensors[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return NULL;
}

static bool shape_is(const net_tensor *t, int rank, const size_t *dims) {
    if (t->rank != rank) {
        return false;
    }
    for (int d = 0; d < rank; ++d) {
        if (t->shape[d] != dims[d]) {
            return false;
        }
    }
    return true;
}

/* A slot that, when present, must have the shape `dims`. */
static dynconv_status expect(const char *fn, const char *source, const char *where,
                             const net_node *n, int slot, int rank, const size_t *dims) {
    const net_tensor *t = n->tensors[slot];
    if (t != NULL && !shape_is(t, rank, dims)) {
        char want[96] = "", got[128] = "";
        size_t at = 0;
        for (int d = 0; d < rank && at < sizeof want; ++d) {
            at += (size_t)snprintf(want + at, sizeof want - at, d ? ", %zu" : "%zu", dims[d]);
        }
        at = 0;
        for (int d = 0; d < t->rank && at < sizeof got; ++d) {
            at += (size_t)snprintf(got + at, sizeof got - at, d ? ", %zu" : "%zu", t->shape[d]);
        }
        return BAD("%s: tensor '%s' (%s) has shape [%s], expected [%s]: the shapes disagree",
                   where, t->name, SLOT_NAMES[slot], got, want);
    }
    return DYNCONV_OK;
}

/* The layer sizes from the tensors, and the agreement of their shapes. */
static dynconv_status check_shapes(const char *fn, const char *source, const char *where,
                                   net_node *n) {
    const net_tensor *w = n->tensors[SLOT_WEIGHT];
    switch (n->op) {
    case OP_CONV2D:
        if (w->rank != 4) {
            return BAD("%s: weight '%s' has rank %d, expected 4 [C_out, C_in/groups, kh, kw]",
                       where, w->name, w->rank);
        }
        if (w->shape[0] % n->groups) {
            return BAD("%s: C_out = %zu is not a multiple of groups = %zu", where, w->shape[0],
                       n->groups);
        }
        n->kernels = 1, n->c_out = w->shape[0], n->kh = w->shape[2], n->kw = w->shape[3];
        if (!dc_mul_size(w->shape[1], n->groups, &n->c_in)) {
            return BAD("%s: C_in overflows", where);
        }
        return expect(fn, source, where, n, SLOT_BIAS, 1, &n->c_out);
    case OP_LINEAR:
        if (w->rank != 2) {
            return BAD("%s: weight '%s' has rank %d, expected 2 [D_out, D_in]", where, w->name,
                       w->rank);
        }
        n->kernels = 1, n->c_out = w->shape[0], n->c_in = w->shape[1], n->kh = n->kw = 1;
        return expect(fn, source, where, n, SLOT_BIAS, 1, &n->c_out);
    case OP_DYNAMIC_CONV2D:
    case OP_DYNAMIC_LINEAR: {
        const bool conv = n->op == OP_DYNAMIC_CONV2D;
        const int rank = conv ? 5 : 3;
        if (w->rank != rank) {
            return BAD("%s: weight '%s' has rank %d, expected %d", where, w->name, w->rank, rank);
        }
        const net_tensor *fc1 = n->tensors[SLOT_FC1_WEIGHT], *fc2 = n->tensors[SLOT_FC2_WEIGHT];
        if (fc1->rank != 2 || fc2->rank != 2) {
            return BAD("%s: tensor '%s' is not a matrix [rows, cols]", where,
                       fc1->rank != 2 ? fc1->name : fc2->name);
        }
        n->kernels = w->shape[0], n->c_out = w->shape[1], n->hidden = fc1->shape[0];
        n->kh = conv ? w->shape[3] : 1, n->kw = conv ? w->shape[4] : 1;
        size_t c_in_w = w->shape[2];
        if (conv && !dc_mul_size(w->shape[2], n->groups, &c_in_w)) {
            return BAD("%s: C_in overflows", where);
        }
        if (fc1->shape[1] != c_in_w) {
            return BAD("%s: the attention takes %zu inputs, the kernels %zu", where,
                       fc1->shape[1], c_in_w);
        }
        n->c_in = c_in_w;
        if (conv && n->c_out % n->groups) {
            return BAD("%s: C_out = %zu is not a multiple of groups = %zu", where, n->c_out,
                       n->groups);
        }
        const size_t fc2_dims[2] = {n->kernels, n->hidden}, bias_dims[2] = {n->kernels, n->c_out};
        TRY(expect(fn, source, where, n, SLOT_FC2_WEIGHT, 2, fc2_dims));
        TRY(expect(fn, source, where, n, SLOT_BIAS, 2, bias_dims));
        TRY(expect(fn, source, where, n, SLOT_FC1_BIAS, 1, &n->hidden));
        return expect(fn, source, where, n, SLOT_FC2_BIAS, 1, &n->kernels);
    }
    case OP_BATCHNORM2D: {
        const net_tensor *m = n->tensors[SLOT_RUNNING_MEAN];
        if (m->rank != 1) {
            return BAD("%s: running_mean has rank %d, expected 1 [C]", where, m->rank);
        }
        n->c_in = n->c_out = m->shape[0];
        TRY(expect(fn, source, where, n, SLOT_WEIGHT, 1, m->shape));
        TRY(expect(fn, source, where, n, SLOT_BIAS, 1, m->shape));
        return expect(fn, source, where, n, SLOT_RUNNING_VAR, 1, m->shape);
    }
    default: return DYNCONV_OK;
    }
}

static dynconv_status read_tensor_slots(const char *fn, const char *source, const char *where,
                                        const dj_value *slots, dynconv_network *net,
                                        net_node *n) {
    if (slots->type != DJ_OBJECT) {
        return BAD("%s: 'tensors' is not an object of tensor names", where);
    }
    for (size_t i = 0; i < slots->length; ++i) {
        if (slots->items[i].type != DJ_STRING) {
            return BAD("%s: 'tensors' is not an object of tensor names", where);
        }
    }
    const unsigned required = OPS[n->op].required, known = required | OPS[n->op].optional;
    for (int s = 0; s < SLOT_COUNT; ++s) {
        if ((required & (1u << s)) && dj_get(slots, SLOT_NAMES[s]) == NULL) {
            return BAD("%s: op '%s' is missing tensor '%s'", where, OPS[n->op].name,
                       SLOT_NAMES[s]);
        }
    }
    for (size_t i = 0; i < slots->length; ++i) {
        int s = 0;
        while (s < SLOT_COUNT && strcmp(slots->keys[i], SLOT_NAMES[s]) != 0) {
            ++s;
        }
        if (s == SLOT_COUNT || !(known & (1u << s))) {
            return BAD("%s: op '%s' has an unknown tensor slot '%.80s'", where, OPS[n->op].name,
                       slots->keys[i]);
        }
    }
    for (size_t i = 0; i < slots->length; ++i) {
        int s = 0;
        while (strcmp(slots->keys[i], SLOT_NAMES[s]) != 0) {
            ++s;
        }
        net_tensor *t = (net_tensor *)find_tensor(net, slots->items[i].string);
        if (t == NULL) {
            return BAD("%s: tensor '%.120s' (%s) is not in the file", where,
                       slots->items[i].string, SLOT_NAMES[s]);
        }
        t->used = true;
        n->tensors[s] = t;
    }
    return check_shapes(fn, source, where, n);
}

/* One node of the file, everything but its edges. */
static dynconv_status read_node(const char *fn, const char *source, size_t index,
                                const dj_value *v, dynconv_network *net, net_node *n,
                                const dj_value **inputs_out) {
    char where[160];
    snprintf(where, sizeof where, "node %zu", index);
    if (v->type != DJ_OBJECT) {
        return BAD("%s is not an object", where);
    }
    bool exact = v->length == 7;
    for (size_t f = 0; exact && f < 7; ++f) {
        exact = dj_get(v, NODE_FIELDS[f]) != NULL;
    }
    if (!exact) {
        for (size_t i = 0; i < v->length; ++i) {
            size_t f = 0;
            while (f < 7 && strcmp(v->keys[i], NODE_FIELDS[f]) != 0) {
                ++f;
            }
            if (f == 7) {
                return BAD("%s: unknown field '%.80s' (the fields are name, op, inputs, attrs, "
                           "tensors, module, shape)", where, v->keys[i]);
            }
        }
        return BAD("%s: fields must be exactly name, op, inputs, attrs, tensors, module, shape",
                   where);
    }
    const dj_value *name = dj_get(v, "name"), *op = dj_get(v, "op"),
                   *inputs = dj_get(v, "inputs"), *module = dj_get(v, "module"),
                   *shape = dj_get(v, "shape");
    if (name->type != DJ_STRING || name->length == 0) {
        return BAD("%s: 'name' is not a non-empty string", where);
    }
    snprintf(where, sizeof where, "node '%.120s'", name->string);
    n->name = copy_string(name->string);
    if (n->name == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    n->node_index = index;
    int o = 0;
    while (o < OP_COUNT && !(op->type == DJ_STRING && strcmp(op->string, OPS[o].name) == 0)) {
        ++o;
    }
    if (o == OP_COUNT) {
        return BAD("%s: unknown op %s%.80s%s", where, op->type == DJ_STRING ? "'" : "",
                   op->type == DJ_STRING ? op->string : dj_type_name(op),
                   op->type == DJ_STRING ? "'" : "");
    }
    n->op = (net_op)o;
    bool strings = inputs->type == DJ_ARRAY;
    for (size_t i = 0; strings && i < inputs->length; ++i) {
        strings = inputs->items[i].type == DJ_STRING;
    }
    const size_t arity = OPS[o].arity;
    if (!strings || (arity ? inputs->length != arity : inputs->length < 1)) {
        return arity ? BAD("%s: op '%s' takes %zu input(s)", where, OPS[o].name, arity)
                     : BAD("%s: op '%s' takes one or more inputs", where, OPS[o].name);
    }
    *inputs_out = inputs;
    if (module->type != DJ_STRING) {
        return BAD("%s: 'module' is not a string", where);
    }
    n->module = copy_string(module->string);
    if (n->module == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    bool ints = shape->type == DJ_ARRAY;
    for (size_t i = 0; ints && i < shape->length; ++i) {
        ints = is_int(&shape->items[i]) && shape->items[i].integer >= 0;
    }
    if (!ints) {
        return BAD("%s: 'shape' is not a list of integers", where);
    }
    TRY(read_attrs(fn, source, where, dj_get(v, "attrs"), n));
    return read_tensor_slots(fn, source, where, dj_get(v, "tensors"), net, n);
}

typedef struct name_index {
    const char *name;
    size_t index;
} name_index;

static int by_name(const void *pa, const void *pb) {
    const name_index *a = pa, *b = pb;
    const int c = strcmp(a->name, b->name);
    return c ? c : (a->index < b->index ? -1 : a->index > b->index);
}

/* The value a name refers to: 0 for the input, 1 + file index for a node; SIZE_MAX if none. */
static size_t lookup(const name_index *sorted, size_t n, const char *input, const char *name) {
    if (strcmp(name, input) == 0) {
        return 0;
    }
    size_t lo = 0, hi = n;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int c = strcmp(sorted[mid].name, name);
        if (c == 0) {
            return 1 + sorted[mid].index;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return SIZE_MAX;
}

static dynconv_status read_header_fields(const char *fn, const char *source, const dj_value *g,
                                         dynconv_network *net) {
    if (g->type != DJ_OBJECT) {
        return BAD("'dynconv.graph' is not a JSON object");
    }
    const dj_value *schema = dj_get(g, "schema"), *version = dj_get(g, "version");
    if (schema == NULL || schema->type != DJ_STRING ||
        strcmp(schema->string, "dynconv.network") != 0) {
        return BAD("'dynconv.graph': schema %s%.80s%s is not 'dynconv.network'",
                   schema && schema->type == DJ_STRING ? "'" : "",
                   schema && schema->type == DJ_STRING ? schema->string : dj_type_name(schema),
                   schema && schema->type == DJ_STRING ? "'" : "");
    }
    if (!is_int(version) || version->integer != 1) {
        return is_int(version)
                   ? BAD("'dynconv.graph': schema version %lld is not supported (this reader "
                         "knows version 1)", (long long)version->integer)
                   : BAD("'dynconv.graph': schema version (%s) is not supported (this reader "
                         "knows version 1)", dj_type_name(version));
    }
    for (size_t i = 0; i < g->length; ++i) {
        size_t f = 0;
        while (f < 5 && strcmp(g->keys[i], GRAPH_FIELDS[f]) != 0) {
            ++f;
        }
        if (f == 5) {
            return BAD("'dynconv.graph': unknown field '%.80s'", g->keys[i]);
        }
    }
    const dj_value *in = dj_get(g, "inputs"), *outs = dj_get(g, "outputs"),
                   *nodes = dj_get(g, "nodes");
    const dj_value *in0 = in && in->type == DJ_ARRAY && in->length == 1 ? &in->items[0] : NULL;
    const dj_value *in_name = dj_get(in0, "name"), *in_shape = dj_get(in0, "shape");
    bool ok = in0 != NULL && in0->type == DJ_OBJECT && in0->length == 2 && in_name != NULL &&
              in_name->type == DJ_STRING && in_name->length > 0 && in_shape != NULL &&
              in_shape->type == DJ_ARRAY && in_shape->length == 4;
    for (size_t d = 0; ok && d < 4; ++d) {
        ok = is_int(&in_shape->items[d]) && in_shape->items[d].integer > 0;
    }
    if (!ok) {
        return BAD("'inputs' must be one input {\"name\": ..., \"shape\": [N, C, H, W]}");
    }
    ok = outs != NULL && outs->type == DJ_ARRAY && outs->length > 0;
    for (size_t i = 0; ok && i < outs->length; ++i) {
        ok = outs->items[i].type == DJ_STRING;
    }
    if (!ok) {
        return BAD("'outputs' must be a non-empty list of value names");
    }
    if (nodes == NULL || nodes->type != DJ_ARRAY || nodes->length == 0) {
        return BAD("'nodes' must be a non-empty list");
    }
    net->input_name = copy_string(in_name->string);
    if (net->input_name == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    if ((uint64_t)in_shape->items[1].integer > SIZE_MAX) {
        return BAD("'inputs': the channel count is too large");
    }
    net->input_channels = (size_t)in_shape->items[1].integer;
    return DYNCONV_OK;
}

dynconv_status net_read_graph(const char *fn, const char *source, const char *text, size_t len,
                              dynconv_network *net) {
    dj_value g;
    char why[256];
    bool oom = false;
    if (!dj_parse(text, len, &g, why, sizeof why, &oom)) {
        return oom ? dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn)
                   : BAD("'dynconv.graph' is not valid JSON: %s", why);
    }
    dynconv_status st = read_header_fields(fn, source, &g, net);
    const dj_value *nodes = dj_get(&g, "nodes"), *outs = dj_get(&g, "outputs");
    const size_t count = st == DYNCONV_OK ? nodes->length : 0;
    net_node *file = st == DYNCONV_OK ? calloc(count, sizeof *file) : NULL;
    const dj_value **inputs = st == DYNCONV_OK ? calloc(count, sizeof *inputs) : NULL;
    name_index *sorted = st == DYNCONV_OK ? calloc(count, sizeof *sorted) : NULL;
    size_t *order = st == DYNCONV_OK ? calloc(count, sizeof *order) : NULL;
    if (st == DYNCONV_OK && (file == NULL || inputs == NULL || sorted == NULL || order == NULL)) {
        st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
    }
    size_t parsed = 0;
    for (; st == DYNCONV_OK && parsed < count; ++parsed) {
        st = read_node(fn, source, parsed, &nodes->items[parsed], net, &file[parsed],
                       &inputs[parsed]);
        if (st == DYNCONV_OK && strcmp(file[parsed].name, net->input_name) == 0) {
            st = BAD("node '%.120s': the name is used twice (it is the input's)",
                     file[parsed].name);
        }
    }
    if (st == DYNCONV_OK) {
        for (size_t i = 0; i < count; ++i) {
            sorted[i] = (name_index){file[i].name, i};
        }
        qsort(sorted, count, sizeof *sorted, by_name);
        for (size_t i = 1; st == DYNCONV_OK && i < count; ++i) {
            if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
                st = BAD("node '%.120s': the name is used twice", sorted[i].name);
            }
        }
    }
    /* Edges: every input and output names the graph input or a node. */
    for (size_t i = 0; st == DYNCONV_OK && i < count; ++i) {
        net_node *n = &file[i];
        n->num_inputs = inputs[i]->length;
        n->inputs = malloc(n->num_inputs * sizeof *n->inputs);
        if (n->inputs == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
            break;
        }
        for (size_t j = 0; st == DYNCONV_OK && j < n->num_inputs; ++j) {
            const char *v = inputs[i]->items[j].string;
            n->inputs[j] = lookup(sorted, count, net->input_name, v);
            if (n->inputs[j] == SIZE_MAX) {
                st = BAD("node '%.120s': input '%.120s' is neither the graph input nor a node "
                         "(dangling edge)", n->name, v);
            }
        }
    }
    if (st == DYNCONV_OK) {
        net->num_outputs = outs->length;
        net->outputs = malloc(outs->length * sizeof *net->outputs);
        if (net->outputs == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        }
    }
    for (size_t i = 0; st == DYNCONV_OK && i < net->num_outputs; ++i) {
        net->outputs[i] = lookup(sorted, count, net->input_name, outs->items[i].string);
        if (net->outputs[i] == SIZE_MAX) {
            st = BAD("output '%.120s' is neither the graph input nor a node (dangling edge)",
                     outs->items[i].string);
        }
    }
    if (st == DYNCONV_OK) {
        st = net_order_nodes(fn, source, file, count, order);
    }
    for (size_t i = 0; st == DYNCONV_OK && i < net->num_tensors; ++i) {
        if (!net->tensors[i].used) {
            st = BAD("tensor '%.120s' belongs to no node", net->tensors[i].name);
        }
    }
    if (st == DYNCONV_OK) {
        /* Execution order: value 1 + file index becomes 1 + position in `order`. */
        size_t *pos = malloc(count * sizeof *pos);
        net->nodes = malloc(count * sizeof *net->nodes);
        if (pos == NULL || net->nodes == NULL) {
            free(pos);
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        } else {
            for (size_t i = 0; i < count; ++i) {
                pos[order[i]] = i;
            }
            for (size_t i = 0; i < count; ++i) {
                net->nodes[i] = file[order[i]];
                net_node *n = &net->nodes[i];
                for (size_t j = 0; j < n->num_inputs; ++j) {
                    n->inputs[j] = n->inputs[j] ? 1 + pos[n->inputs[j] - 1] : 0;
                }
            }
            for (size_t i = 0; i < net->num_outputs; ++i) {
                net->outputs[i] = net->outputs[i] ? 1 + pos[net->outputs[i] - 1] : 0;
            }
            net->num_nodes = count;
            free(pos);
            free(file);
            file = NULL;
        }
    }
    if (file != NULL) {
        /* Failure: free what the nodes hold (the network frees nothing of them). */
        for (size_t i = 0; i < count; ++i) {
            free(file[i].name);
            free(file[i].module);
            free(file[i].inputs);
        }
        free(file);
    }
    free(inputs);
    free(sorted);
    free(order);
    dj_free(&g);
    return st;
}
