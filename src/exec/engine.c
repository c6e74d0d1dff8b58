/* When the forward runs on the library's own engine (src/gemm) instead of im2col + BLAS, and
 * the engine's part of create: choosing the micro-kernel and packing the kernel sets. */
#include "exec.h"
#include "plan.h"

#include "gemm.h"
#include "plan.h"
#include "tensor.h"

#include <stdatomic.h>

static atomic_int engine_mode = DC_ENGINE_AUTO;
static atomic_int backward_engine_mode = DC_ENGINE_AUTO;

void dc_exec_set_engine_mode(int mode) { atomic_store(&engine_mode, mode); }
void dc_exec_set_backward_engine_mode(int mode) { atomic_store(&backward_engine_mode, mode); }

bool dc_exec_engine_setup(dc_layer *l, size_t *pack_floats) {
    const dc_conv_shape *s = &l->shape;
    *pack_floats = 0;
    l->gemm = NULL;
    l->packed = NULL;
    l->packed_len = 0;
    l->engine_on = false;
    l->backward_engine_on = false;
    if (dc_conv_is_depthwise(s)) {
        return true; /* its direct loop beats any GEMM (an inner dimension of kh*kw) */
    }
    const dc_gemm_kernel *k = dc_gemm_select();
    l->gemm_pinned = dc_gemm_forced() != NULL;
    size_t len;
    if (!dc_engine_packed_floats(s, k, &len) || !dc_mul_size(len, l->kernels, pack_floats)) {
        return false;
    }
    l->gemm = k;
    l->packed_len = len;
    return true;
}

/* Share of a tile's work that is real: output channels over whole panels, times positions over
 * whole B panels (per group). */
static double tile_fill(const dc_conv_shape *s, const dc_gemm_kernel *k) {
    const size_t g_out = s->out_channels / s->groups, plane = s->out_h * s->out_w;
    const size_t rows = (g_out + k->mr - 1) / k->mr * k->mr;
    const size_t cols = (plane + k->nr - 1) / k->nr * k->nr;
    return (double)g_out / (double)rows * (double)plane / (double)cols;
}

/* The channel-lanes kernel (32 x 7 on AVX-512) where its tiles are fuller than the 8 x 32
 * one's by more than 5%, measured on bench/layers.txt on the engine (Zen 5, process CPU time,
 * medians of 3 interleaved runs; noisy, shared machine): pointwise at 7x7 0.8 to 0.9 of the
 * 8 x 32 kernel's time; 3x3 at 28x28, where the fill is 784 of 800 lanes, 1.05 to 1.15 (so
 * not there); 3x3 at 7x7 and 14x14 within the noise. The rule picks the planes of 7x7 and
 * 14x14
 * (49 of 64 and 196 of 224 lanes of 32-wide tiles, none idle with 7 positions per tile), with
 * channel counts that are multiples of 32 or close to them. The baseline kernels are never
 * swapped automatically (the channel-lanes one is there for tests). */
const dc_gemm_kernel *dc_exec_engine_kernel(const dc_layer *l) {
    if (l->gemm == NULL || l->gemm_pinned || l->gemm->isa == DC_ISA_BASELINE) {
        return l->gemm;
    }
    const dc_gemm_kernel *pos = dc_gemm_kernel_of(l->gemm->isa, false);
    const dc_gemm_kernel *ch = dc_gemm_kernel_of(l->gemm->isa, true);
    if (ch == NULL) {
        return pos;
    }
    return tile_fill(&l->shape, ch) > 1.05 * tile_fill(&l->shape, pos) ? ch : pos;
}

void dc_exec_engine_pack(dc_layer *l, float *buf) {
    for (size_t k = 0; k < l->kernels; ++k) {
        dc_engine_pack_a(&l->shape, l->gemm, l->weight + k * l->kernel_len,
                         buf + k * l->packed_len);
    }
    l->packed = buf;
}

