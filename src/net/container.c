/* The safetensors container of a network file: the rules of docs/file-format.md ("The
 * container") as python/dynconv/safetensors.py and tools/io/safetensors.c check them, plus the
 * network reader's own: every tensor F32. The tensors' data is copied (the caller's buffer is
 * only read during create). */
#include "net.h"

#include "tensor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The container's limit on the header, as the other readers have it. */
#define MAX_HEADER ((uint64_t)100 * 1000 * 1000)

static const struct {
    const char *name;
    size_t size;
} DTYPES[] = {{"F32", 4}, {"F16", 2},  {"BF16", 2}, {"F64", 8},  {"I64", 8},
              {"I32", 4}, {"I16", 2},  {"I8", 1},   {"U64", 8},  {"U32", 4},
              {"U16", 2}, {"U8", 1},   {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};

typedef struct range {
    size_t begin, end;
    const char *name;
} range;

static int by_range(const void *pa, const void *pb) {
    const range *a = pa, *b = pb;
    if (a->begin != b->begin) {
        return a->begin < b->begin ? -1 : 1;
    }
    if (a->end != b->end) {
        return a->end < b->end ? -1 : 1;
    }
    return strcmp(a->name, b->name);
}

static int by_name(const void *pa, const void *pb) {
    return strcmp(((const net_tensor *)pa)->name, ((const net_tensor *)pb)->name);
}

/* One tensor's description: dtype, shape, data offsets, checked against the data section. */
static dynconv_status read_tensor(const char *fn, const char *source, const char *name,
                                  const dj_value *desc, size_t body, net_tensor *t,
                                  range *r, const char **dtype_out) {
    const dj_value *dtype = dj_get(desc, "dtype"), *shape = dj_get(desc, "shape"),
                   *offsets = dj_get(desc, "data_offsets");
    if (desc->type != DJ_OBJECT || desc->length != 3 || dtype == NULL || shape == NULL ||
        offsets == NULL) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: tensor '%s': malformed description (it must have exactly "
                       "dtype, shape and data_offsets)", fn, source, name);
    }
    size_t dsize = 0;
    for (size_t i = 0; dtype->type == DJ_STRING && i < sizeof DTYPES / sizeof DTYPES[0]; ++i) {
        if (strcmp(dtype->string, DTYPES[i].name) == 0) {
            dsize = DTYPES[i].size;
            *dtype_out = DTYPES[i].name;
        }
    }
    if (dsize == 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL, "%s: %s: tensor '%s': unknown dtype %s%s%s",
                       fn, source, name, dtype->type == DJ_STRING ? "'" : "",
                       dtype->type == DJ_STRING ? dtype->string : dj_type_name(dtype),
                       dtype->type == DJ_STRING ? "'" : "");
    }
    if (shape->type != DJ_ARRAY || shape->length > NET_MAX_RANK) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: tensor '%s': bad shape (at most %d integers >= 0)", fn, source,
                       name, NET_MAX_RANK);
    }
    size_t count = 1, bytes;
    t->rank = (int)shape->length;
    for (size_t d = 0; d < shape->length; ++d) {
        const dj_value *e = &shape->items[d];
        if (e->type != DJ_INT || e->integer < 0) {
            return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                           "%s: %s: tensor '%s': bad shape (at most %d integers >= 0)", fn,
                           source, name, NET_MAX_RANK);
        }
        t->shape[d] = (size_t)e->integer;
        if (!dc_mul_size(count, t->shape[d], &count)) {
            return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                           "%s: %s: tensor '%s': the element count of its shape overflows", fn,
                           source, name);
        }
    }
    if (!dc_mul_size(count, dsize, &bytes)) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: tensor '%s': the element count of its shape overflows", fn,
                       source, name);
    }
    if (offsets->type != DJ_ARRAY || offsets->length != 2 ||
        offsets->items[0].type != DJ_INT || offsets->items[1].type != DJ_INT ||
        offsets->items[0].integer < 0 || offsets->items[1].integer < offsets->items[0].integer ||
        (uint64_t)offsets->items[1].integer > (uint64_t)body) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: tensor '%s': data_offsets outside the data section of %zu bytes "
                       "(truncated tensor data?)", fn, source, name, body);
    }
    r->begin = (size_t)offsets->items[0].integer;
    r->end = (size_t)offsets->items[1].integer;
    r->name = name;
    if (r->end - r->begin != bytes) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: tensor '%s': its shape needs %zu bytes of %s, data_offsets "
                       "give %zu", fn, source, name, bytes, *dtype_out, r->end - r->begin);
    }
    t->count = count;
    return DYNCONV_OK;
}

