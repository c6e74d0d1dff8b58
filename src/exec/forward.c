/* The forward pipeline and its scheduler: pool -> attention -> aggregation -> per-sample
 * convolution, on the first `threads` threads of a pool. Arguments were checked by the API
 * layer; nothing here fails or allocates. */
#include "exec.h"
#include "plan.h"

#include "aggregation.h"
#include "attention.h"
#include "conv.h"
#include "tensor.h"
#include "threadpool.h"

#include <math.h>
#include <string.h>

/* What the forward's tasks share. */
typedef struct forward_ctx {
    const dc_layer *layer;
    size_t batch;             /* samples of this forward */
    size_t chunk;             /* kernels a thread aggregates at once */
    float temperature;
    const float *input;
    float *output;
    const workspace_layout *ws;
    size_t count;             /* samples [0, count) are split between threads whole */
    size_t sample;            /* the sample that all threads share (pool_task, aggregate_task,
                               * rows_task) */
    dc_attention att;
    bool batch_attention;     /* attention of the whole batch first (else per sample) */
    size_t att_rows;          /* samples [sample, sample + att_rows) of hidden_task */
    const float *pooled_in;   /* the input's channel means, given (dc_exec_forward) */
    float *pooled_out;        /* where the output's channel means go */
} forward_ctx;

/* The layer's activation on out[0, count) (the part of the output a task just wrote). A NaN
 * stays NaN (the comparisons are false), so that it still poisons its sample. */
static void activate(const dc_layer *l, float *out, size_t count) {
    if (l->activation == DC_ACTIVATION_RELU) {
        for (size_t i = 0; i < count; ++i) {
            out[i] = out[i] < 0.0f ? 0.0f : out[i];
        }
    } else if (l->activation == DC_ACTIVATION_RELU6) {
        for (size_t i = 0; i < count; ++i) {
            const float v = out[i] < 0.0f ? 0.0f : out[i];
            out[i] = v > 6.0f ? 6.0f : v;
        }
    }
}

/* The same activation for the engine, which applies it to each band of columns as soon as the
 * band's sum is complete (while in L1); NULL without one. Same comparisons, same bits. */
static const dc_engine_clamp *engine_clamp(const dc_layer *l) {
    static const dc_engine_clamp relu = {0.0f, INFINITY}, relu6 = {0.0f, 6.0f};
    return l->activation == DC_ACTIVATION_RELU    ? &relu
           : l->activation == DC_ACTIVATION_RELU6 ? &relu6
                                                  : NULL;
}

/* The activation as the Winograd output pass's clamp bounds (the same comparisons). */
static void wino_bounds(const dc_layer *l, float *lo, float *hi) {
    *lo = l->activation == DC_ACTIVATION_NONE ? -INFINITY : 0.0f;
    *hi = l->activation == DC_ACTIVATION_RELU6 ? 6.0f : INFINITY;
}

static float *slot_part(const workspace_layout *ws, size_t thread, bool present, size_t offset) {
    return present ? (float *)(void *)(ws->slots + thread * ws->slot_bytes + offset) : NULL;
}

/* The squeeze of the shared sample: its channels' averages, split between threads. */
static void pool_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_conv_shape *s = &c->layer->shape;
    const size_t spatial = s->height * s->width;
    const size_t row0 = c->sample * s->in_channels;
    size_t r0, r1;
    dc_exec_share(s->in_channels, index, count, &r0, &r1);
    if (r1 > r0 && c->pooled_in != NULL) {
        memcpy(c->ws->pooled + row0 + r0, c->pooled_in + row0 + r0, (r1 - r0) * sizeof(float));
    } else if (r1 > r0) {
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
    dc_exec_share(c->batch * s->in_channels, index, count, &r0, &r1);
    if (r1 > r0 && c->pooled_in != NULL) {
        memcpy(c->ws->pooled + r0, c->pooled_in + r0, (r1 - r0) * sizeof(float));
    } else if (r1 > r0) {
        dc_global_avg_pool(c->input + r0 * spatial, r1 - r0, 1, spatial, c->ws->pooled + r0);
    }
}

/* pi of sample i from its pooled input, one sample at a time, so that pi does not depend on how
 * the batch is shared between threads (a BLAS product over several samples may round
 * differently). */
static void sample_attention(const forward_ctx *c, size_t i) {
    const dc_layer *l = c->layer;
    dc_attention_forward(&c->att, 1, c->ws->pooled + i * l->shape.in_channels, c->temperature,
                         c->ws->hidden + i * l->hidden, c->ws->pi + i * l->kernels);
}

/* The pooling and attention of whole sample i, computed right before its convolution (the
 * attention not per batch: chunks of one, or a chunk's samples one after the other before
 * the chunk's shared pass over the K sets). */
static void sample_pool_attention(const forward_ctx *c, size_t i) {
    const dc_conv_shape *s = &c->layer->shape;
    if (c->pooled_in != NULL) {
        memcpy(c->ws->pooled + i * s->in_channels, c->pooled_in + i * s->in_channels,
               s->in_channels * sizeof(float));
    } else {
        dc_global_avg_pool(c->input + i * s->in_channels * s->height * s->width, 1,
                           s->in_channels, s->height * s->width,
                           c->ws->pooled + i * s->in_channels);
    }
    sample_attention(c, i);
}

/* The channel means of the outputs of samples [i, i + count), for the next layer
 * (pooled_out): the same sums as that layer's own pooling would make. */
static void pool_outputs(const forward_ctx *c, size_t i, size_t count) {
    const dc_conv_shape *s = &c->layer->shape;
    const size_t plane = s->out_h * s->out_w;
    if (c->pooled_out != NULL && count > 0) {
        dc_global_avg_pool(c->output + i * s->out_channels * plane, count, s->out_channels,
                           plane, c->pooled_out + i * s->out_channels);
    }
}

