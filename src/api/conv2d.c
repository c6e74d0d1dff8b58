/* Dynamic conv2d handle: argument checking, parameter ownership, workspace protocol, and the
 * forward pipeline pool -> attention -> aggregation -> per-sample convolution. */
#include "internal.h"

#include "aggregation.h"
#include "attention.h"
#include "conv.h"
#include "tensor.h"
#include "threadpool.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Buffers a forward carves out of the workspace, always in this order: the attention's, for the
 * whole batch (absent when K = 1: there is no attention to compute), then one slot per thread
 * holding that thread's aggregated kernel and bias (absent when K = 1: the kernel is used as it
 * is) and its im2col scratch (absent for the pointwise and depthwise paths). */
typedef struct workspace_layout {
    float *pooled, *hidden, *pi;
    char *slots;              /* first thread's slot */
    size_t slot_bytes;        /* distance between two threads' slots */
    size_t weights_at, biases_at, col_at; /* offsets inside a slot */
    bool has_weights, has_biases, has_col;
} workspace_layout;

/* Where a forward computes the attention. Per sample, just before its convolution, while the
 * image is large: pooling reads the input, and the convolution then finds it in cache. For small
 * images (7x7, 14x14) the attention's fc1 weights outweigh an image, and one product for the
 * whole batch reads them once. Depends on the shape only, never on the thread count. */
static bool attention_per_batch(const dynconv_conv2d *l, const dc_conv_shape *s) {
    return l->kernels > 1 && 8 * l->hidden > s->height * s->width;
}

/* Aggregated kernels a thread makes at once (its slot holds that many). Mixing reads all K
 * kernels for every sample; while they fit in the last-level cache that is cheap, and one
 * kernel at a time keeps the workspace small. Past that (K kernels over 8 MiB: 3x3 layers with
 * 256 and 512 channels), every sample would stream them from memory, so a thread whose
 * attention is known up front mixes a chunk of its samples in one pass over the K kernels
 * instead: measured on 512 channels at 7x7, batch 16, dynamic / static went from about 1.9 to
 * 1.4. The chunk is capped at 32 MiB of aggregated kernels per thread. */
static size_t kernel_chunk(const dynconv_conv2d *l, const dc_conv_shape *s, size_t batch,
                           size_t threads) {
    const size_t cached = (size_t)8 << 20, budget = (size_t)32 << 20;
    const size_t kernel_bytes = l->kernel_len * sizeof(float);
    if (!attention_per_batch(l, s) || batch / threads < 2 ||
        kernel_bytes > SIZE_MAX / l->kernels || kernel_bytes * l->kernels <= cached) {
        return 1;
    }
    size_t chunk = budget / kernel_bytes;
    chunk = chunk < batch / threads ? chunk : batch / threads;
    return chunk > 0 ? chunk : 1;
}

static bool plan_workspace(const dynconv_conv2d *l, size_t batch, size_t threads, size_t chunk,
                           size_t scratch_floats, char *base, workspace_layout *out,
                           size_t *bytes) {
    const bool dynamic = l->kernels > 1;
    dc_arena arena = {base, 0, false};
    memset(out, 0, sizeof *out);
    if (dynamic) {
        size_t pooled, hidden, pi;
        if (!dc_mul_size(batch, l->shape.in_channels, &pooled) ||
            !dc_mul_size(batch, l->hidden, &hidden) || !dc_mul_size(batch, l->kernels, &pi)) {
            return false;
        }
        out->pooled = dc_arena_take(&arena, pooled);
        out->hidden = dc_arena_take(&arena, hidden);
        out->pi = dc_arena_take(&arena, pi);
    }
    /* One slot, planned on its own to learn its size and inner offsets. */
    dc_arena slot = {NULL, 0, false};
    out->has_weights = dynamic;
    out->has_biases = dynamic && l->bias != NULL;
    out->has_col = scratch_floats > 0;
    size_t chunk_weights, chunk_biases;
    if (!dc_mul_size(chunk, l->kernel_len, &chunk_weights) ||
        !dc_mul_size(chunk, l->shape.out_channels, &chunk_biases)) {
        return false;
    }
    if (out->has_weights) {
        out->weights_at = slot.used;
        dc_arena_take(&slot, chunk_weights);
    }
    if (out->has_biases) {
        out->biases_at = slot.used;
        dc_arena_take(&slot, chunk_biases);
    }
    if (out->has_col) {
        out->col_at = slot.used;
        dc_arena_take(&slot, scratch_floats);
    }
    size_t all_slots, total;
    if (arena.overflow || slot.overflow || !dc_mul_size(slot.used, threads, &all_slots) ||
        !dc_add_size(arena.used, all_slots, &total)) {
        return false;
    }
    out->slots = base != NULL ? base + arena.used : NULL;
    out->slot_bytes = slot.used;
    /* Never zero, so that the handle always owns a workspace once shaped (a forward may then
     * always be given the handle's own). */
    *bytes = total > 0 ? total : DC_ALIGNMENT;
    return true;
}

