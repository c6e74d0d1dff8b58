/* Double-precision pieces for checking gradients: the dynamic conv2d forward with every input
 * and parameter in double (so that a finite difference can perturb any of them without float
 * rounding), and central finite differences of a scalar loss <dy, y> built on it. Like the rest
 * of the reference, direct loops over the definition, nothing shared with src/. */
#ifndef DYNCONV_TESTS_REFERENCE_GRAD_H
#define DYNCONV_TESTS_REFERENCE_GRAD_H

#include <stdint.h>

#include <dynconv/dynconv.h>

/* Parameters in double; optional ones NULL (zero). Layouts as dynconv_conv2d_weights. */
typedef struct ref_params_d {
    double *weight, *bias, *fc1_weight, *fc1_bias, *fc2_weight, *fc2_bias;
} ref_params_d;

/* x [n, C_in, h, w] -> y [n, C_out, H_out, W_out]. A linear layer is the 1x1 case with
 * h = w = 1 (its pooling is the identity). */
void ref_conv2d_forward_d(const dynconv_conv2d_geometry *g, const ref_params_d *p,
                          double temperature, int64_t n, int64_t h, int64_t w, const double *x,
                          double *y);

/* Central finite differences of L = <dy, forward(x, p)> with respect to each of the `count`
 * values at `target` (which must point into x or into one of p's arrays):
 *   grad[i] = (L(target[i] + e) - L(target[i] - e)) / (2e),  e = step * max(1, |target[i]|)
 * target is restored afterwards. */
void ref_conv2d_finite_diff(const dynconv_conv2d_geometry *g, const ref_params_d *p,
                            double temperature, int64_t n, int64_t h, int64_t w, double *x,
                            const double *dy, double *target, int64_t count, double step,
                            double *grad);

#endif
