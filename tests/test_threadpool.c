/* Thread pools shared by handles:
 *   - the pool API and its errors;
 *   - handles own no threads: the process's threads (/proc/self/task) do not grow with the
 *     number of live handles, and the default pool's workers go with the last handle;
 *   - a handle's thread count is capped at its pool's size, and the result depends only on the
 *     count really used, not on which pool provides it;
 *   - one pool used by several handles from several threads at once: every forward gives
 *     bitwise what it gives alone;
 *   - the BLAS: set to one thread once, when the first pool with workers starts, and never
 *     changed by a forward afterwards;
 *   - backward shares its per-sample work on the pool: bitwise the same gradients on 1, 2 and 3
 *     threads, with one convolution scratch per thread in its workspace;
 *   - a forked child's own handles get a default pool of their own.
 * Worker threads only record what they saw; the main thread makes the cmocka assertions. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cblas.h>
#include <dynconv/dynconv.h>

#include "testutil.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ThreadSanitizer cannot run a child that starts threads after a multi-threaded fork. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* Threads of this process, as the kernel lists them. */
static int process_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

/* A joined thread may stay listed for a moment after pthread_join returns: wait (up to 2 s)
 * for the count to come down to `want`. */
static int process_threads_settled(int want)
{
    int n = process_threads();
    for (int i = 0; i < 200 && n != want; ++i) {
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        n = process_threads();
    }
    return n;
}

static int available_cpus(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

/* ---------------------------------------------------------------------------------------- */
/* Layers: big enough (over 10^6 multiply-adds) that a forward really uses its threads.       */

typedef struct conv_layer {
    dynconv_conv2d_geometry g;
    float *weight, *bias, *fc1, *fc2, *x;
    int64_t n, h, w;
    size_t ylen;
} conv_layer;

static void make_conv(conv_layer *c, int64_t n, uint64_t seed)
{
    c->g = (dynconv_conv2d_geometry){.in_channels = 16, .out_channels = 24, .kernel_h = 3,
                                     .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1,
                                     .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 1,
                                     .num_kernels = 4, .hidden = 4};
    c->n = n;
    c->h = 20;
    c->w = 18;
    const size_t wlen = 4 * 24 * 16 * 9, xlen = (size_t)(n * 16 * c->h * c->w);
    c->ylen = (size_t)(n * 24 * c->h * c->w);
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    c->weight = tu_alloc(wlen * sizeof(float));
    c->bias = tu_alloc(4 * 24 * sizeof(float));
    c->fc1 = tu_alloc(4 * 16 * sizeof(float));
    c->fc2 = tu_alloc(4 * 4 * sizeof(float));
    c->x = tu_alloc(xlen * sizeof(float));
    tu_fill_uniform(&rng, c->weight, wlen, -0.3f, 0.3f);
    tu_fill_uniform(&rng, c->bias, 4 * 24, -0.5f, 0.5f);
    tu_fill_uniform(&rng, c->fc1, 4 * 16, -1.f, 1.f);
    tu_fill_uniform(&rng, c->fc2, 4 * 4, -1.f, 1.f);
    tu_fill_uniform(&rng, c->x, xlen, -1.f, 1.f);
}

static void free_conv(conv_layer *c)
{
    free(c->weight);
    free(c->bias);
    free(c->fc1);
    free(c->fc2);
    free(c->x);
}

static dynconv_conv2d *conv_handle(const conv_layer *c, dynconv_threadpool *pool, int threads)
{
    const dynconv_conv2d_weights w = {c->weight, c->bias, c->fc1, NULL, c->fc2, NULL};
    dynconv_conv2d *layer = NULL;
    assert_int_equal(dynconv_conv2d_create(&c->g, &w, 0.8f, DYNCONV_FLAG_BORROW_WEIGHTS, &layer),
                     DYNCONV_OK);
    if (pool != NULL) {
        assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool), DYNCONV_OK);
    }
    assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL),
                     DYNCONV_OK);
    return layer;
}

typedef struct linear_layer {
    dynconv_linear_geometry g;
    float *weight, *fc1, *fc2, *x;
    int64_t n;
} linear_layer;

