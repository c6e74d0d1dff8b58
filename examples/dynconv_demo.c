/* dynconv-demo: runs a dynamic convolution layer on random data and shows what it does and
 * what it costs.
 *
 *   dynconv-demo [--batch N] [--channels C] [--size S] [--kernels K] [--repeats R]
 *
 * Default: a ResNet-style 3x3 layer, 64 -> 64 channels, 56x56, K = 4 kernels, attention hidden
 * size C/4, batch 8. It prints the per-sample attention (every sample gets its own mixture of
 * kernels), checks one output channel against a direct double-precision loop, and times the
 * dynamic layer against the same layer with a single kernel (K = 1): the two run alternately,
 * forward by forward, so that a change in the machine's load hits both alike, and the report
 * gives each one's median, spread and CPU time, with the parameter count, weight memory and
 * workspace of each. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dynconv/dynconv.h>

typedef struct options {
    long batch, channels, size, kernels, repeats;
} options;

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static float uniform(float lo, float hi) {
    /* xorshift64*: enough for demo data and reproducible everywhere. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    const uint64_t r = rng_state * 0x2545F4914F6CDD1Du;
    return lo + (hi - lo) * (float)((double)(r >> 11) / 9007199254740992.0);
}

static float *random_array(size_t n, float lo, float hi) {
    float *p = malloc(n * sizeof *p);
    if (p == NULL) {
        fprintf(stderr, "dynconv-demo: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; ++i) {
        p[i] = uniform(lo, hi);
    }
    return p;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void check(dynconv_status st, const char *what) {
    if (st != DYNCONV_OK) {
        fprintf(stderr, "dynconv-demo: %s failed: %s (%s)\n", what, dynconv_status_string(st),
                dynconv_last_error_message());
        exit(1);
    }
}

static void usage(FILE *f) {
    fprintf(f, "usage: dynconv-demo [--batch N] [--channels C] [--size S] [--kernels K] "
               "[--repeats R]\n"
               "Runs a 3x3 dynamic convolution (C -> C channels, S x S input, K kernels)\n"
               "on random data and reports the attention, a correctness check and timings.\n");
}

static options parse(int argc, char **argv) {
    options o = {8, 64, 56, 4, 21};
    /* Options come in pairs (name, value), so the loop steps by two. */
    for (int i = 1; i < argc; i += 2) {
        long *target = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--batch") == 0) {
            target = &o.batch;
        } else if (strcmp(argv[i], "--channels") == 0) {
            target = &o.channels;
        } else if (strcmp(argv[i], "--size") == 0) {
            target = &o.size;
        } else if (strcmp(argv[i], "--kernels") == 0) {
            target = &o.kernels;
        } else if (strcmp(argv[i], "--repeats") == 0) {
            target = &o.repeats;
        }
        char *end = NULL;
        if (target == NULL || i + 1 >= argc ||
            (*target = strtol(argv[i + 1], &end, 10), *end != '\0') || *target <= 0 ||
            *target > (target == &o.channels ? 4096 : 100000)) {
            fprintf(stderr, "dynconv-demo: bad option '%s'\n", argv[i]);
            usage(stderr);
            exit(2);
        }
    }
    return o;
}

/* A layer with K random kernels (fixed seed); the caller frees the arrays. */
typedef struct layer_data {
    long kernels, hidden;
    float *weight, *bias, *fc1, *fc2;
    dynconv_conv2d *handle;
    size_t workspace; /* bytes, as reshape reports it for this batch and size */
} layer_data;

static layer_data make_layer(const options *o, long kernels) {
    const long c = o->channels, hidden = c / 4 > 0 ? c / 4 : 1;
    const dynconv_conv2d_geometry g = {c, c, 3, 3, 1, 1, 1, 1, 1, 1, 1, kernels, hidden};
    const float bound = 1.0f / sqrtf((float)(c * 9));
    layer_data d = {kernels, hidden, random_array((size_t)(kernels * c * c * 9), -bound, bound),
                    random_array((size_t)(kernels * c), -bound, bound),
                    random_array((size_t)(hidden * c), -3.0f / sqrtf((float)c), 3.0f / sqrtf((float)c)),
                    random_array((size_t)(kernels * hidden), -3.0f / sqrtf((float)hidden),
                                 3.0f / sqrtf((float)hidden)),
                    NULL, 0};
    const dynconv_conv2d_weights weights = {d.weight, d.bias, d.fc1, NULL, d.fc2, NULL};
    check(dynconv_conv2d_create(&g, &weights, 1.0f, 0, &d.handle), "create");
    check(dynconv_conv2d_reshape(d.handle, o->batch, o->size, o->size, NULL, NULL,
                                 &d.workspace),
          "reshape");
    return d;
}