/* The handle's own workspace grows to `bytes` (never shrinks); nothing changes on failure. */
static dynconv_status grow_own_workspace(const char *fn, dynconv_conv2d *layer, size_t bytes) {
    if ((layer->flags & DYNCONV_FLAG_EXTERNAL_WORKSPACE) || layer->own_workspace_size >= bytes) {
        return DYNCONV_OK;
    }
    void *grown = dc_aligned_alloc(bytes);
    if (grown == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate a workspace of %zu bytes",
                       fn, bytes);
    }
    dc_aligned_free(layer->own_workspace);
    layer->own_workspace = grown;
    layer->own_workspace_size = bytes;
    return DYNCONV_OK;
}

dynconv_status dc_check_workspace(const char *fn, const void *workspace, size_t size,
                                  size_t needed) {
    if (size < needed) {
        return dc_fail(DYNCONV_ERROR_INSUFFICIENT_WORKSPACE,
                       "%s: workspace of %zu bytes is smaller than the %zu bytes needed", fn, size,
                       needed);
    }
    if ((uintptr_t)workspace % DYNCONV_WORKSPACE_ALIGNMENT != 0) {
        return dc_fail(DYNCONV_ERROR_MISALIGNED_WORKSPACE,
                       "%s: workspace is not aligned to %d bytes", fn,
                       DYNCONV_WORKSPACE_ALIGNMENT);
    }
    return DYNCONV_OK;
}

dynconv_status dc_check_temperature(const char *fn, float temperature) {
    if (!(temperature > 0.0f) || isinf(temperature)) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: temperature must be a finite number > 0, got %g", fn,
                       (double)temperature);
    }
    return DYNCONV_OK;
}

/* Each size is converted once, here, so the rest of the library works in size_t. */
static dynconv_status positive(const char *fn, const char *name, int64_t v, size_t *out) {
    if (v <= 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be > 0, got %lld", fn, name,
                       (long long)v);
    }
    if ((uint64_t)v > SIZE_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: %s = %lld does not fit in size_t", fn,
                       name, (long long)v);
    }
    *out = (size_t)v;
    return DYNCONV_OK;
}

static dynconv_status non_negative(const char *fn, const char *name, int64_t v, size_t *out) {
    if (v < 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be >= 0, got %lld", fn, name,
                       (long long)v);
    }
    if ((uint64_t)v > SIZE_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: %s = %lld does not fit in size_t", fn,
                       name, (long long)v);
    }
    *out = (size_t)v;
    return DYNCONV_OK;
}

/* OpenBLAS takes int dimensions: every GEMM extent and leading dimension must fit. */
static dynconv_status blas_fits(const char *fn, const char *what, size_t v) {
    if (v > (size_t)INT_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: %s = %zu exceeds the BLAS index range (%d)", fn, what, v, INT_MAX);
    }
    return DYNCONV_OK;
}


dynconv_status dc_read_geometry(const char *fn, const dynconv_conv2d_geometry *g,
                                dynconv_conv2d *l) {
    dc_conv_shape *s = &l->shape;
    TRY(positive(fn, "in_channels", g->in_channels, &s->in_channels));
    TRY(positive(fn, "out_channels", g->out_channels, &s->out_channels));
    TRY(positive(fn, "kernel_h", g->kernel_h, &s->kernel_h));
    TRY(positive(fn, "kernel_w", g->kernel_w, &s->kernel_w));
    TRY(positive(fn, "stride_h", g->stride_h, &s->stride_h));
    TRY(positive(fn, "stride_w", g->stride_w, &s->stride_w));
    TRY(non_negative(fn, "pad_h", g->pad_h, &s->pad_h));
    TRY(non_negative(fn, "pad_w", g->pad_w, &s->pad_w));
    TRY(positive(fn, "dilation_h", g->dilation_h, &s->dilation_h));
    TRY(positive(fn, "dilation_w", g->dilation_w, &s->dilation_w));
    TRY(positive(fn, "groups", g->groups, &s->groups));
    TRY(positive(fn, "num_kernels", g->num_kernels, &l->kernels));
    TRY(positive(fn, "hidden", g->hidden, &l->hidden));
    if (s->in_channels % s->groups != 0 || s->out_channels % s->groups != 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: groups (%zu) must divide in_channels (%zu) and out_channels (%zu)",
                       fn, s->groups, s->in_channels, s->out_channels);
    }

    /* Everything reshape and forward will multiply is checked once here. */
    size_t depth, span_h, span_w, twice_pad;
    const size_t kdims[3] = {s->in_channels / s->groups, s->kernel_h, s->kernel_w};
    if (!dc_product(kdims, 3, &depth) || !dc_mul_size(depth, s->out_channels, &l->kernel_len) ||
        !dc_mul_size(s->dilation_h, s->kernel_h - 1, &span_h) ||
        !dc_mul_size(s->dilation_w, s->kernel_w - 1, &span_w) ||
        !dc_mul_size(s->pad_h > s->pad_w ? s->pad_h : s->pad_w, 2, &twice_pad)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: kernel size (out_channels * in_channels/groups * kernel_h * kernel_w, "
                       "dilated extent or padding) overflows",
                       fn);
    }
    TRY(blas_fits(fn, "in_channels/groups * kernel_h * kernel_w", depth));
    TRY(blas_fits(fn, "out_channels * in_channels/groups * kernel_h * kernel_w", l->kernel_len));
    TRY(blas_fits(fn, "in_channels", s->in_channels));
    TRY(blas_fits(fn, "hidden", l->hidden));
    TRY(blas_fits(fn, "num_kernels", l->kernels));
    return DYNCONV_OK;
}

