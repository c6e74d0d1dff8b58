/* Threads and the steady state: the thread-count API and its errors, the workspace growing with
 * the thread count, exact results for every thread count (small integers, K = 1, so that every
 * summation order gives the same float), the BLAS's thread count left alone by a forward, and
 * forwards that allocate nothing once the handle is shaped. The thread pools themselves are
 * tested in test_threadpool.c. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "alloc_count.h"
#include "testutil.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))


/* ---------------------------------------------------------------------------------------- */
/* Layers                                                                                    */

typedef struct layer_case {
    const char *name;
    int64_t cin, cout, k, stride, pad, groups, kernels, n, h, w;
} layer_case;

/* clang-format off */
static const layer_case cases[] = {
    /* name              cin cout k  s  p   g  K  N   h   w   (each over 10^6 multiply-adds, so
     *                                                        that a forward uses its threads) */
    {"3x3",               32, 40, 3, 1, 1,  1, 1, 3, 20, 22},
    {"3x3_stride2",       32, 40, 3, 2, 1,  1, 1, 3, 30, 26},
    {"pointwise",         64, 48, 1, 1, 0,  1, 1, 3, 20, 18},
    {"1x1_stride2",       64, 48, 1, 2, 0,  1, 1, 3, 40, 38},
    {"1x1_stride3_groups2", 64, 48, 1, 3, 0, 2, 1, 3, 41, 37},
    {"groups3",           48, 48, 3, 1, 1,  3, 1, 3, 16, 16},
    {"depthwise",         48, 48, 3, 1, 1, 48, 1, 3, 30, 35},
    {"depthwise_stride2", 64, 64, 3, 2, 1, 64, 1, 3, 40, 38},
    {"channel_mult_x2",   24, 48, 5, 1, 2, 24, 1, 3, 24, 26},
};
/* clang-format on */

typedef struct layer_data {
    dynconv_conv2d_geometry g;
    float *weight, *bias, *fc1, *fc2;
    size_t wlen;
} layer_data;

static void make_layer_data(const layer_case *c, bool integers, layer_data *d)
{
    d->g = (dynconv_conv2d_geometry){
        .in_channels = c->cin, .out_channels = c->cout, .kernel_h = c->k, .kernel_w = c->k,
        .stride_h = c->stride, .stride_w = c->stride, .pad_h = c->pad, .pad_w = c->pad,
        .dilation_h = 1, .dilation_w = 1, .groups = c->groups, .num_kernels = c->kernels,
        .hidden = 3};
    d->wlen = (size_t)(c->kernels * c->cout * (c->cin / c->groups) * c->k * c->k);
    tu_rng rng;
    tu_rng_seed(&rng, 17);
    d->weight = tu_alloc(d->wlen * sizeof(float));
    d->bias = tu_alloc((size_t)(c->kernels * c->cout) * sizeof(float));
    d->fc1 = tu_alloc((size_t)(3 * c->cin) * sizeof(float));
    d->fc2 = tu_alloc((size_t)(3 * c->kernels) * sizeof(float));
    if (integers) {
        tu_fill_int(&rng, d->weight, d->wlen, -3, 3);
        tu_fill_int(&rng, d->bias, (size_t)(c->kernels * c->cout), -5, 5);
    } else {
        tu_fill_uniform(&rng, d->weight, d->wlen, -0.3f, 0.3f);
        tu_fill_uniform(&rng, d->bias, (size_t)(c->kernels * c->cout), -0.5f, 0.5f);
    }
    tu_fill_uniform(&rng, d->fc1, (size_t)(3 * c->cin), -1.f, 1.f);
    tu_fill_uniform(&rng, d->fc2, (size_t)(3 * c->kernels), -1.f, 1.f);
}

static void free_layer_data(layer_data *d)
{
    free(d->weight);
    free(d->bias);
    free(d->fc1);
    free(d->fc2);
}

static dynconv_conv2d *create(const layer_data *d, uint32_t flags)
{
    const dynconv_conv2d_weights w = {d->weight, d->bias, d->fc1, NULL, d->fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&d->g, &w, 1.0f, flags, &layer), DYNCONV_OK);
    return layer;
}

static int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p)
{
    return (in + 2 * p - k) / s + 1;
}

