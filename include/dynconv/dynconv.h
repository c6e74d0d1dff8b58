/*
 * libdynconv: dynamic convolution (attention over K convolution kernels) in C.
 *
 * This header is the whole public API. Read it top to bottom:
 *   1. version          - compile-time macros and run-time functions
 *   2. status           - every function returns a dynconv_status; a message says more
 *   3. dynamic conv2d   - create -> reshape -> forward (repeat) -> destroy
 *   4. dynamic linear   - the same lifecycle for the dynamic perceptron
 *   5. run-time         - which BLAS does the work, and on which kernels
 *   6. training         - backward passes, temperature annealing, parameter initialisation
 *   7. threads          - thread pools shared by handles; how many threads a forward uses
 *   8. networks         - (since 1.2) a whole network read from a file: create -> reshape ->
 *                         forward (repeat) -> destroy
 *
 * What a dynamic layer computes, per sample n (float32, NCHW, row-major):
 *   s      = mean over (h, w) of x[n]                  squeeze: global average pool, [C_in]
 *   u      = ReLU(fc1_weight @ s + fc1_bias)            [hidden]
 *   z      = fc2_weight @ u + fc2_bias                  [K]
 *   pi     = softmax(z / T)                             [K], pi >= 0, sum(pi) == 1
 *   W_n    = sum_k pi[k] * weight[k]                    aggregated kernel
 *   b_n    = sum_k pi[k] * bias[k]                      aggregated bias
 *   y[n]   = conv2d(x[n], W_n, b_n)                     cross-correlation, as PyTorch's conv2d
 * The attention pi is computed independently for every sample (never averaged over the batch).
 *
 * Conventions
 *   - Sizes are int64_t so that a negative value coming from a signed caller is reported as
 *     DYNCONV_ERROR_INVALID_ARGUMENT instead of wrapping around. All products of sizes are
 *     checked for overflow (DYNCONV_ERROR_SIZE_OVERFLOW).
 *   - On any error, no output buffer is written and the handle keeps its previous state.
 *   - Functions that fail leave a human-readable explanation in a thread-local buffer
 *     (dynconv_last_error_message()).
 *
 * Memory
 *   libdynconv allocates memory of its own only in create (the handle, its copy of the
 *   weights, for a layer that is not depthwise that copy once more in the packed layout of the
 *   library's own convolution engine (section 7), and the default thread pool when the first
 *   handle starts it), reshape,
 *   set_num_threads, set_threadpool and prepare_backward (the handle's workspace, when it has to
 *   grow) and dynconv_threadpool_create; destroy frees it. forward and backward never allocate,
 *   neither in the calling thread nor in the pool's threads: a network can run them in a loop
 *   with a fixed memory footprint.
 *   The BLAS underneath is outside that promise, because its allocations are its own:
 *   OpenBLAS allocates its GEMM buffers on first use and when its thread count grows, and
 *   OpenBLAS 0.3.21's kernels for AVX-512 CPUs (its SkylakeX and Cooperlake cores) call malloc
 *   and free inside every small-matrix sgemm. libdynconv does not steer around that path (it is
 *   the BLAS's fastest for those shapes); the library's tests attribute every allocation to its
 *   caller and require zero from libdynconv itself.
 *
 * Thread safety
 *   Safe to share between threads running at the same time:
 *   - distinct handles: any calls, including create and destroy, on different handles from
 *     different threads at the same time, also when they share a thread pool (section 7: the
 *     pool serializes their parallel steps; the library never changes the BLAS's state during
 *     a call);
 *   - thread pools: one pool may serve any number of handles used from any threads at once;
 *   - parameter arrays borrowed with DYNCONV_FLAG_BORROW_WEIGHTS, by any number of handles: the
 *     library only reads them (the caller must not modify them while a forward using them runs);
 *   - input arrays: forward only reads its input, so concurrent forwards may read one input;
 *   - dynconv_version_*, dynconv_status_string, dynconv_blas_* and dynconv_last_error_message
 *     (the message is per thread: a failure in one thread never changes another's).
 *   Not safe to share:
 *   - one handle: no two calls on the same handle may overlap (even two forwards, which share
 *     the handle's workspace); a handle may pass from thread to thread with the caller's own
 *     synchronisation in between;
 *   - output, attention and caller-owned workspace buffers, between calls that overlap in time.
 */
#ifndef DYNCONV_DYNCONV_H
#define DYNCONV_DYNCONV_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(DYNCONV_BUILDING_LIBRARY)
#    define DYNCONV_API __declspec(dllexport)
#  else
#    define DYNCONV_API
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define DYNCONV_API __attribute__((visibility("default")))
#else
#  define DYNCONV_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* 1. Version                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#define DYNCONV_VERSION_MAJOR 1
#define DYNCONV_VERSION_MINOR 2
#define DYNCONV_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, comparable with dynconv_version_number(). */
#define DYNCONV_VERSION_NUMBER \
    (DYNCONV_VERSION_MAJOR * 10000 + DYNCONV_VERSION_MINOR * 100 + DYNCONV_VERSION_PATCH)
#define DYNCONV_VERSION_STRING "1.2.0"

/* Version of the library actually loaded at run time (may differ from the header's). */
DYNCONV_API unsigned dynconv_version_number(void);
DYNCONV_API const char *dynconv_version_string(void);

/* ------------------------------------------------------------------------------------------ */
/* 2. Status                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* Values are part of the ABI: they never change and are never reused. */
typedef enum dynconv_status {
    DYNCONV_OK = 0,
    /* A required pointer argument was NULL. */
    DYNCONV_ERROR_NULL_POINTER = 1,
    /* A size is zero or negative where it must be positive (or negative where it may be zero),
     * groups does not divide the channels, the temperature is not a finite number > 0, or
     * input and output buffers overlap. (Unknown flags were reported with this status before
     * 1.1; they now get DYNCONV_ERROR_UNSUPPORTED.) */
    DYNCONV_ERROR_INVALID_ARGUMENT = 2,
    /* The shapes are individually valid but do not fit together: the dilated kernel is larger
     * than the padded input, so the output would be empty. */
    DYNCONV_ERROR_INVALID_SHAPE = 3,
    /* A product of sizes (element counts, byte counts) does not fit in size_t / int64_t, or
     * one matrix dimension handed to the BLAS exceeds its int index range (INT_MAX). */
    DYNCONV_ERROR_SIZE_OVERFLOW = 4,
    /* An allocation failed. */
    DYNCONV_ERROR_OUT_OF_MEMORY = 5,
    /* The call is not valid in the handle's current state (e.g. forward before reshape). */
    DYNCONV_ERROR_INVALID_STATE = 6,
    /* The caller's workspace is smaller than the size reported by reshape. */
    DYNCONV_ERROR_INSUFFICIENT_WORKSPACE = 7,
    /* The caller's workspace is not aligned to DYNCONV_WORKSPACE_ALIGNMENT bytes. */
    DYNCONV_ERROR_MISALIGNED_WORKSPACE = 8,
    /* (since 1.1) A flag bit or an option this version does not know: the request may be valid
     * for a later version, but this one cannot honour it. Every function taking flags reports
     * unknown bits with this status. */
    DYNCONV_ERROR_UNSUPPORTED = 9,
    /* (since 1.2) The file or buffer given to a network create function is not a valid network
     * (section 8): not a safetensors container, no graph, an unknown op, a dangling edge, a
     * cycle, a shape mismatch, a truncated tensor ... The message names the file (or
     * "<memory>"), the node when there is one, and the reason. */
    DYNCONV_ERROR_INVALID_MODEL = 10
} dynconv_status;