/* Floats of each parameter array, in the order they are stored when copied. */
static bool parameter_sizes(const dynconv_conv2d *l, const dynconv_conv2d_weights *w,
                            size_t sizes[6]) {
    sizes[1] = sizes[3] = sizes[5] = 0;
    return dc_mul_size(l->kernels, l->kernel_len, &sizes[0]) &&
           (w->bias == NULL || dc_mul_size(l->kernels, l->shape.out_channels, &sizes[1])) &&
           dc_mul_size(l->hidden, l->shape.in_channels, &sizes[2]) &&
           (w->fc1_bias == NULL || (sizes[3] = l->hidden, true)) &&
           dc_mul_size(l->kernels, l->hidden, &sizes[4]) &&
           (w->fc2_bias == NULL || (sizes[5] = l->kernels, true));
}

dynconv_status dc_check_create_args(const char *fn, const dynconv_conv2d_weights *weights,
                                    uint32_t flags, float temperature) {
    if (weights->weight == NULL || weights->fc1_weight == NULL || weights->fc2_weight == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: weights->%s is NULL (required)", fn,
                       weights->weight == NULL       ? "weight"
                       : weights->fc1_weight == NULL ? "fc1_weight"
                                                     : "fc2_weight");
    }
    if ((flags & ~KNOWN_FLAGS) != 0) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)(flags & ~KNOWN_FLAGS));
    }
    return dc_check_temperature(fn, temperature);
}

dynconv_status dc_conv2d_create_named(const char *fn, const dynconv_conv2d_geometry *geometry,
                                      const dynconv_conv2d_weights *weights, float temperature,
                                      uint32_t flags, dynconv_conv2d **out) {
    if (geometry == NULL || weights == NULL || out == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       geometry == NULL ? "geometry" : weights == NULL ? "weights" : "out");
    }
    TRY(dc_check_create_args(fn, weights, flags, temperature));

    dynconv_conv2d l;
    memset(&l, 0, sizeof l);
    TRY(dc_read_geometry(fn, geometry, &l));
    l.temperature = temperature;
    l.flags = flags;

    size_t sizes[6];
    if (!parameter_sizes(&l, weights, sizes)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: parameter sizes overflow", fn);
    }
    const float *src[6] = {weights->weight,     weights->bias,       weights->fc1_weight,
                           weights->fc1_bias,   weights->fc2_weight, weights->fc2_bias};
    const float **dst[6] = {&l.weight, &l.bias, &l.fc1_weight, &l.fc1_bias, &l.fc2_weight,
                            &l.fc2_bias};
    if (flags & DYNCONV_FLAG_BORROW_WEIGHTS) {
        for (int i = 0; i < 6; ++i) {
            *dst[i] = src[i];
        }
    } else {
        dc_arena plan = {NULL, 0, false};
        for (int i = 0; i < 6; ++i) {
            dc_arena_take(&plan, sizes[i]);
        }
        if (plan.overflow) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: parameter bytes overflow", fn);
        }
        l.owned = dc_aligned_alloc(plan.used);
        if (l.owned == NULL) {
            return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes of weights",
                           fn, plan.used);
        }
        dc_arena arena = {(char *)l.owned, 0, false};
        for (int i = 0; i < 6; ++i) {
            float *copy = dc_arena_take(&arena, sizes[i]);
            if (src[i] != NULL) {
                memcpy(copy, src[i], sizes[i] * sizeof(float));
                *dst[i] = copy;
            }
        }
    }

    /* Default: every thread of the process's default pool (one per CPU the process may run on);
     * the handle itself starts no thread. */
    dynconv_status st = dc_threadpool_acquire(fn, NULL, &l.threadpool);
    if (st != DYNCONV_OK) {
        dc_aligned_free(l.owned);
        return st;
    }
    l.threads = l.threadpool->threads;
    l.threads_requested = 0;
    dynconv_conv2d *handle = malloc(sizeof *handle);
    if (handle == NULL) {
        dc_threadpool_release(l.threadpool);
        dc_aligned_free(l.owned);
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the handle", fn);
    }
    *handle = l;
    *out = handle;
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_create(const dynconv_conv2d_geometry *geometry,
                                     const dynconv_conv2d_weights *weights, float temperature,
                                     uint32_t flags, dynconv_conv2d **out) {
    return dc_conv2d_create_named(__func__, geometry, weights, temperature, flags, out);
}

