/* See golden.h: the golden arrays from their .npy files, checked against the case table. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcio.h"
#include "golden.h"

#ifndef DYNCONV_GOLDEN_DIR
#error "the build must define DYNCONV_GOLDEN_DIR, the directory of the golden .npy files"
#endif

/* One array of a case: its file name (without .npy), where it goes, the shape the case's
 * geometry gives it, and whether the case has it at all. */
typedef struct field {
    const char *name;
    const float **slot;
    int rank;
    int64_t shape[5];
    bool present;
} field;

enum { MAX_FIELDS = 17, LARGEST_FILE = 16 * 1024 * 1024 };

static bool load_field(const char *dir, const field *f)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.npy", dir, f->name);
    unsigned char *bytes = NULL;
    size_t size = 0;
    dcio_error err;
    dcio_npy npy;
    if (!dcio_read_file(path, LARGEST_FILE, &bytes, &size, &err) ||
        !dcio_npy_parse(bytes, size, &npy, &err)) {
        fprintf(stderr, "golden: %s: %s\n", path, err.message);
        free(bytes);
        return false;
    }
    bool same = npy.rank == f->rank;
    for (int d = 0; same && d < f->rank; ++d) {
        same = npy.shape[d] == f->shape[d];
    }
    if (!same) {
        fprintf(stderr, "golden: %s: shape of rank %d does not match the case table's (rank %d)"
                        " or its sizes\n", path, npy.rank, f->rank);
        free(bytes);
        return false;
    }
    float *values = malloc((npy.numel > 0 ? npy.numel : 1) * sizeof(float));
    if (values == NULL) {
        fprintf(stderr, "golden: %s: out of memory\n", path);
        free(bytes);
        return false;
    }
    dcio_npy_to_f32(&npy, values);
    free(bytes);
    *f->slot = values; /* kept for the whole test run */
    return true;
}

/* Every .npy in the directory is one the case expects. */
static bool no_stray_files(const char *dir, const field *fields, size_t count)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "golden: cannot open %s (regenerate with generate_golden.py)\n", dir);
        return false;
    }
    bool ok = true;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".npy") != 0) {
            continue;
        }
        bool expected = false;
        for (size_t i = 0; i < count; ++i) {
            expected = expected || (fields[i].present && strlen(fields[i].name) == len - 4 &&
                                    strncmp(fields[i].name, e->d_name, len - 4) == 0);
        }
        if (!expected) {
            fprintf(stderr, "golden: %s/%s is not an array of the case\n", dir, e->d_name);
            ok = false;
        }
    }
    closedir(d);
    return ok;
}

static bool load_case(const char *kind, const char *name, const field *fields, size_t count)
{
    char dir[768];
    snprintf(dir, sizeof dir, "%s/%s/%s", DYNCONV_GOLDEN_DIR, kind, name);
    bool ok = no_stray_files(dir, fields, count);
    for (size_t i = 0; ok && i < count; ++i) {
        if (fields[i].present) {
            ok = load_field(dir, &fields[i]);
        } else {
            *fields[i].slot = NULL;
        }
    }
    return ok;
}

/* The parameter arrays and their gradients, in the layouts of the public API. */
static size_t parameter_fields(field *f, dynconv_conv2d_weights *w, dynconv_conv2d_weights *dw,
                               bool has_bias, bool has_fc1_bias, bool has_fc2_bias,
                               int weight_rank, const int64_t *weight_shape, int64_t k,
                               int64_t out, int64_t in, int64_t hidden)
{
    size_t n = 0;
    for (int grad = 0; grad < 2; ++grad) {
        dynconv_conv2d_weights *t = grad ? dw : w;
        f[n] = (field){grad ? "dweight" : "weight", &t->weight, weight_rank, {0}, true};
        memcpy(f[n++].shape, weight_shape, (size_t)weight_rank * sizeof(int64_t));
        f[n++] = (field){grad ? "dbias" : "bias", &t->bias, 2, {k, out}, has_bias};
        f[n++] = (field){grad ? "dfc1_weight" : "fc1_weight", &t->fc1_weight, 2, {hidden, in},
                         true};
        f[n++] = (field){grad ? "dfc1_bias" : "fc1_bias", &t->fc1_bias, 1, {hidden},
                         has_fc1_bias};
        f[n++] = (field){grad ? "dfc2_weight" : "fc2_weight", &t->fc2_weight, 2, {k, hidden},
                         true};
        f[n++] = (field){grad ? "dfc2_bias" : "fc2_bias", &t->fc2_bias, 1, {k}, has_fc2_bias};
    }
    return n;
}