/* Short constant description of a status ("invalid argument", ...); never NULL, also for values
 * this version does not know. */
DYNCONV_API const char *dynconv_status_string(dynconv_status status);

/* Explanation of the most recent failure of a libdynconv call in the calling thread, naming the
 * function and the offending argument; "" if no call has failed in this thread. Valid until the
 * next libdynconv call in the same thread. */
DYNCONV_API const char *dynconv_last_error_message(void);

/* ------------------------------------------------------------------------------------------ */
/* 3. Dynamic 2-D convolution                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Opaque layer handle. */
typedef struct dynconv_conv2d dynconv_conv2d;

/* Flags for the create functions (bitwise OR; unknown bits: DYNCONV_ERROR_UNSUPPORTED). */
enum {
    /* Keep pointers to the caller's parameter arrays instead of copying them. The arrays must
     * stay valid and unchanged (while a forward runs) until the handle is destroyed. Lets many
     * handles share one set of weights, and lets a caller update weights in place. */
    DYNCONV_FLAG_BORROW_WEIGHTS = 1u << 0,
    /* The handle never allocates a workspace: every forward must be given one. */
    DYNCONV_FLAG_EXTERNAL_WORKSPACE = 1u << 1
};

/* Alignment in bytes that a caller-owned workspace must have. */
#define DYNCONV_WORKSPACE_ALIGNMENT 64

/* Geometry of a dynamic 2-D convolution. Fields follow torch.nn.Conv2d.
 * The geometry and weights structs are frozen for this ABI version: later options arrive as new
 * flags or new setter functions, never as new fields. */
typedef struct dynconv_conv2d_geometry {
    int64_t in_channels;              /* C_in  > 0 */
    int64_t out_channels;             /* C_out > 0 */
    int64_t kernel_h, kernel_w;       /* kh, kw > 0 */
    int64_t stride_h, stride_w;       /* sh, sw > 0 */
    int64_t pad_h, pad_w;             /* ph, pw >= 0 (zero padding on both sides) */
    int64_t dilation_h, dilation_w;   /* dh, dw > 0 */
    int64_t groups;                   /* g > 0, divides C_in and C_out; g == C_in: depthwise */
    int64_t num_kernels;              /* K > 0 */
    int64_t hidden;                   /* attention hidden units > 0 */
} dynconv_conv2d_geometry;

/* Parameter arrays, float32, contiguous row-major. Optional ones may be NULL (treated as zero).
 *   weight     [K, C_out, C_in/g, kh, kw]   required
 *   bias       [K, C_out]                   optional
 *   fc1_weight [hidden, C_in]               required (PyTorch's [hidden, C_in, 1, 1] is the same)
 *   fc1_bias   [hidden]                     optional
 *   fc2_weight [K, hidden]                  required
 *   fc2_bias   [K]                          optional */
typedef struct dynconv_conv2d_weights {
    const float *weight;
    const float *bias;
    const float *fc1_weight;
    const float *fc1_bias;
    const float *fc2_weight;
    const float *fc2_bias;
} dynconv_conv2d_weights;

/* Creates a layer. Checks the flags (unknown bits: UNSUPPORTED), the geometry (sizes, groups,
 * overflow of every parameter count) and the temperature (finite, > 0), then copies the weights
 * (unless DYNCONV_FLAG_BORROW_WEIGHTS) and, unless the layer is depthwise, packs the copy for
 * the library's own convolution engine (section 7; borrowed weights are packed by each forward
 * that runs on it, so changes made to them in place are always seen). For 3x3 kernels of
 * stride 1, dilation 1 and one group with copied weights, the Winograd transforms of the K
 * kernels (16 * C_out * C_in floats each, 16/9 of a kernel) are made later, by the first
 * reshape whose shape takes that path (section 7). The handle runs on the
 * process's default thread pool
 * (section 7), which this call starts when no handle uses it yet (OUT_OF_MEMORY if its threads
 * cannot be started); dynconv_conv2d_set_threadpool moves it to another.
 * On success *out receives the handle; on error *out is left unchanged. */
DYNCONV_API dynconv_status dynconv_conv2d_create(const dynconv_conv2d_geometry *geometry,
                                                 const dynconv_conv2d_weights *weights,
                                                 float temperature, uint32_t flags,
                                                 dynconv_conv2d **out);

/* Frees the handle and the memory it owns. NULL is accepted and ignored. */
DYNCONV_API void dynconv_conv2d_destroy(dynconv_conv2d *layer);

/* Softmax temperature T (finite, > 0). May be changed at any time between forwards. */
DYNCONV_API dynconv_status dynconv_conv2d_set_temperature(dynconv_conv2d *layer, float temperature);
DYNCONV_API dynconv_status dynconv_conv2d_get_temperature(const dynconv_conv2d *layer,
                                                          float *temperature);

/* Fixes the input shape [N, C_in, H, W] for the following forwards and reports:
 *   H_out = floor((H + 2*ph - dh*(kh-1) - 1) / sh) + 1
 *   W_out = floor((W + 2*pw - dw*(kw-1) - 1) / sw) + 1
 * and the workspace size in bytes a caller-owned workspace must have (its formula is in
 * section 7: it grows with the thread count). out_h, out_w and workspace_size may each be NULL.
 * Unless the handle was created with DYNCONV_FLAG_EXTERNAL_WORKSPACE, this is the call that
 * allocates the handle's own workspace (only when it has to grow; set_num_threads may grow it
 * too); forward never allocates. The first reshape whose shape takes the Winograd path
 * (section 7) also allocates and computes the transforms of the kernel sets, kept until
 * destroy.
 * Errors: INVALID_ARGUMENT (N, H or W <= 0), INVALID_SHAPE (H_out or W_out would be < 1),
 * SIZE_OVERFLOW, OUT_OF_MEMORY. On error the previous shape stays in force. */
DYNCONV_API dynconv_status dynconv_conv2d_reshape(dynconv_conv2d *layer, int64_t batch,
                                                  int64_t height, int64_t width, int64_t *out_h,
                                                  int64_t *out_w, size_t *workspace_size);

