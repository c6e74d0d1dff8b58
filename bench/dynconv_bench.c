/* dynconv-bench: Google Benchmark suite for libdynconv, written in C through bench/shim.h.
 *
 *   dynconv-bench [--layers FILE] [--batches 1,16] [--threads 1,2] [--sgemm N]
 *                 [--benchmark_filter=REGEX] [other --benchmark_* flags]
 *
 * Benchmarks, for every layer of the list file (default: bench/layers.txt of the source tree):
 *   layer/NAME/bB/tT/dynamic   the public forward, K = 4 kernels, hidden = C_in / 4
 *   layer/NAME/bB/tT/static    the same shape with K = 1 (a static convolution)
 *   module/NAME/bB/MODULE      one stage of the forward pipeline on its own, 1 thread:
 *                              pool, attention, aggregate, im2col, gemm (the generic path's
 *                              two halves), conv (the per-sample convolution, any path)
 * and sgemm/N/tT, a square N x N x N cblas_sgemm: the GFLOP/s this machine's BLAS reaches,
 * which the convolutions are compared against; membw/256/tT, the sum of a 256 MiB float array
 * on T threads: the memory read bandwidth, against which bench/report.py sets the reading of
 * the K kernel sets.
 * The dynamic layer benchmarks also record the plan their handle made (counters plan_engine,
 * plan_wino, plan_chunk, plan_team, plan_nr), so that the report need not guess it from the
 * shape.
 * FLOPS counters count the convolution's multiply-adds only (2 * N * C_out * C_in/g * kh * kw *
 * H_out * W_out) for both variants, so that the dynamic layer's extra work shows as a lower rate.
 * Times are wall-clock: worker threads do work the calling thread's CPU time would not show. */
#include "dcio.h"
#include "shim.h"

#include <dynconv/dynconv.h>

#include "aggregation.h"
#include "attention.h"
#include "conv.h"
#include "exec.h"
#include "internal.h"
#include "plan.h"
#include "tensor.h"
#include "threadpool.h"

#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DYNCONV_BENCH_DEFAULT_LAYERS
#define DYNCONV_BENCH_DEFAULT_LAYERS "bench/layers.txt"
#endif

#define MAX_LIST 16       /* entries of --batches / --threads */

/* One line of the list file (read by dcio_workload_read, grammar in bench/layers.txt). */
typedef dcio_workload_layer layer_spec;

/* What one registered benchmark runs; lives in an array that outlives dcb_run. */
typedef struct bench_case {
    const layer_spec *layer;
    int64_t batch;
    int threads;
    int64_t kernels;       /* 4: dynamic, 1: static */
    int module;            /* for module benchmarks, a module_kind */
    int64_t sgemm_n;       /* for the sgemm benchmark */
} bench_case;

typedef enum module_kind {
    MOD_POOL, MOD_ATTENTION, MOD_AGGREGATE, MOD_IM2COL, MOD_GEMM, MOD_CONV
} module_kind;
static const char *const module_names[] = {"pool",   "attention", "aggregate",
                                           "im2col", "gemm",      "conv"};

enum { DYNAMIC_KERNELS = DCIO_WORKLOAD_KERNELS };

/* ---------------------------------------------------------------------------------------- */
/* Data                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static uint64_t rng_state = 0x2545F4914F6CDD1Du;

static float uniform(float lo, float hi) {
    /* xorshift64*: reproducible data without depending on the C library's rand(). */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    const uint64_t r = rng_state * 0x2545F4914F6CDD1Du;
    return lo + (hi - lo) * (float)((double)(r >> 11) / 9007199254740992.0);
}

/* Aligned buffer of n floats in [-scale, scale], or NULL (n == 0 or no memory). Values of
 * moderate size keep every sum far from denormals, which would distort the timings. */
