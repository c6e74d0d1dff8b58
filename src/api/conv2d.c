/* Dynamic conv2d handle: lifecycle, parameter ownership, thread count and pool, the workspace
 * protocol and the forward's argument checks. The workspace plans and the pipeline itself are
 * the execution layer's (src/exec). */
#include "internal.h"

#include "conv.h"
#include "exec.h"
#include "tensor.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

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

/* Floats of each parameter array, in the order they are stored when copied. */
static bool parameter_sizes(const dynconv_conv2d *l, const dynconv_conv2d_weights *w,
                            size_t sizes[6]) {
    sizes[1] = sizes[3] = sizes[5] = 0;
    return dc_mul_size(l->core.kernels, l->core.kernel_len, &sizes[0]) &&
           (w->bias == NULL || dc_mul_size(l->core.kernels, l->core.shape.out_channels, &sizes[1])) &&
           dc_mul_size(l->core.hidden, l->core.shape.in_channels, &sizes[2]) &&
           (w->fc1_bias == NULL || (sizes[3] = l->core.hidden, true)) &&
           dc_mul_size(l->core.kernels, l->core.hidden, &sizes[4]) &&
           (w->fc2_bias == NULL || (sizes[5] = l->core.kernels, true));
}

/* The floats of one transformed kernel set when the layer may take the Winograd path (3x3
 * stride-1 shapes of one group; the caller knows the weights never change), else 0. Nothing
 * is allocated: the transforms are made by the first reshape that takes the path (make_wino),
 * so that layers which never do (512 channels at 7x7: 16/9 of their K sets) cost no memory. */
static dynconv_status wino_size(const char *fn, const dc_layer *l, size_t *len) {
    size_t floats;
    *len = 0;
    if (dc_wino_applies(&l->shape) &&
        (!dc_wino_kernel_floats(&l->shape, len) || !dc_mul_size(*len, l->kernels, &floats) ||
         floats > SIZE_MAX / sizeof(float))) {
        *len = 0;
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: transformed kernel sizes overflow", fn);
    }
    return DYNCONV_OK;
}

/* The transforms of the K kernel sets, into *out (size checked by wino_size). */
static dynconv_status make_wino(const char *fn, const dc_layer *l, float **out) {
    const size_t bytes = l->wino_len * l->kernels * sizeof(float);
    float *u = dc_aligned_alloc(bytes);
    if (u == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                       "%s: cannot allocate %zu bytes of transformed kernels", fn, bytes);
    }
    dc_wino_transform_kernels(&l->shape, l->kernels, l->weight, u);
    *out = u;
    return DYNCONV_OK;
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
    const float **dst[6] = {&l.core.weight, &l.core.bias, &l.core.fc1_weight, &l.core.fc1_bias, &l.core.fc2_weight,
                            &l.core.fc2_bias};
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

    /* The engine's micro-kernel, and with owned weights their packed copy: made once here, as
     * borrowed weights may change between forwards. */
    size_t pack_floats = 0;
    if (!dc_exec_engine_setup(&l.core, &pack_floats) ||
        pack_floats > SIZE_MAX / sizeof(float)) {
        dc_aligned_free(l.owned);
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: packed kernel sizes overflow", fn);
    }
    if (!(flags & DYNCONV_FLAG_BORROW_WEIGHTS) && pack_floats > 0) {
        l.packed = dc_aligned_alloc(pack_floats * sizeof(float));
        if (l.packed == NULL) {
            dc_aligned_free(l.owned);
            return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                           "%s: cannot allocate %zu bytes of packed kernels", fn,
                           pack_floats * sizeof(float));
        }
        dc_exec_engine_pack(&l.core, l.packed);
    }
    if (!(flags & DYNCONV_FLAG_BORROW_WEIGHTS)) {
        const dynconv_status ws = wino_size(fn, &l.core, &l.core.wino_len);
        if (ws != DYNCONV_OK) {
            dc_aligned_free(l.packed);
            dc_aligned_free(l.owned);
            return ws;
        }
        l.core.wino_able = l.core.wino_len > 0;
    }
    l.core.blas_avx512 = dc_blas_runs_avx512();
    l.core.blas_fma = dc_blas_runs_fma();

    /* Default: every thread of the process's default pool (one per CPU the process may run on);
     * the handle itself starts no thread. */
    dynconv_status st = dc_threadpool_acquire(fn, NULL, &l.threadpool);
    if (st != DYNCONV_OK) {
        dc_aligned_free(l.packed);
        dc_aligned_free(l.owned);
        return st;
    }
    l.threads = l.threadpool->threads;
    l.threads_requested = 0;
    dynconv_conv2d *handle = malloc(sizeof *handle);
    if (handle == NULL) {
        dc_threadpool_release(l.threadpool);
        dc_aligned_free(l.packed);
        dc_aligned_free(l.owned);
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the handle", fn);
    }
    *handle = l;
    *out = handle;
    return DYNCONV_OK;
}