/* Runs the layer on the shape fixed by the last successful reshape.
 *   input      [N, C_in, H, W]              required
 *   output     [N, C_out, H_out, W_out]     required, must not overlap input
 *   attention  [N, K]                       optional: receives pi for every sample
 *   workspace  workspace_size bytes, aligned to DYNCONV_WORKSPACE_ALIGNMENT; or NULL to use
 *              the handle's own workspace (not allowed with DYNCONV_FLAG_EXTERNAL_WORKSPACE)
 * Errors, checked in this order before anything is written:
 *   NULL_POINTER (layer, input or output NULL; workspace NULL on a handle created with
 *   DYNCONV_FLAG_EXTERNAL_WORKSPACE), INVALID_STATE (no successful reshape yet),
 *   INSUFFICIENT_WORKSPACE (workspace_size below the reshape figure), MISALIGNED_WORKSPACE,
 *   INVALID_ARGUMENT (input, output, attention or workspace overlap).
 * Non-finite values in the input are not errors (the status is DYNCONV_OK) and never affect
 * the other samples of the batch: a NaN anywhere in sample n makes its attention row and its
 * whole output NaN; an Inf (or finite values whose sum overflows) makes some of them Inf or NaN.
 * For finite inputs and weights the attention is a finite distribution at every accepted
 * temperature (the softmax subtracts the row maximum first). forward never allocates memory. */
DYNCONV_API dynconv_status dynconv_conv2d_forward(dynconv_conv2d *layer, const float *input,
                                                  float *output, float *attention,
                                                  void *workspace, size_t workspace_size);

/* ------------------------------------------------------------------------------------------ */
/* 4. Dynamic linear layer (dynamic perceptron)                                               */
/* ------------------------------------------------------------------------------------------ */

/* Per sample: pi = softmax((fc2 @ ReLU(fc1 @ x + b1) + b2) / T); y = (sum_k pi[k] W_k) x +
 * sum_k pi[k] b_k. The attention is computed on x itself (there is nothing to pool). */
typedef struct dynconv_linear dynconv_linear;

typedef struct dynconv_linear_geometry {
    int64_t in_features;   /* D_in  > 0 */
    int64_t out_features;  /* D_out > 0 */
    int64_t num_kernels;   /* K > 0 */
    int64_t hidden;        /* attention hidden units > 0 */
} dynconv_linear_geometry;

/* Parameter arrays, float32, contiguous; optional ones may be NULL.
 *   weight [K, D_out, D_in] required · bias [K, D_out] optional
 *   fc1_weight [hidden, D_in] required · fc1_bias [hidden] optional
 *   fc2_weight [K, hidden] required · fc2_bias [K] optional */
typedef struct dynconv_linear_weights {
    const float *weight;
    const float *bias;
    const float *fc1_weight;
    const float *fc1_bias;
    const float *fc2_weight;
    const float *fc2_bias;
} dynconv_linear_weights;

/* Same contract as dynconv_conv2d_create. */
DYNCONV_API dynconv_status dynconv_linear_create(const dynconv_linear_geometry *geometry,
                                                 const dynconv_linear_weights *weights,
                                                 float temperature, uint32_t flags,
                                                 dynconv_linear **out);
DYNCONV_API void dynconv_linear_destroy(dynconv_linear *layer);
DYNCONV_API dynconv_status dynconv_linear_set_temperature(dynconv_linear *layer, float temperature);
DYNCONV_API dynconv_status dynconv_linear_get_temperature(const dynconv_linear *layer,
                                                          float *temperature);

/* Fixes the batch size N > 0 and reports the workspace size (may be NULL). */
DYNCONV_API dynconv_status dynconv_linear_reshape(dynconv_linear *layer, int64_t batch,
                                                  size_t *workspace_size);

/*   input [N, D_in] · output [N, D_out] (no overlap with input) · attention [N, K] or NULL
 * Workspace rules, errors and non-finite inputs as for dynconv_conv2d_forward. */
DYNCONV_API dynconv_status dynconv_linear_forward(dynconv_linear *layer, const float *input,
                                                  float *output, float *attention,
                                                  void *workspace, size_t workspace_size);

/* ------------------------------------------------------------------------------------------ */
/* 5. Run-time information                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The BLAS libdynconv calls, as that library describes its build (OpenBLAS: its configuration
 * string, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"). Never NULL. */
DYNCONV_API const char *dynconv_blas_config(void);

/* The kernel set the BLAS chose for this CPU (OpenBLAS: openblas_get_corename(), e.g.
 * "Haswell", "SkylakeX"). "Prescott" on an AVX2 or AVX-512 CPU means OpenBLAS did not
 * recognise the CPU and runs its slow SSE3 fallback: set OPENBLAS_CORETYPE in the environment
 * before the program starts (libdynconv never changes the environment). Never NULL. */
DYNCONV_API const char *dynconv_blas_core(void);

/* Number of threads the BLAS uses for one call. */
DYNCONV_API int dynconv_blas_num_threads(void);

/* ------------------------------------------------------------------------------------------ */
/* 6. Training: backward, temperature annealing, initialisation                               */
/* ------------------------------------------------------------------------------------------ */

/* Backward pass. Given dL/dy for the output of a forward on `input`, computes dL/dx and the
 * gradient of every parameter, through both paths by which they affect y: the convolution with
 * the aggregated kernel, and the attention branch that chose it (pool, fc1, ReLU, fc2, softmax
 * with temperature, aggregation). Per sample n, with the forward's notation and g_y = dL/dy[n]:
 *   dW_n     = dL/dW_n  (the gradient of a static convolution with kernel W_n)
 *   db_n[o]  = sum over (h, w) of g_y[o]
 *   dpi[k]   = <dW_n, weight[k]> + <db_n, bias[k]>
 *   dz       = pi * (dpi - <dpi, pi>) / T
 *   dweight[k] = sum_n pi[n, k] * dW_n          dbias[k] = sum_n pi[n, k] * db_n
 *   dfc2_weight = sum_n dz u^T, dfc2_bias = sum_n dz, du = fc2_weight^T dz masked by u > 0,
 *   dfc1_weight = sum_n du s^T, dfc1_bias = sum_n du, ds = fc1_weight^T du
 *   dx[n]    = (conv-transpose of g_y with W_n) + ds / (H * W) at every position
 * The ReLU's derivative at exactly 0 is taken as 0, as PyTorch does.
 *
 * Backward keeps no state from forward: it recomputes the attention from `input` with the
 * layer's current weights and temperature, so it may be called without a forward, and it gives
 * the gradient of the forward that the same layer state would compute. Step a temperature
 * schedule after the backward of an iteration, not between its forward and backward.
 *
 * Threads (since 1.1): the per-sample convolution backward (dW_n and dx[n], the bulk of the
 * work) runs on the handle's pool and thread count of section 7, whole samples per thread (one
 * thread when the work is small, as for forward); the attention's backward and the two GEMMs
 * over the batch run in the calling thread. Its BLAS calls run on one thread like the
 * forward's (section 7), and it never changes the BLAS's thread count. The result does not
 * depend on the handle's thread count: bitwise the same on any number of threads. (1.0 ran
 * backward in the calling thread alone, on the BLAS's own threads.) */

/* Flags of the backward functions (bitwise OR; unknown bits: DYNCONV_ERROR_UNSUPPORTED). */
enum {
    /* Add the gradients into the caller's buffers (e.g. over micro-batches) instead of
     * overwriting them (the default). Applies to every buffer, grad_input included. */
    DYNCONV_BACKWARD_ACCUMULATE = 1u << 0
};

