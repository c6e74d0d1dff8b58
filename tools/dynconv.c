/* dynconv: the command-line tool. Runs a dynamic convolution or linear layer saved from PyTorch
 * (safetensors) on a NumPy array, times the benchmark workload, and reports the platform.
 *
 * Exit codes: 0 success, 1 failure (bad file, invalid layer, I/O), 2 bad usage. Every message
 * goes to stderr and names the file it is about. Outputs are written under temporary names and
 * renamed into place only once everything has succeeded. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <dynconv/dynconv.h>

#include "dcio.h"

enum { EXIT_USAGE = 2 };

/* Inputs larger than this are refused before reading (a weight file or an array). */
#define MAX_FILE_BYTES ((size_t)1 << 36)

extern const char dc_builtin_layers[];

/* ---------------------------------------------------------------------------------------- */
/* Option parsing: --name VALUE or --name=VALUE; each option at most once                   */
/* ---------------------------------------------------------------------------------------- */

typedef struct option {
    const char *name;
    bool takes_value;
    const char *value; /* set when given (flags get "") */
} option;

static const char *program_command = "dynconv";

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int usage_error(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program_command);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\nTry '%s --help'.\n", program_command);
    return EXIT_USAGE;
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int failure(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program_command);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

/* Returns 0, or EXIT_USAGE after printing why; *help is set by --help / -h. */
static int parse_options(int argc, char **argv, option *opts, size_t count, bool *help) {
    *help = false;
    for (int i = 0; i < argc; ++i) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            *help = true;
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0) {
            return usage_error("unexpected argument '%s'", arg);
        }
        const char *eq = strchr(arg, '=');
        const size_t len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg) - 2;
        option *o = NULL;
        for (size_t k = 0; k < count; ++k) {
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, arg + 2, len) == 0) {
                o = &opts[k];
            }
        }
        if (o == NULL) {
            return usage_error("unknown option '%.*s'", (int)(len + 2), arg);
        }
        if (o->value != NULL) {
            return usage_error("option --%s given twice", o->name);
        }
        if (!o->takes_value) {
            if (eq != NULL) {
                return usage_error("option --%s takes no value", o->name);
            }
            o->value = "";
        } else if (eq != NULL) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            return usage_error("option --%s needs a value", o->name);
        }
        if (o->takes_value && o->value[0] == '\0') {
            return usage_error("option --%s has an empty value", o->name);
        }
    }
    return 0;
}

static const char *get(const option *opts, size_t count, const char *name) {
    for (size_t k = 0; k < count; ++k) {
        if (strcmp(opts[k].name, name) == 0) {
            return opts[k].value;
        }
    }
    return NULL;
}

/* A decimal integer in [lo, hi]. */
static bool parse_long(const char *text, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    const long v = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static void format_shape(const int64_t *shape, int rank, char *buf, size_t size) {
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && at < size; ++i) {
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", i > 0 ? ", " : "",
                               (long long)shape[i]);
    }
    if (at < size) {
        snprintf(buf + at, size - at, "]");
    }
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------------------------------- */
/* dynconv run                                                                              */
/* ---------------------------------------------------------------------------------------- */

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

typedef struct loaded_file {
    unsigned char *bytes;
    size_t size;
} loaded_file;

/* Reads dL/dy, checks its shape against y's, and runs the backward: grads[0] receives dL/dx,
 * grads[1 + slot] the gradient of each parameter tensor the layer has. */
