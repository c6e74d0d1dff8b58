/* safetensors reader and writer. The JSON header is parsed by jansson (integers are int64, so
 * offsets beyond 2^53 are exact); everything the header claims is then checked against the
 * buffer before any tensor byte is touched. */
#include "dcio_internal.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct dtype_info {
    const char *name;
    size_t size;
    dcio_dtype dtype;
} dtype_info;

/* Every dtype of the format; only the float ones convert to float32. */
static const dtype_info dtypes[] = {
    {"F32", 4, DCIO_DTYPE_F32},          {"F16", 2, DCIO_DTYPE_F16},
    {"BF16", 2, DCIO_DTYPE_BF16},        {"F64", 8, DCIO_DTYPE_F64},
    {"I64", 8, DCIO_DTYPE_UNSUPPORTED},  {"I32", 4, DCIO_DTYPE_UNSUPPORTED},
    {"I16", 2, DCIO_DTYPE_UNSUPPORTED},  {"I8", 1, DCIO_DTYPE_UNSUPPORTED},
    {"U64", 8, DCIO_DTYPE_UNSUPPORTED},  {"U32", 4, DCIO_DTYPE_UNSUPPORTED},
    {"U16", 2, DCIO_DTYPE_UNSUPPORTED},  {"U8", 1, DCIO_DTYPE_UNSUPPORTED},
    {"BOOL", 1, DCIO_DTYPE_UNSUPPORTED}, {"F8_E4M3", 1, DCIO_DTYPE_UNSUPPORTED},
    {"F8_E5M2", 1, DCIO_DTYPE_UNSUPPORTED},
};

static const dtype_info *find_dtype(const char *name) {
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; ++i) {
        if (strcmp(dtypes[i].name, name) == 0) {
            return &dtypes[i];
        }
    }
    return NULL;
}

void dcio_st_free(dcio_safetensors *st) {
    if (st == NULL) {
        return;
    }
    for (size_t i = 0; i < st->count; ++i) {
        free(st->tensors[i].name);
    }
    for (size_t i = 0; i < st->meta_count; ++i) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st);
}

static bool parse_metadata(json_t *meta, dcio_safetensors *st, dcio_error *err) {
    if (!json_is_object(meta)) {
        dcio_fail(err, "\"__metadata__\" must be an object of strings");
        return false;
    }
    const size_t n = json_object_size(meta);
    st->meta_keys = calloc(n > 0 ? n : 1, sizeof *st->meta_keys);
    st->meta_values = calloc(n > 0 ? n : 1, sizeof *st->meta_values);
    if (st->meta_keys == NULL || st->meta_values == NULL) {
        dcio_fail(err, "out of memory");
        return false;
    }
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value)) {
            dcio_fail(err, "\"__metadata__\" entry \"%s\" is not a string", key);
            return false;
        }
        st->meta_keys[st->meta_count] = dcio_strdup(key);
        st->meta_values[st->meta_count] = dcio_strdup(json_string_value(value));
        st->meta_count++;
        if (st->meta_keys[st->meta_count - 1] == NULL ||
            st->meta_values[st->meta_count - 1] == NULL) {
            dcio_fail(err, "out of memory");
            return false;
        }
    }
    return true;
}

/* Reads a non-negative JSON integer that fits in size_t. */
static bool json_size(json_t *v, size_t *out) {
    if (!json_is_integer(v)) {
        return false;
    }
    const json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > SIZE_MAX) {
        return false;
    }
    *out = (size_t)i;
    return true;
}

