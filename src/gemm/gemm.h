/* GEMM layer: the library's own convolution engine. Register-blocked micro-kernels
 * C[MR x NR] (+)= A_panel * B_panel for AVX-512, AVX2 + FMA and a portable baseline, chosen once
 * per layer at run time; the packing of kernels into A panels (done once, at create) and of the
 * image into B panels (implicit im2col, straight from the input); and the per-sample driver that
 * blocks the reduction and the columns for the caches. Below exec, beside conv; depends on the
 * tensor layer only (no BLAS). */
#ifndef DYNCONV_SRC_GEMM_H
#define DYNCONV_SRC_GEMM_H

#include "conv.h"

#include <stdbool.h>
#include <stddef.h>

/* Instruction sets with a micro-kernel of their own, widest last. */
typedef enum dc_isa { DC_ISA_BASELINE = 0, DC_ISA_AVX2 = 1, DC_ISA_AVX512 = 2 } dc_isa;

/* C[m x n] of a tile, row stride ldc, from a kc-long slice of one A panel (kc x MR floats,
 * element (p, r) at a[p * MR + r]) and of one B panel (kc rows of NR floats, row p at
 * b + p * ldb). m <= MR and n <= NR say how much of the tile is stored; the rest of the panels
 * is read (zeros in packed panels) but never written out. accumulate: C += A*B; else
 * C = bias + A*B, bias [m] (NULL: zeros), the sum starting from the bias (which saves the
 * output a pass of its own). Every element is its start plus the products p = 0..kc-1 in that
 * order, whatever m, n and the tile's place, so results do not depend on how columns or rows
 * are cut into tiles. */
typedef void (*dc_gemm_tile_fn)(size_t kc, const float *a, const float *b, size_t ldb, float *c,
                                size_t ldc, size_t m, size_t n, const float *bias,
                                bool accumulate);

/* The same tile, which also prefetches into L2 the pf_n cache lines at pf[0..pf_n), spread
 * over its reduction steps (evenly, about pf_n / kc a step), so that a stream of lines the next tile needs from
 * memory overlaps this tile's multiply-adds instead of stalling them in a burst. */
typedef void (*dc_gemm_tile_pf_fn)(size_t kc, const float *a, const float *b, size_t ldb,
                                   float *c, size_t ldc, size_t m, size_t n, const float *bias,
                                   bool accumulate, const void *const *pf, size_t pf_n);

typedef struct dc_gemm_kernel {
    dc_isa isa;
    const char *name;
    size_t mr, nr;            /* rows of A panels, columns of B panels */
    dc_gemm_tile_fn tile;
    dc_gemm_tile_pf_fn tile_pf; /* NULL: the kernel has none */
    /* The vectors run along the tile's rows (output channels) and B's values are broadcast
     * (MR = 32, NR = 7: small planes split into whole tiles), instead of along its columns
     * (output positions). The tile contract above is the same either way. */
    bool channel_lanes;
} dc_gemm_kernel;

/* The micro-kernel for `isa` with its vectors along the positions (channel_lanes false) or
 * along the channels, or NULL when it is not built in (DYNCONV_PORTABLE builds only the
 * baseline ones), the CPU lacks it, or the ISA has no kernel of that shape (AVX2 has no
 * channel-lanes kernel). */
const dc_gemm_kernel *dc_gemm_kernel_of(dc_isa isa, bool channel_lanes);
/* dc_gemm_kernel_of(isa, false). */
const dc_gemm_kernel *dc_gemm_kernel_for(dc_isa isa);

/* The widest position-lanes micro-kernel this CPU runs, unless a test forced a kernel. */
const dc_gemm_kernel *dc_gemm_select(void);
/* The kernel a test forced (dc_gemm_force, dc_gemm_force_isa), or NULL: automatic choice. */
const dc_gemm_kernel *dc_gemm_forced(void);

