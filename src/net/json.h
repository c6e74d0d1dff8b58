/* A small strict JSON reader for the network files: the safetensors header and the graph it
 * carries. Strict as the project's other readers (jansson with JSON_REJECT_DUPLICATES, Python's
 * json with the container's hooks): UTF-8 only, no duplicate keys, no NUL or lone surrogate in a
 * string, no NaN/Infinity, nothing but white space after the value. Integers (no fraction, no
 * exponent) are kept exactly as int64 (tensor offsets need every bit); other numbers are doubles
 * read in the C locale whatever the process's locale is. Every error names its byte offset. */
#ifndef DYNCONV_SRC_NET_JSON_H
#define DYNCONV_SRC_NET_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum dj_type {
    DJ_NULL,
    DJ_BOOL,
    DJ_INT,
    DJ_DOUBLE,
    DJ_STRING,
    DJ_ARRAY,
    DJ_OBJECT
} dj_type;

typedef struct dj_value dj_value;
struct dj_value {
    dj_type type;
    size_t offset;            /* byte offset of the value's first character in the text */
    bool boolean;
    int64_t integer;
    double number;            /* DJ_DOUBLE (and DJ_INT, converted) */
    char *string;             /* DJ_STRING: NUL-terminated (no NUL inside: refused) */
    size_t length;            /* string bytes, or number of items / members */
    dj_value *items;          /* DJ_ARRAY items, DJ_OBJECT member values */
    char **keys;              /* DJ_OBJECT member keys, in file order */
};

/* Nesting deeper than this is refused (the graph needs 4 levels; the limit keeps the
 * recursion's stack small whatever the input). */
#define DJ_MAX_DEPTH 64

/* Parses text[0, size) into *out (free with dj_free). False on error, with the reason and its
 * byte offset in error[error_size]; *out is then empty and needs no dj_free. *oom is set when the
 * failure was an allocation. */
bool dj_parse(const char *text, size_t size, dj_value *out, char *error, size_t error_size,
              bool *oom);
void dj_free(dj_value *v);

/* The member `key` of an object, or NULL. */
const dj_value *dj_get(const dj_value *object, const char *key);

/* "an integer", "a string", ...: for messages. */
const char *dj_type_name(const dj_value *v);

#endif
