/* A dynamic layer (convolution or linear) from the tensors of a safetensors file, by PyTorch
 * state_dict names. The sizes come from the tensors' shapes, the rest from the file's metadata
 * (or the caller's overrides), never from defaults; every inconsistency is reported with the
 * tensor names or metadata keys involved. */
#include "dcio_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The attention's two layers under either naming scheme. */
static const char *const fc_names[2][4] = {
    {"attention.fc1.weight", "attention.fc1.bias", "attention.fc2.weight", "attention.fc2.bias"},
    {"attention.net.0.weight", "attention.net.0.bias", "attention.net.2.weight",
     "attention.net.2.bias"},
};

bool dcio_parse_pair(const char *text, int64_t min, int64_t v[2]) {
    int64_t parsed[2] = {0, 0};
    int count = 0;
    const char *p = text;
    while (count < 2) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        int64_t x = 0;
        while (*p >= '0' && *p <= '9') {
            if (x > (INT64_MAX - 9) / 10) {
                return false;
            }
            x = x * 10 + (*p++ - '0');
        }
        if (x < min) {
            return false;
        }
        parsed[count++] = x;
        if (*p == '\0') {
            break;
        }
        if (*p != ',' || count == 2) {
            return false;
        }
        ++p;
    }
    v[0] = parsed[0];
    v[1] = count == 2 ? parsed[1] : parsed[0];
    return true;
}

/* Decimal digits, an optional fraction and an optional exponent, nothing else: strtod alone
 * would also take white space, a sign, hex floats and "inf" (the Python reader, which the
 * same files must satisfy, takes exactly this; see docs/file-format.md). */
static bool decimal_number(const char *p) {
    const char *start = p;
    while (*p >= '0' && *p <= '9') {
        ++p;
    }
    bool digits = p > start;
    if (*p == '.') {
        const char *frac = ++p;
        while (*p >= '0' && *p <= '9') {
            ++p;
        }
        digits = digits || p > frac;
    }
    if (!digits) {
        return false;
    }
    if (*p == 'e' || *p == 'E') {
        ++p;
        if (*p == '+' || *p == '-') {
            ++p;
        }
        const char *exp = p;
        while (*p >= '0' && *p <= '9') {
            ++p;
        }
        if (p == exp) {
            return false;
        }
    }
    return *p == '\0';
}

bool dcio_parse_temperature(const char *text, float *out) {
    if (!decimal_number(text)) {
        return false;
    }
    char *end;
    errno = 0;
    const double d = strtod(text, &end);
    if (*end != '\0' || errno != 0 || !isfinite(d) || !(d > 0) || d > 3.0e38) {
        return false;
    }
    const float f = (float)d;
    if (!(f > 0.0f)) {
        return false;
    }
    *out = f;
    return true;
}

void dcio_layer_free(dcio_layer *layer) {
    if (layer == NULL) {
        return;
    }
    for (int i = 0; i < DCIO_LAYER_TENSORS; ++i) {
        free(layer->tensor[i]);
        free(layer->name[i]);
        layer->tensor[i] = NULL;
        layer->name[i] = NULL;
    }
}

dynconv_conv2d_weights dcio_layer_weights(const dcio_layer *layer) {
    dynconv_conv2d_weights w = {
        layer->tensor[DCIO_LAYER_WEIGHT],     layer->tensor[DCIO_LAYER_BIAS],
        layer->tensor[DCIO_LAYER_FC1_WEIGHT], layer->tensor[DCIO_LAYER_FC1_BIAS],
        layer->tensor[DCIO_LAYER_FC2_WEIGHT], layer->tensor[DCIO_LAYER_FC2_BIAS]};
    return w;
}

dynconv_linear_weights dcio_layer_linear_weights(const dcio_layer *layer) {
    dynconv_linear_weights w = {
        layer->tensor[DCIO_LAYER_WEIGHT],     layer->tensor[DCIO_LAYER_BIAS],
        layer->tensor[DCIO_LAYER_FC1_WEIGHT], layer->tensor[DCIO_LAYER_FC1_BIAS],
        layer->tensor[DCIO_LAYER_FC2_WEIGHT], layer->tensor[DCIO_LAYER_FC2_BIAS]};
    return w;
}

