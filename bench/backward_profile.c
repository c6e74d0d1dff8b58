/* dynconv-backward-profile: where the time of a dynamic conv2d's backward goes, layer by layer,
 * and the input gradient's GEMM on the library's engine against im2col + BLAS.
 *
 *   dynconv-backward-profile [--layers FILE] [--batch N] [--repeats R] [--filter SUBSTRING]
 *
 * One thread, process CPU time (what the process burnt, not the wall clock, so that other
 * processes on the cores inflate it little), medians over R repetitions; within a repetition
 * every timed piece runs once, one after the other (A B A B ...), so that a change of load hits
 * all of them alike. Per layer, in milliseconds for the whole batch:
 *   total_blas / total_engine: dynconv_conv2d_backward with every gradient, the input
 *     gradient's GEMM through BLAS / on the engine (two handles, one created under each mode);
 *   ratio: total_engine / total_blas, and the median of the per-repetition ratios;
 *   the pieces of the BLAS path, each over the batch: mix (the N aggregated kernels), dx_gemm
 *     (cblas_sgemm W_g^T dY_g per sample and group), col2im, dw (im2col + cblas_sgemm of the
 *     weight gradient), aggb (the kernel sets' and dpi's GEMMs), and on the engine dx_eng (the
 *     engine's GEMM with its packing of the transposed kernel, per sample and group).
 * Depthwise layers have no engine kernel: only their total is shown. */
#define _POSIX_C_SOURCE 200809L

#include <dynconv/dynconv.h>

#include "aggregation.h"
#include "conv.h"
#include "dcio.h"
#include "exec.h"
#include "gemm.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { KERNELS = DCIO_WORKLOAD_KERNELS, MAX_REPEATS = 51, PIECES = 8 };

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *alloc_floats(size_t count) {
    float *p = calloc(count ? count : 1, sizeof(float));
    if (p == NULL) {
        fprintf(stderr, "backward_profile: out of memory (%zu floats)\n", count);
        exit(1);
    }
    return p;
}

static void check(dynconv_status st, const char *what) {
    if (st != DYNCONV_OK) {
        fprintf(stderr, "backward_profile: %s: %s (%s)\n", what, dynconv_status_string(st),
                dynconv_last_error_message());
        exit(1);
    }
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return v[n / 2];
}

/* What the pieces work on: one layer's shape and buffers. */
typedef struct bench {
    dc_conv_shape s;
    const dc_gemm_kernel *k;
    size_t n, len, depth, g_in, g_out, plane, in_plane;
    float *x, *dy, *dx, *pi, *weight, *mixed, *col, *at, *dweight, *dpi;
    dynconv_conv2d *blas, *engine;
    const dynconv_conv2d_gradients *grads;
    const float *xin, *dyin;
} bench;

static void piece_total(const bench *b, dynconv_conv2d *layer) {
    check(dynconv_conv2d_backward(layer, b->xin, b->dyin, b->grads, 0, NULL, 0), "backward");
}

static void piece_mix(const bench *b) {
    dc_aggregate(b->n, KERNELS, b->len, b->pi, b->weight, b->mixed);
}

static void piece_dx_gemm(const bench *b) {
    const bool pw = dc_conv_is_pointwise(&b->s);
    for (size_t i = 0; i < b->n; ++i) {
        for (size_t g = 0; g < b->s.groups; ++g) {
            float *out = pw ? b->dx + (i * b->s.in_channels + g * b->g_in) * b->in_plane : b->col;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b->depth, (int)b->plane,
                        (int)b->g_out, 1.0f, b->mixed + i * b->len + g * b->g_out * b->depth,
                        (int)b->depth,
                        b->dy + (i * b->s.out_channels + g * b->g_out) * b->plane,
                        (int)b->plane, pw ? 1.0f : 0.0f, out, (int)b->plane);
        }
    }
}

static void piece_dx_engine(const bench *b) {
    const bool pw = dc_conv_is_pointwise(&b->s);
    for (size_t i = 0; i < b->n; ++i) {
        for (size_t g = 0; g < b->s.groups; ++g) {
            float *out = pw ? b->dx + (i * b->s.in_channels + g * b->g_in) * b->in_plane : b->col;
            dc_engine_input_grad(b->k, b->mixed + i * b->len + g * b->g_out * b->depth,
                                 b->depth, b->g_out,
                                 b->dy + (i * b->s.out_channels + g * b->g_out) * b->plane,
                                 b->plane, out, pw, b->at);
        }
    }
}

static void piece_col2im(const bench *b) {
    if (dc_conv_is_pointwise(&b->s)) {
        return;
    }
    for (size_t i = 0; i < b->n; ++i) {
        for (size_t g = 0; g < b->s.groups; ++g) {
            dc_col2im_add(&b->s, b->col, b->g_in,
                          b->dx + (i * b->s.in_channels + g * b->g_in) * b->in_plane);
        }
    }
}