static float *random_buffer(size_t n, float scale) {
    size_t bytes;
    if (n == 0 || !dc_mul_size(n, sizeof(float), &bytes)) {
        return NULL;
    }
    float *p = dc_aligned_alloc(bytes);
    if (p != NULL) {
        for (size_t i = 0; i < n; ++i) {
            p[i] = uniform(-scale, scale);
        }
    }
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Threads                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Stages called on their own and the sgemm run on the BLAS's threads; set before every
 * benchmark, so none inherits another's setting. A layer's forward uses its handle's threads
 * (dynconv_conv2d_set_num_threads, on the default pool) and expects one BLAS thread per call,
 * the setting the library makes when its first pool starts (it never changes it back, so the
 * layer benchmarks set it again after an sgemm benchmark on two threads). */
static void set_blas_threads(int threads) { openblas_set_num_threads(threads); }

/* ---------------------------------------------------------------------------------------- */
/* Shapes                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static int64_t out_size(const layer_spec *l) {
    return (l->size + 2 * l->pad - l->kernel) / l->stride + 1;
}

/* Floating-point operations of the convolution proper (multiply and add counted apart). */
static double conv_flops(const layer_spec *l, int64_t batch) {
    const double o = (double)out_size(l);
    return 2.0 * (double)batch * (double)l->out * (double)(l->in / l->groups) *
           (double)(l->kernel * l->kernel) * o * o;
}

static dc_conv_shape conv_shape_of(const layer_spec *l) {
    dc_conv_shape s;
    memset(&s, 0, sizeof s);
    s.in_channels = (size_t)l->in;
    s.out_channels = (size_t)l->out;
    s.groups = (size_t)l->groups;
    s.height = s.width = (size_t)l->size;
    s.kernel_h = s.kernel_w = (size_t)l->kernel;
    s.stride_h = s.stride_w = (size_t)l->stride;
    s.pad_h = s.pad_w = (size_t)l->pad;
    s.dilation_h = s.dilation_w = 1;
    s.out_h = s.out_w = (size_t)out_size(l);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Benchmarks                                                                               */
/* ---------------------------------------------------------------------------------------- */

static void fail(dcb_state *st, const char *what, dynconv_status status) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s (%s)", what, dynconv_status_string(status),
             dynconv_last_error_message());
    dcb_skip_with_error(st, msg);
}

/* Create flags of the layers (--weights borrowed: DYNCONV_FLAG_BORROW_WEIGHTS). */
static uint32_t layer_flags;