static void format_shape(const dcio_st_tensor *t, char *buf, size_t size) {
    size_t at = 0;
    at += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->rank && at < size; ++i) {
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", i > 0 ? ", " : "",
                               (long long)t->shape[i]);
    }
    if (at < size) {
        snprintf(buf + at, size - at, "]");
    }
}

typedef struct lookup {
    const dcio_safetensors *st;
    char prefix[256];
    char name[DCIO_LAYER_TENSORS][320];
    const dcio_st_tensor *t[DCIO_LAYER_TENSORS];
} lookup;

static const dcio_st_tensor *find_prefixed(lookup *lk, int slot, const char *suffix) {
    snprintf(lk->name[slot], sizeof lk->name[slot], "%s%s", lk->prefix, suffix);
    return dcio_st_find(lk->st, lk->name[slot]);
}

/* When the weight is missing, say which prefixes in the file do hold a layer. */
static void missing_weight(const lookup *lk, dcio_error *err) {
    char hint[400] = "";
    size_t at = 0;
    int found = 0;
    for (size_t i = 0; i < lk->st->count && at < sizeof hint; ++i) {
        const char *n = lk->st->tensors[i].name;
        const size_t len = strlen(n);
        /* "weight" itself or "<p>.weight", as layer_format.layer_prefixes has it */
        if (len < 6 || strcmp(n + len - 6, "weight") != 0 || len - 6 >= 256 ||
            (len > 6 && n[len - 7] != '.')) {
            continue;
        }
        char candidate[256 + 32];
        for (int scheme = 0; scheme < 2; ++scheme) {
            snprintf(candidate, sizeof candidate, "%.*s%s", (int)(len - 6), n,
                     fc_names[scheme][0]);
            if (dcio_st_find(lk->st, candidate) != NULL) {
                at += (size_t)snprintf(hint + at, sizeof hint - at, "%s'%.*s'",
                                       found++ > 0 ? ", " : "", (int)(len - 6), n);
                break;
            }
        }
    }
    if (found > 0) {
        dcio_fail(err, "no tensor '%s' (prefix '%s'); layers found under the prefixes %s",
                  lk->name[DCIO_LAYER_WEIGHT], lk->prefix, hint);
    } else {
        dcio_fail(err, "no tensor '%s': not a dynamic convolution layer (prefix '%s')",
                  lk->name[DCIO_LAYER_WEIGHT], lk->prefix);
    }
}

/* [a, b] or [a, b, 1, 1] (a 1x1 convolution's weight) -> a, b. */
static bool matrix_shape(const dcio_st_tensor *t, int64_t *rows, int64_t *cols) {
    if (t->rank == 2 || (t->rank == 4 && t->shape[2] == 1 && t->shape[3] == 1)) {
        *rows = t->shape[0];
        *cols = t->shape[1];
        return *rows > 0 && *cols > 0;
    }
    return false;
}

static bool vector_of(const dcio_st_tensor *t, int64_t n) {
    return t->rank == 1 && t->shape[0] == n;
}

/* The layer's own metadata entry "<prefix>key" (files with several layers), else "key". */
static const char *layer_metadata(const dcio_safetensors *st, const char *prefix,
                                  const char *key) {
    char full[320];
    snprintf(full, sizeof full, "%s%s", prefix, key);
    const char *v = prefix[0] != '\0' ? dcio_st_metadata(st, full) : NULL;
    return v != NULL ? v : dcio_st_metadata(st, key);
}

/* A metadata pair, or the override (the caller has checked that one of them exists). */
static bool hyper_pair(const dcio_safetensors *st, const char *prefix, const char *key, bool set,
                       const int64_t *given, int64_t min, int64_t v[2], dcio_error *err) {
    if (set) {
        v[0] = given[0];
        v[1] = given[1];
        return true;
    }
    const char *text = layer_metadata(st, prefix, key);
    if (text == NULL) {
        dcio_fail(err, "no metadata '%s'", key);
        return false;
    }
    if (!dcio_parse_pair(text, min, v)) {
        dcio_fail(err, "metadata '%s%s' = \"%.40s\" is not \"a\" or \"a,b\" with integers >= "
                       "%lld", text == dcio_st_metadata(st, key) ? "" : prefix, key, text,
                  (long long)min);
        return false;
    }
    return true;
}

