/* See json.h. A recursive-descent reader over a byte range (the text need not be
 * NUL-terminated: the header of a safetensors file is not). */
#define _GNU_SOURCE /* strtod_l, newlocale: numbers in the C locale whatever setlocale says */
#include "json.h"

#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const char *text;
    size_t size, pos;
    char *error;
    size_t error_size;
    bool failed, oom;
    locale_t c_locale;        /* created at the first fractional number, freed at the end */
} reader;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static bool fail_at(reader *r, size_t offset, const char *fmt, ...) {
    if (!r->failed) {
        r->failed = true;
        int n = snprintf(r->error, r->error_size, "at byte %zu: ", offset);
        if (n >= 0 && (size_t)n < r->error_size) {
            va_list args;
            va_start(args, fmt);
            vsnprintf(r->error + n, r->error_size - (size_t)n, fmt, args);
            va_end(args);
        }
    }
    return false;
}

static bool out_of_memory(reader *r) {
    r->oom = true;
    return fail_at(r, r->pos, "out of memory");
}

static void skip_space(reader *r) {
    while (r->pos < r->size) {
        const char c = r->text[r->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        ++r->pos;
    }
}

static int peek(const reader *r) {
    return r->pos < r->size ? (unsigned char)r->text[r->pos] : -1;
}

static bool parse_value(reader *r, dj_value *v, int depth);

static bool parse_literal(reader *r, dj_value *v, const char *word, dj_type type, bool b) {
    const size_t len = strlen(word);
    if (r->size - r->pos < len || memcmp(r->text + r->pos, word, len) != 0) {
        return fail_at(r, r->pos, "invalid literal (expected '%s')", word);
    }
    r->pos += len;
    v->type = type;
    v->boolean = b;
    return true;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static bool parse_number(reader *r, dj_value *v) {
    const size_t start = r->pos;
    bool negative = false, integral = true;
    if (peek(r) == '-') {
        negative = true;
        ++r->pos;
    }
    if (peek(r) == '0') {
        ++r->pos;
    } else if (is_digit(peek(r))) {
        while (is_digit(peek(r))) {
            ++r->pos;
        }
    } else {
        return fail_at(r, start, "invalid number");
    }
    if (peek(r) == '.') {
        integral = false;
        ++r->pos;
        if (!is_digit(peek(r))) {
            return fail_at(r, start, "invalid number (no digit after the decimal point)");
        }
        while (is_digit(peek(r))) {
            ++r->pos;
        }
    }
    if (peek(r) == 'e' || peek(r) == 'E') {
        integral = false;
        ++r->pos;
        if (peek(r) == '+' || peek(r) == '-') {
            ++r->pos;
        }
        if (!is_digit(peek(r))) {
            return fail_at(r, start, "invalid number (no digit in the exponent)");
        }
        while (is_digit(peek(r))) {
            ++r->pos;
        }
    }
    const size_t len = r->pos - start;
    if (integral) {
        /* Exact: accumulate towards the sign so that INT64_MIN is representable. */
        int64_t value = 0;
        for (size_t i = start + (negative ? 1 : 0); i < r->pos; ++i) {
            const int d = r->text[i] - '0';
            if (negative ? value < (INT64_MIN + d) / 10 : value > (INT64_MAX - d) / 10) {
                return fail_at(r, start, "integer %.*s is outside the int64 range",
                               (int)(len < 40 ? len : 40), r->text + start);
            }
            value = value * 10 + (negative ? -d : d);
        }
        v->type = DJ_INT;
        v->integer = value;
        v->number = (double)value;
        return true;
    }
    /* The grammar is checked above, so strtod_l reads exactly these characters; it needs them
     * NUL-terminated. */
    char small[128];
    char *buf = len < sizeof small ? small : malloc(len + 1);
    if (buf == NULL) {
        return out_of_memory(r);
    }
    memcpy(buf, r->text + start, len);
    buf[len] = '\0';
    if (r->c_locale == (locale_t)0) {
        r->c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    }
    bool ok = r->c_locale != (locale_t)0;
    if (ok) {
        char *end = NULL;
        v->number = strtod_l(buf, &end, r->c_locale);
        ok = end == buf + len;
    }
    if (buf != small) {
        free(buf);
    }
    if (!ok) {
        return r->c_locale == (locale_t)0 ? out_of_memory(r)
                                          : fail_at(r, start, "invalid number");
    }
    v->type = DJ_DOUBLE;
    return true;
}

static int hex4(const char *p) {
    int value = 0;
    for (int i = 0; i < 4; ++i) {
        const char c = p[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return -1;
        }
        value = value * 16 + d;
    }
    return value;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0, avail), 0 if it is not one (overlong
 * forms, surrogates and code points beyond U+10FFFF are not). */
static size_t utf8_length(const unsigned char *s, size_t avail) {
    const unsigned c = s[0];
    size_t n;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < n) {
        return 0;
    }
    for (size_t i = 1; i < n; ++i) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    return n;
}

/* r->pos is at the opening quote. */
static bool parse_string(reader *r, char **out, size_t *out_len) {
    const size_t start = r->pos++;
    /* First pass: find the closing quote, so that the decoded string's buffer can be sized
     * (escapes never decode to more bytes than they take). */
    size_t end = r->pos;
    while (end < r->size && r->text[end] != '"') {
        end += r->text[end] == '\\' ? 2 : 1;
    }
    if (end >= r->size) {
        return fail_at(r, start, "unterminated string");
    }
    char *s = malloc(end - r->pos + 1);
    if (s == NULL) {
        return out_of_memory(r);
    }
    size_t n = 0;
    while (r->pos < end) {
        const unsigned char c = (unsigned char)r->text[r->pos];
        if (c < 0x20) {
            free(s);
            return fail_at(r, r->pos, "control character 0x%02x in a string", c);
        }
        if (c >= 0x80) {
            const size_t len = utf8_length((const unsigned char *)r->text + r->pos, end - r->pos);
            if (len == 0) {
                free(s);
                return fail_at(r, r->pos, "invalid UTF-8 in a string");
            }
            memcpy(s + n, r->text + r->pos, len);
            n += len;
            r->pos += len;
            continue;
        }
        if (c != '\\') {
            s[n++] = (char)c;
            ++r->pos;
            continue;
        }
        const size_t esc = r->pos;
        const char e = r->text[r->pos + 1];
        r->pos += 2;
        switch (e) {
        case '"': s[n++] = '"'; break;
        case '\\': s[n++] = '\\'; break;
        case '/': s[n++] = '/'; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            int cp = end - r->pos >= 4 ? hex4(r->text + r->pos) : -1;
            if (cp < 0) {
                free(s);
                return fail_at(r, esc, "invalid \\u escape");
            }
            r->pos += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int low = -1;
                if (end - r->pos >= 6 && r->text[r->pos] == '\\' && r->text[r->pos + 1] == 'u') {
                    low = hex4(r->text + r->pos + 2);
                }
                if (low < 0xDC00 || low > 0xDFFF) {
                    free(s);
                    return fail_at(r, esc, "lone surrogate escape in a string");
                }
                r->pos += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(s);
                return fail_at(r, esc, "lone surrogate escape in a string");
            } else if (cp == 0) {
                free(s);
                return fail_at(r, esc, "NUL character in a string");
            }
            n += put_utf8(s + n, (unsigned)cp);
            break;
        }
        default:
            free(s);
            return fail_at(r, esc, "invalid escape in a string");
        }
    }
    s[n] = '\0';
    r->pos = end + 1;
    *out = s;
    *out_len = n;
    return true;
}

