/* The workspace planner, for forward and backward alike: what each buffer is, where it lies,
 * and how large the whole is, computed in one place so that reshape, set_num_threads,
 * prepare_backward and the passes themselves can never disagree. */
#include "plan.h"

#include "conv.h"
#include "tensor.h"

#include <stdint.h>
#include <string.h>


/* Where a forward computes the attention. Per sample, just before its convolution, while the
 * image is large: pooling reads the input, and the convolution then finds it in cache. For small
 * images (7x7, 14x14) the attention's fc1 weights outweigh an image, and one product for the
 * whole batch reads them once. Depends on the shape only, never on the thread count. */
bool dc_attention_per_batch(const dc_layer *l, const dc_conv_shape *s) {
    return l->kernels > 1 && 8 * l->hidden > s->height * s->width;
}

/* Aggregated kernels a thread makes at once (its slot holds that many). Mixing reads all K
 * kernels for every sample; while they fit in the last-level cache that is cheap, and one
 * kernel at a time keeps the workspace small. Past that (K kernels over 8 MiB: 3x3 layers with
 * 256 and 512 channels), every sample would stream them from memory, so a thread whose
 * attention is known up front mixes a chunk of its samples in one pass over the K kernels
 * instead: measured on 512 channels at 7x7, batch 16, dynamic / static went from about 1.9 to
 * 1.4. The chunk is capped at 32 MiB of aggregated kernels per thread. */
/* K kernel sets above this many bytes do not stay in the last-level cache from one sample to
 * the next (the figure the chunk rule below was measured with). */
#define DC_CACHED_KERNELS ((size_t)8 << 20)

bool dc_exec_engine_fused(const dc_layer *l) {
    return l->engine_on && l->kernels > 1 &&
           (l->packed_len > SIZE_MAX / sizeof(float) / l->kernels ||
            l->packed_len * sizeof(float) * l->kernels > DC_CACHED_KERNELS);
}

/* Static kernels above this many bytes are convolved a chunk of samples at a time on the
 * row-panel driver: each panel slice, read from L3 or memory once, serves the whole chunk from
 * L1. Measured (Xeon model 167, 2 MiB L2, batch 16, in-process A/B against each sample
 * convolved on its own by dc_engine_conv_clamped): 512 channels at 7x7 (9.4 MB) 0.81 of the
 * time on 1 and 2 threads (0.95 to 0.97 against the row-panel driver one sample at a time,
 * which that kernel took before); 256 -> 512 at stride 2 from 14x14 (4.7 MB) 0.84 to 0.92;
 * 256 channels at 14x14 (2.4 MB) even (1.01), and 128 -> 256 at stride 2 (1.2 MB) 1.08:
 * those stay in L2 from one sample to the next. */
#define DC_STATIC_BATCH_BYTES ((size_t)4 << 20)

/* Dynamic layers other than pointwise and strided 1x1 ones (those are blocked, or mixed first)
 * take the same path on small images whatever the size of their K sets: a chunk's samples share
 * each panel slice read from the K sets, where mixing each sample's whole kernel first read all
 * K sets again for every sample from L3. Batch 16 (Xeon model 167, 2 MiB L2, dynconv-bench,
 * two interleaved rounds), this path against mixing first: the strided 3x3 128 -> 256 at
 * 28x28 (4.7 MB of K sets) 0.82 to 0.85 of the time on one and two threads, 128 -> 256 at
 * 14x14 0.74 to 0.77, 96 -> 192 at 28x28 0.84 to 0.93, 64 -> 128 at 28x28 (1.2 MB) 0.88 to
 * 0.98, 32 -> 64 at 28x28 (0.3 MB) 0.91 to 1.0, a 5x5 64-channel layer at 14x14 0.90 to 0.94.
 * Pointwise layers were slower on it (at 7x7, 320 -> 1280 up to 1.1 and 160 -> 960 up to 1.4
 * of the blocked path's time). Per-sample attention is computed for the whole chunk first. */
static bool rows_dynamic(const dc_layer *l) {
    return l->kernels > 1 && !dc_conv_is_pointwise(&l->shape) &&
           !dc_conv_is_strided_1x1(&l->shape);
}

/* Whether the chunks of a layer's whole samples go through dc_engine_conv_rows_batch (the
 * chunk's size decides whether there is more than one sample to share). */
static bool batch_rows(const dc_layer *l) {
    const bool big_static = l->kernels == 1 &&
                            l->packed_len > DC_STATIC_BATCH_BYTES / sizeof(float);
    return l->engine_on && (dc_exec_engine_fused(l) || big_static || rows_dynamic(l)) &&
           l->shape.out_h * l->shape.out_w <= DC_ENGINE_ROWS_PLANE;
}