dynconv_status dc_conv2d_pack_borrowed(const char *fn, dynconv_conv2d *layer) {
    dc_layer *l = &layer->core;
    size_t wino_len;
    TRY(wino_size(fn, l, &wino_len));
    if (layer->packed == NULL && l->gemm != NULL) { /* else packed at create, or no engine */
        size_t floats; /* fits: create computed the same product */
        if (!dc_mul_size(l->packed_len, l->kernels, &floats) ||
            floats > SIZE_MAX / sizeof(float)) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: packed kernel sizes overflow", fn);
        }
        layer->packed = dc_aligned_alloc(floats * sizeof(float));
        if (layer->packed == NULL) {
            return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                           "%s: cannot allocate %zu bytes of packed kernels", fn,
                           floats * sizeof(float));
        }
        dc_exec_engine_pack(l, layer->packed);
    }
    l->wino_len = wino_len;
    l->wino_able = wino_len > 0;
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
    dc_aligned_free(layer->wino);
    dc_aligned_free(layer->packed);
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
    size_t ws_bytes = 0, chunk = 1, bwd_bytes = 0;
    bool bwd_ok = false;
    if (layer->shaped) {
        if (!dc_plan_forward(&layer->core, layer->batch, team, &chunk, &ws_bytes)) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                           "%s: the workspace for %zu threads overflows", fn, team);
        }
        /* The backward's workspace holds one convolution scratch per thread too. */
        bwd_ok = dc_plan_backward(&layer->core, layer->batch, team, &bwd_bytes);
        if (layer->backward_enabled && !bwd_ok) {
            return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                           "%s: the backward workspace for %zu threads overflows", fn, team);
        }
        TRY(grow_own_workspace(fn, layer,
                               layer->backward_enabled && bwd_bytes > ws_bytes ? bwd_bytes
                                                                               : ws_bytes));
    }
    layer->threads = team;
    if (layer->shaped) {
        layer->workspace_size = ws_bytes;
        layer->chunk = chunk;
        layer->backward_size_ok = bwd_ok;
        layer->backward_workspace_size = bwd_ok ? bwd_bytes : 0;
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
    dc_conv_shape s = layer->core.shape;
    size_t n = 0;
    TRY(dc_check_positive(fn, "batch", batch, &n));
    TRY(dc_check_positive(fn, "height", height, &s.height));
    TRY(dc_check_positive(fn, "width", width, &s.width));

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
    size_t in_count, out_count, plane, in_plane, col_floats = 0, bytes, ws_bytes, chunk;
    const size_t in_dims[5] = {n, s.in_channels, s.height, s.width, sizeof(float)};
    const size_t out_dims[5] = {n, s.out_channels, s.out_h, s.out_w, sizeof(float)};
    const size_t col_dims[3] = {layer->core.kernel_len / s.out_channels, s.out_h, s.out_w};
    /* The layer at the new shape, for the planner; the handle changes only once all passed. */
    dc_layer next = layer->core;
    next.shape = s;
    /* The micro-kernel for this shape (its panels are repacked below, once all checks passed). */
    next.gemm = dc_exec_engine_kernel(&next);
    if (next.gemm != layer->core.gemm &&
        (!dc_engine_packed_floats(&s, next.gemm, &next.packed_len) ||
         next.packed_len > SIZE_MAX / sizeof(float) / next.kernels)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: packed kernel sizes overflow", fn);
    }
    dc_exec_choose_engine(&next);
    if (!dc_product(in_dims, 5, &bytes) || !dc_product(in_dims, 4, &in_count) ||
        !dc_product(out_dims, 5, &bytes) || !dc_product(out_dims, 4, &out_count) ||
        !dc_mul_size(s.out_h, s.out_w, &plane) || !dc_mul_size(s.height, s.width, &in_plane) ||
        (!dc_conv_is_pointwise(&s) && !dc_product(col_dims, 3, &col_floats)) ||
        !dc_plan_forward(&next, n, layer->threads, &chunk, &ws_bytes) ||
        in_count > (size_t)PTRDIFF_MAX / sizeof(float) ||
        out_count > (size_t)PTRDIFF_MAX / sizeof(float)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: tensor sizes for batch %lld (input %lld x %lld) overflow", fn,
                       (long long)batch, (long long)height, (long long)width);
    }
    TRY(dc_check_blas_fits(fn, "batch", n));
    TRY(dc_check_blas_fits(fn, "out_h * out_w", plane));
    if (((uint64_t)s.out_h > INT64_MAX || (uint64_t)s.out_w > INT64_MAX)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: output size overflows int64", fn);
    }
    /* The backward size is only recorded here: an overflow there is reported by the backward
     * functions, so that inference is never refused for the sake of training. */
    size_t bwd_bytes = 0;
    const bool bwd_ok = dc_plan_backward(&next, n, layer->threads, &bwd_bytes);
    if (layer->backward_enabled && !bwd_ok) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: the backward workspace for batch %lld, %lld x %lld overflows", fn,
                       (long long)batch, (long long)height, (long long)width);
    }
    const size_t own_bytes =
        layer->backward_enabled && bwd_bytes > ws_bytes ? bwd_bytes : ws_bytes;

    /* The Winograd transforms, the first time a shape takes the path (kept for later ones). */
    float *wino = NULL;
    if (next.wino_on && layer->wino == NULL) {
        TRY(make_wino(fn, &next, &wino));
    }
    const dynconv_status grown = grow_own_workspace(fn, layer, own_bytes);
    if (grown != DYNCONV_OK) {
        dc_aligned_free(wino);
        return grown;
    }
    if (next.gemm != layer->core.gemm && layer->packed != NULL) {
        float *repacked = dc_aligned_alloc(next.packed_len * next.kernels * sizeof(float));
        if (repacked == NULL) {
            dc_aligned_free(wino);
            return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                           "%s: cannot allocate %zu bytes of packed kernels", fn,
                           next.packed_len * next.kernels * sizeof(float));
        }
        dc_exec_engine_pack(&next, repacked);
        dc_aligned_free(layer->packed);
        layer->packed = repacked;
    }
    if (wino != NULL) {
        layer->wino = wino;
        layer->core.wino = wino;
    }
    layer->core.gemm = next.gemm;
    layer->core.packed = next.packed;
    layer->core.packed_len = next.packed_len;

    layer->core.shape = s;
    layer->core.engine_on = next.engine_on;
    layer->core.wino_on = next.wino_on;
    layer->core.backward_engine_on = next.backward_engine_on;
    layer->batch = n;
    layer->chunk = chunk;
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