/* The definition in integers: the static convolution with the one kernel. */
static void integer_conv(const layer_case *c, const float *x, const float *w, const float *b,
                         int64_t oh, int64_t ow, double *y)
{
    const int64_t cin_g = c->cin / c->groups, cout_g = c->cout / c->groups;
    for (int64_t n = 0; n < c->n; ++n) {
        for (int64_t co = 0; co < c->cout; ++co) {
            const int64_t grp = co / cout_g;
            for (int64_t oy = 0; oy < oh; ++oy) {
                for (int64_t ox = 0; ox < ow; ++ox) {
                    int64_t acc = (int64_t)b[co];
                    for (int64_t ci = 0; ci < cin_g; ++ci) {
                        for (int64_t i = 0; i < c->k; ++i) {
                            for (int64_t j = 0; j < c->k; ++j) {
                                const int64_t iy = oy * c->stride + i - c->pad;
                                const int64_t ix = ox * c->stride + j - c->pad;
                                if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) {
                                    continue;
                                }
                                const int64_t xi =
                                    ((n * c->cin + grp * cin_g + ci) * c->h + iy) * c->w + ix;
                                const int64_t wi = ((co * cin_g + ci) * c->k + i) * c->k + j;
                                acc += (int64_t)w[wi] * (int64_t)x[xi];
                            }
                        }
                    }
                    y[((n * c->cout + co) * oh + oy) * ow + ox] = (double)acc;
                }
            }
        }
    }
}

/* K = 1 with small integers: every sum is exact, so each thread count and batch size must give
 * exactly the integer result, whichever way the work is cut (whole samples, shared samples, a
 * batch smaller or not a multiple of the thread count). */
static void exact_for_every_thread_count(void **state)
{
    const layer_case *c = *state;
    layer_data d;
    make_layer_data(c, true, &d);
    const int64_t oh = out_size(c->h, c->k, c->stride, c->pad);
    const int64_t ow = out_size(c->w, c->k, c->stride, c->pad);
    const size_t xlen = (size_t)(c->n * c->cin * c->h * c->w);
    const size_t ylen = (size_t)(c->n * c->cout * oh * ow);
    float *x = tu_alloc(xlen * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    tu_fill_int(&rng, x, xlen, -3, 3);
    double *want = tu_alloc(ylen * sizeof(double));
    integer_conv(c, x, d.weight, d.bias, oh, ow, want);
    assert_true(tu_nontrivial(want, ylen));
    float *y = tu_alloc(ylen * sizeof(float));
    float att[8];

    /* Four threads whatever the machine (the default pool has one per CPU, and a count above a
     * pool's size is capped at it). */
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(4, 0, &pool), DYNCONV_OK);
    for (int threads = 1; threads <= 4; ++threads) {
        for (int64_t n = 1; n <= c->n; ++n) {
            dynconv_conv2d *layer = create(&d, 0);
            assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool), DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_reshape(layer, n, c->h, c->w, NULL, NULL, NULL),
                             DYNCONV_OK);
            for (size_t i = 0; i < ylen; ++i) {
                y[i] = NAN;
            }
            assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
            const size_t len = ylen / (size_t)c->n * (size_t)n;
            assert_int_equal(tu_count_mismatches("y", y, want, len, 0.0, 0.0), 0);
            for (int64_t i = 0; i < n; ++i) {
                assert_true(att[i] == 1.0f); /* K = 1: pi is exactly one */
            }
            dynconv_conv2d_destroy(layer);
        }
    }
    dynconv_threadpool_destroy(pool);
    free(y);
    free(want);
    free(x);
    free_layer_data(&d);
}

/* ---------------------------------------------------------------------------------------- */
/* Attention                                                                                 */

/* Dynamic layers whose fc1 is large enough for the threads to share it when the attention is
 * computed by one thread for the others (a shared sample, or the whole batch first). Each
 * sample's pi must have the same bits whatever the thread count, and the same at batch 1 as
 * in the batch. */
typedef struct attention_case {
    const char *name;
    int64_t cin, cout, k, groups, hidden, n, hw;
} attention_case;

/* clang-format off */
static const attention_case attention_cases[] = {
    /* name                      cin cout k  g   hid N  hw */
    {"att_batch_first_1x1",      384, 64, 1, 1,   96, 3,  8},  /* 8 * hidden > H*W */
    {"att_per_sample_1x1",       384, 16, 1, 1,   96, 3, 30},  /* 8 * hidden < H*W */
    {"att_depthwise_odd_hidden", 400,400, 3, 400, 101, 2, 10}, /* units not a multiple of 4 */
    {"att_tail_channels",        389, 48, 3, 1,   90, 3,  9},  /* a reduction tail */
};
/* clang-format on */

