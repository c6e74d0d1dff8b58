/* The benchmark workload (bench/layers.txt): one convolution layer per line. The grammar is
 * written at the top of bench/layers.txt and in dcio.h; bench/workload.py reads the same
 * grammar for the Python scripts, with the same messages. */
#include "dcio_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MALFORMED                                                                               \
    "expected 'name in out kernel stride pad groups size' with positive sizes (channels <= "   \
    "%d, kernel/stride/pad <= %d, size <= %d), groups dividing both channel counts and the "   \
    "kernel fitting the padded input"

enum { FIELDS = 8 };

/* The white space between fields (what scanf skips; a line holds no '\n'). */
static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* A whole field "[+-]?[0-9]+". Values beyond any limit saturate at INT64_MAX (or its
 * negation), which every range check below refuses: no digit string can overflow. */
static bool parse_integer(const char *p, size_t len, int64_t *out) {
    size_t i = 0;
    bool negative = false;
    if (len > 0 && (p[0] == '+' || p[0] == '-')) {
        negative = p[0] == '-';
        i = 1;
    }
    if (i == len) {
        return false;
    }
    int64_t v = 0;
    for (; i < len; ++i) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        const int digit = p[i] - '0';
        v = v > (INT64_MAX - digit) / 10 ? INT64_MAX : v * 10 + digit;
    }
    *out = negative ? -v : v;
    return true;
}

/* Splits one line (without its '\n'; comments already cut) into at most FIELDS + 1 fields.
 * Returns the number of fields found, FIELDS + 1 meaning "more than FIELDS". */
static int split_fields(const char *line, size_t len, const char **field, size_t *field_len) {
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && is_space(line[i])) {
            ++i;
        }
        if (i == len) {
            break;
        }
        const size_t start = i;
        while (i < len && !is_space(line[i])) {
            ++i;
        }
        if (n == FIELDS) {
            return FIELDS + 1;
        }
        field[n] = line + start;
        field_len[n] = i - start;
        ++n;
    }
    return n;
}

/* Parses a line that is not blank. */
static bool parse_layer(const char **field, const size_t *field_len, int nfields,
                        dcio_workload_layer *l) {
    if (nfields != FIELDS || field_len[0] > DCIO_WORKLOAD_NAME_MAX) {
        return false;
    }
    int64_t v[FIELDS - 1];
    for (int i = 1; i < FIELDS; ++i) {
        if (!parse_integer(field[i], field_len[i], &v[i - 1])) {
            return false;
        }
    }
    const int64_t in = v[0], out = v[1], kernel = v[2], stride = v[3], pad = v[4],
                  groups = v[5], size = v[6];
    /* The caps keep every product a benchmark forms from the sizes far from overflow. */
    if (in <= 0 || in > DCIO_WORKLOAD_MAX_CHANNELS || out <= 0 ||
        out > DCIO_WORKLOAD_MAX_CHANNELS || kernel <= 0 || kernel > DCIO_WORKLOAD_MAX_KERNEL ||
        stride <= 0 || stride > DCIO_WORKLOAD_MAX_KERNEL || pad < 0 ||
        pad > DCIO_WORKLOAD_MAX_KERNEL || groups <= 0 || in % groups != 0 ||
        out % groups != 0 || size <= 0 || size > DCIO_WORKLOAD_MAX_SIZE ||
        size + 2 * pad < kernel) {
        return false;
    }
    memset(l, 0, sizeof *l);
    memcpy(l->name, field[0], field_len[0]);
    l->in = in;
    l->out = out;
    l->kernel = kernel;
    l->stride = stride;
    l->pad = pad;
    l->groups = groups;
    l->size = size;
    return true;
}

bool dcio_workload_parse(const void *buffer, size_t size, const char *origin,
                         dcio_workload_layer **layers, size_t *count, dcio_error *err) {
    const char *text = buffer;
    dcio_workload_layer *list = NULL;
    size_t n = 0, cap = 0;
    size_t at = 0;
    for (size_t lineno = 1; at < size; ++lineno) {
        const char *nl = memchr(text + at, '\n', size - at);
        const size_t len = nl != NULL ? (size_t)(nl - (text + at)) : size - at;
        const char *line = text + at;
        at += len + (nl != NULL ? 1 : 0);
        if (len > DCIO_WORKLOAD_LINE_MAX) {
            dcio_fail(err, "%s:%zu: line too long", origin, lineno);
            goto fail;
        }
        if (memchr(line, '\0', len) != NULL) {
            dcio_fail(err, "%s:%zu: not a text line (contains NUL bytes)", origin, lineno);
            goto fail;
        }
        const char *hash = memchr(line, '#', len);
        const char *field[FIELDS];
        size_t field_len[FIELDS];
        const int nfields = split_fields(line, hash != NULL ? (size_t)(hash - line) : len,
                                         field, field_len);
        if (nfields == 0) {
            continue; /* blank or comment */
        }
        dcio_workload_layer l;
        if (!parse_layer(field, field_len, nfields, &l)) {
            dcio_fail(err, "%s:%zu: " MALFORMED, origin, lineno, DCIO_WORKLOAD_MAX_CHANNELS,
                      DCIO_WORKLOAD_MAX_KERNEL, DCIO_WORKLOAD_MAX_SIZE);
            goto fail;
        }
        if (n == cap) {
            const size_t grown_cap = cap == 0 ? 16 : 2 * cap;
            size_t bytes;
            dcio_workload_layer *grown = NULL;
            if (dcio_mul(grown_cap, sizeof *list, &bytes)) {
                grown = realloc(list, bytes);
            }
            if (grown == NULL) {
                dcio_fail(err, "%s:%zu: out of memory for %zu layers", origin, lineno, n + 1);
                goto fail;
            }
            list = grown;
            cap = grown_cap;
        }
        list[n++] = l;
    }
    if (n == 0) {
        dcio_fail(err, "%s lists no layers", origin);
        goto fail;
    }
    *layers = list;
    *count = n;
    return true;
fail:
    free(list);
    return false;
}

bool dcio_workload_read(const char *path, dcio_workload_layer **layers, size_t *count,
                        dcio_error *err) {
    unsigned char *bytes = NULL;
    size_t size = 0;
    if (!dcio_read_file(path, DCIO_WORKLOAD_MAX_BYTES, &bytes, &size, err)) {
        return false;
    }
    const bool ok = dcio_workload_parse(bytes, size, path, layers, count, err);
    free(bytes);
    return ok;
}

dynconv_conv2d_geometry dcio_workload_geometry(const dcio_workload_layer *l, int64_t kernels) {
    const int64_t hidden = l->in / DCIO_WORKLOAD_REDUCTION;
    const dynconv_conv2d_geometry g = {
        .in_channels = l->in, .out_channels = l->out, .kernel_h = l->kernel,
        .kernel_w = l->kernel, .stride_h = l->stride, .stride_w = l->stride, .pad_h = l->pad,
        .pad_w = l->pad, .dilation_h = 1, .dilation_w = 1, .groups = l->groups,
        .num_kernels = kernels, .hidden = hidden > 0 ? hidden : 1};
    return g;
}
