/* The public forward on the own engine (forced, each micro-kernel this CPU runs, copied and
 * borrowed weights, batch 1 and 3, 1 and 2 threads, with and without the row-panel driver) on
 * the geometries of engine_cases.h, and on large kernels convolved a chunk of samples at a time, against the double reference with integer data and an
 * attention made uniform (pi = 1/K exactly), at tolerance 0; the row-panel driver against
 * mixing first on random floats, bitwise; a layer keeping the micro-kernel it was packed for; and
 * reshape's workspace size against the header's formula (section 7), computed here; the
 * Winograd path, forced, exactly, and its workspace against the formula. */
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

#include "engine_cases.h"
#include "exec.h"
#include "internal.h"
#include "plan.h"
#include "reference.h"
#include "testutil.h"

/* ---- the public forward, exactly ---- */

static dynconv_threadpool *pool2;

/* Integer weights, inputs and biases; fc2 all zero, so every logit is its bias (0) and the
 * softmax gives exactly 1/K: every value of the forward is a small multiple of 1/K, exact in
 * float. */
/* The path a case must take, checked on the handle's plan. */
typedef enum {
    PATH_ANY,       /* not checked */
    PATH_BLOCKED,   /* row panels mixed a block at a time for a chunk (dc_exec_engine_blocked) */
    PATH_ROWS_BATCH, /* chunks of more than one sample on dc_engine_conv_rows_batch */
    PATH_WINO        /* Winograd F(2x2, 3x3) with copied weights (borrowed ones have none) */
} expect_path;

/* expect_chunk: 0, or the chunk of samples the handle must have planned, on `path` (for
 * PATH_ROWS_BATCH only when the chunk has more than one sample). */
static void check_forward_exact_path(const geo *gm, int64_t kernels, int64_t hidden,
                                     int64_t batch, uint32_t flags, int threads,
                                     size_t expect_chunk, expect_path path) {
    const dynconv_conv2d_geometry g = {
        (int64_t)gm->cin, (int64_t)gm->cout, (int64_t)gm->kh, (int64_t)gm->kw,
        (int64_t)gm->sh,  (int64_t)gm->sw,   (int64_t)gm->ph, (int64_t)gm->pw,
        (int64_t)gm->dh,  (int64_t)gm->dw,   (int64_t)gm->groups, kernels, hidden};
    const size_t fc1_len = (size_t)hidden * gm->cin;
    const dc_conv_shape s = shape_of(gm);
    const size_t wlen = (size_t)kernels * s.out_channels * depth_of(&s);
    const size_t x_len = (size_t)batch * s.in_channels * s.height * s.width;
    const size_t y_len = (size_t)batch * s.out_channels * s.out_h * s.out_w;
    tu_rng rng;
    tu_rng_seed(&rng, 31 + (uint64_t)kernels);
    float *w = tu_alloc(wlen * sizeof(float));
    float *b = tu_alloc((size_t)kernels * s.out_channels * sizeof(float));
    float *fc1 = tu_alloc(fc1_len * sizeof(float));
    float *fc2 = calloc((size_t)(kernels * hidden), sizeof(float));
    float *x = tu_alloc(x_len * sizeof(float));
    float *y = tu_alloc(y_len * sizeof(float));
    double *want = tu_alloc(y_len * sizeof(double));
    assert_non_null(fc2);
    tu_fill_int(&rng, w, wlen, -4, 4);
    tu_fill_int(&rng, b, (size_t)kernels * s.out_channels, -8, 8);
    tu_fill_int(&rng, fc1, fc1_len, -2, 2);
    tu_fill_int(&rng, x, x_len, -3, 3);
    const dynconv_conv2d_weights wt = {w, b, fc1, NULL, fc2, NULL};
    /* The reference of the last case is kept: callers run each case with both weight flags
     * and thread counts in a row, and the double reference dominates the large cases. */
    static const geo *last_geo;
    static int64_t last_kernels, last_hidden, last_batch;
    static double *last_want;
    if (last_geo == gm && last_kernels == kernels && last_hidden == hidden &&
        last_batch == batch) {
        memcpy(want, last_want, y_len * sizeof(double));
    } else {
        ref_conv2d_forward(&g, &wt, 1.0, batch, (int64_t)s.height, (int64_t)s.width, x, want,
                           NULL);
        free(last_want);
        last_want = malloc(y_len * sizeof(double));
        assert_non_null(last_want);
        memcpy(last_want, want, y_len * sizeof(double));
        last_geo = gm;
        last_kernels = kernels;
        last_hidden = hidden;
        last_batch = batch;
    }

    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f, flags, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
    assert_int_equal(
        dynconv_conv2d_reshape(layer, batch, (int64_t)s.height, (int64_t)s.width, NULL, NULL,
                               NULL),
        DYNCONV_OK);
    if (path == PATH_WINO && layer->core.wino_on != !(flags & DYNCONV_FLAG_BORROW_WEIGHTS)) {
        fail_msg("%s: flags=%u: the Winograd path is %s", gm->name, (unsigned)flags,
                 layer->core.wino_on ? "on" : "off");
    }
    if (expect_chunk > 0) {
        if (path == PATH_BLOCKED) {
            assert_true(dc_exec_engine_blocked(&layer->core));
        }
        if (path == PATH_ROWS_BATCH &&
            dc_exec_engine_fused_batch(&layer->core, layer->chunk) != (expect_chunk > 1)) {
            fail_msg("%s: N=%lld threads=%d: chunks of %zu samples %s the row-panel driver",
                     gm->name, (long long)batch, threads, layer->chunk,
                     expect_chunk > 1 ? "not on" : "on");
        }
        if (layer->chunk != expect_chunk) {
            fail_msg("%s: N=%lld threads=%d planned a chunk of %zu samples, not %zu", gm->name,
                     (long long)batch, threads, layer->chunk, expect_chunk);
        }
    }
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
    if (tu_count_mismatches(gm->name, y, want, y_len, 0.0, 0.0) != 0) {
        fail_msg("%s: K=%lld N=%lld flags=%u threads=%d not exact", gm->name, (long long)kernels,
                 (long long)batch, (unsigned)flags, threads);
    }
    dynconv_conv2d_destroy(layer);
    free(want);
    free(y);
    free(x);
    free(fc2);
    free(fc1);
    free(b);
    free(w);
}

static void check_forward_exact(const geo *gm, int64_t kernels, int64_t batch, uint32_t flags,
                                int threads) {
    check_forward_exact_path(gm, kernels, 3, batch, flags, threads, 0, PATH_ANY);
}

static void run_forward_exact_of(dc_isa isa, bool channel_lanes) {
    kernel_of_or_skip(isa, channel_lanes);
    assert_true(dc_gemm_force(isa, channel_lanes));
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    const int64_t ks[] = {1, 2, 4};
    /* A sample convolved alone on the row-panel driver, then never on it. */
    for (int rows = 1; rows >= 0; --rows) {
        dc_exec_set_rows_mode(rows ? DC_ENGINE_ALWAYS : DC_ENGINE_NEVER);
        for (size_t i = 0; i < sizeof geos / sizeof geos[0]; ++i) {
            for (size_t ik = 0; ik < 3; ++ik) {
                for (int64_t batch = 1; batch <= 3; batch += 2) {
                    for (int threads = 1; threads <= 2; ++threads) {
                        check_forward_exact(&geos[i], ks[ik], batch, 0, threads);
                        check_forward_exact(&geos[i], ks[ik], batch,
                                            DYNCONV_FLAG_BORROW_WEIGHTS, threads);
                    }
                }
            }
        }
    }
    dc_exec_set_rows_mode(DC_ENGINE_AUTO);
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_gemm_force_auto();
}