/* Grows a container's arrays to hold at least `need` members. */
static bool grow(reader *r, dj_value *v, size_t *capacity, size_t need, bool keys) {
    if (need <= *capacity) {
        return true;
    }
    size_t cap = *capacity ? *capacity * 2 : 8;
    if (cap > SIZE_MAX / sizeof(dj_value)) {
        return out_of_memory(r);
    }
    dj_value *items = realloc(v->items, cap * sizeof *items);
    if (items == NULL) {
        return out_of_memory(r);
    }
    v->items = items;
    if (keys) {
        char **k = realloc(v->keys, cap * sizeof *k);
        if (k == NULL) {
            return out_of_memory(r);
        }
        v->keys = k;
    }
    *capacity = cap;
    return true;
}

static int compare_keys(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Duplicate keys are refused (JSON readers resolve them differently). */
static bool check_duplicates(reader *r, const dj_value *v) {
    if (v->length < 2) {
        return true;
    }
    char **sorted = malloc(v->length * sizeof *sorted);
    if (sorted == NULL) {
        return out_of_memory(r);
    }
    memcpy(sorted, v->keys, v->length * sizeof *sorted);
    qsort(sorted, v->length, sizeof *sorted, compare_keys);
    for (size_t i = 1; i < v->length; ++i) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            fail_at(r, v->offset, "duplicate key '%.80s' in an object", sorted[i]);
            free(sorted);
            return false;
        }
    }
    free(sorted);
    return true;
}