static void attention_bits(void **state)
{
    const attention_case *c = *state;
    const int64_t K = 4, in_len = c->cin * c->hw * c->hw, out_len = c->cout * c->hw * c->hw;
    const dynconv_conv2d_geometry g = {c->cin, c->cout, c->k, c->k, 1, 1, c->k / 2, c->k / 2,
                                       1, 1, c->groups, K, c->hidden};
    const size_t wlen = (size_t)(K * c->cout * (c->cin / c->groups) * c->k * c->k);
    tu_rng rng;
    tu_rng_seed(&rng, 23);
    float *w = tu_alloc(wlen * sizeof(float)), *b = tu_alloc((size_t)(K * c->cout) * 4);
    float *f1 = tu_alloc((size_t)(c->hidden * c->cin) * 4), *f1b = tu_alloc((size_t)c->hidden * 4);
    float *f2 = tu_alloc((size_t)(K * c->hidden) * 4), *f2b = tu_alloc((size_t)K * 4);
    float *x = tu_alloc((size_t)(c->n * in_len) * 4), *y = tu_alloc((size_t)(c->n * out_len) * 4);
    tu_fill_uniform(&rng, w, wlen, -0.3f, 0.3f);
    tu_fill_uniform(&rng, b, (size_t)(K * c->cout), -0.5f, 0.5f);
    tu_fill_uniform(&rng, f1, (size_t)(c->hidden * c->cin), -1.0f, 1.0f);
    tu_fill_uniform(&rng, f1b, (size_t)c->hidden, -0.5f, 0.5f);
    tu_fill_uniform(&rng, f2, (size_t)(K * c->hidden), -1.0f, 1.0f);
    tu_fill_uniform(&rng, f2b, (size_t)K, -0.5f, 0.5f);
    /* an offset per sample, so that the samples' attentions differ */
    for (int64_t i = 0; i < c->n; ++i) {
        tu_fill_uniform(&rng, x + i * in_len, (size_t)in_len, -1.0f + 0.4f * (float)i,
                        1.0f + 0.4f * (float)i);
    }
    const dynconv_conv2d_weights wt = {w, b, f1, f1b, f2, f2b};
    float want[4 * 8], att[4 * 8];
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(4, 0, &pool), DYNCONV_OK);
    for (int threads = 1; threads <= 4; ++threads) {
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f, 0, &layer), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->hw, c->hw, NULL, NULL, NULL),
                         DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, threads == 1 ? want : att, NULL, 0),
                         DYNCONV_OK);
        if (threads == 1) {
            /* the samples' attentions differ (else the comparisons below would prove little) */
            assert_true(want[0] != want[K]);
        } else {
            assert_memory_equal(att, want, (size_t)(c->n * K) * sizeof(float));
        }
        /* each sample alone: its pi of the batch */
        assert_int_equal(dynconv_conv2d_reshape(layer, 1, c->hw, c->hw, NULL, NULL, NULL),
                         DYNCONV_OK);
        for (int64_t i = 0; i < c->n; ++i) {
            assert_int_equal(dynconv_conv2d_forward(layer, x + i * in_len, y, att, NULL, 0),
                             DYNCONV_OK);
            assert_memory_equal(att, want + i * K, (size_t)K * sizeof(float));
        }
        dynconv_conv2d_destroy(layer);
    }
    dynconv_threadpool_destroy(pool);
    free(y);
    free(x);
    free(f2b);
    free(f2);
    free(f1b);
    free(f1);
    free(b);
    free(w);
}

/* ---------------------------------------------------------------------------------------- */
/* API                                                                                       */

static const layer_case dynamic_case = {"dynamic", 8, 12, 3, 1, 1, 1, 4, 2, 9, 9};

