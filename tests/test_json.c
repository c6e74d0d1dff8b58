/* The network layer's JSON reader (src/net/json.c) on its own: what it accepts and how it reads
 * it (exact int64, doubles in the C locale whatever the process's locale, every escape), and what
 * it refuses, each with the byte offset of the fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

typedef struct accept_case {
    const char *name, *text;
    dj_type type;
    int64_t integer;          /* DJ_INT */
    double number;            /* DJ_DOUBLE */
    const char *string;       /* DJ_STRING (decoded) */
    size_t length;            /* DJ_STRING bytes, DJ_ARRAY / DJ_OBJECT members */
} accept_case;

static const accept_case ACCEPT[] = {
    {"int64_max", "9223372036854775807", DJ_INT, INT64_MAX, 0, NULL, 0},
    {"int64_min", "-9223372036854775808", DJ_INT, INT64_MIN, 0, NULL, 0},
    {"offset_past_2_53", " 9007199254740993 ", DJ_INT, 9007199254740993LL, 0, NULL, 0},
    {"minus_zero_int", "-0", DJ_INT, 0, 0, NULL, 0},
    {"fraction", "0.1", DJ_DOUBLE, 0, 0.1, NULL, 0},
    {"exponent", "-2.5e-3", DJ_DOUBLE, 0, -2.5e-3, NULL, 0},
    {"exponent_no_fraction", "1E2", DJ_DOUBLE, 0, 100.0, NULL, 0},
    {"shortest_double", "0.30000000000000004", DJ_DOUBLE, 0, 0.30000000000000004, NULL, 0},
    {"escapes", "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\"", DJ_STRING, 0, 0, "a\"\\/\b\f\n\r\t", 9},
    {"u_escape_2_bytes", "\"\\u00e9\"", DJ_STRING, 0, 0, "\xc3\xa9", 2},
    {"u_escape_3_bytes", "\"\\u20AC\"", DJ_STRING, 0, 0, "\xe2\x82\xac", 3},
    {"surrogate_pair", "\"\\ud83d\\ude00\"", DJ_STRING, 0, 0, "\xf0\x9f\x98\x80", 4},
    {"raw_utf8", "\"\xc3\xa9\xe2\x82\xac\"", DJ_STRING, 0, 0, "\xc3\xa9\xe2\x82\xac", 5},
    {"empty_object", "{}", DJ_OBJECT, 0, 0, NULL, 0},
    {"nested", "{\"a\":[1,{\"b\":null}],\"c\":true}", DJ_OBJECT, 0, 0, NULL, 2},
    {"array_with_space", "[ 1 , 2 ,3 ]\n\t\r ", DJ_ARRAY, 0, 0, NULL, 3},
    {"depth_at_limit",
     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
     "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
     DJ_ARRAY, 0, 0, NULL, 1},
};

typedef struct refuse_case {
    const char *name, *text;
    size_t size;              /* 0: strlen(text) */
    const char *reason;       /* a part of the message, byte offset included */
} refuse_case;

static const refuse_case REFUSE[] = {
    {"empty", "", 0, "at byte 0: unexpected end"},
    {"int64_overflow", "9223372036854775808", 0, "at byte 0: integer"},
    {"int64_underflow", "[-9223372036854775809]", 0, "at byte 1: integer"},
    {"leading_zero", "01", 0, "at byte 1: text after the JSON value"},
    {"bare_minus", "-", 0, "at byte 0: invalid number"},
    {"no_fraction_digit", "1.", 0, "at byte 0: invalid number (no digit after"},
    {"no_exponent_digit", "1e+", 0, "at byte 0: invalid number (no digit in the exponent)"},
    {"plus_sign", "+1", 0, "at byte 0: unexpected character '+'"},
    {"nan", "[NaN]", 0, "at byte 1: unexpected character 'N'"},
    {"infinity", "{\"t\":Infinity}", 0, "at byte 5: unexpected character 'I'"},
    {"minus_infinity", "-Infinity", 0, "at byte 0: invalid number"},
    {"duplicate_key", "{\"a\":1,\"a\":2}", 0, "at byte 0: duplicate key 'a'"},
    {"nested_duplicate", "[{},{\"k\":1,\"j\":2,\"k\":3}]", 0, "at byte 4: duplicate key 'k'"},
    {"nul_escape", "\"a\\u0000\"", 0, "at byte 2: NUL character"},
    {"raw_nul", "\"a\0\"", 4, "at byte 2: control character 0x00"},
    {"raw_newline", "\"a\nb\"", 0, "at byte 2: control character 0x0a"},
    {"lone_high_surrogate", "\"\\ud800x\"", 0, "at byte 1: lone surrogate"},
    {"lone_low_surrogate", "\"\\udc00\"", 0, "at byte 1: lone surrogate"},
    {"high_then_high", "\"\\ud800\\ud800\"", 0, "at byte 1: lone surrogate"},
    {"bad_u_escape", "\"\\u12g4\"", 0, "at byte 1: invalid \\u escape"},
    {"bad_escape", "\"\\x\"", 0, "at byte 1: invalid escape"},
    {"invalid_utf8", "\"\xff\"", 0, "at byte 1: invalid UTF-8"},
    {"overlong_utf8", "\"\xc0\xaf\"", 0, "at byte 1: invalid UTF-8"},
    {"utf8_surrogate", "\"\xed\xa0\x80\"", 0, "at byte 1: invalid UTF-8"},
    {"truncated_utf8", "\"\xe2\x82\"", 0, "at byte 1: invalid UTF-8"},
    {"unterminated_string", "[\"abc", 0, "at byte 1: unterminated string"},
    {"unterminated_array", "[1,2", 0, "at byte 4: expected ',' or ']'"},
    {"trailing_comma", "[1,]", 0, "at byte 3: unexpected character ']'"},
    {"missing_colon", "{\"a\" 1}", 0, "at byte 5: expected ':'"},
    {"key_not_string", "{1:2}", 0, "at byte 1: expected a string key"},
    {"text_after_value", "{} {}", 0, "at byte 3: text after the JSON value"},
    {"bad_literal", "[tru]", 0, "at byte 1: invalid literal"},
    {"too_deep",
     "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
     "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
     0, "at byte 64: nesting deeper than 64"},
    {"not_nul_terminated_number", "12345", 3, NULL}, /* accepted: reads "123" only */
};