/* The public forward of one layer, dynamic (K = 4) or static (K = 1). */
static void bm_layer(dcb_state *st, void *arg) {
    const bench_case *c = arg;
    const layer_spec *l = c->layer;
    const dynconv_conv2d_geometry g = dcio_workload_geometry(l, c->kernels);
    const size_t kernel_len = (size_t)(l->out * (l->in / l->groups) * l->kernel * l->kernel);
    const int64_t o = out_size(l);
    const size_t in_count = (size_t)(c->batch * l->in * l->size * l->size);
    const size_t out_count = (size_t)(c->batch * l->out * o * o);
    const float wscale = 1.0f / (float)(l->in / l->groups * l->kernel * l->kernel);

    float *weight = random_buffer((size_t)c->kernels * kernel_len, wscale);
    float *bias = random_buffer((size_t)(c->kernels * l->out), 0.1f);
    float *fc1 = random_buffer((size_t)(g.hidden * l->in), 1.0f);
    float *fc2 = random_buffer((size_t)(c->kernels * g.hidden), 1.0f);
    float *fc2_bias = random_buffer((size_t)c->kernels, 1.0f);
    float *x = random_buffer(in_count, 1.0f);
    float *y = random_buffer(out_count, 1.0f);
    dynconv_conv2d *layer = NULL;
    if (weight == NULL || bias == NULL || fc1 == NULL || fc2 == NULL || fc2_bias == NULL ||
        x == NULL || y == NULL) {
        dcb_skip_with_error(st, "out of memory");
        goto done;
    }

    /* Biases as in the common PyTorch module: conv and fc2 have one, fc1 has none. */
    const dynconv_conv2d_weights w = {.weight = weight, .bias = bias, .fc1_weight = fc1,
                                      .fc2_weight = fc2, .fc2_bias = fc2_bias};
    /* The weights copied into the handle, as by default: the handle then keeps them packed for
     * the engine as well (borrowed weights, --weights borrowed, are packed in every forward). */
    dynconv_status status = dynconv_conv2d_create(&g, &w, 1.0f, layer_flags, &layer);
    if (status != DYNCONV_OK) {
        fail(st, "create", status);
        goto done;
    }
    set_blas_threads(1);
    /* Before reshape: the workspace holds one slot per thread. */
    status = dynconv_conv2d_set_num_threads(layer, c->threads);
    if (status != DYNCONV_OK) {
        fail(st, "set_num_threads", status);
        goto done;
    }
    size_t workspace = 0;
    status = dynconv_conv2d_reshape(layer, c->batch, l->size, l->size, NULL, NULL, &workspace);
    if (status != DYNCONV_OK) {
        fail(st, "reshape", status);
        goto done;
    }
    /* Warm-up outside the measurement: first-touch of the workspace and the BLAS's buffers. */
    status = dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0);
    if (status != DYNCONV_OK) {
        fail(st, "forward", status);
        goto done;
    }
    while (dcb_keep_running(st)) {
        status = dynconv_conv2d_forward(layer, x, y, NULL, NULL, 0);
        if (status != DYNCONV_OK) {
            fail(st, "forward", status);
            break;
        }
    }
    dcb_counter(st, "FLOPS", conv_flops(l, c->batch), DCB_RATE_PER_ITERATION);
    dcb_counter(st, "workspace_bytes", (double)workspace, DCB_PLAIN);
    if (c->kernels > 1) {
        /* What the forward does with this shape, from the handle itself: whether it runs on
         * the own engine and with which tile width, how many kernels a thread mixes in one pass
         * over the K sets, and how many threads the forward really uses. */
        const dc_layer *core = &layer->core;
        dcb_counter(st, "plan_engine", core->engine_on ? 1.0 : 0.0, DCB_PLAIN);
        dcb_counter(st, "plan_wino", core->wino_on ? 1.0 : 0.0, DCB_PLAIN);
        dcb_counter(st, "plan_nr", core->gemm != NULL ? (double)core->gemm->nr : 0.0, DCB_PLAIN);
        dcb_counter(st, "plan_chunk", (double)layer->chunk, DCB_PLAIN);
        dcb_counter(st, "plan_team",
                    (double)dc_exec_team(core, (size_t)c->batch, layer->threads), DCB_PLAIN);
    }
    {
        /* The count the handle really uses, as it reports it. */
        int used = 0;
        dynconv_conv2d_get_num_threads(layer, &used);
        char label[128];
        snprintf(label, sizeof label, "K=%" PRId64 " threads=%d core=%s", c->kernels, used,
                 dynconv_blas_core());
        dcb_set_label(st, label);
    }
done:
    dynconv_conv2d_destroy(layer);
    dc_aligned_free(weight);
    dc_aligned_free(bias);
    dc_aligned_free(fc1);
    dc_aligned_free(fc2);
    dc_aligned_free(fc2_bias);
    dc_aligned_free(x);
    dc_aligned_free(y);
}

