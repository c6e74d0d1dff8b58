/* dynconv-demo: runs a dynamic convolution layer on random data and shows what it does and
 * what it costs.
 *
 *   dynconv-demo [--batch N] [--channels C] [--size S] [--kernels K] [--repeats R]
 *
 * Default: a ResNet-style 3x3 layer, 64 -> 64 channels, 56x56, K = 4 kernels, attention hidden
 * size C/4, batch 8. It prints the per-sample attention (every sample gets its own mixture of
 * kernels), checks one output channel against a direct double-precision loop, and times the
 * dynamic layer against the same layer with a single kernel (K = 1). */
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
    options o = {8, 64, 56, 4, 10};
    for (int i = 1; i < argc; ++i) {
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
        ++i;
    }
    return o;
}

/* A layer with K random kernels (fixed seed); the caller frees the arrays. */
typedef struct layer_data {
    long kernels, hidden;
    float *weight, *bias, *fc1, *fc2;
    dynconv_conv2d *handle;
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
                    NULL};
    const dynconv_conv2d_weights weights = {d.weight, d.bias, d.fc1, NULL, d.fc2, NULL};
    check(dynconv_conv2d_create(&g, &weights, 1.0f, 0, &d.handle), "create");
    check(dynconv_conv2d_reshape(d.handle, o->batch, o->size, o->size, NULL, NULL, NULL),
          "reshape");
    return d;
}

static void free_layer(layer_data *d) {
    dynconv_conv2d_destroy(d->handle);
    free(d->weight), free(d->bias), free(d->fc1), free(d->fc2);
}

/* Median wall time of `repeats` forwards after one warm-up. */
static double time_forward(const options *o, dynconv_conv2d *layer, const float *x, float *y,
                           float *pi) {
    check(dynconv_conv2d_forward(layer, x, y, pi, NULL, 0), "forward");
    double *times = malloc((size_t)o->repeats * sizeof *times);
    for (long r = 0; r < o->repeats; ++r) {
        const double t0 = now_seconds();
        check(dynconv_conv2d_forward(layer, x, y, pi, NULL, 0), "forward");
        times[r] = now_seconds() - t0;
    }
    qsort(times, (size_t)o->repeats, sizeof *times, compare_double);
    const double median = times[o->repeats / 2];
    free(times);
    return median;
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
    const double t_dyn = time_forward(&o, dyn.handle, x, y, pi);

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
    free_layer(&dyn);

    layer_data single = make_layer(&o, 1);
    const double t_single = time_forward(&o, single.handle, x, y, NULL);
    free_layer(&single);

    const double flops = 2.0 * (double)n * (double)c * (double)(s * s) * (double)c * 9.0;
    printf("\nmedian of %ld forwards:\n", o.repeats);
    printf("  dynamic layer (K = %ld): %8.3f ms  %6.1f GFLOP/s\n", k, 1e3 * t_dyn,
           flops / t_dyn * 1e-9);
    printf("  single kernel (K = 1):  %8.3f ms  %6.1f GFLOP/s\n", 1e3 * t_single,
           flops / t_single * 1e-9);
    printf("  cost of dynamic over single kernel: %.2fx\n", t_dyn / t_single);
    free(x), free(y), free(pi);
    return 0;
}
