/* Golden data for the dynamic layers, computed by PyTorch (see generate_golden.py) and stored in
 * golden_cases.c. Every array is float32, contiguous, row-major, in the layouts of the public
 * API. Optional parameter arrays are NULL when the case has no such parameter.
 *
 * The table is written with designated initializers, so fields can be appended (for instance the
 * gradients of a backward pass: dy, dx, dweight, ...) without touching the existing entries;
 * a field a case does not provide is then NULL. */
#ifndef DYNCONV_TESTS_GOLDEN_H
#define DYNCONV_TESTS_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include <dynconv/dynconv.h>

typedef struct golden_conv2d_case {
    const char *name;                  /* short identifier, also the test name */
    dynconv_conv2d_geometry geometry;  /* hidden is always given explicitly */
    float temperature;                 /* softmax temperature T */
    int64_t batch, height, width;      /* input shape [N, C_in, H, W] */
    int64_t out_h, out_w;              /* H_out, W_out as PyTorch produced them */
    const float *x;                    /* [N, C_in, H, W] */
    dynconv_conv2d_weights weights;    /* weight, bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias */
    const float *y;                    /* [N, C_out, H_out, W_out] */
    const float *pi;                   /* [N, K] attention after the softmax */
    const float *dy;                   /* [N, C_out, H_out, W_out] random dL/dy */
    const float *dx;                   /* [N, C_in, H, W] dL/dx by autograd */
    dynconv_conv2d_weights dweights;   /* dL/d(each parameter), NULL where the case has none */
} golden_conv2d_case;

typedef struct golden_linear_case {
    const char *name;
    dynconv_linear_geometry geometry;
    float temperature;
    int64_t batch;                     /* N */
    const float *x;                    /* [N, D_in] */
    dynconv_linear_weights weights;
    const float *y;                    /* [N, D_out] */
    const float *pi;                   /* [N, K] */
    const float *dy;                   /* [N, D_out] random dL/dy */
    const float *dx;                   /* [N, D_in] dL/dx by autograd */
    dynconv_linear_weights dweights;   /* dL/d(each parameter), NULL where the case has none */
} golden_linear_case;

extern const golden_conv2d_case golden_conv2d_cases[];
extern const size_t golden_conv2d_case_count;

extern const golden_linear_case golden_linear_cases[];
extern const size_t golden_linear_case_count;

#endif