/* One stage of the forward on its own (internal layers), over a whole batch, 1 BLAS thread. */
static void bm_module(dcb_state *st, void *arg) {
    const bench_case *c = arg;
    const layer_spec *l = c->layer;
    const dc_conv_shape s = conv_shape_of(l);
    const size_t n = (size_t)c->batch, k = DYNAMIC_KERNELS;
    const size_t hidden = (size_t)dcio_workload_geometry(l, DYNAMIC_KERNELS).hidden;
    const size_t g_in = s.in_channels / s.groups, g_out = s.out_channels / s.groups;
    const size_t depth = g_in * s.kernel_h * s.kernel_w, plane = s.out_h * s.out_w;
    const size_t in_plane = s.height * s.width, kernel_len = s.out_channels * depth;

    /* im2col needs depth * plane floats; the convolution itself needs dc_conv_scratch_floats
     * (for depthwise layers a padded input channel, which can be the larger of the two). */
    size_t scratch = 0;
    if (!dc_conv_scratch_floats(&s, &scratch)) {
        dcb_skip_with_error(st, "scratch size overflows");
        return;
    }
    float *x = random_buffer(n * s.in_channels * in_plane, 1.0f);
    float *pooled = random_buffer(n * s.in_channels, 1.0f);
    float *hid = random_buffer(n * hidden, 1.0f);
    float *pi = random_buffer(n * k, 0.5f);
    float *fc1 = random_buffer(hidden * s.in_channels, 1.0f);
    float *fc2 = random_buffer(k * hidden, 1.0f);
    float *params = random_buffer(k * kernel_len, 0.1f);
    float *mixed = random_buffer(n * kernel_len, 0.1f);
    float *col = random_buffer(depth * plane > scratch ? depth * plane : scratch, 1.0f);
    float *y = random_buffer(s.out_channels * plane, 1.0f);
    float *bias = random_buffer(s.out_channels, 0.1f);
    if (x == NULL || pooled == NULL || hid == NULL || pi == NULL || fc1 == NULL || fc2 == NULL ||
        params == NULL || mixed == NULL || col == NULL || y == NULL || bias == NULL) {
        dcb_skip_with_error(st, "out of memory");
        goto done;
    }
    const dc_attention att = {s.in_channels, hidden, k, fc1, NULL, fc2, NULL};
    double flops = 0.0;
    set_blas_threads(1);
    switch ((module_kind)c->module) {
    case MOD_POOL:
        flops = (double)(n * s.in_channels * in_plane);
        while (dcb_keep_running(st)) {
            dc_global_avg_pool(x, n, s.in_channels, in_plane, pooled);
        }
        break;
    case MOD_ATTENTION:
        flops = 2.0 * (double)(n * hidden * (s.in_channels + k));
        while (dcb_keep_running(st)) {
            dc_attention_forward(&att, n, pooled, 1.0f, hid, pi);
        }
        break;
    case MOD_AGGREGATE:
        flops = 2.0 * (double)(n * k * kernel_len);
        while (dcb_keep_running(st)) {
            dc_aggregate(n, k, kernel_len, pi, params, mixed);
        }
        break;
    case MOD_IM2COL:
        /* What the generic path copies for every sample and group; nothing for 1x1. */
        if (dc_conv_is_pointwise(&s)) {
            dcb_skip_with_error(st, "pointwise layer: no im2col");
            goto done;
        }
        while (dcb_keep_running(st)) {
            for (size_t i = 0; i < n; ++i) {
                for (size_t g = 0; g < s.groups; ++g) {
                    dc_im2col(&s, x + (i * s.in_channels + g * g_in) * in_plane, g_in, col);
                }
            }
        }
        break;
    case MOD_GEMM:
        /* The products of the generic path alone: [g_out x depth] x [depth x plane] per sample
         * and group, on an already unfolded input. */
        flops = conv_flops(l, c->batch);
        while (dcb_keep_running(st)) {
            for (size_t i = 0; i < n; ++i) {
                for (size_t g = 0; g < s.groups; ++g) {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)g_out,
                                (blasint)plane, (blasint)depth, 1.0f,
                                mixed + i * kernel_len + g * g_out * depth, (blasint)depth, col,
                                (blasint)plane, 0.0f, y + g * g_out * plane, (blasint)plane);
                }
            }
        }
        break;
    case MOD_CONV:
        /* The per-sample convolution as the library runs it, whichever path the shape takes
         * (im2col + GEMM, or a faster one), with bias. */
        flops = conv_flops(l, c->batch);
        while (dcb_keep_running(st)) {
            for (size_t i = 0; i < n; ++i) {
                dc_conv2d_sample(&s, x + i * s.in_channels * in_plane, mixed + i * kernel_len,
                                 bias, y, col);
            }
        }
        break;
    }
    if (flops > 0.0) {
        dcb_counter(st, "FLOPS", flops, DCB_RATE_PER_ITERATION);
    }