bool dc_exec_engine_fused_batch(const dc_layer *l, size_t chunk) {
    return chunk > 1 && batch_rows(l);
}

/* The most samples the engine mixes in one pass over the K sets (fused, blocked and rows-batch
 * layers). On the fused path of large images each sample's slice of every panel is
 * DC_ENGINE_KC reduction indices long (512 KiB for 512 channels), so 8 of them stay in L2 and
 * L3. Only when the attention of the batch comes first (or on a rows batch, rows_dynamic);
 * else one sample at a time. */
enum { DC_FUSED_CHUNK = 8 };

/* Bytes of L2 the samples of a chunk on dc_engine_conv_rows_batch share for one reduction
 * slice: each sample's B panels, its output (every panel slice adds into its rows) and its
 * mixed panel slice. Measured at batch 16 (Xeon model 167, 2 MiB L2, dynamic, in-process):
 * 512 channels at 7x7 (about 180 KiB a sample) best with 8 samples (4: 1.03 of its time, 16:
 * 1.06); 256 channels at 14x14 (about 430 KiB) with 4 (2: 1.02, 8: 1.11). */
#define DC_ROWS_BATCH_BYTES ((size_t)1792 << 10)

static size_t rows_batch_chunk(const dc_layer *l, size_t per_thread) {
    const dc_conv_shape *s = &l->shape;
    size_t one, two, out, per;
    if (!dc_engine_rows_scratch_floats(s, l->gemm, 1, &one) ||
        !dc_engine_rows_scratch_floats(s, l->gemm, 2, &two) ||
        !dc_mul_size(s->out_channels, s->out_h * s->out_w, &out) ||
        !dc_add_size(two - one, out, &per) ||
        !dc_add_size(per, l->kernels > 1 ? l->gemm->mr * DC_ENGINE_KC : 0, &per) ||
        per > SIZE_MAX / sizeof(float)) {
        return 1;
    }
    size_t chunk = DC_ROWS_BATCH_BYTES / (per * sizeof(float));
    chunk = chunk < per_thread ? chunk : per_thread;
    chunk = chunk < DC_FUSED_CHUNK ? chunk : DC_FUSED_CHUNK;
    return chunk > 0 ? chunk : 1;
}

/* Pointwise planes up to which the blocks serve a chunk also when the attention is computed
 * per sample (the chunk's samples pooled and attended first). Batch 16 (Xeon model 167,
 * dynconv-bench, two interleaved rounds), against each sample's kernel mixed whole first:
 * 64 -> 384 and 96 -> 576 at 14x14 0.85 to 0.93 of the time on one and two threads; at 28x28
 * 32 -> 192 1.06 to 1.10 and 192 -> 32 1.7 to 1.85, at 56x56 24 -> 144 and 144 -> 24 0.90 to
 * 1.05. */
#define DC_BLOCKED_SAMPLE_PLANE 256

bool dc_exec_engine_blocked(const dc_layer *l) {
    const dc_conv_shape *s = &l->shape;
    const bool pointwise = dc_conv_is_pointwise(s);
    return l->engine_on && l->kernels > 1 && !dc_exec_engine_fused(l) &&
           (pointwise || dc_conv_is_strided_1x1(s)) && s->groups == 1 &&
           (dc_attention_per_batch(l, s) ||
            (pointwise && s->height * s->width <= DC_BLOCKED_SAMPLE_PLANE));
}

bool dc_exec_wino_big_sets(const dc_layer *l) {
    return l->wino_on && l->kernels > 1 &&
           l->wino_len > DC_CACHED_KERNELS / sizeof(float) / l->kernels;
}

/* A single sample (the attention per sample) streams only while its transformed input and
 * products stay near L2: 256 channels at 14x14 (1.6 MiB), batch 1, one thread, cold caches:
 * 0.83 of the time of the transform mixed whole first; at 28x28 (6.4 MiB), batch 16, 1.43
 * times it. */
#define DC_WINO_STREAM_IMAGE ((size_t)2 << 20)

/* A transformed image (a sample's transformed input and products) up to which a dynamic layer
 * whose K transforms stay below 8 MiB takes the streamed form too for chunks of samples,
 * wherever its attention is computed (per sample: for the whole chunk first). Mixing each
 * sample's whole transform first read the K transforms again for every sample. Batch 16 (Xeon
 * model 167, 2 MiB L2, dynconv-bench, two interleaved rounds), the streamed form against
 * mixing first: 3x3 128 at 28x28 (3.2 MB images) 0.71 to 0.94 of the time on one and two
 * threads, 96 at 28x28 0.83 to 0.94, 64 at 28x28 0.76 to 0.84, 64 -> 128 at 20x20 0.73 to
 * 0.82, 128 and 160 at 14x14 0.55 to 0.69, 64 at 14x14 0.93 to 0.96, 32 at 14x14 even; 64 at
 * 56x56 (6.4 MB images) took 2.4 times as long on one thread (chunks of two). */