/* The rule, from bench/layers.txt at batch 1 and 16 on 1 and 2 threads, own engine against
 * im2col + OpenBLAS 0.3.21 on its SkylakeX kernels, on the 2-core AVX-512 machine of
 * docs/benchmarks-engine.md (process CPU time, medians of 5):
 *   - kernels larger than 1x1 (3x3 at stride 1 and 2): the engine, 0.6 to 1.1 of the time
 *     (ahead on most cases; the dynamic 512-channel 7x7 layer gains most, from mixing
 *     slices into L2 instead of whole kernels into memory);
 *   - pointwise kernels: the engine for 256 to 1024 output positions (28x28: 0.65 to 0.9
 *     of the time); at 56x56 the image streams from memory and OpenBLAS's copy of it does
 *     better (1.05 to 1.2); at 7x7 the 49 columns fill 49 of 64 lanes of the 32-wide tiles
 *     (even at best), but the 32 x 7 channel-lanes tiles fill all of them, and with those
 *     (smaller planes, when dc_exec_engine_kernel chose them) the engine takes 0.5 to 0.7 of
 *     BLAS's time (Zen 5, 2 vCPUs, OpenBLAS on its Haswell kernels, process CPU time, medians
 *     of 3 interleaved runs: mb2_1x1_160_960_7 static at batch 16, 1.22 ms against 2.45;
 *     mb2_1x1_320_1280_7 static 3.55 against 6.55; the 8 x 32 tiles 1.48 and 4.13). Dynamic
 *     one-group layers there mix row panels a block at a time for a chunk of samples
 *     (dc_exec_engine_blocked: the K sets read once per chunk instead of once per sample):
 *     1.66 ms against 3.50 and 5.7 against 11.4 at batch 16, 0.13 against 0.23 and 0.38
 *     against 0.79 at batch 1 (with the 8 x 32 tiles that path did not beat BLAS);
 *   - strided 1x1 kernels: im2col + BLAS (the engine 1.1 to 1.35 with the 8 x 32 tiles),
 *     except below 256 output positions with the channel-lanes tiles against OpenBLAS on its
 *     AVX2 kernels (Zen 5, OPENBLAS_CORETYPE=Haswell, CPU time, two interleaved runs:
 *     r18_1x1s2_256_512_14 static at batch 16 1.72 ms against 2.30, dynamic 2.22 to 2.38
 *     against 3.22 to 3.28, dynamic at batch 1 0.145 to 0.152 against 0.167 to 0.184). Against
 *     its AVX-512 kernels the two are even (Xeon model 167, SkylakeX kernels, medians of 3 in
 *     two interleaved runs, with only the stride phase the kernel reads built: static at batch
 *     16 2.03 to 2.07 ms against 2.09 to 2.14), so BLAS for static layers. Dynamic ones mix
 *     row panels a block at a time and convolve the gathered input as a pointwise layer
 *     (dc_exec_engine_blocked), which BLAS's path cannot: batch 16 dynamic 3.26 to 3.39 ms
 *     against 3.85 to 3.95 on 1 thread, 3.41 to 3.50 against 3.71 to 3.92 on 2 (batch 1 even),
 *     so the engine for them against either kind of BLAS kernel;
 *   - on the AVX2 kernel (6 x 16; a CPU without AVX-512, where OpenBLAS runs its AVX2
 *     kernels too), every 1x1 shape, pointwise or strided (unpadded), takes the engine: on an
 *     AMD EPYC Zen (family 23, 2 vCPUs, OpenBLAS on its Zen kernels; the engine forced against
 *     im2col + BLAS in one process, interleaved, process CPU time on 1 thread, wall time on 2,
 *     medians of 5 to 10), batch 16, static / dynamic: 24 -> 144 at 56x56 0.77 / 0.75 (2T),
 *     144 -> 24 0.49 / 0.53, 64 -> 64 0.67 / 0.67, 16 -> 96 at 112x112 0.60 / 0.65, 32 -> 192
 *     at 28x28 0.75 / 0.69, 160 -> 960 at 7x7 0.48 / 0.51, 320 -> 1280 0.49 / 0.64, strided
 *     256 -> 512 from 14x14 0.43 / 0.58; dynamic at batch 1, 1 thread, 0.45 to 0.90;
 *   - fewer output positions than one B panel is wide: im2col + BLAS (most of a tile idle);
 *   - borrowed weights with K > 1 whose K sets exceed 8 MiB: im2col + BLAS, as mixing and
 *     packing them in every forward costs more than the engine saves (1.2 on 256 channels
 *     at 14x14). */