/* The activation of sample i's whole output and, when wanted, its channel means: channel by
 * channel, each pooled right after its activation while it is in L1 or L2. */
static void finish_sample(const forward_ctx *c, size_t i) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t plane = s->out_h * s->out_w;
    float *out = c->output + i * s->out_channels * plane;
    if (c->pooled_out == NULL) {
        activate(l, out, s->out_channels * plane);
        return;
    }
    for (size_t oc = 0; oc < s->out_channels; ++oc) {
        activate(l, out + oc * plane, plane);
        dc_global_avg_pool(out + oc * plane, 1, 1, plane, c->pooled_out + i * s->out_channels + oc);
    }
}

/* Channels [oc0, oc1) of the shared sample's output pooled, split between threads. */
static void pool_out_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_conv_shape *s = &c->layer->shape;
    const size_t plane = s->out_h * s->out_w, row0 = c->sample * s->out_channels;
    size_t r0, r1;
    dc_exec_share(s->out_channels, index, count, &r0, &r1);
    if (r1 > r0) {
        dc_global_avg_pool(c->output + (row0 + r0) * plane, r1 - r0, 1, plane,
                           c->pooled_out + row0 + r0);
    }
}

/* fc1 of the attention of samples [sample, sample + att_rows), its hidden units shared between
 * the threads. */
static void hidden_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const size_t i = c->sample, hidden = c->att.hidden;
    size_t j0, j1;
    dc_exec_share(hidden, index, count, &j0, &j1);
    if (j1 > j0) {
        dc_attention_hidden(&c->att, c->att_rows, c->ws->pooled + i * c->att.channels,
                            c->ws->hidden + i * hidden, j0, j1);
    }
}

/* fc1 weights (rows times units times channels, in multiply-adds) from which the attention
 * computed by the caller alone (a shared sample; the whole batch first) has the team share its
 * fc1. At batch 1 the fc1 weights stream from memory in a network whose weights outgrow the
 * last-level cache (DY-MobileNetV2: 9 MB of its 50), one thread's share of the bandwidth. The
 * bound (128 KiB of fc1 weights at batch 1) was set, not tuned: below it the product takes a
 * few microseconds, about what a parallel step costs. */
enum { ATTENTION_SPLIT_MACS = 1 << 15 };

/* pi of samples [i, i + rows), computed by the calling thread or, for a large enough fc1, with
 * its units shared by the team first (the same bits: dc_attention_hidden). */
static void team_attention(forward_ctx *c, dc_pool *pool, size_t team, size_t i, size_t rows) {
    const dc_attention *att = &c->att;
    float *hidden = c->ws->hidden + i * att->hidden, *pi = c->ws->pi + i * att->kernels;
    if (team > 1 && dc_attention_splits(rows) &&
        rows * att->channels * att->hidden >= ATTENTION_SPLIT_MACS) {
        c->sample = i;
        c->att_rows = rows;
        dc_exec_run(pool, team, hidden_task, c);
        dc_attention_finish(att, rows, hidden, c->temperature, pi);
    } else {
        dc_attention_forward(att, rows, c->ws->pooled + i * att->channels, c->temperature, hidden,
                             pi);
    }
}

/* pi of a static layer's single kernel: exactly 1 (multiplying by it changes no bit). */
static const float one = 1.0f;

/* Floats of the tile a borrowed kernel's rows are mixed into: MR rows of MIX_TILE / MR
 * reduction indices (512 at MR = 8, 128 at MR = 32), 16 KiB that stay in L1 between the mixing
 * and the packing. */
enum { MIX_TILE = 8 * 512 };

/* Mixes reduction indices [p0, p0 + np) of global panel gp of the layer's kernel for `chunk`
 * samples (pi [chunk, K]) into A panel slices: sample n, index p at
 * out + n * out_stride + (p - p0) * MR.
 * Owned weights: the K packed sets mixed as they lie (a panel is a permutation of kernel values
 * plus zeros, so mixing commutes with packing); each panel slice is contiguous in every set.
 * Borrowed ones (the caller may change them between forwards): MR rows at a time, a span of
 * each mixed into a small tile and packed from there, so the mixed kernel is never formed
 * whole. Either way each value is the same aggregation sum, so both give the same bits. */
static void mix_panel(const dc_layer *l, const float *pi, size_t chunk, size_t gp, size_t p0,
                      size_t np, float *out, size_t out_stride) {
    const dc_conv_shape *s = &l->shape;
    const size_t mr = l->gemm->mr, g_out = s->out_channels / s->groups;
    const size_t depth = l->kernel_len / s->out_channels, panels = (g_out + mr - 1) / mr;
    if (l->packed != NULL) {
        dc_aggregate_block(l->kernels, l->packed_len, chunk, pi,
                           l->packed + (gp * depth + p0) * mr, out, out_stride, np * mr);
        return;
    }
    float tile[MIX_TILE];
    const size_t span = MIX_TILE / mr;
    const size_t g = gp / panels, j = gp % panels, row0 = g * g_out + j * mr;
    const size_t m = g_out - j * mr < mr ? g_out - j * mr : mr;
    for (size_t q0 = p0; q0 < p0 + np; q0 += span) {
        const size_t nq = p0 + np - q0 < span ? p0 + np - q0 : span;
        for (size_t n = 0; n < chunk; ++n) {
            for (size_t r = 0; r < m; ++r) {
                dc_aggregate_block(l->kernels, l->kernel_len, 1, pi + n * l->kernels,
                                   l->weight + (row0 + r) * depth + q0, tile + r * span, 0,
                                   nq);
            }
            dc_engine_pack_rows(tile, span, m, nq, mr, out + n * out_stride + (q0 - p0) * mr);
        }
    }
}

/* The same for global panels [j0, j1): panel gp at out + gp * a_stride. */
static void engine_mix(const dc_layer *l, const float *pi, size_t chunk, size_t j0, size_t j1,
                       size_t p0, size_t np, float *out, size_t out_stride, size_t a_stride) {
    for (size_t gp = j0; gp < j1; ++gp) {
        mix_panel(l, pi, chunk, gp, p0, np, out + gp * a_stride, out_stride);
    }
}