static bool parse_container(reader *r, dj_value *v, int depth, bool object) {
    const char close = object ? '}' : ']';
    v->type = object ? DJ_OBJECT : DJ_ARRAY;
    if (depth >= DJ_MAX_DEPTH) {
        return fail_at(r, r->pos, "nesting deeper than %d levels", DJ_MAX_DEPTH);
    }
    ++r->pos;
    skip_space(r);
    if (peek(r) == close) {
        ++r->pos;
        return true;
    }
    size_t capacity = 0;
    for (;;) {
        if (!grow(r, v, &capacity, v->length + 1, object)) {
            return false;
        }
        skip_space(r);
        if (object) {
            if (peek(r) != '"') {
                return fail_at(r, r->pos, "expected a string key in an object");
            }
            size_t klen;
            if (!parse_string(r, &v->keys[v->length], &klen)) {
                return false;
            }
            skip_space(r);
            if (peek(r) != ':') {
                free(v->keys[v->length]);
                return fail_at(r, r->pos, "expected ':' after an object key");
            }
            ++r->pos;
        }
        dj_value *item = &v->items[v->length];
        memset(item, 0, sizeof *item);
        if (!parse_value(r, item, depth + 1)) {
            dj_free(item);
            if (object) {
                free(v->keys[v->length]);
            }
            return false;
        }
        ++v->length;
        skip_space(r);
        if (peek(r) == ',') {
            ++r->pos;
            continue;
        }
        if (peek(r) == close) {
            ++r->pos;
            return object ? check_duplicates(r, v) : true;
        }
        return fail_at(r, r->pos, "expected ',' or '%c'", close);
    }
}

static bool parse_value(reader *r, dj_value *v, int depth) {
    skip_space(r);
    v->offset = r->pos;
    switch (peek(r)) {
    case '{': return parse_container(r, v, depth, true);
    case '[': return parse_container(r, v, depth, false);
    case '"':
        v->type = DJ_STRING;
        return parse_string(r, &v->string, &v->length);
    case 't': return parse_literal(r, v, "true", DJ_BOOL, true);
    case 'f': return parse_literal(r, v, "false", DJ_BOOL, false);
    case 'n': return parse_literal(r, v, "null", DJ_NULL, false);
    case -1: return fail_at(r, r->pos, "unexpected end of the text");
    default:
        if (peek(r) == '-' || is_digit(peek(r))) {
            return parse_number(r, v);
        }
        /* NaN, Infinity and every other bare word land here. */
        return fail_at(r, r->pos, "unexpected character '%c'",
                       peek(r) >= 0x20 && peek(r) < 0x7F ? peek(r) : '?');
    }
}

bool dj_parse(const char *text, size_t size, dj_value *out, char *error, size_t error_size,
              bool *oom) {
    reader r = {text, size, 0, error, error_size, false, false, (locale_t)0};
    dj_value v;
    memset(&v, 0, sizeof v);
    memset(out, 0, sizeof *out);
    bool ok = parse_value(&r, &v, 0);
    if (ok) {
        skip_space(&r);
        if (r.pos != r.size) {
            ok = fail_at(&r, r.pos, "text after the JSON value");
        }
    }
    if (r.c_locale != (locale_t)0) {
        freelocale(r.c_locale);
    }
    *oom = r.oom;
    if (!ok) {
        dj_free(&v);
        return false;
    }
    *out = v;
    return true;
}

void dj_free(dj_value *v) {
    if (v == NULL) {
        return;
    }
    free(v->string);
    if (v->type == DJ_ARRAY || v->type == DJ_OBJECT) {
        for (size_t i = 0; i < v->length; ++i) {
            dj_free(&v->items[i]);
            if (v->type == DJ_OBJECT) {
                free(v->keys[i]);
            }
        }
    }
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

const dj_value *dj_get(const dj_value *object, const char *key) {
    if (object == NULL || object->type != DJ_OBJECT) {
        return NULL;
    }
    for (size_t i = 0; i < object->length; ++i) {
        if (strcmp(object->keys[i], key) == 0) {
            return &object->items[i];
        }
    }
    return NULL;
}

const char *dj_type_name(const dj_value *v) {
    if (v == NULL) {
        return "missing";
    }
    switch (v->type) {
    case DJ_NULL: return "null";
    case DJ_BOOL: return "a boolean";
    case DJ_INT: return "an integer";
    case DJ_DOUBLE: return "a number";
    case DJ_STRING: return "a string";
    case DJ_ARRAY: return "an array";
    case DJ_OBJECT: return "an object";
    }
    return "?";
}