static bool parse_tensor(const char *name, json_t *desc, const unsigned char *data,
                         size_t data_len, dcio_st_tensor *t, dcio_error *err) {
    if (name[0] == '\0') {
        dcio_fail(err, "a tensor has an empty name");
        return false;
    }
    if (!json_is_object(desc)) {
        dcio_fail(err, "tensor '%s': description is not an object", name);
        return false;
    }
    const char *key;
    json_t *value;
    json_object_foreach(desc, key, value) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0) {
            dcio_fail(err, "tensor '%s': unknown field \"%s\"", name, key);
            return false;
        }
    }
    json_t *dtype = json_object_get(desc, "dtype");
    json_t *shape = json_object_get(desc, "shape");
    json_t *offsets = json_object_get(desc, "data_offsets");
    if (dtype == NULL || shape == NULL || offsets == NULL) {
        dcio_fail(err, "tensor '%s': missing \"%s\"", name,
                  dtype == NULL ? "dtype" : shape == NULL ? "shape" : "data_offsets");
        return false;
    }
    if (!json_is_string(dtype)) {
        dcio_fail(err, "tensor '%s': \"dtype\" is not a string", name);
        return false;
    }
    const dtype_info *info = find_dtype(json_string_value(dtype));
    if (info == NULL) {
        dcio_fail(err, "tensor '%s': unknown dtype \"%.32s\"", name, json_string_value(dtype));
        return false;
    }
    if (!json_is_array(shape)) {
        dcio_fail(err, "tensor '%s': \"shape\" is not an array", name);
        return false;
    }
    const size_t rank = json_array_size(shape);
    if (rank > DCIO_MAX_RANK) {
        dcio_fail(err, "tensor '%s': rank %zu exceeds the supported %d", name, rank,
                  DCIO_MAX_RANK);
        return false;
    }
    size_t numel = 1;
    for (size_t i = 0; i < rank; ++i) {
        size_t d;
        json_t *dim = json_array_get(shape, i);
        if (!json_size(dim, &d) || d > (size_t)INT64_MAX) {
            dcio_fail(err, "tensor '%s': shape[%zu] is not an integer >= 0", name, i);
            return false;
        }
        if (!dcio_mul(numel, d, &numel)) {
            dcio_fail(err, "tensor '%s': the element count of its shape overflows", name);
            return false;
        }
        t->shape[i] = (int64_t)d;
    }
    size_t bytes;
    if (!dcio_mul(numel, info->size, &bytes)) {
        dcio_fail(err, "tensor '%s': the byte count of its shape overflows", name);
        return false;
    }
    size_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        !json_size(json_array_get(offsets, 0), &begin) ||
        !json_size(json_array_get(offsets, 1), &end)) {
        dcio_fail(err, "tensor '%s': \"data_offsets\" must be [begin, end], integers >= 0",
                  name);
        return false;
    }
    if (begin > end) {
        dcio_fail(err, "tensor '%s': data_offsets [%zu, %zu) end before they begin", name, begin,
                  end);
        return false;
    }
    if (end > data_len) {
        dcio_fail(err,
                  "tensor '%s': data_offsets [%zu, %zu) go beyond the data section of %zu "
                  "bytes (truncated file?)",
                  name, begin, end, data_len);
        return false;
    }
    if (end - begin != bytes) {
        dcio_fail(err,
                  "tensor '%s': shape holds %zu %s elements = %zu bytes but data_offsets "
                  "[%zu, %zu) span %zu bytes",
                  name, numel, info->name, bytes, begin, end, end - begin);
        return false;
    }
    t->name = dcio_strdup(name);
    if (t->name == NULL) {
        dcio_fail(err, "out of memory");
        return false;
    }
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", info->name);
    t->dtype = info->dtype;
    t->rank = (int)rank;
    t->numel = numel;
    t->begin = begin;
    t->end = end;
    t->data = data + begin;
    return true;
}

static int by_range(const void *a, const void *b) {
    const dcio_st_tensor *x = *(const dcio_st_tensor *const *)a;
    const dcio_st_tensor *y = *(const dcio_st_tensor *const *)b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    return (x->end > y->end) - (x->end < y->end);
}

/* The ranges must tile the data section: no overlap, no gap, nothing left over. */
static bool check_layout(const dcio_safetensors *st, size_t data_len, dcio_error *err) {
    const dcio_st_tensor **order = malloc((st->count > 0 ? st->count : 1) * sizeof *order);
    if (order == NULL) {
        dcio_fail(err, "out of memory");
        return false;
    }
    for (size_t i = 0; i < st->count; ++i) {
        order[i] = &st->tensors[i];
    }
    qsort(order, st->count, sizeof *order, by_range);
    size_t expected = 0;
    const dcio_st_tensor *prev = NULL;
    bool ok = true;
    for (size_t i = 0; i < st->count && ok; ++i) {
        const dcio_st_tensor *t = order[i];
        if (t->begin < expected) {
            dcio_fail(err, "tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) overlap", prev->name,
                      prev->begin, prev->end, t->name, t->begin, t->end);
            ok = false;
        } else if (t->begin > expected) {
            dcio_fail(err, "bytes [%zu, %zu) of the data section belong to no tensor", expected,
                      t->begin);
            ok = false;
        } else {
            expected = t->end;
            prev = t;
        }
    }
    if (ok && expected != data_len) {
        dcio_fail(err, "the data section has %zu bytes but the tensors cover only %zu", data_len,
                  expected);
        ok = false;
    }
    free(order);
    return ok;
}