/* The source of dc_engine_conv_rows(_batch): the kernels of `chunk` samples (pi [chunk, K]),
 * mixed panel slice by panel slice, sample n's slice DC_ENGINE_KC * MR floats after sample
 * n - 1's (weights NULL), or one kernel already packed whole (weights, as for a static layer:
 * no arithmetic). */
typedef struct rows_source {
    const dc_layer *layer;
    const float *pi;
    const float *weights;
    size_t chunk;
} rows_source;

static const float *rows_slice(void *p, size_t gp, size_t p0, size_t kc, float *buf) {
    const rows_source *r = p;
    const dc_layer *l = r->layer;
    const size_t mr = l->gemm->mr, depth = l->kernel_len / l->shape.out_channels;
    if (r->weights != NULL) {
        return r->weights + (gp * depth + p0) * mr;
    }
    mix_panel(l, r->pi, r->chunk, gp, p0, kc, buf, DC_ENGINE_KC * mr);
    return buf;
}

/* Prefetches part `part` of `parts` of the cache lines a slice reads: the K packed slices (or
 * the kernel's one), each kc * MR floats, or with borrowed weights K * m row pieces of kc
 * floats each. The runs are cut into parts line by line, so that each tile call of the current
 * slice is followed by a share of the next one's misses. */
/* Part `part` of `parts` of a slice's lines in the packed K sets (or the kernel packed
 * whole): lines [q0, q1) of each of the `sets` runs, run k at first + k * set_stride floats.
 * False for borrowed weights read row by row, which have no packed runs. */
typedef struct packed_lines {
    const float *first;
    size_t sets, set_stride, q0, q1;
} packed_lines;

static bool packed_part(const rows_source *r, size_t gp, size_t p0, size_t kc, size_t part,
                        size_t parts, packed_lines *out) {
    const dc_layer *l = r->layer;
    if (r->weights == NULL && l->packed == NULL) {
        return false;
    }
    const size_t mr = l->gemm->mr, depth = l->kernel_len / l->shape.out_channels;
    const size_t line = 64 / sizeof(float), lines = (kc * mr + line - 1) / line;
    out->first = (r->weights != NULL ? r->weights : l->packed) + (gp * depth + p0) * mr;
    out->sets = r->weights != NULL ? 1 : l->kernels;
    out->set_stride = l->packed_len;
    out->q0 = lines * part / parts;
    out->q1 = lines * (part + 1) / parts;
    return true;
}

static void rows_prefetch(void *p, size_t gp, size_t p0, size_t kc, size_t part, size_t parts) {
    const rows_source *r = p;
    const dc_layer *l = r->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t mr = l->gemm->mr, depth = l->kernel_len / s->out_channels;
    const size_t line = 64 / sizeof(float);
    packed_lines pl;
    if (packed_part(r, gp, p0, kc, part, parts, &pl)) {
        for (size_t k = 0; k < pl.sets; ++k) {
            for (size_t q = pl.q0; q < pl.q1; ++q) {
                DC_PREFETCH(pl.first + k * pl.set_stride + q * line);
            }
        }
        return;
    }
    const size_t g_out = s->out_channels / s->groups, panels = (g_out + mr - 1) / mr;
    const size_t g = gp / panels, j = gp % panels, row0 = g * g_out + j * mr;
    const size_t m = g_out - j * mr < mr ? g_out - j * mr : mr;
    const size_t runs = l->kernels * m, r0 = runs * part / parts, r1 = runs * (part + 1) / parts;
    for (size_t q = r0; q < r1; ++q) {
        const float *a = l->weight + q / m * l->kernel_len + (row0 + q % m) * depth + p0;
        for (size_t f = 0; f < kc; f += line) {
            DC_PREFETCH(a + f);
        }
    }
}

/* rows_prefetch's lines as addresses, for the tile to issue (none for borrowed weights read
 * row by row: the driver then calls rows_prefetch). Returns the part's count, of which at most
 * max are written. */
static size_t rows_prefetch_lines(void *p, size_t gp, size_t p0, size_t kc, size_t part,
                                  size_t parts, const void **out, size_t max) {
    packed_lines pl;
    if (!packed_part(p, gp, p0, kc, part, parts, &pl)) {
        return 0;
    }
    const size_t line = 64 / sizeof(float);
    size_t count = 0;
    /* set by set: each set's run is read in order by the mixing */
    for (size_t k = 0; k < pl.sets; ++k) {
        for (size_t q = pl.q0; q < pl.q1; ++q, ++count) {
            if (count < max) {
                out[count] = pl.first + k * pl.set_stride + q * line;
            }
        }
    }
    return count;
}

/* Panels of the whole kernel (all groups). */
static size_t engine_panels(const dc_layer *l) {
    const size_t g_out = l->shape.out_channels / l->shape.groups, mr = l->gemm->mr;
    return l->shape.groups * ((g_out + mr - 1) / mr);
}

/* Bytes of mixed kernel rows and their K sources one block of dc_exec_engine_blocked keeps
 * in L2 for the chunk's convolutions: half of a 2 MiB L2, so that the block, the chunk's inputs
 * and the output rows being written stay in it together. Blocks of the whole L2 spilled on the
 * widest layer: MobileNetV2's 320 -> 1280 at 7x7, batch 16 (480 KiB of rows and sources a
 * panel), took 0.90 of the time with 1 MiB blocks on 1 thread and 0.92 on 2, 0.87 and 0.93
 * with 512 KiB (Xeon model 167, in-process, interleaved); 160 -> 960 at 7x7 and the strided
 * 256 -> 512 from 14x14 were even (0.99 to 1.01). Much smaller blocks cost more in per-call
 * overhead than they save: with 8-row panels, 2 panels a block were twice as slow. */