void dynconv_conv2d_destroy(dynconv_conv2d *layer) {
    if (layer == NULL) {
        return;
    }
    dc_threadpool_release(layer->threadpool);
    dc_aligned_free(layer->own_workspace);
    dc_aligned_free(layer->owned);
    free(layer);
}

/* Threads a forward uses: the request (0: all), capped at the pool's size. */
static size_t team_for(size_t requested, const dynconv_threadpool *pool) {
    return requested == 0 || requested > pool->threads ? pool->threads : requested;
}

/* Makes `team` the handle's forward team. The workspace holds one slot per member, so on a
 * shaped handle its size changes: the own workspace is grown first. Nothing changes on
 * failure. */
static dynconv_status set_team(const char *fn, dynconv_conv2d *layer, size_t team) {
    if (team == layer->threads) {
        return DYNCONV_OK;
    }
    size_t ws_bytes = 0;
    if (layer->shaped) {
        workspace_layout ws;
        size_t scratch;
        if (!dc_conv_scratch_floats(&layer->shape, &scratch) ||
            !plan_workspace(layer, layer->batch, team,
                            kernel_chunk(layer, &layer->shape, layer->batch, team), scratch,
                            NULL, &ws, &ws_bytes)) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                           "%s: the workspace for %zu threads overflows", fn, team);
        }
        TRY(grow_own_workspace(fn, layer, ws_bytes));
    }
    layer->threads = team;
    if (layer->shaped) {
        layer->workspace_size = ws_bytes;
        layer->chunk = kernel_chunk(layer, &layer->shape, layer->batch, team);
    }
    return DYNCONV_OK;
}

dynconv_status dc_conv2d_set_num_threads_named(const char *fn, dynconv_conv2d *layer,
                                               int threads) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    if (threads < 0 || threads > DYNCONV_MAX_THREADS) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: threads must be in [0, %d] (0: all of the pool's threads), got %d",
                       fn, DYNCONV_MAX_THREADS, threads);
    }
    TRY(set_team(fn, layer, team_for((size_t)threads, layer->threadpool)));
    layer->threads_requested = (size_t)threads;
    return DYNCONV_OK;
}

dynconv_status dc_conv2d_set_threadpool_named(const char *fn, dynconv_conv2d *layer,
                                              dynconv_threadpool *pool) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    dynconv_threadpool *next = NULL;
    TRY(dc_threadpool_acquire(fn, pool, &next));
    const dynconv_status st = set_team(fn, layer, team_for(layer->threads_requested, next));
    if (st != DYNCONV_OK) {
        dc_threadpool_release(next);
        return st;
    }
    dc_threadpool_release(layer->threadpool);
    layer->threadpool = next;
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_set_threadpool(dynconv_conv2d *layer, dynconv_threadpool *pool) {
    return dc_conv2d_set_threadpool_named(__func__, layer, pool);
}

dynconv_status dynconv_conv2d_set_num_threads(dynconv_conv2d *layer, int threads) {
    return dc_conv2d_set_num_threads_named(__func__, layer, threads);
}

dynconv_status dc_conv2d_get_num_threads_named(const char *fn, const dynconv_conv2d *layer,
                                               int *threads) {
    if (layer == NULL || threads == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       layer == NULL ? "layer" : "threads");
    }
    /* The request, as set (it may exceed the pool: forwards then use the whole pool). */
    *threads = (int)(layer->threads_requested == 0 ? layer->threadpool->threads
                                                   : layer->threads_requested);
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_get_num_threads(const dynconv_conv2d *layer, int *threads) {
    return dc_conv2d_get_num_threads_named(__func__, layer, threads);
}

dynconv_status dynconv_conv2d_set_temperature(dynconv_conv2d *layer, float temperature) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    TRY(dc_check_temperature(__func__, temperature));
    layer->temperature = temperature;
    layer->scheduled = false;
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_get_temperature(const dynconv_conv2d *layer, float *temperature) {
    if (layer == NULL || temperature == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       layer == NULL ? "layer" : "temperature");
    }
    *temperature = layer->temperature;
    return DYNCONV_OK;
}

