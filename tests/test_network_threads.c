/* Networks in concurrent threads: distinct networks created, shaped and run at the same time on
 * the default pool and on one shared pool of their own give the results they give alone (the
 * ThreadSanitizer stage runs this test: label "threads"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <dynconv/dynconv.h>

#include "testutil.h"

#define WORKERS 4
#define ROUNDS 5

static const char *const NAMES[WORKERS] = {"dy_resnet", "dy_mobilenetv2", "mixed",
                                           "mobilenet_v2_025"};

typedef struct job {
    const char *name;
    dynconv_threadpool *pool; /* NULL: the default pool */
    const float *input;
    const float *expected;
    size_t outputs;
    size_t mismatches;
    dynconv_status status;
} job;

static dynconv_status run_once(const char *name, dynconv_threadpool *pool, const float *x,
                               float *y, size_t *count) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", DYNCONV_NETWORKS_DIR, name);
    dynconv_network *net = NULL;
    dynconv_status st = dynconv_network_create_from_file(path, 0, &net);
    if (st == DYNCONV_OK && pool != NULL) {
        st = dynconv_network_set_threadpool(net, pool);
    }
    if (st == DYNCONV_OK) {
        st = dynconv_network_reshape(net, 2, 32, 32, NULL);
    }
    int64_t shape[4];
    int rank;
    if (st == DYNCONV_OK) {
        st = dynconv_network_get_output_shape(net, 0, shape, &rank);
    }
    if (st == DYNCONV_OK) {
        *count = (size_t)(shape[0] * shape[1]);
        float *const outs[1] = {y};
        for (int r = 0; r < ROUNDS && st == DYNCONV_OK; ++r) {
            st = dynconv_network_forward(net, x, outs);
        }
    }
    dynconv_network_destroy(net);
    return st;
}

static void *worker(void *p) {
    job *j = p;
    float y[64];
    size_t count = 0;
    j->status = run_once(j->name, j->pool, j->input, y, &count);
    if (j->status == DYNCONV_OK) {
        j->mismatches = count == j->outputs
                            ? tu_count_mismatches_f(j->name, y, j->expected, count, 0.0, 0.0)
                            : count + 1;
    }
    return NULL;
}

static void concurrent(dynconv_threadpool *pool) {
    const size_t xn = 2 * 3 * 32 * 32;
    float *x = tu_alloc(xn * sizeof(float));
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    tu_fill_uniform(&rng, x, xn, -1.0f, 1.0f);
    float expected[WORKERS][64];
    size_t counts[WORKERS];
    for (int i = 0; i < WORKERS; ++i) {
        assert_int_equal(run_once(NAMES[i], pool, x, expected[i], &counts[i]), DYNCONV_OK);
    }
    job jobs[WORKERS];
    pthread_t threads[WORKERS];
    for (int i = 0; i < WORKERS; ++i) {
        jobs[i] = (job){NAMES[i], pool, x, expected[i], counts[i], 0, DYNCONV_OK};
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &jobs[i]), 0);
    }
    for (int i = 0; i < WORKERS; ++i) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    }
    for (int i = 0; i < WORKERS; ++i) {
        assert_int_equal(jobs[i].status, DYNCONV_OK);
        assert_int_equal(jobs[i].mismatches, 0);
    }
    free(x);
}

static void concurrent_on_default_pool(void **state) {
    (void)state;
    concurrent(NULL);
}

static void concurrent_on_shared_pool(void **state) {
    (void)state;
    dynconv_threadpool *pool = NULL;
    assert_int_equal(dynconv_threadpool_create(2, 0, &pool), DYNCONV_OK);
    concurrent(pool);
    dynconv_threadpool_destroy(pool);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_on_default_pool),
        cmocka_unit_test(concurrent_on_shared_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