static bool rule_prefers_engine(const dc_layer *l) {
    const dc_conv_shape *s = &l->shape;
    const size_t plane = s->out_h * s->out_w;
    if (plane < l->gemm->nr) {
        return false;
    }
    if (l->packed == NULL && l->kernels > 1 &&
        (l->packed_len > ((size_t)8 << 20) / sizeof(float) / l->kernels)) {
        return false;
    }
    if (s->kernel_h * s->kernel_w > 1) {
        return true;
    }
    if (l->gemm->isa == DC_ISA_AVX2 && !l->gemm->channel_lanes &&
        (dc_conv_is_pointwise(s) || (s->pad_h == 0 && s->pad_w == 0))) {
        return true; /* every 1x1 shape on the AVX2 kernel: see the comment above */
    }
    if (dc_conv_is_pointwise(s)) {
        return (plane >= 256 && plane <= 1024) || (plane < 256 && l->gemm->channel_lanes);
    }
    /* Strided 1x1 (unpadded): only with the channel-lanes tiles; static layers only against
     * OpenBLAS's AVX2 kernels. */
    return s->pad_h == 0 && s->pad_w == 0 && plane < 256 && l->gemm->channel_lanes &&
           (!l->blas_avx512 || l->kernels > 1);
}

/* Whether the engine can take the shape at all, whatever the rule or a forced mode says. Its
 * strided scratch holds every stride phase of the padded input: sh * sw planes of
 * ceil(Hp / sh) x ceil(Wp / sw). A stride beyond the padded extent leaves most of those phases
 * empty (a stride of 2^62 on a 5 x 5 input would ask for 2^62 rows, and overflow), so such
 * shapes, legal and rare, take im2col + BLAS, whose scratch is one column per output. */
static bool engine_fits(const dc_layer *l) {
    const dc_conv_shape *s = &l->shape;
    size_t scratch;
    if (dc_engine_uses_padded(s) &&
        (s->stride_h > s->height + 2 * s->pad_h || s->stride_w > s->width + 2 * s->pad_w)) {
        return false;
    }
    return dc_engine_scratch_floats(s, l->gemm, s->out_h * s->out_w, &scratch);
}

static atomic_int wino_mode = DC_ENGINE_AUTO;

void dc_exec_set_wino_mode(int mode) { atomic_store(&wino_mode, mode); }

/* Winograd F(2x2, 3x3) where it beat the engine (AMD EPYC Zen 4, AVX-512, 1 MiB L2, one
 * thread, batch 1, the path alone: 64 channels at 56x56 1.7 ms against 2.4, 128 at 28x28 1.35
 * against 2.3, 256 at 14x14 1.3 to 1.5 against 2.5): planes of at least 14 x 14, where whole
 * tiles cover the plane with little waste, and at least 32 channels each way, where the
 * sixteen products are large enough for the BLAS. 512 channels at 7x7 took twice the engine's
 * time (16 tiles per image). Dynamic layers too, though each sample mixes its transform (16/9
 * of a kernel): 256 channels at 14x14, K = 4, batch 16, 0.72 to 0.80 of the engine's time on
 * one thread, 0.84 on two, with 16 MiB of K sets mixed a chunk of samples at a time as on
 * the im2col path (one sample at a time: within the noise of that). The sixteen products are the
 * BLAS's: not where OpenBLAS fell back to a core without FMA (Prescott on some AVX-512 Xeons
 * unless OPENBLAS_CORETYPE is set), which would run them at a third of the engine's rate. */
static bool rule_prefers_wino(const dc_layer *l) {
    const dc_conv_shape *s = &l->shape;
    return l->blas_fma && s->out_h >= 14 && s->out_w >= 14 && s->in_channels >= 32 &&
           s->out_channels >= 32;
}