static bool load_conv2d(golden_conv2d_case *c)
{
    const dynconv_conv2d_geometry *g = &c->geometry;
    const int64_t k = g->num_kernels, n = c->batch;
    const int64_t weight_shape[5] = {k, g->out_channels, g->in_channels / g->groups, g->kernel_h,
                                     g->kernel_w};
    field f[MAX_FIELDS];
    size_t count = parameter_fields(f, &c->weights, &c->dweights, c->has_bias, c->has_fc1_bias,
                                    c->has_fc2_bias, 5, weight_shape, k, g->out_channels,
                                    g->in_channels, g->hidden);
    f[count++] = (field){"x", &c->x, 4, {n, g->in_channels, c->height, c->width}, true};
    f[count++] = (field){"dx", &c->dx, 4, {n, g->in_channels, c->height, c->width}, true};
    f[count++] = (field){"y", &c->y, 4, {n, g->out_channels, c->out_h, c->out_w}, true};
    f[count++] = (field){"dy", &c->dy, 4, {n, g->out_channels, c->out_h, c->out_w}, true};
    f[count++] = (field){"pi", &c->pi, 2, {n, k}, true};
    return load_case("conv2d", c->name, f, count);
}

static bool load_linear(golden_linear_case *c)
{
    const dynconv_linear_geometry *g = &c->geometry;
    const int64_t k = g->num_kernels, n = c->batch;
    const int64_t weight_shape[3] = {k, g->out_features, g->in_features};
    /* Filled through a conv2d weights struct (the same members), then copied member by member. */
    dynconv_conv2d_weights w = {0}, dw = {0};
    field f[MAX_FIELDS];
    size_t count = parameter_fields(f, &w, &dw, c->has_bias, c->has_fc1_bias, c->has_fc2_bias,
                                    3, weight_shape, k, g->out_features, g->in_features,
                                    g->hidden);
    f[count++] = (field){"x", &c->x, 2, {n, g->in_features}, true};
    f[count++] = (field){"dx", &c->dx, 2, {n, g->in_features}, true};
    f[count++] = (field){"y", &c->y, 2, {n, g->out_features}, true};
    f[count++] = (field){"dy", &c->dy, 2, {n, g->out_features}, true};
    f[count++] = (field){"pi", &c->pi, 2, {n, k}, true};
    if (!load_case("linear", c->name, f, count)) {
        return false;
    }
    c->weights = (dynconv_linear_weights){w.weight, w.bias, w.fc1_weight, w.fc1_bias,
                                          w.fc2_weight, w.fc2_bias};
    c->dweights = (dynconv_linear_weights){dw.weight, dw.bias, dw.fc1_weight, dw.fc1_bias,
                                           dw.fc2_weight, dw.fc2_bias};
    return true;
}

bool golden_load(void)
{
    bool ok = true;
    for (size_t i = 0; i < golden_conv2d_case_count; ++i) {
        ok = load_conv2d(&golden_conv2d_cases[i]) && ok;
    }
    for (size_t i = 0; i < golden_linear_case_count; ++i) {
        ok = load_linear(&golden_linear_cases[i]) && ok;
    }
    return ok;
}
