/* Counting the allocations a whole process makes, from every thread (the library's workers and
 * the BLAS's included), to prove that steady-state calls allocate nothing. Linking this object
 * replaces malloc and friends in the test program (glibc allows it); they forward to glibc's own
 * entry points. AddressSanitizer and valgrind replace the allocator themselves, so under them
 * counting is not available and the tests that need it skip. */
#ifndef DYNCONV_TESTS_ALLOC_COUNT_H
#define DYNCONV_TESTS_ALLOC_COUNT_H

#include <stdbool.h>
#include <stddef.h>

/* False in sanitizer builds and under valgrind, where the counter cannot see allocations. */
bool tu_alloc_count_available(void);

/* Zeroes the count and starts counting. */
void tu_alloc_count_begin(void);

/* Stops counting and returns the number of allocations since tu_alloc_count_begin(). */
size_t tu_alloc_count_end(void);

#endif