/* Where the gradients go: caller-owned float32 arrays in the layouts of the forward's tensors
 * and of dynconv_conv2d_weights. Each pointer may be NULL to skip that gradient (the others are
 * unchanged by it). A gradient of an optional parameter the layer was created without must be
 * NULL. No two of these arrays may overlap, nor overlap the input, grad_output, workspace or the
 * layer's parameters.
 *   input      [N, C_in, H, W]               dL/dx
 *   weight     [K, C_out, C_in/g, kh, kw]
 *   bias       [K, C_out]
 *   fc1_weight [hidden, C_in]      fc1_bias [hidden]
 *   fc2_weight [K, hidden]         fc2_bias [K] */
typedef struct dynconv_conv2d_gradients {
    float *input;
    float *weight;
    float *bias;
    float *fc1_weight;
    float *fc1_bias;
    float *fc2_weight;
    float *fc2_bias;
} dynconv_conv2d_gradients;

/* Workspace size in bytes that dynconv_conv2d_backward needs for the shape fixed by the last
 * successful reshape (it holds all N aggregated kernels, the attention gradients and one
 * convolution scratch per thread of the handle: it grows with set_num_threads and
 * set_threadpool; a forward needs one kernel per thread instead, see section 7). Allocates
 * nothing. Errors: NULL_POINTER, INVALID_STATE (no reshape yet), SIZE_OVERFLOW. */
DYNCONV_API dynconv_status dynconv_conv2d_backward_workspace_size(const dynconv_conv2d *layer,
                                                                  size_t *workspace_size);

/* Enables backward with the handle's own workspace: grows it now to the backward size of the
 * current shape, and from then on every reshape sizes it for backward as well as forward. This
 * (or reshape afterwards) is the only place the workspace grows; backward never allocates.
 * Not needed (and allocates nothing) with DYNCONV_FLAG_EXTERNAL_WORKSPACE, where it only
 * reports the size. workspace_size may be NULL.
 * Errors: NULL_POINTER (layer), INVALID_STATE (no reshape yet), SIZE_OVERFLOW, OUT_OF_MEMORY. */
DYNCONV_API dynconv_status dynconv_conv2d_prepare_backward(dynconv_conv2d *layer,
                                                           size_t *workspace_size);

/* Runs the backward pass on the shape fixed by the last successful reshape.
 *   input        [N, C_in, H, W]             the forward's input, required
 *   grad_output  [N, C_out, H_out, W_out]    dL/dy, required
 *   gradients    where the results go (see dynconv_conv2d_gradients), required
 *   flags        0 (overwrite) or DYNCONV_BACKWARD_ACCUMULATE
 *   workspace    dynconv_conv2d_backward_workspace_size bytes, aligned to
 *                DYNCONV_WORKSPACE_ALIGNMENT; or NULL for the handle's own workspace, which
 *                dynconv_conv2d_prepare_backward must have enabled
 * Errors, checked in this order before anything is written:
 *   NULL_POINTER (layer, input, grad_output or gradients NULL; workspace NULL on a handle
 *   created with DYNCONV_FLAG_EXTERNAL_WORKSPACE), UNSUPPORTED (unknown flags), INVALID_ARGUMENT
 *   (a gradient requested for an optional parameter the layer does not have), INVALID_STATE (no reshape
 *   yet; own workspace not enabled by dynconv_conv2d_prepare_backward), SIZE_OVERFLOW,
 *   INSUFFICIENT_WORKSPACE, MISALIGNED_WORKSPACE, INVALID_ARGUMENT (overlapping buffers).
 * Never allocates memory. */
DYNCONV_API dynconv_status dynconv_conv2d_backward(dynconv_conv2d *layer, const float *input,
                                                   const float *grad_output,
                                                   const dynconv_conv2d_gradients *gradients,
                                                   uint32_t flags, void *workspace,
                                                   size_t workspace_size);

/* The dynamic linear layer's gradients, as for conv2d:
 *   input [N, D_in] · weight [K, D_out, D_in] · bias [K, D_out]
 *   fc1_weight [hidden, D_in] · fc1_bias [hidden] · fc2_weight [K, hidden] · fc2_bias [K] */
typedef struct dynconv_linear_gradients {
    float *input;
    float *weight;
    float *bias;
    float *fc1_weight;
    float *fc1_bias;
    float *fc2_weight;
    float *fc2_bias;
} dynconv_linear_gradients;

/* Same contracts as the conv2d functions above; grad_output is [N, D_out]. */
DYNCONV_API dynconv_status dynconv_linear_backward_workspace_size(const dynconv_linear *layer,
                                                                  size_t *workspace_size);
DYNCONV_API dynconv_status dynconv_linear_prepare_backward(dynconv_linear *layer,
                                                           size_t *workspace_size);
DYNCONV_API dynconv_status dynconv_linear_backward(dynconv_linear *layer, const float *input,
                                                   const float *grad_output,
                                                   const dynconv_linear_gradients *gradients,
                                                   uint32_t flags, void *workspace,
                                                   size_t workspace_size);

/* Temperature annealing. A schedule moves T linearly from t0 to t1 in `steps` steps:
 *   after s calls of step_temperature, T = t0 + (t1 - t0) * min(s, steps) / steps
 * (computed in double, rounded to float; exactly t1 from step `steps` on). Setting a schedule
 * sets T = t0 at once (t1 if steps == 0). The paper anneals from 30 to 1 over the first epochs,
 * stepping once per iteration. dynconv_*_set_temperature ends a schedule and fixes T.
 * Errors: NULL_POINTER; INVALID_ARGUMENT (t0 or t1 not finite > 0, steps < 0);
 * INVALID_STATE (step_temperature without a schedule). temperature (the new T) may be NULL. */
DYNCONV_API dynconv_status dynconv_conv2d_set_temperature_schedule(dynconv_conv2d *layer,
                                                                   float t0, float t1,
                                                                   int64_t steps);
DYNCONV_API dynconv_status dynconv_conv2d_step_temperature(dynconv_conv2d *layer,
                                                           float *temperature);
DYNCONV_API dynconv_status dynconv_linear_set_temperature_schedule(dynconv_linear *layer,
                                                                   float t0, float t1,
                                                                   int64_t steps);
DYNCONV_API dynconv_status dynconv_linear_step_temperature(dynconv_linear *layer,
                                                           float *temperature);

/* Flags of the initialisation functions. */
enum {
    /* Kernel biases uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch.nn.Conv2d and
     * nn.Linear initialise theirs; without it they are zero. */
    DYNCONV_INIT_BIAS_UNIFORM = 1u << 0
};

/* Fills parameter arrays (the layouts of dynconv_conv2d_weights) the way PyTorch models of
 * dynamic convolution usually do, reproducibly from `seed`:
 *   weight      each of the K kernels as nn.Conv2d's default: Kaiming-uniform with a = sqrt(5),
 *               i.e. uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in/g * kh * kw
 *   bias        zero, or uniform with the same bound (DYNCONV_INIT_BIAS_UNIFORM)
 *   fc1_weight  Kaiming-normal, mode fan_out, ReLU gain: N(0, 2 / hidden)
 *   fc2_weight  the same: N(0, 2 / K)
 *   fc1_bias, fc2_bias  zero
 * Every pointer may be NULL to skip that array; each array has its own random stream, so
 * skipping one does not change the others. The same seed and geometry give the same values.
 * Errors: NULL_POINTER (geometry), UNSUPPORTED (unknown flags), INVALID_ARGUMENT (invalid
 * geometry as for create), SIZE_OVERFLOW. On error nothing is written. */
