/* Execution layer: the workspace planner and the forward and backward pipelines, with the
 * forward's scheduling on a thread pool. Below the API layer (which checks every argument and
 * owns the handles): nothing here validates, fails at run time or allocates. */
#ifndef DYNCONV_SRC_EXEC_H
#define DYNCONV_SRC_EXEC_H

#include "conv.h"
#include "gemm.h"
#include "threadpool.h"

#include <stdbool.h>
#include <stddef.h>

/* An activation applied inside the forward's output pass: each sample's output (or each band
 * or channel range a thread computes) right after its convolution, while it is still in cache,
 * instead of in a second pass over the whole tensor. Internal to the library (the network
 * layer fuses a ReLU that follows a convolution); the public layer handles keep NONE, and the
 * backward ignores it (a handle with an activation is never trained). */
typedef enum dc_activation {
    DC_ACTIVATION_NONE = 0,
    DC_ACTIVATION_RELU,
    DC_ACTIVATION_RELU6
} dc_activation;

/* A dynamic layer as the passes see it: its geometry (spatial fields set for the current
 * shape), K, the attention's hidden size and the parameter arrays (optional ones NULL). */
typedef struct dc_layer {
    dc_conv_shape shape;
    dc_activation activation; /* applied in the output pass (NONE: the layer alone) */
    size_t kernels, hidden;
    size_t kernel_len;        /* floats of one kernel set: C_out * C_in/g * kh * kw */
    const float *weight, *bias, *fc1_weight, *fc1_bias, *fc2_weight, *fc2_bias;
    /* The own engine (src/gemm): its micro-kernel, chosen at create (NULL: the geometry always
     * takes the generic path), and the K kernel sets packed for it once, [K, packed_len]
     * (NULL with borrowed weights, which the caller may change in place: then every forward
     * mixes and packs them from `weight` in one pass). */
    const dc_gemm_kernel *gemm;
    const float *packed;
    size_t packed_len;
    /* Winograd F(2x2, 3x3) (conv/winograd.c) for 3x3 stride-1 layers of one group with owned
     * (or never changed) weights (wino_able, with wino_len floats per transformed set): the K
     * kernel sets transformed once, [K, wino_len], by the first reshape whose shape takes the
     * path (NULL until then), and whether the current shape runs on it (set with engine_on,
     * which it then excludes). */
    const float *wino;
    size_t wino_len;
    bool wino_able;
    bool wino_on;
    bool gemm_pinned;         /* a test forced l->gemm at create: no choice by shape */
    bool engine_on;           /* the current shape runs on the engine (dc_exec_choose_engine) */
    bool backward_engine_on;  /* the backward's input gradient GEMM runs on it (same) */
    bool blas_avx512;         /* the BLAS runs AVX-512 kernels (set at create; the backward's
                               * rule depends on it) */
    bool blas_fma;            /* the BLAS runs FMA kernels, not a fallback (set at create; the
                               * Winograd rule depends on it) */
} dc_layer;

/* At create: chooses the micro-kernel for the layer's geometry (l->gemm, l->packed_len; none
 * for depthwise layers, which keep their direct loop) and reports the floats of the packed copy
 * of the K kernel sets to allocate when the layer owns its weights (0: nothing to pack). False
 * on overflow. */
bool dc_exec_engine_setup(dc_layer *l, size_t *pack_floats);
/* The micro-kernel for l's current shape, of the instruction set l->gemm has: the channel-lanes
 * one where its tiles fit the plane better (the rule in exec/engine.c), else the
 * position-lanes one; l->gemm itself when pinned or NULL. Reshape repacks the layer's kernel
 * sets when this differs from l->gemm. */
const dc_gemm_kernel *dc_exec_engine_kernel(const dc_layer *l);
/* Packs the layer's K kernel sets into buf (pack_floats floats) and points l->packed at it. */
void dc_exec_engine_pack(dc_layer *l, float *buf);
/* Sets l->engine_on for l's current shape: whether its forwards run on the own engine (else
 * im2col + BLAS), by the rule in exec/engine.c. Called by reshape before planning the
 * workspace, which depends on it. */
void dc_exec_choose_engine(dc_layer *l);
/* For tests and benchmarks: DC_ENGINE_AUTO (the rule), DC_ENGINE_NEVER (generic path only) or
 * DC_ENGINE_ALWAYS (the engine wherever the layer has one), for the reshapes that follow. */
enum { DC_ENGINE_AUTO = 0, DC_ENGINE_NEVER = 1, DC_ENGINE_ALWAYS = 2 };
void dc_exec_set_engine_mode(int mode);
/* The same three modes for the Winograd path (l->wino_on; ALWAYS: wherever the layer has its
 * transformed kernels), for the reshapes that follow. */
void dc_exec_set_wino_mode(int mode);
/* The same for the backward's input gradient (l->backward_engine_on), on its own. */
void dc_exec_set_backward_engine_mode(int mode);
/* Whether a sample convolved alone on the engine (batch 1, the samples left over below the
 * thread count, and whole samples mixed one at a time) runs on the row-panel driver
 * (dc_engine_conv_rows: each thread mixes and convolves its own output channels, slice by
 * slice) rather than mixing the kernel first: by the rule in exec/engine.c. */
bool dc_exec_engine_rows(const dc_layer *l);
/* For tests and benchmarks: the same three modes for that choice (ALWAYS: wherever the layer
 * runs on the engine). */
void dc_exec_set_rows_mode(int mode);

/* The forward workspace for `batch` samples on `threads` threads, in bytes (never 0), and the
 * kernels a thread aggregates at once (*chunk, to pass to dc_exec_forward); false when a size
 * overflows. The formula is the header's (section 7). */
bool dc_plan_forward(const dc_layer *l, size_t batch, size_t threads, size_t *chunk,
                     size_t *bytes);

/* The backward workspace for `batch` samples on `threads` threads, in bytes; false when a size
 * overflows. */
bool dc_plan_backward(const dc_layer *l, size_t batch, size_t threads, size_t *bytes);

/* One forward of `batch` samples on the first `threads` threads of `pool` (the calling thread
 * included; a forward of little work runs on the calling thread alone), with the chunk
 * dc_plan_forward gave for this batch and thread count. attention may be NULL.
 * The two pooled arrays let a network hand the attention's squeeze from one layer to the next
 * (NULL: not used). pooled_in [batch, C_in]: the channel means of `input`, exactly as this
 * layer would compute them (dc_global_avg_pool), which it then takes instead of reading the
 * input once more. pooled_out [batch, C_out]: filled with the channel means of `output`, each
 * sample's right after its output is final, while it is still in cache. */
void dc_exec_forward(const dc_layer *l, size_t batch, float temperature, size_t threads,
                     size_t chunk, dc_pool *pool, const float *input, float *output,
                     float *attention, void *workspace, const float *pooled_in,
                     float *pooled_out);

/* Where backward writes (the public gradients struct, field for field); NULL skips one. */
typedef struct dc_exec_grads {
    float *input, *weight, *bias, *fc1_weight, *fc1_bias, *fc2_weight, *fc2_bias;
} dc_exec_grads;

/* One backward of `batch` samples. The per-sample convolution backward (the bulk of the work)
 * is shared by the first `threads` threads of `pool`, whole samples per thread, so the result
 * does not depend on the thread count; the rest runs in the calling thread. */
void dc_exec_backward(const dc_layer *l, size_t batch, float temperature, size_t threads,
                      dc_pool *pool, const float *input, const float *grad_output,
                      const dc_exec_grads *grads, bool accumulate, void *workspace);

#endif
