/* Networks written by the test itself (safetensors bytes built in C): BatchNorm folding against
 * a double-precision reference of convolution + batch norm (+ activation), folded and unfolded;
 * the argument and state checks of every network function; and forward's promise to allocate
 * nothing (the golden networks under the allocation counter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

#include "alloc_count.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------------------- */
/* A safetensors writer for small test networks                                             */
/* ---------------------------------------------------------------------------------------- */

#define MAX_TENSORS 16

typedef struct st_tensor {
    char name[64];
    int rank;
    int64_t shape[5];
    float *data;
    size_t count;
} st_tensor;

typedef struct st_file {
    st_tensor t[MAX_TENSORS];
    size_t n;
} st_file;

static float *add_tensor(st_file *f, const char *name, int rank, const int64_t *shape) {
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
static unsigned char *st_bytes(const st_file *f, const char *graph, size_t *size) {
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
    assert_true(at < cap);
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

static void st_free(st_file *f) {
    for (size_t i = 0; i < f->n; ++i) {
        free(f->t[i].data);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Folding: conv (static or dynamic) -> batchnorm2d -> [relu | relu6]                        */
/* ---------------------------------------------------------------------------------------- */

typedef struct fold_case {
    const char *name;
    bool dynamic, bias;
    int64_t cin, cout, k, stride, pad, groups, kernels, hidden;
    const char *act;          /* "relu", "relu6" or NULL */
    int64_t n, h, w;
} fold_case;

static const fold_case FOLD_CASES[] = {
    {"conv3x3_bias_bn_relu", false, true, 3, 6, 3, 1, 1, 1, 1, 0, "relu", 2, 7, 6},
    {"conv3x3_stride2_nobias_bn", false, false, 4, 5, 3, 2, 1, 1, 1, 0, NULL, 3, 9, 8},
    {"conv1x1_bn_relu6", false, true, 8, 4, 1, 1, 0, 1, 1, 0, "relu6", 2, 5, 5},
    {"dynamic3x3_bias_bn_relu6", true, true, 3, 6, 3, 1, 1, 1, 4, 3, "relu6", 3, 6, 7},
    {"dynamic_depthwise_nobias_bn", true, false, 6, 6, 3, 1, 1, 6, 3, 2, NULL, 2, 8, 8},
    {"dynamic1x1_groups2_bn_relu", true, true, 4, 6, 1, 1, 0, 2, 2, 4, "relu", 2, 4, 5},
};

typedef struct fold_net {
    st_file file;
    float *w, *b, *fc1, *fc1b, *fc2, *fc2b, *gamma, *beta, *mean, *var;
    float temperature;
    double eps;
} fold_net;

static unsigned char *build_fold(const fold_case *c, fold_net *m, size_t *size) {
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

/* conv (with the attention of a dynamic layer), batch norm and activation, in double. */
static double *fold_reference(const fold_case *c, const fold_net *m, const float *x,
                              int64_t *ho_out, int64_t *wo_out) {
    const int64_t ho = (c->h + 2 * c->pad - c->k) / c->stride + 1;
    const int64_t wo = (c->w + 2 * c->pad - c->k) / c->stride + 1;
    const int64_t cg = c->cin / c->groups, og = c->cout / c->groups;
    const size_t klen = (size_t)(c->cout * cg * c->k * c->k);
    double *y = tu_alloc((size_t)(c->n * c->cout * ho * wo) * sizeof(double));
    double *wk = tu_alloc(klen * sizeof(double));
    double *bk = tu_alloc((size_t)c->cout * sizeof(double));
    for (int64_t s = 0; s < c->n; ++s) {
        const float *xs = x + s * c->cin * c->h * c->w;
        double pi[8] = {1.0};
        if (c->dynamic) {
            double pooled[16], hid[16], z[8], zmax = -INFINITY, sum = 0.0;
            for (int64_t ch = 0; ch < c->cin; ++ch) {
                double acc = 0.0;
                for (int64_t i = 0; i < c->h * c->w; ++i) {
                    acc += xs[ch * c->h * c->w + i];
                }
                pooled[ch] = acc / (double)(c->h * c->w);
            }
            for (int64_t j = 0; j < c->hidden; ++j) {
                double acc = m->fc1b[j];
                for (int64_t ch = 0; ch < c->cin; ++ch) {
                    acc += (double)m->fc1[j * c->cin + ch] * pooled[ch];
                }
                hid[j] = acc > 0 ? acc : 0;
            }
            for (int64_t kk = 0; kk < c->kernels; ++kk) {
                double acc = m->fc2b[kk];
                for (int64_t j = 0; j < c->hidden; ++j) {
                    acc += (double)m->fc2[kk * c->hidden + j] * hid[j];
                }
                z[kk] = acc / (double)m->temperature;
                zmax = fmax(zmax, z[kk]);
            }
            for (int64_t kk = 0; kk < c->kernels; ++kk) {
                pi[kk] = exp(z[kk] - zmax);
                sum += pi[kk];
            }
            for (int64_t kk = 0; kk < c->kernels; ++kk) {
                pi[kk] /= sum;
            }
        }
        for (size_t i = 0; i < klen; ++i) {
            wk[i] = 0.0;
            for (int64_t kk = 0; kk < c->kernels; ++kk) {
                wk[i] += pi[kk] * m->w[(size_t)kk * klen + i];
            }
        }
        for (int64_t o = 0; o < c->cout; ++o) {
            bk[o] = 0.0;
            for (int64_t kk = 0; kk < c->kernels && m->b != NULL; ++kk) {
                bk[o] += pi[kk] * m->b[kk * c->cout + o];
            }
        }
        for (int64_t o = 0; o < c->cout; ++o) {
            const int64_t g = o / og;
            const double scale = m->gamma[o] / sqrt((double)m->var[o] + m->eps);
            for (int64_t oy = 0; oy < ho; ++oy) {
                for (int64_t ox = 0; ox < wo; ++ox) {
                    double acc = bk[o];
                    for (int64_t ci = 0; ci < cg; ++ci) {
                        for (int64_t i = 0; i < c->k; ++i) {
                            for (int64_t j = 0; j < c->k; ++j) {
                                const int64_t iy = oy * c->stride - c->pad + i;
                                const int64_t ix = ox * c->stride - c->pad + j;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) {
                                    continue;
                                }
                                acc += wk[((o * cg + ci) * c->k + i) * c->k + j] *
                                       xs[((g * cg + ci) * c->h + iy) * c->w + ix];
                            }
                        }
                    }
                    double v = (acc - m->mean[o]) * scale + m->beta[o];
                    if (c->act != NULL) {
                        v = v < 0 ? 0 : v;
                        v = strcmp(c->act, "relu6") == 0 && v > 6 ? 6 : v;
                    }
                    y[((s * c->cout + o) * ho + oy) * wo + ox] = v;
                }
            }
        }
    }
    free(wk);
    free(bk);
    *ho_out = ho;
    *wo_out = wo;
    return y;
}

static float *run_fold(const unsigned char *bytes, size_t size, uint32_t flags,
                       const fold_case *c, const float *x, size_t count, int64_t expect_nodes) {
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(bytes, size, flags, &net), DYNCONV_OK);
    int64_t nodes = 0;
    assert_int_equal(dynconv_network_get_num_nodes(net, &nodes), DYNCONV_OK);
    assert_int_equal(nodes, expect_nodes);
    dynconv_network_node_info info;
    assert_int_equal(dynconv_network_get_node_info(net, 0, &info), DYNCONV_OK);
    const uint32_t want = flags ? 0u
                                : DYNCONV_NETWORK_FUSED_BATCHNORM |
                                      (c->act == NULL ? 0u
                                       : strcmp(c->act, "relu") == 0 ? DYNCONV_NETWORK_FUSED_RELU
                                                                     : DYNCONV_NETWORK_FUSED_RELU6);
    assert_int_equal(info.fused, want);
    assert_int_equal(dynconv_network_reshape(net, c->n, c->h, c->w, NULL), DYNCONV_OK);
    float *y = tu_alloc(count * sizeof(float));
    float *const outs[1] = {y};
    assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);
    dynconv_network_destroy(net);
    return y;
}

static void folding_matches_double_reference(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof FOLD_CASES / sizeof FOLD_CASES[0]; ++i) {
        const fold_case *c = &FOLD_CASES[i];
        fold_net m;
        size_t size;
        unsigned char *bytes = build_fold(c, &m, &size);
        const size_t xn = (size_t)(c->n * c->cin * c->h * c->w);
        float *x = tu_alloc(xn * sizeof(float));
        tu_rng rng;
        tu_rng_seed(&rng, 99 + i);
        tu_fill_uniform(&rng, x, xn, -1.0f, 1.0f);
        /* A colour cast per sample, so that the attention differs between samples. */
        for (int64_t s = 0; s < c->n; ++s) {
            for (int64_t ch = 0; ch < c->cin; ++ch) {
                for (int64_t p = 0; p < c->h * c->w; ++p) {
                    x[(s * c->cin + ch) * c->h * c->w + p] += 0.7f * (float)((s + ch) % 3) - 0.7f;
                }
            }
        }
        int64_t ho, wo;
        double *ref = fold_reference(c, &m, x, &ho, &wo);
        const size_t count = (size_t)(c->n * c->cout * ho * wo);
        if (!tu_nontrivial(ref, count)) {
            fail_msg("%s: the reference is trivial", c->name);
        }
        const int64_t all = c->act ? 3 : 2;
        float *folded = run_fold(bytes, size, 0, c, x, count, 1);
        float *plain = run_fold(bytes, size, DYNCONV_NETWORK_NO_FUSION, c, x, count, all);
        double largest = 0.0;
        for (size_t j = 0; j < count; ++j) {
            largest = fmax(largest, fabs(ref[j]));
        }
        /* ~1e-5 relative: float32 rounding of a few dozen products, nothing more. */
        assert_int_equal(tu_count_mismatches(c->name, folded, ref, count, 1e-5, 1e-5 * largest), 0);
        assert_int_equal(tu_count_mismatches(c->name, plain, ref, count, 1e-5, 1e-5 * largest), 0);
        assert_int_equal(tu_count_mismatches_f(c->name, folded, plain, count, 1e-5,
                                               1e-5 * largest), 0);
        free(folded);
        free(plain);
        free(ref);
        free(x);
        free(bytes);
        st_free(&m.file);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The ops the network runs itself, several outputs, views and the input as an output        */
/* ---------------------------------------------------------------------------------------- */

static const char OPS_GRAPH[] =
    "{\"schema\":\"dynconv.network\",\"version\":1,\"inputs\":[{\"name\":\"x\",\"shape\":"
    "[1,3,9,8]}],\"outputs\":[\"mp\",\"ap1\",\"ap0\",\"c\",\"f\",\"fx\",\"x\"],\"nodes\":["
    "{\"name\":\"mp\",\"op\":\"max_pool2d\",\"inputs\":[\"x\"],\"attrs\":{\"kernel_size\":[3,2],"
    "\"stride\":[2,1],\"padding\":[1,1],\"dilation\":[2,1]},\"tensors\":{},\"module\":\"\","
    "\"shape\":[]},"
    "{\"name\":\"ap1\",\"op\":\"avg_pool2d\",\"inputs\":[\"x\"],\"attrs\":{\"kernel_size\":[3,3],"
    "\"stride\":[2,2],\"padding\":[1,1],\"count_include_pad\":true},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"ap0\",\"op\":\"avg_pool2d\",\"inputs\":[\"x\"],\"attrs\":{\"kernel_size\":[3,3],"
    "\"stride\":[2,2],\"padding\":[1,1],\"count_include_pad\":false},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"r6\",\"op\":\"relu6\",\"inputs\":[\"x\"],\"attrs\":{},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"s\",\"op\":\"add\",\"inputs\":[\"x\",\"x\"],\"attrs\":{},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"c\",\"op\":\"cat\",\"inputs\":[\"x\",\"r6\",\"s\"],\"attrs\":{\"axis\":1},"
    "\"tensors\":{},\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"g\",\"op\":\"global_avg_pool2d\",\"inputs\":[\"c\"],\"attrs\":{},"
    "\"tensors\":{},\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"f\",\"op\":\"flatten\",\"inputs\":[\"g\"],\"attrs\":{},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]},"
    "{\"name\":\"fx\",\"op\":\"flatten\",\"inputs\":[\"x\"],\"attrs\":{},\"tensors\":{},"
    "\"module\":\"\",\"shape\":[]}]}";

/* One pool output in double: the window's maximum (padding is -inf) or mean (its divisor the
 * whole window, or only the input elements it covers). */
static double pool_ref(const float *x, int64_t h, int64_t w, int64_t oy, int64_t ox,
                       const int64_t k[2], const int64_t st[2], const int64_t p[2],
                       const int64_t d[2], int kind) {
    double best = -INFINITY, sum = 0.0;
    int64_t inside = 0;
    for (int64_t i = 0; i < k[0]; ++i) {
        for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t y = oy * st[0] - p[0] + i * d[0], xx = ox * st[1] - p[1] + j * d[1];
            if (y < 0 || y >= h || xx < 0 || xx >= w) {
                continue;
            }
            best = fmax(best, x[y * w + xx]);
            sum += x[y * w + xx];
            ++inside;
        }
    }
    return kind == 0 ? best : kind == 1 ? sum / (double)(k[0] * k[1]) : sum / (double)inside;
}

static void ops_and_outputs(void **state) {
    (void)state;
    st_file file;
    memset(&file, 0, sizeof file);
    size_t size;
    unsigned char *bytes = st_bytes(&file, OPS_GRAPH, &size);
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(bytes, size, 0, &net), DYNCONV_OK);
    int64_t outputs = 0;
    assert_int_equal(dynconv_network_get_num_outputs(net, &outputs), DYNCONV_OK);
    assert_int_equal(outputs, 7);
    const int64_t n = 2, c = 3, h = 9, w = 8, plane = h * w;
    assert_int_equal(dynconv_network_reshape(net, n, h, w, NULL), DYNCONV_OK);
    const int64_t want_shapes[7][5] = {{4, n, c, 4, 9},     {4, n, c, 5, 4}, {4, n, c, 5, 4},
                                       {4, n, 3 * c, h, w}, {2, n, 3 * c, 1, 1},
                                       {2, n, c * plane, 1, 1}, {4, n, c, h, w}};
    float *out[7];
    size_t counts[7];
    for (int i = 0; i < 7; ++i) {
        int64_t shape[4];
        int rank = 0;
        assert_int_equal(dynconv_network_get_output_shape(net, i, shape, &rank), DYNCONV_OK);
        assert_int_equal(rank, want_shapes[i][0]);
        counts[i] = 1;
        for (int d = 0; d < 4; ++d) {
            assert_int_equal(shape[d], want_shapes[i][d + 1]);
            counts[i] *= (size_t)shape[d];
        }
        out[i] = tu_alloc(counts[i] * sizeof(float));
    }
    float *x = tu_alloc((size_t)(n * c * plane) * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 21);
    tu_fill_uniform(&rng, x, (size_t)(n * c * plane), -8.0f, 8.0f);
    float *const outs[7] = {out[0], out[1], out[2], out[3], out[4], out[5], out[6]};
    assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);

    double *ref[7];
    for (int i = 0; i < 7; ++i) {
        ref[i] = tu_alloc(counts[i] * sizeof(double));
    }
    const int64_t mk[2] = {3, 2}, ms[2] = {2, 1}, mp[2] = {1, 1}, md[2] = {2, 1};
    const int64_t ak[2] = {3, 3}, as[2] = {2, 2}, ap[2] = {1, 1}, ad[2] = {1, 1};
    for (int64_t s = 0; s < n; ++s) {
        for (int64_t ch = 0; ch < c; ++ch) {
            const float *xp = x + (s * c + ch) * plane;
            for (int64_t oy = 0; oy < 5; ++oy) {
                for (int64_t ox = 0; ox < 9; ++ox) {
                    if (oy < 4) {
                        ref[0][((s * c + ch) * 4 + oy) * 9 + ox] =
                            pool_ref(xp, h, w, oy, ox, mk, ms, mp, md, 0);
                    }
                    if (ox < 4) {
                        ref[1][((s * c + ch) * 5 + oy) * 4 + ox] =
                            pool_ref(xp, h, w, oy, ox, ak, as, ap, ad, 1);
                        ref[2][((s * c + ch) * 5 + oy) * 4 + ox] =
                            pool_ref(xp, h, w, oy, ox, ak, as, ap, ad, 2);
                    }
                }
            }
            double mean[3] = {0, 0, 0};
            for (int64_t i = 0; i < plane; ++i) {
                const double v = xp[i], r6 = v < 0 ? 0 : v > 6 ? 6 : v;
                const double parts[3] = {v, r6, v + v};
                for (int b = 0; b < 3; ++b) {
                    ref[3][((s * 3 * c) + b * c + ch) * plane + i] = parts[b];
                    mean[b] += parts[b] / (double)plane;
                }
                ref[5][(s * c + ch) * plane + i] = v;
                ref[6][(s * c + ch) * plane + i] = v;
            }
            for (int b = 0; b < 3; ++b) {
                ref[4][s * 3 * c + b * c + ch] = mean[b];
            }
        }
    }
    static const char *const names[7] = {"max_pool2d", "avg_pool2d_include_pad",
                                         "avg_pool2d_exclude_pad", "cat", "flatten(global)",
                                         "flatten(input)", "input"};
    for (int i = 0; i < 7; ++i) {
        assert_true(tu_nontrivial(ref[i], counts[i]));
        assert_int_equal(tu_count_mismatches(names[i], out[i], ref[i], counts[i], 1e-6, 1e-6),
                         0);
        free(ref[i]);
        free(out[i]);
    }
    dynconv_network_destroy(net);
    free(x);
    free(bytes);
}