dynconv_status dc_conv2d_forward_named(const char *fn, dynconv_conv2d *layer, const float *input,
                                       float *output, float *attention, void *workspace,
                                       size_t workspace_size) {
    return dc_conv2d_forward_pooled(fn, layer, input, output, attention, workspace,
                                    workspace_size, NULL, NULL);
}

dynconv_status dc_conv2d_forward_pooled(const char *fn, dynconv_conv2d *layer, const float *input,
                                        float *output, float *attention, void *workspace,
                                        size_t workspace_size, const float *pooled_in,
                                        float *pooled_out) {
    if (layer == NULL || input == NULL || output == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       layer == NULL ? "layer" : input == NULL ? "input" : "output");
    }
    if (!layer->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    const dc_conv_shape *s = &layer->core.shape;
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
        TRY(dc_check_workspace(fn, workspace, workspace_size, layer->workspace_size));
    }

    /* Sizes were checked by reshape. */
    const size_t in_plane = s->height * s->width, out_plane = s->out_h * s->out_w;
    const size_t in_bytes = n * s->in_channels * in_plane * sizeof(float);
    const size_t out_bytes = n * s->out_channels * out_plane * sizeof(float);
    const size_t att_bytes = n * layer->core.kernels * sizeof(float);
    const dc_buffer written[] = {{"output", output, out_bytes},
                                 {"attention", attention, att_bytes},
                                 {"workspace", workspace, layer->workspace_size}};
    const dc_buffer read[] = {{"input", input, in_bytes}};
    TRY(dc_check_disjoint(fn, written, 3, read, 1));

    /* The BLAS's thread count is never touched here (it is process-wide, and another handle
     * may be running): the first pool with workers set it to 1 (threadpool.c). */
    dc_exec_forward(&layer->core, n, layer->temperature, layer->threads, layer->chunk,
                    layer->threadpool->pool, input, output, attention, workspace, pooled_in,
                    pooled_out);
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_forward(dynconv_conv2d *layer, const float *input, float *output,
                                      float *attention, void *workspace, size_t workspace_size) {
    return dc_conv2d_forward_named(__func__, layer, input, output, attention, workspace,
                                   workspace_size);
}
