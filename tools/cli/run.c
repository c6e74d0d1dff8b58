/* dynconv run: one dynamic convolution or dynamic linear layer saved from PyTorch, on a NumPy
 * array; with --grad-output also its backward. The options and the convolution are here, the
 * linear layer in run_linear.c, reading dL/dy and writing the outputs in outputs.c. */
#include "run.h"

#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

static void run_help(void) {
    printf(
        "usage: dynconv run --weights LAYER.safetensors [--prefix P] --input X.npy\n"
        "                   --output Y.npy [--attention PI.npy] [--temperature T]\n"
        "                   [--stride S] [--padding P] [--dilation D] [--groups G]\n"
        "                   [--threads N] [--grad-output GY.npy --grad-dir DIR]\n"
        "\n"
        "Runs one dynamic convolution or dynamic linear layer saved from PyTorch on a NumPy\n"
        "array.\n"
        "\n"
        "  --weights FILE     safetensors file with the layer's tensors (state_dict names):\n"
        "                     weight [K, C_out, C_in/g, kh, kw] (a convolution) or\n"
        "                     [K, D_out, D_in] (a linear layer), bias [K, C_out] (optional),\n"
        "                     attention.fc1.weight [hidden, C_in(, 1, 1)], attention.fc1.bias,\n"
        "                     attention.fc2.weight [K, hidden(, 1, 1)], attention.fc2.bias;\n"
        "                     or attention.net.0.* / attention.net.2.* for the attention\n"
        "  --prefix P         the layer's name in the file (e.g. layer1.0.conv1)\n"
        "  --input FILE       x, float32 .npy of shape [N, C_in, H, W] (linear: [N, D_in])\n"
        "  --output FILE      y, float32 .npy of shape [N, C_out, H_out, W_out] ([N, D_out])\n"
        "  --attention FILE   also write the attention pi, float32 .npy of shape [N, K]\n"
        "  --temperature T    softmax temperature\n"
        "  --stride, --padding, --dilation  \"a\" or \"a,b\"; --groups G (convolutions only)\n"
        "                     Each of these replaces the file's metadata (dynconv-export\n"
        "                     writes it). There are no defaults: a file without them (saved\n"
        "                     from a bare state_dict) needs all of them on the command line.\n"
        "  --threads N        threads of the layer (default 0: one per CPU available)\n"
        "  --grad-output FILE dL/dy, float32 .npy of the output's shape: also run the backward\n"
        "  --grad-dir DIR     (existing) directory for the gradients, with --grad-output:\n"
        "                     DIR/gx.npy (dL/dx) and DIR/g_<tensor name>.npy for every\n"
        "                     parameter tensor, named and shaped as in the weights file\n"
        "\n"
        "Exit status: 0 success, 1 failure (the message names the file), 2 bad usage.\n"
        "Output files are replaced only when the whole run succeeded.\n");
}

/* The convolution: x [N, C_in, H, W] -> y [N, C_out, H_out, W_out], pi [N, K]. Returns the
 * exit status. */
