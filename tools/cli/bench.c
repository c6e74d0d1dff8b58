/* dynconv bench: times the forward of the benchmark workload (bench/layers.txt, built into the
 * program by CMake as dc_builtin_layers, or a file of the same grammar) on random data. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dynconv/dynconv.h>

#include "dcio.h"

extern const char dc_builtin_layers[];

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


static void bench_help(void) {
    printf(
        "usage: dynconv bench [--batch N] [--repeats R] [--threads T] [--layers FILE]\n"
        "                     [--only NAME]\n"
        "\n"
        "Times the forward of the benchmark workload (ResNet-18 and MobileNetV2 layers as\n"
        "dynamic convolutions, K = 4, attention hidden size in/4) on random data and prints,\n"
        "per layer, the median and best time of R forwards and the convolution GFLOP/s\n"
        "(2 * N * C_out * H_out * W_out * C_in/groups * kh * kw per forward, on the median).\n"
        "\n"
        "  --batch N      samples per forward (default 8)\n"
        "  --repeats R    timed forwards per layer, after one warm-up (default 10)\n"
        "  --threads T    threads per layer (default 0: one per CPU available)\n"
        "  --layers FILE  workload file (default: the built-in list); one layer per line:\n"
        "                 name in out kernel stride pad groups size; '#' starts a comment\n"
        "  --only NAME    run only the layers whose name contains NAME\n"
        "\n"
        "The BLAS kernel set is printed first: 'Prescott' on an AVX2/AVX-512 CPU means\n"
        "OpenBLAS did not recognise the CPU (set OPENBLAS_CORETYPE). Timings are noisy on a\n"
        "shared machine: compare medians measured in the same run.\n");
}

static uint64_t bench_rng = 0x2545F4914F6CDD1Du;

static void fill_random(float *p, size_t n, float scale) {
    for (size_t i = 0; i < n; ++i) {
        bench_rng ^= bench_rng >> 12;
        bench_rng ^= bench_rng << 25;
        bench_rng ^= bench_rng >> 27;
        const uint64_t r = bench_rng * 0x2545F4914F6CDD1Du;
        p[i] = scale * (float)((double)(r >> 11) / 4503599627370496.0 - 1.0);
    }
}

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Times one layer; returns false (after printing) on an error. */
static bool bench_one(const dcio_workload_layer *bl, long batch, long repeats, int threads,
                      double *times) {
    const dynconv_conv2d_geometry g = dcio_workload_geometry(bl, DCIO_WORKLOAD_KERNELS);
    const int64_t hidden = g.hidden;
    /* dcio_workload_parse has checked the sizes: groups divide both channel counts, and
     * every product below stays far from overflow. */
    const size_t k = DCIO_WORKLOAD_KERNELS, ks = (size_t)bl->kernel * (size_t)bl->kernel;
    const size_t weight_n = k * (size_t)bl->out * (size_t)(bl->in / bl->groups) * ks;
    const size_t x_n = (size_t)batch * (size_t)bl->in * (size_t)bl->size * (size_t)bl->size;
    float *weight = malloc(weight_n * sizeof(float));
    float *bias = malloc(k * (size_t)bl->out * sizeof(float));
    float *fc1 = malloc((size_t)hidden * (size_t)bl->in * sizeof(float));
    float *fc2 = malloc(k * (size_t)hidden * sizeof(float));
    float *x = malloc(x_n * sizeof(float));
    float *y = NULL;
    dynconv_conv2d *layer = NULL;
    bool ok = false;
    if (weight == NULL || bias == NULL || fc1 == NULL || fc2 == NULL || x == NULL) {
        failure("layer %s: out of memory", bl->name);
        goto done;
    }
    fill_random(weight, weight_n, 0.1f);
    fill_random(bias, k * (size_t)bl->out, 0.1f);
    fill_random(fc1, (size_t)hidden * (size_t)bl->in, 0.5f);
    fill_random(fc2, k * (size_t)hidden, 0.5f);
    fill_random(x, x_n, 1.0f);
    const dynconv_conv2d_weights w = {weight, bias, fc1, NULL, fc2, NULL};
    int64_t oh, ow;
    dynconv_status st = dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer);
    if (st == DYNCONV_OK) {
        st = dynconv_conv2d_set_num_threads(layer, threads);
    }
    if (st == DYNCONV_OK) {
        st = dynconv_conv2d_reshape(layer, batch, bl->size, bl->size, &oh, &ow, NULL);
    }
    if (st != DYNCONV_OK) {
        failure("layer %s: %s (%s)", bl->name, dynconv_status_string(st),
                dynconv_last_error_message());
        goto done;
    }
    y = malloc((size_t)batch * (size_t)bl->out * (size_t)oh * (size_t)ow * sizeof(float));
    if (y == NULL) {
        failure("layer %s: out of memory", bl->name);
        goto done;
    }
    for (long r = -1; r < repeats; ++r) { /* r = -1: warm-up, not timed */
        const double t0 = now_seconds();
        st = dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0);
        const double t1 = now_seconds();
        if (st != DYNCONV_OK) {
            failure("layer %s: forward: %s (%s)", bl->name, dynconv_status_string(st),
                    dynconv_last_error_message());
            goto done;
        }
        if (r >= 0) {
            times[r] = t1 - t0;
        }
    }
    ok = true;
