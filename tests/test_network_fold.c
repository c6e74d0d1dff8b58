/* Networks written by the test itself (tests/common/netfile.c): BatchNorm folding against a
 * double-precision reference of convolution + batch norm (+ activation), folded and unfolded;
 * and the ops the network runs itself, with several outputs, views and the input as an
 * output, against a double reference too. */
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

#include "netfile.h"
#include "testutil.h"

#if defined(DC_TEST_ENGINE_VARIANTS)
#include "exec.h"
#include "gemm.h"
#endif

static const fold_case FOLD_CASES[] = {
    {"conv3x3_bias_bn_relu", false, true, 3, 6, 3, 1, 1, 1, 1, 0, "relu", 2, 7, 6},
    {"conv3x3_stride2_nobias_bn", false, false, 4, 5, 3, 2, 1, 1, 1, 0, NULL, 3, 9, 8},
    {"conv1x1_bn_relu6", false, true, 8, 4, 1, 1, 0, 1, 1, 0, "relu6", 2, 5, 5},
    {"dynamic3x3_bias_bn_relu6", true, true, 3, 6, 3, 1, 1, 1, 4, 3, "relu6", 3, 6, 7},
    {"dynamic_depthwise_nobias_bn", true, false, 6, 6, 3, 1, 1, 6, 3, 2, NULL, 2, 8, 8},
    {"dynamic1x1_groups2_bn_relu", true, true, 4, 6, 1, 1, 0, 2, 2, 4, "relu", 2, 4, 5},
    /* More output positions than one B panel of the engine is wide (it is forced onto every
     * convolution in the engine variant): batch 3 on 2 threads runs two whole samples and
     * shares the third by bands of columns. */
    {"conv3x3_16to24_bn_relu", false, true, 16, 24, 3, 1, 1, 1, 1, 0, "relu", 3, 12, 10},
    {"dynamic3x3_12to20_bn_relu6", true, true, 12, 20, 3, 1, 1, 1, 3, 4, "relu6", 3, 11, 9},
    {"conv1x1_32to40_bn_relu", false, false, 32, 40, 1, 1, 0, 1, 1, 0, "relu", 3, 9, 8},
    /* K kernel sets over 8 MiB: the engine mixes them one reduction slice at a time, and the
     * activation belongs after the last slice only. */
    {"dynamic3x3_256_bn_relu", true, true, 256, 256, 3, 1, 1, 1, 4, 16, "relu", 3, 6, 6},
};

/* Threads the networks run on (the engine variant runs the table on 1 and on 2). */
static int64_t fold_threads = 0;

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
            double pooled[256], hid[16], z[8], zmax = -INFINITY, sum = 0.0;
            assert_true(c->cin <= 256 && c->hidden <= 16 && c->kernels <= 8);
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
    if (fold_threads > 0) {
        assert_int_equal(dynconv_network_set_num_threads(net, fold_threads), DYNCONV_OK);
    }
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
    bool nan_seen = false; /* a NaN in the window is the maximum (as in PyTorch) */
    for (int64_t i = 0; i < k[0]; ++i) {
        for (int64_t j = 0; j < k[1]; ++j) {
            const int64_t y = oy * st[0] - p[0] + i * d[0], xx = ox * st[1] - p[1] + j * d[1];
            if (y < 0 || y >= h || xx < 0 || xx >= w) {
                continue;
            }
            best = fmax(best, x[y * w + xx]);
            nan_seen = nan_seen || isnan(x[y * w + xx]);
            sum += x[y * w + xx];
            ++inside;
        }
    }
    return kind == 0 ? (nan_seen ? NAN : best) : kind == 1 ? sum / (double)(k[0] * k[1]) : sum / (double)inside;
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

/* A max pool large enough to run on 2 threads (planes shared between them), with NaNs in the
 * input: a window holding one gives NaN, the others their maximum, against the double
 * reference. */
