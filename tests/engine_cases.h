/* Shared by the engine's tests: the instruction sets by name, a skip for one this CPU lacks,
 * and a table of geometries (strides, padding, dilation, groups, pointwise, odd sizes, a
 * reduction longer than one slice, more columns than one block) with its shapes. */
#ifndef DYNCONV_TESTS_ENGINE_CASES_H
#define DYNCONV_TESTS_ENGINE_CASES_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "conv.h"
#include "gemm.h"

static const char *const isa_names[] = {"baseline", "avx2", "avx512"};

/* The kernel of `isa` in either layout, or a skipped test when this CPU or build does not have
 * it. */
static inline const dc_gemm_kernel *kernel_of_or_skip(dc_isa isa, bool channel_lanes) {
    const dc_gemm_kernel *k = dc_gemm_kernel_of(isa, channel_lanes);
    if (k == NULL) {
        printf("[  SKIPPED ] the %s%s micro-kernel is not built in or not supported here\n",
               isa_names[isa], channel_lanes ? "-channels" : "");
        skip();
    }
    return k;
}

static inline const dc_gemm_kernel *kernel_or_skip(dc_isa isa) {
    return kernel_of_or_skip(isa, false);
}

/* ---- geometries for packing and the driver ---- */

typedef struct geo {
    const char *name;
    size_t cin, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, h, w;
} geo;

/* clang-format off */
static const geo geos[] = {
    /* name                 cin cout kh kw sh sw ph pw dh dw  g   h   w */
    {"3x3_pad1",              5, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1,  9, 13},
    {"3x3_stride2_odd",       4,  9, 3, 3, 2, 2, 1, 1, 1, 1, 1, 11,  9},
    {"3x3_stride2_nopad",     3,  8, 3, 3, 2, 2, 0, 0, 1, 1, 1, 10, 10},
    {"5x5_pad2_dil2",         3,  7, 5, 5, 1, 1, 2, 2, 2, 2, 1, 12, 11},
    {"asym_k3x5_s1x2_p2x0",   4,  6, 3, 5, 1, 2, 2, 0, 2, 1, 1, 11, 13},
    {"rect_2x1_stride3x1",    3,  5, 2, 1, 3, 1, 1, 0, 1, 1, 1, 13,  6},
    {"groups2",               6, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2,  8,  7},
    {"groups3_stride2",       9, 12, 3, 3, 2, 2, 1, 1, 1, 1, 3,  9, 10},
    {"pointwise",            12, 19, 1, 1, 1, 1, 0, 0, 1, 1, 1,  7,  9},
    {"pointwise_groups2",     8, 14, 1, 1, 1, 1, 0, 0, 1, 1, 2,  6,  11},
    {"1x1_stride2",          10, 13, 1, 1, 2, 2, 0, 0, 1, 1, 1, 11,  9},
    {"1x1_pad1",              6,  5, 1, 1, 1, 1, 1, 1, 1, 1, 1,  5,  6},
    {"wide_40_cols",          3, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1,  3, 40},
    {"deep_300",             40,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1,  6,  6},
    {"many_cols_700",         3,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 25, 28},
    {"output_1x1",            3,  4, 3, 3, 1, 1, 0, 0, 1, 1, 1,  3,  3},
    /* more channels than one 32-row panel; planes of whole and partial 7-wide tiles */
    {"channels_40_7x7",       6, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1,  7,  7},
    {"pointwise_70_14x14",    9, 70, 1, 1, 1, 1, 0, 0, 1, 1, 1, 14, 14},
    {"pointwise_33_700",      5, 33, 1, 1, 1, 1, 0, 0, 1, 1, 1, 25, 28},
    {"groups2_66_stride2",    4, 66, 3, 3, 2, 2, 1, 1, 1, 1, 2, 13, 11},
    /* stride phases of wide rows, and of rows wider than the copy lays out at once */
    {"stride2_wide_600",      2,  5, 3, 3, 2, 2, 1, 1, 1, 1, 1,  3, 600},
    {"stride2_wider_1100",    2,  3, 3, 3, 2, 2, 1, 1, 1, 1, 1,  3, 1100},
    {"stride2x3_wide_700",    2,  3, 3, 5, 2, 3, 1, 2, 1, 1, 1,  4, 700},
};
/* clang-format on */

static inline dc_conv_shape shape_of(const geo *g) {
    dc_conv_shape s = {g->cin, g->cout, g->groups, g->h,  g->w,  g->kh, g->kw, g->sh,
                       g->sw,  g->ph,   g->pw,     g->dh, g->dw, 0,     0};
    assert_true(dc_conv_output_size(g->h, g->kh, g->sh, g->ph, g->dh, &s.out_h));
    assert_true(dc_conv_output_size(g->w, g->kw, g->sw, g->pw, g->dw, &s.out_w));
    return s;
}

static inline size_t depth_of(const dc_conv_shape *s) {
    return s->in_channels / s->groups * s->kernel_h * s->kernel_w;
}


#endif
