/* Comparison of gradients, shared by the backward tests. A gradient's entries range over orders
 * of magnitude (sums over many positions next to cancelling ones; attention gradients scaled
 * down by 1/T), so the absolute tolerance follows the gradient's own scale. */
#ifndef DYNCONV_TESTS_GRADCHECK_H
#define DYNCONV_TESTS_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>

/* Mismatches of got against want with rtol TU_RTOL and atol TU_ATOL * max|want|: for a gradient
 * of scale 1 the usual 1e-4 / 1e-5, tighter for tiny gradients, looser in absolute terms for
 * large ones. Prints the first few, prefixed by `what`. */
size_t gc_compare(const char *what, const float *got, const double *want, size_t n);
size_t gc_compare_f(const char *what, const float *got, const float *want, size_t n);

/* False when want is mostly zero or constant; a single value only has to be non-zero. */
bool gc_nontrivial(const float *want, size_t n);
bool gc_nontrivial_d(const double *want, size_t n);

#endif