done:
    dc_aligned_free(x);
    dc_aligned_free(pooled);
    dc_aligned_free(hid);
    dc_aligned_free(pi);
    dc_aligned_free(fc1);
    dc_aligned_free(fc2);
    dc_aligned_free(params);
    dc_aligned_free(mixed);
    dc_aligned_free(col);
    dc_aligned_free(y);
    dc_aligned_free(bias);
}

/* The machine's reference rate: one large square product. */
static void bm_sgemm(dcb_state *st, void *arg) {
    const bench_case *c = arg;
    const size_t n = (size_t)c->sgemm_n;
    float *a = random_buffer(n * n, 1.0f), *b = random_buffer(n * n, 1.0f);
    float *out = random_buffer(n * n, 1.0f);
    if (a == NULL || b == NULL || out == NULL) {
        dcb_skip_with_error(st, "out of memory");
    } else {
        set_blas_threads(c->threads);
        const blasint bn = (blasint)n;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bn, bn, bn, 1.0f, a, bn, b, bn,
                    0.0f, out, bn); /* warm-up */
        while (dcb_keep_running(st)) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bn, bn, bn, 1.0f, a, bn, b,
                        bn, 0.0f, out, bn);
        }
        dcb_counter(st, "FLOPS", 2.0 * (double)n * (double)n * (double)n, DCB_RATE_PER_ITERATION);
        char label[96];
        snprintf(label, sizeof label, "threads=%d core=%s", c->threads, dynconv_blas_core());
        dcb_set_label(st, label);
    }
    dc_aligned_free(a);
    dc_aligned_free(b);
    dc_aligned_free(out);
}

/* The memory read bandwidth: a float array of MEMBW_MIB MiB, far larger than any cache, summed
 * on `threads` threads of a pool, each its own contiguous share. */
enum { MEMBW_MIB = 256, MEMBW_LANES = 32 };

typedef struct membw_ctx {
    const float *data;
    size_t count;
    float sums[64];        /* one per thread (at most 64 threads for this benchmark) */
} membw_ctx;

static void membw_task(void *p, size_t index, size_t count) {
    membw_ctx *c = p;
    size_t i0, i1;
    dc_exec_share(c->count / MEMBW_LANES, index, count, &i0, &i1);
    /* Independent lanes, so that the compiler can keep them in vector registers: the loop is
     * then limited by the loads, not by the latency of one chain of additions. */
    float acc[MEMBW_LANES] = {0};
    for (size_t i = i0 * MEMBW_LANES; i < i1 * MEMBW_LANES; i += MEMBW_LANES) {
        for (size_t j = 0; j < MEMBW_LANES; ++j) {
            acc[j] += c->data[i + j];
        }
    }
    float sum = 0.0f;
    for (size_t j = 0; j < MEMBW_LANES; ++j) {
        sum += acc[j];
    }
    c->sums[index] = sum;
}

