/* dynconv infer: a whole network exported from PyTorch (docs/file-format.md, "Networks") on a
 * NumPy array; and `dynconv info --model`, the nodes the network runs. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <dynconv/dynconv.h>

#include "dcio.h"

static void infer_help(void) {
    printf(
        "usage: dynconv infer --model NET.safetensors --input X.npy --output Y.npy\n"
        "                     [--threads N] [--temperature T]\n"
        "\n"
        "Runs a whole network exported from PyTorch (dynconv.export.export_network) on a\n"
        "NumPy array.\n"
        "\n"
        "  --model FILE       the network file (safetensors with the graph in its metadata)\n"
        "  --input FILE       x, float32 .npy of shape [N, C, H, W]; C is the network's, N, H\n"
        "                     and W may differ from the shape the network was traced with\n"
        "  --output FILE      the network's output, float32 .npy ([N, D] logits, or\n"
        "                     [N, C, H, W]). A network of several outputs writes output 0 to\n"
        "                     FILE and output i to FILE with '.npy' replaced by '.i.npy'\n"
        "                     (Y.npy, Y.1.npy, Y.2.npy, ...; '.i' appended when FILE does not\n"
        "                     end in '.npy')\n"
        "  --threads N        threads of the network (default 0: one per CPU available)\n"
        "  --temperature T    softmax temperature of every dynamic layer (default: the\n"
        "                     file's, each layer its own)\n"
        "\n"
        "Exit status: 0 success, 1 failure (the message names the file), 2 bad usage.\n"
        "Output files are replaced only when the whole run succeeded.\n");
}

/* The network of `path`, or NULL after printing why. */
static dynconv_network *open_network(const char *path) {
    dynconv_network *net = NULL;
    const dynconv_status status = dynconv_network_create_from_file(path, 0, &net);
    if (status != DYNCONV_OK) {
        failure("%s: not a valid network: %s (%s)", path, dynconv_status_string(status),
                dynconv_last_error_message());
        return NULL;
    }
    return net;
}

/* Output i's file name: `base` itself for output 0, else base with ".npy" replaced by
 * ".<i>.npy" (".<i>" appended when base has no ".npy" ending). malloc'ed; NULL when out of
 * memory. */
static char *output_name(const char *base, int64_t index) {
    const size_t len = strlen(base);
    char *name = malloc(len + 32);
    if (name == NULL || index == 0) {
        return name == NULL ? NULL : strcpy(name, base);
    }
    const size_t stem = len >= 4 && strcmp(base + len - 4, ".npy") == 0 ? len - 4 : len;
    snprintf(name, len + 32, "%.*s.%lld%s", (int)stem, base, (long long)index,
             stem < len ? ".npy" : "");
    return name;
}

/* What one inference holds; zeroed first, released by infer_free. */
typedef struct infer_state {
    dynconv_network *net;
    unsigned char *xbytes;
    size_t xsize;
    float *x;
    int64_t count;      /* outputs */
    float **y;          /* count arrays */
    int64_t (*shape)[4];
    int *rank;
    dcio_pending *outs; /* count pending files */
} infer_state;

static void infer_free(infer_state *s) {
    for (int64_t i = 0; i < s->count; ++i) {
        if (s->outs != NULL) {
            dcio_pending_discard(&s->outs[i]);
        }
        if (s->y != NULL) {
            free(s->y[i]);
        }
    }
    free(s->outs);
    free(s->y);
    free(s->shape);
    free(s->rank);
    free(s->x);
    free(s->xbytes);
    dynconv_network_destroy(s->net);
}

/* Reads the input, reshapes the network to it and allocates every array. Prints the reason
 * and returns false on error. */