/* Checks that the byte ranges tile the data section (no overlap, no gap, nothing after). */
static dynconv_status check_tiling(const char *fn, const char *source, range *ranges, size_t n,
                                   size_t body) {
    qsort(ranges, n, sizeof *ranges, by_range);
    size_t expected = 0;
    for (size_t i = 0; i < n; ++i) {
        if (ranges[i].begin != expected) {
            return dc_fail(DYNCONV_ERROR_INVALID_MODEL, "%s: %s: tensor '%s' at byte %zu: %s",
                           fn, source, ranges[i].name, ranges[i].begin,
                           ranges[i].begin < expected ? "overlaps another" : "gap before it");
        }
        expected = ranges[i].end;
    }
    if (expected != body) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: %zu bytes of data belong to no tensor", fn, source,
                       body - expected);
    }
    return DYNCONV_OK;
}

static dynconv_status read_metadata(const char *fn, const char *source, const dj_value *meta,
                                    const dj_value **graph) {
    if (meta->type != DJ_OBJECT) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: __metadata__ must map strings to strings", fn, source);
    }
    for (size_t i = 0; i < meta->length; ++i) {
        if (meta->items[i].type != DJ_STRING) {
            return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                           "%s: %s: __metadata__ must map strings to strings ('%s' is %s)", fn,
                           source, meta->keys[i], dj_type_name(&meta->items[i]));
        }
    }
    *graph = dj_get(meta, "dynconv.graph");
    return DYNCONV_OK;
}