static void run_forward_exact(dc_isa isa) { run_forward_exact_of(isa, false); }

/* clang-format off */
/* Winograd F(2x2, 3x3): 3x3, stride 1, one group; odd and even output sizes (partial tiles on
 * the right and at the bottom), paddings 0 to 2, one tile, and tile rows in several blocks. */
static const geo wino_geos[] = {
    /* name                 cin cout kh kw sh sw ph pw dh dw  g   h   w */
    {"wino_pad1_odd",         5, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1,  9, 13},
    {"wino_pad0",             4,  7, 3, 3, 1, 1, 0, 0, 1, 1, 1, 10,  9},
    {"wino_pad2_asym",        3,  6, 3, 3, 1, 1, 2, 0, 1, 1, 1,  5, 12},
    {"wino_one_output",       3,  4, 3, 3, 1, 1, 0, 0, 1, 1, 1,  3,  3},
    {"wino_one_row",          6,  5, 3, 3, 1, 1, 0, 1, 1, 1, 1,  3, 17},
    {"wino_wide_40",          3, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1,  3, 40},
    {"wino_blocks_30x31",    40, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 30, 31},
    {"wino_deep_300",        40,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1,  6,  6},
};
/* clang-format on */

/* The Winograd path forced, exactly (its transforms add and halve: integer data stay exact),
 * K = 1, 2, 4, batch 1 and 3 (samples whole and shared), 1 and 2 threads; borrowed weights take
 * another path (checked). */
static void test_forward_exact_winograd(void **state) {
    (void)state;
    dc_exec_set_wino_mode(DC_ENGINE_ALWAYS);
    const int64_t ks[] = {1, 2, 4};
    for (size_t i = 0; i < sizeof wino_geos / sizeof wino_geos[0]; ++i) {
        for (size_t ik = 0; ik < 3; ++ik) {
            for (int64_t batch = 1; batch <= 3; batch += 2) {
                for (int threads = 1; threads <= 2; ++threads) {
                    for (int borrow = 0; borrow <= 1; ++borrow) {
                        check_forward_exact_path(&wino_geos[i], ks[ik], 3, batch,
                                                 borrow ? DYNCONV_FLAG_BORROW_WEIGHTS : 0,
                                                 threads, 0, PATH_WINO);
                    }
                }
            }
        }
    }
    /* K sets over 8 MiB on a small image (the attention of the batch first): the transforms
     * of a chunk of samples mixed in one pass. */
    /* K sets over 8 MiB on a small image (the attention of the batch first): the streamed
     * form, each block of output channels mixed for a chunk of samples (chunks of 5 and 2;
     * blocks of 80, 80 and 40 channels; with 2 threads a fifth sample shared by channels). */
    static const geo big = {"wino_chunk_200", 200, 200, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 6};
    check_forward_exact_path(&big, 4, 8, 5, 0, 1, 5, PATH_WINO);
    check_forward_exact_path(&big, 4, 8, 5, 0, 2, 2, PATH_WINO);
    /* the attention per sample (8 * hidden < H * W): chunks of one, each sample's attention
     * first; with 2 threads a third sample shared */
    static const geo att = {"wino_big_sample_att", 184, 184, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 6};
    check_forward_exact_path(&att, 4, 2, 3, 0, 1, 1, PATH_WINO);
    check_forward_exact_path(&att, 4, 2, 3, 0, 2, 1, PATH_WINO);
    /* odd output sizes (5 x 7, half tiles), blocks of 96, 96 and 80 channels */
    static const geo odd = {"wino_streamed_odd", 168, 272, 3, 3, 1, 1, 0, 0, 1, 1, 1, 7, 9};
    check_forward_exact_path(&odd, 4, 8, 4, 0, 1, 4, PATH_WINO);
    dc_exec_set_wino_mode(DC_ENGINE_AUTO);
}

/* The transforms are made by the first reshape that takes the Winograd path, not at create,
 * and kept; borrowed weights never get them. Each step's output exact on integer data. */
static void wino_lazy_step(dynconv_conv2d *layer, const dynconv_conv2d_geometry *g,
                           const dynconv_conv2d_weights *wt, int64_t hw, const float *x,
                           bool want_on, bool want_made) {
    const int64_t n = 2, oh = hw; /* 3x3, stride 1, padding 1 */
    const size_t y_len = (size_t)(n * g->out_channels * oh * oh);
    float *y = tu_alloc(y_len * sizeof(float));
    double *want = tu_alloc(y_len * sizeof(double));
    assert_int_equal(dynconv_conv2d_reshape(layer, n, hw, hw, NULL, NULL, NULL), DYNCONV_OK);
    if (layer->core.wino_on != want_on || (layer->wino != NULL) != want_made) {
        fail_msg("at %lldx%lld: the path is %s, the transforms %s", (long long)hw,
                 (long long)hw, layer->core.wino_on ? "on" : "off",
                 layer->wino != NULL ? "made" : "not made");
    }
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
    ref_conv2d_forward(g, wt, 1.0, n, hw, hw, x, want, NULL);
    assert_int_equal(tu_count_mismatches("wino_lazy", y, want, y_len, 0.0, 0.0), 0);
    free(want);
    free(y);
}

static void test_wino_transforms_at_reshape(void **state) {
    (void)state;
    const dynconv_conv2d_geometry g = {32, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 2, 4};
    const size_t w_len = 2 * 40 * 32 * 9, x_len = 2 * 32 * 10 * 10;
    tu_rng rng;
    tu_rng_seed(&rng, 77);
    float *w = tu_alloc(w_len * sizeof(float)), *b = tu_alloc(2 * 40 * sizeof(float));
    float *fc1 = tu_alloc(4 * 32 * sizeof(float)), *fc2 = calloc(2 * 4, sizeof(float));
    float *x = tu_alloc(x_len * sizeof(float));
    assert_non_null(fc2);
    tu_fill_int(&rng, w, w_len, -4, 4);
    tu_fill_int(&rng, b, 2 * 40, -8, 8);
    tu_fill_int(&rng, fc1, 4 * 32, -2, 2);
    tu_fill_int(&rng, x, x_len, -3, 3);
    const dynconv_conv2d_weights wt = {w, b, fc1, NULL, fc2, NULL};
    for (int borrow = 0; borrow <= 1; ++borrow) {
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f,
                                               borrow ? DYNCONV_FLAG_BORROW_WEIGHTS : 0, &layer),
                         DYNCONV_OK);
        assert_null(layer->wino);
        dc_exec_set_wino_mode(DC_ENGINE_NEVER);
        wino_lazy_step(layer, &g, &wt, 9, x, false, false);
        dc_exec_set_wino_mode(DC_ENGINE_ALWAYS);
        wino_lazy_step(layer, &g, &wt, 10, x, !borrow, !borrow);
        dc_exec_set_wino_mode(DC_ENGINE_NEVER);
        wino_lazy_step(layer, &g, &wt, 9, x, false, !borrow);
        dc_exec_set_wino_mode(DC_ENGINE_ALWAYS);
        wino_lazy_step(layer, &g, &wt, 7, x, !borrow, !borrow);
        dc_exec_set_wino_mode(DC_ENGINE_AUTO);
        dynconv_conv2d_destroy(layer);
    }
    free(x);
    free(fc2);
    free(fc1);
    free(b);
    free(w);
}