static bool prepare(infer_state *s, const char *model, const char *input) {
    dcio_error err;
    dcio_npy xn;
    if (!dcio_read_file(input, MAX_FILE_BYTES, &s->xbytes, &s->xsize, &err)) {
        failure("%s", err.message);
        return false;
    }
    if (!dcio_npy_parse(s->xbytes, s->xsize, &xn, &err)) {
        failure("%s: %s", input, err.message);
        return false;
    }
    int64_t channels = 0;
    dynconv_network_get_input_channels(s->net, &channels);
    if (xn.rank != 4 || xn.shape[1] != channels) {
        char shape[160];
        format_shape(xn.shape, xn.rank, shape, sizeof shape);
        failure("%s: input of shape %s (%d dimensions); the network of %s expects "
                "[N, C = %lld, H, W]", input, shape, xn.rank, model, (long long)channels);
        return false;
    }
    if (xn.numel == 0) {
        failure("%s: input is empty (shape has a zero)", input);
        return false;
    }
    dynconv_status status = dynconv_network_reshape(s->net, xn.shape[0], xn.shape[2],
                                                    xn.shape[3], NULL);
    if (status != DYNCONV_OK) {
        failure("%s: input shape [%lld, %lld, %lld, %lld] does not suit the network of %s: "
                "%s (%s)", input, (long long)xn.shape[0], (long long)xn.shape[1],
                (long long)xn.shape[2], (long long)xn.shape[3], model,
                dynconv_status_string(status), dynconv_last_error_message());
        return false;
    }
    int64_t count = 0;
    dynconv_network_get_num_outputs(s->net, &count);
    s->y = calloc((size_t)count, sizeof *s->y);
    s->shape = calloc((size_t)count, sizeof *s->shape);
    s->rank = calloc((size_t)count, sizeof *s->rank);
    s->outs = calloc((size_t)count, sizeof *s->outs);
    s->x = malloc(xn.numel * sizeof *s->x);
    if (s->y == NULL || s->shape == NULL || s->rank == NULL || s->outs == NULL ||
        s->x == NULL) {
        failure("%s: out of memory for the input and output arrays", input);
        return false;
    }
    s->count = count;
    dcio_npy_to_f32(&xn, s->x);
    for (int64_t i = 0; i < count; ++i) {
        status = dynconv_network_get_output_shape(s->net, i, s->shape[i], &s->rank[i]);
        if (status != DYNCONV_OK) {
            failure("%s: output %lld: %s (%s)", model, (long long)i,
                    dynconv_status_string(status), dynconv_last_error_message());
            return false;
        }
        /* reshape has checked that the network's values fit in memory sizes. */
        size_t n = 1;
        for (int d = 0; d < s->rank[i]; ++d) {
            n *= (size_t)s->shape[i][d];
        }
        s->y[i] = malloc(n * sizeof **s->y);
        if (s->y[i] == NULL) {
            failure("%s: out of memory for the output arrays", input);
            return false;
        }
    }
    return true;
}

/* Writes every output under a temporary name, then renames them all into place. */
static bool write_all(infer_state *s, const char *output) {
    dcio_error err;
    bool ok = true;
    for (int64_t i = 0; ok && i < s->count; ++i) {
        char *name = output_name(output, i);
        if (name == NULL) {
            snprintf(err.message, sizeof err.message, "%s: out of memory", output);
            ok = false;
            break;
        }
        ok = dcio_npy_write_pending(name, s->shape[i], s->rank[i], s->y[i], &s->outs[i], &err);
        free(name);
    }
    for (int64_t i = 0; ok && i < s->count; ++i) {
        ok = dcio_pending_commit(&s->outs[i], &err);
    }
    if (!ok) {
        failure("%s", err.message);
    }
    return ok;
}

