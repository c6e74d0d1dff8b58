/* Inside the execution layer: how the forward's and the backward's workspaces are carved. */
#ifndef DYNCONV_SRC_EXEC_PLAN_H
#define DYNCONV_SRC_EXEC_PLAN_H

#include "exec.h"

#include <stdbool.h>
#include <stddef.h>

/* Buffers a forward carves out of the workspace, always in this order: the attention's, for the
 * whole batch (absent when K = 1: there is no attention to compute), then one slot per thread
 * holding that thread's aggregated kernel and bias (absent when K = 1: the kernel is used as it
 * is) and its im2col scratch (absent for the pointwise path; for the depthwise path one padded
 * input channel, for the strided 1x1 path the subsampled input of a group: whatever
 * dc_conv_scratch_floats says). */
typedef struct workspace_layout {
    float *pooled, *hidden, *pi;
    char *slots;              /* first thread's slot */
    size_t slot_bytes;        /* distance between two threads' slots */
    size_t weights_at, biases_at, col_at; /* offsets inside a slot */
    bool has_weights, has_biases, has_col;
} workspace_layout;

/* Buffers a backward carves out of its workspace, always in this order. */
typedef struct dc_backward_layout {
    float *pooled, *hidden, *pi;  /* the recomputed attention */
    float *weights;               /* aggregated kernels W_n, then their gradients dW_n */
    float *dbiases;               /* db_n, [N, C_out] (only when the layer has a bias) */
    float *col;                   /* conv backward scratch of one sample and group, per thread */
    size_t col_stride;            /* floats from one thread's scratch to the next */
    float *dpi, *du, *dpooled;    /* attention gradients */
} dc_backward_layout;

/* Carves (base != NULL) or only sizes the backward workspace for `threads` threads; false when
 * a size overflows. */
bool dc_plan_backward_layout(const dc_layer *l, size_t batch, size_t threads, char *base,
                             dc_backward_layout *out, size_t *bytes);

/* Carves (base != NULL) or only sizes the forward workspace of `threads` slots of `chunk`
 * kernels each; false when a size overflows. */
bool dc_plan_forward_layout(const dc_layer *l, size_t batch, size_t threads, size_t chunk,
                            char *base, workspace_layout *out, size_t *bytes);

/* Threads a pass of `batch` samples uses: `threads`, or 1 when the work is too small to share. */
size_t dc_exec_team(const dc_layer *l, size_t batch, size_t threads);
/* Runs fn on the first `team` threads of the pool (the calling thread alone when team is 1). */
void dc_exec_run(dc_pool *pool, size_t team, dc_pool_task fn, void *ctx);
/* [begin, end) of `total` items for member `index` of a team of `count`: contiguous, sizes
 * differing by at most one. */
void dc_exec_share(size_t total, size_t index, size_t count, size_t *begin, size_t *end);

/* Floats of one mixed kernel in a slot: packed panels on the engine, else kernel_len. */
size_t dc_exec_mixed_floats(const dc_layer *l);
/* Whether a forward writes mixed kernels into the slots: K > 1, or the engine with borrowed
 * weights (packed in every forward, also for K = 1). */
bool dc_exec_mixes(const dc_layer *l);

/* Whether whole samples on the engine mix their kernels a reduction slice at a time, each slice
 * consumed by the convolution right away: K > 1 and the K packed sets larger than the cache
 * keeps between samples. */
bool dc_exec_engine_fused(const dc_layer *l);

/* Whether chunks of `chunk` samples go through dc_engine_conv_rows_batch: more than one
 * sample, a fused layer (dc_exec_engine_fused) or a static kernel over 4 MiB, and an output
 * plane of one column block (DC_ENGINE_ROWS_PLANE positions or fewer). The slot's scratch then
 * holds the chunk's B panels (dc_engine_rows_scratch_floats). */
bool dc_exec_engine_fused_batch(const dc_layer *l, size_t chunk);
/* Output planes up to this many positions are one column block of the engine. */
#define DC_ENGINE_ROWS_PLANE 512

/* Whether whole samples on the engine mix a block of row panels for a chunk of samples in one
 * pass over the K sets, each block convolved right away: not fused, K > 1, pointwise or strided
 * 1x1 (convolved on its gathered input), one group, and the attention of the whole batch first
 * (small images, where the K sets are large next to the image). The slot's P floats hold the
 * chunk's blocks side by side. */
bool dc_exec_engine_blocked(const dc_layer *l);

/* A blocked strided 1x1 layer (dc_exec_engine_blocked) convolves each block as the pointwise
 * layer of its subsampled input: *sub is that layer (all output channels), and the slot's
 * scratch holds the sub-layer's engine scratch (*gathered_at floats) followed by the chunk's
 * inputs gathered, C_in x out_h x out_w floats each; *floats is the whole. False on overflow. */
bool dc_exec_gather_layout(const dc_layer *l, size_t chunk, dc_conv_shape *sub,
                           size_t *gathered_at, size_t *floats);

/* The rule for the backward's input gradient on the engine (exec/backward.c), for the shape
 * in l (l->gemm set). */
bool dc_exec_backward_prefers_engine(const dc_layer *l);

/* Whether a layer's K Winograd transforms take more than the cache keeps between samples
 * (over 8 MiB): its shared samples then mix and convolve by output channels. */
bool dc_exec_wino_big_sets(const dc_layer *l);
/* Whether whole samples in chunks of `chunk` take the "streamed" Winograd form: big sets, and
 * more than one sample (the attention of the batch comes first) or a sample whose transformed
 * input and products (dc_wino_image_floats) take at most 2 MiB. The chunk's inputs are
 * transformed whole first, in the slot's scratch; then, for each of the sixteen transformed
 * matrices, a block of dc_exec_wino_mix_rows output channels at a time, the K sets' rows of
 * that block are mixed for every sample of the chunk into the slot's weights and multiplied at
 * once: the K sets are read from memory once per chunk, and no sample's transform is ever
 * written out whole. */
bool dc_exec_wino_streams(const dc_layer *l, size_t chunk);
/* Output channels of one mixed block on the streamed form (a multiple of 16, or C_out). */
size_t dc_exec_wino_mix_rows(const dc_layer *l);

/* Whether the attention of the whole batch comes before the convolutions (small images). */
bool dc_attention_per_batch(const dc_layer *l, const dc_conv_shape *s);

#endif
