/* What the header promises about threads, under load:
 *   - many handles, one per thread, created with DYNCONV_FLAG_BORROW_WEIGHTS over one shared
 *     set of read-only weights, run concurrently and give bitwise the results of a
 *     single-threaded run (with their own or with caller-owned workspaces), and never write to
 *     the shared weights; the linear layers of pairs of threads also read one shared input;
 *   - handles can be created and destroyed concurrently;
 *   - dynconv_last_error_message() is per thread: concurrent failures never mix messages.
 * Worker threads only record what they saw; the main thread makes the cmocka assertions
 * (cmocka's failure path is not thread-safe). */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
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

#include "reference.h"
#include "testutil.h"

enum {
    THREADS = 8,
    ROUNDS = 12,
    /* conv2d: 6 -> 8 channels, groups 2, 3x3, stride 1, padding 1, K = 4, hidden 3 */
    CIN = 6, COUT = 8, KS = 3, GROUPS = 2, K = 4, HID = 3, N = 2, H = 9, W = 10,
    /* linear: 12 -> 5, K = 3, hidden 4 */
    LIN = 12, LOUT = 5, LK = 3, LHID = 4, LN = 3
};
#define TEMPERATURE 0.7f
#define X_LEN ((size_t)N * CIN * H * W)
#define Y_LEN ((size_t)N * COUT * H * W)
#define LX_LEN ((size_t)LN * LIN)
#define LY_LEN ((size_t)LN * LOUT)

static const dynconv_conv2d_geometry geometry = {
    .in_channels = CIN, .out_channels = COUT, .kernel_h = KS, .kernel_w = KS, .stride_h = 1,
    .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = GROUPS,
    .num_kernels = K, .hidden = HID};
static const dynconv_linear_geometry lgeometry = {
    .in_features = LIN, .out_features = LOUT, .num_kernels = LK, .hidden = LHID};

/* The shared weights and their pristine copy. */
static float weight[K * COUT * (CIN / GROUPS) * KS * KS], bias[K * COUT], fc1[HID * CIN],
    fc1_b[HID], fc2[K * HID], fc2_b[K];
static float lweight[LK * LOUT * LIN], lbias[LK * LOUT], lfc1[LHID * LIN], lfc2[LK * LHID];
static float pristine[sizeof weight / sizeof(float) + sizeof bias / sizeof(float)];

/* Per thread: its own input, and what a single-threaded run gave for it. */
static float inputs[THREADS][X_LEN], expected[THREADS][Y_LEN], expected_att[THREADS][N * K];
static float linputs[THREADS][LX_LEN], lexpected[THREADS][LY_LEN];

static dynconv_conv2d_weights shared_weights(void) {
    const dynconv_conv2d_weights w = {weight, bias, fc1, fc1_b, fc2, fc2_b};
    return w;
}

static dynconv_linear_weights shared_lweights(void) {
    const dynconv_linear_weights w = {lweight, lbias, lfc1, NULL, lfc2, NULL};
    return w;
}