static void accepted(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof ACCEPT / sizeof ACCEPT[0]; ++i) {
        const accept_case *c = &ACCEPT[i];
        dj_value v;
        char err[256];
        bool oom = false;
        if (!dj_parse(c->text, strlen(c->text), &v, err, sizeof err, &oom)) {
            fail_msg("%s: refused: %s", c->name, err);
        }
        assert_int_equal(v.type, c->type);
        if (c->type == DJ_INT) {
            assert_true(v.integer == c->integer);
        } else if (c->type == DJ_DOUBLE) {
            assert_true(v.number == c->number);
        } else if (c->type == DJ_STRING) {
            assert_int_equal(v.length, c->length);
            assert_memory_equal(v.string, c->string, c->length);
        } else if (c->type == DJ_ARRAY || c->type == DJ_OBJECT) {
            assert_int_equal(v.length, c->length);
        }
        dj_free(&v);
    }
}

static void refused(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof REFUSE / sizeof REFUSE[0]; ++i) {
        const refuse_case *c = &REFUSE[i];
        dj_value v;
        char err[256] = "";
        bool oom = false;
        const size_t size = c->size ? c->size : strlen(c->text);
        const bool ok = dj_parse(c->text, size, &v, err, sizeof err, &oom);
        if (c->reason == NULL) {
            assert_true(ok);
            assert_int_equal(v.type, DJ_INT);
            assert_true(v.integer == 123);
            dj_free(&v);
            continue;
        }
        if (ok || oom || strstr(err, c->reason) == NULL) {
            fail_msg("%s: %s \"%s\" (expected \"%s\")", c->name, ok ? "accepted" : "refused",
                     err, c->reason);
        }
    }
}

/* Numbers are read in the C locale: in a locale whose decimal separator is ',' (when one is
 * installed) "0.5" is still one half, and "0,5" is not a number. */
static void numbers_ignore_locale(void **state) {
    (void)state;
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "de_DE"};
    const char *found = NULL;
    for (size_t i = 0; i < 4 && found == NULL; ++i) {
        found = setlocale(LC_NUMERIC, names[i]);
    }
    if (found == NULL) {
        print_message("  no locale with a decimal comma is installed: only the C locale read\n");
    } else {
        print_message("  LC_NUMERIC=%s\n", found);
    }
    dj_value v;
    char err[256];
    bool oom;
    assert_true(dj_parse("[0.5,2.25e1]", 12, &v, err, sizeof err, &oom));
    assert_true(v.items[0].number == 0.5);
    assert_true(v.items[1].number == 22.5);
    dj_free(&v);
    assert_false(dj_parse("0,5", 3, &v, err, sizeof err, &oom));
    setlocale(LC_NUMERIC, "C");
}

static void lookup(void **state) {
    (void)state;
    dj_value v;
    char err[256];
    bool oom;
    assert_true(dj_parse("{\"a\":1,\"b\":\"x\"}", 15, &v, err, sizeof err, &oom));
    assert_int_equal(dj_get(&v, "a")->integer, 1);
    assert_string_equal(dj_get(&v, "b")->string, "x");
    assert_null(dj_get(&v, "c"));
    assert_null(dj_get(dj_get(&v, "a"), "a"));
    assert_int_equal(dj_get(&v, "b")->offset, 11);
    dj_free(&v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepted),
        cmocka_unit_test(refused),
        cmocka_unit_test(numbers_ignore_locale),
        cmocka_unit_test(lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
