/* The backward pipeline: recompute the attention -> aggregate -> per-sample conv backward
 * (dW_n, dx) -> dpi and the kernel gradients (two GEMMs over the batch) -> attention backward
 * -> pooling backward. In the calling thread; arguments were checked by the API layer. */
#include "exec.h"
#include "plan.h"

#include "aggregation.h"
#include "attention.h"
#include "conv.h"

#include <string.h>

/* The rule for the backward's input gradient (dc_exec_choose_engine sets backward_engine_on by
 * it), from dynconv-backward-profile on bench/layers.txt, 1 thread, batch 16 and 1 (process CPU
 * time, medians of 5 and 9 repetitions, the two paths and every piece taking turns), on a
 * 2-vCPU AMD EPYC Zen 5 (AVX-512, 48 KiB L1d, 1 MiB L2; the engine's 8 x 32 kernel), shared
 * with other work, against OpenBLAS 0.3.21 (the tables: docs/benchmarks-backward.md):
 *   - on its AVX2 Haswell kernels (OPENBLAS_CORETYPE=Haswell): the engine's GEMM (packing
 *     included) takes 0.55 to 0.8 of cblas_sgemm's time on every 3x3 layer, the whole backward
 *     0.80 to 0.97 at batch 16 and 1 (the 512-channel 7x7 layer gains least, its time being
 *     in the mixing and the kernel sets' gradient); on the strided 1x1 layer 0.87 to 0.97, on
 *     the pointwise ones at 56x56 and 28x28 with at least 64 output channels 0.82 to 0.95.
 *     Pointwise at 7x7 (49 columns in 64 lanes, 4 or 5 reduction slices re-reading dx): 0.97 to
 *     1.08 at batch 16, so BLAS. A short reduction (24 output channels, mb2_1x1_144_24_56)
 *     leaves each tile mostly its loads and stores of dcol: 1.06 to 1.3 of the whole backward
 *     at batch 16 (0.82 at batch 1), so BLAS;
 *   - on its own AVX-512 kernels (Cooperlake, its choice on this CPU; SkylakeX and
 *     SapphireRapids run the same sgemm kernels): at batch 16 the engine's GEMM is even on two
 *     layers (0.98, 0.99 of BLAS's time), ahead on one (mb2_1x1_32_192_28, 0.79) and behind on
 *     the others (1.04 to 1.94; the whole backward 0.97 to 1.30); at batch 1 ahead on 56x56 and
 *     28x28 images (0.79 to 0.96), behind on 14x14 and 7x7 (1.06 to 1.21): BLAS throughout;
 *   - the engine on AVX2 or the baseline kernel was not measured against BLAS: BLAS;
 *   - fewer output positions than one B panel is wide (linear layers: one column): BLAS, as in
 *     the forward's rule (most of every tile idle);
 *   - with the 32 x 7 channel-lanes kernel, which reshape takes at 7x7 and 14x14 (same
 *     machine, OpenBLAS on Haswell kernels, medians of 3 at batch 16 and 9 at batch 1, two
 *     runs): pointwise at 7x7 on the engine as well, the whole backward 0.84 to 0.91 of BLAS's
 *     at batch 16 and 0.84 to 0.88 at batch 1 (mb2_1x1_160_960_7, mb2_1x1_320_1280_7; 0.97
 *     to 1.07 with the 8 x 32 kernel); on r18_3x3_512_7 and r18_3x3_256_14 the engine's GEMM
 *     31.5 to 33 and 21 to 22 ms against 34.5 to 38 and 23.7 with the 8 x 32 kernel. */
bool dc_exec_backward_prefers_engine(const dc_layer *l) {
    const dc_conv_shape *s = &l->shape;
    const size_t plane = s->out_h * s->out_w;
    return l->gemm->isa == DC_ISA_AVX512 && !l->blas_avx512 && plane >= l->gemm->nr &&
           s->out_channels / s->groups >= 64 &&
           (!dc_conv_is_pointwise(s) || plane >= 256 || l->gemm->channel_lanes);
}

/* What the per-sample convolution backward's task needs. */
typedef struct samples_ctx {
    const dc_layer *layer;
    size_t batch;
    const float *input, *grad_output;
    float *grad_input;        /* dL/dx, or NULL */
    const dc_backward_layout *ws;
} samples_ctx;

/* The per-sample backward with the input gradient on the engine: for each group, the GEMM
 * W_g^T dY_g from the sample's mixed kernel (packed block by block into the engine's scratch,
 * after the conv's) into the col buffer (for a pointwise kernel into dx itself, adding), then
 * the col2im; the weight gradient after all groups' input gradients (it overwrites W_n),
 * through the conv module with dx = NULL. */