/* For tests: dc_gemm_select returns dc_gemm_kernel_of(isa, channel_lanes) from now on, and
 * layers created meanwhile keep it whatever their shape (false, and nothing changes, when that
 * kernel is unavailable); dc_gemm_force_isa(isa) is dc_gemm_force(isa, false);
 * dc_gemm_force_auto undoes either. Layers created before keep their choice. */
bool dc_gemm_force(dc_isa isa, bool channel_lanes);
bool dc_gemm_force_isa(dc_isa isa);
void dc_gemm_force_auto(void);

/* ---- Packing and the per-sample driver (engine.c) ---- */

/* Floats of one packed kernel set: groups * ceil(g_out / MR) * MR * (C_in/g * kh * kw), the
 * rows of each group rounded up to whole panels (zero rows). False on overflow. */
bool dc_engine_packed_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t *out);

/* The AVX2 + FMA 6 x 16 tile's accumulators, for the micro-kernels of kernels.c and
 * engine_inplace.c (in functions compiled for AVX2, with <immintrin.h>): twelve named
 * variables c<row><half>, not arrays. GCC 12 stored arrays of them to the stack on every
 * reduction step, with 15 of the 16 ymm registers live, which halved the kernels' rate on Zen.
 * START declares them, each row from bias[r] (r < m, unless accumulating) or zero; STEP adds
 * one reduction step: the MR values at ap broadcast against the B row's halves b0, b1. */
#define DC_AVX2_START_ROW(r, bias, m, accumulate)                                             \
    _mm256_set1_ps((bias) != NULL && !(accumulate) && (r) < (m) ? (bias)[r] : 0.0f)
#define DC_AVX2_TILE_START(bias, m, accumulate)                                               \
    __m256 c00 = DC_AVX2_START_ROW(0, bias, m, accumulate), c01 = c00;                        \
    __m256 c10 = DC_AVX2_START_ROW(1, bias, m, accumulate), c11 = c10;                        \
    __m256 c20 = DC_AVX2_START_ROW(2, bias, m, accumulate), c21 = c20;                        \
    __m256 c30 = DC_AVX2_START_ROW(3, bias, m, accumulate), c31 = c30;                        \
    __m256 c40 = DC_AVX2_START_ROW(4, bias, m, accumulate), c41 = c40;                        \
    __m256 c50 = DC_AVX2_START_ROW(5, bias, m, accumulate), c51 = c50
#define DC_AVX2_FMA_ROW(r, ap, b0, b1)                                                        \
    do {                                                                                      \
        const __m256 av_ = _mm256_broadcast_ss((ap) + (r));                                   \
        c##r##0 = _mm256_fmadd_ps(av_, (b0), c##r##0);                                        \
        c##r##1 = _mm256_fmadd_ps(av_, (b1), c##r##1);                                        \
    } while (0)
#define DC_AVX2_TILE_STEP(ap, b0, b1)                                                         \
    do {                                                                                      \
        DC_AVX2_FMA_ROW(0, ap, b0, b1);                                                       \
        DC_AVX2_FMA_ROW(1, ap, b0, b1);                                                       \
        DC_AVX2_FMA_ROW(2, ap, b0, b1);                                                       \
        DC_AVX2_FMA_ROW(3, ap, b0, b1);                                                       \
        DC_AVX2_FMA_ROW(4, ap, b0, b1);                                                       \
        DC_AVX2_FMA_ROW(5, ap, b0, b1);                                                       \
    } while (0)

/* The largest MR of any micro-kernel (callers may size row tiles with it). */
#define DC_GEMM_MAX_MR 32

/* Packs one kernel set w [C_out, C_in/g, kh, kw] into panels: group g, panel j, element (p, r)
 * at ((g * panels + j) * depth + p) * MR + r = w[g * g_out + j * MR + r][p], zero past g_out. */
void dc_engine_pack_a(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *w,
                      float *packed);