static void test_forward_exact_baseline_channels(void **state) {
    (void)state;
    run_forward_exact_of(DC_ISA_BASELINE, true);
}
static void test_forward_exact_avx512_channels(void **state) {
    (void)state;
    run_forward_exact_of(DC_ISA_AVX512, true);
}

/* The automatic choice follows the shape: a layer reshaped between planes where the two
 * layouts win (7x7 and 14x14: channel lanes; 8x16: position lanes) is repacked each time and
 * stays exact, with copied and borrowed weights, K = 1 and 4. */
static void test_kernel_follows_shape(void **state) {
    (void)state;
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    const dc_gemm_kernel *best = dc_gemm_select();
    const geo sizes[] = {
        {"channels_64_7x7", 6, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 7, 7},
        {"channels_64_8x16", 6, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 16},
        {"channels_64_14x14", 6, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 14, 14},
    };
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < 3; ++i) {
            /* the rule itself, on the layer as reshape sees it */
            dc_layer l;
            memset(&l, 0, sizeof l);
            l.shape = shape_of(&sizes[i]);
            l.gemm = best;
            const dc_gemm_kernel *k = dc_exec_engine_kernel(&l);
            const bool want_channels = i != 1 && dc_gemm_kernel_of(best->isa, true) != NULL &&
                                       best->isa != DC_ISA_BASELINE;
            assert_true(k->channel_lanes == want_channels);
            assert_true(k->isa == best->isa);
            l.gemm_pinned = true;
            assert_ptr_equal(dc_exec_engine_kernel(&l), best);
            for (int64_t kk = 1; kk <= 4; kk += 3) {
                check_forward_exact(&sizes[i], kk, 2, pass ? DYNCONV_FLAG_BORROW_WEIGHTS : 0, 2);
            }
        }
    }
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
}

/* One layer reshaped back and forth between planes where the automatic choice differs (7x7 and
 * 14x14: channel lanes on AVX-512; 8x16: position lanes): its kernel sets are repacked each time
 * the choice changes, and every forward is exact. 3x3 and pointwise (hidden 8, so that at 7x7
 * the batch's attention comes first and the pointwise layer mixes row panels by blocks), copied
 * and borrowed weights, with the library's own rule. */
static void check_reshaped_layer(int64_t k, uint32_t flags) {
    const int64_t cin = 6, cout = 96, kernels = 4, hidden = 8, batch = 4;
    const dynconv_conv2d_geometry g = {cin, cout, k, k, 1, 1, k / 2, k / 2, 1, 1, 1,
                                       kernels, hidden};
    const size_t wlen = (size_t)(kernels * cout * cin * k * k);
    tu_rng rng;
    tu_rng_seed(&rng, 4242 + (uint64_t)k);
    float *w = tu_alloc(wlen * sizeof(float));
    float *b = tu_alloc((size_t)(kernels * cout) * sizeof(float));
    float *fc1 = tu_alloc((size_t)(hidden * cin) * sizeof(float));
    float *fc2 = calloc((size_t)(kernels * hidden), sizeof(float));
    assert_non_null(fc2);
    tu_fill_int(&rng, w, wlen, -4, 4);
    tu_fill_int(&rng, b, (size_t)(kernels * cout), -8, 8);
    tu_fill_int(&rng, fc1, (size_t)(hidden * cin), -2, 2);
    const dynconv_conv2d_weights wt = {w, b, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f, flags, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool2), DYNCONV_OK);
    const int64_t sizes[][2] = {{7, 7}, {8, 16}, {14, 14}, {7, 7}, {8, 16}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        const int64_t h = sizes[i][0], wd = sizes[i][1];
        const size_t x_len = (size_t)(batch * cin * h * wd), y_len = (size_t)(batch * cout * h * wd);
        float *x = tu_alloc(x_len * sizeof(float));
        float *y = tu_alloc(y_len * sizeof(float));
        double *want = tu_alloc(y_len * sizeof(double));
        tu_fill_int(&rng, x, x_len, -3, 3);
        ref_conv2d_forward(&g, &wt, 1.0, batch, h, wd, x, want, NULL);
        for (int threads = 1; threads <= 2; ++threads) {
            assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_reshape(layer, batch, h, wd, NULL, NULL, NULL),
                             DYNCONV_OK);
            assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
            if (tu_count_mismatches("reshaped", y, want, y_len, 0.0, 0.0) != 0) {
                fail_msg("%lldx%lld kernel, %lld x %lld, flags %u, %d thread(s): not exact",
                         (long long)k, (long long)k, (long long)h, (long long)wd,
                         (unsigned)flags, threads);
            }
        }
        free(want);
        free(y);
        free(x);
    }
    dynconv_conv2d_destroy(layer);
    free(fc2);
    free(fc1);
    free(b);
    free(w);
}

/* ---- the row-panel driver against mixing first, bitwise ---- */

/* One forward of random floats (an attention that differs between samples) with the row-panel
 * driver on or off for samples convolved alone. */