dynconv_status dc_conv2d_reshape_named(const char *fn, dynconv_conv2d *layer, int64_t batch,
                                       int64_t height, int64_t width, int64_t *out_h,
                                       int64_t *out_w, size_t *workspace_size) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    dc_conv_shape s = layer->shape;
    size_t n = 0;
    TRY(positive(fn, "batch", batch, &n));
    TRY(positive(fn, "height", height, &s.height));
    TRY(positive(fn, "width", width, &s.width));

    size_t padded_h, padded_w;
    if (!dc_add_size(s.height, 2 * s.pad_h, &padded_h) ||
        !dc_add_size(s.width, 2 * s.pad_w, &padded_w)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: padded input size overflows", fn);
    }
    if (!dc_conv_output_size(s.height, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h, &s.out_h) ||
        !dc_conv_output_size(s.width, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w, &s.out_w)) {
        /* Printed as reach + 1: the extent itself may not fit in size_t. */
        return dc_fail(DYNCONV_ERROR_INVALID_SHAPE,
                       "%s: the dilated kernel (%zu+1 x %zu+1) is larger than the padded input "
                       "(%zu x %zu)",
                       fn, s.dilation_h * (s.kernel_h - 1), s.dilation_w * (s.kernel_w - 1),
                       padded_h, padded_w);
    }

    /* Input, output and scratch element counts, and their byte sizes, must all be representable
     * before anything is allocated or any pointer arithmetic is done on them. */
    size_t in_count, out_count, plane, in_plane, col_floats = 0, scratch, bytes, ws_bytes;
    const size_t in_dims[5] = {n, s.in_channels, s.height, s.width, sizeof(float)};
    const size_t out_dims[5] = {n, s.out_channels, s.out_h, s.out_w, sizeof(float)};
    const size_t col_dims[3] = {layer->kernel_len / s.out_channels, s.out_h, s.out_w};
    workspace_layout ws;
    if (!dc_product(in_dims, 5, &bytes) || !dc_product(in_dims, 4, &in_count) ||
        !dc_product(out_dims, 5, &bytes) || !dc_product(out_dims, 4, &out_count) ||
        !dc_mul_size(s.out_h, s.out_w, &plane) || !dc_mul_size(s.height, s.width, &in_plane) ||
        (!dc_conv_is_pointwise(&s) && !dc_product(col_dims, 3, &col_floats)) ||
        !dc_conv_scratch_floats(&s, &scratch) ||
        !plan_workspace(layer, n, layer->threads, kernel_chunk(layer, &s, n, layer->threads),
                        scratch, NULL, &ws, &ws_bytes) ||
        in_count > (size_t)PTRDIFF_MAX / sizeof(float) ||
        out_count > (size_t)PTRDIFF_MAX / sizeof(float)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: tensor sizes for batch %lld (input %lld x %lld) overflow", fn,
                       (long long)batch, (long long)height, (long long)width);
    }
    TRY(blas_fits(fn, "batch", n));
    TRY(blas_fits(fn, "out_h * out_w", plane));
    if (((uint64_t)s.out_h > INT64_MAX || (uint64_t)s.out_w > INT64_MAX)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: output size overflows int64", fn);
    }
    /* The backward size is only recorded here: an overflow there is reported by the backward
     * functions, so that inference is never refused for the sake of training. */
    dc_backward_layout bws;
    size_t bwd_bytes = 0;
    size_t bwd_scratch = 0;
    const bool bwd_ok = dc_conv_backward_scratch_floats(&s, &bwd_scratch) &&
                        dc_plan_backward_workspace(layer, n, bwd_scratch, NULL, &bws, &bwd_bytes);
    if (layer->backward_enabled && !bwd_ok) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: the backward workspace for batch %lld, %lld x %lld overflows", fn,
                       (long long)batch, (long long)height, (long long)width);
    }
    const size_t own_bytes =
        layer->backward_enabled && bwd_bytes > ws_bytes ? bwd_bytes : ws_bytes;

    TRY(grow_own_workspace(fn, layer, own_bytes));

    layer->shape = s;
    layer->batch = n;
    layer->chunk = kernel_chunk(layer, &s, n, layer->threads);
    layer->workspace_size = ws_bytes;
    layer->backward_size_ok = bwd_ok;
    layer->backward_workspace_size = bwd_ok ? bwd_bytes : 0;
    layer->shaped = true;
    if (out_h != NULL) {
        *out_h = (int64_t)s.out_h;
    }
    if (out_w != NULL) {
        *out_w = (int64_t)s.out_w;
    }
    if (workspace_size != NULL) {
        *workspace_size = ws_bytes;
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_reshape(dynconv_conv2d *layer, int64_t batch, int64_t height,
                                      int64_t width, int64_t *out_h, int64_t *out_w,
                                      size_t *workspace_size) {
    return dc_conv2d_reshape_named(__func__, layer, batch, height, width, out_h, out_w,
                                   workspace_size);
}

/* Below this much work per forward (multiply-adds of the convolution plus a weight for every
 * float read or written), waking a worker costs more than it saves, and on a busy machine it may
 * wait for a core for milliseconds: such forwards run in the calling thread alone. */
#define DC_MIN_PARALLEL_WORK 1e6

/* Threads a forward of the current shape really uses: the handle's count, or 1 for small work.
 * Depends on the shape, never on timing, so a given shape always splits the same way. */
static size_t forward_team(const dynconv_conv2d *l) {
    const dc_conv_shape *s = &l->shape;
    const double n = (double)l->batch;
    const double macs = n * (double)s->out_channels * (double)(s->in_channels / s->groups) *
                        (double)(s->kernel_h * s->kernel_w) * (double)(s->out_h * s->out_w);
    const double floats = n * ((double)s->in_channels * (double)(s->height * s->width) +
                               (double)s->out_channels * (double)(s->out_h * s->out_w));
    return macs + 8.0 * floats < DC_MIN_PARALLEL_WORK ? 1 : l->threads;
}

/* Runs a task on the first `team` threads of the handle's pool, or on the calling thread
 * alone (which then never waits for another handle's use of the pool). */
static void run_team(const dynconv_conv2d *l, size_t team, dc_pool_task fn, void *ctx) {
    if (team == 1) {
        fn(ctx, 0, 1);
    } else {
        dc_threadpool_run(l->threadpool, team, fn, ctx);
    }
}

/* What the forward's tasks share. */
typedef struct forward_ctx {
    const dynconv_conv2d *layer;
    const float *input;
    float *output;
    const workspace_layout *ws;
    size_t count;             /* samples [0, count) are split between threads whole */
    size_t sample;            /* the sample that all threads share (pool_task, aggregate_task,
                               * rows_task) */
    dc_attention att;
    bool batch_attention;     /* attention of the whole batch first (else per sample) */
} forward_ctx;

static float *slot_part(const workspace_layout *ws, size_t thread, bool present, size_t offset) {
    return present ? (float *)(void *)(ws->slots + thread * ws->slot_bytes + offset) : NULL;
}

/* [begin, end) of `total` items for member `index` of a team of `count`: contiguous, sizes
 * differing by at most one. */
static void share(size_t total, size_t index, size_t count, size_t *begin, size_t *end) {
    *begin = total / count * index + (index < total % count ? index : total % count);
    *end = *begin + total / count + (index < total % count ? 1 : 0);
}

/* The squeeze of the shared sample: its channels' averages, split between threads. */
static void pool_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_conv_shape *s = &c->layer->shape;
    const size_t spatial = s->height * s->width;
    const size_t row0 = c->sample * s->in_channels;
    size_t r0, r1;
    share(s->in_channels, index, count, &r0, &r1);
    if (r1 > r0) {
        dc_global_avg_pool(c->input + (row0 + r0) * spatial, r1 - r0, 1, spatial,
                           c->ws->pooled + row0 + r0);
    }
}