enum { BLOCK_BYTES = 1 << 20 };

/* Samples [i, i + chunk) of a blocked layer (pi and the chunk's biases ready): row panels a
 * block at a time, each block mixed for the whole chunk in one pass over the K sets (sample n's
 * block at wt + n * nb * depth * MR) and every sample's output rows of that block convolved
 * right after, while the block is in L2. The sums are those of the whole kernel, in the same
 * order, so the result is bitwise that of mixing whole kernels.
 * A strided 1x1 layer is the pointwise layer of its subsampled input: the chunk's inputs are
 * gathered once into the scratch past what the pointwise shape needs (dc_exec_gather_layout),
 * and each block convolves them as a pointwise layer (the strided shape's stride-phase copy
 * is not used). Building the strided B panels block after block took twice the time of
 * im2col + BLAS on ResNet-18's 256 -> 512 at 14x14; gathering again for every block read the
 * whole input from memory once per block (a third of that layer's time with 4 blocks). */
static void engine_blocks(const forward_ctx *c, size_t i, size_t chunk, float *wt,
                          const float *bt, float *col) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_len = s->in_channels * s->height * s->width;
    const size_t plane = s->out_h * s->out_w, out_len = s->out_channels * plane;
    const size_t mr = l->gemm->mr, depth = l->kernel_len / s->out_channels;
    const size_t panels = engine_panels(l), panel_floats = depth * mr;
    const size_t per_panel = panel_floats * sizeof(float) * (l->kernels + chunk);
    size_t nb = panels / chunk; /* the slot holds `panels` panels: chunk <= panels */
    if (nb * per_panel > BLOCK_BYTES) {
        nb = BLOCK_BYTES / per_panel > 0 ? BLOCK_BYTES / per_panel : 1;
    }
    const float *pi = c->ws->pi + i * l->kernels;
    /* The block's output channels as a layer of their own (one group, pointwise). */
    dc_conv_shape sub = *s;
    const bool gather = dc_conv_is_strided_1x1(s);
    float *gathered = NULL;
    if (gather) {
        size_t at, unused;
        (void)dc_exec_gather_layout(l, chunk, &sub, &at, &unused); /* checked by the planner */
        gathered = col + at;
        for (size_t j = 0; j < chunk; ++j) {
            dc_conv_gather_strided_1x1(s, c->input + (i + j) * in_len, s->in_channels,
                                       gathered + j * s->in_channels * plane);
        }
    }
    for (size_t j0 = 0; j0 < panels; j0 += nb) {
        const size_t j1 = panels - j0 < nb ? panels : j0 + nb;
        /* sample n's panel gp of the block at wt + (n * nb + gp - j0) * panel_floats */
        for (size_t gp = j0; gp < j1; ++gp) {
            mix_panel(l, pi, chunk, gp, 0, depth, wt + (gp - j0) * panel_floats,
                      nb * panel_floats);
        }
        const size_t rows = (j1 - j0) * mr;
        sub.out_channels = s->out_channels - j0 * mr < rows ? s->out_channels - j0 * mr : rows;
        for (size_t j = 0; j < chunk; ++j) {
            const float *x = gather ? gathered + j * s->in_channels * plane
                                    : c->input + (i + j) * in_len;
            dc_engine_conv_clamped(&sub, l->gemm, x,
                                   wt + j * nb * panel_floats, panel_floats, 0,
                                   bt != NULL ? bt + j * s->out_channels + j0 * mr : NULL,
                                   c->output + (i + j) * out_len + j0 * mr * plane, col, 0,
                                   plane, 0, depth, engine_clamp(l));
        }
    }
}

/* Whole samples on the engine. Kernels that fit in cache are mixed whole for a chunk of
 * samples, then each sample convolved. Larger ones (dc_exec_engine_fused) are mixed one
 * reduction slice at a time for the chunk, and each sample's convolution consumes that slice
 * at once from L2: the K sets are read once per chunk, and no mixed kernel goes to memory.
 * On small images (dc_exec_engine_fused_batch) the unit is one panel slice instead: mixed for
 * the whole chunk (a few KiB a sample, in L1 and L2) and run at once against every sample's B
 * panels of that reduction slice, the next one prefetched under the tiles; static kernels
 * over 4 MiB go the same way, so that a panel slice read from L3 or memory serves the chunk.
 * The mixed slices of all panels (512 KiB a sample for 512 channels) had spilled from L2
 * between the mixing and the tiles: 512 channels at 7x7, batch 16, took 0.92 to 0.94 of the
 * time after (in-process, 1 and 2 threads), the strided 256 -> 512 from 14x14 0.83.
 * A sample mixed on its own (chunk 1) takes the row-panel driver where dc_exec_engine_rows
 * says so: each panel slice mixed into L1 right before its tiles, the next one prefetched
 * under them. */