static void max_pool_threads_and_nan(void **state) {
    (void)state;
    static const char graph[] =
        "{\"schema\":\"dynconv.network\",\"version\":1,\"inputs\":[{\"name\":\"x\","
        "\"shape\":[1,6,61,58]}],\"outputs\":[\"mp\"],\"nodes\":[{\"name\":\"mp\",\"op\":"
        "\"max_pool2d\",\"inputs\":[\"x\"],\"attrs\":{\"kernel_size\":[3,3],\"stride\":"
        "[2,2],\"padding\":[1,1],\"dilation\":[1,1]},\"tensors\":{},\"module\":\"\","
        "\"shape\":[]}]}";
    st_file file;
    memset(&file, 0, sizeof file);
    size_t size;
    unsigned char *bytes = st_bytes(&file, graph, &size);
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(bytes, size, 0, &net), DYNCONV_OK);
    assert_int_equal(dynconv_network_set_num_threads(net, 2), DYNCONV_OK);
    const int64_t n = 3, c = 6, h = 61, w = 58, ho = 31, wo = 29;
    assert_int_equal(dynconv_network_reshape(net, n, h, w, NULL), DYNCONV_OK);
    const size_t xn = (size_t)(n * c * h * w), yn = (size_t)(n * c * ho * wo);
    float *x = tu_alloc(xn * sizeof(float)), *y = tu_alloc(yn * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    tu_fill_uniform(&rng, x, xn, -4.0f, 4.0f);
    for (size_t i = 17; i < xn; i += 4099) {
        x[i] = NAN;
    }
    float *const outs[1] = {y};
    assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);
    const int64_t k[2] = {3, 3}, st[2] = {2, 2}, p[2] = {1, 1}, d[2] = {1, 1};
    size_t nans = 0, bad = 0;
    for (int64_t plane = 0; plane < n * c; ++plane) {
        for (int64_t oy = 0; oy < ho; ++oy) {
            for (int64_t ox = 0; ox < wo; ++ox) {
                const double want = pool_ref(x + plane * h * w, h, w, oy, ox, k, st, p, d, 0);
                const float got = y[(plane * ho + oy) * wo + ox];
                nans += isnan(want);
                bad += isnan(want) ? !isnan(got) : !((double)got == want);
            }
        }
    }
    assert_true(nans > 0);
    assert_int_equal(bad, 0);
    dynconv_network_destroy(net);
    free(x);
    free(y);
    free(bytes);
}

/* Static linear layers, behind a flatten, against a double reference. Batches up to 4 take
 * the small-batch product, its outputs shared by the team (a run on 3 threads must give the
 * bits of a run on 1); larger ones sgemm, on ranges of outputs shared by the team. */
typedef struct linear_case {
    const char *name;
    int64_t n, c, h, w, out;  /* input [n, c, h, w], in = c * h * w */
    int bias;
} linear_case;

static const linear_case LINEAR_CASES[] = {
    {"batch 3, below the threads' share", 3, 6, 3, 4, 37, 0},
    {"batch 3, below the threads' share, bias", 3, 6, 3, 4, 37, 1},
    /* 1014 x 131: enough multiply-adds to share; a reduction tail, outputs not a multiple of 4
     * (nor of 16) */
    {"batch 1, shared, bias", 1, 6, 13, 13, 131, 1},
    {"batch 4, shared", 4, 6, 13, 13, 131, 0},
    {"batch 5, sgemm shared", 5, 6, 13, 13, 131, 0},
    {"batch 33, sgemm shared, bias", 33, 6, 13, 13, 131, 1},
    {"batch 40, sgemm alone, bias", 40, 6, 3, 4, 37, 1},
};