/* Packs columns [col0, col0 + n) of rows [p0, p0 + kc) of a group's im2col matrix (row
 * p = (channel, ki, kj), column = oh * out_w + ow) straight from the group's input xg
 * [C_in/g, H, W] into ceil(n / nr) consecutive B panels of kc x nr floats each (column j of the
 * range in panel j / nr, lane j % nr), zero padded: borders, and columns past n. */
void dc_engine_pack_b(const dc_conv_shape *s, const float *xg, size_t p0, size_t kc, size_t col0,
                      size_t n, size_t nr, float *panels);

/* Rows [0, m) of a row-major block (row r at rows + r * ld), columns [0, np), into np rows of
 * an A panel: dst[p * mr + r], zeros for rows m..mr-1. A panel slice starting at reduction
 * index p0 starts at panel + p0 * mr, so a panel can be filled slice by slice. */
void dc_engine_pack_rows(const float *rows, size_t ld, size_t m, size_t np, size_t mr,
                         float *dst);

/* Whether dc_engine_conv builds B panels from a zero-padded, phase-split copy of the input
 * (pack_padded.c; every shape but pointwise): every panel row is then a few contiguous copies. */
bool dc_engine_uses_padded(const dc_conv_shape *s);
/* Floats of that copy for one group: C_in/g * sh * sw * ceil((H + 2ph) / sh) *
 * ceil((W + 2pw) / sw). False on overflow. */
bool dc_engine_padded_floats(const dc_conv_shape *s, size_t *out);
/* Channels [c0, c1) of a group's input xg [C_in/g, H, W] into that copy xp (channel c's phases
 * from xp + c * sh * sw * ceil((H + 2ph) / sh) * ceil((W + 2pw) / sw)). */
void dc_engine_pad_input(const dc_conv_shape *s, const float *xg, size_t c0, size_t c1,
                         float *xp);
/* The panels dc_engine_pack_b makes, from the copy xp of the group's input (the channels rows
 * [p0, p0 + kc) read must be in it); k picks the copy routine for its instruction set. */
void dc_engine_pack_b_padded(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *xp,
                             size_t p0, size_t kc, size_t col0, size_t n, size_t nr,
                             float *panels);

/* The B panels of reduction rows [p0, p0 + kc) and columns [col0, col0 + n) of a group's
 * input xg, the way the drivers read them: from the padded copy xp when there is one
 * (dc_engine_uses_padded), else packed straight from xg; for a pointwise kernel only the last,
 * partial panel (full ones are read in place from xg). */
void dc_engine_build_b(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *xg,
                       const float *xp, size_t p0, size_t kc, size_t col0, size_t n,
                       float *panels);

/* Floats of scratch dc_engine_conv needs for a column range of up to `cols` columns: one block
 * of B panels, min(depth, DC_ENGINE_KC) * round_up(min(cols, 512), NR), plus for stride-1
 * shapes the padded copy of a group's input; at least dc_engine_inplace_floats where
 * dc_engine_inplace_possible. False on overflow. */
bool dc_engine_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t cols,
                              size_t *out);

/* The reduction is cut into slices of DC_ENGINE_KC indices, starting at 0: a caller that mixes
 * a kernel slice by slice uses the same boundaries, and a sum over a range of whole slices is
 * the same whether the range is done in one call or slice by slice. */
#define DC_ENGINE_KC 256

/* Reduction indices [p_begin, p_end) (p_begin a multiple of DC_ENGINE_KC, p_end one or the
 * depth) of output columns [col0, col1) (of out_h * out_w) of every output channel of one
 * sample: y (+)= conv(x, W) + b. W is in A panels: global panel gp (group * panels + panel),
 * reduction index p at a + gp * a_stride + (p - a_p0) * MR (a whole packed set: a_stride =
 * depth * MR, a_p0 = 0; a slice of one: its length times MR, its first index). With
 * p_begin == 0, y starts from b [C_out] (or NULL: zero); later ranges add to y. scratch:
 * dc_engine_scratch_floats(s, k, col1 - col0) floats. Each output value is computed the same
 * way whatever the column range and however the reduction is split into calls, so threads
 * sharing a sample by bands of columns, and slice-by-slice mixing, give bitwise the result of
 * one call. */