static int setup(void **state) {
    (void)state;
    tu_rng rng;
    tu_rng_seed(&rng, 2024);
    tu_fill_uniform(&rng, weight, sizeof weight / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, bias, sizeof bias / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, fc1, sizeof fc1 / sizeof(float), -2.f, 2.f);
    tu_fill_uniform(&rng, fc1_b, sizeof fc1_b / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, fc2, sizeof fc2 / sizeof(float), -2.f, 2.f);
    tu_fill_uniform(&rng, fc2_b, sizeof fc2_b / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, lweight, sizeof lweight / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, lbias, sizeof lbias / sizeof(float), -0.5f, 0.5f);
    tu_fill_uniform(&rng, lfc1, sizeof lfc1 / sizeof(float), -1.f, 1.f);
    tu_fill_uniform(&rng, lfc2, sizeof lfc2 / sizeof(float), -1.f, 1.f);
    memcpy(pristine, weight, sizeof weight);
    memcpy(pristine + sizeof weight / sizeof(float), bias, sizeof bias);
    for (int t = 0; t < THREADS; ++t) {
        /* Distinct inputs (and offsets, so the attention differs): a thread that read another
         * thread's buffers or workspace would get another result. */
        tu_fill_uniform(&rng, inputs[t], X_LEN, -1.f + 0.1f * (float)t, 1.f);
        tu_fill_uniform(&rng, linputs[t], LX_LEN, -1.f, 1.f + 0.1f * (float)t);
    }

    /* The single-threaded run, itself checked against the double-precision reference. */
    const dynconv_conv2d_weights w = shared_weights();
    const dynconv_linear_weights lw = shared_lweights();
    dynconv_conv2d *layer = NULL;
    dynconv_linear *llayer = NULL;
    assert_int_equal(dynconv_conv2d_create(&geometry, &w, TEMPERATURE, 0, &layer), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, N, H, W, NULL, NULL, NULL), DYNCONV_OK);
    assert_int_equal(dynconv_linear_create(&lgeometry, &lw, TEMPERATURE, 0, &llayer),
                     DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(llayer, LN, NULL), DYNCONV_OK);
    static double ref[Y_LEN], lref[LY_LEN];
    for (int t = 0; t < THREADS; ++t) {
        assert_int_equal(
            dynconv_conv2d_forward(layer, inputs[t], expected[t], expected_att[t], NULL, 0),
            DYNCONV_OK);
        ref_conv2d_forward(&geometry, &w, TEMPERATURE, N, H, W, inputs[t], ref, NULL);
        assert_true(tu_nontrivial(ref, Y_LEN));
        assert_int_equal(tu_count_mismatches("conv2d", expected[t], ref, Y_LEN, TU_RTOL, TU_ATOL),
                         0);
        assert_int_equal(dynconv_linear_forward(llayer, linputs[t], lexpected[t], NULL, NULL, 0),
                         DYNCONV_OK);
        ref_linear_forward(&lgeometry, &lw, TEMPERATURE, LN, linputs[t], lref, NULL);
        assert_true(tu_nontrivial(lref, LY_LEN));
        assert_int_equal(
            tu_count_mismatches("linear", lexpected[t], lref, LY_LEN, TU_RTOL, TU_ATOL), 0);
    }
    /* The threads' inputs must lead to different outputs, or a mix-up would go unnoticed. */
    assert_memory_not_equal(expected[0], expected[1], sizeof expected[0]);
    dynconv_conv2d_destroy(layer);
    dynconv_linear_destroy(llayer);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

typedef struct worker {
    int id;
    pthread_barrier_t *start;
    /* results */
    dynconv_status first_error;
    unsigned long mismatches;
    unsigned long runs;
    bool own_message_ok;
} worker;

static void note(worker *wk, dynconv_status st) {
    if (st != DYNCONV_OK && wk->first_error == DYNCONV_OK) {
        wk->first_error = st;
    }
}

/* Every round makes fresh handles over the shared weights, so creation and destruction run
 * concurrently too; odd threads bring their own workspace. */
static void *forward_worker(void *arg) {
    worker *wk = arg;
    const int t = wk->id;
    const bool external = (t % 2) == 1;
    const uint32_t flags =
        DYNCONV_FLAG_BORROW_WEIGHTS | (external ? DYNCONV_FLAG_EXTERNAL_WORKSPACE : 0u);
    const dynconv_conv2d_weights w = shared_weights();
    const dynconv_linear_weights lw = shared_lweights();
    float *y = malloc(Y_LEN * sizeof(float));
    float *att = malloc((size_t)N * K * sizeof(float));
    float *ly = malloc(LY_LEN * sizeof(float));
    if (y == NULL || att == NULL || ly == NULL) {
        note(wk, DYNCONV_ERROR_OUT_OF_MEMORY);
        goto done;
    }
    pthread_barrier_wait(wk->start);
    for (int r = 0; r < ROUNDS && wk->first_error == DYNCONV_OK; ++r) {
        dynconv_conv2d *layer = NULL;
        dynconv_linear *llayer = NULL;
        void *ws = NULL, *lws = NULL;
        size_t ws_size = 0, lws_size = 0;
        note(wk, dynconv_conv2d_create(&geometry, &w, TEMPERATURE, flags, &layer));
        note(wk, dynconv_linear_create(&lgeometry, &lw, TEMPERATURE, flags, &llayer));
        if (wk->first_error == DYNCONV_OK) {
            note(wk, dynconv_conv2d_reshape(layer, N, H, W, NULL, NULL, &ws_size));
            note(wk, dynconv_linear_reshape(llayer, LN, &lws_size));
        }
        if (wk->first_error == DYNCONV_OK && external) {
            const size_t a = DYNCONV_WORKSPACE_ALIGNMENT;
            ws = aligned_alloc(a, (ws_size + a - 1) / a * a);
            lws = aligned_alloc(a, (lws_size + a - 1) / a * a);
            if (ws == NULL || lws == NULL) {
                note(wk, DYNCONV_ERROR_OUT_OF_MEMORY);
            }
        }
        for (int rep = 0; rep < 3 && wk->first_error == DYNCONV_OK; ++rep) {
            note(wk, dynconv_conv2d_forward(layer, inputs[t], y, att, ws, ws_size));
            note(wk, dynconv_linear_forward(llayer, linputs[t & 1], ly, NULL, lws, lws_size));
            if (wk->first_error == DYNCONV_OK) {
                wk->mismatches += memcmp(y, expected[t], Y_LEN * sizeof(float)) != 0;
                wk->mismatches += memcmp(att, expected_att[t], sizeof expected_att[t]) != 0;
                wk->mismatches += memcmp(ly, lexpected[t & 1], LY_LEN * sizeof(float)) != 0;
                ++wk->runs;
            }
        }
        free(ws);
        free(lws);
        dynconv_conv2d_destroy(layer);
        dynconv_linear_destroy(llayer);
    }
done:
    free(y);
    free(att);
    free(ly);
    return NULL;
}