static void forward_rows(const dynconv_conv2d_geometry *g, const dynconv_conv2d_weights *wt,
                         const dc_conv_shape *s, int64_t batch, uint32_t flags, int threads,
                         int rows_mode, const float *x, float *y) {
    dc_exec_set_rows_mode(rows_mode);
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(g, wt, 1.0f, flags, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, batch, (int64_t)s->height,
                                            (int64_t)s->width, NULL, NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
    dynconv_conv2d_destroy(layer);
}

/* The integer tables above cannot tell summation orders apart; random floats can: the
 * row-panel driver (each thread mixing and convolving its own output channels) must give the
 * bits of mixing first (whole kernels, or slice by slice for all panels, then the columns),
 * at batch 1 and 3 (a sample left over at 2 threads), K = 1 and 4, copied and borrowed. */
static void check_rows_bitwise(const geo *gm, int64_t kernels, int64_t batch, uint32_t flags,
                               int threads) {
    const dynconv_conv2d_geometry g = {
        (int64_t)gm->cin, (int64_t)gm->cout, (int64_t)gm->kh, (int64_t)gm->kw,
        (int64_t)gm->sh,  (int64_t)gm->sw,   (int64_t)gm->ph, (int64_t)gm->pw,
        (int64_t)gm->dh,  (int64_t)gm->dw,   (int64_t)gm->groups, kernels, 3};
    const dc_conv_shape s = shape_of(gm);
    const size_t wlen = (size_t)kernels * s.out_channels * depth_of(&s);
    const size_t x_len = (size_t)batch * s.in_channels * s.height * s.width;
    const size_t y_len = (size_t)batch * s.out_channels * s.out_h * s.out_w;
    tu_rng rng;
    tu_rng_seed(&rng, 101 + (uint64_t)kernels);
    float *w = tu_alloc(wlen * sizeof(float));
    float *b = tu_alloc((size_t)kernels * s.out_channels * sizeof(float));
    float *fc1 = tu_alloc(3 * s.in_channels * sizeof(float));
    float *fc2 = tu_alloc((size_t)kernels * 3 * sizeof(float));
    float *x = tu_alloc(x_len * sizeof(float));
    float *y_rows = tu_alloc(y_len * sizeof(float));
    float *y_mix = tu_alloc(y_len * sizeof(float));
    tu_fill_uniform(&rng, w, wlen, -1.0f, 1.0f);
    tu_fill_uniform(&rng, b, (size_t)kernels * s.out_channels, -1.0f, 1.0f);
    tu_fill_uniform(&rng, fc1, 3 * s.in_channels, -1.0f, 1.0f);
    tu_fill_uniform(&rng, fc2, (size_t)kernels * 3, -2.0f, 2.0f);
    tu_fill_uniform(&rng, x, x_len, -1.0f, 1.0f);
    for (size_t i = 0; i < x_len; ++i) {
        x[i] += (float)(i * (size_t)batch / x_len); /* each sample its own attention */
    }
    const dynconv_conv2d_weights wt = {w, b, fc1, NULL, fc2, NULL};
    forward_rows(&g, &wt, &s, batch, flags, threads, DC_ENGINE_ALWAYS, x, y_rows);
    forward_rows(&g, &wt, &s, batch, flags, threads, DC_ENGINE_NEVER, x, y_mix);
    assert_true(tu_nontrivial_f(y_mix, y_len));
    if (memcmp(y_rows, y_mix, y_len * sizeof(float)) != 0) {
        fail_msg("%s: K=%lld N=%lld flags=%u threads=%d: row panels differ from mixing first",
                 gm->name, (long long)kernels, (long long)batch, (unsigned)flags, threads);
    }
    free(y_mix);
    free(y_rows);
    free(x);
    free(fc2);
    free(fc1);
    free(b);
    free(w);
}

static void test_reshape_changes_kernel(void **state) {
    (void)state;
    for (int64_t k = 1; k <= 3; k += 2) {
        check_reshaped_layer(k, 0);
        check_reshaped_layer(k, DYNCONV_FLAG_BORROW_WEIGHTS);
    }
}

static void run_rows_bitwise_of(dc_isa isa, bool channel_lanes) {
    kernel_of_or_skip(isa, channel_lanes);
    assert_true(dc_gemm_force(isa, channel_lanes));
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    const int64_t ks[] = {1, 4};
    for (size_t i = 0; i < sizeof geos / sizeof geos[0]; ++i) {
        for (size_t ik = 0; ik < 2; ++ik) {
            for (int64_t batch = 1; batch <= 3; batch += 2) {
                for (int threads = 1; threads <= 2; ++threads) {
                    check_rows_bitwise(&geos[i], ks[ik], batch, 0, threads);
                    check_rows_bitwise(&geos[i], ks[ik], batch, DYNCONV_FLAG_BORROW_WEIGHTS,
                                       threads);
                }
            }
        }
    }
    dc_exec_set_rows_mode(DC_ENGINE_AUTO);
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_gemm_force_auto();
}

static void run_rows_bitwise(dc_isa isa) { run_rows_bitwise_of(isa, false); }

static void test_rows_bitwise_baseline_channels(void **state) {
    (void)state;
    run_rows_bitwise_of(DC_ISA_BASELINE, true);
}
static void test_rows_bitwise_avx512_channels(void **state) {
    (void)state;
    run_rows_bitwise_of(DC_ISA_AVX512, true);
}

static void test_rows_bitwise_baseline(void **state) {
    (void)state;
    run_rows_bitwise(DC_ISA_BASELINE);
}
static void test_rows_bitwise_avx2(void **state) {
    (void)state;
    run_rows_bitwise(DC_ISA_AVX2);
}
static void test_rows_bitwise_avx512(void **state) {
    (void)state;
    run_rows_bitwise(DC_ISA_AVX512);
}

static void test_forward_exact_baseline(void **state) {
    (void)state;
    run_forward_exact(DC_ISA_BASELINE);
}
static void test_forward_exact_avx2(void **state) {
    (void)state;
    run_forward_exact(DC_ISA_AVX2);
}
static void test_forward_exact_avx512(void **state) {
    (void)state;
    run_forward_exact(DC_ISA_AVX512);
}

/* A layer keeps the micro-kernel it was created with: forcing another afterwards changes
 * nothing for it (its panels were packed for the first). */
static void test_layer_keeps_its_kernel(void **state) {
    (void)state;
    const geo *gm = &geos[0];
    const dynconv_conv2d_geometry g = {
        (int64_t)gm->cin, (int64_t)gm->cout, (int64_t)gm->kh, (int64_t)gm->kw,
        (int64_t)gm->sh,  (int64_t)gm->sw,   (int64_t)gm->ph, (int64_t)gm->pw,
        (int64_t)gm->dh,  (int64_t)gm->dw,   (int64_t)gm->groups, 1, 3};
    const dc_conv_shape s = shape_of(gm);
    float *w = tu_alloc(s.out_channels * depth_of(&s) * sizeof(float));
    float fc1[3 * 5] = {0}, fc2[3] = {0};
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    tu_fill_int(&rng, w, s.out_channels * depth_of(&s), -4, 4);
    const size_t x_len = s.in_channels * s.height * s.width, y_len = s.out_channels * s.out_h * s.out_w;
    float *x = tu_alloc(x_len * sizeof(float));
    float *y = tu_alloc(y_len * sizeof(float));
    double *want = tu_alloc(y_len * sizeof(double));
    tu_fill_int(&rng, x, x_len, -3, 3);
    const dynconv_conv2d_weights wt = {w, NULL, fc1, NULL, fc2, NULL};
    ref_conv2d_forward(&g, &wt, 1.0, 1, (int64_t)s.height, (int64_t)s.width, x, want, NULL);
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    assert_true(dc_gemm_force_isa(DC_ISA_BASELINE));
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f, 0, &layer), DYNCONV_OK);
    dc_gemm_force_auto();
    assert_int_equal(dynconv_conv2d_reshape(layer, 1, (int64_t)s.height, (int64_t)s.width, NULL,
                                            NULL, NULL),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(tu_count_mismatches("kept kernel", y, want, y_len, 0.0, 0.0), 0);
    dynconv_conv2d_destroy(layer);
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    free(want);
    free(y);
    free(x);
    free(w);
}


/* ---- one-group pointwise and strided 1x1 layers mixed a block of row panels at a time ---- */

/* Small images (8 * hidden > H * W: the attention of the batch first) with K > 1: several
 * samples' blocks mixed in one pass over the K sets, each block convolved at once; a strided
 * layer's inputs gathered once per chunk. Batches that give chunks of several samples, a
 * last chunk shorter than the others, and samples left over for the threads to share. */
typedef struct blocked_case {
    geo g;
    int64_t hidden;
} blocked_case;