DYNCONV_API dynconv_status dynconv_conv2d_init_parameters(const dynconv_conv2d_geometry *geometry,
                                                          uint64_t seed, uint32_t flags,
                                                          float *weight, float *bias,
                                                          float *fc1_weight, float *fc1_bias,
                                                          float *fc2_weight, float *fc2_bias);

/* The same for the linear layer: weight [K, D_out, D_in] with fan_in = D_in (nn.Linear's
 * default), bias [K, D_out], fc1_weight N(0, 2 / hidden), fc2_weight N(0, 2 / K). */
DYNCONV_API dynconv_status dynconv_linear_init_parameters(const dynconv_linear_geometry *geometry,
                                                          uint64_t seed, uint32_t flags,
                                                          float *weight, float *bias,
                                                          float *fc1_weight, float *fc1_bias,
                                                          float *fc2_weight, float *fc2_bias);

/* ------------------------------------------------------------------------------------------ */
/* 7. Threads                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Largest thread count a handle or a pool accepts. */
#define DYNCONV_MAX_THREADS 1024

/* Thread pools (since 1.1). Handles never own threads: a forward runs on the threads of a pool
 * that any number of handles share, so 64 live handles hold no more threads than one.
 *   - The default pool: a handle given no pool uses the process's default pool, created when the
 *     first handle needs it (thread-safely), with as many threads as the process may run on (its
 *     affinity mask when the pool starts), and released when the last handle using it is
 *     destroyed (or moved to another pool): no thread of the library outlives its handles.
 *   - Your own pools: dynconv_threadpool_create, then dynconv_conv2d_set_threadpool /
 *     dynconv_linear_set_threadpool on the handles that should run on it.
 * A pool of T threads starts T - 1 workers: the thread that calls forward is the T-th. The pool
 * may be used by several handles from several threads at the same time: their parallel steps
 * take turns on the workers (one step at a time, serialized inside the pool), so the threads
 * running never outnumber the pool's, and each forward gives the result it gives alone. A
 * forward that runs on one thread (set_num_threads(layer, 1), or little work, see below) never
 * touches the pool and never waits for it. Threads do not survive fork(): a child process must
 * not use the handles and pools it inherits (as with 1.0's per-handle threads), but the handles
 * it creates itself get a default pool of their own, started in the child. */
typedef struct dynconv_threadpool dynconv_threadpool;

/* Creates a pool of num_threads threads (0: as many as the process may run on; 1: no worker,
 * every forward runs in its calling thread), starting its num_threads - 1 workers now. After
 * each parallel step a worker polls for the next one for up to 0.2 ms, then sleeps until woken
 * (waking a sleeping thread costs tens of microseconds in a virtual machine, and a forward runs
 * several such steps); an idle pool uses no CPU. flags must be 0 (none are defined yet).
 * Errors: NULL_POINTER (out), INVALID_ARGUMENT (num_threads < 0 or > DYNCONV_MAX_THREADS),
 * UNSUPPORTED (a flag bit set), OUT_OF_MEMORY (a thread could not be started). *out is
 * unchanged on error. */
DYNCONV_API dynconv_status dynconv_threadpool_create(int num_threads, uint32_t flags,
                                                     dynconv_threadpool **out);

/* Releases the caller's reference. Handles still using the pool keep it alive: its workers are
 * joined when the last of them is destroyed or given another pool. NULL is ignored. Must not
 * overlap another call that uses the same pool through this pointer. */
DYNCONV_API void dynconv_threadpool_destroy(dynconv_threadpool *pool);

/* The pool's size (the calling thread included). Errors: NULL_POINTER. */
DYNCONV_API dynconv_status dynconv_threadpool_get_num_threads(const dynconv_threadpool *pool,
                                                              int *threads);

/* Moves the handle to `pool` (NULL: the default pool, created now if it does not exist). The
 * handle's thread count (set_num_threads) is kept and capped at the new pool's size; on a
 * shaped handle the workspace may change as with set_num_threads (the own workspace grows
 * here; a caller-owned one must be re-sized to what reshape now reports). The handle holds a
 * reference to the pool, so the caller may destroy its own reference at any time.
 * Errors: NULL_POINTER (layer), OUT_OF_MEMORY (workspace, or the default pool's threads);
 * on error the handle keeps its pool. */
DYNCONV_API dynconv_status dynconv_conv2d_set_threadpool(dynconv_conv2d *layer,
                                                         dynconv_threadpool *pool);
DYNCONV_API dynconv_status dynconv_linear_set_threadpool(dynconv_linear *layer,
                                                         dynconv_threadpool *pool);