static void linear_over_the_batch(void **state) {
    (void)state;
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    for (size_t t = 0; t < sizeof LINEAR_CASES / sizeof LINEAR_CASES[0]; ++t) {
        const linear_case *lc = &LINEAR_CASES[t];
        char graph[1024];
        snprintf(graph, sizeof graph,
                 "{\"schema\":\"dynconv.network\",\"version\":1,\"inputs\":[{\"name\":\"x\","
                 "\"shape\":[1,%lld,%lld,%lld]}],\"outputs\":[\"fc\"],\"nodes\":[{\"name\":\"f\","
                 "\"op\":\"flatten\",\"inputs\":[\"x\"],\"attrs\":{},\"tensors\":{},\"module\":"
                 "\"\",\"shape\":[]},{\"name\":\"fc\",\"op\":\"linear\",\"inputs\":[\"f\"],"
                 "\"attrs\":{},\"tensors\":{\"weight\":\"fc.weight\"%s},\"module\":\"fc\","
                 "\"shape\":[]}]}",
                 (long long)lc->c, (long long)lc->h, (long long)lc->w,
                 lc->bias ? ",\"bias\":\"fc.bias\"" : "");
        const int64_t n = lc->n, in = lc->c * lc->h * lc->w, out = lc->out;
        st_file file;
        memset(&file, 0, sizeof file);
        const int64_t wshape[2] = {out, in}, bshape[1] = {out};
        tu_rng rng;
        tu_rng_seed(&rng, 41 + (unsigned)t);
        float *w = add_tensor(&file, "fc.weight", 2, wshape);
        tu_fill_uniform(&rng, w, (size_t)(out * in), -1.0f, 1.0f);
        float *b = NULL;
        if (lc->bias) {
            b = add_tensor(&file, "fc.bias", 1, bshape);
            tu_fill_uniform(&rng, b, (size_t)out, -1.0f, 1.0f);
        }
        size_t size;
        unsigned char *bytes = st_bytes(&file, graph, &size);
        float *x = tu_alloc((size_t)(n * in) * sizeof(float));
        float *y1 = tu_alloc((size_t)(n * out) * sizeof(float));
        float *y3 = tu_alloc((size_t)(n * out) * sizeof(float));
        double *ref = tu_alloc((size_t)(n * out) * sizeof(double));
        tu_fill_uniform(&rng, x, (size_t)(n * in), -1.0f, 1.0f);
        for (int threads = 1; threads <= 3; threads += 2) {
            dynconv_network *net = NULL;
            assert_int_equal(dynconv_network_create_from_memory(bytes, size, 0, &net),
                             DYNCONV_OK);
            assert_int_equal(dynconv_network_set_threadpool(net, pool), DYNCONV_OK);
            assert_int_equal(dynconv_network_set_num_threads(net, threads), DYNCONV_OK);
            assert_int_equal(dynconv_network_reshape(net, n, lc->h, lc->w, NULL), DYNCONV_OK);
            float *const outs[1] = {threads == 1 ? y1 : y3};
            assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);
            dynconv_network_destroy(net);
        }
        for (int64_t s = 0; s < n; ++s) {
            for (int64_t o = 0; o < out; ++o) {
                double acc = b != NULL ? b[o] : 0.0;
                for (int64_t i = 0; i < in; ++i) {
                    acc += (double)w[o * in + i] * x[s * in + i];
                }
                ref[s * out + o] = acc;
            }
        }
        assert_true(tu_nontrivial(ref, (size_t)(n * out)));
        /* float sums of `in` products of about 1/3 each: the absolute error grows with in */
        const double atol = 1e-5 * (double)in / 72.0;
        if (tu_count_mismatches(lc->name, y1, ref, (size_t)(n * out), 1e-5, atol) != 0) {
            fail_msg("%s: 1 thread against the double reference", lc->name);
        }
        if (tu_count_mismatches(lc->name, y3, ref, (size_t)(n * out), 1e-5, atol) != 0) {
            fail_msg("%s: 3 threads against the double reference", lc->name);
        }
        if (n <= 4 && memcmp(y1, y3, (size_t)(n * out) * sizeof(float)) != 0) {
            fail_msg("%s: 3 threads did not give the bits of 1", lc->name);
        }
        free(x);
        free(y1);
        free(y3);
        free(ref);
        free(bytes);
        st_free(&file);
    }
    dynconv_threadpool_destroy(pool);
}