static void thread_count_api(void **state)
{
    (void)state;
    layer_data d;
    make_layer_data(&dynamic_case, false, &d);
    dynconv_conv2d *layer = create(&d, 0);
    int threads = 0;
    assert_int_equal(dynconv_conv2d_get_num_threads(layer, &threads), DYNCONV_OK);
    const int fallback = threads;
    assert_true(fallback >= 1); /* the default: every CPU the process may use */

    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 3), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_num_threads(layer, &threads), DYNCONV_OK);
    assert_int_equal(threads, 3);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_num_threads(layer, &threads), DYNCONV_OK);
    assert_int_equal(threads, fallback);

    /* errors leave the count as it was */
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, -1), DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "threads"));
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, DYNCONV_MAX_THREADS + 1),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_int_equal(dynconv_conv2d_get_num_threads(layer, &threads), DYNCONV_OK);
    assert_int_equal(threads, 2);
    assert_int_equal(dynconv_conv2d_set_num_threads(NULL, 1), DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_conv2d_get_num_threads(NULL, &threads),
                     DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_conv2d_get_num_threads(layer, NULL), DYNCONV_ERROR_NULL_POINTER);
    dynconv_conv2d_destroy(layer);

    const dynconv_linear_geometry lg = {6, 4, 3, 2};
    float lw[3 * 4 * 6] = {0}, f1[2 * 6] = {0}, f2[3 * 2] = {0};
    const dynconv_linear_weights lwt = {lw, NULL, f1, NULL, f2, NULL};
    dynconv_linear *lin = NULL;
    assert_int_equal(dynconv_linear_create(&lg, &lwt, 1.0f, 0, &lin), DYNCONV_OK);
    assert_int_equal(dynconv_linear_set_num_threads(lin, 2), DYNCONV_OK);
    assert_int_equal(dynconv_linear_get_num_threads(lin, &threads), DYNCONV_OK);
    assert_int_equal(threads, 2);
    assert_int_equal(dynconv_linear_set_num_threads(lin, -5), DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_int_equal(dynconv_linear_set_num_threads(NULL, 1), DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_linear_get_num_threads(NULL, &threads), DYNCONV_ERROR_NULL_POINTER);
    dynconv_linear_destroy(lin);
    free_layer_data(&d);
}

static void *aligned_buffer(size_t bytes)
{
    void *p = NULL;
    assert_int_equal(posix_memalign(&p, DYNCONV_WORKSPACE_ALIGNMENT, bytes), 0);
    return p;
}

/* A shaped handle that gets more threads needs more workspace (one aggregated kernel and one
 * im2col buffer per thread): a caller-owned workspace of the old size is refused until it is
 * re-sized to what reshape now reports, and the result does not change. */