bool dcio_st_parse(const void *buffer, size_t size, dcio_safetensors **out, dcio_error *err) {
    const unsigned char *buf = buffer;
    if (buffer == NULL || size < 8) {
        dcio_fail(err, "too short for a safetensors file (%zu bytes; the header length alone "
                       "takes 8)", size);
        return false;
    }
    const uint64_t header_len = dcio_le64(buf);
    if (header_len > size - 8) {
        dcio_fail(err, "header length %" PRIu64 " goes beyond the end of the file (%zu bytes)",
                  header_len, size);
        return false;
    }
    if (header_len > DCIO_ST_MAX_HEADER) {
        dcio_fail(err, "header length %" PRIu64 " exceeds the limit of %zu bytes", header_len,
                  DCIO_ST_MAX_HEADER);
        return false;
    }
    if (header_len < 2 || buf[8] != '{') {
        dcio_fail(err, "the header is not a JSON object (it must start with '{')");
        return false;
    }
    json_error_t jerr;
    /* jansson rejects invalid UTF-8 and NUL characters, and here duplicate keys. */
    json_t *root = json_loadb((const char *)buf + 8, (size_t)header_len, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (root == NULL) {
        dcio_fail(err, "the header is not valid JSON: %s (at byte %d of the header)", jerr.text,
                  jerr.position);
        return false;
    }
    if (!json_is_object(root)) {
        dcio_fail(err, "the header is not a JSON object");
        json_decref(root);
        return false;
    }
    const unsigned char *data = buf + 8 + header_len;
    const size_t data_len = size - 8 - (size_t)header_len;

    dcio_safetensors *st = calloc(1, sizeof *st);
    const size_t n = json_object_size(root);
    if (st == NULL || (st->tensors = calloc(n > 0 ? n : 1, sizeof *st->tensors)) == NULL) {
        dcio_fail(err, "out of memory");
        free(st);
        json_decref(root);
        return false;
    }
    bool ok = true;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            ok = st->meta_keys == NULL && parse_metadata(value, st, err);
        } else {
            ok = parse_tensor(key, value, data, data_len, &st->tensors[st->count], err);
            if (ok) {
                st->count++;
            }
        }
        if (!ok) {
            break;
        }
    }
    json_decref(root);
    if (ok) {
        ok = check_layout(st, data_len, err);
    }
    if (!ok) {
        dcio_st_free(st);
        return false;
    }
    *out = st;
    return true;
}

const dcio_st_tensor *dcio_st_find(const dcio_safetensors *st, const char *name) {
    for (size_t i = 0; i < st->count; ++i) {
        if (strcmp(st->tensors[i].name, name) == 0) {
            return &st->tensors[i];
        }
    }
    return NULL;
}

const char *dcio_st_metadata(const dcio_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->meta_count; ++i) {
        if (strcmp(st->meta_keys[i], key) == 0) {
            return st->meta_values[i];
        }
    }
    return NULL;
}

/* IEEE binary16 -> binary32, exactly (every half is representable as a float). */
static float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t mant = h & 0x3FFu;
    if (exp == 0x1F) {
        return dcio_f32_from_bits(sign | 0x7F800000u | (mant << 13));
    }
    if (exp != 0) {
        return dcio_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    }
    /* zero or subnormal: mant * 2^-24, exact in float */
    const float v = ldexpf((float)mant, -24);
    return sign != 0 ? -v : v;
}