static void engine_sample_backward(const dc_layer *l, const float *x, float *wn, const float *dy,
                                   float *dx, float *scratch) {
    const dc_conv_shape *s = &l->shape;
    if (dx != NULL) {
        const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
        const size_t plane = s->out_h * s->out_w, in_plane = s->height * s->width;
        const size_t depth = g_in * s->kernel_h * s->kernel_w;
        const bool pointwise = dc_conv_is_pointwise(s);
        size_t col_floats;
        (void)dc_conv_backward_scratch_floats(s, &col_floats); /* checked by the planner */
        float *col = scratch, *engine = scratch + col_floats;
        for (size_t g = 0; g < s->groups; ++g) {
            float *dxg = dx + g * g_in * in_plane;
            dc_engine_input_grad(l->gemm, wn + g * g_out * depth, depth, g_out,
                                 dy + g * g_out * plane, plane, pointwise ? dxg : col, pointwise,
                                 engine);
            if (!pointwise) {
                dc_col2im_add(s, col, g_in, dxg);
            }
        }
    }
    dc_conv2d_sample_backward(s, x, wn, dy, wn, NULL, scratch);
}

/* Whole samples per thread, each with its own scratch: sample i's dW_i and dx_i are the same
 * whichever thread computes them. */
static void samples_task(void *p, size_t index, size_t count) {
    const samples_ctx *c = p;
    const dc_layer *l = c->layer;
    const dc_conv_shape *s = &l->shape;
    const size_t in_floats = s->in_channels * s->height * s->width;
    const size_t out_floats = s->out_channels * s->out_h * s->out_w;
    float *col = c->ws->col != NULL ? c->ws->col + index * c->ws->col_stride : NULL;
    size_t i0, i1;
    dc_exec_share(c->batch, index, count, &i0, &i1);
    for (size_t i = i0; i < i1; ++i) {
        /* Overwrites W_n with dW_n: W_n is dead once this sample's dx is formed. */
        float *wn = c->ws->weights + i * l->kernel_len;
        if (l->backward_engine_on) {
            engine_sample_backward(l, c->input + i * in_floats, wn,
                                   c->grad_output + i * out_floats,
                                   c->grad_input != NULL ? c->grad_input + i * in_floats : NULL,
                                   col);
            continue;
        }
        dc_conv2d_sample_backward(s, c->input + i * in_floats, wn,
                                  c->grad_output + i * out_floats, wn,
                                  c->grad_input != NULL ? c->grad_input + i * in_floats : NULL,
                                  col);
    }
}

void dc_exec_backward(const dc_layer *layer, size_t batch, float temperature, size_t threads,
                      dc_pool *pool, const float *input, const float *grad_output,
                      const dc_exec_grads *grads, bool accumulate, void *workspace) {
    /* Sizes were checked by reshape (every product below is at most a checked one). */
    const dc_conv_shape *s = &layer->shape;
    const size_t n = batch, K = layer->kernels;
    const size_t in_plane = s->height * s->width, out_plane = s->out_h * s->out_w;
    const size_t in_floats = s->in_channels * in_plane;
    const size_t F = sizeof(float);
    const bool attention_path = grads->input != NULL || grads->fc1_weight != NULL ||
                                grads->fc1_bias != NULL || grads->fc2_weight != NULL ||
                                grads->fc2_bias != NULL;
    dc_backward_layout ws;
    size_t unused;
    dc_plan_backward_layout(layer, n, threads, workspace, &ws, &unused); /* checked by reshape */

    const dc_attention att = {s->in_channels,    layer->hidden,   layer->kernels,
                              layer->fc1_weight, layer->fc1_bias, layer->fc2_weight,
                              layer->fc2_bias};
    dc_global_avg_pool(input, n, s->in_channels, in_plane, ws.pooled);
    dc_attention_forward(&att, n, ws.pooled, temperature, ws.hidden, ws.pi);
    dc_aggregate(n, K, layer->kernel_len, ws.pi, layer->weight, ws.weights);

    if (grads->input != NULL && !accumulate) {
        memset(grads->input, 0, n * in_floats * F);
    }
    const samples_ctx ctx = {layer, n, input, grad_output, grads->input, &ws};
    /* Fewer threads than samples would leave some idle: at most one per sample. */
    const size_t team = dc_exec_team(layer, n, threads < n ? threads : n);
    dc_exec_run(pool, team, samples_task, (void *)&ctx);
    if (layer->bias != NULL) {
        for (size_t r = 0; r < n * s->out_channels; ++r) {
            const float *g = grad_output + r * out_plane;
            float acc = 0.0f;
            for (size_t p = 0; p < out_plane; ++p) {
                acc += g[p];
            }
            ws.dbiases[r] = acc;
        }
    }

    float *dpi = attention_path ? ws.dpi : NULL;
    if (dpi != NULL) {
        memset(dpi, 0, n * K * F);
    }
    dc_aggregate_backward(n, K, layer->kernel_len, ws.pi, layer->weight, ws.weights,
                          grads->weight, accumulate, dpi);
    if (layer->bias != NULL) {
        dc_aggregate_backward(n, K, s->out_channels, ws.pi, layer->bias, ws.dbiases,
                              grads->bias, accumulate, dpi);
    }
    if (!attention_path) {
        return;
    }
    const dc_attention_grads ag = {grads->fc1_weight, grads->fc1_bias, grads->fc2_weight,
                                   grads->fc2_bias, accumulate};
    dc_attention_backward(&att, n, ws.pooled, ws.hidden, ws.pi, temperature, dpi, ws.du,
                          &ag, grads->input != NULL ? ws.dpooled : NULL);
    if (grads->input != NULL) {
        dc_global_avg_pool_backward(ws.dpooled, n, s->in_channels, in_plane, grads->input);
    }
}
