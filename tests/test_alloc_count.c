/* The allocation counter the no-allocation tests rely on (common/alloc_count.h) sees
 * allocations and tells their callers apart. A counter that missed the library's allocations
 * would let the forward and backward tests pass whatever the library did; one that blamed the
 * library for the BLAS's would fail them on CPUs whose OpenBLAS kernels allocate.
 *
 * Each case runs in a fresh process state as far as it matters: the BLAS case comes first, before
 * any thread of the process has exited, because glibc reuses the stacks (and thread-local
 * storage) of exited threads and a new thread then allocates nothing. */
#define _POSIX_C_SOURCE 200809L /* posix_memalign, strdup */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "alloc_count.h"

/* Through a volatile pointer, so the compiler cannot fold strdup into malloc + memcpy. */
static char *(*volatile copy_string)(const char *) = strdup;

/* OpenBLAS starts a thread per extra thread asked for (pthread_create, called from libopenblas);
 * each new thread's thread-local storage is allocated through the C library on its behalf. */
static void blas_allocations_are_the_blas(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    const int before = openblas_get_num_threads();
    tu_alloc_count_begin();
    openblas_set_num_threads(before + 3);
    const tu_alloc_counts counted = tu_alloc_count_end();
    const int grown = openblas_get_num_threads();
    openblas_set_num_threads(before);
    if (grown != before + 3) {
        print_message("  OpenBLAS kept %d threads instead of %d: nothing to attribute\n", grown,
                      before + 3);
        skip();
    }
    assert_true(counted.blas >= 1);
    assert_int_equal(counted.library, 0);
}

static void own_allocations_are_others(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    tu_alloc_count_begin();
    void *volatile p = malloc(100);
    void *q = NULL;
    const int rc = posix_memalign(&q, 64, 100);
    char *s = copy_string("through the C library");
    const tu_alloc_counts counted = tu_alloc_count_end();
    free(p);
    free(q);
    free(s);
    assert_int_equal(rc, 0);
    assert_int_equal(counted.other, 3);
    assert_int_equal(counted.library, 0);
    assert_int_equal(counted.blas, 0);
}

/* create copies the weights into memory the handle owns. */
static void library_allocations_are_the_library(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    const dynconv_conv2d_geometry g = {
        .in_channels = 2, .out_channels = 3, .kernel_h = 3, .kernel_w = 3, .stride_h = 1,
        .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 1,
        .num_kernels = 2, .hidden = 2};
    float weight[2 * 3 * 2 * 3 * 3] = {0}, fc1[2 * 2] = {0}, fc2[2 * 2] = {0};
    const dynconv_conv2d_weights w = {.weight = weight, .fc1_weight = fc1, .fc2_weight = fc2};
    dynconv_conv2d *layer = NULL;
    tu_alloc_count_begin();
    const dynconv_status st = dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer);
    const tu_alloc_counts counted = tu_alloc_count_end();
    dynconv_conv2d_destroy(layer);
    assert_int_equal(st, DYNCONV_OK);
    assert_true(counted.library >= 1);
    assert_int_equal(counted.blas, 0);
    assert_int_equal(counted.other, 0);
}

/* Nothing is counted outside begin/end. */
static void stopped_counter_counts_nothing(void **state)
{
    (void)state;
    if (!tu_alloc_count_available()) {
        skip();
    }
    tu_alloc_count_begin();
    const tu_alloc_counts none = tu_alloc_count_end();
    void *volatile p = malloc(10);
    free(p);
    tu_alloc_count_begin();
    const tu_alloc_counts after = tu_alloc_count_end();
    assert_int_equal(tu_alloc_counts_total(none), 0);
    assert_int_equal(tu_alloc_counts_total(after), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(blas_allocations_are_the_blas),
        cmocka_unit_test(own_allocations_are_others),
        cmocka_unit_test(library_allocations_are_the_library),
        cmocka_unit_test(stopped_counter_counts_nothing),
    };
    return cmocka_run_group_tests_name("alloc_count", tests, NULL, NULL);
}
