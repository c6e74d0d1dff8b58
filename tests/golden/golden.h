/* Golden data for the dynamic layers, computed by PyTorch (see generate_golden.py). The table of
 * cases is golden_cases.c; every array of a case is a .npy file (float32, C order) under
 * data/<kind>/<case name>/<field>.npy, in the layouts of the public API, read by golden_load()
 * with the tools' .npy reader. Optional parameter arrays (and their gradients) are NULL when
 * the case has no such parameter. */
#ifndef DYNCONV_TESTS_GOLDEN_H
#define DYNCONV_TESTS_GOLDEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dynconv/dynconv.h>

typedef struct golden_conv2d_case {
    const char *name;                  /* short identifier, also the test and directory name */
    dynconv_conv2d_geometry geometry;  /* hidden is always given explicitly */
    float temperature;                 /* softmax temperature T */
    int64_t batch, height, width;      /* input shape [N, C_in, H, W] */
    int64_t out_h, out_w;              /* H_out, W_out as PyTorch produced them */
    bool has_bias, has_fc1_bias, has_fc2_bias; /* which optional parameters the case has */
    /* Filled by golden_load(): */
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
    bool has_bias, has_fc1_bias, has_fc2_bias;
    /* Filled by golden_load(): */
    const float *x;                    /* [N, D_in] */
    dynconv_linear_weights weights;
    const float *y;                    /* [N, D_out] */
    const float *pi;                   /* [N, K] */
    const float *dy;                   /* [N, D_out] random dL/dy */
    const float *dx;                   /* [N, D_in] dL/dx by autograd */
    dynconv_linear_weights dweights;   /* dL/d(each parameter), NULL where the case has none */
} golden_linear_case;

extern golden_conv2d_case golden_conv2d_cases[];
extern const size_t golden_conv2d_case_count;

extern golden_linear_case golden_linear_cases[];
extern const size_t golden_linear_case_count;

/* Reads every case's arrays from the data directory the build names (DYNCONV_GOLDEN_DIR) and
 * fills the tables. Each file must exist exactly when the case needs it and have exactly the
 * shape its geometry implies; any other .npy in a case's directory is an error too (data left
 * from an older generator). Returns false after printing what is wrong. Call once, first. */
bool golden_load(void);

#endif
