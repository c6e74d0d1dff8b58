/* NumPy .npy: a magic string, a version, a header that is a Python dict literal, then the raw
 * array. Only what numpy itself writes for a C-ordered little-endian float32 array is accepted;
 * the header is parsed by a strict little tokenizer (it is a Python literal, not JSON). */
#include "dcio_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

typedef struct cursor {
    const char *p, *end;
} cursor;

static void skip_space(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) {
        c->p++;
    }
}

static bool accept(cursor *c, char ch) {
    skip_space(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes (numpy never writes any in these fields). */
static bool read_string(cursor *c, char *buf, size_t size) {
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) {
        return false;
    }
    const char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (*c->p == '\\' || n + 1 >= size) {
            return false;
        }
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end) {
        return false;
    }
    c->p++;
    buf[n] = '\0';
    return true;
}

static bool read_word(cursor *c, const char *word) {
    skip_space(c);
    const size_t n = strlen(word);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, word, n) == 0) {
        c->p += n;
        return true;
    }
    return false;
}

static bool read_shape(cursor *c, dcio_npy *out, dcio_error *err) {
    if (!accept(c, '(')) {
        dcio_fail(err, "'shape' is not a tuple");
        return false;
    }
    out->rank = 0;
    for (;;) {
        if (accept(c, ')')) {
            return true;
        }
        if (out->rank > 0 && !accept(c, ',')) {
            dcio_fail(err, "'shape' is not a tuple of integers");
            return false;
        }
        if (accept(c, ')')) {
            return out->rank == 1 || (dcio_fail(err, "'shape' has a stray comma"), false);
        }
        skip_space(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') {
            dcio_fail(err, "'shape' is not a tuple of integers >= 0");
            return false;
        }
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) {
                dcio_fail(err, "'shape' has a dimension beyond int64");
                return false;
            }
            v = v * 10 + (*c->p++ - '0');
        }
        if (out->rank == DCIO_MAX_RANK) {
            dcio_fail(err, "'shape' has more than %d dimensions", DCIO_MAX_RANK);
            return false;
        }
        out->shape[out->rank++] = v;
    }
}

static bool parse_header(const char *text, size_t len, dcio_npy *out, dcio_error *err) {
    cursor c = {text, text + len};
    bool have_descr = false, have_order = false, have_shape = false;
    if (!accept(&c, '{')) {
        dcio_fail(err, "the header is not a Python dict");
        return false;
    }
    for (;;) {
        if (accept(&c, '}')) {
            break;
        }
        char key[32], value[32];
        if (!read_string(&c, key, sizeof key) || !accept(&c, ':')) {
            dcio_fail(err, "the header dict is malformed");
            return false;
        }
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (!read_string(&c, value, sizeof value)) {
                dcio_fail(err, "'descr' is not a simple dtype string (structured array?)");
                return false;
            }
            if (strcmp(value, "<f4") != 0) {
                dcio_fail(err, "dtype '%s' is not supported; expected '<f4' (little-endian "
                               "float32): save x.astype('<f4')", value);
                return false;
            }
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (read_word(&c, "True")) {
                dcio_fail(err, "Fortran-ordered arrays are not supported: save "
                               "numpy.ascontiguousarray(x)");
                return false;
            }
            if (!read_word(&c, "False")) {
                dcio_fail(err, "'fortran_order' is neither True nor False");
                return false;
            }
            have_order = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (!read_shape(&c, out, err)) {
                return false;
            }
            have_shape = true;
        } else {
            dcio_fail(err, "unexpected or repeated key '%s' in the header", key);
            return false;
        }
        if (!accept(&c, ',')) {
            if (!accept(&c, '}')) {
                dcio_fail(err, "the header dict is malformed");
                return false;
            }
            break;
        }
    }
    skip_space(&c);
    if (c.p != c.end) {
        dcio_fail(err, "unexpected characters after the header dict");
        return false;
    }
    if (!have_descr || !have_order || !have_shape) {
        dcio_fail(err, "the header lacks '%s'",
                  !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
        return false;
    }
    return true;
}