void dc_engine_conv(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                    const float *a, size_t a_stride, size_t a_p0, const float *b, float *y,
                    float *scratch, size_t col0, size_t col1, size_t p_begin, size_t p_end);

/* A clamp of the output to [lo, hi] (ReLU: 0 and +inf; ReLU6: 0 and 6), written so that a NaN
 * stays NaN: v < lo ? lo : v, then v > hi ? hi : v. */
typedef struct dc_engine_clamp {
    float lo, hi;
} dc_engine_clamp;

/* dc_engine_conv, then clamp (NULL: none) on each B panel's outputs (all output channels of its
 * columns) right after the call's last reduction slice was added to them, while they are still
 * in L1. Only the call that ends the reduction (p_end = depth) may pass a clamp. */
void dc_engine_conv_clamped(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                            const float *a, size_t a_stride, size_t a_p0, const float *b,
                            float *y, float *scratch, size_t col0, size_t col1, size_t p_begin,
                            size_t p_end, const dc_engine_clamp *clamp);

/* ---- Stride-1 kernels without B panels (engine_inplace.c) ---- */

/* Whether dc_engine_conv_inplace handles shape s with kernel k: stride 1, a kernel larger than
 * 1x1, pad_w <= (kw - 1) * dw, and a row micro-kernel of k's shape. */
bool dc_engine_inplace_possible(const dc_conv_shape *s, const dc_gemm_kernel *k);
/* Whether dc_engine_conv_clamped takes that path: possible, and the rule (or a forced mode)
 * says so. */
bool dc_engine_uses_inplace(const dc_conv_shape *s, const dc_gemm_kernel *k);
/* For tests: -1 the rule, 0 never, 1 whenever possible, 2 the same without the masked form
 * for "same" padding. */
void dc_engine_force_inplace(int mode);
/* Floats of scratch dc_engine_conv_inplace needs (any column range): the shared-border copy of a
 * group's input, pw + C_in/g * (H + 2ph) * (W + pw), and pw + max(NR, 48) floats after it (the
 * masked form's tiles are 48 wide). False on overflow. */
bool dc_engine_inplace_floats(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t *out);
/* dc_engine_conv_clamped's contract, computed with the micro-kernel reading B rows in place
 * from that copy (for "same" padding on AVX-512, a copy without border columns, the border
 * masked off); the same bits as the packed path. */
void dc_engine_conv_inplace(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                         const float *a, size_t a_stride, size_t a_p0, const float *b, float *y,
                         float *scratch, size_t col0, size_t col1, size_t p_begin, size_t p_end,
                         const dc_engine_clamp *clamp);

/* ---- The backward's input gradient (engine_backward.c) ---- */

/* Floats of scratch dc_engine_input_grad needs: one block of A panels of the transposed kernel
 * (min(256, depth rounded up to MR) x min(g_out, DC_ENGINE_KC)), then one partial B panel
 * (min(g_out, DC_ENGINE_KC) x NR). False on overflow. */
bool dc_engine_input_grad_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k,
                                         size_t *out);
/* dcol [depth x plane] = W^T dY (accumulate: +=) for one group: W [g_out, depth] row-major
 * (packed transposed block by block into the scratch), dY [g_out x plane] read in place, dcol
 * of row stride plane. Each element is its start plus the products over o = 0, 1, ..., g_out - 1
 * in that order. */
void dc_engine_input_grad(const dc_gemm_kernel *k, const float *w, size_t depth, size_t g_out,
                          const float *dy, size_t plane, float *dcol, bool accumulate,
                          float *scratch);

/* ---- The row-panel driver (engine_rows.c) ---- */

