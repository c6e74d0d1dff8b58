/* Fuzz target: the safetensors reader (dcio_st_parse), the dynamic-layer loader on top of it
 * (dcio_layer_load) and the library fed with what they produce, on arbitrary bytes.
 * Beyond "never crash, never read outside the buffer" (ASan), it checks the reader's promises:
 * on failure a message and untouched outputs; on success tensors whose byte ranges match their
 * shape and dtype, lie inside the data section, do not overlap and cover it exactly; F32 data
 * that survives serialise -> parse unchanged; and a loaded layer that libdynconv either accepts
 * and runs, or refuses with a status. */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

#include "dcio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Layers whose forward would cost more than this many multiply-adds are only created. */
#define MAX_WORK ((size_t)1 << 22)

static void die(const char *what) {
    fprintf(stderr, "fuzz_safetensors: %s\n", what);
    abort();
}

static size_t dtype_size(dcio_dtype d) {
    switch (d) {
    case DCIO_DTYPE_F32: return 4;
    case DCIO_DTYPE_F16: return 2;
    case DCIO_DTYPE_BF16: return 2;
    case DCIO_DTYPE_F64: return 8;
    default: return 0;
    }
}

static int by_begin(const void *a, const void *b) {
    const dcio_st_tensor *x = *(const dcio_st_tensor *const *)a;
    const dcio_st_tensor *y = *(const dcio_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static void check_tensors(const dcio_safetensors *st, const unsigned char *buf, size_t size) {
    const uint64_t header_len = (uint64_t)buf[0] | (uint64_t)buf[1] << 8 |
                                (uint64_t)buf[2] << 16 | (uint64_t)buf[3] << 24 |
                                (uint64_t)buf[4] << 32 | (uint64_t)buf[5] << 40 |
                                (uint64_t)buf[6] << 48 | (uint64_t)buf[7] << 56;
    const unsigned char *section = buf + 8 + header_len;
    const size_t section_size = size - 8 - (size_t)header_len;
    const dcio_st_tensor **sorted = malloc((st->count ? st->count : 1) * sizeof *sorted);
    if (sorted == NULL) {
        die("out of memory");
    }
    for (size_t i = 0; i < st->count; ++i) {
        const dcio_st_tensor *t = &st->tensors[i];
        if (t->rank < 0 || t->rank > DCIO_MAX_RANK) {
            die("rank out of range");
        }
        size_t numel = 1;
        for (int d = 0; d < t->rank; ++d) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (size_t)t->shape[d], &numel)) {
                die("a negative or overflowing shape was accepted");
            }
        }
        if (numel != t->numel) {
            die("numel is not the product of the shape");
        }
        if (t->begin > t->end || t->end > section_size || t->data != section + t->begin) {
            die("a tensor's bytes are not inside the data section");
        }
        const size_t es = dtype_size(t->dtype);
        if (es != 0 && (t->end - t->begin) / es != numel) {
            die("a tensor's byte length does not match its shape and dtype");
        }
        if (dcio_st_find(st, t->name) != t) {
            die("dcio_st_find does not find a tensor by its name");
        }
        sorted[i] = t;
    }
    qsort(sorted, st->count, sizeof *sorted, by_begin);
    size_t at = 0;
    for (size_t i = 0; i < st->count; ++i) {
        if (sorted[i]->begin != at) {
            die("the tensors overlap or leave a gap in the data section");
        }
        at = sorted[i]->end;
    }
    if (at != section_size) {
        die("the tensors do not cover the data section");
    }
    free(sorted);
    for (size_t i = 0; i < st->meta_count; ++i) {
        if (dcio_st_metadata(st, st->meta_keys[i]) == NULL) {
            die("dcio_st_metadata does not find a key the file has");
        }
    }
}

/* F32 tensors and the metadata, written again and read back, are the same. */
static void check_round_trip(const dcio_safetensors *st) {
    dcio_st_entry *entries = calloc(st->count ? st->count : 1, sizeof *entries);
    float **values = calloc(st->count ? st->count : 1, sizeof *values);
    size_t n = 0;
    dcio_error err;
    if (entries == NULL || values == NULL) {
        die("out of memory");
    }
    for (size_t i = 0; i < st->count; ++i) {
        const dcio_st_tensor *t = &st->tensors[i];
        if (t->dtype != DCIO_DTYPE_F32) {
            continue;
        }
        values[n] = malloc(t->numel ? t->numel * sizeof(float) : 1);
        if (values[n] == NULL || !dcio_st_tensor_to_f32(t, values[n], &err)) {
            die("an F32 tensor cannot be converted");
        }
        entries[n] = (dcio_st_entry){t->name, t->rank, t->shape, values[n]};
        ++n;
    }
    unsigned char *image = NULL;
    size_t image_size = 0;
    if (dcio_st_serialize(entries, n, (const char *const *)st->meta_keys,
                          (const char *const *)st->meta_values, st->meta_count, &image,
                          &image_size, &err)) {
        dcio_safetensors *again = NULL;
        if (!dcio_st_parse(image, image_size, &again, &err)) {
            fprintf(stderr, "%s\n", err.message);
            die("a serialised image does not parse");
        }
        if (again->count != n || again->meta_count != st->meta_count) {
            die("the round trip changed the number of tensors or metadata");
        }
        for (size_t i = 0; i < n; ++i) {
            const dcio_st_tensor *t = dcio_st_find(again, entries[i].name);
            if (t == NULL || t->rank != entries[i].rank ||
                memcmp(t->shape, entries[i].shape, (size_t)t->rank * sizeof(int64_t)) != 0 ||
                memcmp(t->data, values[i], t->numel * sizeof(float)) != 0) {
                die("the round trip changed a tensor");
            }
        }
        for (size_t i = 0; i < st->meta_count; ++i) {
            const char *v = dcio_st_metadata(again, st->meta_keys[i]);
            if (v == NULL || strcmp(v, st->meta_values[i]) != 0) {
                die("the round trip changed the metadata");
            }
        }
        dcio_st_free(again);
        free(image);
    }
    for (size_t i = 0; i < n; ++i) {
        free(values[i]);
    }
    free(values);
    free(entries);
}