static void make_linear(linear_layer *l, uint64_t seed)
{
    l->g = (dynconv_linear_geometry){.in_features = 96, .out_features = 80, .num_kernels = 3,
                                     .hidden = 8};
    l->n = 160;
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    l->weight = tu_alloc(3 * 80 * 96 * sizeof(float));
    l->fc1 = tu_alloc(8 * 96 * sizeof(float));
    l->fc2 = tu_alloc(3 * 8 * sizeof(float));
    l->x = tu_alloc((size_t)l->n * 96 * sizeof(float));
    tu_fill_uniform(&rng, l->weight, 3 * 80 * 96, -0.3f, 0.3f);
    tu_fill_uniform(&rng, l->fc1, 8 * 96, -1.f, 1.f);
    tu_fill_uniform(&rng, l->fc2, 3 * 8, -1.f, 1.f);
    tu_fill_uniform(&rng, l->x, (size_t)l->n * 96, -1.f, 1.f);
}

static void free_linear(linear_layer *l)
{
    free(l->weight);
    free(l->fc1);
    free(l->fc2);
    free(l->x);
}

static dynconv_linear *linear_handle(const linear_layer *l, dynconv_threadpool *pool,
                                     int threads)
{
    const dynconv_linear_weights w = {l->weight, NULL, l->fc1, NULL, l->fc2, NULL};
    dynconv_linear *layer = NULL;
    assert_int_equal(dynconv_linear_create(&l->g, &w, 1.0f, DYNCONV_FLAG_BORROW_WEIGHTS, &layer),
                     DYNCONV_OK);
    if (pool != NULL) {
        assert_int_equal(dynconv_linear_set_threadpool(layer, pool), DYNCONV_OK);
    }
    assert_int_equal(dynconv_linear_set_num_threads(layer, threads), DYNCONV_OK);
    assert_int_equal(dynconv_linear_reshape(layer, l->n, NULL), DYNCONV_OK);
    return layer;
}

/* ---------------------------------------------------------------------------------------- */
/* API                                                                                       */

