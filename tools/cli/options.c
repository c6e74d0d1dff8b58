/* What the commands share: option parsing and the two kinds of message (cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *program_command = "dynconv";

int usage_error(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program_command);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "\nTry '%s --help'.\n", program_command);
    return EXIT_USAGE;
}

int failure(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "%s: ", program_command);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);
    return EXIT_FAILURE;
}

int parse_options(int argc, char **argv, option *opts, size_t count, void (*help)(void)) {
    for (int i = 0; i < argc; ++i) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            help();
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0) {
            return usage_error("unexpected argument '%s'", arg);
        }
        const char *eq = strchr(arg, '=');
        const size_t len = eq != NULL ? (size_t)(eq - arg - 2) : strlen(arg) - 2;
        option *o = NULL;
        for (size_t k = 0; k < count; ++k) {
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, arg + 2, len) == 0) {
                o = &opts[k];
            }
        }
        if (o == NULL) {
            return usage_error("unknown option '%.*s'", (int)(len + 2), arg);
        }
        if (o->value != NULL) {
            return usage_error("option --%s given twice", o->name);
        }
        if (!o->takes_value) {
            if (eq != NULL) {
                return usage_error("option --%s takes no value", o->name);
            }
            o->value = "";
        } else if (eq != NULL) {
            o->value = eq + 1;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            return usage_error("option --%s needs a value", o->name);
        }
        if (o->takes_value && o->value[0] == '\0') {
            return usage_error("option --%s has an empty value", o->name);
        }
    }
    return OPTIONS_PARSED;
}

const char *get(const option *opts, size_t count, const char *name) {
    for (size_t k = 0; k < count; ++k) {
        if (strcmp(opts[k].name, name) == 0) {
            return opts[k].value;
        }
    }
    return NULL;
}

bool parse_long(const char *text, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    const long v = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

void format_shape(const int64_t *shape, int rank, char *buf, size_t size) {
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && at < size; ++i) {
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", i > 0 ? ", " : "",
                               (long long)shape[i]);
    }
    if (at < size) {
        snprintf(buf + at, size - at, "]");
    }
}
