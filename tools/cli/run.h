/* dynconv run: what its convolution (run.c) and linear (run_linear.c) paths share
 * (outputs.c). */
#ifndef DYNCONV_TOOLS_CLI_RUN_H
#define DYNCONV_TOOLS_CLI_RUN_H

#include "cli.h"
#include "dcio.h"

/* The files of one `dynconv run`. */
typedef struct run_files {
    const char *weights, *input, *output, *attention, *grad_output, *grad_dir;
} run_files;

typedef struct loaded_file {
    unsigned char *bytes;
    size_t size;
} loaded_file;

/* What one run of a layer acquires; zero it first, release it with run_buffers_free. */
typedef struct run_buffers {
    loaded_file xf, gyf; /* the input and dL/dy files */
    float *x, *y, *pi, *gy;
    float *grads[1 + DCIO_LAYER_TENSORS]; /* dL/dx, then one per parameter tensor */
    dcio_pending outs[3 + DCIO_LAYER_TENSORS]; /* y, pi, dL/dx and the parameters' */
    size_t nouts;
} run_buffers;

void run_buffers_free(run_buffers *b);

/* Reads the input array (f->input) into b->xf, described by *xn. Prints the reason and returns
 * false on error. */
bool read_input(const run_files *f, run_buffers *b, dcio_npy *xn);

/* Allocates x (converted from *xn), y (y_count floats) and pi (pi_count floats). Prints the
 * reason and returns false on error. */
bool alloc_arrays(const run_files *f, const dcio_npy *xn, size_t y_count, size_t pi_count,
                  run_buffers *b);

/* Reads dL/dy (f->grad_output), checks that its shape is y_shape (of `rank` dimensions), and
 * converts it into b->gy; allocates b->grads[0] for dL/dx (x_count floats) and b->grads[1 + s]
 * for every parameter tensor s the layer has. Prints the reason and returns false on error. */
bool read_grad_output(const run_files *f, const dcio_layer *layer, const int64_t *y_shape,
                      int rank, size_t x_count, run_buffers *b);

/* Everything is computed: writes y, the attention (with f->attention) and the gradients (with
 * f->grad_output) under temporary names, then renames them all into place. x and y have
 * `rank` dimensions. Prints the reason and returns false on error. */
bool write_outputs(const run_files *f, const dcio_layer *layer, const int64_t *x_shape,
                   const int64_t *y_shape, int rank, const int64_t *pi_shape, run_buffers *b);

/* `dynconv run` on a dynamic linear layer: x [N, D_in] -> y [N, D_out] (and the backward).
 * Returns the exit status; messages as for the convolution. */
int run_linear(const dcio_layer *layer, const run_files *f, long threads);

#endif
