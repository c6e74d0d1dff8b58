/* Shared by the API layer's translation units only. */
#ifndef DYNCONV_SRC_API_INTERNAL_H
#define DYNCONV_SRC_API_INTERNAL_H

#include <dynconv/dynconv.h>

#include "exec.h"
#include "threadpool.h"

#include <stdbool.h>
#include <stddef.h>

/* Returns from the calling function when expr is not DYNCONV_OK. */
#define TRY(expr)                          \
    do {                                   \
        dynconv_status try_status_ = (expr); \
        if (try_status_ != DYNCONV_OK) {   \
            return try_status_;            \
        }                                  \
    } while (0)

#define KNOWN_FLAGS ((uint32_t)(DYNCONV_FLAG_BORROW_WEIGHTS | DYNCONV_FLAG_EXTERNAL_WORKSPACE))

/* The conv2d handle (the linear handle wraps one). */
struct dynconv_conv2d {
    dc_layer core;            /* geometry (spatial fields valid once shaped) and parameters,
                               * as the execution layer sees them */
    float temperature;
    uint32_t flags;

    /* Linear temperature schedule (see dynconv_conv2d_set_temperature_schedule). */
    bool scheduled;
    float t0, t1;
    int64_t steps, step;

    float *owned;             /* copies of the parameters (core's arrays), unless borrowed */
    float *packed;            /* the engine's packed copy of the kernel sets (core.packed),
                               * made at create when the weights are owned; else NULL */
    float *wino;              /* the Winograd transforms of the kernel sets (core.wino), made
                               * by the first reshape that takes the path; else NULL */

    bool shaped;
    size_t batch;
    size_t workspace_size;    /* bytes a forward needs for the current shape */
    void *own_workspace;      /* the handle's workspace, unless external */
    size_t own_workspace_size;

    bool backward_enabled;    /* own workspace is also sized for backward (prepare_backward) */
    bool backward_size_ok;    /* false when the backward workspace size overflows */
    size_t backward_workspace_size;

    size_t threads;           /* team size of a forward, the caller included: the request,
                               * capped at the pool's size */
    size_t threads_requested; /* set_num_threads's argument; 0: all of the pool's threads */
    size_t chunk;             /* kernels a thread aggregates at once (set with the shape) */
    dynconv_threadpool *threadpool; /* shared, never owned: the handle holds a reference */
};

/* A public thread pool: a dc_pool shared by reference. The pool is freed when the last
 * reference goes (its creator's, dynconv_threadpool_destroy, and one per handle using it). */
struct dynconv_threadpool {
    dc_pool *pool;
    size_t threads;           /* its size, the calling thread of a run included */
    size_t refs;              /* guarded by the registry lock of threadpool.c */
};

/* Takes a reference to `pool`, or with pool == NULL to the process's default pool (created here
 * when it does not exist: as many threads as the process may run on). *out receives the pool.
 * Errors: OUT_OF_MEMORY (the default pool's threads could not be started). */
dynconv_status dc_threadpool_acquire(const char *fn, dynconv_threadpool *pool,
                                     dynconv_threadpool **out);
/* Drops a reference taken by dc_threadpool_acquire (or the creator's); NULL is ignored. */
void dc_threadpool_release(dynconv_threadpool *pool);

/* The linear handle: a 1x1 convolution of 1x1 images. */
struct dynconv_linear {
    dynconv_conv2d *conv;
};

/* Records a printf-style explanation for dynconv_last_error_message() and returns status. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
dynconv_status dc_fail(dynconv_status status, const char *fmt, ...);

/* Both the conv2d and linear entry points go through these, each naming itself in messages. */
dynconv_status dc_conv2d_create_named(const char *fn, const dynconv_conv2d_geometry *geometry,
                                      const dynconv_conv2d_weights *weights, float temperature,
                                      uint32_t flags, dynconv_conv2d **out);
dynconv_status dc_conv2d_reshape_named(const char *fn, dynconv_conv2d *layer, int64_t batch,
                                       int64_t height, int64_t width, int64_t *out_h,
                                       int64_t *out_w, size_t *workspace_size);