/* ---------------------------------------------------------------------------------------- */
/* Argument and state checks                                                                */
/* ---------------------------------------------------------------------------------------- */

/* What the error cases work on: a dynamic network (its dynamic layer is "conv"), unshaped and
 * shaped, and a network whose 3x3 kernel has no padding. */
typedef struct api_ctx {
    unsigned char *bytes, *nopad_bytes;
    size_t size, nopad_size;
    dynconv_network *fresh, *shaped, *nopad;
    float *x, *y;
    size_t x_count, y_count;
} api_ctx;

static api_ctx ctx;
static const fold_case *API_CASE = &FOLD_CASES[3]; /* dynamic3x3_bias_bn_relu6 */
static const fold_case NOPAD_CASE = {"nopad", false, true, 3, 4, 3, 1, 0, 1, 1, 0, NULL, 1, 5, 5};
static fold_net api_net, nopad_net;

static int api_setup(void **state) {
    (void)state;
    ctx.bytes = build_fold(API_CASE, &api_net, &ctx.size);
    ctx.nopad_bytes = build_fold(&NOPAD_CASE, &nopad_net, &ctx.nopad_size);
    if (dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &ctx.fresh) != DYNCONV_OK ||
        dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &ctx.shaped) != DYNCONV_OK ||
        dynconv_network_create_from_memory(ctx.nopad_bytes, ctx.nopad_size, 0, &ctx.nopad) !=
            DYNCONV_OK ||
        dynconv_network_reshape(ctx.shaped, API_CASE->n, API_CASE->h, API_CASE->w, NULL) !=
            DYNCONV_OK) {
        return -1;
    }
    ctx.x_count = (size_t)(API_CASE->n * API_CASE->cin * API_CASE->h * API_CASE->w);
    ctx.y_count = (size_t)(API_CASE->n * API_CASE->cout * API_CASE->h * API_CASE->w);
    ctx.x = tu_alloc((ctx.x_count + ctx.y_count) * sizeof(float));
    ctx.y = tu_alloc(ctx.y_count * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    tu_fill_uniform(&rng, ctx.x, ctx.x_count, -1.0f, 1.0f);
    return 0;
}