static void free_layer(layer_data *d) {
    dynconv_conv2d_destroy(d->handle);
    free(d->weight), free(d->bias), free(d->fc1), free(d->fc2);
}

/* Parameters a layer computes with: K kernels with their biases and, for K > 1, the attention
 * (fc1 and fc2 without biases here). With K = 1 the library skips the attention (there is
 * nothing to choose), so its arrays do not count. */
static double param_count(const options *o, const layer_data *d) {
    const double c = (double)o->channels, k = (double)d->kernels;
    const double attention = d->kernels > 1 ? (double)d->hidden * c + k * (double)d->hidden : 0;
    return k * c * c * 9.0 + k * c + attention;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall and CPU (all of the process's threads) seconds of each timed forward. */
typedef struct timing {
    double *wall, *cpu;
} timing;

static void timed_forward(dynconv_conv2d *layer, const float *x, float *y, float *pi,
                          timing *t, long r) {
    const double w0 = now_seconds(), c0 = cpu_seconds();
    check(dynconv_conv2d_forward(layer, x, y, pi, NULL, 0), "forward");
    t->cpu[r] = cpu_seconds() - c0;
    t->wall[r] = now_seconds() - w0;
}

/* Sorts in place; returns the median. */
static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Largest difference between output channel 0 of sample 0 and a direct double-precision
 * convolution with the kernel mixed from the attention the layer reported. */
static double check_channel0(const options *o, const layer_data *d, const float *x,
                             const float *y, const float *pi) {
    const long c = o->channels, s = o->size;
    double w[9 * 4096], b = 0.0, worst = 0.0;
    for (long j = 0; j < c * 9; ++j) {
        w[j] = 0.0;
        for (long k = 0; k < d->kernels; ++k) {
            w[j] += (double)pi[k] * (double)d->weight[k * c * c * 9 + j];
        }
    }
    for (long k = 0; k < d->kernels; ++k) {
        b += (double)pi[k] * (double)d->bias[k * c];
    }
    for (long i = 0; i < s; ++i) {
        for (long j = 0; j < s; ++j) {
            double acc = b;
            for (long ci = 0; ci < c; ++ci) {
                for (long u = 0; u < 3; ++u) {
                    for (long v = 0; v < 3; ++v) {
                        const long ii = i + u - 1, jj = j + v - 1;
                        if (ii >= 0 && ii < s && jj >= 0 && jj < s) {
                            acc += w[(ci * 3 + u) * 3 + v] * (double)x[(ci * s + ii) * s + jj];
                        }
                    }
                }
            }
            const double diff = fabs(acc - (double)y[i * s + j]);
            worst = diff > worst ? diff : worst;
        }
    }
    return worst;
}

int main(int argc, char **argv) {
    const options o = parse(argc, argv);
    const long n = o.batch, c = o.channels, s = o.size, k = o.kernels;
    printf("libdynconv %s: dynamic 3x3 convolution, %ld -> %ld channels, %ldx%ld input, "
           "batch %ld, K = %ld kernels\n",
           dynconv_version_string(), c, c, s, s, n, k);
    const char *core = dynconv_blas_core();
    printf("BLAS: %s\n  core %s, %d thread(s)\n", dynconv_blas_config(), core,
           dynconv_blas_num_threads());
    if (strcmp(core, "Prescott") == 0) {
        printf("  note: this is OpenBLAS's generic SSE3 fallback; on an AVX2 or AVX-512 CPU set\n"
               "  OPENBLAS_CORETYPE=Haswell or SkylakeX before starting the program for full "
               "speed.\n");
    }

    /* Samples with different brightness and contrast, so their attention differs. */
    float *x = malloc((size_t)(n * c * s * s) * sizeof *x);
    for (long i = 0; i < n; ++i) {
        const float offset = uniform(-1.0f, 1.0f), scale = uniform(0.5f, 2.0f);
        for (long j = 0; j < c * s * s; ++j) {
            x[i * c * s * s + j] = offset + scale * uniform(-1.0f, 1.0f);
        }
    }
    float *y = malloc((size_t)(n * c * s * s) * sizeof *y);
    float *pi = malloc((size_t)(n * k) * sizeof *pi);
    layer_data dyn = make_layer(&o, k);
    layer_data single = make_layer(&o, 1);
    check(dynconv_conv2d_forward(dyn.handle, x, y, pi, NULL, 0), "forward");

    printf("\nattention per sample (softmax over the %ld kernels, T = 1):\n", k);
    for (long i = 0; i < n && i < 6; ++i) {
        printf("  sample %ld:", i);
        for (long j = 0; j < k && j < 8; ++j) {
            printf(" %.3f", (double)pi[i * k + j]);
        }
        printf("%s\n", k > 8 ? " ..." : "");
    }
    printf("check: sample 0, channel 0 against a direct double-precision loop: max |diff| = "
           "%.2e\n", check_channel0(&o, &dyn, x, y, pi));

    /* Warm-up of both, then alternate: dynamic, single, dynamic, single, ... */
    check(dynconv_conv2d_forward(single.handle, x, y, NULL, NULL, 0), "forward");
    const long reps = o.repeats;
    double *buf = malloc((size_t)(4 * reps) * sizeof *buf);
    if (buf == NULL) {
        fprintf(stderr, "dynconv-demo: out of memory\n");
        return 1;
    }
    timing td = {buf, buf + reps}, ts = {buf + 2 * reps, buf + 3 * reps};
    for (long r = 0; r < reps; ++r) {
        timed_forward(dyn.handle, x, y, pi, &td, r);
        timed_forward(single.handle, x, y, NULL, &ts, r);
    }
    const double md = median(td.wall, reps), ms = median(ts.wall, reps);
    const double cd = median(td.cpu, reps), cs = median(ts.cpu, reps);
    int threads = 0;
    check(dynconv_conv2d_get_num_threads(dyn.handle, &threads), "get_num_threads");

    const double flops = 2.0 * (double)n * (double)c * (double)(s * s) * (double)c * 9.0;
    printf("\n%ld forwards of each, alternating, %d thread(s) per layer; wall time median and\n"
           "min - max, CPU time (all threads) median; weights and workspace in MiB:\n", reps,
           threads);
    printf("  %-23s %8s %19s %7s %7s %10s %7s %9s\n", "", "wall ms", "min - max ms", "CPU ms",
           "GFLOP/s", "parameters", "weights", "workspace");
    const layer_data *layers[2] = {&dyn, &single};
    const double med[2] = {md, ms}, cpu[2] = {cd, cs};
    const timing *tm[2] = {&td, &ts};
    for (int i = 0; i < 2; ++i) {
        char name[32];
        snprintf(name, sizeof name, i == 0 ? "dynamic (K = %ld)" : "single kernel (K = %ld)",
                 layers[i]->kernels);
        const double params = param_count(&o, layers[i]);
        printf("  %-23s %8.2f %8.2f - %8.2f %7.2f %7.1f %10.0f %7.2f %9.2f\n", name,
               1e3 * med[i], 1e3 * tm[i]->wall[0], 1e3 * tm[i]->wall[reps - 1], 1e3 * cpu[i],
               flops / med[i] * 1e-9, params, 4.0 * params / 1048576.0,
               (double)layers[i]->workspace / 1048576.0);
    }
    printf("  cost of dynamic over single kernel: %.2fx wall (median), %.2fx CPU time\n",
           md / ms, cd / cs);
    if (tm[0]->wall[reps - 1] > 1.5 * tm[0]->wall[0] ||
        tm[1]->wall[reps - 1] > 1.5 * tm[1]->wall[0]) {
        printf("  note: the slowest forward took over 1.5x the fastest: the machine is busy, "
               "the ratio is less certain\n  (more --repeats help)\n");
    }
    free(buf);
    free_layer(&dyn);
    free_layer(&single);
    free(x), free(y), free(pi);
    return 0;
}