static void bm_membw(dcb_state *st, void *arg) {
    const bench_case *c = arg;
    const size_t count = (size_t)MEMBW_MIB << 20 >> 2;
    membw_ctx *ctx = calloc(1, sizeof *ctx);
    float *data = random_buffer(count, 1.0f);
    dc_pool *pool = c->threads <= 64 ? dc_pool_create((size_t)c->threads) : NULL;
    if (ctx == NULL || data == NULL || pool == NULL) {
        dcb_skip_with_error(st, "out of memory, or no thread pool");
    } else {
        ctx->data = data;
        ctx->count = count;
        dc_pool_run(pool, (size_t)c->threads, membw_task, ctx); /* warm-up */
        volatile float sink = 0.0f;
        while (dcb_keep_running(st)) {
            dc_pool_run(pool, (size_t)c->threads, membw_task, ctx);
            sink += ctx->sums[0];
        }
        (void)sink;
        dcb_counter(st, "bytes_read", (double)count * sizeof(float), DCB_PLAIN);
        dcb_counter(st, "bytes_per_second", (double)count * sizeof(float),
                    DCB_RATE_PER_ITERATION);
        char label[64];
        snprintf(label, sizeof label, "threads=%d", c->threads);
        dcb_set_label(st, label);
    }
    dc_pool_destroy(pool);
    dc_aligned_free(data);
    free(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Command line and list file                                                               */
/* ---------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: dynconv-bench [--layers FILE] [--batches LIST] [--threads LIST] [--sgemm N]\n"
            "                     [--engine auto|off|on] [--rows auto|off|on]\n"
            "                     [--kernel auto|positions|channels] [--weights copied|borrowed]\n"
            "                     [--benchmark_filter=REGEX]\n"
            "                     [--benchmark_* flags]\n"
            "  --layers FILE    layer list (default %s)\n"
            "  --batches LIST   comma-separated batch sizes (default 1,16)\n"
            "  --threads LIST   comma-separated thread counts (default 1,2)\n"
            "  --sgemm N        size of the square sgemm reference, 0 for none (default 2048);\n"
            "                   0 also drops the memory bandwidth reference\n"
            "  --engine MODE    convolution path of the layers: the library's rule (auto, the\n"
            "                   default), im2col + BLAS only (off), the own engine wherever the\n"
            "                   layer has one (on)\n"
            "  --kernel KIND    the engine's micro-kernel: chosen by shape (auto, the default),\n"
            "                   vectors along the output positions or along the channels, for\n"
            "                   every layer\n"
            "  --rows MODE      a sample convolved alone on the engine: the row-panel driver\n"
            "                   by the library's rule (auto), never (off), always (on)\n"
            "  --weights HOW    the layers copy their weights (copied, the default) or borrow\n"
            "                   them (borrowed: mixed and packed in every forward)\n"
            "Benchmark names: layer/NAME/bB/tT/{dynamic,static}, module/NAME/bB/MODULE,\n"
            "sgemm/N/tT, membw/256/tT. --benchmark_list_tests lists them. Google Benchmark's\n"
            "flags include --benchmark_filter, --benchmark_repetitions, --benchmark_min_time\n"
            "(seconds), --benchmark_out=FILE with --benchmark_out_format=json. Exit status:\n"
            "0, 1 when a benchmark failed, 2 on bad usage or a bad list file.\n",
            DYNCONV_BENCH_DEFAULT_LAYERS);
}

/* Parses a positive integer no larger than max; false on anything else. */
static bool parse_int(const char *s, int64_t max, int64_t *out) {
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v <= 0 || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* "1,16" -> {1, 16}; false on an empty, malformed or too long list. */
static bool parse_list(const char *s, int64_t max, int64_t *values, size_t *count) {
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        return false;
    }
    strcpy(buf, s);
    *count = 0;
    for (char *tok = strtok(buf, ","); tok != NULL; tok = strtok(NULL, ",")) {
        if (*count == MAX_LIST || !parse_int(tok, max, &values[*count])) {
            return false;
        }
        ++*count;
    }
    return *count > 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Context                                                                                  */
/* ---------------------------------------------------------------------------------------- */

/* Records what decides the speed, and warns when OpenBLAS runs one of its generic cores on a
 * CPU that has much wider vectors (the rule is dcio_blas_better_core's, shared with
 * `dynconv info` and scripts/openblas-env.sh). */
static void describe_machine(void) {
    dcio_cpu cpu;
    dcio_cpu_detect(&cpu);
    const char *core = dynconv_blas_core();
    const char *better = dcio_blas_better_core(core, &cpu);
    dcb_add_context("cpu_model", cpu.model);
    dcb_add_context("cpu_isa", dcio_cpu_isa(&cpu));
    dcb_add_context("blas_config", dynconv_blas_config());
    dcb_add_context("blas_core", core);
    dcb_add_context("blas_better_core", better != NULL ? better : "");
    dcb_add_context("thread_control",
                    "dynconv_conv2d_set_num_threads for the layers (their BLAS calls run on one "
                    "thread), openblas_set_num_threads for the stages alone and the sgemm");
    dcb_add_context("libdynconv_version", dynconv_version_string());
    const char *env = getenv("OPENBLAS_CORETYPE");
    dcb_add_context("OPENBLAS_CORETYPE", env != NULL ? env : "");
    if (better != NULL) {
        printf("WARNING: OpenBLAS runs its generic \"%s\" kernels on this %s CPU, several "
               "times slower than it can. Set OPENBLAS_CORETYPE=%s in the environment before "
               "starting the program (or source scripts/openblas-env.sh).\n",
               core, cpu.avx512_skylakex ? "AVX-512" : "AVX2", better);
        fflush(stdout);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Registration                                                                             */
/* ---------------------------------------------------------------------------------------- */

static bool add(const char *name, dcb_function fn, bench_case *c, const dcb_options *o) {
    if (dcb_register(name, fn, c, o) != 0) {
        fprintf(stderr, "dynconv-bench: cannot register %s\n", name);
        return false;
    }
    return true;
}

int main(int argc, char **argv) {
    /* Before Google Benchmark sees the arguments: it answers --help with its own flags only. */
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    dcb_initialize(&argc, argv);

    const char *layers_path = DYNCONV_BENCH_DEFAULT_LAYERS;
    int64_t batches[MAX_LIST] = {1, 16}, threads[MAX_LIST] = {1, 2}, sgemm_n = 2048;
    size_t n_batches = 2, n_threads = 2;
    /* Options come in pairs (name, value): the loop steps by two. */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (strcmp(a, "--layers") == 0 && v != NULL) {
            layers_path = v;
        } else if (strcmp(a, "--batches") == 0 && v != NULL) {
            ok = parse_list(v, 4096, batches, &n_batches);
        } else if (strcmp(a, "--threads") == 0 && v != NULL) {
            ok = parse_list(v, 1024, threads, &n_threads);
        } else if (strcmp(a, "--engine") == 0 && v != NULL) {
            /* Which convolution path the layers take: the library's rule, or one forced (to
             * measure both on the same build). */
            ok = strcmp(v, "auto") == 0 || strcmp(v, "off") == 0 || strcmp(v, "on") == 0;
            dc_exec_set_engine_mode(strcmp(v, "off") == 0  ? DC_ENGINE_NEVER
                                    : strcmp(v, "on") == 0 ? DC_ENGINE_ALWAYS
                                                           : DC_ENGINE_AUTO);
        } else if (strcmp(a, "--kernel") == 0 && v != NULL) {
            /* The engine's micro-kernel for every layer, whatever its shape (auto: the rule):
             * the widest ISA's, vectors along the positions or along the channels. */
            const dc_isa isa = dc_gemm_select()->isa;
            ok = strcmp(v, "auto") == 0 ||
                 (strcmp(v, "positions") == 0 && dc_gemm_force(isa, false)) ||
                 (strcmp(v, "channels") == 0 && dc_gemm_force(isa, true));
        } else if (strcmp(a, "--weights") == 0 && v != NULL) {
            ok = strcmp(v, "copied") == 0 || strcmp(v, "borrowed") == 0;
            layer_flags = strcmp(v, "borrowed") == 0 ? DYNCONV_FLAG_BORROW_WEIGHTS : 0;
        } else if (strcmp(a, "--rows") == 0 && v != NULL) {
            /* Whether a sample convolved alone takes the engine's row-panel driver: the rule,
             * never, or wherever the layer is on the engine. */
            ok = strcmp(v, "auto") == 0 || strcmp(v, "off") == 0 || strcmp(v, "on") == 0;
            dc_exec_set_rows_mode(strcmp(v, "off") == 0  ? DC_ENGINE_NEVER
                                  : strcmp(v, "on") == 0 ? DC_ENGINE_ALWAYS
                                                         : DC_ENGINE_AUTO);
        } else if (strcmp(a, "--sgemm") == 0 && v != NULL) {
            ok = strcmp(v, "0") == 0 ? (sgemm_n = 0, true) : parse_int(v, 16384, &sgemm_n);
        } else {
            fprintf(stderr, "dynconv-bench: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "dynconv-bench: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }

    layer_spec *layers = NULL;
    size_t n_layers = 0;
    dcio_error err;
    if (!dcio_workload_read(layers_path, &layers, &n_layers, &err)) {
        fprintf(stderr, "dynconv-bench: %s\n", err.message);
        return 2;
    }
    describe_machine();

    /* Every case the run may select; registered benchmarks point into this array. */
    const size_t n_cases = 2 * n_threads + n_layers * n_batches * (2 * n_threads + 6);
    bench_case *cases = calloc(n_cases, sizeof *cases);
    if (cases == NULL) {
        fprintf(stderr, "dynconv-bench: out of memory\n");
        free(layers);
        return 2;
    }
    /* Wall-clock time, and the process's CPU time beside it: with one thread the latter is
     * what the work costs even when other programs take the core away now and then. */
    const dcb_options timed = {.real_time = 1, .unit = DCB_MS, .process_cpu_time = 1};
    const dcb_options modules = {.real_time = 1, .unit = DCB_US};
    size_t next = 0;
    bool ok = true;
    char name[160];
    for (size_t t = 0; ok && sgemm_n > 0 && t < n_threads; ++t) {
        bench_case *c = &cases[next++];
        c->sgemm_n = sgemm_n;
        c->threads = (int)threads[t];
        snprintf(name, sizeof name, "sgemm/%" PRId64 "/t%d", sgemm_n, c->threads);
        ok = add(name, bm_sgemm, c, &timed);
    }
    /* The bandwidth reference goes with the sgemm one: both describe the machine. */
    for (size_t t = 0; ok && sgemm_n > 0 && t < n_threads; ++t) {
        bench_case *c = &cases[next++];
        c->threads = (int)threads[t];
        snprintf(name, sizeof name, "membw/%d/t%d", MEMBW_MIB, c->threads);
        ok = add(name, bm_membw, c, &timed);
    }
    for (size_t li = 0; ok && li < n_layers; ++li) {
        for (size_t b = 0; ok && b < n_batches; ++b) {
            for (size_t t = 0; ok && t < n_threads; ++t) {
                for (int v = 0; ok && v < 2; ++v) {
                    bench_case *c = &cases[next++];
                    c->layer = &layers[li];
                    c->batch = batches[b];
                    c->threads = (int)threads[t];
                    c->kernels = v == 0 ? DYNAMIC_KERNELS : 1;
                    snprintf(name, sizeof name, "layer/%s/b%" PRId64 "/t%d/%s", layers[li].name,
                             c->batch, c->threads, v == 0 ? "dynamic" : "static");
                    ok = add(name, bm_layer, c, &timed);
                }
            }
        }
    }
    for (size_t li = 0; ok && li < n_layers; ++li) {
        for (size_t b = 0; ok && b < n_batches; ++b) {
            for (int m = MOD_POOL; ok && m <= MOD_CONV; ++m) {
                const dc_conv_shape s = conv_shape_of(&layers[li]);
                if (m == MOD_IM2COL && dc_conv_is_pointwise(&s)) {
                    continue; /* nothing to unfold */
                }
                bench_case *c = &cases[next++];
                c->layer = &layers[li];
                c->batch = batches[b];
                c->threads = 1;
                c->module = m;
                snprintf(name, sizeof name, "module/%s/b%" PRId64 "/%s", layers[li].name,
                         c->batch, module_names[m]);
                ok = add(name, bm_module, c, &modules);
            }
        }
    }
    const int failures = ok ? dcb_run() : -1;
    free(cases);
    free(layers);
    if (!ok) {
        return 2;
    }
    if (failures != 0) {
        fprintf(stderr, "dynconv-bench: %d benchmark run(s) failed\n", failures);
        return 1;
    }
    return 0;
}