static void piece_dw(const bench *b) {
    for (size_t i = 0; i < b->n; ++i) {
        dc_conv2d_sample_backward(&b->s, b->x + i * b->s.in_channels * b->in_plane,
                                  b->mixed + i * b->len, b->dy + i * b->s.out_channels * b->plane,
                                  b->mixed + i * b->len, NULL, b->col);
    }
}

static void piece_aggb(const bench *b) {
    memset(b->dpi, 0, b->n * KERNELS * sizeof(float));
    dc_aggregate_backward(b->n, KERNELS, b->len, b->pi, b->weight, b->mixed, b->dweight, 0,
                          b->dpi);
}

static void profile_layer(const dcio_workload_layer *ls, size_t batch, int repeats) {
    const dynconv_conv2d_geometry geo = dcio_workload_geometry(ls, KERNELS);
    const size_t wlen = (size_t)(KERNELS * ls->out * (ls->in / ls->groups) * ls->kernel * ls->kernel);
    float *w = alloc_floats(wlen), *bias = alloc_floats((size_t)(KERNELS * ls->out));
    float *fc1 = alloc_floats((size_t)(geo.hidden * ls->in)), *fc2 = alloc_floats(KERNELS * geo.hidden);
    float *fc2b = alloc_floats(KERNELS);
    check(dynconv_conv2d_init_parameters(&geo, 1, DYNCONV_INIT_BIAS_UNIFORM, w, bias, fc1, NULL,
                                         fc2, fc2b),
          "init_parameters");
    const dynconv_conv2d_weights wts = {w, bias, fc1, NULL, fc2, fc2b};
    bench b;
    memset(&b, 0, sizeof b);
    int64_t oh = 0, ow = 0;
    /* The mode is read by reshape: one handle per path. */
    dynconv_conv2d **handles[2] = {&b.blas, &b.engine};
    for (int m = 0; m < 2; ++m) {
        dc_exec_set_backward_engine_mode(m == 0 ? DC_ENGINE_NEVER : DC_ENGINE_ALWAYS);
        check(dynconv_conv2d_create(&geo, &wts, 1.0f, 0, handles[m]), "create");
        check(dynconv_conv2d_set_num_threads(*handles[m], 1), "set_num_threads");
        check(dynconv_conv2d_reshape(*handles[m], (int64_t)batch, ls->size, ls->size, &oh, &ow,
                                     NULL),
              "reshape");
        check(dynconv_conv2d_prepare_backward(*handles[m], NULL), "prepare_backward");
    }
    dc_exec_set_backward_engine_mode(DC_ENGINE_AUTO);

    dc_conv_shape *s = &b.s;
    *s = (dc_conv_shape){(size_t)ls->in, (size_t)ls->out, (size_t)ls->groups, (size_t)ls->size,
                         (size_t)ls->size, (size_t)ls->kernel, (size_t)ls->kernel,
                         (size_t)ls->stride, (size_t)ls->stride, (size_t)ls->pad, (size_t)ls->pad,
                         1, 1, (size_t)oh, (size_t)ow};
    b.k = dc_gemm_select();
    b.n = batch;
    b.g_in = s->in_channels / s->groups;
    b.g_out = s->out_channels / s->groups;
    b.depth = b.g_in * s->kernel_h * s->kernel_w;
    b.len = s->out_channels * b.depth;
    b.plane = s->out_h * s->out_w;
    b.in_plane = s->height * s->width;
    const size_t x_count = batch * s->in_channels * b.in_plane;
    const size_t y_count = batch * s->out_channels * b.plane;
    b.x = alloc_floats(x_count);
    b.dy = alloc_floats(y_count);
    b.dx = alloc_floats(x_count);
    for (size_t i = 0; i < x_count; ++i) {
        b.x[i] = (float)((double)(i * 2654435761u % 1000u) / 500.0 - 1.0);
    }
    for (size_t i = 0; i < y_count; ++i) {
        b.dy[i] = (float)((double)(i * 40503u % 997u) / 498.5 - 1.0);
    }
    b.pi = alloc_floats(batch * KERNELS);
    for (size_t i = 0; i < batch * KERNELS; ++i) {
        b.pi[i] = 1.0f / KERNELS;
    }
    b.weight = w;
    b.mixed = alloc_floats(batch * b.len);
    size_t col_floats = 0, at_floats = 0;
    const bool has_engine = !dc_conv_is_depthwise(s);
    (void)dc_conv_backward_scratch_floats(s, &col_floats);
    (void)dc_engine_input_grad_scratch_floats(s, b.k, &at_floats);
    b.col = alloc_floats(col_floats);
    b.at = alloc_floats(at_floats);
    b.dweight = alloc_floats(wlen);
    b.dpi = alloc_floats(batch * KERNELS);
    float *gx = alloc_floats(x_count), *gw = alloc_floats(wlen);
    float *gb = alloc_floats((size_t)(KERNELS * ls->out));
    float *gf1 = alloc_floats((size_t)(geo.hidden * ls->in)), *gf2 = alloc_floats(KERNELS * geo.hidden);
    float *gf2b = alloc_floats(KERNELS);
    const dynconv_conv2d_gradients grads = {gx, gw, gb, gf1, NULL, gf2, gf2b};
    b.grads = &grads;
    b.xin = b.x;
    b.dyin = b.dy;

    double t[PIECES][MAX_REPEATS], ratio[MAX_REPEATS];
    for (int r = -1; r < repeats; ++r) { /* r = -1: warm-up */
        for (int p = 0; p < PIECES; ++p) {
            if (!has_engine && p != 0) {
                continue;
            }
            const double t0 = cpu_now();
            switch (p) {
            case 0: piece_total(&b, b.blas); break;
            case 1: piece_total(&b, b.engine); break;
            case 2: piece_mix(&b); break;
            case 3: piece_dx_gemm(&b); break;
            case 4: piece_dx_engine(&b); break;
            case 5: piece_col2im(&b); break;
            case 6: piece_dw(&b); break;
            default: piece_aggb(&b); break;
            }
            if (r >= 0) {
                t[p][r] = (cpu_now() - t0) * 1e3;
            }
        }
        if (r >= 0) {
            ratio[r] = has_engine ? t[1][r] / t[0][r] : 1.0;
        }
    }
    double med[PIECES];
    for (int p = 0; p < PIECES; ++p) {
        med[p] = has_engine || p == 0 ? median(t[p], repeats) : 0.0;
    }
    const double rmed = median(ratio, repeats);
    if (has_engine) {
        printf("%-22s %3zu %9.3f %9.3f %6.3f | %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", ls->name,
               batch, med[0], med[1], rmed, med[2], med[3], med[4], med[5], med[6], med[7]);
    } else {
        printf("%-22s %3zu %9.3f %9s %6s | (depthwise: no engine kernel)\n", ls->name, batch,
               med[0], "-", "-");
    }
    fflush(stdout);
    dynconv_conv2d_destroy(b.blas);
    dynconv_conv2d_destroy(b.engine);
    free(w), free(bias), free(fc1), free(fc2), free(fc2b);
    free(b.x), free(b.dy), free(b.dx), free(b.pi), free(b.mixed), free(b.col), free(b.at);
    free(b.dweight), free(b.dpi);
    free(gx), free(gw), free(gb), free(gf1), free(gf2), free(gf2b);
}