static void engine_samples(const forward_ctx *c, size_t i0, size_t i1, float *wt, float *bt,
                           float *col) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_len = s->in_channels * s->height * s->width;
    const size_t plane = s->out_h * s->out_w, out_len = s->out_channels * plane;
    const size_t mr = l->gemm->mr, depth = l->kernel_len / s->out_channels;
    const size_t panels = engine_panels(l), slice_len = panels * DC_ENGINE_KC * mr;
    const bool fused = dc_exec_engine_fused(l), blocked = dc_exec_engine_blocked(l);
    const bool rows = dc_exec_engine_rows(l);
    const dc_engine_clamp *act = engine_clamp(l);
    const float *w = l->packed;
    if (l->kernels == 1 && w == NULL) {
        /* borrowed static kernel: packed once per pass */
        engine_mix(l, &one, 1, 0, panels, 0, depth, wt, l->packed_len, depth * mr);
        w = wt;
    }
    for (size_t i = i0; i < i1; i += c->chunk) {
        const size_t chunk = i1 - i < c->chunk ? i1 - i : c->chunk;
        /* A static layer has no attention rows (pi is NULL): its one kernel is used as it is. */
        const float *pi = l->kernels > 1 ? c->ws->pi + i * l->kernels : &one;
        if (l->kernels > 1) {
            if (!c->batch_attention) {
                /* the chunk's samples pooled and attended first (a rows batch of per-sample
                 * attention; else the chunk is one sample) */
                for (size_t j = i; j < i + chunk; ++j) {
                    sample_pool_attention(c, j);
                }
            }
            if (bt != NULL) {
                dc_aggregate_samples(l->kernels, s->out_channels, chunk, pi, l->bias, bt, 0,
                                     s->out_channels);
            }
        }
        if ((chunk == 1 && rows) ||
            dc_exec_engine_fused_batch(l, chunk)) {
            const bool dyn = l->kernels > 1;
            rows_source src = {l, pi, dyn ? NULL : w, chunk};
            const dc_engine_rows_src from = {rows_slice, rows_prefetch, rows_prefetch_lines,
                                             (void *)&src, dyn ? DC_ENGINE_KC * mr : 0};
            dc_engine_conv_rows_batch(s, l->gemm, chunk, c->input + i * in_len, in_len, &from,
                                      0, panels, dyn ? bt : l->bias, dyn ? s->out_channels : 0,
                                      c->output + i * out_len, out_len, col, wt, act);
            continue;
        }
        if (fused) {
            for (size_t p0 = 0; p0 < depth; p0 += DC_ENGINE_KC) {
                const size_t np = depth - p0 < DC_ENGINE_KC ? depth - p0 : DC_ENGINE_KC;
                engine_mix(l, pi, chunk, 0, panels, p0, np, wt, slice_len, DC_ENGINE_KC * mr);
                for (size_t j = 0; j < chunk; ++j) {
                    dc_engine_conv_clamped(s, l->gemm, c->input + (i + j) * in_len,
                                           wt + j * slice_len, DC_ENGINE_KC * mr, p0,
                                           bt != NULL ? bt + j * s->out_channels : NULL,
                                           c->output + (i + j) * out_len, col, 0, plane, p0,
                                           p0 + np, p0 + np == depth ? act : NULL);
                }
            }
            continue;
        }
        if (blocked) {
            engine_blocks(c, i, chunk, wt, bt, col);
            continue;
        }
        if (l->kernels > 1) {
            engine_mix(l, pi, chunk, 0, panels, 0, depth, wt, l->packed_len, depth * mr);
        }
        for (size_t j = 0; j < chunk; ++j) {
            const float *wj = l->kernels > 1 ? wt + j * l->packed_len : w;
            const float *bj = l->kernels > 1 ? (bt != NULL ? bt + j * s->out_channels : NULL)
                                             : l->bias;
            dc_engine_conv_clamped(s, l->gemm, c->input + (i + j) * in_len, wj, depth * mr, 0,
                                   bj, c->output + (i + j) * out_len, col, 0, plane, 0, depth,
                                   act);
        }
    }
}

/* Samples [i, i + chunk) of a dynamic layer, for a thread's whole samples: their attention
 * (when computed per sample, chunk == 1: right before the convolution, so that the input, just
 * read by the pooling, is still in cache when the convolution reads it again), then the K
 * parameter sets `sets` (K rows of `len` floats: the kernels, or their Winograd transforms)
 * and biases mixed for the chunk in one pass over them, into wt and bt (NULL: no bias). */
static void mix_chunk(const forward_ctx *c, size_t i, size_t chunk, const float *sets,
                      size_t len, float *wt, float *bt) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    if (!c->batch_attention) {
        sample_pool_attention(c, i);
    }
    const float *pi = c->ws->pi + i * l->kernels;
    dc_aggregate_samples(l->kernels, len, chunk, pi, sets, wt, 0, len);
    if (bt != NULL) {
        dc_aggregate_samples(l->kernels, s->out_channels, chunk, pi, l->bias, bt, 0,
                             s->out_channels);
    }
}

/* Samples [i, i + chunk) on the streamed Winograd form (dc_exec_wino_streams; a chunk of
 * more than one when the attention of the batch is known, else the sample's attention first):
 * inputs transformed whole, then each block of each transformed matrix mixed for every sample
 * of the chunk into ub and multiplied right away, then the outputs. */
static void wino_streamed(const forward_ctx *c, size_t i, size_t chunk, float *ub, float *bt,
                          float *scratch) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t ci = s->in_channels, co = s->out_channels, k = l->kernels;
    const size_t in_len = ci * s->height * s->width, out_len = co * s->out_h * s->out_w;
    const size_t v_len = 16 * ci * dc_wino_tiles(s), rows = dc_exec_wino_mix_rows(l);
    size_t image;
    dc_wino_image_floats(s, &image); /* checked by the plan */
    const float *pi = c->ws->pi + i * k;
    float lo, hi;
    wino_bounds(l, &lo, &hi);
    if (!c->batch_attention) {
        for (size_t j = i; j < i + chunk; ++j) {
            sample_pool_attention(c, j);
        }
    }
    for (size_t j = 0; j < chunk; ++j) {
        dc_wino_input_image(s, c->input + (i + j) * in_len, scratch + j * image,
                            scratch + chunk * image);
    }
    for (size_t xi = 0; xi < 16; ++xi) {
        for (size_t o0 = 0; o0 < co; o0 += rows) {
            const size_t n = co - o0 < rows ? co - o0 : rows;
            const float *sets = l->wino + (xi * co + o0) * ci;
            /* The K rows read once for the whole chunk (from memory: 1.10 to 1.11 of the
             * static layer's time when mixed again from L2 for each sample, 1.02 to 1.09 so) */
            dc_aggregate_block(k, l->wino_len, chunk, pi, sets, ub, n * ci, n * ci);
            for (size_t j = 0; j < chunk; ++j) {
                float *v = scratch + j * image;
                dc_wino_product(s, xi, o0, n, ub + j * n * ci, v, v + v_len);
            }
        }
    }
    if (bt != NULL) {
        dc_aggregate_samples(k, co, chunk, pi, l->bias, bt, 0, co);
    }
    for (size_t j = 0; j < chunk; ++j) {
        dc_wino_output_image(s, scratch + j * image + v_len, bt != NULL ? bt + j * co : NULL,
                             lo, hi, c->output + (i + j) * out_len);
    }
}

