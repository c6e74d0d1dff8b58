/* The library against the double-precision reference on a table of named random cases.
 * Each row is one cmocka test; together they walk every geometry feature (stride, padding,
 * dilation, per-axis asymmetry, groups, depthwise, channel multiplier, K, batch, biases,
 * temperature, the pointwise path that skips im2col, the strided 1x1 path that gathers the
 * subsampled input instead) at sizes small enough to stay fast. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dynconv/dynconv.h>

#include "reference.h"
#include "testutil.h"

#if defined(DC_TEST_ENGINE_VARIANTS)
/* Built a second time against the internal layers: the whole table once per convolution path
 * (im2col + BLAS only; the own engine forced, with each micro-kernel this CPU runs, vectors
 * along the positions and along the channels), with
 * copied and with borrowed weights (packed at create, or mixed and packed in every forward),
 * and on the engine with and without the row-panel driver for a sample convolved alone; then
 * with the Winograd path forced where a layer has it. */
#include "exec.h"
#include "gemm.h"
#endif

/* The pool every handle of this test runs on (created in main). */
static dynconv_threadpool *pool3;
/* Create flags of every handle, and whether the own engine is forced (main sets both). */
static uint32_t create_flags;
static bool engine_forced;

/* Which optional parameter arrays a case passes (the others are NULL). */
enum {
    B_NONE = 0,
    B_CONV = 1u << 0, /* bias [K, C_out] (or [K, D_out]) */
    B_FC1 = 1u << 1,  /* fc1_bias [hidden] */
    B_FC2 = 1u << 2,  /* fc2_bias [K] */
    B_ALL = B_CONV | B_FC1 | B_FC2
};

typedef struct conv_case {
    const char *name;
    int64_t cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, k, hidden;
    int64_t n, h, w;
    float t;
    unsigned biases;
} conv_case;