static int run_conv(const dcio_layer *layer, const run_files *f, long threads) {
    int rc = EXIT_FAILURE;
    run_buffers b;
    memset(&b, 0, sizeof b);
    dynconv_conv2d *handle = NULL;
    const dynconv_conv2d_geometry *g = &layer->geometry;
    const dynconv_conv2d_weights w = dcio_layer_weights(layer);
    dynconv_status status = dynconv_conv2d_create(g, &w, layer->temperature,
                                                  DYNCONV_FLAG_BORROW_WEIGHTS, &handle);
    if (status != DYNCONV_OK) {
        failure("%s: not a valid layer: %s (%s)", f->weights, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    status = dynconv_conv2d_set_num_threads(handle, (int)threads);
    if (status != DYNCONV_OK) {
        failure("--threads %ld: %s (%s)", threads, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    dcio_npy xn;
    if (!read_input(f, &b, &xn)) {
        goto done;
    }
    if (xn.rank != 4 || xn.shape[1] != g->in_channels) {
        char shape[160];
        format_shape(xn.shape, xn.rank, shape, sizeof shape);
        failure("%s: input of shape %s (%d dimensions); the layer of %s expects "
                "[N, C_in = %lld, H, W]", f->input, shape, xn.rank, f->weights,
                (long long)g->in_channels);
        goto done;
    }
    if (xn.numel == 0) {
        failure("%s: input is empty (shape has a zero)", f->input);
        goto done;
    }
    int64_t out_h, out_w;
    status = dynconv_conv2d_reshape(handle, xn.shape[0], xn.shape[2], xn.shape[3], &out_h,
                                    &out_w, NULL);
    if (status != DYNCONV_OK) {
        failure("%s: input shape [%lld, %lld, %lld, %lld] does not suit the layer of %s: %s (%s)",
                f->input, (long long)xn.shape[0], (long long)xn.shape[1],
                (long long)xn.shape[2], (long long)xn.shape[3], f->weights,
                dynconv_status_string(status), dynconv_last_error_message());
        goto done;
    }
    const int64_t y_shape[4] = {xn.shape[0], g->out_channels, out_h, out_w};
    const int64_t pi_shape[2] = {xn.shape[0], g->num_kernels};
    /* reshape has checked that these products fit. */
    const size_t y_count = (size_t)y_shape[0] * (size_t)y_shape[1] * (size_t)out_h *
                           (size_t)out_w;
    if (!alloc_arrays(f, &xn, y_count, (size_t)pi_shape[0] * (size_t)pi_shape[1], &b)) {
        goto done;
    }
    status = dynconv_conv2d_forward(handle, b.x, b.y, b.pi, NULL, 0);
    if (status != DYNCONV_OK) {
        failure("%s: forward failed: %s (%s)", f->input, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (f->grad_output != NULL) {
        if (!read_grad_output(f, layer, y_shape, 4, xn.numel, &b)) {
            goto done;
        }
        float *const *grads = b.grads;
        const dynconv_conv2d_gradients cg = {
            grads[0], grads[1 + DCIO_LAYER_WEIGHT], grads[1 + DCIO_LAYER_BIAS],
            grads[1 + DCIO_LAYER_FC1_WEIGHT], grads[1 + DCIO_LAYER_FC1_BIAS],
            grads[1 + DCIO_LAYER_FC2_WEIGHT], grads[1 + DCIO_LAYER_FC2_BIAS]};
        status = dynconv_conv2d_prepare_backward(handle, NULL);
        if (status == DYNCONV_OK) {
            status = dynconv_conv2d_backward(handle, b.x, b.gy, &cg, 0, NULL, 0);
        }
        if (status != DYNCONV_OK) {
            failure("%s: backward failed: %s (%s)", f->grad_output,
                    dynconv_status_string(status), dynconv_last_error_message());
            goto done;
        }
    }
    if (write_outputs(f, layer, xn.shape, y_shape, 4, pi_shape, &b)) {
        rc = 0;
    }
done:
    run_buffers_free(&b);
    dynconv_conv2d_destroy(handle);
    return rc;
}

int cmd_run(int argc, char **argv) {
    program_command = "dynconv run";
    option opts[] = {{"weights", true, NULL},     {"prefix", true, NULL},
                     {"input", true, NULL},       {"output", true, NULL},
                     {"attention", true, NULL},   {"temperature", true, NULL},
                     {"stride", true, NULL},      {"padding", true, NULL},
                     {"dilation", true, NULL},    {"groups", true, NULL},
                     {"grad-output", true, NULL}, {"grad-dir", true, NULL},
                     {"threads", true, NULL}};
    const size_t nopts = sizeof opts / sizeof *opts;
    int rc = parse_options(argc, argv, opts, nopts, run_help);
    if (rc != OPTIONS_PARSED) {
        return rc;
    }
    const char *weights_path = get(opts, nopts, "weights");
    const char *input_path = get(opts, nopts, "input");
    const char *output_path = get(opts, nopts, "output");
    const char *attention_path = get(opts, nopts, "attention");
    if (weights_path == NULL || input_path == NULL || output_path == NULL) {
        return usage_error("--%s is required",
                           weights_path == NULL ? "weights" : input_path == NULL ? "input"
                                                                                  : "output");
    }
    if (attention_path != NULL && strcmp(attention_path, output_path) == 0) {
        return usage_error("--output and --attention name the same file '%s'", output_path);
    }
    long threads = 0;
    const char *threads_text = get(opts, nopts, "threads");
    if (threads_text != NULL && !parse_long(threads_text, 0, DYNCONV_MAX_THREADS, &threads)) {
        return usage_error("--threads '%s' is not an integer in [0, %d]", threads_text,
                           DYNCONV_MAX_THREADS);
    }
    const char *grad_output_path = get(opts, nopts, "grad-output");
    const char *grad_dir = get(opts, nopts, "grad-dir");
    if ((grad_output_path == NULL) != (grad_dir == NULL)) {
        return usage_error("--grad-output and --grad-dir go together");
    }
    dcio_layer_options lo;
    memset(&lo, 0, sizeof lo);
    lo.prefix = get(opts, nopts, "prefix");
    const char *v;
    if ((v = get(opts, nopts, "temperature")) != NULL) {
        if (!dcio_parse_temperature(v, &lo.temperature)) {
            return usage_error("--temperature '%s' is not a finite number > 0", v);
        }
        lo.set_temperature = true;
    }
    if ((v = get(opts, nopts, "stride")) != NULL) {
        if (!dcio_parse_pair(v, 1, lo.stride)) {
            return usage_error("--stride '%s' is not \"a\" or \"a,b\" with integers >= 1", v);
        }
        lo.set_stride = true;
    }
    if ((v = get(opts, nopts, "padding")) != NULL) {
        if (!dcio_parse_pair(v, 0, lo.padding)) {
            return usage_error("--padding '%s' is not \"a\" or \"a,b\" with integers >= 0", v);
        }
        lo.set_padding = true;
    }
    if ((v = get(opts, nopts, "dilation")) != NULL) {
        if (!dcio_parse_pair(v, 1, lo.dilation)) {
            return usage_error("--dilation '%s' is not \"a\" or \"a,b\" with integers >= 1", v);
        }
        lo.set_dilation = true;
    }
    if ((v = get(opts, nopts, "groups")) != NULL) {
        int64_t g[2];
        if (!dcio_parse_pair(v, 1, g) || g[0] != g[1] || strchr(v, ',') != NULL) {
            return usage_error("--groups '%s' is not an integer >= 1", v);
        }
        lo.groups = g[0];
        lo.set_groups = true;
    }

    /* The layer's file, then the layer's own run; everything is released at `done`. */
    rc = EXIT_FAILURE;
    dcio_error err;
    loaded_file wf = {NULL, 0};
    dcio_safetensors *st = NULL;
    dcio_layer layer;
    memset(&layer, 0, sizeof layer);
    if (!dcio_read_file(weights_path, MAX_FILE_BYTES, &wf.bytes, &wf.size, &err)) {
        failure("%s", err.message);
        goto done;
    }
    if (!dcio_st_parse(wf.bytes, wf.size, &st, &err) ||
        !dcio_layer_load(st, &lo, &layer, &err)) {
        failure("%s: %s", weights_path, err.message);
        goto done;
    }
    const run_files files = {weights_path,   input_path,       output_path,
                             attention_path, grad_output_path, grad_dir};
    rc = layer.linear ? run_linear(&layer, &files, threads) : run_conv(&layer, &files, threads);
done:
    dcio_layer_free(&layer);
    dcio_st_free(st);
    free(wf.bytes);
    return rc;
}
