/* dynconv, the command-line tool: what its commands share (options, messages, the platform
 * report). One file per command: run.c (with run_linear.c and outputs.c), bench.c, info.c,
 * network.c (infer, and info's --model); main.c dispatches.
 *
 * Exit codes: 0 success, 1 failure (bad file, invalid layer, I/O), 2 bad usage. Every message
 * goes to stderr and names the file it is about. Outputs are written under temporary names and
 * renamed into place only once everything has succeeded. */
#ifndef DYNCONV_TOOLS_CLI_CLI_H
#define DYNCONV_TOOLS_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { EXIT_USAGE = 2 };

/* Inputs larger than this are refused before reading (a weight file or an array). */
#define MAX_FILE_BYTES ((size_t)1 << 36)

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

/* "dynconv" or "dynconv <command>": the prefix of every message. */
extern const char *program_command;

/* Prints "<program_command>: <message>" and a pointer to --help; returns EXIT_USAGE. */
CLI_PRINTF(1, 2) int usage_error(const char *fmt, ...);
/* Prints "<program_command>: <message>"; returns EXIT_FAILURE. */
CLI_PRINTF(1, 2) int failure(const char *fmt, ...);

/* Option parsing: --name VALUE or --name=VALUE; each option at most once. */
typedef struct option {
    const char *name;
    bool takes_value;
    const char *value; /* set when given (flags get "") */
} option;

/* Returns OPTIONS_PARSED, or the command's exit status when it is done: 0 after printing its
 * help (--help or -h, with `help`), EXIT_USAGE after printing why the arguments are wrong. */
enum { OPTIONS_PARSED = -1 };
int parse_options(int argc, char **argv, option *opts, size_t count, void (*help)(void));
/* The value of option `name`, NULL when not given. */
const char *get(const option *opts, size_t count, const char *name);
/* A decimal integer in [lo, hi]. */
bool parse_long(const char *text, long lo, long hi, long *out);

/* "[a, b, c]" */
void format_shape(const int64_t *shape, int rank, char *buf, size_t size);

/* The platform report (info.c): the BLAS lines (with a warning on stderr when OpenBLAS runs a
 * generic core on a better CPU), and the thread count a new handle starts with. */
void print_blas(FILE *out);
int default_threads(void);

int cmd_run(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_infer(int argc, char **argv);
/* dynconv info --model FILE: the network's nodes (network.c). Returns the exit status. */
int print_model_info(const char *path);

#endif