static bool run_backward(dynconv_conv2d *handle, const dcio_layer *layer, const char *weights_path,
                         const float *x, const int64_t *x_shape, const int64_t *y_shape,
                         const char *gy_path, loaded_file *gyf, float **gy, float **grads) {
    dcio_error err;
    dcio_npy gn;
    if (!dcio_read_file(gy_path, MAX_FILE_BYTES, &gyf->bytes, &gyf->size, &err)) {
        failure("%s", err.message);
        return false;
    }
    if (!dcio_npy_parse(gyf->bytes, gyf->size, &gn, &err)) {
        failure("%s: %s", gy_path, err.message);
        return false;
    }
    if (gn.rank != 4 || memcmp(gn.shape, y_shape, 4 * sizeof *y_shape) != 0) {
        char got[160], want[160];
        format_shape(gn.shape, gn.rank, got, sizeof got);
        format_shape(y_shape, 4, want, sizeof want);
        failure("%s: gradient of shape %s; the output of the layer of %s on this input is %s",
                gy_path, got, weights_path, want);
        return false;
    }
    *gy = malloc(gn.numel * sizeof **gy);
    const size_t x_count = (size_t)x_shape[0] * (size_t)x_shape[1] * (size_t)x_shape[2] *
                           (size_t)x_shape[3];
    grads[0] = malloc(x_count * sizeof **grads);
    bool ok = *gy != NULL && grads[0] != NULL;
    for (int s = 0; ok && s < DCIO_LAYER_TENSORS; ++s) {
        if (layer->tensor[s] != NULL) {
            grads[1 + s] = malloc(layer->numel[s] * sizeof **grads);
            ok = grads[1 + s] != NULL;
        }
    }
    if (!ok) {
        failure("%s: out of memory for the gradients", gy_path);
        return false;
    }
    dcio_npy_to_f32(&gn, *gy);
    const dynconv_conv2d_gradients g = {
        grads[0], grads[1 + DCIO_LAYER_WEIGHT], grads[1 + DCIO_LAYER_BIAS],
        grads[1 + DCIO_LAYER_FC1_WEIGHT], grads[1 + DCIO_LAYER_FC1_BIAS],
        grads[1 + DCIO_LAYER_FC2_WEIGHT], grads[1 + DCIO_LAYER_FC2_BIAS]};
    dynconv_status status = dynconv_conv2d_prepare_backward(handle, NULL);
    if (status == DYNCONV_OK) {
        status = dynconv_conv2d_backward(handle, x, *gy, &g, 0, NULL, 0);
    }
    if (status != DYNCONV_OK) {
        failure("%s: backward failed: %s (%s)", gy_path, dynconv_status_string(status),
                dynconv_last_error_message());
        return false;
    }
    return true;
}

/* DIR/gx.npy and DIR/g_<name>.npy, pending. */
static bool write_gradients(const char *dir, const dcio_layer *layer, const int64_t *x_shape,
                            int x_rank, float *const *grads, dcio_pending *outs, size_t *nouts,
                            dcio_error *err) {
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err->message, sizeof err->message, "%s: not an existing directory (--grad-dir)",
                 dir);
        return false;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/gx.npy", dir);
    if (!dcio_npy_write_pending(path, x_shape, x_rank, grads[0], &outs[(*nouts)++], err)) {
        return false;
    }
    for (int s = 0; s < DCIO_LAYER_TENSORS; ++s) {
        if (layer->tensor[s] == NULL) {
            continue;
        }
        /* A '/' in a tensor name would write outside DIR. */
        if (strchr(layer->name[s], '/') != NULL ||
            (size_t)snprintf(path, sizeof path, "%s/g_%s.npy", dir, layer->name[s]) >=
                sizeof path) {
            snprintf(err->message, sizeof err->message,
                     "%s: tensor name '%.200s' cannot be a file name", dir, layer->name[s]);
            return false;
        }
        if (!dcio_npy_write_pending(path, layer->shape[s], layer->rank[s], grads[1 + s],
                                    &outs[(*nouts)++], err)) {
            return false;
        }
    }
    return true;
}

/* The files of one `dynconv run`. */
typedef struct run_files {
    const char *weights, *input, *output, *attention, *grad_output, *grad_dir;
} run_files;

/* `dynconv run` on a dynamic linear layer: x [N, D_in] -> y [N, D_out] (and the backward).
 * Returns the exit status; messages as for the convolution. */