/* One load attempt: on failure the output must be untouched and a message left. */
static bool load_checked(const dcio_safetensors *st, const dcio_layer_options *o,
                         dcio_layer *layer) {
    dcio_layer untouched;
    memset(layer, 0x5a, sizeof *layer);
    untouched = *layer;
    dcio_error err;
    err.message[0] = '\0';
    if (dcio_layer_load(st, o, layer, &err)) {
        return true;
    }
    if (memcmp(layer, &untouched, sizeof *layer) != 0) {
        die("a failed layer load wrote its output");
    }
    if (err.message[0] == '\0') {
        die("a failed layer load left no message");
    }
    return false;
}

/* What dcio_layer_load accepts goes to the library; small layers also run once. The loader
 * has no defaults, so a file without metadata is tried again with the geometry given (as on
 * the command line), which keeps such inputs reaching the library. */
static void check_layer(const dcio_safetensors *st) {
    static const dcio_layer_options given = {NULL, true, true, true, true, true,
                                             {1, 1},  {0, 0}, {1, 1}, 1, 1.0f};
    static const dcio_layer_options given_linear = {NULL, false, false, false, false, true,
                                                    {0, 0}, {0, 0}, {0, 0}, 0, 1.0f};
    dcio_layer layer;
    if (!load_checked(st, NULL, &layer) && !load_checked(st, &given, &layer) &&
        !load_checked(st, &given_linear, &layer)) {
        return;
    }
    if (layer.linear) {
        const dynconv_linear_weights lw = dcio_layer_linear_weights(&layer);
        dynconv_linear *lin = NULL;
        if (dynconv_linear_create(&layer.linear_geometry, &lw, layer.temperature,
                                  DYNCONV_FLAG_BORROW_WEIGHTS, &lin) != DYNCONV_OK &&
            (lin != NULL || dynconv_last_error_message()[0] == '\0')) {
            die("a failed create wrote *out or left no message");
        }
        dynconv_linear_destroy(lin);
        dcio_layer_free(&layer);
        return;
    }
    const dynconv_conv2d_geometry *g = &layer.geometry;
    const dynconv_conv2d_weights w = dcio_layer_weights(&layer);
    dynconv_conv2d *conv = NULL;
    const dynconv_status st_create =
        dynconv_conv2d_create(g, &w, layer.temperature, DYNCONV_FLAG_BORROW_WEIGHTS, &conv);
    if (st_create != DYNCONV_OK) {
        if (conv != NULL || dynconv_last_error_message()[0] == '\0') {
            die("a failed create wrote *out or left no message");
        }
        dcio_layer_free(&layer);
        return;
    }
    /* The smallest input the kernel fits: its dilated extent minus the padding. */
    const int64_t span_h = g->dilation_h * (g->kernel_h - 1) + 1 - 2 * g->pad_h;
    const int64_t span_w = g->dilation_w * (g->kernel_w - 1) + 1 - 2 * g->pad_w;
    const int64_t h = span_h > 1 ? span_h : 1, w_ = span_w > 1 ? span_w : 1;
    int64_t oh = 0, ow = 0;
    size_t ws = 0;
    const size_t in_count = (size_t)g->in_channels * (size_t)h * (size_t)w_;
    const size_t depth = (size_t)(g->in_channels / g->groups * g->kernel_h * g->kernel_w);
    if (h <= 4096 && w_ <= 4096 && in_count <= ((size_t)1 << 20) &&
        dynconv_conv2d_reshape(conv, 1, h, w_, &oh, &ow, &ws) == DYNCONV_OK &&
        (size_t)g->out_channels * (size_t)(oh * ow) * depth <= MAX_WORK &&
        (size_t)(g->out_channels * oh * ow) <= ((size_t)1 << 20)) {
        float *x = calloc(in_count, sizeof(float));
        float *y = malloc((size_t)(g->out_channels * oh * ow) * sizeof(float));
        float *att = malloc((size_t)g->num_kernels * sizeof(float));
        if (x != NULL && y != NULL && att != NULL &&
            dynconv_conv2d_forward(conv, x, y, att, NULL, 0) != DYNCONV_OK) {
            die("forward failed on a reshaped layer");
        }
        free(x);
        free(y);
        free(att);
    }
    dynconv_conv2d_destroy(conv);
    dcio_layer_free(&layer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);
    dcio_safetensors *st = (dcio_safetensors *)(uintptr_t)0x1234;
    dcio_error err;
    err.message[0] = '\0';
    if (!dcio_st_parse(buf, size, &st, &err)) {
        if (st != (dcio_safetensors *)(uintptr_t)0x1234) {
            die("a failed parse wrote *out");
        }
        if (err.message[0] == '\0') {
            die("a failed parse left no message");
        }
        free(buf);
        return 0;
    }
    check_tensors(st, buf, size);
    check_round_trip(st);
    check_layer(st);
    dcio_st_free(st);
    free(buf);
    return 0;
}