/* The squeeze of the whole batch: all (sample, channel) rows, split between threads. */
static void pool_all_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_conv_shape *s = &c->layer->shape;
    const size_t spatial = s->height * s->width;
    size_t r0, r1;
    share(c->layer->batch * s->in_channels, index, count, &r0, &r1);
    if (r1 > r0) {
        dc_global_avg_pool(c->input + r0 * spatial, r1 - r0, 1, spatial, c->ws->pooled + r0);
    }
}

/* pi of sample i from its pooled input, one sample at a time, so that pi does not depend on how
 * the batch is shared between threads (a BLAS product over several samples may round
 * differently). */
static void sample_attention(const forward_ctx *c, size_t i) {
    const dynconv_conv2d *l = c->layer;
    dc_attention_forward(&c->att, 1, c->ws->pooled + i * l->shape.in_channels, l->temperature,
                         c->ws->hidden + i * l->hidden, c->ws->pi + i * l->kernels);
}

static void samples_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dynconv_conv2d *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_len = s->in_channels * s->height * s->width;
    const size_t out_len = s->out_channels * s->out_h * s->out_w;
    float *col = slot_part(c->ws, index, c->ws->has_col, c->ws->col_at);
    float *wt = slot_part(c->ws, index, c->ws->has_weights, c->ws->weights_at);
    float *bt = slot_part(c->ws, index, c->ws->has_biases, c->ws->biases_at);
    size_t i0, i1;
    share(c->count, index, count, &i0, &i1);
    for (size_t i = i0; i < i1; i += l->chunk) {
        const size_t chunk = i1 - i < l->chunk ? i1 - i : l->chunk;
        if (l->kernels > 1) {
            if (!c->batch_attention) {
                /* The attention right before the convolution (chunk == 1 here): the input, just
                 * read by the pooling, is still in cache when the convolution reads it again. */
                dc_global_avg_pool(c->input + i * in_len, 1, s->in_channels,
                                   s->height * s->width, c->ws->pooled + i * s->in_channels);
                sample_attention(c, i);
            }
            const float *pi = c->ws->pi + i * l->kernels;
            dc_aggregate_samples(l->kernels, l->kernel_len, chunk, pi, l->weight, wt, 0,
                                 l->kernel_len);
            if (bt != NULL) {
                dc_aggregate_samples(l->kernels, s->out_channels, chunk, pi, l->bias, bt, 0,
                                     s->out_channels);
            }
        }
        for (size_t j = 0; j < chunk; ++j) {
            /* K = 1: pi is exactly 1, so the kernel is used as it is, with no arithmetic. */
            const float *w = l->kernels > 1 ? wt + j * l->kernel_len : l->weight;
            const float *b = l->kernels > 1 ? (bt != NULL ? bt + j * s->out_channels : NULL)
                                            : l->bias;
            dc_conv2d_sample(s, c->input + (i + j) * in_len, w, b,
                             c->output + (i + j) * out_len, col);
        }
    }
}

