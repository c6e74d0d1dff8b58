/* dynconv run: reading the input and dL/dy, the arrays, writing the outputs: what both kinds
 * of layer do alike. */
#define _POSIX_C_SOURCE 200809L
#include "run.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void run_buffers_free(run_buffers *b) {
    for (size_t i = 0; i < sizeof b->outs / sizeof *b->outs; ++i) {
        dcio_pending_discard(&b->outs[i]);
    }
    for (size_t i = 0; i < sizeof b->grads / sizeof *b->grads; ++i) {
        free(b->grads[i]);
    }
    free(b->gy);
    free(b->gyf.bytes);
    free(b->x);
    free(b->y);
    free(b->pi);
    free(b->xf.bytes);
}

bool read_input(const run_files *f, run_buffers *b, dcio_npy *xn) {
    dcio_error err;
    if (!dcio_read_file(f->input, MAX_FILE_BYTES, &b->xf.bytes, &b->xf.size, &err)) {
        failure("%s", err.message);
        return false;
    }
    if (!dcio_npy_parse(b->xf.bytes, b->xf.size, xn, &err)) {
        failure("%s: %s", f->input, err.message);
        return false;
    }
    return true;
}

bool alloc_arrays(const run_files *f, const dcio_npy *xn, size_t y_count, size_t pi_count,
                  run_buffers *b) {
    b->x = malloc(xn->numel * sizeof *b->x);
    b->y = malloc(y_count * sizeof *b->y);
    b->pi = malloc(pi_count * sizeof *b->pi);
    if (b->x == NULL || b->y == NULL || b->pi == NULL) {
        failure("%s: out of memory for the input and output arrays", f->input);
        return false;
    }
    dcio_npy_to_f32(xn, b->x);
    return true;
}

bool read_grad_output(const run_files *f, const dcio_layer *layer, const int64_t *y_shape,
                      int rank, size_t x_count, run_buffers *b) {
    dcio_error err;
    dcio_npy gn;
    if (!dcio_read_file(f->grad_output, MAX_FILE_BYTES, &b->gyf.bytes, &b->gyf.size, &err)) {
        failure("%s", err.message);
        return false;
    }
    if (!dcio_npy_parse(b->gyf.bytes, b->gyf.size, &gn, &err)) {
        failure("%s: %s", f->grad_output, err.message);
        return false;
    }
    if (gn.rank != rank || memcmp(gn.shape, y_shape, (size_t)rank * sizeof *y_shape) != 0) {
        char got[160], want[160];
        format_shape(gn.shape, gn.rank, got, sizeof got);
        format_shape(y_shape, rank, want, sizeof want);
        failure("%s: gradient of shape %s; the output of the layer of %s on this input is %s",
                f->grad_output, got, f->weights, want);
        return false;
    }
    b->gy = malloc(gn.numel * sizeof *b->gy);
    b->grads[0] = malloc(x_count * sizeof **b->grads);
    bool ok = b->gy != NULL && b->grads[0] != NULL;
    for (int s = 0; ok && s < DCIO_LAYER_TENSORS; ++s) {
        if (layer->tensor[s] != NULL) {
            b->grads[1 + s] = malloc(layer->numel[s] * sizeof **b->grads);
            ok = b->grads[1 + s] != NULL;
        }
    }
    if (!ok) {
        failure("%s: out of memory for the gradients", f->grad_output);
        return false;
    }
    dcio_npy_to_f32(&gn, b->gy);
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

bool write_outputs(const run_files *f, const dcio_layer *layer, const int64_t *x_shape,
                   const int64_t *y_shape, int rank, const int64_t *pi_shape, run_buffers *b) {
    dcio_error err;
    bool ok = dcio_npy_write_pending(f->output, y_shape, rank, b->y, &b->outs[b->nouts++],
                                     &err) &&
              (f->attention == NULL || dcio_npy_write_pending(f->attention, pi_shape, 2, b->pi,
                                                              &b->outs[b->nouts++], &err));
    if (ok && f->grad_output != NULL) {
        ok = write_gradients(f->grad_dir, layer, x_shape, rank, b->grads, b->outs, &b->nouts,
                             &err);
    }
    for (size_t i = 0; ok && i < b->nouts; ++i) {
        ok = dcio_pending_commit(&b->outs[i], &err);
    }
    if (!ok) {
        failure("%s", err.message);
    }
    return ok;
}