/* Where dc_engine_conv_rows gets the A panels from. slice returns reduction indices
 * [p0, p0 + kc) of global panel gp (group * panels + panel; p0 a multiple of DC_ENGINE_KC, kc
 * the slice's length), kc x MR floats laid out as in a packed panel: either made into buf
 * (which the driver passes, kc * MR floats) or pointing into memory that stays unchanged for
 * the call. prefetch (NULL: none) is told, part by part, which slice comes next: part `part`
 * of `parts` (0 <= part < parts), so the caller can spread the prefetches of its sources over
 * the tile calls of the current slice. */
typedef struct dc_engine_rows_src {
    const float *(*slice)(void *ctx, size_t gp, size_t p0, size_t kc, float *buf);
    void (*prefetch)(void *ctx, size_t gp, size_t p0, size_t kc, size_t part, size_t parts);
    /* The same part's cache lines as addresses, at most `max` of them into out (NULL: the
     * driver calls prefetch). With a kernel that has tile_pf, the driver hands them to the
     * tile, which spreads them over its steps. Returns the part's count, which may exceed
     * max (then only max were written, and the driver calls prefetch instead). */
    size_t (*prefetch_lines)(void *ctx, size_t gp, size_t p0, size_t kc, size_t part,
                             size_t parts, const void **out, size_t max);
    void *ctx;
    /* For dc_engine_conv_rows_batch: sample n's slice is at slice()'s pointer plus
     * n * sample_stride floats (0: one kernel for every sample). */
    size_t sample_stride;
} dc_engine_rows_src;

/* Every column and the whole reduction of the output channels of global panels [gp0, gp1) of
 * one sample: y = conv(x, W) + b, then clamp (NULL: none) on those rows. W comes from src one
 * panel slice at a time: for each reduction slice the B panels of a block of columns are built
 * once and every owned panel slice runs over all of them (the K sets behind slice() are read
 * once per column block: callers use it where the output plane is one block, DC_NC = 512
 * columns, or less). b [C_out] or NULL; scratch: dc_engine_scratch_floats(s, k, plane) floats;
 * abuf: MR * min(depth, DC_ENGINE_KC) floats, or NULL when slice() never writes. Each output
 * value is summed as in dc_engine_conv_clamped (its bias, then slice by slice, each in
 * reduction order), so the result is bitwise that of dc_engine_conv_clamped over the same
 * kernel, however the panels are split between calls or threads. */
void dc_engine_conv_rows(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                         const dc_engine_rows_src *src, size_t gp0, size_t gp1, const float *b,
                         float *y, float *scratch, float *abuf, const dc_engine_clamp *clamp);

/* dc_engine_conv_rows for `count` samples at once: sample n's input at x + n * x_stride, its
 * bias (b not NULL) at b + n * b_stride, its output at y + n * y_stride, its kernel slices at
 * slice()'s pointer + n * src->sample_stride (slice() makes all of them into abuf, or points
 * at one kernel with sample_stride 0). For each reduction slice the B panels of every sample
 * are built first, then each panel slice is fetched once and run against all of them: the K
 * sets behind a slice are read once per `count` samples, and a slice made into abuf is still
 * in cache when each sample's tiles read it. The next slice is prefetched over all the
 * samples' tile calls. scratch: dc_engine_rows_scratch_floats(s, k, count) floats; abuf: what
 * slice() writes. Each sample's output is bitwise that of dc_engine_conv_rows. */
void dc_engine_conv_rows_batch(const dc_conv_shape *s, const dc_gemm_kernel *k, size_t count,
                               const float *x, size_t x_stride, const dc_engine_rows_src *src,
                               size_t gp0, size_t gp1, const float *b, size_t b_stride,
                               float *y, size_t y_stride, float *scratch, float *abuf,
                               const dc_engine_clamp *clamp);
/* Floats of scratch dc_engine_conv_rows_batch needs for `count` samples: count times the B
 * panel block of dc_engine_scratch_floats (its figure less the padded copy), plus one padded
 * copy of a group's input. False on overflow. */
bool dc_engine_rows_scratch_floats(const dc_conv_shape *s, const dc_gemm_kernel *k,
                                   size_t count, size_t *out);

#endif
