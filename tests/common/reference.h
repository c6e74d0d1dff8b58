/* Plain double-precision reference of the dynamic layers, written as the definition reads:
 * direct loops, no BLAS, no im2col, nothing shared with the library. The tests trust it because
 * it is simple; it is itself checked against PyTorch's golden data. */
#ifndef DYNCONV_TESTS_REFERENCE_H
#define DYNCONV_TESTS_REFERENCE_H

#include <stdint.h>

#include <dynconv/dynconv.h>

/* Output spatial size by the floor formula (may be <= 0 for impossible shapes). */
int64_t ref_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation);

/* x [n, C_in, h, w] -> y [n, C_out, H_out, W_out] and pi [n, K] (pi may be NULL). */
void ref_conv2d_forward(const dynconv_conv2d_geometry *g, const dynconv_conv2d_weights *wt,
                        double temperature, int64_t n, int64_t h, int64_t w, const float *x,
                        double *y, double *pi);

/* x [n, D_in] -> y [n, D_out] and pi [n, K] (pi may be NULL). */
void ref_linear_forward(const dynconv_linear_geometry *g, const dynconv_linear_weights *wt,
                        double temperature, int64_t n, const float *x, double *y, double *pi);

/* Static convolution with one kernel set: weight [C_out, C_in/g, kh, kw], bias [C_out] or NULL. */
void ref_static_conv2d(const dynconv_conv2d_geometry *g, const float *weight, const float *bias,
                       int64_t n, int64_t h, int64_t w, const float *x, double *y);

#endif