/* A pooling window far larger than the input (valid: its padding makes room for it) reads only
 * the taps inside the input: this returns at once, with every window's maximum the whole
 * column's. */
static void huge_pool_window(void **state) {
    (void)state;
    static const char graph[] =
        "{\"schema\":\"dynconv.network\",\"version\":1,\"inputs\":[{\"name\":\"x\","
        "\"shape\":[1,1,9,8]}],\"outputs\":[\"mp\"],\"nodes\":[{\"name\":\"mp\",\"op\":"
        "\"max_pool2d\",\"inputs\":[\"x\"],\"attrs\":{\"kernel_size\":[2000001,1],\"stride\":"
        "[1,1],\"padding\":[1000000,0],\"dilation\":[1,1]},\"tensors\":{},\"module\":\"\","
        "\"shape\":[]}]}";
    st_file file;
    memset(&file, 0, sizeof file);
    size_t size;
    unsigned char *bytes = st_bytes(&file, graph, &size);
    dynconv_network *net = NULL;
    assert_int_equal(dynconv_network_create_from_memory(bytes, size, 0, &net), DYNCONV_OK);
    assert_int_equal(dynconv_network_reshape(net, 1, 9, 8, NULL), DYNCONV_OK);
    float x[72], y[72];
    for (int i = 0; i < 72; ++i) {
        x[i] = (float)((i * 29) % 23);
    }
    float *const outs[1] = {y};
    assert_int_equal(dynconv_network_forward(net, x, outs), DYNCONV_OK);
    for (int ox = 0; ox < 8; ++ox) {
        float column = x[ox];
        for (int iy = 1; iy < 9; ++iy) {
            column = x[iy * 8 + ox] > column ? x[iy * 8 + ox] : column;
        }
        for (int oy = 0; oy < 9; ++oy) {
            assert_true(y[oy * 8 + ox] == column);
        }
    }
    dynconv_network_destroy(net);
    free(bytes);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(folding_matches_double_reference),
        cmocka_unit_test(ops_and_outputs),
        cmocka_unit_test(huge_pool_window),
        cmocka_unit_test(max_pool_threads_and_nan),
        cmocka_unit_test(linear_over_the_batch),
    };
#if defined(DC_TEST_ENGINE_VARIANTS)
    /* The folding table on every convolution path, so that the fused activation is checked in
     * each one's output pass: im2col + BLAS, then the engine with each micro-kernel (an ISA
     * this CPU lacks is skipped, and said so), each on 1 and 2 threads. */
    static const char *const names[] = {"baseline", "avx2", "avx512", "baseline-channels",
                                        "avx2-channels", "avx512-channels"};
    const struct CMUnitTest fold[] = {cmocka_unit_test(folding_matches_double_reference)};
    int failed = 0;
    for (int v = -1; v < 2 * (DC_ISA_AVX512 + 1); ++v) {
        /* v = isa, then 3 + isa for the channel-lanes kernel of isa (none on AVX2) */
        if (v >= 0 && !dc_gemm_force((dc_isa)(v % 3), v >= 3)) {
            printf("[  SKIPPED ] the %s micro-kernel: not built in or not supported here\n",
                   names[v]);
            continue;
        }
        dc_exec_set_engine_mode(v < 0 ? DC_ENGINE_NEVER : DC_ENGINE_ALWAYS);
        for (fold_threads = 1; fold_threads <= 2; ++fold_threads) {
            char group[96];
            snprintf(group, sizeof group, "folding, %s%s, %lld thread(s)",
                     v < 0 ? "im2col + BLAS" : "engine ", v < 0 ? "" : names[v],
                     (long long)fold_threads);
            failed += _cmocka_run_group_tests(group, fold, 1, NULL, NULL);
        }
    }
    dc_gemm_force_auto();
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    fold_threads = 0;
    /* The rest (no convolution) once, with the automatic choice. */
    failed += _cmocka_run_group_tests("network ops", tests + 1, 4, NULL, NULL);
    return failed;
#else
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