/* clang-format off */
static const conv_case conv_cases[] = {
    /* name                             cin cout kh kw sh sw ph pw dh dw  g  K hid  N  H  W   T   biases */
    {"basic_3x3_pad1",                    4,  6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 8, 8,  1.f, B_ALL},
    /* stride: odd sizes make the floor in the output formula bite */
    {"stride2_odd_9x11",                  3,  5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 4, 4,  2, 9,11,  1.f, B_ALL},
    {"stride2_nopad_7x7",                 4,  4, 3, 3, 2, 2, 0, 0, 1, 1, 1, 3, 4,  2, 7, 7,  1.f, B_ALL},
    {"stride2_nopad_even_8x8",            4,  4, 3, 3, 2, 2, 0, 0, 1, 1, 1, 3, 4,  2, 8, 8,  1.f, B_ALL},
    {"stride3_odd_10x13",                 2,  3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 2, 2,  2,10,13,  1.f, B_ALL},
    /* padding */
    {"pad2_5x5",                          3,  4, 5, 5, 1, 1, 2, 2, 1, 1, 1, 4, 4,  2, 9, 9,  1.f, B_ALL},
    {"pad_wider_than_half_kernel",        3,  4, 3, 3, 1, 1, 2, 2, 1, 1, 1, 3, 3,  2, 6, 6,  1.f, B_ALL},
    /* dilation */
    {"dilation2_3x3",                     4,  4, 3, 3, 1, 1, 2, 2, 2, 2, 1, 4, 3,  2,10,10,  1.f, B_ALL},
    /* kernels that leave stride phases unread: dilation 2 at stride 2 reads phase 0 only,
     * a 2x2 kernel at stride 3 phases 0 and 1 of 3 */
    {"dilation2_stride2_3x3",             4,  5, 3, 3, 2, 2, 2, 2, 2, 2, 1, 4, 3,  2,11,10,  1.f, B_ALL},
    {"kernel2x2_stride3_pad1",            3,  4, 2, 2, 3, 3, 1, 1, 1, 1, 1, 3, 3,  2,10,11,  1.f, B_ALL},
    {"dilation3_stride2",                 3,  4, 3, 3, 2, 2, 1, 1, 3, 3, 1, 3, 3,  2,13,12,  1.f, B_ALL},
    /* rectangular kernels, including an even extent */
    {"rect_1x3",                          4,  5, 1, 3, 1, 1, 0, 1, 1, 1, 1, 4, 3,  2, 7, 9,  1.f, B_ALL},
    {"rect_3x1",                          4,  5, 3, 1, 1, 1, 1, 0, 1, 1, 1, 4, 3,  2, 9, 7,  1.f, B_ALL},
    {"rect_2x5",                          3,  4, 2, 5, 1, 1, 0, 2, 1, 1, 1, 3, 3,  2, 8,10,  1.f, B_ALL},
    /* every per-axis parameter different between h and w */
    {"asym_s1x2_p2x0_d2x1_k3x5",          4,  6, 3, 5, 1, 2, 2, 0, 2, 1, 1, 4, 3,  2,11,13,  1.f, B_ALL},
    {"asym_s3x1_p0x3_d1x3",               3,  4, 3, 3, 3, 1, 0, 3, 1, 3, 1, 3, 3,  2,12, 9,  1.f, B_ALL},
    {"nonsquare_input_5x17",              3,  4, 3, 3, 1, 2, 1, 1, 1, 1, 1, 3, 3,  2, 5,17,  1.f, B_ALL},
    /* groups, depthwise, channel multiplier */
    {"groups2",                           4,  6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 3,  2, 8, 8,  1.f, B_ALL},
    {"groups4_stride2",                   8,  8, 3, 3, 2, 2, 1, 1, 1, 1, 4, 4, 4,  2, 9, 9,  1.f, B_ALL},
    {"groups2_dilated_rect",              6,  4, 3, 2, 1, 2, 1, 1, 2, 1, 2, 3, 3,  2,10, 9,  1.f, B_ALL},
    {"depthwise_3x3",                     6,  6, 3, 3, 1, 1, 1, 1, 1, 1, 6, 4, 3,  2, 8, 8,  1.f, B_ALL},
    {"depthwise_stride2_odd",             5,  5, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 3,  2, 9, 7,  1.f, B_ALL},
    {"depthwise_5x5_dilation2",           4,  4, 5, 5, 1, 1, 4, 4, 2, 2, 4, 3, 2,  2,10,10,  1.f, B_ALL},
    /* stride 2 over rows wider than one vector of outputs (21 = 8 + 8 + 5 columns), also
     * dilated: the loads-and-shuffle path, its tail block and the slack it reads */
    {"depthwise_stride2_wide_rows",       5,  5, 3, 3, 2, 2, 1, 1, 1, 1, 5, 4, 3,  2,11,41,  1.f, B_ALL},
    {"depthwise_5x5_s2_d2_wide_rows",     3,  3, 5, 5, 2, 2, 3, 4, 2, 2, 3, 3, 2,  2, 9,53,  1.f, B_ALL},
    {"channel_multiplier_x2",             4,  8, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4, 3,  2, 7, 7,  1.f, B_ALL},
    {"channel_multiplier_x3_stride2",     3,  9, 3, 3, 2, 2, 1, 1, 1, 1, 3, 3, 3,  2, 8, 8,  1.f, B_ALL},
    /* number of kernels */
    {"k1",                                4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3,  2, 6, 6,  1.f, B_ALL},
    {"k8",                                4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 6,  2, 6, 6,  1.f, B_ALL},
    /* batch */
    {"batch1",                            4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  1, 6, 6,  1.f, B_ALL},
    {"batch5",                            4,  5, 3, 3, 2, 1, 1, 0, 1, 1, 1, 4, 3,  5, 7, 6,  1.f, B_ALL},
    /* every combination of the optional biases */
    {"bias_none",                         4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_NONE},
    {"bias_conv",                         4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_CONV},
    {"bias_fc1",                          4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_FC1},
    {"bias_fc2",                          4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_FC2},
    {"bias_conv_fc1",                     4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_CONV | B_FC1},
    {"bias_conv_fc2",                     4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_CONV | B_FC2},
    {"bias_fc1_fc2",                      4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_FC1 | B_FC2},
    {"bias_all",                          4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_ALL},
    /* temperature: sharp, neutral, and the near-uniform start of training */
    {"temperature_0_5",                   4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4,  3, 6, 6,  0.5f, B_ALL},
    {"temperature_1",                     4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4,  3, 6, 6,  1.f, B_ALL},
    {"temperature_30",                    4,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4,  3, 6, 6, 30.f, B_ALL},
    /* 1x1 kernels: stride 1 and no padding is the pointwise path that skips im2col */
    {"pointwise_1x1",                     8, 12, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4, 4,  2, 7, 7,  1.f, B_ALL},
    {"pointwise_1x1_groups2",             8,  6, 1, 1, 1, 1, 0, 0, 1, 1, 2, 4, 4,  3, 5, 6,  1.f, B_ALL},
    {"pointwise_1x1_no_bias_batch5",      6,  4, 1, 1, 1, 1, 0, 0, 1, 1, 1, 3, 3,  5, 4, 4,  1.f, B_NONE},
    {"pointwise_1x1_dilation2",           4,  5, 1, 1, 1, 1, 0, 0, 2, 2, 1, 3, 3,  2, 5, 5,  1.f, B_ALL},
    /* one-group pointwise on a small image (8*hidden > H*W: the batch's attention first), a
     * partial last row panel, fewer row panels than samples, and many wide rows (1400 of 256) */
    {"pointwise_small_image_batch6",     12, 45, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4, 8,  6, 7, 7,  1.f, B_ALL},
    {"pointwise_one_panel_b5",            5,  3, 1, 1, 1, 1, 0, 0, 1, 1, 1, 3, 4,  5, 4, 4,  1.f, B_CONV},
    {"pointwise_wide_rows_b4",          256,1400,1, 1, 1, 1, 0, 0, 1, 1, 1, 4, 5,  4, 4, 4,  0.7f, B_ALL},
    {"conv_1x1_stride2",                  6,  5, 1, 1, 2, 2, 0, 0, 1, 1, 1, 4, 3,  2, 9, 9,  1.f, B_ALL},
    {"conv_1x1_pad1",                     6,  5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_ALL},
    {"conv_1x1_stride2_pad1",             6,  5, 1, 1, 2, 2, 1, 1, 1, 1, 1, 4, 3,  2, 7, 8,  1.f, B_ALL},
    {"conv_1x1_stride3x1",                4,  6, 1, 1, 3, 1, 0, 0, 1, 1, 1, 4, 3,  2,10, 5,  1.f, B_ALL},
    {"conv_1x1_stride1x2",                4,  6, 1, 1, 1, 2, 0, 0, 1, 1, 1, 4, 3,  2, 5, 9,  1.f, B_ALL},
    {"conv_1x1_pad0x1",                   4,  6, 1, 1, 1, 1, 0, 1, 1, 1, 1, 4, 3,  2, 5, 5,  1.f, B_ALL},
    /* strided 1x1 without padding: the subsampled input gathered for the GEMM (with padding:
     * im2col, for the zero border); stride 2 and 3, odd sizes, groups 1 and 2, batch 1 and 3 */
    {"strided_1x1_s2_odd_groups2_b3",     8,  6, 1, 1, 2, 2, 0, 0, 1, 1, 2, 4, 3,  3,11, 9,  1.f, B_ALL},
    {"strided_1x1_s3_odd_b1",             6,  5, 1, 1, 3, 3, 0, 0, 1, 1, 1, 4, 3,  1,10,13,  1.f, B_ALL},
    /* ... with the batch's attention first (8 * hidden > out positions' input plane): on the
     * engine, row panels mixed a block at a time for a chunk of samples, each block convolved
     * on the gathered input as a pointwise layer */
    {"strided_1x1_s2_batch_attention_b4", 8, 40, 1, 1, 2, 2, 0, 0, 1, 1, 1, 4, 8,  4, 7, 7,  1.f, B_ALL},
    {"strided_1x1_s3x2_batch_attention",  5, 70, 1, 1, 3, 2, 0, 0, 1, 1, 1, 3, 9,  3, 8, 7,  0.7f, B_CONV},
    {"strided_1x1_s3_groups2_b1",         6,  4, 1, 1, 3, 3, 0, 0, 1, 1, 2, 3, 3,  1,11,11,  1.f, B_CONV},
    {"strided_1x1_s3x2_dilation2_b3",     5,  7, 1, 1, 3, 2, 0, 0, 2, 2, 1, 4, 3,  3,13,10,  1.f, B_ALL},
    {"strided_1x1_s2_pad1_groups2_b3",    8,  6, 1, 1, 2, 2, 1, 1, 1, 1, 2, 4, 3,  3, 9,11,  1.f, B_ALL},
    {"strided_1x1_s3_pad1_b1",            6,  5, 1, 1, 3, 3, 1, 1, 1, 1, 1, 4, 3,  1,11,10,  1.f, B_CONV},
    /* the kernel exactly covers the (padded) input: a 1x1 output */
    {"output_1x1_exact",                  3,  4, 3, 3, 1, 1, 0, 0, 1, 1, 1, 4, 3,  2, 3, 3,  1.f, B_ALL},
    {"output_1x1_strided",                3,  4, 5, 5, 2, 2, 0, 0, 1, 1, 1, 4, 3,  2, 6, 6,  1.f, B_ALL},
    {"input_1x1_padded",                  3,  4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 3,  3, 1, 1,  1.f, B_ALL},
    {"output_1x1_dilated",                3,  4, 2, 2, 1, 1, 0, 0, 4, 4, 1, 3, 3,  2, 5, 5,  1.f, B_ALL},
    /* somewhat bigger layers, in the shape of a small CNN */
    {"big_32_to_48_3x3_14x14",           32, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 8,  4,14,14,  1.f, B_ALL},
    {"big_depthwise_32_stride2_14x14",   32, 32, 3, 3, 2, 2, 1, 1, 1, 1,32, 4, 8,  4,14,14,  1.f, B_ALL},
    {"big_pointwise_32_to_64_14x14",     32, 64, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4, 8,  4,14,14,  1.f, B_ALL},
    {"big_groups4_24_to_32_5x5_stride2", 24, 32, 5, 5, 2, 2, 2, 2, 1, 1, 4, 6, 6,  2,15,15,  1.f, B_ALL},
    /* the fast paths, each at batch 1 (all threads share the sample), batch 3 (whole samples
     * and a shared one at 2 threads) and with K = 1 (no attention, the weights used as given);
     * large enough (over 10^6 multiply-adds) for a forward to use more than one thread */
    {"fast_pointwise_batch1",            64, 96, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4, 8,  1,16,16,  1.f, B_ALL},
    {"fast_pointwise_k1_batch3",         64, 96, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 8,  3,16,16,  1.f, B_ALL},
    {"fast_1x1_stride2_batch1",          64, 96, 1, 1, 2, 2, 0, 0, 1, 1, 1, 4, 8,  1,33,31,  1.f, B_ALL},
    {"fast_1x1_stride2_k1_batch3",       64, 96, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1, 8,  3,33,31,  1.f, B_CONV},
    {"fast_1x1_stride2_groups2_batch1",  64, 96, 1, 1, 2, 2, 0, 0, 1, 1, 2, 4, 8,  1,33,31,  1.f, B_ALL},
    {"fast_1x1_stride3_batch3",          64, 96, 1, 1, 3, 3, 0, 0, 1, 1, 1, 4, 8,  3,37,35,  1.f, B_ALL},
    {"fast_1x1_stride3_groups2_batch3",  64, 96, 1, 1, 3, 3, 0, 0, 1, 1, 2, 4, 8,  3,37,35,  1.f, B_CONV},
    {"fast_1x1_stride2x1_batch1",        64, 96, 1, 1, 2, 1, 0, 0, 1, 1, 1, 4, 8,  1,21,19,  1.f, B_ALL},
    {"fast_1x1_stride2_pad1_batch1",     64, 96, 1, 1, 2, 2, 1, 1, 1, 1, 1, 4, 8,  1,33,31,  1.f, B_ALL},
    {"fast_1x1_stride2_pad1_g2_batch3",  64, 96, 1, 1, 2, 2, 1, 1, 1, 1, 2, 4, 8,  3,31,33,  1.f, B_ALL},
    {"fast_depthwise_wide_batch1",       64, 64, 3, 3, 1, 1, 1, 1, 1, 1,64, 4, 8,  1,40,45,  1.f, B_ALL},
    {"fast_depthwise_k1_batch3",         48, 48, 3, 3, 1, 1, 1, 1, 1, 1,48, 1, 8,  3,20,21,  1.f, B_CONV},
    {"fast_depthwise_k1_small_nobias",    8,  8, 3, 3, 1, 1, 1, 1, 1, 1, 8, 1, 3,  1, 7, 7,  1.f, B_NONE},
    {"fast_depthwise_stride2_wide",      48, 48, 3, 3, 2, 2, 1, 1, 1, 1,48, 4, 8,  3,21,37,  1.f, B_ALL},
    {"fast_depthwise_5x5_pad2_batch1",   40, 40, 5, 5, 1, 1, 2, 2, 1, 1,40, 3, 8,  1,24,29,  1.f, B_ALL},
    {"fast_depthwise_dilated_rect",      32, 32, 3, 5, 1, 2, 2, 3, 2, 1,32, 3, 8,  4,16,27,  1.f, B_ALL},
    {"fast_depthwise_1x1_stride2",        6,  6, 1, 1, 2, 2, 0, 0, 1, 1, 6, 3, 2,  2, 9, 9,  1.f, B_ALL},
    {"fast_channel_multiplier_x4_b1",    16, 64, 3, 3, 1, 1, 1, 1, 1, 1,16, 4, 4,  1,32,29,  1.f, B_ALL},
    /* K sets of 8.5 MiB on a small image: with Winograd forced, the streamed form (blocks of 64,
     * 64 and 8 output channels, each sample's own mix; chunks of 6, 3 and 2) */
    {"fast_3x3_big_k_sets_5x5_b6",      128,136, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 8,  6, 5, 5,  1.f, B_ALL},
    /* the same with the attention per sample (8 * hidden < H * W): chunks of one */
    {"fast_3x3_big_k_sets_sample_att",  128,136, 3, 3, 1, 1, 1, 1, 1, 1, 1, 8, 2,  3, 6, 6,  1.f, B_ALL},
    {"fast_channel_multiplier_k1_b3",    24, 48, 3, 3, 2, 2, 1, 1, 1, 1,24, 1, 6,  3,30,32,  1.f, B_ALL},
    {"fast_3x3_batch1",                  32, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 8,  1,24,24,  1.f, B_ALL},
    {"fast_3x3_k1_batch1",               32, 48, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 8,  1,24,24,  1.f, B_ALL},
    {"fast_3x3_k1_batch3",               32, 48, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 8,  3,25,23,  1.f, B_ALL},
    {"fast_groups2_batch1",              32, 48, 3, 3, 1, 1, 1, 1, 1, 1, 2, 4, 8,  1,20,20,  1.f, B_ALL},
    {"fast_batch7",                      16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4,  7,12,12,  1.f, B_ALL},
    /* small images: the attention of the whole batch first */
    {"fast_small_image_batch6",          16, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 8,  6, 7, 7,  1.f, B_ALL},
    {"fast_small_image_depthwise_b12",   96, 96, 3, 3, 1, 1, 1, 1, 1, 1,96, 4,24, 12, 7, 7,  1.f, B_ALL},
    /* the flat depthwise loop (stride 1, output rows as wide as the input's, plane <= 1024):
     * batch 1 shares the channels between threads, batch 3 whole samples and a shared one */
    {"fast_flat_depthwise_14x14_b1",    576,576, 3, 3, 1, 1, 1, 1, 1, 1,576,4, 8,  1,14,14,  1.f, B_ALL},
    {"fast_flat_depthwise_7x7_b3",      832,832, 3, 3, 1, 1, 1, 1, 1, 1,832,4, 8,  3, 7, 7,  1.f, B_ALL},
    {"flat_depthwise_odd_5x9",            6,  6, 3, 3, 1, 1, 1, 1, 1, 1, 6, 4, 3,  2, 5, 9,  1.f, B_ALL},
    {"flat_depthwise_5x5_pad2_nobias",    8,  8, 5, 5, 1, 1, 2, 2, 1, 1, 8, 3, 3,  2, 9,11,  1.f, B_NONE},
    {"flat_depthwise_3x5_dilated_cols",   6,  6, 3, 5, 1, 1, 1, 4, 1, 2, 6, 3, 3,  2, 6,13,  1.f, B_ALL},
    {"flat_depthwise_pad0_rows",          6,  6, 3, 3, 1, 1, 0, 1, 1, 1, 6, 3, 3,  2, 8,10,  1.f, B_CONV},
    {"flat_depthwise_rows_of_2",          4,  4, 3, 3, 1, 1, 1, 1, 1, 1, 4, 3, 3,  2, 9, 2,  1.f, B_ALL},
    {"flat_channel_multiplier_x2_14x14",  8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 8, 4, 4,  2,14,14,  1.f, B_ALL},
    {"flat_depthwise_32x32_largest",     16, 16, 3, 3, 1, 1, 1, 1, 1, 1,16, 3, 4,  1,32,32,  1.f, B_ALL},
    {"fast_small_image_pointwise_b4",    64,128, 1, 1, 1, 1, 0, 0, 1, 1, 1, 4,16,  4, 7, 7,  1.f, B_CONV},
    /* K kernels over 8 MiB: each thread mixes a chunk of its samples in one pass */
    {"fast_big_kernels_chunked_b4",     256,256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4,64,  4, 5, 5,  1.f, B_ALL},
};
/* clang-format on */