dynconv_status dc_conv2d_forward_named(const char *fn, dynconv_conv2d *layer, const float *input,
                                       float *output, float *attention, void *workspace,
                                       size_t workspace_size);
/* The same, with the squeeze handed over between a network's layers (dc_exec_forward):
 * pooled_in [N, C_in] the input's channel means, pooled_out [N, C_out] where the output's go;
 * either may be NULL. Neither is checked: the network plans them. */
dynconv_status dc_conv2d_forward_pooled(const char *fn, dynconv_conv2d *layer, const float *input,
                                        float *output, float *attention, void *workspace,
                                        size_t workspace_size, const float *pooled_in,
                                        float *pooled_out);
dynconv_status dc_conv2d_set_num_threads_named(const char *fn, dynconv_conv2d *layer,
                                               int threads);
dynconv_status dc_conv2d_get_num_threads_named(const char *fn, const dynconv_conv2d *layer,
                                               int *threads);
dynconv_status dc_conv2d_set_threadpool_named(const char *fn, dynconv_conv2d *layer,
                                              dynconv_threadpool *pool);
/* For a caller that borrows weights it never changes (the network layer): makes the engine's
 * packed copy of the kernel sets once, as create does for owned weights, so that forwards use
 * it (nothing when the layer has one or the shape has no engine), and lets reshape take the
 * Winograd path, as for owned weights. Errors: OUT_OF_MEMORY, SIZE_OVERFLOW; on error the
 * layer is unchanged. */
dynconv_status dc_conv2d_pack_borrowed(const char *fn, dynconv_conv2d *layer);
dynconv_status dc_check_temperature(const char *fn, float temperature);

/* The checks both create functions make before looking at any size, in this order: the
 * required parameter arrays, the flags, the temperature. */
dynconv_status dc_check_create_args(const char *fn, const dynconv_conv2d_weights *weights,
                                    uint32_t flags, float temperature);

/* A linear geometry as the 1x1 convolution of a 1x1 image that implements it, after checking
 * its sizes (> 0, products in range) with messages in the linear layer's own terms. */
dynconv_status dc_linear_as_conv2d(const char *fn, const dynconv_linear_geometry *geometry,
                                   dynconv_conv2d_geometry *out);
/* Checks a geometry and fills the layer's shape, kernels, hidden and kernel_len. */
dynconv_status dc_read_geometry(const char *fn, const dynconv_conv2d_geometry *g,
                                dynconv_conv2d *l);
/* A size that must be > 0, converted to size_t (INVALID_ARGUMENT, SIZE_OVERFLOW). */
dynconv_status dc_check_positive(const char *fn, const char *name, int64_t v, size_t *out);
/* A GEMM extent or leading dimension: OpenBLAS takes int (SIZE_OVERFLOW above INT_MAX). */
dynconv_status dc_check_blas_fits(const char *fn, const char *what, size_t v);
/* Whether OpenBLAS runs its AVX-512 kernels (core SkylakeX, Cooperlake or SapphireRapids). */
bool dc_blas_runs_avx512(void);
/* Whether OpenBLAS runs kernels with fused multiply-adds (Haswell, Zen and the AVX-512 cores),
 * not a fallback such as Prescott: the Winograd path's products are the BLAS's. */
bool dc_blas_runs_fma(void);
/* Checks a caller-owned workspace against `needed` bytes and its alignment. */
dynconv_status dc_check_workspace(const char *fn, const void *workspace, size_t size,
                                  size_t needed);

/* One buffer of a call, for dc_check_disjoint: its name in messages, where it is and how long.
 * A NULL or empty buffer overlaps nothing. */
typedef struct dc_buffer {
    const char *name;
    const void *ptr;
    size_t bytes;
} dc_buffer;

/* The one overlap rule of forward and backward: no buffer the call writes (outputs, the
 * workspace) may overlap another it writes or one it reads. INVALID_ARGUMENT, naming the first
 * pair found ("output overlaps input"). */
dynconv_status dc_check_disjoint(const char *fn, const dc_buffer *written, size_t n_written,
                                 const dc_buffer *read, size_t n_read);

#endif