/* Number of threads a forward of this handle may use: at most that many of its pool's threads
 * (the calling thread plus threads - 1 of the pool's workers). 0, the default, selects all of
 * the pool's threads (the default pool: every CPU the process may run on). A count above the
 * pool's size is accepted and capped at it. threads == 1 runs everything in the calling thread.
 * The result of a forward depends only on the count it really uses, min(threads, pool size),
 * never on which pool provides the threads.
 *
 * Convolution paths: each shape (fixed by reshape) runs on one of
 *   - the library's own engine: register-blocked micro-kernels for AVX-512 (8 x 32 tiles;
 *     8 x 48 where stride-1 "same" padding reads the input in place under masks),
 *     AVX2 + FMA (6 x 16) or baseline x86-64 (4 x 8), the widest this CPU runs, chosen at
 *     create; on AVX-512, for planes its tiles fit better (7x7 and 14x14: 7 positions per
 *     tile instead of 32), reshape takes a 32 x 7 tile with its vectors along the output
 *     channels instead (repacking the kernel sets when the choice changes); the K kernel
 *     sets kept in the micro-kernel's panel layout (MR output channels
 *     interleaved along the reduction), mixed per sample straight in that layout; the image
 *     side built panel by panel from a zero-padded copy of the input (no im2col matrix);
 *   - Winograd F(2x2, 3x3) (since 1.2), for 3x3 kernels of stride 1, dilation 1 and one group
 *     with copied weights: each 4x4 input patch and each kernel transformed (the K kernels
 *     once, by the first reshape to a shape on this path; a sample's mix of them is the mix
 *     of their transforms), sixteen BLAS
 *     GEMMs of C_out x C_in by C_in x tiles (where the K transforms take over 8 MiB, a
 *     thread's whole samples, in chunks when the attention of the batch comes first, or one
 *     at a time on small images, mix them a block of output channels at a time, each block
 *     multiplied at once, so that the K sets are read from memory once per chunk), and each
 *     2x2 output tile transformed back with
 *     its bias and activation: 2.25 times fewer multiply-adds than the direct convolution, for
 *     rounding of the same order (additions and halvings only; small integer data give exact
 *     results). Taken for output planes of at least 14 x 14 with at least 32 input and 32
 *     output channels; not where OpenBLAS runs a core without fused
 *     multiply-adds (a fallback such as Prescott: the sixteen products are the BLAS's);
 *   - im2col + BLAS GEMM (the reference path), whose pointwise and strided 1x1 variants skip
 *     or shrink the im2col;
 *   - the direct depthwise loop, for every depthwise layer (groups == C_in, kernel not 1x1
 *     with stride 1 and no padding).
 *   The engine runs kernels larger than 1x1, pointwise kernels with 256 to 1024 output
 *   positions, and pointwise kernels with fewer where reshape took the 32 x 7 tiles (with
 *   K > 1, one group and 8*hidden > H*W, their row panels mixed a block at a time for several
 *   samples in one pass over the K sets, each block convolved at once); strided 1x1 kernels
 *   without padding with fewer than 256 output positions where reshape took the 32 x 7
 *   tiles, with K > 1 (static ones only where OpenBLAS runs its AVX2 kernels), convolved as
 *   the pointwise layer of their subsampled input; on the AVX2 + FMA tiles (CPUs without
 *   AVX-512) every pointwise kernel and every strided 1x1 kernel without padding; not shapes
 *   with fewer
 *   output positions than its tile is wide (32, 16, 8 or 7),
 *   other strided 1x1 kernels, or borrowed weights with K > 1 whose K sets take more than 8 MiB
 *   packed (mixing and packing them in every forward would cost more than it saves). The
 *   rule was measured on bench/layers.txt against OpenBLAS on its SkylakeX kernels, and for
 *   the AVX2 tiles against its Zen kernels on an AMD EPYC (docs/benchmarks-engine.md).
 *
 * What the threads do: at batch N >= threads, each thread takes whole samples (pooling,
 * attention, its own aggregated kernel and scratch, convolution); the last N % threads
 * samples (all of them at batch 1) are shared: pooled by channels, the attention's first
 * layer split by hidden units (also when the attention of the whole batch is computed first,
 * for small images), the kernel aggregated in slices, then convolved in bands of output
 * rows (im2col + BLAS; of tile rows on the Winograd path, where a dynamic layer whose K
 * transforms take over 8 MiB has each thread mix and convolve its own output channels
 * instead), of output positions in whole tiles
 * (the engine), or (depthwise and one-group 1x1 layers without padding on the
 * BLAS path, strided or not) each thread mixes and convolves its own output channels, in one
 * step. Forwards of little work (under about 10^6
 * multiply-adds plus weighted input and output floats, e.g. a few channels of a 6x6 image) run
 * in the calling thread alone: waking a worker would cost more than it saves. Whole samples,
 * the attention, the depthwise path and the own engine give bitwise the same result whatever
 * the thread count (the engine sums every output in the same order however the positions are
 * shared); a shared sample's GEMM on the BLAS path (and the Winograd path's products) is cut
 * into bands (of rows, tile rows or channels), which the BLAS may round differently in the
 * last bits (the tests hold it within 1e-5 relative of the one-thread result); so may the
 * products of whole samples on the Winograd path where the thread count decides whether a
 * chunk takes the streamed form (K transforms over 8 MiB and a sample's transformed input and
 * products over 2 MiB, or K transforms under 8 MiB and those at most 4 MiB: chunks of one
 * sample at one thread count and more at another). The GEMM
 * paths, the Winograd path, and the engine's micro-kernels (fused multiply-adds on AVX2 and
 * AVX-512, separate ones on the baseline), round differently from each other: the same handle
 * on the same CPU always gives the same bits for the same thread count. Copied and borrowed
 * weights give the same bits except on the Winograd path, which borrowed weights never take.
 *
 * The workspace (reshape's figure) for T threads (the count really used), batch N,
 * kernel_len = C_out*(C_in/g)*kh*kw, depth = (C_in/g)*kh*kw,
 * every buffer rounded up to DYNCONV_WORKSPACE_ALIGNMENT bytes, in floats of 4 bytes:
 *   K > 1:  N*C_in + N*hidden + N*K  +  T * (W + B * C_out [with a bias] + scratch)
 *   K = 1:  T * (W + scratch)  (no attention)
 *   Winograd, with th = ceil(H_out / 2), tw = ceil(W_out / 2) and
 *     R = min(th, max(1, floor(524288 / (64 * (C_in + C_out) * tw)))) (the tile rows of one
 *     block): B = 1, W = 16 * C_out * C_in for K > 1 (a mixed transform), 0 for K = 1, and
 *     scratch = 16 * (C_in + C_out) * R * tw + (2*R + 2) * 2 * (tw + 1); except with K > 1
 *     and 4 * K * 16 * C_out * C_in > 8 MiB: B = 1, or where 8*hidden > H*W and N/T >= 2,
 *     B = min(N/T, 8, floor(16 MiB / (4 * I * T))), at least 1, where
 *     I = 16 * (C_in + C_out) * th * tw (a sample's transformed input and products); and
 *     with K > 1, 4 * K * 16 * C_out * C_in <= 8 MiB, 4 * I <= 4 MiB and N/T >= 2 (wherever
 *     the attention is computed): B = min(N/T, 8, floor(16 MiB / (4 * I * T))), at least 1;
 *     in both cases, when B > 1 or (K sets over 8 MiB) 4 * I <= 2 MiB ("streamed"),
 *     W = B * Rm * C_in, or 16 * C_out * C_in if that is larger and N % T > 0, where
 *     Rm = min(C_out, 16 * floor(65536 / (K * C_in) / 16)) (16 when K * C_in > 4096), and
 *     scratch is the larger of the above and B * I + (2*th + 2) * 2 * (tw + 1);
 *   im2col + BLAS and depthwise: W = B * kernel_len for K > 1, 0 for K = 1 (the kernel is used
 *     as it is);
 *     B (kernels a thread mixes at once) = 1, except when the K kernels take more than 8 MiB,
 *     the image is small (8*hidden > H*W: the attention of the whole batch comes first) and
 *     N/T >= 2: then B = min(N/T, floor(32 MiB / (4*kernel_len))), at least 1;
 *     scratch = 0 for a pointwise kernel (1x1, stride 1, no padding);
 *             (H + 2*ph) * (W + 2*pw) + 8*sw for depthwise (groups == C_in: one padded input
 *             channel); otherwise (C_in/g)*kh*kw * H_out*W_out (the im2col matrix of a group;
 *             for a strided 1x1 kernel without padding, the group's input subsampled).
 *   the own engine, with MR x NR its tile (8 x 32 or 32 x 7 AVX-512, 6 x 16 AVX2, 4 x 8
 *     baseline) and
 *     P = g * ceil((C_out/g) / MR) * MR * depth (one kernel set in panels):
 *     K > 1, H_out*W_out <= 512 and N/T >= 2, for kernels other than pointwise and unpadded
 *       strided 1x1 ones (whatever the size of the K sets and wherever the attention is
 *       computed), and for those where 4*K*P > 8 MiB and 8*hidden > H*W: a "rows batch" (B
 *       samples convolved together one panel slice at a time) with
 *       B = min(N/T, 8, floor(1835008 / (4 * S))), at least 1, where
 *       S = Bp + C_out*H_out*W_out + 256*MR and Bp the block of B panels below; when B > 1,
 *       W = B * MR * 256, or P if that is larger and N % T > 0 (T counted as 1 for forwards
 *       of little work, which share no sample); when B = 1, as follows;
 *     otherwise K > 1 and 4*K*P <= 8 MiB: B = 1, W = P; except for one-group pointwise and
 *       unpadded strided 1x1 kernels ("blocked") with 8*hidden > H*W (pointwise ones also
 *       with H*W <= 256) and N/T >= 2:
 *       B = min(N/T, 8, ceil(C_out / MR)) (W = P holds the B samples' blocks of row panels
 *       side by side);
 *     otherwise K > 1 and 4*K*P > 8 MiB (kernels mixed 256 reduction indices at a time, each
 *       slice convolved at once): B = min(N/T, 8) when 8*hidden > H*W, H_out*W_out > 512
 *       and N/T >= 2, else 1; W = B * g * ceil((C_out/g) / MR) * MR * 256, or P if that is
 *       larger and N % T > 0;
 *     K = 1: W = 0 with copied weights, P with borrowed ones (packed once per forward); for
 *       4*P > 4 MiB, H_out*W_out <= 512 and N/T >= 2 a rows batch too, with
 *       B = min(N/T, 8, floor(1835008 / (4 * (Bp + C_out*H_out*W_out)))), at least 1;
 *     scratch = Bp = min(depth, 256) * ceil(min(H_out*W_out, 512) / NR) * NR (one block of B
 *       panels; B * Bp for a rows batch with B > 1), plus, unless pointwise, the padded input
 *       of a group split into stride phases:
 *       (C_in/g) * sh*sw * ceil((H + 2*ph) / sh) * ceil((W + 2*pw) / sw); for a blocked
 *       strided 1x1 kernel, the larger of that and
 *       min(C_in, 256) * ceil(min(H_out*W_out, 512) / NR) * NR + B * C_in * H_out*W_out
 *       (the B samples' inputs subsampled once for all their blocks).
 * Each sample's kernel is aggregated just before its convolution, into its thread's slot, so the
 * workspace does not hold N aggregated kernels; for large kernels B of them at a time (at most
 * 32 MiB per thread; on the engine B slices of them, on the streamed Winograd form B blocks of
 * their transforms), so that the K kernels are read from memory once per B samples.
 *
 * Interaction with the BLAS: libdynconv parallelises itself, so every BLAS call it makes from a
 * pool's threads must run on one thread, or BLAS threads and pool threads would compete for the
 * cores (OpenBLAS 0.3.21 also serializes multi-threaded calls made from several threads at
 * once). OpenBLAS only has a process-wide thread count, which libdynconv changes once: when the
 * first pool with workers starts (the default pool of a handle on a machine with more than one
 * CPU, or dynconv_threadpool_create with num_threads > 1), it sets OpenBLAS to one thread, and
 * never touches the setting again (no forward or backward changes it, so concurrent handles
 * cannot race on it). From then on the program's own BLAS calls are single-threaded too (the
 * library's backward shares its work on the pool instead, see section 6); a program that wants
 * multi-threaded BLAS calls of its own may raise the count again afterwards
 * (openblas_set_num_threads), at the price of BLAS threads competing with the pool's during
 * forwards. A process that only ever uses one-thread pools keeps its BLAS setting.
 *
 * Threads are started only by dynconv_threadpool_create and by the creation of the default
 * pool (in a create or set_threadpool call), never by reshape, forward or set_num_threads.
 * The workspace holds one slot per thread (see reshape), so on a handle that
 * is already shaped the workspace size may change, and the backward's with it: the handle's own
 * workspace is grown here; a caller-owned one must be re-sized (reshape and
 * dynconv_conv2d_backward_workspace_size report the new sizes).
 * Errors: NULL_POINTER, INVALID_ARGUMENT (threads < 0 or > DYNCONV_MAX_THREADS),
 * OUT_OF_MEMORY (the workspace could not be grown; the handle is unchanged). */
