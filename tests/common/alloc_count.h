/* Counting the allocations a process makes, from every thread, and attributing each one to the
 * code that asked for it, to prove that steady-state calls of libdynconv allocate nothing of
 * their own.
 *
 * Linking this object replaces malloc and friends in the test program (glibc allows it); they
 * forward to glibc's own entry points. Each counted call is attributed by its return address:
 * to libdynconv when that address lies in the executable segments of the loaded libdynconv.so,
 * to the BLAS when it lies in OpenBLAS's, and to neither otherwise. When the caller is the C
 * library or the dynamic loader (strdup, pthread_create, ...) the stack is walked outwards to the
 * first frame outside them, so an allocation that libdynconv makes through libc is still its own.
 *
 * Why attribute at all: OpenBLAS's kernels for some CPUs (its SkylakeX and Cooperlake cores,
 * small-matrix path) call malloc on every GEMM. That is the BLAS's business and outside the
 * library's contract; the tests must fail when libdynconv allocates and never because the BLAS
 * does.
 *
 * AddressSanitizer, ThreadSanitizer and valgrind replace the allocator themselves, so under them counting is not
 * available and the tests that need it skip. The test program must link libdynconv as a shared
 * library (that is how the attribution finds its code). */
#ifndef DYNCONV_TESTS_ALLOC_COUNT_H
#define DYNCONV_TESTS_ALLOC_COUNT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tu_alloc_counts {
    size_t library; /* libdynconv's own code, directly or through libc */
    size_t blas;    /* OpenBLAS (libopenblas, or the libblas/liblapack it provides) */
    size_t other;   /* anything else: the test program, other libraries, unattributable */
} tu_alloc_counts;

/* False in sanitizer builds and under valgrind, where the counter cannot see allocations. */
bool tu_alloc_count_available(void);

/* Zeroes the counts and starts counting. Aborts with a message when libdynconv.so is not
 * loaded in the process (a test linked statically could not attribute anything). */
void tu_alloc_count_begin(void);

/* Stops counting and returns the counts since tu_alloc_count_begin(). */
tu_alloc_counts tu_alloc_count_end(void);

/* The total of the three counts. */
size_t tu_alloc_counts_total(tu_alloc_counts c);

#endif