typedef struct linear_case {
    const char *name;
    int64_t din, dout, k, hidden, n;
    float t;
    unsigned biases;
} linear_case;

static const linear_case linear_cases[] = {
    /* name                    din dout  K hid  N    T     biases */
    {"linear_basic",            16,  8,  4,  4,  3,  1.f, B_ALL},
    {"linear_bias_none",        16,  8,  4,  4,  3,  1.f, B_NONE},
    {"linear_bias_conv_only",   16,  8,  4,  4,  3,  1.f, B_CONV},
    {"linear_bias_fc_only",     16,  8,  4,  4,  3,  1.f, B_FC1 | B_FC2},
    {"linear_k1",               12, 10,  1,  3,  3,  1.f, B_ALL},
    {"linear_k8_temperature30", 12, 10,  8,  6,  3, 30.f, B_ALL},
    {"linear_temperature_0_5",  12, 10,  4,  3,  3,  0.5f, B_ALL},
    {"linear_1_to_1",            1,  1,  3,  1,  5,  1.f, B_ALL},
    {"linear_batch1",           20,  7,  4,  5,  1,  1.f, B_ALL},
    {"linear_wide_64_to_96",    64, 96,  4, 16,  4,  1.f, B_ALL},
    {"linear_big_512_batch6",  512,512,  4, 64,  6,  1.f, B_ALL}, /* large enough for threads */
};