/* Whole samples [i0, i1) on the Winograd path: each sample's transformed kernel mixed into the
 * thread's slot (a static layer's used where it lies), then all its tile rows; or chunks on
 * the streamed form. */
static void wino_samples(const forward_ctx *c, size_t i0, size_t i1, float *wt, float *bt,
                         float *scratch) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_len = s->in_channels * s->height * s->width;
    const size_t out_len = s->out_channels * s->out_h * s->out_w;
    float lo, hi;
    wino_bounds(l, &lo, &hi);
    const bool streams = dc_exec_wino_streams(l, c->chunk);
    for (size_t i = i0; i < i1; i += c->chunk) {
        const size_t chunk = i1 - i < c->chunk ? i1 - i : c->chunk;
        if (streams) {
            wino_streamed(c, i, chunk, wt, bt, scratch);
            continue;
        }
        if (l->kernels > 1) {
            mix_chunk(c, i, chunk, l->wino, l->wino_len, wt, bt);
        }
        for (size_t j = 0; j < chunk; ++j) {
            const float *u = l->kernels > 1 ? wt + j * l->wino_len : l->wino;
            const float *b = l->kernels > 1 ? (bt != NULL ? bt + j * s->out_channels : NULL)
                                            : l->bias;
            dc_wino_conv(s, c->input + (i + j) * in_len, u, b, c->output + (i + j) * out_len,
                         scratch, 0, dc_wino_tile_rows(s), 0, s->out_channels, lo, hi);
        }
    }
}

static void samples_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_len = s->in_channels * s->height * s->width;
    const size_t out_len = s->out_channels * s->out_h * s->out_w;
    float *col = slot_part(c->ws, index, c->ws->has_col, c->ws->col_at);
    float *wt = slot_part(c->ws, index, c->ws->has_weights, c->ws->weights_at);
    float *bt = slot_part(c->ws, index, c->ws->has_biases, c->ws->biases_at);
    size_t i0, i1;
    dc_exec_share(c->count, index, count, &i0, &i1);
    if (l->wino_on || l->engine_on) {
        /* With the output's means wanted, a chunk at a time, each chunk's outputs pooled
         * while they are in cache (the chunks are the same either way). */
        const size_t step = c->pooled_out != NULL ? c->chunk : i1 - i0;
        for (size_t i = i0; i < i1; i += step) {
            const size_t e = i1 - i < step ? i1 : i + step;
            if (l->wino_on) {
                wino_samples(c, i, e, wt, bt, col);
            } else {
                engine_samples(c, i, e, wt, bt, col);
            }
            pool_outputs(c, i, e - i);
        }
        return;
    }
    for (size_t i = i0; i < i1; i += c->chunk) {
        const size_t chunk = i1 - i < c->chunk ? i1 - i : c->chunk;
        if (l->kernels > 1) {
            mix_chunk(c, i, chunk, l->weight, l->kernel_len, wt, bt);
        }
        for (size_t j = 0; j < chunk; ++j) {
            /* K = 1: pi is exactly 1, so the kernel is used as it is, with no arithmetic. */
            const float *w = l->kernels > 1 ? wt + j * l->kernel_len : l->weight;
            const float *b = l->kernels > 1 ? (bt != NULL ? bt + j * s->out_channels : NULL)
                                            : l->bias;
            /* Pooled just before (per-sample attention): the input is in cache, and the
             * prefetched bands of dc_conv2d_sample gain nothing there (dynamic 96 -> 24 and
             * 64 -> 64 at 56x56, batch 16: 1.01 to 1.06 of the time with them; 144 -> 24,
             * whose 1.8 MB outgrow L2 while pooled, 0.94 to 0.98). Not when the means were
             * handed over (pooled_in): nothing has read the input then. */
            if (l->kernels > 1 && !c->batch_attention && c->pooled_in == NULL) {
                dc_conv2d_sample_cached(s, c->input + (i + j) * in_len, w, b,
                                        c->output + (i + j) * out_len, col);
            } else {
                dc_conv2d_sample(s, c->input + (i + j) * in_len, w, b,
                                 c->output + (i + j) * out_len, col);
            }
            finish_sample(c, i + j);
        }
    }
}

/* One shared sample whose output channels can be computed apart (depthwise, pointwise): each
 * thread mixes the kernel rows of its channels and convolves them, with no step in between that
 * would need the other threads' rows. */
static void channels_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample, depth = l->kernel_len / s->out_channels;
    size_t oc0, oc1;
    dc_exec_share(s->out_channels, index, count, &oc0, &oc1);
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
    float *out = c->output + i * s->out_channels * s->out_h * s->out_w;
    dc_conv2d_channels(s, c->input + i * s->in_channels * s->height * s->width, w, b, out,
                       slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), oc0, oc1);
    activate(l, out + oc0 * s->out_h * s->out_w, (oc1 - oc0) * s->out_h * s->out_w);
}

/* One shared sample on the engine, in one step (dc_exec_engine_rows): each thread owns a share
 * of the kernel's panels (output channels), mixes their bias rows and panel slices itself, in
 * its own slot, and convolves them over the whole image; nothing is shared but the input, so
 * no barrier stands between mixing and convolving, and the stream of the K sets overlaps the
 * arithmetic. */