#define DC_WINO_CHUNK_IMAGE ((size_t)4 << 20)

static bool wino_chunked(const dc_layer *l) {
    size_t image;
    return l->wino_on && l->kernels > 1 && !dc_exec_wino_big_sets(l) &&
           dc_wino_image_floats(&l->shape, &image) &&
           image <= DC_WINO_CHUNK_IMAGE / sizeof(float);
}

bool dc_exec_wino_streams(const dc_layer *l, size_t chunk) {
    size_t image;
    return (dc_exec_wino_big_sets(l) &&
            (chunk > 1 || (dc_wino_image_floats(&l->shape, &image) &&
                           image <= DC_WINO_STREAM_IMAGE / sizeof(float)))) ||
           (wino_chunked(l) && chunk > 1);
}

/* Output channels of a block: the K sets' rows of one take 256 KiB (64 channels for 256 input
 * channels and K = 4). Each block packs the samples' V[xi] again, and the chunk's mixed rows
 * should stay in L2 for their products. 256 channels at 14x14, batch 16, Zen 4 (1 MiB L2):
 * blocks of 32, 48 and 64 channels within the noise of each other (1.02 to 1.10 of the static
 * layer's time); 128 and 256 channels 1.22 to 1.31. */
#define DC_WINO_MIX_BYTES ((size_t)256 << 10)

size_t dc_exec_wino_mix_rows(const dc_layer *l) {
    const size_t co = l->shape.out_channels, row = l->kernels * l->shape.in_channels;
    size_t rows = row > DC_WINO_MIX_BYTES / sizeof(float) / 16
                      ? 16
                      : DC_WINO_MIX_BYTES / sizeof(float) / row / 16 * 16;
    return rows < co ? rows : co;
}

/* Samples of a chunk on the streamed Winograd form: their transformed inputs and products,
 * dc_wino_image_floats each, stay in the last-level cache, 16 MiB between all threads, at
 * most 8 samples. 256 channels at 14x14 (1.5 MiB a sample), batch 16, Zen 4 (32 MiB L3):
 * 8 MiB 1.09 to 1.11 of the static layer's time, 16 MiB 1.02 to 1.09, 32 MiB 1.05 to 1.12. */
static size_t wino_stream_chunk(const dc_layer *l, size_t per_thread, size_t threads) {
    size_t image;
    if (!dc_wino_image_floats(&l->shape, &image) || image > SIZE_MAX / sizeof(float) / threads) {
        return 1;
    }
    size_t chunk = ((size_t)16 << 20) / (image * sizeof(float) * threads);
    chunk = chunk < per_thread ? chunk : per_thread;
    chunk = chunk < DC_FUSED_CHUNK ? chunk : DC_FUSED_CHUNK;
    return chunk > 0 ? chunk : 1;
}

static size_t kernel_chunk(const dc_layer *l, const dc_conv_shape *s, size_t batch,
                           size_t threads) {
    const size_t cached = DC_CACHED_KERNELS, budget = (size_t)32 << 20;
    if (dc_exec_wino_big_sets(l)) {
        return !dc_attention_per_batch(l, s) || batch / threads < 2
                   ? 1
                   : wino_stream_chunk(l, batch / threads, threads);
    }
    if (wino_chunked(l)) {
        return batch / threads < 2 ? 1 : wino_stream_chunk(l, batch / threads, threads);
    }
    if (batch_rows(l)) {
        return (l->kernels > 1 && !dc_attention_per_batch(l, s) && !rows_dynamic(l)) ||
                       batch / threads < 2
                   ? 1
                   : rows_batch_chunk(l, batch / threads);
    }
    if (dc_exec_engine_fused(l) || dc_exec_engine_blocked(l)) {
        const size_t per_thread = batch / threads;
        const bool blocked = dc_exec_engine_blocked(l);
        size_t chunk = per_thread < DC_FUSED_CHUNK ? per_thread : DC_FUSED_CHUNK;
        if ((!dc_attention_per_batch(l, s) && !blocked) || per_thread < 2) {
            chunk = 1;
        }
        /* Blocked: each sample of the chunk needs at least one row panel of the slot. */
        const size_t panels = (s->out_channels + l->gemm->mr - 1) / l->gemm->mr;
        return blocked && chunk > panels ? panels : chunk;
    }
    const size_t kernel_bytes = dc_exec_mixed_floats(l) * sizeof(float);
    if (!dc_attention_per_batch(l, s) || batch / threads < 2 ||
        kernel_bytes > SIZE_MAX / l->kernels || kernel_bytes * l->kernels <= cached) {
        return 1;
    }
    size_t chunk = budget / kernel_bytes;
    chunk = chunk < batch / threads ? chunk : batch / threads;
    return chunk > 0 ? chunk : 1;
}