/* clang-format off */
static const blocked_case blocked_cases[] = {
    /*  name                     cin cout kh kw sh sw ph pw dh dw g  h   w   hidden */
    {{"pointwise_40_5x5",         12, 40, 1, 1, 1, 1, 0, 0, 1, 1, 1, 5,  5}, 4},
    {{"pointwise_70_7x7",          9, 70, 1, 1, 1, 1, 0, 0, 1, 1, 1, 7,  7}, 8},
    {{"1x1_stride2_40_9x9",       10, 40, 1, 1, 2, 2, 0, 0, 1, 1, 1, 9,  9}, 11},
    {{"1x1_stride2_70_14x14",     16, 70, 1, 1, 2, 2, 0, 0, 1, 1, 1, 14, 14}, 25},
    {{"1x1_stride2x3_33_13x20",    7, 33, 1, 1, 2, 3, 0, 0, 1, 1, 1, 13, 20}, 33},
    /* the attention per sample (8 * hidden <= H*W) on a pointwise plane of at most 256 */
    {{"pointwise_per_sample_16x16", 6, 50, 1, 1, 1, 1, 0, 0, 1, 1, 1, 16, 16}, 2},
};
/* clang-format on */

static void run_blocked_exact_of(dc_isa isa, bool channel_lanes) {
    const size_t mr = kernel_of_or_skip(isa, channel_lanes)->mr;
    assert_true(dc_gemm_force(isa, channel_lanes));
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    const int64_t batches[] = {1, 6, 7, 19};
    for (size_t i = 0; i < sizeof blocked_cases / sizeof blocked_cases[0]; ++i) {
        const blocked_case *c = &blocked_cases[i];
        for (size_t ib = 0; ib < sizeof batches / sizeof batches[0]; ++ib) {
            for (int threads = 1; threads <= 2; ++threads) {
                /* the header's B: min(N/T, 8, ceil(C_out / MR)) when N/T >= 2 */
                const size_t per = (size_t)batches[ib] / (size_t)threads;
                const size_t panels = (c->g.cout + mr - 1) / mr;
                const size_t chunk = per < 2 ? 1 : per < 8 ? per : 8;
                const size_t want = chunk < panels ? chunk : panels;
                check_forward_exact_path(&c->g, 4, c->hidden, batches[ib], 0, threads, want,
                                         PATH_BLOCKED);
                check_forward_exact_path(&c->g, 2, c->hidden, batches[ib],
                                         DYNCONV_FLAG_BORROW_WEIGHTS, threads, want,
                                         PATH_BLOCKED);
            }
        }
    }
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_gemm_force_auto();
}

static void test_blocked_exact_baseline(void **state) {
    (void)state;
    run_blocked_exact_of(DC_ISA_BASELINE, false);
}

static void test_blocked_exact_baseline_channels(void **state) {
    (void)state;
    run_blocked_exact_of(DC_ISA_BASELINE, true);
}

static void test_blocked_exact_avx2(void **state) {
    (void)state;
    run_blocked_exact_of(DC_ISA_AVX2, false);
}

static void test_blocked_exact_avx512(void **state) {
    (void)state;
    run_blocked_exact_of(DC_ISA_AVX512, false);
}

static void test_blocked_exact_avx512_channels(void **state) {
    (void)state;
    run_blocked_exact_of(DC_ISA_AVX512, true);
}

/* ---- chunks of samples on the row-panel driver ---- */

/* On small images: dynamic layers whose K sets exceed 8 MiB (here K = 8, so pi = 1/8
 * exactly), dynamic layers that are neither pointwise nor strided 1x1 whatever their size, and
 * static kernels over 4 MiB. A chunk of samples shares each panel slice: every sample's B panels of a reduction
 * slice built first (a padded copy made channel by channel), the slice mixed for all of them
 * at once, each sample's tiles run on it. Batches that give one chunk, a short last chunk and
 * samples left for the threads to share; groups, stride and dilation. The images are tiny:
 * the kernels must be large, and the double reference and the sanitizer builds pay for every
 * multiply-add. */
typedef struct rows_batch_case {
    geo g;
    int64_t kernels, hidden;
} rows_batch_case;

/* clang-format off */
static const rows_batch_case rows_batch_cases[] = {
    /*  name                 cin  cout kh kw sh sw ph pw dh dw g  h  w    K  hidden */
    {{"fused_192_3x3",        192, 192, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 3},  8, 2},
    {{"fused_192_s2_7x7",     192, 200, 3, 3, 2, 2, 1, 1, 1, 1, 1, 7, 7},  8, 7},
    {{"fused_groups2_3x4",    384, 392, 3, 3, 1, 1, 1, 1, 1, 1, 2, 3, 4},  8, 2},
    {{"fused_dilated_4x4",    200, 192, 3, 3, 1, 1, 2, 2, 2, 2, 1, 4, 4},  8, 3},
    {{"static_384_3x3",       384, 384, 3, 3, 1, 1, 1, 1, 1, 1, 1, 3, 3},  1, 2},
    {{"static_384_s2_5x6",    384, 390, 3, 3, 2, 2, 1, 1, 1, 1, 1, 5, 6},  1, 4},
    /* dynamic kernels of any size that are neither pointwise nor strided 1x1, the attention
     * per sample (8 * hidden <= H*W: each chunk pools and attends its samples first) or of
     * the batch */
    {{"small_s2_per_sample",   16,  24, 3, 3, 2, 2, 1, 1, 1, 1, 1, 9, 9},  4, 2},
    {{"small_5x5_batch_att",    8,  12, 5, 5, 1, 1, 2, 2, 1, 1, 1, 4, 4},  4, 4},
    {{"small_groups2_dilated", 12,  16, 3, 3, 1, 1, 2, 2, 2, 2, 2, 8, 7},  2, 1},
    {{"small_1x1_padded",      10,  20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 6, 6},  4, 1},
};
/* clang-format on */

static void run_rows_batch_exact_of(dc_isa isa, bool channel_lanes) {
    kernel_of_or_skip(isa, channel_lanes);
    assert_true(dc_gemm_force(isa, channel_lanes));
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    const int64_t batches[] = {5, 11};
    for (size_t i = 0; i < sizeof rows_batch_cases / sizeof rows_batch_cases[0]; ++i) {
        const rows_batch_case *c = &rows_batch_cases[i];
        for (size_t ib = 0; ib < sizeof batches / sizeof batches[0]; ++ib) {
            for (int threads = 1; threads <= 2; ++threads) {
                /* the header's B: min(N/T, 8) when N/T >= 2 (these samples keep far less than
                 * the L2 budget) */
                const size_t per = (size_t)batches[ib] / (size_t)threads;
                const size_t want = per < 2 ? 1 : per < 8 ? per : 8;
                /* borrowed weights (mixed or packed from the caller's arrays) on two threads */
                check_forward_exact_path(&c->g, c->kernels, c->hidden, batches[ib],
                                         threads == 2 ? DYNCONV_FLAG_BORROW_WEIGHTS : 0,
                                         threads, want, PATH_ROWS_BATCH);
            }
        }
    }
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_gemm_force_auto();
}

static void test_rows_batch_exact_baseline(void **state) {
    (void)state;
    run_rows_batch_exact_of(DC_ISA_BASELINE, false);
}

static void test_rows_batch_exact_avx2(void **state) {
    (void)state;
    run_rows_batch_exact_of(DC_ISA_AVX2, false);
}

static void test_rows_batch_exact_avx512(void **state) {
    (void)state;
    run_rows_batch_exact_of(DC_ISA_AVX512, false);
}