static void engine_rows_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample, plane = s->out_h * s->out_w, mr = l->gemm->mr;
    const size_t g_out = s->out_channels / s->groups, panels = (g_out + mr - 1) / mr;
    const float *pi = l->kernels > 1 ? c->ws->pi + i * l->kernels : &one;
    size_t j0, j1;
    dc_exec_share(engine_panels(l), index, count, &j0, &j1);
    const float *b = l->bias;
    if (l->kernels > 1) {
        float *bt = slot_part(c->ws, index, c->ws->has_biases, c->ws->biases_at);
        for (size_t gp = j0; gp < j1 && bt != NULL; ++gp) {
            const size_t row0 = gp / panels * g_out + gp % panels * mr;
            const size_t m = g_out - gp % panels * mr < mr ? g_out - gp % panels * mr : mr;
            dc_aggregate_range(l->kernels, s->out_channels, pi, l->bias, bt, row0, row0 + m);
        }
        b = bt;
    }
    /* Owned static kernels are used where they lie; the others are mixed (or, borrowed at
     * K = 1, packed) slice by slice. */
    rows_source src = {l, pi, l->kernels == 1 && l->packed != NULL ? l->packed : NULL, 1};
    const dc_engine_rows_src from = {rows_slice, rows_prefetch, rows_prefetch_lines,
                                     (void *)&src, 0};
    dc_engine_conv_rows(s, l->gemm, c->input + i * s->in_channels * s->height * s->width, &from,
                        j0, j1, b, c->output + i * s->out_channels * plane,
                        slot_part(c->ws, index, c->ws->has_col, c->ws->col_at),
                        slot_part(c->ws, index, c->ws->has_weights, c->ws->weights_at),
                        engine_clamp(l));
}

/* One shared sample on the engine, step 1: each thread mixes (or, borrowed at K = 1, packs) a
 * share of the kernel's panels into slot 0; the bias by the first. */
static void engine_mix_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const float *pi = l->kernels > 1 ? c->ws->pi + c->sample * l->kernels : &one;
    const size_t depth = l->kernel_len / l->shape.out_channels;
    size_t j0, j1;
    dc_exec_share(engine_panels(l), index, count, &j0, &j1);
    engine_mix(l, pi, 1, j0, j1, 0, depth, slot_part(c->ws, 0, true, c->ws->weights_at),
               l->packed_len, depth * l->gemm->mr);
    if (index == 0 && l->kernels > 1 && l->bias != NULL) {
        dc_aggregate_range(l->kernels, l->shape.out_channels, pi, l->bias,
                           slot_part(c->ws, 0, true, c->ws->biases_at), 0,
                           l->shape.out_channels);
    }
}

/* One shared sample on the engine, step 2: each thread convolves a band of whole B panels of
 * output positions (the last one may be partial), with its own panel scratch. */
static void engine_columns_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample, plane = s->out_h * s->out_w, nr = l->gemm->nr;
    const float *w = l->packed, *b = l->bias;
    if (dc_exec_mixes(l)) {
        w = slot_part(c->ws, 0, true, c->ws->weights_at);
    }
    if (l->kernels > 1) {
        b = slot_part(c->ws, 0, c->ws->has_biases, c->ws->biases_at);
    }
    size_t j0, j1;
    dc_exec_share((plane + nr - 1) / nr, index, count, &j0, &j1);
    const size_t c1 = j1 * nr < plane ? j1 * nr : plane;
    const size_t depth = l->kernel_len / s->out_channels;
    dc_engine_conv_clamped(s, l->gemm, c->input + i * s->in_channels * s->height * s->width, w,
                           depth * l->gemm->mr, 0, b, c->output + i * s->out_channels * plane,
                           slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), j0 * nr, c1,
                           0, depth, engine_clamp(l));
}

/* How a shared sample of a dynamic layer runs on the Winograd path. K sets of up to 8 MiB
 * (they stay in the last-level cache): mixed whole into slot 0 first (aggregate_task), then
 * the tile rows shared. Larger ones (256 channels and more): each thread mixes the rows of
 * its share of the output channels in all sixteen transformed matrices (and their biases)
 * and computes those channels over the whole image, so no barrier stands between mixing and
 * convolving and the stream of the K sets is split between the threads; each thread
 * transforms the whole input itself. Measured on Zen 4, 2 threads, batch 1, K = 4: 256
 * channels at 14x14 0.87 of the engine's time by channels, 1.5 times it mixed first; 64
 * channels at 56x56 1.35 times it by channels, where the input transform and the products of
 * 32 rows weigh more than the 1 MiB of K sets. The larger sets are dc_exec_wino_big_sets.
 *
 * One shared sample on the Winograd path: a band of tile rows (static layers, and dynamic
 * ones whose transform aggregate_task mixed first) or of output channels (big sets). */
static void wino_shared_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample, co = s->out_channels, ci = s->in_channels;
    const float *u = l->wino, *b = l->bias;
    size_t t0 = 0, t1 = dc_wino_tile_rows(s), o0 = 0, o1 = co;
    if (l->kernels > 1 && !dc_exec_wino_big_sets(l)) {
        u = slot_part(c->ws, 0, true, c->ws->weights_at);
        b = slot_part(c->ws, 0, c->ws->has_biases, c->ws->biases_at);
        dc_exec_share(t1, index, count, &t0, &t1);
    } else if (l->kernels > 1) {
        const float *pi = c->ws->pi + i * l->kernels;
        float *ut = slot_part(c->ws, 0, true, c->ws->weights_at);
        dc_exec_share(co, index, count, &o0, &o1);
        for (size_t xi = 0; xi < 16 && o1 > o0; ++xi) {
            dc_aggregate_range(l->kernels, l->wino_len, pi, l->wino, ut, (xi * co + o0) * ci,
                               (xi * co + o1) * ci);
        }
        u = ut;
        b = NULL;
        if (c->ws->has_biases) {
            float *bt = slot_part(c->ws, 0, true, c->ws->biases_at);
            dc_aggregate_range(l->kernels, co, pi, l->bias, bt, o0, o1);
            b = bt;
        }
    } else {
        dc_exec_share(t1, index, count, &t0, &t1);
    }
    float lo, hi;
    wino_bounds(l, &lo, &hi);
    if (t1 > t0 && o1 > o0) {
        dc_wino_conv(s, c->input + i * ci * s->height * s->width, u, b,
                     c->output + i * co * s->out_h * s->out_w,
                     slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), t0, t1, o0, o1, lo,
                     hi);
    }
}

