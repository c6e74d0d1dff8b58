/* A C interface to Google Benchmark, so that the benchmarks themselves are plain C.
 *
 *   static void bm(dcb_state *st, void *arg) {
 *       ...setup (not timed)...
 *       while (dcb_keep_running(st)) {
 *           ...the measured work...
 *       }
 *       dcb_counter(st, "FLOPS", flops_per_iteration, DCB_RATE_PER_ITERATION);
 *   }
 *   int main(int argc, char **argv) {
 *       dcb_initialize(&argc, argv);          (consumes the --benchmark_* flags)
 *       dcb_register("name", bm, arg, NULL);  (or with options)
 *       return dcb_run() == 0 ? 0 : 1;
 *   }
 *
 * Benchmarks are registered at run time, so their list may come from a file. The implementation
 * is bench/shim.cc; it is the only C++ in the project. */
#ifndef DYNCONV_BENCH_SHIM_H
#define DYNCONV_BENCH_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque: wraps benchmark::State for the duration of one run of a benchmark function. */
typedef struct dcb_state dcb_state;

/* A benchmark function: sets up, loops on dcb_keep_running, tears down. arg is the pointer given
 * at registration (it must stay valid until dcb_run returns). */
typedef void (*dcb_function)(dcb_state *state, void *arg);

typedef enum dcb_time_unit { DCB_NS = 0, DCB_US, DCB_MS, DCB_S } dcb_time_unit;

/* Registration options; a NULL pointer means all defaults. Zero fields keep the command line's
 * (or Google Benchmark's) default. */
typedef struct dcb_options {
    int real_time;          /* nonzero: measure wall-clock time (needed when work runs on other
                               threads: the CPU time of the calling thread would miss it) */
    dcb_time_unit unit;     /* unit of the console output */
    double min_time;        /* seconds per repetition, > 0 to override --benchmark_min_time */
    int64_t iterations;     /* > 0: exactly this many iterations */
    int process_cpu_time;   /* nonzero: the CPU time reported is the whole process's (all its
                               threads), not the calling thread's */
} dcb_options;

/* Removes the --benchmark_* flags from argv (and handles --help). Call once, first. */
void dcb_initialize(int *argc, char **argv);

/* Records a key/value pair in the run's context (console header and JSON "context"). */
void dcb_add_context(const char *key, const char *value);

/* Registers fn under name (copied). Returns 0, or -1 when registration failed. */
int dcb_register(const char *name, dcb_function fn, void *arg, const dcb_options *options);

/* Runs the benchmarks selected by --benchmark_filter. Returns the number of benchmarks that
 * reported an error through dcb_skip_with_error (0 when all went well). */
int dcb_run(void);

/* The iteration loop: true while more iterations are wanted. Time is measured between the first
 * call and the call that returns false. */
int dcb_keep_running(dcb_state *state);

/* Excludes work between pause and resume from the measured time (costs about a microsecond:
 * only for work much longer than that). */
void dcb_pause_timing(dcb_state *state);
void dcb_resume_timing(dcb_state *state);

/* Counter flags. */
enum {
    DCB_PLAIN = 0,                 /* value reported as is */
    DCB_RATE = 1,                  /* value / measured seconds */
    DCB_RATE_PER_ITERATION = 2     /* value * iterations / measured seconds, e.g. FLOP per
                                      iteration -> FLOP/s */
};

/* Sets a named counter; call after the loop. */
void dcb_counter(dcb_state *state, const char *name, double value, int flags);

/* Free text shown next to the result (and in JSON "label"). */
void dcb_set_label(dcb_state *state, const char *label);

/* Marks the run as failed with a message; the loop must then end (dcb_keep_running returns
 * false from then on). Counted by dcb_run's return value. */
void dcb_skip_with_error(dcb_state *state, const char *message);

/* Iterations of the loop so far (the final count once it has ended). */
int64_t dcb_iterations(const dcb_state *state);

#ifdef __cplusplus
}
#endif

#endif