DYNCONV_API dynconv_status dynconv_conv2d_set_num_threads(dynconv_conv2d *layer, int threads);
DYNCONV_API dynconv_status dynconv_linear_set_num_threads(dynconv_linear *layer, int threads);

/* The thread count set (0 resolved to the size of the handle's pool); a forward uses
 * min(this, pool size) threads. */
DYNCONV_API dynconv_status dynconv_conv2d_get_num_threads(const dynconv_conv2d *layer,
                                                          int *threads);
DYNCONV_API dynconv_status dynconv_linear_get_num_threads(const dynconv_linear *layer,
                                                          int *threads);

/* ------------------------------------------------------------------------------------------ */
/* 8. Networks (since 1.2)                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* A whole network (a DY-ResNet, a DY-MobileNetV2, ...) read from one file: a safetensors
 * container whose header holds the graph (schema "dynconv.network", version 1: nodes, ops,
 * attributes, which tensors each op uses; docs/file-format.md, section "Networks") and whose
 * data holds the parameters. The Python exporter (dynconv.export.export_network) writes such
 * files from PyTorch modules. The network runs the graph on float32 NCHW inputs with the layers
 * of sections 3 and 4 (static convolutions and linear layers as one-kernel layers), the other
 * ops (batch norm, ReLU, ReLU6, add, pooling, flatten, concatenation) with its own code.
 *
 * Lifecycle, as for layers: create (reads and checks the whole file, copies the parameters,
 * folds BatchNorm into the convolution before it) -> reshape (fixes [N, C, H, W], plans the
 * buffers, allocates) -> forward (any number of times; never allocates) -> destroy.
 * Memory: create and reshape allocate (and set_threadpool / set_num_threads when the shared
 * workspace has to grow); forward never does. Thread safety: as for layer handles (one network
 * must not be used by two calls at the same time; distinct networks may). */
typedef struct dynconv_network dynconv_network;

/* Flags for the network create functions (unknown bits: DYNCONV_ERROR_UNSUPPORTED). */
enum {
    /* Run every op of the file as it is written: no BatchNorm folding, no activation fusion.
     * For tests of the folding, and for debugging a file. */
    DYNCONV_NETWORK_NO_FUSION = 1u << 0
};

/* Reads the network in the file at `path` (the whole file, then as create_from_memory).
 * By default a BatchNorm whose only input is a convolution read by nothing else is folded into
 * that convolution's kernels and biases (computed in double; exact for dynamic layers too,
 * because the attention sums to one), and a ReLU or ReLU6 that is a convolution's only reader
 * runs inside the convolution's output pass.
 * Errors: NULL_POINTER (path or out), UNSUPPORTED (unknown flag bits), INVALID_ARGUMENT (the
 * file cannot be opened or read; the message has the path and the system's reason),
 * INVALID_MODEL (the contents are not a valid network: the message names the file, the node
 * and the reason), SIZE_OVERFLOW, OUT_OF_MEMORY. *out is unchanged on error. */