bool dcio_npy_parse(const void *buffer, size_t size, dcio_npy *out, dcio_error *err) {
    const unsigned char *buf = buffer;
    if (buffer == NULL || size < 10 || memcmp(buf, magic, sizeof magic) != 0) {
        dcio_fail(err, "not a .npy file (no \\x93NUMPY magic)");
        return false;
    }
    size_t header_len, start;
    if (buf[6] == 1 && buf[7] == 0) {
        header_len = dcio_le16(buf + 8);
        start = 10;
    } else if (buf[6] == 2 && buf[7] == 0 && size >= 12) {
        header_len = dcio_le32(buf + 8);
        start = 12;
    } else {
        dcio_fail(err, ".npy format version %u.%u is not supported (1.0 and 2.0 are)", buf[6],
                  buf[7]);
        return false;
    }
    if (header_len > size - start) {
        dcio_fail(err, "header length %zu goes beyond the end of the file (%zu bytes)",
                  header_len, size);
        return false;
    }
    dcio_npy parsed;
    memset(&parsed, 0, sizeof parsed);
    if (!parse_header((const char *)buf + start, header_len, &parsed, err)) {
        return false;
    }
    size_t numel = 1, bytes;
    for (int i = 0; i < parsed.rank; ++i) {
        if ((uint64_t)parsed.shape[i] > SIZE_MAX ||
            !dcio_mul(numel, (size_t)parsed.shape[i], &numel)) {
            dcio_fail(err, "the element count of the shape overflows");
            return false;
        }
    }
    if (!dcio_mul(numel, 4, &bytes)) {
        dcio_fail(err, "the byte count of the shape overflows");
        return false;
    }
    const size_t data_len = size - start - header_len;
    if (data_len != bytes) {
        dcio_fail(err, "the shape needs %zu bytes of data but the file has %zu%s", bytes,
                  data_len, data_len < bytes ? " (truncated)" : "");
        return false;
    }
    parsed.numel = numel;
    parsed.data = buf + start + header_len;
    *out = parsed;
    return true;
}

void dcio_npy_to_f32(const dcio_npy *npy, float *out) {
    for (size_t i = 0; i < npy->numel; ++i) {
        out[i] = dcio_f32_from_bits(dcio_le32(npy->data + 4 * i));
    }
}

size_t dcio_npy_header(const int64_t *shape, int rank, char *buf, size_t buf_size) {
    if (rank < 0 || rank > DCIO_MAX_RANK || buf_size < 12) {
        return 0;
    }
    char dict[DCIO_NPY_MAX_HEADER];
    int at = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < rank; ++i) {
        if (shape[i] < 0) {
            return 0;
        }
        at += snprintf(dict + at, sizeof dict - (size_t)at, "%s%lld", i > 0 ? ", " : "",
                       (long long)shape[i]);
    }
    at += snprintf(dict + at, sizeof dict - (size_t)at, "%s), }", rank == 1 ? "," : "");
    /* Pad with spaces and end with '\n' so that the data starts at a multiple of 64 bytes. */
    const size_t prefix = 10, used = prefix + (size_t)at + 1;
    const size_t total = (used + 63) / 64 * 64;
    if (total > buf_size || total - prefix > 65535) {
        return 0;
    }
    memcpy(buf, magic, sizeof magic);
    buf[6] = 1;
    buf[7] = 0;
    buf[8] = (char)((total - prefix) & 0xFF);
    buf[9] = (char)((total - prefix) >> 8);
    memcpy(buf + prefix, dict, (size_t)at);
    memset(buf + prefix + at, ' ', total - used);
    buf[total - 1] = '\n';
    return total;
}

bool dcio_npy_write_pending(const char *path, const int64_t *shape, int rank, const float *data,
                            dcio_pending *out, dcio_error *err) {
    char header[DCIO_NPY_MAX_HEADER];
    const size_t header_len = dcio_npy_header(shape, rank, header, sizeof header);
    size_t numel = 1, bytes;
    bool ok = header_len > 0;
    for (int i = 0; ok && i < rank; ++i) {
        ok = dcio_mul(numel, (size_t)shape[i], &numel);
    }
    if (!ok || !dcio_mul(numel, sizeof(float), &bytes)) {
        dcio_fail(err, "%s: invalid array shape for a .npy file", path);
        return false;
    }
    return dcio_pending_write(path, header, header_len, data, bytes, out, err);
}