static int run_linear(const dcio_layer *layer, const run_files *f, long threads) {
    int rc = EXIT_FAILURE;
    dcio_error err;
    loaded_file xf = {NULL, 0}, gyf = {NULL, 0};
    dynconv_linear *handle = NULL;
    float *x = NULL, *y = NULL, *pi = NULL, *gy = NULL, *grads[1 + DCIO_LAYER_TENSORS] = {NULL};
    dcio_pending outs[3 + DCIO_LAYER_TENSORS];
    size_t nouts = 0;
    memset(outs, 0, sizeof outs);
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
    if (!dcio_read_file(f->input, MAX_FILE_BYTES, &xf.bytes, &xf.size, &err)) {
        failure("%s", err.message);
        goto done;
    }
    dcio_npy xn;
    if (!dcio_npy_parse(xf.bytes, xf.size, &xn, &err)) {
        failure("%s: %s", f->input, err.message);
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
    x = malloc(xn.numel * sizeof *x);
    y = malloc((size_t)y_shape[0] * (size_t)y_shape[1] * sizeof *y);
    pi = malloc((size_t)pi_shape[0] * (size_t)pi_shape[1] * sizeof *pi);
    if (x == NULL || y == NULL || pi == NULL) {
        failure("%s: out of memory for the input and output arrays", f->input);
        goto done;
    }
    dcio_npy_to_f32(&xn, x);
    status = dynconv_linear_forward(handle, x, y, pi, NULL, 0);
    if (status != DYNCONV_OK) {
        failure("%s: forward failed: %s (%s)", f->input, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (f->grad_output != NULL) {
        dcio_npy gn;
        if (!dcio_read_file(f->grad_output, MAX_FILE_BYTES, &gyf.bytes, &gyf.size, &err)) {
            failure("%s", err.message);
            goto done;
        }
        if (!dcio_npy_parse(gyf.bytes, gyf.size, &gn, &err)) {
            failure("%s: %s", f->grad_output, err.message);
            goto done;
        }
        if (gn.rank != 2 || memcmp(gn.shape, y_shape, sizeof y_shape) != 0) {
            char got[160], want[160];
            format_shape(gn.shape, gn.rank, got, sizeof got);
            format_shape(y_shape, 2, want, sizeof want);
            failure("%s: gradient of shape %s; the output of the layer of %s on this input is "
                    "%s", f->grad_output, got, f->weights, want);
            goto done;
        }
        gy = malloc(gn.numel * sizeof *gy);
        grads[0] = malloc(xn.numel * sizeof **grads);
        bool ok = gy != NULL && grads[0] != NULL;
        for (int s = 0; ok && s < DCIO_LAYER_TENSORS; ++s) {
            if (layer->tensor[s] != NULL) {
                grads[1 + s] = malloc(layer->numel[s] * sizeof **grads);
                ok = grads[1 + s] != NULL;
            }
        }
        if (!ok) {
            failure("%s: out of memory for the gradients", f->grad_output);
            goto done;
        }
        dcio_npy_to_f32(&gn, gy);
        const dynconv_linear_gradients lg = {
            grads[0], grads[1 + DCIO_LAYER_WEIGHT], grads[1 + DCIO_LAYER_BIAS],
            grads[1 + DCIO_LAYER_FC1_WEIGHT], grads[1 + DCIO_LAYER_FC1_BIAS],
            grads[1 + DCIO_LAYER_FC2_WEIGHT], grads[1 + DCIO_LAYER_FC2_BIAS]};
        status = dynconv_linear_prepare_backward(handle, NULL);
        if (status == DYNCONV_OK) {
            status = dynconv_linear_backward(handle, x, gy, &lg, 0, NULL, 0);
        }
        if (status != DYNCONV_OK) {
            failure("%s: backward failed: %s (%s)", f->grad_output,
                    dynconv_status_string(status), dynconv_last_error_message());
            goto done;
        }
    }
    bool ok = dcio_npy_write_pending(f->output, y_shape, 2, y, &outs[nouts++], &err) &&
              (f->attention == NULL ||
               dcio_npy_write_pending(f->attention, pi_shape, 2, pi, &outs[nouts++], &err));
    if (ok && f->grad_output != NULL) {
        ok = write_gradients(f->grad_dir, layer, xn.shape, 2, grads, outs, &nouts, &err);
    }
    for (size_t i = 0; ok && i < nouts; ++i) {
        ok = dcio_pending_commit(&outs[i], &err);
    }
    if (!ok) {
        failure("%s", err.message);
        goto done;
    }
    rc = 0;
done:
    for (size_t i = 0; i < sizeof outs / sizeof *outs; ++i) {
        dcio_pending_discard(&outs[i]);
    }
    for (size_t i = 0; i < sizeof grads / sizeof *grads; ++i) {
        free(grads[i]);
    }
    free(gy);
    free(gyf.bytes);
    free(x);
    free(y);
    free(pi);
    dynconv_linear_destroy(handle);
    free(xf.bytes);
    return rc;
}

static int cmd_run(int argc, char **argv) {
    program_command = "dynconv run";
    option opts[] = {{"weights", true, NULL},     {"prefix", true, NULL},
                     {"input", true, NULL},       {"output", true, NULL},
                     {"attention", true, NULL},   {"temperature", true, NULL},
                     {"stride", true, NULL},      {"padding", true, NULL},
                     {"dilation", true, NULL},    {"groups", true, NULL},
                     {"grad-output", true, NULL}, {"grad-dir", true, NULL},
                     {"threads", true, NULL}};
    const size_t nopts = sizeof opts / sizeof *opts;
    bool help;
    int rc = parse_options(argc, argv, opts, nopts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        run_help();
        return 0;
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

    /* Everything acquired below is released at `done`. */
    rc = EXIT_FAILURE;
    dcio_error err;
    loaded_file wf = {NULL, 0}, xf = {NULL, 0};
    dcio_safetensors *st = NULL;
    dcio_layer layer;
    memset(&layer, 0, sizeof layer);
    dynconv_conv2d *handle = NULL;
    float *x = NULL, *y = NULL, *pi = NULL, *gy = NULL, *grads[1 + DCIO_LAYER_TENSORS] = {NULL};
    loaded_file gyf = {NULL, 0};
    /* y, pi, dL/dx and one gradient per parameter tensor */
    dcio_pending outs[3 + DCIO_LAYER_TENSORS];
    size_t nouts = 0;
    memset(outs, 0, sizeof outs);

    if (!dcio_read_file(weights_path, MAX_FILE_BYTES, &wf.bytes, &wf.size, &err)) {
        failure("%s", err.message);
        goto done;
    }
    if (!dcio_st_parse(wf.bytes, wf.size, &st, &err) ||
        !dcio_layer_load(st, &lo, &layer, &err)) {
        failure("%s: %s", weights_path, err.message);
        goto done;
    }
    if (layer.linear) {
        const run_files files = {weights_path, input_path,       output_path,
                                 attention_path, grad_output_path, grad_dir};
        rc = run_linear(&layer, &files, threads);
        goto done;
    }
    const dynconv_conv2d_geometry *g = &layer.geometry;
    const dynconv_conv2d_weights w = dcio_layer_weights(&layer);
    dynconv_status status = dynconv_conv2d_create(g, &w, layer.temperature,
                                                  DYNCONV_FLAG_BORROW_WEIGHTS, &handle);
    if (status != DYNCONV_OK) {
        failure("%s: not a valid layer: %s (%s)", weights_path, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    status = dynconv_conv2d_set_num_threads(handle, (int)threads);
    if (status != DYNCONV_OK) {
        failure("--threads %ld: %s (%s)", threads, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }

    if (!dcio_read_file(input_path, MAX_FILE_BYTES, &xf.bytes, &xf.size, &err)) {
        failure("%s", err.message);
        goto done;
    }
    dcio_npy xn;
    if (!dcio_npy_parse(xf.bytes, xf.size, &xn, &err)) {
        failure("%s: %s", input_path, err.message);
        goto done;
    }
    if (xn.rank != 4 || xn.shape[1] != g->in_channels) {
        char shape[160];
        format_shape(xn.shape, xn.rank, shape, sizeof shape);
        failure("%s: input of shape %s (%d dimensions); the layer of %s expects "
                "[N, C_in = %lld, H, W]", input_path, shape, xn.rank, weights_path,
                (long long)g->in_channels);
        goto done;
    }
    if (xn.numel == 0) {
        failure("%s: input is empty (shape has a zero)", input_path);
        goto done;
    }
    int64_t out_h, out_w;
    status = dynconv_conv2d_reshape(handle, xn.shape[0], xn.shape[2], xn.shape[3], &out_h,
                                    &out_w, NULL);
    if (status != DYNCONV_OK) {
        failure("%s: input shape [%lld, %lld, %lld, %lld] does not suit the layer of %s: %s (%s)",
                input_path, (long long)xn.shape[0], (long long)xn.shape[1],
                (long long)xn.shape[2], (long long)xn.shape[3], weights_path,
                dynconv_status_string(status), dynconv_last_error_message());
        goto done;
    }
    const int64_t y_shape[4] = {xn.shape[0], g->out_channels, out_h, out_w};
    const int64_t pi_shape[2] = {xn.shape[0], g->num_kernels};
    /* reshape has checked that these products fit. */
    const size_t y_count = (size_t)y_shape[0] * (size_t)y_shape[1] * (size_t)out_h *
                           (size_t)out_w;
    x = malloc(xn.numel * sizeof *x);
    y = malloc(y_count * sizeof *y);
    pi = malloc((size_t)pi_shape[0] * (size_t)pi_shape[1] * sizeof *pi);
    if (x == NULL || y == NULL || pi == NULL) {
        failure("%s: out of memory for the input and output arrays", input_path);
        goto done;
    }
    dcio_npy_to_f32(&xn, x);
    status = dynconv_conv2d_forward(handle, x, y, pi, NULL, 0);
    if (status != DYNCONV_OK) {
        failure("%s: forward failed: %s (%s)", input_path, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (grad_output_path != NULL &&
        !run_backward(handle, &layer, weights_path, x, xn.shape, y_shape, grad_output_path,
                      &gyf, &gy, grads)) {
        goto done;
    }
    /* Everything is computed: write every output under a temporary name, then rename all. */
    bool ok = dcio_npy_write_pending(output_path, y_shape, 4, y, &outs[nouts++], &err) &&
              (attention_path == NULL ||
               dcio_npy_write_pending(attention_path, pi_shape, 2, pi, &outs[nouts++], &err));
    if (ok && grad_output_path != NULL) {
        ok = write_gradients(grad_dir, &layer, xn.shape, 4, grads, outs, &nouts, &err);
    }
    for (size_t i = 0; ok && i < nouts; ++i) {
        ok = dcio_pending_commit(&outs[i], &err);
    }
    if (!ok) {
        failure("%s", err.message);
        goto done;
    }
    rc = 0;
done:
    for (size_t i = 0; i < sizeof outs / sizeof *outs; ++i) {
        dcio_pending_discard(&outs[i]);
    }
    for (size_t i = 0; i < sizeof grads / sizeof *grads; ++i) {
        free(grads[i]);
    }
    free(gy);
    free(gyf.bytes);
    free(x);
    free(y);
    free(pi);
    dynconv_conv2d_destroy(handle);
    dcio_layer_free(&layer);
    dcio_st_free(st);
    free(wf.bytes);
    free(xf.bytes);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Platform report (dynconv info, and the head of dynconv bench)                            */
/* ---------------------------------------------------------------------------------------- */

/* Prints the BLAS lines: which core OpenBLAS runs and who chose it. Warns (on stderr) when it
 * runs a generic core although the CPU has AVX2 or AVX-512: OpenBLAS did not recognise the CPU,
 * or OPENBLAS_CORETYPE asked for it. A core OpenBLAS chose for this CPU gets no advice. */
static void print_blas(FILE *out) {
    const char *core = dynconv_blas_core();
    dcio_cpu cpu;
    dcio_cpu_detect(&cpu);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    const bool forced = coretype != NULL && coretype[0] != '\0';
    const char *better = dcio_blas_better_core(core, &cpu);
    fprintf(out, "BLAS:          %s\n", dynconv_blas_config());
    if (forced) {
        fprintf(out, "BLAS core:     %s (OPENBLAS_CORETYPE=%s)\n", core, coretype);
    } else {
        fprintf(out, "BLAS core:     %s (chosen by OpenBLAS)\n", core);
    }
    fprintf(out, "BLAS fallback: %s\n", better != NULL ? "yes" : "no");
    if (better != NULL) {
        fprintf(out, "BLAS suggested core: %s\n", better);
    }
    fprintf(out, "BLAS threads:  %d\n", dynconv_blas_num_threads());
    if (better != NULL) {
        fprintf(stderr,
                "warning: OpenBLAS runs its generic '%s' kernels on a CPU with %s (%s), several "
                "times slower than its '%s' kernels. Set OPENBLAS_CORETYPE=%s in the environment "
                "before starting the program.\n",
                core, cpu.avx512_skylakex ? "AVX-512" : "AVX2",
                forced ? "OPENBLAS_CORETYPE asked for them" : "it did not recognise the CPU",
                better, better);
    }
}

/* The thread count a new handle starts with (one per CPU the process may run on), as the
 * library resolves it; 0 if it cannot be asked. */
static int default_threads(void) {
    const dynconv_conv2d_geometry g = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
    const float one = 1.0f;
    const dynconv_conv2d_weights w = {&one, NULL, &one, NULL, &one, NULL};
    dynconv_conv2d *layer = NULL;
    int threads = 0;
    if (dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer) != DYNCONV_OK ||
        dynconv_conv2d_get_num_threads(layer, &threads) != DYNCONV_OK) {
        threads = 0;
    }
    dynconv_conv2d_destroy(layer);
    return threads;
}

static void info_help(void) {
    printf("usage: dynconv info\n"
           "\n"
           "Prints the library version, the BLAS it calls (configuration, kernel set, threads),\n"
           "the threads a layer uses by default, and the CPU's model and vector features.\n"
           "\"BLAS fallback: yes\" (with a warning on stderr) means OpenBLAS runs one of its\n"
           "generic kernel sets (Prescott, ...) on a CPU with AVX2 or AVX-512, usually because it\n"
           "did not recognise the CPU; \"BLAS suggested core:\" then names the OPENBLAS_CORETYPE\n"
           "to set before the program starts.\n");
}

static int cmd_info(int argc, char **argv) {
    program_command = "dynconv info";
    bool help;
    const int rc = parse_options(argc, argv, NULL, 0, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        info_help();
        return 0;
    }
    dcio_cpu cpu;
    dcio_cpu_detect(&cpu);
    printf("libdynconv:    %s (built against %s)\n", dynconv_version_string(),
           DYNCONV_VERSION_STRING);
    print_blas(stdout);
    printf("CPU:           %s\n", cpu.model);
    printf("CPUs online:   %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("threads:       %d per layer by default (the CPUs this process may run on)\n",
           default_threads());
    printf("CPU features:  sse4.2=%s avx=%s avx2=%s fma=%s avx512f=%s\n", cpu.sse42 ? "yes" : "no",
           cpu.avx ? "yes" : "no", cpu.avx2 ? "yes" : "no", cpu.fma ? "yes" : "no",
           cpu.avx512f ? "yes" : "no");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* dynconv bench                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct bench_layer {
    char name[64];
    long in, out, kernel, stride, pad, groups, size;
} bench_layer;

static void bench_help(void) {
    printf(
        "usage: dynconv bench [--batch N] [--repeats R] [--threads T] [--layers FILE]\n"
        "                     [--only NAME]\n"
        "\n"
        "Times the forward of the benchmark workload (ResNet-18 and MobileNetV2 layers as\n"
        "dynamic convolutions, K = 4, attention hidden size in/4) on random data and prints,\n"
        "per layer, the median and best time of R forwards and the convolution GFLOP/s\n"
        "(2 * N * C_out * H_out * W_out * C_in/groups * kh * kw per forward, on the median).\n"
        "\n"
        "  --batch N      samples per forward (default 8)\n"
        "  --repeats R    timed forwards per layer, after one warm-up (default 10)\n"
        "  --threads T    threads per layer (default 0: one per CPU available)\n"
        "  --layers FILE  workload file (default: the built-in list); one layer per line:\n"
        "                 name in out kernel stride pad groups size; '#' starts a comment\n"
        "  --only NAME    run only the layers whose name contains NAME\n"
        "\n"
        "The BLAS kernel set is printed first: 'Prescott' on an AVX2/AVX-512 CPU means\n"
        "OpenBLAS did not recognise the CPU (set OPENBLAS_CORETYPE). Timings are noisy on a\n"
        "shared machine: compare medians measured in the same run.\n");
}

/* Parses the workload text; on error names the line. Returns the number of layers or -1. */
static long parse_workload(const char *text, const char *origin, bench_layer **out) {
    size_t cap = 16, n = 0;
    bench_layer *layers = malloc(cap * sizeof *layers);
    if (layers == NULL) {
        failure("out of memory");
        return -1;
    }
    long lineno = 0;
    const char *p = text;
    while (*p != '\0') {
        const size_t len = strcspn(p, "\n");
        char line[256];
        lineno++;
        if (len >= sizeof line) {
            failure("%s:%ld: line too long", origin, lineno);
            free(layers);
            return -1;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (p[len] == '\n' ? 1 : 0);
        line[strcspn(line, "#")] = '\0';
        char extra[2];
        bench_layer l;
        const int got = sscanf(line, "%63s %ld %ld %ld %ld %ld %ld %ld %1s", l.name, &l.in, &l.out,
                               &l.kernel, &l.stride, &l.pad, &l.groups, &l.size, extra);
        if (got <= 0) {
            continue; /* blank or comment */
        }
        if (got != 8 || l.in <= 0 || l.out <= 0 || l.kernel <= 0 || l.stride <= 0 ||
            l.pad < 0 || l.groups <= 0 || l.size <= 0 || l.in > 65536 || l.out > 65536 ||
            l.kernel > 64 || l.size > 8192) {
            failure("%s:%ld: expected 'name in out kernel stride pad groups size' with sane "
                    "positive sizes", origin, lineno);
            free(layers);
            return -1;
        }
        if (n == cap) {
            bench_layer *grown = realloc(layers, 2 * cap * sizeof *layers);
            if (grown == NULL) {
                failure("out of memory");
                free(layers);
                return -1;
            }
            layers = grown;
            cap *= 2;
        }
        layers[n++] = l;
    }
    *out = layers;
    return (long)n;
}

static uint64_t bench_rng = 0x2545F4914F6CDD1Du;

static void fill_random(float *p, size_t n, float scale) {
    for (size_t i = 0; i < n; ++i) {
        bench_rng ^= bench_rng >> 12;
        bench_rng ^= bench_rng << 25;
        bench_rng ^= bench_rng >> 27;
        const uint64_t r = bench_rng * 0x2545F4914F6CDD1Du;
        p[i] = scale * (float)((double)(r >> 11) / 4503599627370496.0 - 1.0);
    }
}

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times one layer; returns false (after printing) on an error. */
static bool bench_one(const bench_layer *bl, long batch, long repeats, int threads,
                      double *times) {
    const int64_t hidden = bl->in / 4 > 0 ? bl->in / 4 : 1;
    const dynconv_conv2d_geometry g = {
        .in_channels = bl->in, .out_channels = bl->out, .kernel_h = bl->kernel,
        .kernel_w = bl->kernel, .stride_h = bl->stride, .stride_w = bl->stride,
        .pad_h = bl->pad, .pad_w = bl->pad, .dilation_h = 1, .dilation_w = 1,
        .groups = bl->groups, .num_kernels = 4, .hidden = hidden};
    if (bl->in % bl->groups != 0 || bl->out % bl->groups != 0) {
        failure("layer %s: groups %ld must divide %ld and %ld", bl->name, bl->groups, bl->in,
                bl->out);
        return false;
    }
    const size_t k = 4, ks = (size_t)bl->kernel * (size_t)bl->kernel;
    const size_t weight_n = k * (size_t)bl->out * (size_t)(bl->in / bl->groups) * ks;
    const size_t x_n = (size_t)batch * (size_t)bl->in * (size_t)bl->size * (size_t)bl->size;
    float *weight = malloc(weight_n * sizeof(float));
    float *bias = malloc(k * (size_t)bl->out * sizeof(float));
    float *fc1 = malloc((size_t)hidden * (size_t)bl->in * sizeof(float));
    float *fc2 = malloc(k * (size_t)hidden * sizeof(float));
    float *x = malloc(x_n * sizeof(float));
    float *y = NULL;
    dynconv_conv2d *layer = NULL;
    bool ok = false;
    if (weight == NULL || bias == NULL || fc1 == NULL || fc2 == NULL || x == NULL) {
        failure("layer %s: out of memory", bl->name);
        goto done;
    }
    fill_random(weight, weight_n, 0.1f);
    fill_random(bias, k * (size_t)bl->out, 0.1f);
    fill_random(fc1, (size_t)hidden * (size_t)bl->in, 0.5f);
    fill_random(fc2, k * (size_t)hidden, 0.5f);
    fill_random(x, x_n, 1.0f);
    const dynconv_conv2d_weights w = {weight, bias, fc1, NULL, fc2, NULL};
    int64_t oh, ow;
    dynconv_status st = dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer);
    if (st == DYNCONV_OK) {
        st = dynconv_conv2d_set_num_threads(layer, threads);
    }
    if (st == DYNCONV_OK) {
        st = dynconv_conv2d_reshape(layer, batch, bl->size, bl->size, &oh, &ow, NULL);
    }
    if (st != DYNCONV_OK) {
        failure("layer %s: %s (%s)", bl->name, dynconv_status_string(st),
                dynconv_last_error_message());
        goto done;
    }
    y = malloc((size_t)batch * (size_t)bl->out * (size_t)oh * (size_t)ow * sizeof(float));
    if (y == NULL) {
        failure("layer %s: out of memory", bl->name);
        goto done;
    }
    for (long r = -1; r < repeats; ++r) { /* r = -1: warm-up, not timed */
        const double t0 = now_seconds();
        st = dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0);
        const double t1 = now_seconds();
        if (st != DYNCONV_OK) {
            failure("layer %s: forward: %s (%s)", bl->name, dynconv_status_string(st),
                    dynconv_last_error_message());
            goto done;
        }
        if (r >= 0) {
            times[r] = t1 - t0;
        }
    }
    ok = true;
done:
    dynconv_conv2d_destroy(layer);
    free(weight);
    free(bias);
    free(fc1);
    free(fc2);
    free(x);
    free(y);
    return ok;
}

static int cmd_bench(int argc, char **argv) {
    program_command = "dynconv bench";
    option opts[] = {{"batch", true, NULL},
                     {"repeats", true, NULL},
                     {"threads", true, NULL},
                     {"layers", true, NULL},
                     {"only", true, NULL}};
    const size_t nopts = sizeof opts / sizeof *opts;
    bool help;
    int rc = parse_options(argc, argv, opts, nopts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        bench_help();
        return 0;
    }
    long batch = 8, repeats = 10;
    const char *v;
    if ((v = get(opts, nopts, "batch")) != NULL && !parse_long(v, 1, 4096, &batch)) {
        return usage_error("--batch '%s' is not an integer in [1, 4096]", v);
    }
    if ((v = get(opts, nopts, "repeats")) != NULL && !parse_long(v, 1, 100000, &repeats)) {
        return usage_error("--repeats '%s' is not an integer in [1, 100000]", v);
    }
    long threads = 0;
    if ((v = get(opts, nopts, "threads")) != NULL &&
        !parse_long(v, 0, DYNCONV_MAX_THREADS, &threads)) {
        return usage_error("--threads '%s' is not an integer in [0, %d]", v, DYNCONV_MAX_THREADS);
    }
    const char *only = get(opts, nopts, "only");
    const char *layers_path = get(opts, nopts, "layers");
    unsigned char *file = NULL;
    const char *text = dc_builtin_layers, *origin = "built-in workload";
    if (layers_path != NULL) {
        size_t size;
        dcio_error err;
        if (!dcio_read_file(layers_path, (size_t)1 << 24, &file, &size, &err)) {
            return failure("%s", err.message);
        }
        /* NUL-terminate a copy for the line parser; a NUL inside the file is an error. */
        char *copy = realloc(file, size + 1);
        if (copy == NULL) {
            free(file);
            return failure("%s: out of memory", layers_path);
        }
        copy[size] = '\0';
        file = (unsigned char *)copy;
        if (strlen(copy) != size) {
            free(file);
            return failure("%s: not a text file (contains NUL bytes)", layers_path);
        }
        text = copy;
        origin = layers_path;
    }
    bench_layer *layers = NULL;
    const long count = parse_workload(text, origin, &layers);
    free(file);
    if (count < 0) {
        return EXIT_FAILURE;
    }
    double *times = malloc((size_t)repeats * sizeof *times);
    if (times == NULL) {
        free(layers);
        return failure("out of memory");
    }
    printf("libdynconv %s, batch %ld, %ld timed forwards per layer (median, best), "
           "%d thread(s) per layer\n", dynconv_version_string(), batch, repeats,
           threads > 0 ? (int)threads : default_threads());
    print_blas(stdout);
    printf("%-22s %5s %5s %2s %2s %4s %5s %10s %10s %9s\n", "layer", "in", "out", "k", "s",
           "g", "size", "median_ms", "best_ms", "GFLOP/s");
    rc = 0;
    long ran = 0;
    for (long i = 0; i < count; ++i) {
        const bench_layer *bl = &layers[i];
        if (only != NULL && strstr(bl->name, only) == NULL) {
            continue;
        }
        if (!bench_one(bl, batch, repeats, (int)threads, times)) {
            rc = EXIT_FAILURE;
            break;
        }
        qsort(times, (size_t)repeats, sizeof *times, compare_double);
        const double median = repeats % 2 == 1
                                  ? times[repeats / 2]
                                  : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
        const long out_size = (bl->size + 2 * bl->pad - bl->kernel) / bl->stride + 1;
        const double flops = 2.0 * (double)batch * (double)bl->out * (double)out_size *
                             (double)out_size * (double)(bl->in / bl->groups) *
                             (double)(bl->kernel * bl->kernel);
        printf("%-22s %5ld %5ld %2ld %2ld %4ld %5ld %10.3f %10.3f %9.2f\n", bl->name, bl->in,
               bl->out, bl->kernel, bl->stride, bl->groups, bl->size, 1e3 * median,
               1e3 * times[0], flops / median * 1e-9);
        fflush(stdout);
        ran++;
    }
    if (rc == 0 && ran == 0) {
        rc = failure("no layer of the %s matches --only '%s'", origin, only != NULL ? only : "");
    }
    free(times);
    free(layers);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */

static void main_help(void) {
    printf("usage: dynconv <command> [options]\n"
           "\n"
           "Commands:\n"
           "  run     run a dynamic convolution layer from a safetensors file on a .npy array\n"
           "  bench   time the benchmark workload and report GFLOP/s per layer\n"
           "  info    version, BLAS and its kernel set, threads, CPU features\n"
           "\n"
           "'dynconv <command> --help' describes a command. 'dynconv --version' prints the\n"
           "version. Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        return usage_error("no command given (run, bench or info)");
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        main_help();
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("dynconv %s\n", dynconv_version_string());
        return 0;
    }
    if (strcmp(cmd, "run") == 0) {
        return cmd_run(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "bench") == 0) {
        return cmd_bench(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "info") == 0) {
        return cmd_info(argc - 2, argv + 2);
    }
    return usage_error("unknown command '%s' (run, bench or info)", cmd);
}