static void test_rows_batch_exact_avx512_channels(void **state) {
    (void)state;
    run_rows_batch_exact_of(DC_ISA_AVX512, true);
}

/* ---- the workspace formula of the header (section 7), computed here on its own ---- */

/* Bytes of a buffer of `floats` floats, rounded up to the workspace alignment. */
static size_t buf(size_t floats) { return (floats * 4 + 63) / 64 * 64; }
static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

typedef struct ws_case {
    const char *name;
    int64_t cin, cout, k, s, p, groups, kernels, hidden, n, hw;
    int threads;
    bool borrowed, bias;
} ws_case;

/* clang-format off */
static const ws_case ws_cases[] = {
    /* name                       cin cout k s p  g  K  hid  N  HW  T  borrowed bias */
    {"3x3_k4_batch5_t2",           64,  64, 3, 1, 1, 1, 4, 16, 5, 12, 2, false, true},
    {"3x3_k4_borrowed",            64,  64, 3, 1, 1, 1, 4, 16, 4, 12, 2, true,  false},
    {"3x3s2_groups2_k4",           64,  96, 3, 2, 1, 2, 4, 16, 3, 21, 2, false, true},
    /* dynamic 3x3 kernels on small planes: rows batches of any K-set size, the attention per
     * sample (8 * hidden <= H*W) or of the batch, copied or borrowed weights, with groups */
    {"3x3s2_rows_batch_per_sample", 64, 128, 3, 2, 1, 1, 4,  8, 6, 28, 1, false, true},
    {"3x3s2_rows_batch_borrowed",  64, 128, 3, 2, 1, 1, 4,  8, 7, 28, 2, true,  false},
    {"5x5_rows_batch_b16",         32,  48, 5, 1, 2, 1, 4, 16, 16, 7, 2, false, true},
    {"3x3_groups4_rows_batch_b9",  32,  64, 3, 1, 1, 4, 3,  8, 9, 10, 2, false, true},
    {"3x3_rows_batch_24x24_not",   32,  32, 3, 1, 1, 1, 4,  8, 6, 24, 1, false, true},
    {"fused_big_kernels_b4_t2",   256, 256, 3, 1, 1, 1, 4, 64, 4,  5, 2, false, true},
    {"fused_big_kernels_b5_t2",   256, 256, 3, 1, 1, 1, 4, 64, 5,  5, 2, false, true},
    {"fused_big_kernels_b16_t1",  256, 256, 3, 1, 1, 1, 4, 64, 16, 5, 1, false, false},
    /* K sets over 8 MiB on 14x14: the chunk is capped by what its samples keep in L2 */
    {"fused_big_kernels_14x14",   256, 256, 3, 1, 1, 1, 4, 64, 16, 14, 1, false, true},
    /* more than 512 output positions: slices of every panel mixed for the chunk */
    {"fused_big_kernels_24x24",   256, 256, 3, 1, 1, 1, 4, 128, 5, 24, 1, false, true},
    /* batch 1 and the attention sample by sample: one sample at a time */
    {"fused_big_kernels_b1",      256, 256, 3, 1, 1, 1, 4, 64, 1,  5, 1, false, true},
    {"fused_big_kernels_per_sample", 256, 256, 3, 1, 1, 1, 4, 2, 6, 5, 1, false, true},
    /* static kernels over 4 MiB on small images: chunks of samples too */
    {"static_big_kernel_b6_t2",   512, 512, 3, 1, 1, 1, 1,  8, 6,  7, 2, false, true},
    {"static_big_kernel_borrowed", 256, 512, 3, 2, 1, 1, 1, 8, 16, 14, 1, true, true},
    {"static_big_kernel_b1_t2",   512, 512, 3, 1, 1, 1, 1,  8, 3,  7, 2, false, false},
    {"static_below_4mib",         256, 256, 3, 1, 1, 1, 1,  8, 8, 14, 1, false, true},
    {"pointwise_k1_copied",        32,  40, 1, 1, 0, 1, 1,  8, 3, 28, 2, false, true},
    {"pointwise_k1_borrowed",      32,  40, 1, 1, 0, 1, 1,  8, 3, 28, 2, true,  true},
    {"3x3_k1_copied",              48,  40, 3, 1, 1, 1, 1,  8, 2, 16, 1, false, true},
    /* one-group pointwise on a small image: B samples' row blocks in one kernel's room; B
     * capped by the thread's samples, by 8, and by the row panels (3 channels: one panel) */
    {"pointwise_blocked_b5_t1",    16,  40, 1, 1, 0, 1, 4, 16, 5,  5, 1, false, true},
    {"pointwise_blocked_b12_t2",   32,  70, 1, 1, 0, 1, 4, 16, 24, 6, 2, true,  true},
    {"pointwise_blocked_1panel",   16,   3, 1, 1, 0, 1, 3, 16, 6,  5, 1, false, true},
    /* pointwise planes of at most 256 positions are blocked with the attention per sample
     * too; larger ones are not */
    {"pointwise_blocked_per_sample", 24, 96, 1, 1, 0, 1, 4,  4, 9, 14, 2, false, true},
    {"pointwise_per_sample_17x17", 24,  96, 1, 1, 0, 1, 4,  4, 9, 17, 2, false, true},
    {"pointwise_groups2_not_blocked", 16, 40, 1, 1, 0, 2, 4, 16, 5, 5, 1, false, true},
    /* strided 1x1: the same blocks, with the chunk's inputs gathered in the scratch */
    {"strided1x1_blocked_b6_t1",   32,  40, 1, 2, 0, 1, 4, 16, 6,  9, 1, false, true},
    {"strided1x1_blocked_b13_t2",  64,  70, 1, 2, 0, 1, 4, 32, 13, 14, 2, true,  false},
    {"strided1x1_blocked_b1",      64,  70, 1, 2, 0, 1, 4, 32, 1, 14, 1, false, true},
    {"strided1x1_per_sample",      32,  40, 1, 2, 0, 1, 4,  8, 6, 14, 1, false, true},
};
/* clang-format on */