bool dcio_st_tensor_to_f32(const dcio_st_tensor *t, float *out, dcio_error *err) {
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case DCIO_DTYPE_F32:
        for (size_t i = 0; i < t->numel; ++i) {
            out[i] = dcio_f32_from_bits(dcio_le32(p + 4 * i));
        }
        return true;
    case DCIO_DTYPE_F16:
        for (size_t i = 0; i < t->numel; ++i) {
            out[i] = half_to_float(dcio_le16(p + 2 * i));
        }
        return true;
    case DCIO_DTYPE_BF16:
        for (size_t i = 0; i < t->numel; ++i) {
            out[i] = dcio_f32_from_bits((uint32_t)dcio_le16(p + 2 * i) << 16);
        }
        return true;
    case DCIO_DTYPE_F64:
        /* Check everything first: on error, out stays untouched. */
        for (size_t i = 0; i < t->numel; ++i) {
            const uint64_t bits = dcio_le64(p + 8 * i);
            double d;
            memcpy(&d, &bits, sizeof d);
            if (isfinite(d) && fabs(d) > (double)FLT_MAX) {
                dcio_fail(err, "tensor '%s': F64 value %g at index %zu is outside the float32 "
                               "range", t->name, d, i);
                return false;
            }
        }
        for (size_t i = 0; i < t->numel; ++i) {
            const uint64_t bits = dcio_le64(p + 8 * i);
            double d;
            memcpy(&d, &bits, sizeof d);
            out[i] = (float)d;
        }
        return true;
    case DCIO_DTYPE_UNSUPPORTED:
        break;
    }
    dcio_fail(err, "tensor '%s' has dtype %s; only F32 (or F16, BF16, F64, converted to F32) "
                   "can be used", t->name, t->dtype_name);
    return false;
}

bool dcio_st_serialize(const dcio_st_entry *entries, size_t count, const char *const *meta_keys,
                       const char *const *meta_values, size_t meta_count, unsigned char **out,
                       size_t *out_size, dcio_error *err) {
    json_t *root = json_object();
    bool ok = root != NULL;
    size_t offset = 0;
    if (ok && meta_count > 0) {
        json_t *meta = json_object();
        ok = meta != NULL && json_object_set_new(root, "__metadata__", meta) == 0;
        for (size_t i = 0; ok && i < meta_count; ++i) {
            ok = json_object_set_new(meta, meta_keys[i], json_string(meta_values[i])) == 0;
        }
    }
    for (size_t i = 0; ok && i < count; ++i) {
        const dcio_st_entry *e = &entries[i];
        size_t numel = 1, bytes;
        json_t *desc = json_object(), *shape = json_array(), *offs = json_array();
        ok = desc != NULL && shape != NULL && offs != NULL && e->rank >= 0 &&
             e->rank <= DCIO_MAX_RANK && strcmp(e->name, "__metadata__") != 0 &&
             json_object_get(root, e->name) == NULL;
        for (int d = 0; ok && d < e->rank; ++d) {
            ok = e->shape[d] >= 0 && dcio_mul(numel, (size_t)e->shape[d], &numel) &&
                 json_array_append_new(shape, json_integer(e->shape[d])) == 0;
        }
        ok = ok && dcio_mul(numel, 4, &bytes) && offset + bytes >= offset &&
             json_array_append_new(offs, json_integer((json_int_t)offset)) == 0 &&
             json_array_append_new(offs, json_integer((json_int_t)(offset + bytes))) == 0 &&
             json_object_set_new(desc, "dtype", json_string("F32")) == 0 &&
             json_object_set(desc, "shape", shape) == 0 &&
             json_object_set(desc, "data_offsets", offs) == 0 &&
             json_object_set(root, e->name, desc) == 0;
        json_decref(shape);
        json_decref(offs);
        json_decref(desc);
        offset += ok ? bytes : 0;
    }
    char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (text == NULL) {
        dcio_fail(err, "cannot build the safetensors header (bad entry or out of memory)");
        return false;
    }
    /* Pad the header with spaces to a multiple of 8 so the data section stays aligned. */
    const size_t text_len = strlen(text);
    const size_t header_len = (text_len + 7) / 8 * 8;
    const size_t total = 8 + header_len + offset;
    unsigned char *buf = total >= offset ? malloc(total) : NULL;
    if (buf == NULL) {
        free(text);
        dcio_fail(err, "out of memory building a safetensors image of %zu bytes", total);
        return false;
    }
    for (int b = 0; b < 8; ++b) {
        buf[b] = (unsigned char)((uint64_t)header_len >> (8 * b));
    }
    memcpy(buf + 8, text, text_len);
    memset(buf + 8 + text_len, ' ', header_len - text_len);
    free(text);
    size_t at = 8 + header_len;
    for (size_t i = 0; i < count; ++i) {
        size_t numel = 1;
        for (int d = 0; d < entries[i].rank; ++d) {
            numel *= (size_t)entries[i].shape[d];
        }
        if (numel > 0) {
            memcpy(buf + at, entries[i].data, numel * 4);
        }
        at += numel * 4;
    }
    *out = buf;
    *out_size = total;
    return true;
}