static void usage(void) {
    fprintf(stderr, "usage: dynconv-backward-profile [--layers FILE] [--batch N] [--repeats R] "
                    "[--filter SUBSTRING]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = DYNCONV_BENCH_DEFAULT_LAYERS, *filter = "";
    long batch = 16, repeats = 7;
    for (int i = 1; i < argc; ++i) {
        if (i + 1 >= argc) {
            usage();
        }
        const char *opt = argv[i], *val = argv[++i];
        if (strcmp(opt, "--layers") == 0) {
            path = val;
        } else if (strcmp(opt, "--batch") == 0) {
            batch = strtol(val, NULL, 10);
        } else if (strcmp(opt, "--repeats") == 0) {
            repeats = strtol(val, NULL, 10);
        } else if (strcmp(opt, "--filter") == 0) {
            filter = val;
        } else {
            usage();
        }
    }
    if (batch < 1 || batch > 4096 || repeats < 1 || repeats > MAX_REPEATS) {
        usage();
    }
    dcio_workload_layer *layers = NULL;
    size_t count = 0;
    dcio_error err;
    if (!dcio_workload_read(path, &layers, &count, &err)) {
        fprintf(stderr, "backward_profile: %s\n", err.message);
        return 2;
    }
    printf("# BLAS %s, core %s; engine micro-kernel %s; 1 thread; process CPU ms, medians of %ld\n",
           dynconv_blas_config(), dynconv_blas_core(), dc_gemm_select()->name, repeats);
    printf("%-22s %3s %9s %9s %6s | %8s %8s %8s %8s %8s %8s\n", "# layer", "N", "total_blas",
           "total_eng", "ratio", "mix", "dx_gemm", "dx_eng", "col2im", "dw", "aggb");
    for (size_t i = 0; i < count; ++i) {
        if (strstr(layers[i].name, filter) != NULL) {
            profile_layer(&layers[i], (size_t)batch, (int)repeats);
        }
    }
    free(layers);
    return 0;
}