/* One shared sample, step 1: each thread aggregates a slice of the kernel (on the Winograd
 * path, of its transform) into slot 0; the bias by the first. */
static void aggregate_task(void *p, size_t index, size_t count) {
    const forward_ctx *c = p;
    const dc_layer *l = c->layer;
    const float *pi = c->ws->pi + c->sample * l->kernels;
    const size_t len = l->wino_on ? l->wino_len : l->kernel_len;
    size_t k0, k1;
    dc_exec_share(len, index, count, &k0, &k1);
    dc_aggregate_range(l->kernels, len, pi, l->wino_on ? l->wino : l->weight,
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
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t i = c->sample;
    const float *w = l->weight, *b = l->bias;
    if (l->kernels > 1) {
        w = slot_part(c->ws, 0, true, c->ws->weights_at);
        b = slot_part(c->ws, 0, c->ws->has_biases, c->ws->biases_at);
    }
    size_t oh0, oh1;
    dc_exec_share(s->out_h, index, count, &oh0, &oh1);
    float *out = c->output + i * s->out_channels * s->out_h * s->out_w;
    dc_conv2d_rows(s, c->input + i * s->in_channels * s->height * s->width, w, b, out,
                   slot_part(c->ws, index, c->ws->has_col, c->ws->col_at), oh0, oh1);
    if (l->activation != DC_ACTIVATION_NONE && oh1 > oh0) {
        for (size_t oc = 0; oc < s->out_channels; ++oc) {
            activate(l, out + (oc * s->out_h + oh0) * s->out_w, (oh1 - oh0) * s->out_w);
        }
    }
}

/* The convolution of the shared sample c->sample (its attention known), on every thread of
 * the team: each path's own split (channels, bands of rows, panels, Winograd tiles). */
static void shared_sample(forward_ctx *c, dc_pool *pool, size_t team) {
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    if (l->wino_on) {
        if (l->kernels > 1 && !dc_exec_wino_big_sets(l)) {
            dc_exec_run(pool, team, aggregate_task, c);
        }
        dc_exec_run(pool, team, wino_shared_task, c);
        return;
    }
    if (l->engine_on && dc_exec_engine_rows(l)) {
        dc_exec_run(pool, team, engine_rows_task, c);
        return;
    }
    if (l->engine_on) {
        if (dc_exec_mixes(l)) {
            dc_exec_run(pool, team, engine_mix_task, c);
        }
        dc_exec_run(pool, team, engine_columns_task, c);
        return;
    }
    if (dc_conv_channels_split(s)) {
        dc_exec_run(pool, team, channels_task, c);
        return;
    }
    if (l->kernels > 1) {
        dc_exec_run(pool, team, aggregate_task, c);
    }
    dc_exec_run(pool, team, rows_task, c);
}

void dc_exec_forward(const dc_layer *l, size_t batch, float temperature, size_t threads,
                     size_t chunk, dc_pool *pool, const float *input, float *output,
                     float *attention, void *workspace, const float *pooled_in,
                     float *pooled_out) {
    const dc_conv_shape *s = &l->shape;
    const size_t n = batch;
    workspace_layout ws;
    size_t unused;
    dc_plan_forward_layout(l, n, threads, chunk, workspace, &ws, &unused); /* checked by reshape */

    const forward_ctx ctx0 = {l,
                              n,
                              chunk,
                              temperature,
                              input,
                              output,
                              &ws,
                              0,
                              0,
                              {s->in_channels, l->hidden, l->kernels, l->fc1_weight, l->fc1_bias,
                               l->fc2_weight, l->fc2_bias},
                              false,
                              0,
                              l->kernels > 1 ? pooled_in : NULL,
                              pooled_out};
    forward_ctx ctx = ctx0;
    const size_t team = dc_exec_team(l, n, threads);
    ctx.batch_attention = dc_attention_per_batch(l, s);
    if (ctx.batch_attention) {
        dc_exec_run(pool, team, pool_all_task, &ctx);
        team_attention(&ctx, pool, team, 0, n);
    }
    /* Each sample goes through pool -> attention -> aggregation -> convolution in one go, so its
     * input and kernel are still in cache from one step to the next. Whole samples per thread
     * while there are at least as many samples as threads (no synchronisation inside a sample);
     * the remaining samples (all of them at batch 1) are shared by all threads: pooling by
     * channels, aggregation by slices, convolution by bands of output rows. */
    ctx.count = n - n % team;
    if (ctx.count > 0) {
        dc_exec_run(pool, team, samples_task, &ctx);
    }
    for (size_t i = ctx.count; i < n; ++i) {
        ctx.sample = i;
        if (l->kernels > 1 && !ctx.batch_attention) {
            dc_exec_run(pool, team, pool_task, &ctx);
            team_attention(&ctx, pool, team, i, 1);
        }
        shared_sample(&ctx, pool, team);
        if (pooled_out != NULL) {
            dc_exec_run(pool, team, pool_out_task, &ctx);
        }
    }

    if (attention != NULL) {
        if (l->kernels > 1) {
            memcpy(attention, ws.pi, n * l->kernels * sizeof(float));
        } else {
            /* softmax of a single logit is exactly 1, whatever the input (even NaN): with one
             * kernel the attention branch is not run at all. */
            for (size_t i = 0; i < n; ++i) {
                attention[i] = 1.0f;
            }
        }
    }
}