done:
    dynconv_conv2d_destroy(layer);
    free(weight);
    free(bias);
    free(fc1);
    free(fc2);
    free(x);
    free(y);
    return ok;
}

int cmd_bench(int argc, char **argv) {
    program_command = "dynconv bench";
    option opts[] = {{"batch", true, NULL},
                     {"repeats", true, NULL},
                     {"threads", true, NULL},
                     {"layers", true, NULL},
                     {"only", true, NULL}};
    const size_t nopts = sizeof opts / sizeof *opts;
    int rc = parse_options(argc, argv, opts, nopts, bench_help);
    if (rc != OPTIONS_PARSED) {
        return rc;
    }
    long batch = 8, repeats = 10;
    const char *v;
    if ((v = get(opts, nopts, "batch")) != NULL && !parse_long(v, 1, 4096, &batch)) {
        return usage_error("--batch '%s' is not an integer in [1, 4096]", v);
    }
    if ((v = get(opts, nopts, "repeats")) != NULL && !parse_long(v, 1, 100000, &repeats)) {
        return usage_error("--repeats '%s' is not an integer in [1, 100000]", v);
    }
    long threads = 0;
    if ((v = get(opts, nopts, "threads")) != NULL &&
        !parse_long(v, 0, DYNCONV_MAX_THREADS, &threads)) {
        return usage_error("--threads '%s' is not an integer in [0, %d]", v, DYNCONV_MAX_THREADS);
    }
    const char *only = get(opts, nopts, "only");
    const char *layers_path = get(opts, nopts, "layers");
    const char *origin = layers_path != NULL ? layers_path : "built-in workload";
    dcio_workload_layer *layers = NULL;
    size_t count = 0;
    dcio_error err;
    const bool read = layers_path != NULL
                          ? dcio_workload_read(layers_path, &layers, &count, &err)
                          : dcio_workload_parse(dc_builtin_layers, strlen(dc_builtin_layers),
                                                origin, &layers, &count, &err);
    if (!read) {
        return failure("%s", err.message);
    }
    double *times = malloc((size_t)repeats * sizeof *times);
    if (times == NULL) {
        free(layers);
        return failure("out of memory");
    }
    printf("libdynconv %s, batch %ld, %ld timed forwards per layer (median, best), "
           "%d thread(s) per layer\n", dynconv_version_string(), batch, repeats,
           threads > 0 ? (int)threads : default_threads());
    print_blas(stdout);
    printf("%-22s %5s %5s %2s %2s %4s %5s %10s %10s %9s\n", "layer", "in", "out", "k", "s",
           "g", "size", "median_ms", "best_ms", "GFLOP/s");
    rc = 0;
    long ran = 0;
    for (size_t i = 0; i < count; ++i) {
        const dcio_workload_layer *bl = &layers[i];
        if (only != NULL && strstr(bl->name, only) == NULL) {
            continue;
        }
        if (!bench_one(bl, batch, repeats, (int)threads, times)) {
            rc = EXIT_FAILURE;
            break;
        }
        qsort(times, (size_t)repeats, sizeof *times, compare_double);
        const double median = repeats % 2 == 1
                                  ? times[repeats / 2]
                                  : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
        const int64_t out_size = (bl->size + 2 * bl->pad - bl->kernel) / bl->stride + 1;
        const double flops = 2.0 * (double)batch * (double)bl->out * (double)out_size *
                             (double)out_size * (double)(bl->in / bl->groups) *
                             (double)(bl->kernel * bl->kernel);
        printf("%-22s %5ld %5ld %2ld %2ld %4ld %5ld %10.3f %10.3f %9.2f\n", bl->name,
               (long)bl->in, (long)bl->out, (long)bl->kernel, (long)bl->stride,
               (long)bl->groups, (long)bl->size, 1e3 * median,
               1e3 * times[0], flops / median * 1e-9);
        fflush(stdout);
        ran++;
    }
    if (rc == 0 && ran == 0) {
        rc = failure("no layer of the %s matches --only '%s'", origin, only != NULL ? only : "");
    }
    free(times);
    free(layers);
    return rc;
}