void dc_exec_choose_engine(dc_layer *l) {
    const int mode = atomic_load(&engine_mode), wmode = atomic_load(&wino_mode);
    /* A forced engine mode (tests, benchmarks) means that path alone, unless the Winograd
     * path is forced as well. */
    l->wino_on = l->wino_able && wmode != DC_ENGINE_NEVER &&
                 (wmode == DC_ENGINE_ALWAYS || (mode == DC_ENGINE_AUTO && rule_prefers_wino(l)));
    l->engine_on = !l->wino_on && l->gemm != NULL && mode != DC_ENGINE_NEVER &&
                   (mode == DC_ENGINE_ALWAYS || rule_prefers_engine(l)) && engine_fits(l);
    const int bwd = atomic_load(&backward_engine_mode);
    l->backward_engine_on = l->gemm != NULL && bwd != DC_ENGINE_NEVER &&
                            (bwd == DC_ENGINE_ALWAYS || dc_exec_backward_prefers_engine(l));
}

static atomic_int rows_mode = DC_ENGINE_AUTO;

void dc_exec_set_rows_mode(int mode) { atomic_store(&rows_mode, mode); }

/* Static kernels above this many bytes take the row-panel driver (see the rule below). */
#define DC_ROWS_STATIC_BYTES ((size_t)8 << 20)

/* The rule, from bench/layers.txt at batch 1 on 1 and 2 threads, the row-panel driver against
 * mixing first (the path before it), on the 2-core AVX-512 machine of docs/benchmarks.md while
 * it was shared (load 3 to 7: process CPU time, medians of 3 repetitions in each of 4 to 6
 * interleaved rounds, five such runs; rounds of the same code differed by up to 10-20 %):
 *   - output planes of one column block (DC_NC = 512 positions: 7x7, 14x14), dynamic layers:
 *     the row panels. 512 channels at 7x7: 0.81 to 0.97 of the time on 2 threads (4.4-4.8 ms
 *     to 3.7-4.3), even on 1 (0.91 to 1.04); 256 at 14x14: 0.81 to 0.96 (1.8-2.2 ms to
 *     1.6-1.9); 128->256 at stride 2: 0.95 to 0.99 on 1 thread, 0.68 to 0.97 on 2. Borrowed
 *     weights alike (128->256: 0.81 and 0.95);
 *   - larger planes: mixing first (each column block would mix the kernel again: 128
 *     channels at 28x28 took 1.1 to 1.3 of the time on 2 threads);
 *   - static layers (nothing to mix) only when the kernel is larger than 8 MiB: 512 channels
 *     at 7x7, 0.7 to 0.9 of the time (each thread reads its half of the kernel instead of all
 *     of it; borrowed, packed in every forward, 0.54 on 2 threads); smaller kernels stay in
 *     cache either way (0.95 to 1.1: even).
 * How much of the K sets' stream the prefetches hide depends on the tile calls per panel
 * slice: at 14x14 (7 calls of 32 columns) a good part, at 7x7 (2 calls) little: a burst of
 * prefetches larger than the core's outstanding misses stalls the multiply-adds behind it,
 * and prefetching less per call (tried: 8 to 32 lines per K set) gained nothing either. The
 * channel-lanes tile (7x7 and 14x14 planes) therefore takes the next slice's lines itself and
 * spreads them over its reduction steps (dc_gemm_kernel.tile_pf): DY-ResNet-18's 512-channel
 * 3x3 layers at 7x7, batch 1, in a network forward (dynconv-net-profile, Xeon model 167, quiet,
 * three interleaved runs), 5.45 to 5.67 ms each with the bursts, 4.9 to 5.36 with the spread
 * prefetches on one thread, 2.94 to 3.16 against 2.73 to 2.99 on two; the whole network 0.96
 * of its time. Into L1 (prefetcht0) instead of L2 gained less (5.15 to 5.38 ms). The K sets
 * still come from memory at about its bandwidth: 37.7 MB take 2.9 ms at 12.8 GB/s. Those
 * figures are of two prefetches a step from the tile's first step; spread evenly over all
 * its steps, one 512-channel layer took 0.91 of that time (in-process, interleaved). */
bool dc_exec_engine_rows(const dc_layer *l) {
    const int mode = atomic_load(&rows_mode);
    if (!l->engine_on || mode == DC_ENGINE_NEVER) {
        return false;
    }
    if (mode == DC_ENGINE_ALWAYS) {
        return true;
    }
    if (l->shape.out_h * l->shape.out_w > 512) {
        return false;
    }
    return l->kernels > 1 || l->packed_len > DC_ROWS_STATIC_BYTES / sizeof(float);
}