/* The header's figure for the engine path. */
static size_t engine_formula(const ws_case *c, size_t mr, size_t nr) {
    const size_t g = (size_t)c->groups, n = (size_t)c->n, t = (size_t)c->threads;
    const size_t kk = (size_t)c->kernels, cout = (size_t)c->cout, hw = (size_t)c->hw;
    const size_t depth = (size_t)(c->cin / c->groups) * (size_t)(c->k * c->k);
    const size_t oh = (hw + 2 * (size_t)c->p - (size_t)c->k) / (size_t)c->s + 1;
    const size_t plane = oh * oh, rows = ceil_div(cout / g, mr) * mr;
    const size_t big_p = g * rows * depth;
    size_t b = 1, w = 0;
    const bool pointwise = c->k == 1 && c->s == 1 && c->p == 0;
    const bool strided_1x1 = c->k == 1 && c->s > 1 && c->p == 0;
    const bool batch_attention = 8 * (size_t)c->hidden > hw * hw;
    const bool blocked = kk > 1 && 4 * kk * big_p <= ((size_t)8 << 20) &&
                         (pointwise || strided_1x1) && g == 1 &&
                         (batch_attention || (pointwise && hw * hw <= 256));
    size_t scratch = (depth < 256 ? depth : 256) * ceil_div(plane < 512 ? plane : 512, nr) * nr;
    size_t padded = 0;
    if (!pointwise) {
        const size_t q = ceil_div(hw + 2 * (size_t)c->p, (size_t)c->s);
        padded = (size_t)(c->cin / c->groups) * (size_t)(c->s * c->s) * q * q;
    }
    /* chunks of samples on the row-panel driver, on planes of up to 512 positions: dynamic
     * kernels other than pointwise and strided 1x1 ones (whatever the attention), fused
     * layers with the attention of the batch first, static kernels over 4 MiB */
    const bool fused = kk > 1 && 4 * kk * big_p > ((size_t)8 << 20);
    const bool big_static = kk == 1 && 4 * big_p > ((size_t)4 << 20);
    const bool rows_dynamic = kk > 1 && !pointwise && !strided_1x1;
    if ((fused || big_static || rows_dynamic) && plane <= 512 &&
        (kk == 1 || batch_attention || rows_dynamic) && n / t >= 2) {
        const size_t per = scratch + cout * plane + (kk > 1 ? mr * 256 : 0);
        const size_t fit = ((size_t)1792 << 10) / (4 * per);
        b = fit < n / t ? fit : n / t;
        b = b < 8 ? b : 8;
        b = b > 0 ? b : 1;
    }
    const bool batch_rows = b > 1 && (fused || big_static || rows_dynamic);
    if (batch_rows && kk > 1) {
        w = b * mr * 256;
        if (n % t > 0 && big_p > w) {
            w = big_p;
        }
    } else if (kk > 1 && 4 * kk * big_p <= ((size_t)8 << 20)) {
        w = big_p;
        if (blocked && n / t >= 2) {
            const size_t panels = ceil_div(cout, mr), per = n / t < 8 ? n / t : 8;
            b = per < panels ? per : panels;
        }
    } else if (kk > 1) {
        if (plane > 512) { /* else b is the chunk above (here 1) */
            b = batch_attention && n / t >= 2 ? (n / t < 8 ? n / t : 8) : 1;
        }
        w = b * g * rows * 256;
        if (n % t > 0 && big_p > w) {
            w = big_p;
        }
    } else if (c->borrowed) {
        w = big_p;
    }
    if (batch_rows) {
        scratch = b * scratch; /* the chunk's B panel blocks, then one padded copy */
    }
    scratch += padded;
    if (blocked && strided_1x1) {
        /* the pointwise shape's B panels, then the chunk's inputs subsampled */
        const size_t cin = (size_t)c->cin;
        const size_t gather = (cin < 256 ? cin : 256) * ceil_div(plane < 512 ? plane : 512, nr) *
                                  nr + b * cin * plane;
        scratch = gather > scratch ? gather : scratch;
    }
    const size_t slot = (w > 0 ? buf(w) : 0) + (kk > 1 && c->bias ? buf(b * cout) : 0) +
                        buf(scratch);
    const size_t att = kk > 1 ? buf(n * (size_t)c->cin) + buf(n * (size_t)c->hidden) +
                                    buf(n * kk)
                              : 0;
    return att + t * slot;
}

/* The workspace size reshape reports for the case (zero parameters), and whether the layer
 * then runs on the Winograd path. */
static size_t reshaped_size(const ws_case *c, bool *wino_on) {
    const dynconv_conv2d_geometry g = {c->cin, c->cout, c->k, c->k, c->s, c->s, c->p, c->p,
                                       1, 1, c->groups, c->kernels, c->hidden};
    const size_t wlen = (size_t)(c->kernels * c->cout * c->cin / c->groups * c->k * c->k);
    float *w = calloc(wlen, sizeof(float));
    float *bias = calloc((size_t)(c->kernels * c->cout), sizeof(float));
    float *fc1 = calloc((size_t)(c->hidden * c->cin), sizeof(float));
    float *fc2 = calloc((size_t)(c->kernels * c->hidden), sizeof(float));
    assert_true(w != NULL && bias != NULL && fc1 != NULL && fc2 != NULL);
    const dynconv_conv2d_weights wt = {w, c->bias ? bias : NULL, fc1, NULL, fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&g, &wt, 1.0f,
                                           c->borrowed ? DYNCONV_FLAG_BORROW_WEIGHTS : 0, &layer),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, c->threads), DYNCONV_OK);
    size_t got = 0;
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->hw, c->hw, NULL, NULL, &got),
                     DYNCONV_OK);
    *wino_on = layer->core.wino_on;
    dynconv_conv2d_destroy(layer);
    free(fc2);
    free(fc1);
    free(bias);
    free(w);
    return got;
}

static void run_ws_formula_of(dc_isa isa, bool channel_lanes) {
    const dc_gemm_kernel *k = kernel_of_or_skip(isa, channel_lanes);
    assert_true(dc_gemm_force(isa, channel_lanes));
    dc_exec_set_engine_mode(DC_ENGINE_ALWAYS);
    for (size_t i = 0; i < sizeof ws_cases / sizeof ws_cases[0]; ++i) {
        const ws_case *c = &ws_cases[i];
        bool wino_on = false;
        const size_t got = reshaped_size(c, &wino_on), want = engine_formula(c, k->mr, k->nr);
        if (got != want) {
            fail_msg("%s (%s): reshape reports %zu bytes, the header's formula %zu", c->name,
                     k->name, got, want);
        }
    }
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_gemm_force_auto();
}

static void run_ws_formula(dc_isa isa) { run_ws_formula_of(isa, false); }

static void test_ws_formula_baseline_channels(void **state) {
    (void)state;
    run_ws_formula_of(DC_ISA_BASELINE, true);
}
static void test_ws_formula_avx512_channels(void **state) {
    (void)state;
    run_ws_formula_of(DC_ISA_AVX512, true);
}

/* The header's figure for the Winograd path, computed here from the formula's text. */
static size_t wino_formula(const ws_case *c) {
    const size_t n = (size_t)c->n, t = (size_t)c->threads, kk = (size_t)c->kernels;
    const size_t cin = (size_t)c->cin, cout = (size_t)c->cout, hw = (size_t)c->hw;
    const size_t oh = hw + 2 * (size_t)c->p - 2, th = ceil_div(oh, 2), tw = ceil_div(oh, 2);
    size_t r = 524288 / (64 * (cin + cout) * tw);
    r = r < 1 ? 1 : r > th ? th : r;
    const size_t scratch = 16 * (cin + cout) * r * tw + (2 * r + 2) * 2 * (tw + 1);
    const size_t len = 16 * cout * cin;
    size_t b = 1, w = kk > 1 ? len : 0, all = scratch;
    /* B samples of a chunk: their V and M in 16 MiB over all threads, at most 8 */
    const size_t image = 16 * (cin + cout) * th * tw;
    size_t chunk = ((size_t)16 << 20) / (4 * image * t);
    chunk = chunk < n / t ? chunk : n / t;
    chunk = chunk < 8 ? chunk : 8;
    chunk = chunk > 0 ? chunk : 1;
    bool streamed = false;
    if (kk > 1 && 4 * kk * len > ((size_t)8 << 20)) {
        /* K sets over 8 MiB: chunks when the attention of the batch comes first, else one
         * sample, streamed while its V and M take at most 2 MiB */
        if (8 * (size_t)c->hidden > hw * hw && n / t >= 2) {
            b = chunk;
        }
        streamed = b > 1 || 4 * image <= ((size_t)2 << 20);
    } else if (kk > 1 && 4 * image <= ((size_t)4 << 20) && n / t >= 2) {
        /* smaller K sets, a transformed image of at most 4 MiB: chunks wherever the attention
         * is computed, streamed when there is more than one sample */
        b = chunk;
        streamed = b > 1;
    }
    if (streamed) {
        size_t rows = kk * cin > 4096 ? 16 : 65536 / (kk * cin) / 16 * 16;
        rows = rows < cout ? rows : cout;
        w = b * rows * cin;
        if (n % t != 0 && w < len) {
            w = len;
        }
        const size_t form = b * image + (2 * th + 2) * 2 * (tw + 1);
        all = form > all ? form : all;
    }
    const size_t slot = (w > 0 ? buf(w) : 0) + (kk > 1 && c->bias ? buf(b * cout) : 0) +
                        buf(all);
    const size_t att = kk > 1 ? buf(n * cin) + buf(n * (size_t)c->hidden) + buf(n * kk) : 0;
    return att + t * slot;
}

