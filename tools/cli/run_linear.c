/* dynconv run on a dynamic linear layer: x [N, D_in] -> y [N, D_out], pi [N, K], and with
 * --grad-output the backward. */
#include "run.h"

#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

int run_linear(const dcio_layer *layer, const run_files *f, long threads) {
    int rc = EXIT_FAILURE;
    run_buffers b;
    memset(&b, 0, sizeof b);
    dynconv_linear *handle = NULL;
    const dynconv_linear_geometry *g = &layer->linear_geometry;
    const dynconv_linear_weights w = dcio_layer_linear_weights(layer);
    dynconv_status status = dynconv_linear_create(g, &w, layer->temperature,
                                                  DYNCONV_FLAG_BORROW_WEIGHTS, &handle);
    if (status != DYNCONV_OK) {
        failure("%s: not a valid layer: %s (%s)", f->weights, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    status = dynconv_linear_set_num_threads(handle, (int)threads);
    if (status != DYNCONV_OK) {
        failure("--threads %ld: %s (%s)", threads, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    dcio_npy xn;
    if (!read_input(f, &b, &xn)) {
        goto done;
    }
    if (xn.rank != 2 || xn.shape[1] != g->in_features) {
        char shape[160];
        format_shape(xn.shape, xn.rank, shape, sizeof shape);
        failure("%s: input of shape %s (%d dimensions); the linear layer of %s expects "
                "[N, D_in = %lld]", f->input, shape, xn.rank, f->weights,
                (long long)g->in_features);
        goto done;
    }
    if (xn.numel == 0) {
        failure("%s: input is empty (shape has a zero)", f->input);
        goto done;
    }
    status = dynconv_linear_reshape(handle, xn.shape[0], NULL);
    if (status != DYNCONV_OK) {
        failure("%s: batch of %lld does not suit the layer of %s: %s (%s)", f->input,
                (long long)xn.shape[0], f->weights, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    const int64_t y_shape[2] = {xn.shape[0], g->out_features};
    const int64_t pi_shape[2] = {xn.shape[0], g->num_kernels};
    /* reshape has checked that these products fit. */
    if (!alloc_arrays(f, &xn, (size_t)y_shape[0] * (size_t)y_shape[1],
                      (size_t)pi_shape[0] * (size_t)pi_shape[1], &b)) {
        goto done;
    }
    status = dynconv_linear_forward(handle, b.x, b.y, b.pi, NULL, 0);
    if (status != DYNCONV_OK) {
        failure("%s: forward failed: %s (%s)", f->input, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (f->grad_output != NULL) {
        if (!read_grad_output(f, layer, y_shape, 2, xn.numel, &b)) {
            goto done;
        }
        float *const *grads = b.grads;
        const dynconv_linear_gradients lg = {
            grads[0], grads[1 + DCIO_LAYER_WEIGHT], grads[1 + DCIO_LAYER_BIAS],
            grads[1 + DCIO_LAYER_FC1_WEIGHT], grads[1 + DCIO_LAYER_FC1_BIAS],
            grads[1 + DCIO_LAYER_FC2_WEIGHT], grads[1 + DCIO_LAYER_FC2_BIAS]};
        status = dynconv_linear_prepare_backward(handle, NULL);
        if (status == DYNCONV_OK) {
            status = dynconv_linear_backward(handle, b.x, b.gy, &lg, 0, NULL, 0);
        }
        if (status != DYNCONV_OK) {
            failure("%s: backward failed: %s (%s)", f->grad_output,
                    dynconv_status_string(status), dynconv_last_error_message());
            goto done;
        }
    }
    if (write_outputs(f, layer, xn.shape, y_shape, 2, pi_shape, &b)) {
        rc = 0;
    }
done:
    run_buffers_free(&b);
    dynconv_linear_destroy(handle);
    return rc;
}