/* Random parameters scaled like a trained layer (about 1/sqrt(fan_in)), so that outputs and
 * attention logits are of order one: pi is then clearly non-uniform at T = 1 and the absolute
 * tolerance is small compared with the values. */
typedef struct params {
    float *weight, *bias, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} params;

static float *rand_array(tu_rng *rng, size_t n, float scale)
{
    float *p = tu_alloc(n * sizeof(float));
    tu_fill_uniform(rng, p, n, -scale, scale);
    return p;
}

static void make_params(tu_rng *rng, params *p, size_t k, size_t wlen, size_t out, size_t in,
                        size_t fan_in, size_t hidden, unsigned biases)
{
    p->weight = rand_array(rng, k * wlen, 1.5f / sqrtf((float)fan_in));
    p->bias = (biases & B_CONV) ? rand_array(rng, k * out, 0.5f) : NULL;
    p->fc1_w = rand_array(rng, hidden * in, 2.f / sqrtf((float)in));
    p->fc1_b = (biases & B_FC1) ? rand_array(rng, hidden, 0.5f) : NULL;
    p->fc2_w = rand_array(rng, k * hidden, 2.f / sqrtf((float)hidden));
    p->fc2_b = (biases & B_FC2) ? rand_array(rng, k, 0.5f) : NULL;
}