/* clang-format off */
static const ws_case wino_ws_cases[] = {
    /* name                    cin cout k s p g K hid N hw T borrowed bias */
    {"wino_static",             64,  48, 3, 1, 1, 1, 1, 8, 3, 20, 2, false, true},
    {"wino_dynamic_bias",       40,  24, 3, 1, 1, 1, 4, 8, 5, 30, 2, false, true},
    {"wino_dynamic_no_bias",    40,  24, 3, 1, 0, 1, 4, 8, 1, 31, 1, false, false},
    {"wino_one_block_row",     700, 500, 3, 1, 1, 1, 2, 8, 2, 16, 1, false, true},
    /* K sets over 8 MiB, attention of the batch first: the streamed form in chunks (6; 3
     * with a shared seventh sample; 2 with a shared fifth), or one sample at a time (1 per
     * thread) */
    {"wino_chunks",            256, 256, 3, 1, 1, 1, 4, 64, 6, 14, 1, false, true},
    {"wino_chunks_t2",         256, 256, 3, 1, 1, 1, 4, 64, 7, 14, 2, false, true},
    {"wino_streamed_odd",      320, 200, 3, 1, 1, 1, 4, 64, 5, 15, 2, false, true},
    {"wino_streamed_no_bias",  168, 272, 3, 1, 0, 1, 3, 16, 9, 11, 1, false, false},
    {"wino_big_one_each",      256, 256, 3, 1, 1, 1, 4, 64, 2, 14, 2, false, true},
    {"wino_big_sample_att",    184, 184, 3, 1, 1, 1, 4,  2, 3,  6, 2, false, true},
    {"wino_big_all_shared",    256, 256, 3, 1, 1, 1, 4, 64, 1, 14, 2, false, false},
    /* a sample's V and M over 2 MiB with the attention per sample: mixed whole first */
    {"wino_big_image",         256, 256, 3, 1, 1, 1, 4, 64, 3, 28, 1, false, true},
    /* smaller K sets: chunks on the streamed form while a transformed image takes at most
     * 4 MiB, the attention per sample or of the batch; one sample at a time above it */
    {"wino_small_sets_chunks",  64,  64, 3, 1, 1, 1, 4,  4, 6, 28, 1, false, true},
    {"wino_small_sets_t2_odd",  48,  80, 3, 1, 1, 1, 2, 16, 7, 13, 2, false, false},
    {"wino_small_sets_shared",  32,  32, 3, 1, 1, 1, 4,  8, 3, 12, 2, false, true},
    {"wino_small_sets_big_img", 64,  64, 3, 1, 1, 1, 4,  4, 4, 56, 1, false, true},
};
/* clang-format on */

static void test_ws_formula_winograd(void **state) {
    (void)state;
    dc_exec_set_wino_mode(DC_ENGINE_ALWAYS);
    for (size_t i = 0; i < sizeof wino_ws_cases / sizeof wino_ws_cases[0]; ++i) {
        const ws_case *c = &wino_ws_cases[i];
        bool wino_on = false;
        const size_t got = reshaped_size(c, &wino_on), want = wino_formula(c);
        assert_true(wino_on);
        if (got != want) {
            fail_msg("%s: reshape reports %zu bytes, the header's formula %zu", c->name, got,
                     want);
        }
    }
    dc_exec_set_wino_mode(DC_ENGINE_AUTO);
}

static void test_ws_formula_baseline(void **state) {
    (void)state;
    run_ws_formula(DC_ISA_BASELINE);
}
static void test_ws_formula_avx2(void **state) {
    (void)state;
    run_ws_formula(DC_ISA_AVX2);
}
static void test_ws_formula_avx512(void **state) {
    (void)state;
    run_ws_formula(DC_ISA_AVX512);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_exact_baseline),
        cmocka_unit_test(test_forward_exact_avx2),
        cmocka_unit_test(test_forward_exact_avx512),
        cmocka_unit_test(test_forward_exact_baseline_channels),
        cmocka_unit_test(test_forward_exact_avx512_channels),
        cmocka_unit_test(test_forward_exact_winograd),
        cmocka_unit_test(test_wino_transforms_at_reshape),
        cmocka_unit_test(test_blocked_exact_baseline),
        cmocka_unit_test(test_blocked_exact_avx2),
        cmocka_unit_test(test_blocked_exact_avx512),
        cmocka_unit_test(test_blocked_exact_baseline_channels),
        cmocka_unit_test(test_blocked_exact_avx512_channels),
        cmocka_unit_test(test_rows_batch_exact_baseline),
        cmocka_unit_test(test_rows_batch_exact_avx2),
        cmocka_unit_test(test_rows_batch_exact_avx512),
        cmocka_unit_test(test_rows_batch_exact_avx512_channels),
        cmocka_unit_test(test_kernel_follows_shape),
        cmocka_unit_test(test_reshape_changes_kernel),
        cmocka_unit_test(test_rows_bitwise_baseline),
        cmocka_unit_test(test_rows_bitwise_avx2),
        cmocka_unit_test(test_rows_bitwise_avx512),
        cmocka_unit_test(test_rows_bitwise_baseline_channels),
        cmocka_unit_test(test_rows_bitwise_avx512_channels),
        cmocka_unit_test(test_layer_keeps_its_kernel),
        cmocka_unit_test(test_ws_formula_baseline),
        cmocka_unit_test(test_ws_formula_avx2),
        cmocka_unit_test(test_ws_formula_avx512),
        cmocka_unit_test(test_ws_formula_baseline_channels),
        cmocka_unit_test(test_ws_formula_avx512_channels),
        cmocka_unit_test(test_ws_formula_winograd),
    };
    if (dynconv_threadpool_create(2, 0, &pool2) != DYNCONV_OK) {
        fprintf(stderr, "cannot create a pool of 2 threads: %s\n", dynconv_last_error_message());
        return 1;
    }
    const int failed = cmocka_run_group_tests(tests, NULL, NULL);
    dynconv_threadpool_destroy(pool2);
    return failed;
}