/* Everything after the JSON parse; `root` is the header object. */
static dynconv_status read_tensors(const char *fn, const char *source, const dj_value *root,
                                   const unsigned char *body, size_t body_len,
                                   dynconv_network *net, const dj_value **graph) {
    size_t n = root->length;
    const dj_value *meta = dj_get(root, "__metadata__");
    *graph = NULL;
    if (meta != NULL) {
        TRY(read_metadata(fn, source, meta, graph));
        --n;
    }
    net->tensors = calloc(n ? n : 1, sizeof *net->tensors);
    range *ranges = calloc(n ? n : 1, sizeof *ranges);
    const char **dtypes = calloc(n ? n : 1, sizeof *dtypes);
    const char **names = calloc(n ? n : 1, sizeof *names);
    dynconv_status st = DYNCONV_OK;
    if (net->tensors == NULL || ranges == NULL || dtypes == NULL || names == NULL) {
        st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: %s: cannot allocate %zu tensor entries",
                     fn, source, n);
    }
    size_t k = 0, floats = 0;
    for (size_t i = 0; st == DYNCONV_OK && i < root->length; ++i) {
        if (strcmp(root->keys[i], "__metadata__") == 0) {
            continue;
        }
        if (root->keys[i][0] == '\0') {
            st = dc_fail(DYNCONV_ERROR_INVALID_MODEL, "%s: %s: a tensor has an empty name", fn,
                         source);
            break;
        }
        net_tensor *t = &net->tensors[k];
        names[k] = root->keys[i];
        st = read_tensor(fn, source, root->keys[i], &root->items[i], body_len, t, &ranges[k],
                         &dtypes[k]);
        if (st == DYNCONV_OK && !dc_add_size(floats, t->count, &floats)) {
            st = dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: %s: tensor sizes overflow", fn,
                         source);
        }
        ++k;
    }
    if (st == DYNCONV_OK) {
        st = check_tiling(fn, source, ranges, n, body_len);
    }
    /* The network reader's own rule, after the container's (as the Python reader). */
    for (size_t i = 0; st == DYNCONV_OK && i < n; ++i) {
        if (strcmp(dtypes[i], "F32") != 0) {
            st = dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                         "%s: %s: tensor '%s' is %s: network tensors must be F32", fn, source,
                         names[i], dtypes[i]);
        }
    }
    if (st == DYNCONV_OK && floats > 0) {
        net->params = dc_aligned_alloc(floats * sizeof(float));
        if (net->params == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                         "%s: %s: cannot allocate %zu bytes of parameters", fn, source,
                         floats * sizeof(float));
        }
    }
    if (st == DYNCONV_OK) {
        /* Names and data: the tensors are in header order, as are the unsorted ranges' names
         * (read_tensor recorded them); copy each range's bytes (little-endian float32). */
        size_t at = 0, j = 0;
        for (size_t i = 0; st == DYNCONV_OK && i < root->length; ++i) {
            if (strcmp(root->keys[i], "__metadata__") == 0) {
                continue;
            }
            net_tensor *t = &net->tensors[j++];
            const dj_value *off = dj_get(&root->items[i], "data_offsets");
            t->name = malloc(strlen(root->keys[i]) + 1);
            if (t->name == NULL) {
                st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, source);
                break;
            }
            strcpy(t->name, root->keys[i]);
            t->data = net->params + at;
            if (t->count > 0) {
                memcpy(net->params + at, body + off->items[0].integer, t->count * sizeof(float));
            }
            at += t->count;
        }
        net->num_tensors = j;
    }
    free(ranges);
    free(dtypes);
    free(names);
    if (st == DYNCONV_OK) {
        qsort(net->tensors, net->num_tensors, sizeof *net->tensors, by_name);
    }
    return st;
}

dynconv_status net_read_container(const char *fn, const char *source, const unsigned char *data,
                                  size_t size, dynconv_network *net, char **graph_text,
                                  size_t *graph_len) {
    if (size < 8) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: too short for a safetensors file (%zu bytes)", fn, source, size);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) {
        n = (n << 8) | data[i];
    }
    if (n > (uint64_t)(size - 8) || n > MAX_HEADER) {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: header length %llu goes beyond the file (%zu bytes): a "
                       "truncated header, or not a safetensors file", fn, source,
                       (unsigned long long)n, size);
    }
    if (n < 2 || data[8] != '{') {
        return dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: the header is not a JSON object (it must start with '{')", fn,
                       source);
    }
    dj_value root;
    char why[256];
    bool oom = false;
    if (!dj_parse((const char *)data + 8, (size_t)n, &root, why, sizeof why, &oom)) {
        return dc_fail(oom ? DYNCONV_ERROR_OUT_OF_MEMORY : DYNCONV_ERROR_INVALID_MODEL,
                       "%s: %s: the header is not valid JSON: %s (the header starts at byte 8)",
                       fn, source, why);
    }
    const dj_value *graph = NULL;
    dynconv_status st = read_tensors(fn, source, &root, data + 8 + n, size - 8 - (size_t)n, net,
                                     &graph);
    if (st == DYNCONV_OK && graph == NULL) {
        st = dc_fail(DYNCONV_ERROR_INVALID_MODEL,
                     "%s: %s: no network graph: the metadata has no 'dynconv.graph' key (a "
                     "layer file?)", fn, source);
    }
    if (st == DYNCONV_OK) {
        *graph_len = graph->length;
        *graph_text = malloc(graph->length + 1);
        if (*graph_text == NULL) {
            st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: %s: out of memory", fn, source);
        } else {
            memcpy(*graph_text, graph->string, graph->length + 1);
        }
    }
    dj_free(&root);
    return st;
}