DYNCONV_API dynconv_status dynconv_network_create_from_file(const char *path, uint32_t flags,
                                                            dynconv_network **out);

/* The same from a buffer holding the file's bytes. The buffer is only read during the call
 * (the network copies what it keeps). Errors as for create_from_file (NULL_POINTER for data
 * NULL; an empty buffer is INVALID_MODEL); messages name the source "<memory>". */
DYNCONV_API dynconv_status dynconv_network_create_from_memory(const void *data, size_t size,
                                                              uint32_t flags,
                                                              dynconv_network **out);

/* Frees the network, its layers and its buffers. NULL is accepted and ignored. */
DYNCONV_API void dynconv_network_destroy(dynconv_network *network);

/* Fixed by the file: the input's channel count, the number of outputs. */
DYNCONV_API dynconv_status dynconv_network_get_input_channels(const dynconv_network *network,
                                                              int64_t *channels);
DYNCONV_API dynconv_status dynconv_network_get_num_outputs(const dynconv_network *network,
                                                           int64_t *count);

/* Fixes the input shape [N, C, H, W] (C from the file) for the following forwards: computes
 * every node's output shape, plans the activation buffers by liveness (a value's buffer is
 * reused once its last reader in execution order has run; flatten is a view of its input),
 * sizes one workspace shared by all layers, allocates (the only call besides create that
 * does), and reports the peak bytes (activations + shared workspace + attention rows, and the
 * channel means some layers hand to the dynamic layer that reads their output) in *peak_bytes
 * (may be NULL).
 * Errors: NULL_POINTER (network), INVALID_ARGUMENT (batch, height or width <= 0),
 * INVALID_SHAPE (a kernel or pooling window is larger than its padded input, or the inputs of
 * an add / cat / linear do not fit together at this size: the message names the node),
 * SIZE_OVERFLOW, OUT_OF_MEMORY. On error the previous shape stays in force. */
DYNCONV_API dynconv_status dynconv_network_reshape(dynconv_network *network, int64_t batch,
                                                   int64_t height, int64_t width,
                                                   size_t *peak_bytes);

/* After reshape: output `index`'s shape ([N, C, H, W] with rank 4, or [N, D] with rank 2;
 * unused entries of shape[4] set to 1).
 * Errors: NULL_POINTER, INVALID_ARGUMENT (index outside [0, num_outputs)), INVALID_STATE (no
 * successful reshape yet). */
DYNCONV_API dynconv_status dynconv_network_get_output_shape(const dynconv_network *network,
                                                            int64_t index, int64_t shape[4],
                                                            int *rank);

/* Runs the network on the shape fixed by the last successful reshape.
 *   input       [N, C, H, W] as reshaped, float32 NCHW
 *   outputs[i]  receives output i, of the size get_output_shape reports (num_outputs
 *               pointers, none NULL, none overlapping the input or each other)
 * Errors, before anything is written: NULL_POINTER (network, input, outputs or one of its
 * pointers), INVALID_STATE (no successful reshape yet), INVALID_ARGUMENT (buffers overlap).
 * Non-finite values are not errors and stay in their sample, as in the layers. Never
 * allocates. */
DYNCONV_API dynconv_status dynconv_network_forward(dynconv_network *network, const float *input,
                                                   float *const *outputs);

/* The ops as the network runs them (after folding), in execution order. */
typedef struct dynconv_network_node_info {
    const char *name;        /* node name from the file (value name) */
    const char *op;          /* "dynamic_conv2d", "conv2d", "linear", "max_pool2d", ... */
    const char *module;      /* module path from the file, "" for none */
    int64_t num_kernels;     /* K for dynamic layers, 0 otherwise */
    uint32_t fused;          /* DYNCONV_NETWORK_FUSED_* bits */
    int rank;                /* rank of the output value, 0 before the first reshape */
    int64_t shape[4];        /* output shape after reshape (unused entries 1) */
    int64_t parameters;      /* number of float parameters the op holds */
} dynconv_network_node_info;

/* Bits of dynconv_network_node_info.fused. A folded node keeps its own name; the names of the
 * nodes folded into it disappear from the list (and their outputs are its output). */
enum {
    DYNCONV_NETWORK_FUSED_BATCHNORM = 1u << 0,  /* a following BatchNorm was folded in */
    DYNCONV_NETWORK_FUSED_RELU      = 1u << 1,  /* a following ReLU runs in the output pass */
    DYNCONV_NETWORK_FUSED_RELU6     = 1u << 2   /* a following ReLU6 runs in the output pass */
};

/* Number of nodes the network runs (after folding). Errors: NULL_POINTER. */
DYNCONV_API dynconv_status dynconv_network_get_num_nodes(const dynconv_network *network,
                                                         int64_t *count);
/* Node `index` in execution order. Strings stay valid until the network is destroyed.
 * Errors: NULL_POINTER, INVALID_ARGUMENT (index outside [0, num_nodes)). */
DYNCONV_API dynconv_status dynconv_network_get_node_info(const dynconv_network *network,
                                                         int64_t index,
                                                         dynconv_network_node_info *info);

/* Temperature of one dynamic layer by node name, or of every dynamic layer (name NULL; get
 * then reports the first dynamic layer's, in execution order). May be changed between
 * forwards. INVALID_ARGUMENT for a name that is not a dynamic layer of the network (also a
 * network without dynamic layers and name NULL), or a temperature that is not finite and > 0;
 * nothing changes on error. */
DYNCONV_API dynconv_status dynconv_network_set_temperature(dynconv_network *network,
                                                           const char *name, float temperature);
DYNCONV_API dynconv_status dynconv_network_get_temperature(const dynconv_network *network,
                                                           const char *name,
                                                           float *temperature);

/* The attention [N, K] that the last forward computed in dynamic layer `name` (row-major, one
 * row per sample). capacity is the number of floats `attention` holds (at least N*K, else
 * INVALID_ARGUMENT). Errors: NULL_POINTER (network, name or attention), INVALID_ARGUMENT (not
 * a dynamic layer, capacity too small), INVALID_STATE (no forward since the last reshape). */
DYNCONV_API dynconv_status dynconv_network_get_attention(const dynconv_network *network,
                                                         const char *name, float *attention,
                                                         int64_t capacity);

/* Threads: as for layers (section 7). All layers of a network run on one pool (the default
 * pool unless set_threadpool gives another) with the same thread count; these calls apply to
 * all of them, and on a shaped network may grow the shared workspace (OUT_OF_MEMORY: the
 * network is unchanged). */
DYNCONV_API dynconv_status dynconv_network_set_threadpool(dynconv_network *network,
                                                          dynconv_threadpool *pool);
DYNCONV_API dynconv_status dynconv_network_set_num_threads(dynconv_network *network,
                                                           int threads);
DYNCONV_API dynconv_status dynconv_network_get_num_threads(const dynconv_network *network,
                                                           int *threads);

#ifdef __cplusplus
}
#endif

#endif /* DYNCONV_DYNCONV_H */