static void pool_api(void **state)
{
    (void)state;
    dynconv_threadpool *pool = NULL;
    int threads = 0;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_threadpool_get_num_threads(pool, &threads), DYNCONV_OK);
    assert_int_equal(threads, 3);
    dynconv_threadpool_destroy(pool);

    assert_int_equal(dynconv_threadpool_create(0, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_threadpool_get_num_threads(pool, &threads), DYNCONV_OK);
    assert_int_equal(threads, available_cpus());
    dynconv_threadpool_destroy(pool);

    assert_int_equal(dynconv_threadpool_create(1, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_threadpool_get_num_threads(pool, &threads), DYNCONV_OK);
    assert_int_equal(threads, 1);

    /* errors leave *out unchanged */
    dynconv_threadpool *untouched = pool;
    assert_int_equal(dynconv_threadpool_create(-1, 0, &untouched),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(dynconv_last_error_message(), "num_threads"));
    assert_int_equal(dynconv_threadpool_create(DYNCONV_MAX_THREADS + 1, 0, &untouched),
                     DYNCONV_ERROR_INVALID_ARGUMENT);
    assert_int_equal(dynconv_threadpool_create(2, 1u << 7, &untouched),
                     DYNCONV_ERROR_UNSUPPORTED);
    assert_non_null(strstr(dynconv_last_error_message(), "flags"));
    assert_ptr_equal(untouched, pool);
    assert_int_equal(dynconv_threadpool_create(2, 0, NULL), DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_threadpool_get_num_threads(NULL, &threads),
                     DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_threadpool_get_num_threads(pool, NULL), DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_conv2d_set_threadpool(NULL, pool), DYNCONV_ERROR_NULL_POINTER);
    assert_int_equal(dynconv_linear_set_threadpool(NULL, pool), DYNCONV_ERROR_NULL_POINTER);
    dynconv_threadpool_destroy(pool);
    dynconv_threadpool_destroy(NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads held                                                                              */

enum { LIVE = 64 };

/* 64 live handles (conv2d and linear, each shaped and run) hold no more threads than one: the
 * default pool's workers, or those of a pool they share; the default pool's go with the last
 * handle, a created pool's with its last reference. */
static void handles_own_no_threads(void **state)
{
    (void)state;
    conv_layer c;
    linear_layer l;
    make_conv(&c, 3, 1);
    make_linear(&l, 2);
    float *y = tu_alloc(c.ylen * sizeof(float));
    float *ly = tu_alloc((size_t)l.n * 80 * sizeof(float));
    const int cpus = available_cpus();

    const int before = process_threads();
    dynconv_conv2d *convs[LIVE / 2];
    dynconv_linear *linears[LIVE / 2];
    for (int i = 0; i < LIVE / 2; ++i) {
        convs[i] = conv_handle(&c, NULL, 0);
        linears[i] = linear_handle(&l, NULL, 0);
        if (i == 0) {
            /* the default pool: one thread per CPU, the caller's among them; with workers, it
             * set the BLAS to one thread */
            assert_int_equal(process_threads(), before + cpus - 1);
            if (cpus > 1) {
                assert_int_equal(dynconv_blas_num_threads(), 1);
            }
        }
    }
    for (int i = 0; i < LIVE / 2; ++i) {
        assert_int_equal(dynconv_conv2d_forward(convs[i], c.x, y, NULL, NULL, 0), DYNCONV_OK);
        assert_int_equal(dynconv_linear_forward(linears[i], l.x, ly, NULL, NULL, 0), DYNCONV_OK);
    }
    const int live = process_threads();
    print_message("  threads: %d before, %d with %d live handles (default pool, %d CPUs)\n",
                  before, live, LIVE, cpus);
    assert_int_equal(live, before + cpus - 1);

    /* the same handles moved to a pool of 3: its 2 workers, while the default pool goes */
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    for (int i = 0; i < LIVE / 2; ++i) {
        assert_int_equal(dynconv_conv2d_set_threadpool(convs[i], pool), DYNCONV_OK);
        assert_int_equal(dynconv_linear_set_threadpool(linears[i], pool), DYNCONV_OK);
    }
    /* the handles keep the pool alive without the creator's reference */
    dynconv_threadpool_destroy(pool);
    for (int i = 0; i < LIVE / 2; ++i) {
        assert_int_equal(dynconv_conv2d_set_num_threads(convs[i], 3), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_forward(convs[i], c.x, y, NULL, NULL, 0), DYNCONV_OK);
        assert_int_equal(dynconv_linear_forward(linears[i], l.x, ly, NULL, NULL, 0), DYNCONV_OK);
    }
    assert_int_equal(process_threads_settled(before + 2), before + 2);

    for (int i = 0; i < LIVE / 2; ++i) {
        dynconv_conv2d_destroy(convs[i]);
        dynconv_linear_destroy(linears[i]);
    }
    assert_int_equal(process_threads_settled(before), before);

    /* and the default pool comes back when a handle needs it again */
    dynconv_conv2d *again = conv_handle(&c, NULL, 0);
    assert_int_equal(process_threads(), before + cpus - 1);
    dynconv_conv2d_destroy(again);
    assert_int_equal(process_threads_settled(before), before);
    free(ly);
    free(y);
    free_linear(&l);
    free_conv(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* Thread counts                                                                             */

/* A count above the pool's size is capped at it: the forward, and the workspace, are those of
 * the pool's size. Moving the handle to a larger pool grows the workspace (a caller-owned one
 * must be re-sized), and the same thread count from two different pools gives the same bits. */
static void thread_count_capped_at_pool(void **state)
{
    (void)state;
    conv_layer c;
    make_conv(&c, 3, 3); /* batch 3: on 2 threads one sample is shared, on 3 none */
    float *y2 = tu_alloc(c.ylen * sizeof(float));
    float *y = tu_alloc(c.ylen * sizeof(float));
    dynconv_threadpool *two = NULL, *three = NULL, *big = NULL;
    assert_int_equal(dynconv_threadpool_create(2, 0, &two), DYNCONV_OK);
    assert_int_equal(dynconv_threadpool_create(3, 0, &three), DYNCONV_OK);
    assert_int_equal(dynconv_threadpool_create(5, 0, &big), DYNCONV_OK);

    size_t ws2 = 0, ws = 0;
    dynconv_conv2d *exact = conv_handle(&c, two, 2);
    assert_int_equal(dynconv_conv2d_reshape(exact, c.n, c.h, c.w, NULL, NULL, &ws2), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(exact, c.x, y2, NULL, NULL, 0), DYNCONV_OK);
    assert_true(tu_nontrivial_f(y2, c.ylen));

    /* 4 requested from a pool of 2: the count set is kept, the forward is the 2-thread one */
    dynconv_conv2d *capped = conv_handle(&c, two, 4);
    int threads = 0;
    assert_int_equal(dynconv_conv2d_get_num_threads(capped, &threads), DYNCONV_OK);
    assert_int_equal(threads, 4);
    assert_int_equal(dynconv_conv2d_reshape(capped, c.n, c.h, c.w, NULL, NULL, &ws), DYNCONV_OK);
    assert_int_equal(ws, ws2);
    assert_int_equal(dynconv_conv2d_forward(capped, c.x, y, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(y, y2, c.ylen * sizeof(float));

    /* 2 threads of a pool of 5 are the same 2-thread forward */
    assert_int_equal(dynconv_conv2d_set_threadpool(exact, big), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(exact, c.x, y, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(y, y2, c.ylen * sizeof(float));

    /* 0 means the whole pool */
    assert_int_equal(dynconv_conv2d_set_num_threads(exact, 0), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_get_num_threads(exact, &threads), DYNCONV_OK);
    assert_int_equal(threads, 5);

    /* a caller-owned workspace follows the pool: 4 of 3 threads -> 3, a larger workspace */
    dynconv_conv2d *external = NULL;
    const dynconv_conv2d_weights w = {c.weight, c.bias, c.fc1, NULL, c.fc2, NULL};
    assert_int_equal(dynconv_conv2d_create(&c.g, &w, 0.8f,
                                           DYNCONV_FLAG_BORROW_WEIGHTS |
                                               DYNCONV_FLAG_EXTERNAL_WORKSPACE,
                                           &external),
                     DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_threadpool(external, two), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_set_num_threads(external, 4), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_reshape(external, c.n, c.h, c.w, NULL, NULL, &ws),
                     DYNCONV_OK);
    assert_int_equal(ws, ws2);
    void *buf2 = NULL, *buf3 = NULL;
    assert_int_equal(posix_memalign(&buf2, DYNCONV_WORKSPACE_ALIGNMENT, ws2), 0);
    assert_int_equal(dynconv_conv2d_forward(external, c.x, y, NULL, buf2, ws2), DYNCONV_OK);
    assert_memory_equal(y, y2, c.ylen * sizeof(float));
    assert_int_equal(dynconv_conv2d_set_threadpool(external, three), DYNCONV_OK);
    assert_int_equal(dynconv_conv2d_forward(external, c.x, y, NULL, buf2, ws2),
                     DYNCONV_ERROR_INSUFFICIENT_WORKSPACE);
    size_t ws3 = 0;
    assert_int_equal(dynconv_conv2d_reshape(external, c.n, c.h, c.w, NULL, NULL, &ws3),
                     DYNCONV_OK);
    assert_true(ws3 > ws2);
    assert_int_equal(posix_memalign(&buf3, DYNCONV_WORKSPACE_ALIGNMENT, ws3), 0);
    assert_int_equal(dynconv_conv2d_forward(external, c.x, y, NULL, buf3, ws3), DYNCONV_OK);
    /* whole samples on 3 threads against a shared sample on 2: equal up to rounding */
    assert_int_equal(tu_count_mismatches_f("y", y, y2, c.ylen, 1e-5, 1e-6), 0);

    /* the handle's own workspace grows in set_threadpool */
    assert_int_equal(dynconv_conv2d_set_threadpool(capped, three), DYNCONV_OK);
    float *y3 = tu_alloc(c.ylen * sizeof(float));
    assert_int_equal(dynconv_conv2d_forward(capped, c.x, y3, NULL, NULL, 0), DYNCONV_OK);
    assert_memory_equal(y3, y, c.ylen * sizeof(float));

    dynconv_conv2d_destroy(external);
    dynconv_conv2d_destroy(capped);
    dynconv_conv2d_destroy(exact);
    dynconv_threadpool_destroy(big);
    dynconv_threadpool_destroy(three);
    dynconv_threadpool_destroy(two);
    free(buf3);
    free(buf2);
    free(y3);
    free(y);
    free(y2);
    free_conv(&c);
}

/* ---------------------------------------------------------------------------------------- */
/* Sharing a pool between threads                                                            */

enum { CALLERS = 4, ROUNDS = 25 };

typedef struct caller {
    int id;
    dynconv_threadpool *pool; /* NULL: the default pool */
    const conv_layer *conv;
    const linear_layer *lin;
    const float *want, *lwant;
    pthread_barrier_t *start;
    dynconv_status first_error;
    unsigned long mismatches, runs;
} caller;

static void note(caller *k, dynconv_status st)
{
    if (st != DYNCONV_OK && k->first_error == DYNCONV_OK) {
        k->first_error = st;
    }
}

/* Each caller has its own handles (conv2d, and linear for odd callers) on the shared pool, at
 * the pool's whole thread count, and runs forwards in a loop while the others do. */
static void *caller_main(void *arg)
{
    caller *k = arg;
    const conv_layer *c = k->conv;
    const linear_layer *l = k->lin;
    const dynconv_conv2d_weights w = {c->weight, c->bias, c->fc1, NULL, c->fc2, NULL};
    const dynconv_linear_weights lw = {l->weight, NULL, l->fc1, NULL, l->fc2, NULL};
    float *y = malloc(c->ylen * sizeof(float));
    float *ly = malloc((size_t)l->n * 80 * sizeof(float));
    dynconv_conv2d *layer = NULL;
    dynconv_linear *lin = NULL;
    note(k, y != NULL && ly != NULL ? DYNCONV_OK : DYNCONV_ERROR_OUT_OF_MEMORY);
    if (k->first_error == DYNCONV_OK) {
        note(k, dynconv_conv2d_create(&c->g, &w, 0.8f, DYNCONV_FLAG_BORROW_WEIGHTS, &layer));
        note(k, dynconv_linear_create(&l->g, &lw, 1.0f, DYNCONV_FLAG_BORROW_WEIGHTS, &lin));
    }
    if (k->first_error == DYNCONV_OK) {
        note(k, dynconv_conv2d_set_threadpool(layer, k->pool));
        note(k, dynconv_linear_set_threadpool(lin, k->pool));
        note(k, dynconv_conv2d_reshape(layer, c->n, c->h, c->w, NULL, NULL, NULL));
        note(k, dynconv_linear_reshape(lin, l->n, NULL));
    }
    pthread_barrier_wait(k->start);
    for (int r = 0; r < ROUNDS && k->first_error == DYNCONV_OK; ++r) {
        note(k, dynconv_conv2d_forward(layer, c->x, y, NULL, NULL, 0));
        if (k->id % 2 == 1) {
            note(k, dynconv_linear_forward(lin, l->x, ly, NULL, NULL, 0));
        }
        if (k->first_error == DYNCONV_OK) {
            k->mismatches += memcmp(y, k->want, c->ylen * sizeof(float)) != 0;
            if (k->id % 2 == 1) {
                k->mismatches += memcmp(ly, k->lwant, (size_t)l->n * 80 * sizeof(float)) != 0;
            }
            ++k->runs;
        }
    }
    dynconv_conv2d_destroy(layer);
    dynconv_linear_destroy(lin);
    free(y);
    free(ly);
    return NULL;
}

static void run_callers(dynconv_threadpool *pool, int pool_threads)
{
    /* batch 3: whole samples and a shared one, on 2 or 3 threads */
    conv_layer c;
    linear_layer l;
    make_conv(&c, 3, 11);
    make_linear(&l, 12);
    float *want = tu_alloc(c.ylen * sizeof(float));
    float *lwant = tu_alloc((size_t)l.n * 80 * sizeof(float));
    /* what each forward gives alone, on the same thread count */
    dynconv_threadpool *alone = NULL;
    assert_int_equal(dynconv_threadpool_create(pool_threads, 0, &alone), DYNCONV_OK);
    dynconv_conv2d *layer = conv_handle(&c, alone, 0);
    dynconv_linear *lin = linear_handle(&l, alone, 0);
    assert_int_equal(dynconv_conv2d_forward(layer, c.x, want, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_linear_forward(lin, l.x, lwant, NULL, NULL, 0), DYNCONV_OK);
    assert_true(tu_nontrivial_f(want, c.ylen));
    dynconv_conv2d_destroy(layer);
    dynconv_linear_destroy(lin);
    dynconv_threadpool_destroy(alone);

    pthread_t threads[CALLERS];
    caller callers[CALLERS];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, CALLERS), 0);
    for (int t = 0; t < CALLERS; ++t) {
        callers[t] = (caller){.id = t, .pool = pool, .conv = &c, .lin = &l, .want = want,
                              .lwant = lwant, .start = &start, .first_error = DYNCONV_OK};
        assert_int_equal(pthread_create(&threads[t], NULL, caller_main, &callers[t]), 0);
    }
    for (int t = 0; t < CALLERS; ++t) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    }
    pthread_barrier_destroy(&start);
    for (int t = 0; t < CALLERS; ++t) {
        if (callers[t].first_error != DYNCONV_OK) {
            print_error("caller %d: %s\n", t, dynconv_status_string(callers[t].first_error));
        }
        assert_int_equal(callers[t].first_error, DYNCONV_OK);
        assert_int_equal(callers[t].runs, ROUNDS);
        assert_int_equal(callers[t].mismatches, 0);
    }
    free(lwant);
    free(want);
    free_linear(&l);
    free_conv(&c);
}

static void callers_share_a_created_pool(void **state)
{
    (void)state;
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    run_callers(pool, 3);
    dynconv_threadpool_destroy(pool);
}

static void callers_share_the_default_pool(void **state)
{
    (void)state;
    run_callers(NULL, available_cpus());
}

/* ---------------------------------------------------------------------------------------- */
/* The BLAS                                                                                  */

/* Once a pool with workers exists the BLAS runs one thread per call; a forward never changes
 * the count afterwards, even when the program has raised it again itself. */
static void blas_set_once(void **state)
{
    (void)state;
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(2, 0, &pool), DYNCONV_OK);
    assert_int_equal(dynconv_blas_num_threads(), 1);
    conv_layer c;
    make_conv(&c, 3, 21);
    float *y1 = tu_alloc(c.ylen * sizeof(float));
    float *y = tu_alloc(c.ylen * sizeof(float));
    dynconv_conv2d *layer = conv_handle(&c, pool, 2);
    assert_int_equal(dynconv_conv2d_forward(layer, c.x, y1, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_blas_num_threads(), 1);

    openblas_set_num_threads(2);
    const int raised = dynconv_blas_num_threads(); /* 2, or less if OpenBLAS was built so */
    assert_int_equal(dynconv_conv2d_forward(layer, c.x, y, NULL, NULL, 0), DYNCONV_OK);
    assert_int_equal(dynconv_blas_num_threads(), raised);
    /* a new pool does not set it again */
    dynconv_threadpool *other = NULL;
    assert_int_equal(dynconv_threadpool_create(2, 0, &other), DYNCONV_OK);
    assert_int_equal(dynconv_blas_num_threads(), raised);
    dynconv_threadpool_destroy(other);
    openblas_set_num_threads(1);
    /* still right, though not bitwise: OpenBLAS blocks a GEMM differently on two threads */
    assert_int_equal(tu_count_mismatches_f("y", y, y1, c.ylen, 1e-5, 1e-6), 0);

    dynconv_conv2d_destroy(layer);
    dynconv_threadpool_destroy(pool);
    free(y);
    free(y1);
    free_conv(&c);
}

/* Backward on 1, 2 and 3 threads of a pool of 3: whole samples per thread, so every gradient
 * is bitwise the same; the workspace grows by one convolution scratch per thread. */
static void backward_thread_count_invariant(void **state)
{
    (void)state;
    conv_layer c;
    make_conv(&c, 5, 41);
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(3, 0, &pool), DYNCONV_OK);
    const size_t xlen = (size_t)(c.n * 16 * c.h * c.w);
    const size_t lens[7] = {xlen, 4 * 24 * 16 * 9, 4 * 24, 4 * 16, 0, 4 * 4, 0};
    float *dy = tu_alloc(c.ylen * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 42);
    tu_fill_uniform(&rng, dy, c.ylen, -1.f, 1.f);
    float *g[3][7];
    size_t previous = 0;
    for (int t = 0; t < 3; ++t) {
        for (int i = 0; i < 7; ++i) {
            g[t][i] = lens[i] > 0 ? tu_alloc(lens[i] * sizeof(float)) : NULL;
        }
        dynconv_conv2d *layer = conv_handle(&c, pool, t + 1);
        size_t bytes = 0;
        assert_int_equal(dynconv_conv2d_prepare_backward(layer, &bytes), DYNCONV_OK);
        assert_true(bytes > previous);
        previous = bytes;
        const dynconv_conv2d_gradients gr = {g[t][0], g[t][1], g[t][2], g[t][3],
                                             NULL,    g[t][5], NULL};
        assert_int_equal(dynconv_conv2d_backward(layer, c.x, dy, &gr, 0, NULL, 0), DYNCONV_OK);
        dynconv_conv2d_destroy(layer);
    }
    assert_true(tu_nontrivial_f(g[0][0], xlen));
    assert_true(tu_nontrivial_f(g[0][1], lens[1]));
    for (int t = 1; t < 3; ++t) {
        for (int i = 0; i < 7; ++i) {
            if (lens[i] > 0) {
                assert_memory_equal(g[t][i], g[0][i], lens[i] * sizeof(float));
            }
        }
    }
    for (int t = 0; t < 3; ++t) {
        for (int i = 0; i < 7; ++i) {
            free(g[t][i]);
        }
    }
    free(dy);
    dynconv_threadpool_destroy(pool);
    free_conv(&c);
}

/* What the forking test keeps across fork(), in static storage: the child ends with _exit and
 * cannot free what it inherited (the parent's handle would join workers the child does not
 * have), and memory checkers count blocks reachable from static storage as still reachable. */
static struct {
    conv_layer c;
    float *want, *y;
    dynconv_conv2d *parent, *child;
} forked;

/* The parent holds a handle (so the default pool and its workers exist) when it forks; the
 * child's new handle must not inherit that pool, whose workers the child does not have (its
 * forward would wait for them forever), but start its own. */
static void forked_child_starts_its_own_pool(void **state)
{
    (void)state;
#ifdef UNDER_TSAN
    print_message("  ThreadSanitizer does not support threads in a forked child\n");
    skip();
#endif
    conv_layer *c = &forked.c;
    make_conv(c, 4, 31);
    forked.want = tu_alloc(c->ylen * sizeof(float));
    forked.y = tu_alloc(c->ylen * sizeof(float));
    forked.parent = conv_handle(c, NULL, 2);
    assert_int_equal(dynconv_conv2d_forward(forked.parent, c->x, forked.want, NULL, NULL, 0),
                     DYNCONV_OK);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60); /* a hang becomes a failure */
        const dynconv_conv2d_weights w = {c->weight, c->bias, c->fc1, NULL, c->fc2, NULL};
        int rc = dynconv_conv2d_create(&c->g, &w, 0.8f, DYNCONV_FLAG_BORROW_WEIGHTS,
                                       &forked.child) ||
                 dynconv_conv2d_set_num_threads(forked.child, 2) ||
                 dynconv_conv2d_reshape(forked.child, c->n, c->h, c->w, NULL, NULL, NULL) ||
                 dynconv_conv2d_forward(forked.child, c->x, forked.y, NULL, NULL, 0) ||
                 memcmp(forked.y, forked.want, c->ylen * sizeof(float)) != 0;
        dynconv_conv2d_destroy(forked.child);
        _exit(rc);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* the parent's pool still works */
    assert_int_equal(dynconv_conv2d_forward(forked.parent, c->x, forked.y, NULL, NULL, 0),
                     DYNCONV_OK);
    assert_memory_equal(forked.y, forked.want, c->ylen * sizeof(float));
    dynconv_conv2d_destroy(forked.parent);
    free(forked.y);
    free(forked.want);
    free_conv(c);
}

int main(void)
{
    /* handles_own_no_threads counts the process's threads: it runs first, before any other
     * test could leave a thread behind. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handles_own_no_threads),
        cmocka_unit_test(pool_api),
        cmocka_unit_test(thread_count_capped_at_pool),
        cmocka_unit_test(callers_share_a_created_pool),
        cmocka_unit_test(callers_share_the_default_pool),
        cmocka_unit_test(blas_set_once),
        cmocka_unit_test(backward_thread_count_invariant),
        cmocka_unit_test(forked_child_starts_its_own_pool),
    };
    return cmocka_run_group_tests_name("threadpool", tests, NULL, NULL);
}
