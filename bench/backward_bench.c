/* Times the forward and the backward of libdynconv's dynamic conv2d on a layer list (the format
 * of bench/layers.txt), for bench/backward_compare.sh. Prints one tab-separated line per layer:
 *   name  batch  forward_ms  backward_ms
 * each the median over --repeats runs of at least --min-time seconds (after one warm-up call).
 * The backward computes every gradient (input, kernels, biases, attention). A benchmark, not a
 * test: it checks statuses, not values (the test suite does that). */
#define _POSIX_C_SOURCE 200809L

#include <dynconv/dynconv.h>

#include "dcio.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_REPEATS = 101, KERNELS = DCIO_WORKLOAD_KERNELS };

/* One line of the layer list (read by dcio_workload_read, grammar in bench/layers.txt). */
typedef dcio_workload_layer layer_spec;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, dynconv_status st)
{
    fprintf(stderr, "backward_bench: %s: %s (%s)\n", what, dynconv_status_string(st),
            dynconv_last_error_message());
    exit(1);
}

static float *alloc_floats(size_t count)
{
    float *p = calloc(count ? count : 1, sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "backward_bench: out of memory (%zu floats)\n", count);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct timed {
    dynconv_conv2d *layer;
    const float *x, *dy;
    float *y;
    const dynconv_conv2d_gradients *grads;
    int backward;
} timed;

static void run_once(const timed *t)
{
    dynconv_status st = t->backward
                            ? dynconv_conv2d_backward(t->layer, t->x, t->dy, t->grads, 0, NULL, 0)
                            : dynconv_conv2d_forward(t->layer, t->x, t->y, NULL, NULL, 0);
    if (st != DYNCONV_OK) {
        die(t->backward ? "backward" : "forward", st);
    }
}

/* Median milliseconds per call. */
static double time_ms(const timed *t, int repeats, double min_time)
{
    run_once(t); /* warm-up: first touch of the buffers, BLAS thread start */
    const double start = now();
    run_once(t);
    const double once = now() - start;
    const long iters = once > 0 ? (long)(min_time / once) + 1 : 1;
    double samples[MAX_REPEATS];
    for (int r = 0; r < repeats; ++r) {
        const double t0 = now();
        for (long i = 0; i < iters; ++i) {
            run_once(t);
        }
        samples[r] = (now() - t0) / (double)iters * 1e3;
    }
    qsort(samples, (size_t)repeats, sizeof samples[0], cmp_double);
    return samples[repeats / 2];
}

static void bench_layer(const layer_spec *s, long batch, int threads, int repeats,
                        double min_time)
{
    const dynconv_conv2d_geometry g = dcio_workload_geometry(s, KERNELS);
    const long hidden = (long)g.hidden;
    const size_t wlen = (size_t)(KERNELS * s->out * (s->in / s->groups) * s->kernel * s->kernel);
    float *w = alloc_floats(wlen), *b = alloc_floats((size_t)(KERNELS * s->out));
    float *fc1 = alloc_floats((size_t)(hidden * s->in)), *fc2 = alloc_floats(KERNELS * hidden);
    float *fc2b = alloc_floats(KERNELS);
    dynconv_status st = dynconv_conv2d_init_parameters(&g, 1, DYNCONV_INIT_BIAS_UNIFORM, w, b, fc1,
                                                       NULL, fc2, fc2b);
    if (st != DYNCONV_OK) {
        die("init_parameters", st);
    }
    const dynconv_conv2d_weights wts = {w, b, fc1, NULL, fc2, fc2b};
    dynconv_conv2d *layer = NULL;
    if ((st = dynconv_conv2d_create(&g, &wts, 1.0f, 0, &layer)) != DYNCONV_OK ||
        (st = dynconv_conv2d_set_num_threads(layer, threads)) != DYNCONV_OK) {
        die("create / set_num_threads", st);
    }
    int64_t oh = 0, ow = 0;
    if ((st = dynconv_conv2d_reshape(layer, batch, s->size, s->size, &oh, &ow, NULL)) !=
            DYNCONV_OK ||
        (st = dynconv_conv2d_prepare_backward(layer, NULL)) != DYNCONV_OK) {
        die("reshape / prepare_backward", st);
    }
    const size_t x_count = (size_t)(batch * s->in * s->size * s->size);
    const size_t y_count = (size_t)(batch * s->out * oh * ow);
    float *x = alloc_floats(x_count), *y = alloc_floats(y_count), *dy = alloc_floats(y_count);
    for (size_t i = 0; i < x_count; ++i) {
        x[i] = (float)((double)(i * 2654435761u % 1000u) / 500.0 - 1.0);
    }
    for (size_t i = 0; i < y_count; ++i) {
        dy[i] = (float)((double)(i * 40503u % 997u) / 498.5 - 1.0);
    }
    float *dx = alloc_floats(x_count), *dw = alloc_floats(wlen);
    float *db = alloc_floats((size_t)(KERNELS * s->out));
    float *dfc1 = alloc_floats((size_t)(hidden * s->in)), *dfc2 = alloc_floats(KERNELS * hidden);
    float *dfc2b = alloc_floats(KERNELS);
    const dynconv_conv2d_gradients grads = {dx, dw, db, dfc1, NULL, dfc2, dfc2b};

    timed t = {layer, x, dy, y, &grads, 0};
    const double fwd = time_ms(&t, repeats, min_time);
    t.backward = 1;
    const double bwd = time_ms(&t, repeats, min_time);
    printf("%s\t%ld\t%.4f\t%.4f\n", s->name, batch, fwd, bwd);
    fflush(stdout);

    dynconv_conv2d_destroy(layer);
    free(w), free(b), free(fc1), free(fc2), free(fc2b), free(x), free(y), free(dy);
    free(dx), free(dw), free(db), free(dfc1), free(dfc2), free(dfc2b);
}

static void usage(void)
{
    fprintf(stderr, "usage: backward_bench --layers FILE [--batch N] [--threads T] "
                    "[--repeats R] [--min-time SECONDS] [--filter SUBSTRING]\n"
                    "  --threads: the handle's threads, for the forward and the backward's "
                    "per-sample work (libdynconv >= 1.1; 1.0's backward used the BLAS's)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *path = NULL, *filter = "";
    long batch = 16;
    int repeats = 5, threads = 1;
    double min_time = 0.2;
    for (int i = 1; i < argc; ++i) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *opt = argv[i], *val = argv[++i];
        if (strcmp(opt, "--layers") == 0) {
            path = val;
        } else if (strcmp(opt, "--batch") == 0) {
            batch = strtol(val, NULL, 10);
        } else if (strcmp(opt, "--threads") == 0) {
            threads = (int)strtol(val, NULL, 10);
        } else if (strcmp(opt, "--repeats") == 0) {
            repeats = (int)strtol(val, NULL, 10);
        } else if (strcmp(opt, "--min-time") == 0) {
            min_time = strtod(val, NULL);
        } else if (strcmp(opt, "--filter") == 0) {
            filter = val;
        } else {
            usage();
        }
    }
    if (path == NULL || batch < 1 || threads < 1 || repeats < 1 || repeats > MAX_REPEATS || !(min_time > 0)) {
        usage();
    }
    layer_spec *layers = NULL;
    size_t count = 0;
    dcio_error err;
    if (!dcio_workload_read(path, &layers, &count, &err)) {
        fprintf(stderr, "backward_bench: %s\n", err.message);
        return 2;
    }
    fprintf(stderr, "backward_bench: BLAS %s, core %s, %d thread(s)\n", dynconv_blas_config(),
            dynconv_blas_core(), dynconv_blas_num_threads());
    for (size_t i = 0; i < count; ++i) {
        if (strstr(layers[i].name, filter) != NULL) {
            bench_layer(&layers[i], batch, threads, repeats, min_time);
        }
    }
    free(layers);
    return 0;
}