int cmd_infer(int argc, char **argv) {
    program_command = "dynconv infer";
    option opts[] = {{"model", true, NULL},   {"input", true, NULL},
                     {"output", true, NULL},  {"threads", true, NULL},
                     {"temperature", true, NULL}};
    const size_t nopts = sizeof opts / sizeof *opts;
    const int parsed = parse_options(argc, argv, opts, nopts, infer_help);
    if (parsed != OPTIONS_PARSED) {
        return parsed;
    }
    const char *model = get(opts, nopts, "model");
    const char *input = get(opts, nopts, "input");
    const char *output = get(opts, nopts, "output");
    if (model == NULL || input == NULL || output == NULL) {
        return usage_error("--%s is required", model == NULL   ? "model"
                                               : input == NULL ? "input"
                                                               : "output");
    }
    long threads = 0;
    const char *v = get(opts, nopts, "threads");
    if (v != NULL && !parse_long(v, 0, DYNCONV_MAX_THREADS, &threads)) {
        return usage_error("--threads '%s' is not an integer in [0, %d]", v,
                           DYNCONV_MAX_THREADS);
    }
    float temperature = 0.0f;
    const char *temperature_text = get(opts, nopts, "temperature");
    if (temperature_text != NULL && !dcio_parse_temperature(temperature_text, &temperature)) {
        return usage_error("--temperature '%s' is not a finite number > 0", temperature_text);
    }

    int rc = EXIT_FAILURE;
    infer_state s;
    memset(&s, 0, sizeof s);
    s.net = open_network(model);
    if (s.net == NULL) {
        goto done;
    }
    dynconv_status status = dynconv_network_set_num_threads(s.net, (int)threads);
    if (status != DYNCONV_OK) {
        failure("--threads %ld: %s (%s)", threads, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (temperature_text != NULL) {
        status = dynconv_network_set_temperature(s.net, NULL, temperature);
        if (status != DYNCONV_OK) {
            failure("%s: --temperature %s: %s (%s)", model, temperature_text,
                    dynconv_status_string(status), dynconv_last_error_message());
            goto done;
        }
    }
    if (!prepare(&s, model, input)) {
        goto done;
    }
    status = dynconv_network_forward(s.net, s.x, s.y);
    if (status != DYNCONV_OK) {
        failure("%s: forward failed: %s (%s)", input, dynconv_status_string(status),
                dynconv_last_error_message());
        goto done;
    }
    if (write_all(&s, output)) {
        rc = 0;
    }
done:
    infer_free(&s);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* dynconv info --model                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* The [N, C, H, W] the file's graph was traced with (its "inputs"[0]."shape"). The library
 * has checked the graph; this reads the one field it does not report. */
static bool traced_shape(const char *path, int64_t shape[4]) {
    dcio_error err;
    unsigned char *bytes = NULL;
    size_t size = 0;
    dcio_safetensors *st = NULL;
    bool ok = false;
    if (!dcio_read_file(path, MAX_FILE_BYTES, &bytes, &size, &err)) {
        failure("%s", err.message);
        return false;
    }
    if (!dcio_st_parse(bytes, size, &st, &err)) {
        failure("%s: %s", path, err.message);
        goto done;
    }
    const char *text = dcio_st_metadata(st, "dynconv.graph");
    json_t *graph = text != NULL ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *dims = json_object_get(json_array_get(json_object_get(graph, "inputs"), 0),
                                   "shape");
    ok = json_array_size(dims) == 4;
    for (size_t d = 0; ok && d < 4; ++d) {
        const json_t *v = json_array_get(dims, d);
        ok = json_is_integer(v) && json_integer_value(v) > 0;
        shape[d] = ok ? (int64_t)json_integer_value(v) : 0;
    }
    json_decref(graph);
    if (!ok) {
        failure("%s: the graph names no traced input shape [N, C, H, W]", path);
    }
done:
    dcio_st_free(st);
    free(bytes);
    return ok;
}

static void format_fused(uint32_t fused, char *buf, size_t size) {
    snprintf(buf, size, "%s%s%s%s", (fused & DYNCONV_NETWORK_FUSED_BATCHNORM) ? "bn" : "",
             (fused & DYNCONV_NETWORK_FUSED_BATCHNORM) &&
                     (fused & (DYNCONV_NETWORK_FUSED_RELU | DYNCONV_NETWORK_FUSED_RELU6))
                 ? "+"
                 : "",
             (fused & DYNCONV_NETWORK_FUSED_RELU) ? "relu" : "",
             (fused & DYNCONV_NETWORK_FUSED_RELU6) ? "relu6" : "");
    if (buf[0] == '\0') {
        snprintf(buf, size, "-");
    }
}

int print_model_info(const char *path) {
    dynconv_network *net = open_network(path);
    if (net == NULL) {
        return EXIT_FAILURE;
    }
    int rc = EXIT_FAILURE;
    int64_t shape[4];
    if (!traced_shape(path, shape)) {
        goto done;
    }
    size_t peak = 0;
    int64_t count = 0, outputs = 0;
    char text[160];
    dynconv_status status = dynconv_network_reshape(net, shape[0], shape[2], shape[3], &peak);
    if (status != DYNCONV_OK) {
        format_shape(shape, 4, text, sizeof text);
        failure("%s: cannot be planned at its traced input shape %s: %s (%s)", path, text,
                dynconv_status_string(status), dynconv_last_error_message());
        goto done;
    }
    dynconv_network_get_num_nodes(net, &count);
    dynconv_network_get_num_outputs(net, &outputs);
    int name_width = 4, op_width = 2;
    dynconv_network_node_info info;
    for (int64_t i = 0; i < count; ++i) {
        if (dynconv_network_get_node_info(net, i, &info) == DYNCONV_OK) {
            const int n = (int)strlen(info.name), o = (int)strlen(info.op);
            name_width = n > name_width ? (n < 60 ? n : 60) : name_width;
            op_width = o > op_width ? o : op_width;
        }
    }
    format_shape(shape, 4, text, sizeof text);
    printf("model:       %s\n", path);
    printf("input:       %s (as traced; C is fixed, N, H and W may change)\n", text);
    printf("outputs:     %lld\n", (long long)outputs);
    printf("nodes:       %lld, in execution order after folding; shapes at the input above\n\n",
           (long long)count);
    printf("%4s  %-*s  %-*s  %2s  %-8s  %-20s  %10s\n", "#", name_width, "name", op_width, "op",
           "K", "fused", "output", "parameters");
    int64_t total = 0;
    for (int64_t i = 0; i < count; ++i) {
        status = dynconv_network_get_node_info(net, i, &info);
        if (status != DYNCONV_OK) {
            failure("%s: node %lld: %s (%s)", path, (long long)i,
                    dynconv_status_string(status), dynconv_last_error_message());
            goto done;
        }
        char fused[32], out[160], k[24];
        format_fused(info.fused, fused, sizeof fused);
        format_shape(info.shape, info.rank, out, sizeof out);
        snprintf(k, sizeof k, "%lld", (long long)info.num_kernels);
        printf("%4lld  %-*s  %-*s  %2s  %-8s  %-20s  %10lld\n", (long long)i, name_width,
               info.name, op_width, info.op, info.num_kernels > 0 ? k : "-", fused, out,
               (long long)info.parameters);
        total += info.parameters;
    }
    printf("\nparameters:  %lld floats (%.2f MiB)\n", (long long)total,
           (double)total * 4.0 / (1024.0 * 1024.0));
    printf("peak memory: %zu bytes (%.2f MiB): activations, shared workspace and attention "
           "rows at %s\n", peak, (double)peak / (1024.0 * 1024.0), text);
    rc = 0;
done:
    dynconv_network_destroy(net);
    return rc;
}