bool dcio_layer_load(const dcio_safetensors *st, const dcio_layer_options *options,
                     dcio_layer *out, dcio_error *err) {
    static const dcio_layer_options defaults = {0};
    const dcio_layer_options *o = options != NULL ? options : &defaults;
    lookup lk;
    memset(&lk, 0, sizeof lk);
    lk.st = st;
    const char *prefix = o->prefix != NULL ? o->prefix : "";
    const size_t plen = strlen(prefix);
    if (plen + 2 > sizeof lk.prefix) {
        dcio_fail(err, "prefix of %zu characters is too long", plen);
        return false;
    }
    snprintf(lk.prefix, sizeof lk.prefix, "%s%s", prefix,
             plen > 0 && prefix[plen - 1] != '.' ? "." : "");

    const dcio_st_tensor *w = find_prefixed(&lk, DCIO_LAYER_WEIGHT, "weight");
    if (w == NULL) {
        missing_weight(&lk, err);
        return false;
    }
    find_prefixed(&lk, DCIO_LAYER_BIAS, "bias");
    lk.t[DCIO_LAYER_WEIGHT] = w;
    lk.t[DCIO_LAYER_BIAS] = dcio_st_find(st, lk.name[DCIO_LAYER_BIAS]);

    /* Which naming scheme: exactly one must be present. */
    int scheme = -1;
    for (int s = 0; s < 2; ++s) {
        char n[320];
        snprintf(n, sizeof n, "%s%s", lk.prefix, fc_names[s][0]);
        if (dcio_st_find(st, n) != NULL) {
            if (scheme >= 0) {
                dcio_fail(err, "both '%s%s' and '%s' exist: ambiguous attention layout",
                          lk.prefix, fc_names[0][0], n);
                return false;
            }
            scheme = s;
        }
    }
    if (scheme < 0) {
        dcio_fail(err, "missing the attention's first layer: neither '%s%s' nor '%s%s'",
                  lk.prefix, fc_names[0][0], lk.prefix, fc_names[1][0]);
        return false;
    }
    for (int i = 0; i < 4; ++i) {
        lk.t[DCIO_LAYER_FC1_WEIGHT + i] =
            find_prefixed(&lk, DCIO_LAYER_FC1_WEIGHT + i, fc_names[scheme][i]);
    }
    if (lk.t[DCIO_LAYER_FC2_WEIGHT] == NULL) {
        dcio_fail(err, "missing tensor '%s' (the attention's second layer)",
                  lk.name[DCIO_LAYER_FC2_WEIGHT]);
        return false;
    }

    /* Anything else under <prefix>attention. would be silently ignored (a batch norm, say)
     * and give wrong numbers: refuse it. */
    char att[320];
    snprintf(att, sizeof att, "%sattention.", lk.prefix);
    const size_t att_len = strlen(att);
    for (size_t i = 0; i < st->count; ++i) {
        const char *n = st->tensors[i].name;
        if (strncmp(n, att, att_len) != 0) {
            continue;
        }
        bool known = false;
        for (int s = DCIO_LAYER_FC1_WEIGHT; s < DCIO_LAYER_TENSORS; ++s) {
            known = known || strcmp(n, lk.name[s]) == 0;
        }
        if (!known) {
            dcio_fail(err, "unexpected tensor '%s': the attention must be conv/linear, ReLU, "
                           "conv/linear (no other layers)", n);
            return false;
        }
    }

    /* Sizes from shapes: a rank-5 weight is a convolution's, a rank-3 one a linear layer's. */
    char s1[96], s2[96];
    format_shape(w, s1, sizeof s1);
    const bool linear = w->rank == 3;
    bool positive = w->rank == 5 || w->rank == 3;
    for (int i = 0; positive && i < w->rank; ++i) {
        positive = w->shape[i] > 0;
    }
    if (!positive) {
        dcio_fail(err, "tensor '%s' has shape %s; expected [K, C_out, C_in/groups, kh, kw] (a "
                       "convolution) or [K, D_out, D_in] (a linear layer) with positive sizes",
                  w->name, s1);
        return false;
    }
    const int64_t k = w->shape[0], c_out = w->shape[1], cin_g = w->shape[2];
    int64_t hidden, c_in, k2, hidden2;
    const dcio_st_tensor *fc1 = lk.t[DCIO_LAYER_FC1_WEIGHT], *fc2 = lk.t[DCIO_LAYER_FC2_WEIGHT];
    if (!matrix_shape(fc1, &hidden, &c_in)) {
        format_shape(fc1, s2, sizeof s2);
        dcio_fail(err, "tensor '%s' has shape %s; expected [hidden, C_in] or [hidden, C_in, 1, 1]",
                  fc1->name, s2);
        return false;
    }
    if (!matrix_shape(fc2, &k2, &hidden2)) {
        format_shape(fc2, s2, sizeof s2);
        dcio_fail(err, "tensor '%s' has shape %s; expected [K, hidden] or [K, hidden, 1, 1]",
                  fc2->name, s2);
        return false;
    }
    if (k2 != k) {
        dcio_fail(err, "tensor '%s' has K = %lld rows but '%s' %s holds K = %lld kernels",
                  fc2->name, (long long)k2, w->name, s1, (long long)k);
        return false;
    }
    if (hidden2 != hidden) {
        dcio_fail(err, "tensor '%s' has hidden = %lld columns but '%s' has hidden = %lld rows",
                  fc2->name, (long long)hidden2, fc1->name, (long long)hidden);
        return false;
    }
    const dcio_st_tensor *b = lk.t[DCIO_LAYER_BIAS];
    if (b != NULL && !(b->rank == 2 && b->shape[0] == k && b->shape[1] == c_out)) {
        format_shape(b, s2, sizeof s2);
        dcio_fail(err, "tensor '%s' has shape %s; expected [K, C_out] = [%lld, %lld]", b->name,
                  s2, (long long)k, (long long)c_out);
        return false;
    }
    const dcio_st_tensor *b1 = lk.t[DCIO_LAYER_FC1_BIAS], *b2 = lk.t[DCIO_LAYER_FC2_BIAS];
    if (b1 != NULL && !vector_of(b1, hidden)) {
        format_shape(b1, s2, sizeof s2);
        dcio_fail(err, "tensor '%s' has shape %s; expected [hidden] = [%lld]", b1->name, s2,
                  (long long)hidden);
        return false;
    }
    if (b2 != NULL && !vector_of(b2, k)) {
        format_shape(b2, s2, sizeof s2);
        dcio_fail(err, "tensor '%s' has shape %s; expected [K] = [%lld]", b2->name, s2,
                  (long long)k);
        return false;
    }
    if (linear && c_in != cin_g) {
        dcio_fail(err, "'%s' has D_in = %lld columns but the linear layer's '%s' %s has "
                       "D_in = %lld", fc1->name, (long long)c_in, w->name, s1, (long long)cin_g);
        return false;
    }

    /* What the file says it holds, when it says so, must be what the shapes show. */
    const char *kind = layer_metadata(st, lk.prefix, "layer");
    if (kind != NULL && strcmp(kind, linear ? "linear" : "conv2d") != 0) {
        dcio_fail(err, "metadata 'layer' = \"%.40s\" but '%s' %s is the weight of a %s",
                  kind, w->name, s1, linear ? "linear layer" : "convolution");
        return false;
    }

    /* Hyper-parameters: overrides, else metadata; every key missing from both is named. */
    static const char *const conv_keys[] = {"stride", "padding", "dilation", "groups",
                                            "temperature"};
    const bool set[] = {o->set_stride, o->set_padding, o->set_dilation, o->set_groups,
                        o->set_temperature};
    if (linear && (o->set_stride || o->set_padding || o->set_dilation || o->set_groups)) {
        dcio_fail(err, "'%s' %s is the weight of a dynamic linear layer, which has no stride, "
                       "padding, dilation or groups", w->name, s1);
        return false;
    }
    char missing[160] = "";
    size_t missing_len = 0;
    int nmissing = 0;
    for (int i = linear ? 4 : 0; i < 5; ++i) {
        if (!set[i] && layer_metadata(st, lk.prefix, conv_keys[i]) == NULL) {
            missing_len += (size_t)snprintf(missing + missing_len, sizeof missing - missing_len,
                                            "%s'%s'", nmissing++ > 0 ? ", " : "", conv_keys[i]);
        }
    }
    if (nmissing > 0) {
        dcio_fail(err, "no metadata %s for the %s '%s' (a file saved from a bare state_dict "
                       "has none): give %s explicitly, or save the file with dynconv-export",
                  missing, linear ? "linear layer" : "convolution", w->name,
                  nmissing > 1 ? "them" : "it");
        return false;
    }
    int64_t stride[2] = {1, 1}, padding[2] = {0, 0}, dilation[2] = {1, 1}, groups[2] = {1, 1};
    if (!linear) {
        if (!hyper_pair(st, lk.prefix, "stride", o->set_stride, o->stride, 1, stride, err) ||
            !hyper_pair(st, lk.prefix, "padding", o->set_padding, o->padding, 0, padding, err) ||
            !hyper_pair(st, lk.prefix, "dilation", o->set_dilation, o->dilation, 1, dilation,
                        err)) {
            return false;
        }
        if (o->set_groups) {
            groups[0] = o->groups;
        } else {
            /* One integer: "a,b" is no group count (and the Python reader refuses it too). */
            const char *text = layer_metadata(st, lk.prefix, "groups");
            if (strchr(text, ',') != NULL || !dcio_parse_pair(text, 1, groups)) {
                dcio_fail(err, "metadata '%sgroups' = \"%.40s\" is not an integer >= 1",
                          text == dcio_st_metadata(st, "groups") ? "" : lk.prefix, text);
                return false;
            }
        }
    }
    float temperature;
    if (o->set_temperature) {
        temperature = o->temperature;
    } else {
        const char *text = layer_metadata(st, lk.prefix, "temperature");
        if (!dcio_parse_temperature(text, &temperature)) {
            dcio_fail(err, "metadata 'temperature' = \"%.40s\" is not a finite number > 0",
                      text);
            return false;
        }
    }
    const int64_t g = groups[0];
    if (!linear && (c_in % g != 0 || c_in / g != cin_g)) {
        char hint[96] = "";
        if (c_in % cin_g == 0) {
            snprintf(hint, sizeof hint, "; set groups = %lld (metadata 'groups' or --groups)",
                     (long long)(c_in / cin_g));
        }
        dcio_fail(err,
                  "'%s' has C_in = %lld but '%s' %s with groups = %lld implies C_in = "
                  "%lld * %lld%s",
                  fc1->name, (long long)c_in, w->name, s1, (long long)g, (long long)cin_g,
                  (long long)g, hint);
        return false;
    }
    if (!linear && c_out % g != 0) {
        dcio_fail(err, "groups = %lld does not divide C_out = %lld of '%s'", (long long)g,
                  (long long)c_out, w->name);
        return false;
    }

    /* Convert every present tensor to float32. */
    dcio_layer result;
    memset(&result, 0, sizeof result);
    for (int s = 0; s < DCIO_LAYER_TENSORS; ++s) {
        const dcio_st_tensor *t = lk.t[s];
        if (t == NULL) {
            continue;
        }
        result.numel[s] = t->numel;
        result.rank[s] = t->rank;
        memcpy(result.shape[s], t->shape, sizeof t->shape);
        result.name[s] = dcio_strdup(t->name);
        result.tensor[s] = malloc(t->numel * sizeof(float));
        if (result.name[s] == NULL || result.tensor[s] == NULL) {
            dcio_fail(err, "out of memory loading tensor '%s' (%zu floats)", t->name, t->numel);
            dcio_layer_free(&result);
            return false;
        }
        if (!dcio_st_tensor_to_f32(t, result.tensor[s], err)) {
            dcio_layer_free(&result);
            return false;
        }
    }
    result.linear = linear;
    if (linear) {
        const dynconv_linear_geometry lg = {.in_features = c_in, .out_features = c_out,
                                            .num_kernels = k, .hidden = hidden};
        result.linear_geometry = lg;
    } else {
        const dynconv_conv2d_geometry geometry = {
            .in_channels = c_in, .out_channels = c_out, .kernel_h = w->shape[3],
            .kernel_w = w->shape[4], .stride_h = stride[0], .stride_w = stride[1],
            .pad_h = padding[0], .pad_w = padding[1], .dilation_h = dilation[0],
            .dilation_w = dilation[1], .groups = g, .num_kernels = k, .hidden = hidden};
        result.geometry = geometry;
    }
    result.temperature = temperature;
    *out = result;
    return true;
}