static void workspace_follows_thread_count(void **state)
{
    (void)state;
    const layer_case *c = &dynamic_case;
    layer_data d;
    make_layer_data(c, false, &d);
    const size_t xlen = (size_t)(c->n * c->cin * c->h * c->w);
    const size_t ylen = (size_t)(c->n * c->cout * c->h * c->w);
    float *x = tu_alloc(xlen * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    tu_fill_uniform(&rng, x, xlen, -1.f, 1.f);
    float *y1 = tu_alloc(ylen * sizeof(float));
    float *y3 = tu_alloc(ylen * sizeof(float));

    /* three threads whatever the machine's CPUs */
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    dynconv_conv2d *layer = create(&d, DYNCONV_FLAG_EXTERNAL_WORKSPACE);
    assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 1), DYNCONV_OK);
    size_t ws1 = 0, ws3 = 0;
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, &ws1),
                     DYNCONV_OK);
    void *buf1 = aligned_buffer(ws1);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y1, NULL, buf1, ws1), DYNCONV_OK);

    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 3), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y3, NULL, buf1, ws1),
                     DYNCONV_ERROR_INSUFFICIENT_WORKSPACE);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, &ws3),
                     DYNCONV_OK);
    assert_true(ws3 > ws1);
    void *buf3 = aligned_buffer(ws3);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y3, NULL, buf3, ws3), DYNCONV_OK);
    /* batch 2 on 3 threads: both samples shared, so the GEMM is cut into bands */
    assert_int_equal(tu_count_mismatches_f("y", y3, y1, ylen, 1e-5, 1e-6), 0);
    assert_true(tu_nontrivial_f(y1, ylen));

    /* the handle's own workspace grows with the thread count, in set_num_threads */
    dynconv_conv2d *own = create(&d, 0);
    assert_int_equal(dynconv_conv2d_set_threadpool(own, pool), DYNCONV_OK);
    dynconv_threadpool_destroy(pool); /* the handles keep it */
    assert_int_equal(dynconv_conv2d_set_num_threads(own, 1), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(own, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(own, 3), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(own, x, y3, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(tu_count_mismatches_f("y", y3, y1, ylen, 1e-5, 1e-6), 0);

    dynconv_conv2d_destroy(own);
    dynconv_conv2d_destroy(layer);
    free(buf3);
    free(buf1);
    free(y3);
    free(y1);
    free(x);
    free_layer_data(&d);
}

/* A forward leaves OpenBLAS's process-wide thread count as it is (test_threadpool.c checks
 * that the first pool with workers set it to one). */
static void blas_thread_count_untouched(void **state)
{
    (void)state;
    const layer_case *c = &dynamic_case;
    layer_data d;
    make_layer_data(c, false, &d);
    const size_t xlen = (size_t)(c->n * c->cin * c->h * c->w);
    float *x = tu_alloc(xlen * sizeof(float));
    float *y = tu_alloc((size_t)(c->n * c->cout * c->h * c->w) * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 3);
    tu_fill_uniform(&rng, x, xlen, -1.f, 1.f);
    const int before = dynconv_blas_num_threads();
    dynconv_conv2d *layer = create(&d, 0);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, 2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_blas_num_threads(), before);
    dynconv_conv2d_destroy(layer);
    free(y);
    free(x);
    free_layer_data(&d);
}

/* ---------------------------------------------------------------------------------------- */
/* Steady state                                                                              */

/* After reshape (and a first forward, which lets OpenBLAS set up its own buffers), forwards
 * make no allocation of libdynconv's own, in the calling thread or in its workers. What the BLAS
 * allocates is its own business (OpenBLAS's small-matrix kernels for AVX-512 CPUs call malloc on
 * every GEMM); it is reported, not counted against the library. */
static void forward_allocates_nothing(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        print_message("  allocations are not counted under AddressSanitizer or valgrind\n");
        skip();
    }
    static const layer_case steady[] = {
        {"3x3_dynamic", 16, 24, 3, 1, 1, 1, 4, 3, 12, 12},
        {"3x3_static", 16, 24, 3, 1, 1, 1, 1, 3, 12, 12},
        {"depthwise", 64, 64, 3, 1, 1, 64, 4, 3, 24, 24},
        {"pointwise_batch1", 64, 96, 1, 1, 0, 1, 4, 1, 16, 16},
        {"small_single_thread", 4, 8, 3, 1, 1, 1, 4, 2, 6, 6},
    };
    for (size_t i = 0; i < COUNT(steady); ++i) {
        const layer_case *c = &steady[i];
        layer_data d;
        make_layer_data(c, false, &d);
        const int64_t oh = out_size(c->h, c->k, c->stride, c->pad);
        const size_t xlen = (size_t)(c->n * c->cin * c->h * c->w);
        float *x = tu_alloc(xlen * sizeof(float));
        float *y = tu_alloc((size_t)(c->n * c->cout * oh * oh) * sizeof(float));
        float att[16];
        tu_rng rng;
        tu_rng_seed(&rng, 4);
        tu_fill_uniform(&rng, x, xlen, -1.f, 1.f);
        for (int threads = 1; threads <= 2; ++threads) {
            dynconv_conv2d *layer = create(&d, 0);
            assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                             DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);
            tu_alloc_count_begin();
            dynconv_status st = DYNCONV_OK;
            for (int r = 0; r < 5 && st == DYNCONV_OK; ++r) {
                st = dynconv_conv2d_forward(layer, x, y, att, NULL, 0);
            }
            const tu_alloc_counts counted = tu_alloc_count_end();
            assert_int_equal(st, DYNCONV_OK);
            if (tu_alloc_counts_total(counted) != 0) {
                print_message("  %s, %d threads, 5 forwards: %zu allocations by libdynconv, "
                              "%zu by the BLAS, %zu by others\n",
                              c->name, threads, counted.library, counted.blas, counted.other);
            }
            assert_int_equal(counted.library, 0);
            dynconv_conv2d_destroy(layer);
        }
        free(y);
        free(x);
        free_layer_data(&d);
    }
}

int main(void)
{
    struct CMUnitTest tests[COUNT(cases) + COUNT(attention_cases) + 4];
    size_t n = 0;
    for (size_t i = 0; i < COUNT(cases); ++i) {
        tests[n++] = (struct CMUnitTest){cases[i].name, exact_for_every_thread_count, NULL, NULL,
                                         (void *)&cases[i]};
    }
    for (size_t i = 0; i < COUNT(attention_cases); ++i) {
        tests[n++] = (struct CMUnitTest){attention_cases[i].name, attention_bits, NULL, NULL,
                                         (void *)&attention_cases[i]};
    }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(thread_count_api);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(workspace_follows_thread_count);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(blas_thread_count_untouched);
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(forward_allocates_nothing);
    return _cmocka_run_group_tests("threads", tests, n, NULL, NULL);
}