size_t dc_exec_mixed_floats(const dc_layer *l) {
    return l->wino_on ? l->wino_len : l->engine_on ? l->packed_len : l->kernel_len;
}

/* Floats of the mixed kernels in one slot: `chunk` whole kernels, or on the fused engine path
 * `chunk` slices, or on the blocked one a single kernel, and a whole kernel besides when
 * samples are shared between threads (they are mixed whole into slot 0). False on overflow. */
static bool slot_weights(const dc_layer *l, size_t batch, size_t threads, size_t chunk,
                         size_t *out) {
    if (dc_exec_engine_blocked(l)) {
        *out = l->packed_len; /* the chunk's blocks side by side in one kernel's room */
        return true;
    }
    if (l->kernels == 1) {
        /* borrowed on the engine: packed once per pass, whatever the chunk */
        *out = dc_exec_mixed_floats(l);
        return true;
    }
    if (dc_exec_wino_streams(l, chunk)) {
        /* one mixed block for each sample of the chunk; a whole transform in slot 0 when
         * samples are shared (they mix their rows of it by channels) */
        const size_t team = dc_exec_team(l, batch, threads);
        const size_t dims[3] = {chunk, dc_exec_wino_mix_rows(l), l->shape.in_channels};
        if (!dc_product(dims, 3, out)) {
            return false;
        }
        if (batch % team != 0 && *out < l->wino_len) {
            *out = l->wino_len;
        }
        return true;
    }
    if (!dc_exec_engine_fused(l) && !dc_exec_engine_fused_batch(l, chunk)) {
        return dc_mul_size(chunk, dc_exec_mixed_floats(l), out);
    }
    const size_t g_out = l->shape.out_channels / l->shape.groups, mr = l->gemm->mr;
    /* on dc_engine_conv_rows_batch one panel slice of each sample of the chunk; else a slice
     * of every panel */
    const size_t rows = dc_exec_engine_fused_batch(l, chunk)
                            ? mr
                            : l->shape.groups * ((g_out + mr - 1) / mr * mr);
    const size_t dims[3] = {rows, DC_ENGINE_KC, chunk};
    if (!dc_product(dims, 3, out)) {
        return false;
    }
    const size_t team = dc_exec_team(l, batch, threads);
    if (batch % team != 0 && *out < l->packed_len) {
        *out = l->packed_len;
    }
    return true;
}

bool dc_exec_mixes(const dc_layer *l) {
    return l->kernels > 1 || (l->engine_on && l->packed == NULL);
}