/* One shared sample whose output channels can be computed apart (depthwise, pointwise): each
 * thread mixes the kernel rows of its channels and convolves them, with no step in between that
 * would need the other threads' rows. */
static void channels_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dynconv_conv2d *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample, depth = l->kernel_len / s->out_channels;
    size_t oc0, oc1;
    share(s->out_channels, index, count, &oc0, &oc1);
    const float *w = l->weight, *b = l->bias;
    if (l->kernels > 1) {
        const float *pi = c->ws->pi + i * l->kernels;
        float *wt = slot_part(c->ws, 0, true, c->ws->weights_at);
        dc_aggregate_range(l->kernels, l->kernel_len, pi, l->weight, wt, oc0 * depth,
                           oc1 * depth);
        w = wt;
        b = NULL;
        if (l->bias != NULL) {
            float *bt = slot_part(c->ws, 0, true, c->ws->biases_at);
            dc_aggregate_range(l->kernels, s->out_channels, pi, l->bias, bt, oc0, oc1);
            b = bt;
        }
    }
    dc_conv2d_channels(s, c->input + i * s->in_channels * s->height * s->width, w, b,
                       c->output + i * s->out_channels * s->out_h * s->out_w,
                       slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), oc0, oc1);
}

/* One shared sample, step 1: each thread aggregates a slice of the kernel into slot 0. */
static void aggregate_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dynconv_conv2d *l = c->layer;
    const float *pi = c->ws->pi + c->sample * l->kernels;
    size_t k0, k1;
    share(l->kernel_len, index, count, &k0, &k1);
    dc_aggregate_range(l->kernels, l->kernel_len, pi, l->weight,
                       slot_part(c->ws, 0, true, c->ws->weights_at), k0, k1);
    if (index == 0 && l->bias != NULL) {
        dc_aggregate_range(l->kernels, l->shape.out_channels, pi, l->bias,
                           slot_part(c->ws, 0, true, c->ws->biases_at), 0,
                           l->shape.out_channels);
    }
}

/* One shared sample, step 2: each thread convolves a band of output rows. */
static void rows_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dynconv_conv2d *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample;
    const float *w = l->weight, *b = l->bias;
    if (l->kernels > 1) {
        w = slot_part(c->ws, 0, true, c->ws->weights_at);
        b = slot_part(c->ws, 0, c->ws->has_biases, c->ws->biases_at);
    }
    size_t oh0, oh1;
    share(s->out_h, index, count, &oh0, &oh1);
    dc_conv2d_rows(s, c->input + i * s->in_channels * s->height * s->width, w, b,
                   c->output + i * s->out_channels * s->out_h * s->out_w,
                   slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), oh0, oh1);
}