static void free_params(params *p)
{
    free(p->weight);
    free(p->bias);
    free(p->fc1_w);
    free(p->fc1_b);
    free(p->fc2_w);
    free(p->fc2_b);
}

/* Input with a per-(sample, channel) offset: without it every pooled mean would be close to 0
 * and all samples would get nearly the same attention. */
static float *make_input(tu_rng *rng, size_t n, size_t c, size_t spatial)
{
    float *x = tu_alloc(n * c * spatial * sizeof(float));
    for (size_t i = 0; i < n * c; ++i) {
        const float offset = tu_uniform(rng, -1.f, 1.f);
        for (size_t j = 0; j < spatial; ++j) {
            x[i * spatial + j] = offset + tu_uniform(rng, -1.f, 1.f);
        }
    }
    return x;
}

static uint64_t name_seed(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: a distinct, stable seed per case */
    for (const char *s = name; *s; ++s) {
        h = (h ^ (uint64_t)(unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static void run_conv_case(void **state)
{
    const conv_case *c = *state;
    tu_rng rng;
    tu_rng_seed(&rng, name_seed(c->name));

    const dynconv_conv2d_geometry g = {
        .in_channels = c->cin, .out_channels = c->cout, .kernel_h = c->kh, .kernel_w = c->kw,
        .stride_h = c->sh,     .stride_w = c->sw,       .pad_h = c->ph,    .pad_w = c->pw,
        .dilation_h = c->dh,   .dilation_w = c->dw,     .groups = c->groups,
        .num_kernels = c->k,   .hidden = c->hidden};
    const size_t cin_g = (size_t)(c->cin / c->groups);
    const size_t wlen = (size_t)c->cout * cin_g * (size_t)(c->kh * c->kw);
    params p;
    make_params(&rng, &p, (size_t)c->k, wlen, (size_t)c->cout, (size_t)c->cin,
                cin_g * (size_t)(c->kh * c->kw), (size_t)c->hidden, c->biases);
    const dynconv_conv2d_weights wt = {p.weight, p.bias, p.fc1_w, p.fc1_b, p.fc2_w, p.fc2_b};

    const int64_t oh = ref_out_size(c->h, c->kh, c->sh, c->ph, c->dh);
    const int64_t ow = ref_out_size(c->w, c->kw, c->sw, c->pw, c->dw);
    assert_true(oh >= 1 && ow >= 1); /* a table row with an empty output is a typo */
    const size_t y_len = (size_t)(c->n * c->cout * oh * ow);
    const size_t pi_len = (size_t)(c->n * c->k);

    float *x = make_input(&rng, (size_t)c->n, (size_t)c->cin, (size_t)(c->h * c->w));
    float *y = tu_alloc(y_len * sizeof(float));
    float *att = tu_alloc(pi_len * sizeof(float));
    double *y_ref = tu_alloc(y_len * sizeof(double));
    double *pi_ref = tu_alloc(pi_len * sizeof(double));

    ref_conv2d_forward(&g, &wt, (double)c->t, c->n, c->h, c->w, x, y_ref, pi_ref);
    assert_true(tu_nontrivial(y_ref, y_len));

    /* Every case runs with 1, 2 and 3 threads: whole samples per thread, samples shared by all
     * threads (batch < threads, and the batch % threads left over), and the single-thread path.
     * Each must match the reference. Whole samples per thread, and the direct depthwise loop,
     * must also agree with one thread bit for bit; a shared sample's GEMM is cut into bands of
     * output rows, which the BLAS may round differently in the last bits. The own engine sums
     * every output the same way whatever the split: bit for bit too. */
    const bool depthwise = c->groups == c->cin && !(c->kh == 1 && c->kw == 1 && c->sh == 1 &&
                                                    c->sw == 1 && c->ph == 0 && c->pw == 0);
    float *y1 = tu_alloc(y_len * sizeof(float));
    float *att1 = tu_alloc(pi_len * sizeof(float));
    for (int threads = 1; threads <= 3; ++threads) {
        dynconv_conv2d *layer = NULL;
        assert_int_equal(dynconv_conv2d_create(&g, &wt, c->t, create_flags, &layer), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_set_threadpool(layer, pool3), DYNCONV_OK);
        assert_int_equal(dynconv_conv2d_set_num_threads(layer, threads), DYNCONV_OK);
        int64_t got_oh = 0, got_ow = 0;
        size_t ws = 0;
        assert_int_equal(dynconv_conv2d_reshape(layer, c->n, c->h, c->w, &got_oh, &got_ow, &ws),
                         DYNCONV_OK);
        assert_int_equal(got_oh, oh);
        assert_int_equal(got_ow, ow);
        assert_int_equal(dynconv_conv2d_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);

        assert_int_equal(tu_count_mismatches("pi", att, pi_ref, pi_len, TU_RTOL, TU_ATOL), 0);
        assert_int_equal(tu_count_mismatches("y", y, y_ref, y_len, TU_RTOL, TU_ATOL), 0);
        if (threads == 1) {
            memcpy(y1, y, y_len * sizeof(float));
            memcpy(att1, att, pi_len * sizeof(float));
        } else {
            assert_memory_equal(att, att1, pi_len * sizeof(float));
            if (c->n % threads == 0 || depthwise || engine_forced) {
                assert_memory_equal(y, y1, y_len * sizeof(float));
            } else {
                assert_int_equal(tu_count_mismatches_f("y threads", y, y1, y_len, 1e-5, 1e-6), 0);
            }
        }
        dynconv_conv2d_destroy(layer);
    }

    free(att1);
    free(y1);
    free(pi_ref);
    free(y_ref);
    free(att);
    free(y);
    free(x);
    free_params(&p);
}

static void run_linear_case(void **state)
{
    const linear_case *c = *state;
    tu_rng rng;
    tu_rng_seed(&rng, name_seed(c->name));

    const dynconv_linear_geometry g = {c->din, c->dout, c->k, c->hidden};
    params p;
    make_params(&rng, &p, (size_t)c->k, (size_t)(c->dout * c->din), (size_t)c->dout,
                (size_t)c->din, (size_t)c->din, (size_t)c->hidden, c->biases);
    const dynconv_linear_weights wt = {p.weight, p.bias, p.fc1_w, p.fc1_b, p.fc2_w, p.fc2_b};

    const size_t y_len = (size_t)(c->n * c->dout);
    const size_t pi_len = (size_t)(c->n * c->k);
    /* an offset per sample again, so that the samples' attentions differ */
    float *x = make_input(&rng, (size_t)c->n, 1, (size_t)c->din);
    float *y = tu_alloc(y_len * sizeof(float));
    float *att = tu_alloc(pi_len * sizeof(float));
    double *y_ref = tu_alloc(y_len * sizeof(double));
    double *pi_ref = tu_alloc(pi_len * sizeof(double));

    ref_linear_forward(&g, &wt, (double)c->t, c->n, x, y_ref, pi_ref);
    assert_true(tu_nontrivial(y_ref, y_len));

    /* 1 and 2 threads (whole samples per thread, or the batch-1 path), bitwise the same. */
    float *y1 = tu_alloc(y_len * sizeof(float));
    for (int threads = 1; threads <= 2; ++threads) {
        dynconv_linear *layer = NULL;
        assert_int_equal(dynconv_linear_create(&g, &wt, c->t, create_flags, &layer), DYNCONV_OK);
        assert_int_equal(dynconv_linear_set_threadpool(layer, pool3), DYNCONV_OK);
        assert_int_equal(dynconv_linear_set_num_threads(layer, threads), DYNCONV_OK);
        assert_int_equal(dynconv_linear_reshape(layer, c->n, NULL), DYNCONV_OK);
        assert_int_equal(dynconv_linear_forward(layer, x, y, att, NULL, 0), DYNCONV_OK);

        assert_int_equal(tu_count_mismatches("pi", att, pi_ref, pi_len, TU_RTOL, TU_ATOL), 0);
        assert_int_equal(tu_count_mismatches("y", y, y_ref, y_len, TU_RTOL, TU_ATOL), 0);
        if (threads == 1) {
            memcpy(y1, y, y_len * sizeof(float));
        } else {
            assert_memory_equal(y, y1, y_len * sizeof(float));
        }
        dynconv_linear_destroy(layer);
    }

    free(y1);
    free(pi_ref);
    free(y_ref);
    free(att);
    free(y);
    free(x);
    free_params(&p);
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int main(void)
{
    const size_t n_conv = COUNT(conv_cases), n_lin = COUNT(linear_cases);
    struct CMUnitTest *tests = tu_alloc((n_conv + n_lin) * sizeof(*tests));
    for (size_t i = 0; i < n_conv; ++i) {
        tests[i] = (struct CMUnitTest){conv_cases[i].name, run_conv_case, NULL, NULL,
                                       (void *)&conv_cases[i]};
    }
    for (size_t i = 0; i < n_lin; ++i) {
        tests[n_conv + i] = (struct CMUnitTest){linear_cases[i].name, run_linear_case, NULL,
                                                NULL, (void *)&linear_cases[i]};
    }
    /* Three threads whatever the machine: the default pool has one per CPU, and a thread count
     * above the pool's size is capped at it, which would leave the 3-way splits untested. */
    if (dynconv_threadpool_create(3, 0, &pool3) != DYNCONV_OK) {
        fprintf(stderr, "cannot create a pool of 3 threads: %s\n", dynconv_last_error_message());
        return 1;
    }
#if defined(DC_TEST_ENGINE_VARIANTS)
    int failed = 0;
    /* Variant 0: im2col + BLAS; then the engine with each micro-kernel, widest first (an ISA
     * this CPU lacks is skipped, and said so). Each with copied and borrowed weights. */
    static const char *const names[] = {"baseline", "avx2", "avx512", "baseline-channels",
                                        "avx2-channels", "avx512-channels"};
    for (int v = -1; v < 2 * (DC_ISA_AVX512 + 1); ++v) {
        /* v = isa, then 3 + isa for the channel-lanes kernel of isa (none on AVX2) */
        if (v >= 0 && !dc_gemm_force((dc_isa)(v % 3), v >= 3)) {
            printf("[  SKIPPED ] the %s micro-kernel: not built in or not supported here\n",
                   names[v]);
            continue;
        }
        dc_exec_set_engine_mode(v < 0 ? DC_ENGINE_NEVER : DC_ENGINE_ALWAYS);
        engine_forced = v >= 0;
        /* On the engine, a sample convolved alone (batch 1, the samples left over below the
         * thread count, one thread) on the row-panel driver, and never on it; without it,
         * stride-1 kernels both from B panels and read in place (src/gemm/engine_inplace.c,
         * which the channel-lanes kernels never take; on AVX-512 also without its masked form),
         * whatever the rules would pick. The row-panel driver builds B panels of its own, so
         * the in-place choice does not reach it. */
        const int inplace_max = v < 0 || v >= 3 ? 0 : v == DC_ISA_AVX512 ? 2 : 1;
        for (int step = v < 0 ? inplace_max + 1 : 0; step <= inplace_max + 1; ++step) {
            const int rows = step == 0, inplace = step == 0 ? -1 : step - 1;
            dc_exec_set_rows_mode(rows ? DC_ENGINE_ALWAYS : DC_ENGINE_NEVER);
            dc_engine_force_inplace(inplace);
            for (int borrow = 0; borrow <= 1; ++borrow) {
                char group[160];
                snprintf(group, sizeof group, "reference, %s%s%s%s, %s weights",
                         v < 0 ? "im2col + BLAS" : "engine ", v < 0 ? "" : names[v],
                         v < 0 ? "" : rows ? " (row panels)" : " (mixed first)",
                         v < 0 || rows    ? ""
                         : inplace == 2 ? ", stride 1 in place unmasked"
                         : inplace == 1 ? ", stride 1 in place"
                                        : ", B panels",
                         borrow ? "borrowed" : "copied");
                create_flags = borrow ? DYNCONV_FLAG_BORROW_WEIGHTS : 0;
                failed += _cmocka_run_group_tests(group, tests, n_conv + n_lin, NULL, NULL);
            }
        }
    }
    dc_engine_force_inplace(-1);
    dc_gemm_force_auto();
    dc_exec_set_engine_mode(DC_ENGINE_AUTO);
    dc_exec_set_rows_mode(DC_ENGINE_AUTO);
    /* The Winograd path wherever the layer has it (3x3 stride-1 rows of one group, copied
     * weights; the other rows take their usual paths). Its shared samples' tile rows are cut
     * into bands whose BLAS products may round differently in the last bits. */
    dc_exec_set_wino_mode(DC_ENGINE_ALWAYS);
    engine_forced = false;
    create_flags = 0;
    failed += _cmocka_run_group_tests("reference, Winograd F(2x2, 3x3), copied weights", tests,
                                      n_conv + n_lin, NULL, NULL);
    dc_exec_set_wino_mode(DC_ENGINE_AUTO);
#else
    const int failed = _cmocka_run_group_tests("reference", tests, n_conv + n_lin, NULL, NULL);
#endif
    dynconv_threadpool_destroy(pool3);
    free(tests);
    return failed;
}