static bool plan_workspace(const dc_layer *l, size_t batch, size_t threads, size_t chunk,
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
    out->has_weights = dc_exec_mixes(l);
    out->has_biases = dynamic && l->bias != NULL;
    out->has_col = scratch_floats > 0;
    size_t chunk_weights, chunk_biases;
    if (!slot_weights(l, batch, threads, chunk, &chunk_weights) ||
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

bool dc_exec_gather_layout(const dc_layer *l, size_t chunk, dc_conv_shape *sub,
                           size_t *gathered_at, size_t *floats) {
    const dc_conv_shape *s = &l->shape;
    const size_t plane = s->out_h * s->out_w;
    size_t one, all;
    *sub = *s;
    sub->height = s->out_h;
    sub->width = s->out_w;
    sub->stride_h = sub->stride_w = 1;
    return dc_engine_scratch_floats(sub, l->gemm, plane, gathered_at) &&
           dc_mul_size(s->in_channels, plane, &one) && dc_mul_size(one, chunk, &all) &&
           dc_add_size(*gathered_at, all, floats);
}

bool dc_plan_forward_layout(const dc_layer *l, size_t batch, size_t threads, size_t chunk,
                            char *base, workspace_layout *out, size_t *bytes) {
    size_t scratch, gather = 0, unused;
    dc_conv_shape sub;
    const dc_conv_shape *s = &l->shape;
    const bool sized =
        l->wino_on     ? dc_wino_scratch_floats(s, &scratch)
        : l->engine_on ? dc_engine_scratch_floats(s, l->gemm, s->out_h * s->out_w, &scratch)
                       : dc_conv_scratch_floats(s, &scratch);
    /* A blocked strided 1x1 layer gathers the chunk's inputs once, not once per block (each
     * gather reads the whole input from memory: with 4 blocks, 33% of the layer's time). Room
     * for the strided path as well, which a forced mode may still take. */
    if (sized && dc_exec_engine_blocked(l) && dc_conv_is_strided_1x1(s)) {
        if (!dc_exec_gather_layout(l, chunk, &sub, &unused, &gather)) {
            return false;
        }
        scratch = gather > scratch ? gather : scratch;
    }
    /* The streamed Winograd form keeps its chunk's transformed inputs and products; shared
     * samples still run dc_wino_conv in the same scratch. */
    if (sized && dc_exec_wino_streams(l, chunk)) {
        size_t image, split;
        if (!dc_wino_image_floats(s, &image) || !dc_wino_split_floats(s, &split) ||
            !dc_mul_size(image, chunk, &gather) || !dc_add_size(gather, split, &gather)) {
            return false;
        }
        scratch = gather > scratch ? gather : scratch;
    }
    /* A fused layer, or a static kernel over 4 MiB, on a small image convolves its chunk's
     * samples together on the row-panel driver: B panels for each of them, one padded copy. */
    if (sized && dc_exec_engine_fused_batch(l, chunk)) {
        if (!dc_engine_rows_scratch_floats(s, l->gemm, chunk, &gather)) {
            return false;
        }
        scratch = gather > scratch ? gather : scratch;
    }
    return sized &&
           plan_workspace(l, batch, threads, chunk, scratch, base, out, bytes);
}

bool dc_plan_forward(const dc_layer *l, size_t batch, size_t threads, size_t *chunk,
                     size_t *bytes) {
    workspace_layout unused;
    const size_t c = kernel_chunk(l, &l->shape, batch, threads);
    if (!dc_plan_forward_layout(l, batch, threads, c, NULL, &unused, bytes)) {
        return false;
    }
    *chunk = c;
    return true;
}

bool dc_plan_backward_layout(const dc_layer *l, size_t batch, size_t threads, char *base,
                             dc_backward_layout *out, size_t *bytes) {
    /* One convolution scratch per thread, each starting on a cache line. */
    const size_t line = DC_ALIGNMENT / sizeof(float);
    size_t scratch_floats, engine_floats = 0, stride, all_scratch = 0;
    /* On the engine, the conv scratch is followed by the kernel of a group packed transposed
     * and a partial B panel (dc_engine_input_grad_scratch_floats). */
    if (!dc_conv_backward_scratch_floats(&l->shape, &scratch_floats) ||
        (l->backward_engine_on &&
         (!dc_engine_input_grad_scratch_floats(&l->shape, l->gemm, &engine_floats) ||
          !dc_add_size(scratch_floats, engine_floats, &scratch_floats))) ||
        !dc_add_size(scratch_floats, line - 1, &stride) ||
        !dc_mul_size(stride / line * line, threads, &all_scratch)) {
        return false;
    }
    stride = stride / line * line;
    dc_arena arena = {base, 0, false};
    size_t pooled, hidden, pi, weights, biases = 0;
    if (!dc_mul_size(batch, l->shape.in_channels, &pooled) ||
        !dc_mul_size(batch, l->hidden, &hidden) || !dc_mul_size(batch, l->kernels, &pi) ||
        !dc_mul_size(batch, l->kernel_len, &weights) ||
        (l->bias != NULL && !dc_mul_size(batch, l->shape.out_channels, &biases))) {
        return false;
    }
    out->pooled = dc_arena_take(&arena, pooled);
    out->hidden = dc_arena_take(&arena, hidden);
    out->pi = dc_arena_take(&arena, pi);
    out->weights = dc_arena_take(&arena, weights);
    out->dbiases = l->bias != NULL ? dc_arena_take(&arena, biases) : NULL;
    out->col = scratch_floats > 0 ? dc_arena_take(&arena, all_scratch) : NULL;
    out->col_stride = stride;
    out->dpi = dc_arena_take(&arena, pi);
    out->du = dc_arena_take(&arena, hidden);
    out->dpooled = dc_arena_take(&arena, pooled);
    *bytes = arena.used;
    return !arena.overflow;
}

bool dc_plan_backward(const dc_layer *l, size_t batch, size_t threads, size_t *bytes) {
    dc_backward_layout unused;
    return dc_plan_backward_layout(l, batch, threads, NULL, &unused, bytes);
}
