/* See netfile.h. */
#include "netfile.h"

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *add_tensor(st_file *f, const char *name, int rank, const int64_t *shape) {
    st_tensor *t = &f->t[f->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rank = rank;
    t->count = 1;
    for (int d = 0; d < rank; ++d) {
        t->shape[d] = shape[d];
        t->count *= (size_t)shape[d];
    }
    t->data = tu_alloc(t->count * sizeof(float));
    return t->data;
}

/* The file's bytes: the graph (plain JSON, escaped here into the metadata string) and the
 * tensors, data in the order added. */
unsigned char *st_bytes(const st_file *f, const char *graph, size_t *size) {
    size_t cap = 4096 + 2 * strlen(graph);
    char *h = tu_alloc(cap);
    size_t at = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"dynconv.graph\":\"");
    for (const char *c = graph; *c; ++c) {
        if (*c == '"' || *c == '\\') {
            h[at++] = '\\';
        }
        h[at++] = *c;
    }
    at += (size_t)snprintf(h + at, cap - at, "\"}");
    size_t offset = 0;
    for (size_t i = 0; i < f->n; ++i) {
        const st_tensor *t = &f->t[i];
        at += (size_t)snprintf(h + at, cap - at, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[",
                               t->name);
        for (int d = 0; d < t->rank; ++d) {
            at += (size_t)snprintf(h + at, cap - at, d ? ",%lld" : "%lld",
                                   (long long)t->shape[d]);
        }
        at += (size_t)snprintf(h + at, cap - at, "],\"data_offsets\":[%zu,%zu]}", offset,
                               offset + t->count * 4);
        offset += t->count * 4;
    }
    at += (size_t)snprintf(h + at, cap - at, "}");
    if (at >= cap) {
        abort(); /* the header outgrew its buffer: a test bug */
    }
    unsigned char *out = tu_alloc(8 + at + offset);
    for (int i = 0; i < 8; ++i) {
        out[i] = (unsigned char)((uint64_t)at >> (8 * i));
    }
    memcpy(out + 8, h, at);
    size_t pos = 8 + at;
    for (size_t i = 0; i < f->n; ++i) {
        memcpy(out + pos, f->t[i].data, f->t[i].count * 4);
        pos += f->t[i].count * 4;
    }
    *size = pos;
    free(h);
    return out;
}

void st_free(st_file *f) {
    for (size_t i = 0; i < f->n; ++i) {
        free(f->t[i].data);
    }
}

unsigned char *build_fold(const fold_case *c, fold_net *m, size_t *size) {
    memset(m, 0, sizeof *m);
    tu_rng rng;
    tu_rng_seed(&rng, 1234);
    const int64_t cg = c->cin / c->groups;
    const int64_t wshape[5] = {c->kernels, c->cout, cg, c->k, c->k};
    m->w = add_tensor(&m->file, "conv.weight", c->dynamic ? 5 : 4, c->dynamic ? wshape : wshape + 1);
    tu_fill_uniform(&rng, m->w, m->file.t[m->file.n - 1].count, -0.5f, 0.5f);
    if (c->bias) {
        const int64_t bshape[2] = {c->kernels, c->cout};
        m->b = add_tensor(&m->file, "conv.bias", c->dynamic ? 2 : 1,
                          c->dynamic ? bshape : bshape + 1);
        tu_fill_uniform(&rng, m->b, m->file.t[m->file.n - 1].count, -0.5f, 0.5f);
    }
    if (c->dynamic) {
        const int64_t s1[2] = {c->hidden, c->cin}, s2[2] = {c->kernels, c->hidden};
        m->fc1 = add_tensor(&m->file, "conv.attention.fc1.weight", 2, s1);
        tu_fill_uniform(&rng, m->fc1, (size_t)(c->hidden * c->cin), -2.0f, 2.0f);
        m->fc1b = add_tensor(&m->file, "conv.attention.fc1.bias", 1, &c->hidden);
        tu_fill_uniform(&rng, m->fc1b, (size_t)c->hidden, -0.5f, 0.5f);
        m->fc2 = add_tensor(&m->file, "conv.attention.fc2.weight", 2, s2);
        tu_fill_uniform(&rng, m->fc2, (size_t)(c->kernels * c->hidden), -2.0f, 2.0f);
        m->fc2b = add_tensor(&m->file, "conv.attention.fc2.bias", 1, &c->kernels);
        tu_fill_uniform(&rng, m->fc2b, (size_t)c->kernels, -0.5f, 0.5f);
    }
    m->gamma = add_tensor(&m->file, "bn.weight", 1, &c->cout);
    tu_fill_uniform(&rng, m->gamma, (size_t)c->cout, 0.5f, 1.5f);
    m->beta = add_tensor(&m->file, "bn.bias", 1, &c->cout);
    /* Mostly positive, so that a ReLU after the batch norm leaves most values non-zero (a
     * comparison with mostly zeros could hardly fail). */
    tu_fill_uniform(&rng, m->beta, (size_t)c->cout, 0.3f, 1.5f);
    m->mean = add_tensor(&m->file, "bn.running_mean", 1, &c->cout);
    tu_fill_uniform(&rng, m->mean, (size_t)c->cout, -0.5f, 0.5f);
    m->var = add_tensor(&m->file, "bn.running_var", 1, &c->cout);
    tu_fill_uniform(&rng, m->var, (size_t)c->cout, 0.05f, 2.0f);
    m->temperature = 1.7f;
    m->eps = 1e-3;

    char graph[4096];
    int at = snprintf(
        graph, sizeof graph,
        "{\"schema\":\"dynconv.network\",\"version\":1,\"inputs\":[{\"name\":\"x\",\"shape\":"
        "[1,%lld,%lld,%lld]}],\"outputs\":[\"%s\"],\"nodes\":[{\"name\":\"conv\",\"op\":\"%s\","
        "\"inputs\":[\"x\"],\"attrs\":{\"stride\":[%lld,%lld],\"padding\":[%lld,%lld],"
        "\"dilation\":[1,1],\"groups\":%lld%s},\"tensors\":{\"weight\":\"conv.weight\"%s%s},"
        "\"module\":\"conv\",\"shape\":[]},{\"name\":\"bn\",\"op\":\"batchnorm2d\",\"inputs\":"
        "[\"conv\"],\"attrs\":{\"eps\":0.001},\"tensors\":{\"weight\":\"bn.weight\",\"bias\":"
        "\"bn.bias\",\"running_mean\":\"bn.running_mean\",\"running_var\":\"bn.running_var\"},"
        "\"module\":\"bn\",\"shape\":[]}",
        (long long)c->cin, (long long)c->h, (long long)c->w, c->act ? "act" : "bn",
        c->dynamic ? "dynamic_conv2d" : "conv2d", (long long)c->stride, (long long)c->stride,
        (long long)c->pad, (long long)c->pad, (long long)c->groups,
        c->dynamic ? ",\"temperature\":1.7" : "", c->bias ? ",\"bias\":\"conv.bias\"" : "",
        c->dynamic ? ",\"fc1_weight\":\"conv.attention.fc1.weight\",\"fc1_bias\":"
                     "\"conv.attention.fc1.bias\",\"fc2_weight\":\"conv.attention.fc2.weight\","
                     "\"fc2_bias\":\"conv.attention.fc2.bias\""
                   : "");
    if (c->act != NULL) {
        at += snprintf(graph + at, sizeof graph - (size_t)at,
                       ",{\"name\":\"act\",\"op\":\"%s\",\"inputs\":[\"bn\"],\"attrs\":{},"
                       "\"tensors\":{},\"module\":\"\",\"shape\":[]}", c->act);
    }
    snprintf(graph + at, sizeof graph - (size_t)at, "]}");
    return st_bytes(&m->file, graph, size);
}