dynconv_status dc_conv2d_forward_named(const char *fn, dynconv_conv2d *layer, const float *input,
                                       float *output, float *attention, void *workspace,
                                       size_t workspace_size) {
    if (layer == NULL || input == NULL || output == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       layer == NULL ? "layer" : input == NULL ? "input" : "output");
    }
    if (!layer->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    const dc_conv_shape *s = &layer->shape;
    const size_t n = layer->batch;
    if (workspace == NULL) {
        if (layer->flags & DYNCONV_FLAG_EXTERNAL_WORKSPACE) {
            return dc_fail(DYNCONV_ERROR_NULL_POINTER,
                           "%s: workspace is NULL but the layer was created with "
                           "DYNCONV_FLAG_EXTERNAL_WORKSPACE",
                           fn);
        }
        workspace = layer->own_workspace;
        workspace_size = layer->own_workspace_size;
    } else {
        if (workspace_size < layer->workspace_size) {
            return dc_fail(DYNCONV_ERROR_INSUFFICIENT_WORKSPACE,
                           "%s: workspace of %zu bytes is smaller than the %zu bytes needed", fn,
                           workspace_size, layer->workspace_size);
        }
        if ((uintptr_t)workspace % DYNCONV_WORKSPACE_ALIGNMENT != 0) {
            return dc_fail(DYNCONV_ERROR_MISALIGNED_WORKSPACE,
                           "%s: workspace is not aligned to %d bytes", fn,
                           DYNCONV_WORKSPACE_ALIGNMENT);
        }
    }

    /* Sizes were checked by reshape. */
    const size_t in_plane = s->height * s->width, out_plane = s->out_h * s->out_w;
    const size_t in_bytes = n * s->in_channels * in_plane * sizeof(float);
    const size_t out_bytes = n * s->out_channels * out_plane * sizeof(float);
    const size_t att_bytes = attention != NULL ? n * layer->kernels * sizeof(float) : 0;
    if (dc_ranges_overlap(input, in_bytes, output, out_bytes) ||
        dc_ranges_overlap(attention, att_bytes, input, in_bytes) ||
        dc_ranges_overlap(attention, att_bytes, output, out_bytes) ||
        dc_ranges_overlap(workspace, layer->workspace_size, input, in_bytes) ||
        dc_ranges_overlap(workspace, layer->workspace_size, output, out_bytes) ||
        dc_ranges_overlap(workspace, layer->workspace_size, attention, att_bytes)) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: input, output, attention and workspace must not overlap", fn);
    }

    workspace_layout ws;
    size_t scratch, unused;
    dc_conv_scratch_floats(s, &scratch); /* checked by reshape */
    plan_workspace(layer, n, layer->threads, layer->chunk, scratch, workspace, &ws, &unused);

    /* The BLAS's thread count is never touched here (it is process-wide, and another handle
     * may be running): the first pool with workers set it to 1 (threadpool.c). */
    const forward_ctx ctx0 = {layer,
                              input,
                              output,
                              &ws,
                              0,
                              0,
                              {s->in_channels, layer->hidden, layer->kernels, layer->fc1_weight,
                               layer->fc1_bias, layer->fc2_weight, layer->fc2_bias},
                              false};
    forward_ctx ctx = ctx0;
    const size_t team = forward_team(layer);
    ctx.batch_attention = attention_per_batch(layer, s);
    if (ctx.batch_attention) {
        run_team(layer, team, pool_all_task, &ctx);
        dc_attention_forward(&ctx.att, n, ws.pooled, layer->temperature, ws.hidden, ws.pi);
    }
    /* Each sample goes through pool -> attention -> aggregation -> convolution in one go, so its
     * input and kernel are still in cache from one step to the next. Whole samples per thread
     * while there are at least as many samples as threads (no synchronisation inside a sample);
     * the remaining samples (all of them at batch 1) are shared by all threads: pooling by
     * channels, aggregation by slices, convolution by bands of output rows. */
    ctx.count = n - n % team;
    if (ctx.count > 0) {
        run_team(layer, team, samples_task, &ctx);
    }
    for (size_t i = ctx.count; i < n; ++i) {
        ctx.sample = i;
        if (layer->kernels > 1 && !ctx.batch_attention) {
            run_team(layer, team, pool_task, &ctx);
            sample_attention(&ctx, i);
        }
        if (dc_conv_channels_split(s)) {
            run_team(layer, team, channels_task, &ctx);
            continue;
        }
        if (layer->kernels > 1) {
            run_team(layer, team, aggregate_task, &ctx);
        }
        run_team(layer, team, rows_task, &ctx);
    }

    if (attention != NULL) {
        if (layer->kernels > 1) {
            memcpy(attention, ws.pi, att_bytes);
        } else {
            /* softmax of a single logit is exactly 1, whatever the input (even NaN): with one
             * kernel the attention branch is not run at all. */
            for (size_t i = 0; i < n; ++i) {
                attention[i] = 1.0f;
            }
        }
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_forward(dynconv_conv2d *layer, const float *input, float *output,
                                      float *attention, void *workspace, size_t workspace_size) {
    return dc_conv2d_forward_named(__func__, layer, input, output, attention, workspace,
                                   workspace_size);
}