static int api_teardown(void **state) {
    (void)state;
    dynconv_network_destroy(ctx.fresh);
    dynconv_network_destroy(ctx.shaped);
    dynconv_network_destroy(ctx.nopad);
    free(ctx.bytes);
    free(ctx.nopad_bytes);
    free(ctx.x);
    free(ctx.y);
    st_free(&api_net.file);
    st_free(&nopad_net.file);
    return 0;
}

static dynconv_network *sentinel_net(void) { return (dynconv_network *)(uintptr_t)0x10; }

static dynconv_status c_file_null_path(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_file(NULL, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_file_null_out(void) {
    return dynconv_network_create_from_file("x.safetensors", 0, NULL);
}
static dynconv_status c_file_missing(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st =
        dynconv_network_create_from_file("/nonexistent/net.safetensors", 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_file_is_directory(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_file("/", 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_memory_null_data(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(NULL, 10, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_memory_null_out(void) {
    return dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, NULL);
}
static dynconv_status c_memory_empty(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, 0, 0, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_unknown_flag_bit1(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, ctx.size, 2u, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_unknown_flag_bit31(void) {
    dynconv_network *n = sentinel_net();
    const dynconv_status st = dynconv_network_create_from_memory(ctx.bytes, ctx.size,
                                                                 1u << 31, &n);
    return n == sentinel_net() ? st : DYNCONV_OK;
}
static dynconv_status c_reshape_null(void) {
    return dynconv_network_reshape(NULL, 1, 8, 8, NULL);
}
static dynconv_status c_reshape_batch_zero(void) {
    return dynconv_network_reshape(ctx.fresh, 0, 8, 8, NULL);
}
static dynconv_status c_reshape_height_negative(void) {
    return dynconv_network_reshape(ctx.fresh, 1, -3, 8, NULL);
}
static dynconv_status c_reshape_width_int64_min(void) {
    return dynconv_network_reshape(ctx.fresh, 1, 8, INT64_MIN, NULL);
}
static dynconv_status c_reshape_kernel_too_large(void) {
    return dynconv_network_reshape(ctx.nopad, 1, 2, 5, NULL);
}
static dynconv_status c_forward_before_reshape(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(ctx.fresh, ctx.x, outs);
}
static dynconv_status c_forward_null_network(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(NULL, ctx.x, outs);
}
static dynconv_status c_forward_null_input(void) {
    float *const outs[1] = {ctx.y};
    return dynconv_network_forward(ctx.shaped, NULL, outs);
}
static dynconv_status c_forward_null_outputs(void) {
    return dynconv_network_forward(ctx.shaped, ctx.x, NULL);
}
static dynconv_status c_forward_null_output0(void) {
    float *const outs[1] = {NULL};
    return dynconv_network_forward(ctx.shaped, ctx.x, outs);
}
static dynconv_status c_forward_output_overlaps_input(void) {
    float *const outs[1] = {ctx.x + ctx.x_count - 1};
    return dynconv_network_forward(ctx.shaped, ctx.x, outs);
}
static dynconv_status c_output_shape_before_reshape(void) {
    int64_t s[4];
    int r;
    return dynconv_network_get_output_shape(ctx.fresh, 0, s, &r);
}
static dynconv_status c_output_shape_bad_index(void) {
    int64_t s[4];
    int r;
    return dynconv_network_get_output_shape(ctx.shaped, 1, s, &r);
}
static dynconv_status c_output_shape_null_rank(void) {
    int64_t s[4];
    return dynconv_network_get_output_shape(ctx.shaped, 0, s, NULL);
}
static dynconv_status c_node_info_negative(void) {
    dynconv_network_node_info i;
    return dynconv_network_get_node_info(ctx.fresh, -1, &i);
}
static dynconv_status c_node_info_past_end(void) {
    dynconv_network_node_info i;
    return dynconv_network_get_node_info(ctx.fresh, 1, &i);
}
static dynconv_status c_node_info_null(void) {
    return dynconv_network_get_node_info(ctx.fresh, 0, NULL);
}
static dynconv_status c_num_nodes_null(void) { return dynconv_network_get_num_nodes(NULL, NULL); }
static dynconv_status c_channels_null(void) {
    return dynconv_network_get_input_channels(ctx.fresh, NULL);
}
static dynconv_status c_outputs_null(void) {
    return dynconv_network_get_num_outputs(NULL, NULL);
}
static dynconv_status c_temperature_unknown_name(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv2", 1.0f);
}
static dynconv_status c_temperature_not_dynamic(void) {
    return dynconv_network_set_temperature(ctx.nopad, "conv", 1.0f);
}
static dynconv_status c_temperature_none_dynamic(void) {
    return dynconv_network_set_temperature(ctx.nopad, NULL, 1.0f);
}
static dynconv_status c_temperature_zero(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv", 0.0f);
}
static dynconv_status c_temperature_nan(void) {
    return dynconv_network_set_temperature(ctx.fresh, NULL, NAN);
}
static dynconv_status c_temperature_inf(void) {
    return dynconv_network_set_temperature(ctx.fresh, "conv", INFINITY);
}
static dynconv_status c_get_temperature_null(void) {
    return dynconv_network_get_temperature(ctx.fresh, "conv", NULL);
}
static dynconv_status c_get_temperature_unknown(void) {
    float t;
    return dynconv_network_get_temperature(ctx.fresh, "bn", &t);
}
static dynconv_status c_attention_before_forward(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv", a, 64);
}
static dynconv_status c_attention_null_name(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, NULL, a, 64);
}
static dynconv_status c_attention_capacity_short(void) {
    static float y[1024];
    assert_true(ctx.y_count <= 1024);
    float *const outs[1] = {y};
    assert_int_equal(dynconv_network_forward(ctx.shaped, ctx.x, outs), DYNCONV_OK);
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv",
                                         a, API_CASE->n * API_CASE->kernels - 1);
}
static dynconv_status c_attention_capacity_negative(void) {
    float a[64];
    return dynconv_network_get_attention(ctx.shaped, "conv", a, -1);
}
static dynconv_status c_threads_negative(void) {
    return dynconv_network_set_num_threads(ctx.fresh, -1);
}
static dynconv_status c_threads_too_many(void) {
    return dynconv_network_set_num_threads(ctx.fresh, DYNCONV_MAX_THREADS + 1);
}
static dynconv_status c_threads_null(void) { return dynconv_network_set_num_threads(NULL, 1); }
static dynconv_status c_get_threads_null(void) {
    return dynconv_network_get_num_threads(ctx.fresh, NULL);
}
static dynconv_status c_threadpool_null_network(void) {
    return dynconv_network_set_threadpool(NULL, NULL);
}

typedef struct api_case {
    const char *name;
    dynconv_status (*call)(void);
    dynconv_status expected;
    const char *message;      /* a part of the message */
} api_case;

static const api_case API_CASES[] = {
    {"create_from_file_null_path", c_file_null_path, DYNCONV_ERROR_NULL_POINTER,
     "dynconv_network_create_from_file: path is NULL"},
    {"create_from_file_null_out", c_file_null_out, DYNCONV_ERROR_NULL_POINTER, "out is NULL"},
    {"create_from_file_missing", c_file_missing, DYNCONV_ERROR_INVALID_ARGUMENT,
     "cannot open '/nonexistent/net.safetensors': No such file or directory"},
    {"create_from_file_directory", c_file_is_directory, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'/'"},
    {"create_from_memory_null_data", c_memory_null_data, DYNCONV_ERROR_NULL_POINTER,
     "dynconv_network_create_from_memory: data is NULL"},
    {"create_from_memory_null_out", c_memory_null_out, DYNCONV_ERROR_NULL_POINTER,
     "out is NULL"},
    {"create_from_memory_empty", c_memory_empty, DYNCONV_ERROR_INVALID_MODEL,
     "<memory>: too short"},
    {"create_unknown_flag_bit1", c_unknown_flag_bit1, DYNCONV_ERROR_UNSUPPORTED,
     "unknown flags 0x2"},
    {"create_unknown_flag_bit31", c_unknown_flag_bit31, DYNCONV_ERROR_UNSUPPORTED,
     "unknown flags 0x80000000"},
    {"reshape_null_network", c_reshape_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"reshape_batch_zero", c_reshape_batch_zero, DYNCONV_ERROR_INVALID_ARGUMENT,
     "batch must be > 0, got 0"},
    {"reshape_height_negative", c_reshape_height_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "height must be > 0"},
    {"reshape_width_int64_min", c_reshape_width_int64_min, DYNCONV_ERROR_INVALID_ARGUMENT,
     "width must be > 0"},
    {"reshape_kernel_larger_than_input", c_reshape_kernel_too_large,
     DYNCONV_ERROR_INVALID_SHAPE, "node 'conv' (conv2d): the kernel 3 x 3"},
    {"forward_before_reshape", c_forward_before_reshape, DYNCONV_ERROR_INVALID_STATE,
     "call reshape first"},
    {"forward_null_network", c_forward_null_network, DYNCONV_ERROR_NULL_POINTER,
     "network is NULL"},
    {"forward_null_input", c_forward_null_input, DYNCONV_ERROR_NULL_POINTER, "input is NULL"},
    {"forward_null_outputs", c_forward_null_outputs, DYNCONV_ERROR_NULL_POINTER,
     "outputs is NULL"},
    {"forward_null_output0", c_forward_null_output0, DYNCONV_ERROR_NULL_POINTER,
     "outputs[0] is NULL"},
    {"forward_output_overlaps_input", c_forward_output_overlaps_input,
     DYNCONV_ERROR_INVALID_ARGUMENT, "outputs[0] overlaps input"},
    {"output_shape_before_reshape", c_output_shape_before_reshape, DYNCONV_ERROR_INVALID_STATE,
     "call reshape first"},
    {"output_shape_bad_index", c_output_shape_bad_index, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index 1 is outside the 1 outputs"},
    {"output_shape_null_rank", c_output_shape_null_rank, DYNCONV_ERROR_NULL_POINTER,
     "rank is NULL"},
    {"node_info_negative_index", c_node_info_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index -1 is outside the 1 nodes"},
    {"node_info_past_end", c_node_info_past_end, DYNCONV_ERROR_INVALID_ARGUMENT,
     "index 1 is outside"},
    {"node_info_null_info", c_node_info_null, DYNCONV_ERROR_NULL_POINTER, "info is NULL"},
    {"num_nodes_null", c_num_nodes_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"input_channels_null", c_channels_null, DYNCONV_ERROR_NULL_POINTER, "channels is NULL"},
    {"num_outputs_null", c_outputs_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"set_temperature_unknown_name", c_temperature_unknown_name,
     DYNCONV_ERROR_INVALID_ARGUMENT, "'conv2' is not a dynamic layer"},
    {"set_temperature_static_layer", c_temperature_not_dynamic, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'conv' is not a dynamic layer"},
    {"set_temperature_no_dynamic_layer", c_temperature_none_dynamic,
     DYNCONV_ERROR_INVALID_ARGUMENT, "has no dynamic layer"},
    {"set_temperature_zero", c_temperature_zero, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be a finite number > 0"},
    {"set_temperature_nan_all", c_temperature_nan, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be a finite number > 0"},
    {"set_temperature_inf", c_temperature_inf, DYNCONV_ERROR_INVALID_ARGUMENT,
     "temperature must be"},
    {"get_temperature_null", c_get_temperature_null, DYNCONV_ERROR_NULL_POINTER,
     "temperature is NULL"},
    {"get_temperature_folded_name", c_get_temperature_unknown, DYNCONV_ERROR_INVALID_ARGUMENT,
     "'bn' is not a dynamic layer"},
    {"attention_before_forward", c_attention_before_forward, DYNCONV_ERROR_INVALID_STATE,
     "no forward since the last reshape"},
    {"attention_null_name", c_attention_null_name, DYNCONV_ERROR_NULL_POINTER, "name is NULL"},
    {"attention_capacity_too_small", c_attention_capacity_short,
     DYNCONV_ERROR_INVALID_ARGUMENT, "capacity 11 is below the 12 floats"},
    {"attention_capacity_negative", c_attention_capacity_negative,
     DYNCONV_ERROR_INVALID_ARGUMENT, "capacity -1"},
    {"set_num_threads_negative", c_threads_negative, DYNCONV_ERROR_INVALID_ARGUMENT,
     "threads must be in [0, 1024]"},
    {"set_num_threads_too_many", c_threads_too_many, DYNCONV_ERROR_INVALID_ARGUMENT,
     "got 1025"},
    {"set_num_threads_null", c_threads_null, DYNCONV_ERROR_NULL_POINTER, "network is NULL"},
    {"get_num_threads_null", c_get_threads_null, DYNCONV_ERROR_NULL_POINTER,
     "threads is NULL"},
    {"set_threadpool_null_network", c_threadpool_null_network, DYNCONV_ERROR_NULL_POINTER,
     "network is NULL"},
};

static void api_errors(void **state) {
    (void)state;
    size_t failures = 0;
    for (size_t i = 0; i < sizeof API_CASES / sizeof API_CASES[0]; ++i) {
        const api_case *c = &API_CASES[i];
        for (size_t j = 0; j < ctx.y_count; ++j) {
            ctx.y[j] = -12345.0f;
        }
        const dynconv_status st = c->call();
        const char *msg = dynconv_last_error_message();
        bool untouched = true;
        for (size_t j = 0; j < ctx.y_count; ++j) {
            untouched = untouched && ctx.y[j] == -12345.0f;
        }
        if (st != c->expected || strstr(msg, c->message) == NULL || !untouched) {
            print_message("  %s: %s \"%s\" (expected %s and \"%s\")%s\n", c->name,
                          dynconv_status_string(st), msg, dynconv_status_string(c->expected),
                          c->message, untouched ? "" : "; the output was written");
            ++failures;
        }
    }
    assert_int_equal(failures, 0);
    dynconv_network_destroy(NULL);
    assert_string_equal(dynconv_status_string(DYNCONV_ERROR_INVALID_MODEL), "invalid model");
    assert_int_equal(DYNCONV_ERROR_INVALID_MODEL, 10); /* ABI value */
}

/* A failed reshape keeps the previous shape: forward still runs it, with the same result. */
static void failed_reshape_keeps_shape(void **state) {
    (void)state;
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(ctx.nopad_bytes, ctx.nopad_size, 0, &net),
                     DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, 1, 5, 5, NULL), DYNCONV_OK);
    float x[75], a[36], b[36];
    for (int i = 0; i < 75; ++i) {
        x[i] = (float)((i * 37) % 11) - 5.0f;
    }
    float *const oa[1] = {a}, *const ob[1] = {b};
    assert_int_equal(dynconv_network_forward(net, x, oa), DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, 4, 2, 2, NULL), DYNCONV_ERROR_INVALID_SHAPE);
    int64_t shape[4];
    int rank;
    assert_int_equal(dynconv_network_get_output_shape(net, 0, shape, &rank), DYNCONV_OK);
    assert_int_equal(shape[0], 1);
    assert_int_equal(shape[2], 3);
    assert_int_equal(dynconv_network_forward(net, x, ob), DYNCONV_OK);
    assert_memory_equal(a, b, 4 * 9 * sizeof(float));
    dynconv_network_destroy(net);
}

/* Temperature, attention and threads through the network. */
static void dynamic_controls(void **state) {
    (void)state;
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(ctx.bytes, ctx.size, 0, &net),
                     DYNCONV_OK);
    float t = 0.0f;
    assert_int_equal(dynconv_network_get_temperature(net, NULL, &t), DYNCONV_OK);
    assert_true(t == 1.7f);
    assert_int_equal(dynconv_network_set_temperature(net, "conv", 0.5f), DYNCONV_OK);
    assert_int_equal(dynconv_network_get_temperature(net, "conv", &t), DYNCONV_OK);
    assert_true(t == 0.5f);
    assert_int_equal(dynconv_network_reshape(net, API_CASE->n, API_CASE->h, API_CASE->w, NULL),
                     DYNCONV_OK);
    float *y1 = tu_alloc(ctx.y_count * sizeof(float)), *y2 = tu_alloc(ctx.y_count * sizeof(float));
    float *const o1[1] = {y1}, *const o2[1] = {y2};
    assert_int_equal(dynconv_network_set_num_threads(net, 1), DYNCONV_OK);
    int threads = 0;
    assert_int_equal(dynconv_network_get_num_threads(net, &threads), DYNCONV_OK);
    assert_int_equal(threads, 1);
    assert_int_equal(dynconv_network_forward(net, ctx.x, o1), DYNCONV_OK);
    float att[64];
    assert_int_equal(dynconv_network_get_attention(net, "conv", att, 64), DYNCONV_OK);
    for (int64_t s = 0; s < API_CASE->n; ++s) {
        double sum = 0.0;
        for (int64_t k = 0; k < API_CASE->kernels; ++k) {
            assert_true(att[s * API_CASE->kernels + k] >= 0.0f);
            sum += att[s * API_CASE->kernels + k];
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_network_set_threadpool(net, pool), DYNCONV_OK);
    dynconv_threadpool_destroy(pool); /* the network keeps its reference */
    assert_int_equal(dynconv_network_set_num_threads(net, 0), DYNCONV_OK);
    assert_int_equal(dynconv_network_get_num_threads(net, &threads), DYNCONV_OK);
    assert_int_equal(threads, 3);
    assert_int_equal(dynconv_network_forward(net, ctx.x, o2), DYNCONV_OK);
    assert_int_equal(tu_count_mismatches_f("threads", y2, y1, ctx.y_count, 1e-5, 1e-6), 0);
    dynconv_network_destroy(net);
    free(y1);
    free(y2);
}

/* ---------------------------------------------------------------------------------------- */
/* forward never allocates                                                                  */
/* ---------------------------------------------------------------------------------------- */

static void forward_never_allocates(void **state) {
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    static const char *const names[] = {"dy_resnet", "dy_mobilenetv2", "mixed",
                                        "mobilenet_v2_025"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, names[i]);
        for (int threads = 1; threads <= 2; ++threads) {
            dynconv_network *net = NULL;
            assert_int_equal(dynconv_network_create_from_file(path, 0, &net), DYNCONV_OK);
            assert_int_equal(dynconv_network_set_num_threads(net, threads), DYNCONV_OK);
            assert_int_equal(dynconv_network_reshape(net, 2, 32, 32, NULL), DYNCONV_OK);
            const size_t xn = 2 * 3 * 32 * 32;
            float *x = tu_alloc(xn * sizeof(float)), y[64];
            tu_rng rng;
            tu_rng_seed(&rng, 3);
            tu_fill_uniform(&rng, x, xn, -1.0f, 1.0f);
            float *const outs[1] = {y};
            assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK); /* warm up */
            tu_alloc_count_begin();
            dynconv_status st = DYNCONV_OK;
            for (int r = 0; r < 3 && st == DYNCONV_OK; ++r) {
                st = dynconv_network_forward(net, x, outs);
            }
            const tu_alloc_counts counted = tu_alloc_count_end();
            assert_int_equal(st, DYNCONV_OK);
            if (tu_alloc_counts_total(counted) != 0) {
                print_message("  %s, %d thread(s): %zu allocations by libdynconv, %zu by the "
                              "BLAS, %zu by others\n", names[i], threads, counted.library,
                              counted.blas, counted.other);
            }
            assert_int_equal(counted.library, 0);
            dynconv_network_destroy(net);
            free(x);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(folding_matches_double_reference),
        cmocka_unit_test(ops_and_outputs),
        cmocka_unit_test(api_errors),
        cmocka_unit_test(failed_reshape_keeps_shape),
        cmocka_unit_test(dynamic_controls),
        cmocka_unit_test(forward_never_allocates),
    };
    return cmocka_run_group_tests(tests, api_setup, api_teardown);
}