static void run_workers(void *(*fn)(void *), worker *workers) {
    pthread_t threads[THREADS];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int t = 0; t < THREADS; ++t) {
        workers[t] = (worker){.id = t, .start = &start, .first_error = DYNCONV_OK};
        assert_int_equal(pthread_create(&threads[t], NULL, fn, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; ++t) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    }
    pthread_barrier_destroy(&start);
}

static void concurrent_handles_share_borrowed_weights(void **state) {
    (void)state;
    worker workers[THREADS];
    run_workers(forward_worker, workers);
    for (int t = 0; t < THREADS; ++t) {
        if (workers[t].first_error != DYNCONV_OK) {
            print_error("thread %d: %s\n", t, dynconv_status_string(workers[t].first_error));
        }
        assert_int_equal(workers[t].first_error, DYNCONV_OK);
        assert_int_equal(workers[t].runs, ROUNDS * 3);
        assert_int_equal(workers[t].mismatches, 0);
    }
    /* Borrowed weights are only read. */
    assert_memory_equal(weight, pristine, sizeof weight);
    assert_memory_equal(bias, pristine + sizeof weight / sizeof(float), sizeof bias);
}

/* Each thread fails with its own bad batch size, waits until every thread has failed, then
 * reads its message: it must name its own value. */
static void *error_worker(void *arg) {
    worker *wk = arg;
    const dynconv_conv2d_weights w = shared_weights();
    dynconv_conv2d *layer = NULL;
    note(wk, dynconv_conv2d_create(&geometry, &w, TEMPERATURE, DYNCONV_FLAG_BORROW_WEIGHTS,
                                   &layer));
    const long long bad = -1000 - wk->id;
    const dynconv_status st =
        layer != NULL ? dynconv_conv2d_reshape(layer, bad, H, W, NULL, NULL, NULL) : DYNCONV_OK;
    pthread_barrier_wait(wk->start);
    char want[32];
    snprintf(want, sizeof want, "%lld", bad);
    wk->own_message_ok = st == DYNCONV_ERROR_INVALID_ARGUMENT &&
                         strstr(dynconv_last_error_message(), want) != NULL;
    for (int other = 0; other < THREADS; ++other) {
        char theirs[32];
        snprintf(theirs, sizeof theirs, "%lld", -1000LL - other);
        if (other != wk->id && strstr(dynconv_last_error_message(), theirs) != NULL) {
            wk->own_message_ok = false;
        }
    }
    dynconv_conv2d_destroy(layer);
    return NULL;
}

static void error_messages_are_per_thread(void **state) {
    (void)state;
    worker workers[THREADS];
    run_workers(error_worker, workers);
    for (int t = 0; t < THREADS; ++t) {
        assert_int_equal(workers[t].first_error, DYNCONV_OK);
        assert_true(workers[t].own_message_ok);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_handles_share_borrowed_weights),
        cmocka_unit_test(error_messages_are_per_thread),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
