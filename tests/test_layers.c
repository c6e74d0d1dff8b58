/* Internal layers one by one, below the public API.
 * The convolution and aggregation are fed small integers: every product and partial sum is then
 * an exact float, so the im2col + GEMM path must agree with a direct integer loop bit for bit
 * (tolerance 0), whatever order BLAS sums in. Softmax and pooling are compared with double. */
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

#include "aggregation.h"
#include "attention.h"
#include "conv.h"
#include "tensor.h"
#include "testutil.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------------------------- */
/* Convolution                                                                              */

typedef struct conv_case {
    const char *name;
    size_t cin, cout, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
    bool bias;
} conv_case;

/* clang-format off */
static const conv_case conv_cases[] = {
    /* name                    cin cout g   h  w kh kw sh sw ph pw dh dw bias */
    {"plain_3x3",                3,  4, 1,  6, 7, 3, 3, 1, 1, 0, 0, 1, 1, true},
    {"pad1_3x3_no_bias",         3,  4, 1,  6, 7, 3, 3, 1, 1, 1, 1, 1, 1, false},
    {"pad2_3x3",                 3,  4, 1,  5, 5, 3, 3, 1, 1, 2, 2, 1, 1, true},
    {"stride2_odd",              3,  5, 1,  9,11, 3, 3, 2, 2, 1, 1, 1, 1, true},
    {"stride3_nopad",            2,  3, 1, 10,13, 3, 3, 3, 3, 0, 0, 1, 1, true},
    {"dilation2",                2,  3, 1,  9, 9, 3, 3, 1, 1, 2, 2, 2, 2, true},
    {"rect_2x5",                 3,  4, 1,  8,10, 2, 5, 1, 2, 0, 2, 1, 1, true},
    {"asym_s1x2_p2x0_d2x1",      4,  6, 1, 11,13, 3, 5, 1, 2, 2, 0, 2, 1, true},
    {"asym_s3x1_p0x3_d1x3",      3,  4, 1, 12, 9, 3, 3, 3, 1, 0, 3, 1, 3, false},
    {"groups2",                  4,  6, 2,  7, 7, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"groups4_stride2",          8,  8, 4,  9, 9, 3, 3, 2, 2, 1, 1, 1, 1, true},
    {"depthwise",                6,  6, 6,  8, 8, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"depthwise_s2_d2",          5,  5, 5, 11, 9, 3, 3, 2, 2, 2, 2, 2, 2, false},
    {"channel_multiplier_x2",    4,  8, 4,  7, 7, 3, 3, 1, 1, 1, 1, 1, 1, true},
    /* the direct depthwise loop: rows of 1 to 4 vectors of 8 and a partial one */
    {"depthwise_wide_41",        3,  3, 3,  5,41, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"depthwise_5x5_s2_wide",    2,  2, 2,  9,40, 5, 5, 2, 2, 2, 2, 1, 1, false},
    {"depthwise_rect_dilated",   2,  2, 2, 10,29, 2, 4, 1, 1, 1, 3, 3, 2, true},
    {"channel_multiplier_x3_w70",2,  6, 2,  4,70, 3, 3, 1, 1, 0, 1, 1, 1, true},
    /* the flat depthwise loop: 14x14, 7x7 without bias, 5x5 with padding 2, rows of 2 */
    {"depthwise_flat_14x14",     3,  3, 3, 14,14, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"depthwise_flat_7x7_nobias",4,  4, 4,  7, 7, 3, 3, 1, 1, 1, 1, 1, 1, false},
    {"depthwise_flat_5x5_pad2",  2,  2, 2,  9,11, 5, 5, 1, 1, 2, 2, 1, 1, true},
    {"depthwise_flat_rows_of_2", 2,  4, 2,  9, 2, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"pointwise",                8, 12, 1,  7, 7, 1, 1, 1, 1, 0, 0, 1, 1, true},
    {"pointwise_groups2",        8,  6, 2,  5, 6, 1, 1, 1, 1, 0, 0, 1, 1, false},
    /* pointwise, 64 or more input channels a group over more than 64Ki input floats: bands of
     * 1024 + 65 columns, of 640 + 290 (across row ends), of 512 a group */
    {"pointwise_bands_64",      64,  5, 1, 33,33, 1, 1, 1, 1, 0, 0, 1, 1, true},
    {"pointwise_bands_100_odd",100,  7, 1, 30,31, 1, 1, 1, 1, 0, 0, 1, 1, false},
    {"pointwise_bands_groups2",256,  6, 2, 20,40, 1, 1, 1, 1, 0, 0, 1, 1, true},
    {"conv_1x1_stride2",         6,  5, 1,  9, 9, 1, 1, 2, 2, 0, 0, 1, 1, true},
    {"conv_1x1_pad1",            6,  5, 1,  6, 6, 1, 1, 1, 1, 1, 1, 1, 1, true},
    {"conv_1x1_stride1x2",       4,  6, 1,  5, 9, 1, 1, 1, 2, 0, 0, 1, 1, true},
    {"conv_1x1_stride2x1",       4,  6, 2,  9, 5, 1, 1, 2, 1, 0, 0, 1, 1, true},
    {"conv_1x1_pad1x0",          4,  6, 1,  5, 5, 1, 1, 1, 1, 1, 0, 1, 1, false},
    {"conv_1x1_pad0x1",          4,  6, 1,  5, 5, 1, 1, 1, 1, 0, 1, 1, 1, true},
    /* strided 1x1 without padding gathers the subsampled input; with padding, im2col */
    {"conv_1x1_stride3_odd",     5,  4, 1, 10,13, 1, 1, 3, 3, 0, 0, 1, 1, true},
    {"conv_1x1_stride2_groups2", 6,  4, 2,  9,11, 1, 1, 2, 2, 0, 0, 1, 1, false},
    {"conv_1x1_s3x2_g2_dil2",    4,  6, 2, 11, 9, 1, 1, 3, 2, 0, 0, 2, 2, true},
    {"conv_1x1_stride2_pad1_g2", 4,  6, 2,  7, 9, 1, 1, 2, 2, 1, 1, 1, 1, true},
    {"conv_1x1_stride3_pad1",    3,  5, 1, 10, 8, 1, 1, 3, 3, 1, 1, 1, 1, false},
    {"output_1x1",               3,  4, 1,  3, 3, 3, 3, 1, 1, 0, 0, 1, 1, true},
    {"input_1x1_padded",         3,  4, 1,  1, 1, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"bigger_16_to_24_14x14",   16, 24, 1, 14,14, 3, 3, 1, 1, 1, 1, 1, 1, true},
};
/* clang-format on */

/* The floor formula computed here independently (in signed arithmetic). */
static int64_t expected_out(size_t in, size_t k, size_t s, size_t p, size_t d)
{
    const int64_t num = (int64_t)in + 2 * (int64_t)p - (int64_t)d * ((int64_t)k - 1) - 1;
    return num < 0 ? 0 : num / (int64_t)s + 1;
}

static dc_conv_shape make_shape(const conv_case *c)
{
    dc_conv_shape s = {.in_channels = c->cin, .out_channels = c->cout, .groups = c->groups,
                       .height = c->h, .width = c->w, .kernel_h = c->kh, .kernel_w = c->kw,
                       .stride_h = c->sh, .stride_w = c->sw, .pad_h = c->ph, .pad_w = c->pw,
                       .dilation_h = c->dh, .dilation_w = c->dw};
    assert_true(dc_conv_output_size(c->h, c->kh, c->sh, c->ph, c->dh, &s.out_h));
    assert_true(dc_conv_output_size(c->w, c->kw, c->sw, c->pw, c->dw, &s.out_w));
    assert_int_equal(s.out_h, expected_out(c->h, c->kh, c->sh, c->ph, c->dh));
    assert_int_equal(s.out_w, expected_out(c->w, c->kw, c->sw, c->pw, c->dw));
    return s;
}

static float *nan_array(size_t n)
{
    float *p = tu_alloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; ++i) {
        p[i] = NAN; /* anything left unwritten shows up as a mismatch */
    }
    return p;
}

static uint64_t name_seed(const char *name)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *s = name; *s; ++s) {
        h = (h ^ (uint64_t)(unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static void conv_exact_case(void **state)
{
    const conv_case *c = *state;
    const dc_conv_shape s = make_shape(c);
    tu_rng rng;
    tu_rng_seed(&rng, name_seed(c->name));

    const size_t cin_g = c->cin / c->groups, cout_g = c->cout / c->groups;
    const size_t x_len = c->cin * c->h * c->w;
    const size_t w_len = c->cout * cin_g * c->kh * c->kw;
    const size_t y_len = c->cout * s.out_h * s.out_w;
    const bool pointwise = c->kh == 1 && c->kw == 1 && c->sh == 1 && c->sw == 1 && c->ph == 0 &&
                           c->pw == 0;
    assert_int_equal(dc_conv_is_pointwise(&s), pointwise);
    const size_t col_floats = dc_conv_col_floats(&s);
    assert_int_equal(col_floats, pointwise ? 0 : cin_g * c->kh * c->kw * s.out_h * s.out_w);
    /* The scratch the convolution really uses: the im2col matrix, none when pointwise, one
     * zero-padded input channel (and 8 * stride_w floats of slack) when depthwise. */
    const bool depthwise = c->groups == c->cin && !pointwise;
    assert_int_equal(dc_conv_is_depthwise(&s), depthwise);
    const bool strided_1x1 = c->kh == 1 && c->kw == 1 && c->ph == 0 && c->pw == 0 &&
                             !pointwise && !depthwise;
    assert_int_equal(dc_conv_is_strided_1x1(&s), strided_1x1);
    /* Small planes of the same width at stride 1 (at most 1024 floats) also take the flat
     * depthwise loop: kw copies of the plane with ph rows + pw floats of zeros on each side
     * and 16 floats of slack; the scratch is the larger of the two. */
    const bool flat = depthwise && c->sh == 1 && c->sw == 1 && s.out_w == c->w && c->pw < c->w &&
                      c->kw <= 16 && c->h * c->w <= 1024 && s.out_h * c->w <= 1024;
    const size_t rows_scratch = (c->h + 2 * c->ph) * (c->w + 2 * c->pw) + 8 * c->sw;
    const size_t flat_scratch = c->kw * (c->h * c->w + 2 * (c->ph * c->w + c->pw) + 16);
    size_t scratch = 0;
    assert_true(dc_conv_scratch_floats(&s, &scratch));
    assert_int_equal(scratch, !depthwise                  ? col_floats
                              : flat && flat_scratch > rows_scratch ? flat_scratch
                                                                    : rows_scratch);

    float *x = tu_alloc(x_len * sizeof(float));
    float *w = tu_alloc(w_len * sizeof(float));
    float *b = tu_alloc(c->cout * sizeof(float));
    tu_fill_int(&rng, x, x_len, -3, 3);
    tu_fill_int(&rng, w, w_len, -3, 3);
    tu_fill_int(&rng, b, c->cout, -5, 5);
    float *y = nan_array(y_len);
    float *col = nan_array(scratch);

    dc_conv2d_sample(&s, x, w, c->bias ? b : NULL, y, col);

    /* the definition, in integers */
    size_t bad = 0;
    for (size_t co = 0; co < c->cout; ++co) {
        const size_t grp = co / cout_g;
        for (size_t oy = 0; oy < s.out_h; ++oy) {
            for (size_t ox = 0; ox < s.out_w; ++ox) {
                int64_t acc = c->bias ? (int64_t)b[co] : 0;
                for (size_t ci = 0; ci < cin_g; ++ci) {
                    for (size_t i = 0; i < c->kh; ++i) {
                        const int64_t iy = (int64_t)(oy * c->sh + i * c->dh) - (int64_t)c->ph;
                        for (size_t j = 0; j < c->kw; ++j) {
                            const int64_t ix =
                                (int64_t)(ox * c->sw + j * c->dw) - (int64_t)c->pw;
                            if (iy < 0 || iy >= (int64_t)c->h || ix < 0 ||
                                ix >= (int64_t)c->w) {
                                continue;
                            }
                            const size_t xi =
                                ((grp * cin_g + ci) * c->h + (size_t)iy) * c->w + (size_t)ix;
                            acc += (int64_t)w[((co * cin_g + ci) * c->kh + i) * c->kw + j] *
                                   (int64_t)x[xi];
                        }
                    }
                }
                const size_t yi = (co * s.out_h + oy) * s.out_w + ox;
                if (!((double)y[yi] == (double)acc)) {
                    if (bad < 5) {
                        print_message("  y[co=%zu, %zu, %zu]: got %.9g, want %lld\n", co, oy, ox,
                                      (double)y[yi], (long long)acc);
                    }
                    ++bad;
                }
            }
        }
    }
    assert_int_equal(bad, 0);

    /* The pieces threads compute when they share a sample: bands of output rows, and ranges of
     * output channels where the path allows it. Every value is an exact integer, so any split
     * must give the whole call's bits. */
    float *part = nan_array(y_len);
    dc_conv2d_sample_cached(&s, x, w, c->bias ? b : NULL, part, col);
    assert_memory_equal(part, y, y_len * sizeof(float));
    const size_t mid_h = s.out_h / 2;
    dc_conv2d_rows(&s, x, w, c->bias ? b : NULL, part, col, 0, mid_h);
    dc_conv2d_rows(&s, x, w, c->bias ? b : NULL, part, col, mid_h, s.out_h);
    assert_memory_equal(part, y, y_len * sizeof(float));
    if (dc_conv_channels_split(&s)) {
        float *split = nan_array(y_len);
        const size_t mid_c = c->cout / 3;
        dc_conv2d_channels(&s, x, w, c->bias ? b : NULL, split, col, 0, mid_c);
        dc_conv2d_channels(&s, x, w, c->bias ? b : NULL, split, col, mid_c, c->cout);
        assert_memory_equal(split, y, y_len * sizeof(float));
        free(split);
    }
    free(part);

    free(col);
    free(y);
    free(b);
    free(w);
    free(x);
}

/* dc_im2col against its definition:
 *   col[(ci*kh + i)*kw + j, oy*out_w + ox] = x[ci, oy*sh - ph + i*dh, ox*sw - pw + j*dw] or 0,
 * on the channels of the last group (a non-zero offset into x catches a wrong base). */
static void im2col_case(void **state)
{
    const conv_case *c = *state;
    const dc_conv_shape s = make_shape(c);
    tu_rng rng;
    tu_rng_seed(&rng, name_seed(c->name) ^ 1);

    const size_t cin_g = c->cin / c->groups;
    const size_t x_len = c->cin * c->h * c->w;
    const size_t cols = s.out_h * s.out_w, rows = cin_g * c->kh * c->kw;
    float *x = tu_alloc(x_len * sizeof(float));
    tu_fill_int(&rng, x, x_len, -100, 100);
    float *col = nan_array(rows * cols);
    const float *xg = x + (c->groups - 1) * cin_g * c->h * c->w;

    dc_im2col(&s, xg, cin_g, col);

    size_t bad = 0;
    for (size_t ci = 0; ci < cin_g; ++ci) {
        for (size_t i = 0; i < c->kh; ++i) {
            for (size_t j = 0; j < c->kw; ++j) {
                const size_t r = (ci * c->kh + i) * c->kw + j;
                for (size_t oy = 0; oy < s.out_h; ++oy) {
                    for (size_t ox = 0; ox < s.out_w; ++ox) {
                        const int64_t iy = (int64_t)(oy * c->sh + i * c->dh) - (int64_t)c->ph;
                        const int64_t ix = (int64_t)(ox * c->sw + j * c->dw) - (int64_t)c->pw;
                        float want = 0.f;
                        if (iy >= 0 && iy < (int64_t)c->h && ix >= 0 && ix < (int64_t)c->w) {
                            want = xg[(ci * c->h + (size_t)iy) * c->w + (size_t)ix];
                        }
                        const float got = col[r * cols + oy * s.out_w + ox];
                        if (!(got == want)) {
                            if (bad < 5) {
                                print_message("  col[%zu, %zu]: got %g, want %g\n", r,
                                              oy * s.out_w + ox, (double)got, (double)want);
                            }
                            ++bad;
                        }
                    }
                }
            }
        }
    }
    assert_int_equal(bad, 0);
    free(col);
    free(x);
}

/* dc_conv_output_size: the floor formula, and false exactly when it gives < 1 (computed
 * without unsigned wrap-around when the kernel is larger than the input). */
static void conv_output_size_formula(void **state)
{
    (void)state;
    static const struct {
        size_t in, k, s, p, d;
        bool ok;
        size_t out;
    } rows[] = {
        {5, 3, 1, 0, 1, true, 3},  {5, 3, 2, 1, 1, true, 3},  {4, 3, 2, 0, 1, true, 1},
        {2, 3, 1, 0, 1, false, 0}, {1, 1, 1, 0, 1, true, 1},  {7, 3, 1, 0, 3, true, 1},
        {6, 3, 1, 0, 3, false, 0}, {1, 3, 1, 1, 1, true, 1},  {10, 1, 3, 0, 1, true, 4},
        {5, 5, 1, 0, 2, false, 0}, {3, 7, 1, 2, 1, true, 1},  {3, 7, 1, 1, 1, false, 0},
        {8, 2, 3, 1, 1, true, 3},  {224, 7, 2, 3, 1, true, 112}, {1, 5, 1, 0, 1, false, 0},
    };
    for (size_t i = 0; i < COUNT(rows); ++i) {
        size_t out = 12345;
        const bool ok = dc_conv_output_size(rows[i].in, rows[i].k, rows[i].s, rows[i].p,
                                            rows[i].d, &out);
        if (ok != rows[i].ok || (ok && out != rows[i].out)) {
            fail_msg("in %zu k %zu s %zu p %zu d %zu: got %d/%zu, want %d/%zu", rows[i].in,
                     rows[i].k, rows[i].s, rows[i].p, rows[i].d, ok, out, rows[i].ok,
                     rows[i].out);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Aggregation                                                                              */

static void aggregate_exact_integers(void **state)
{
    (void)state;
    static const struct {
        size_t n, k, len;
    } shapes[] = {{1, 1, 1}, {3, 4, 37}, {5, 8, 1000}, {2, 3, 4096}, {7, 1, 20}};
    tu_rng rng;
    tu_rng_seed(&rng, 7);
    for (size_t t = 0; t < COUNT(shapes); ++t) {
        const size_t n = shapes[t].n, k = shapes[t].k, len = shapes[t].len;
        float *pi = tu_alloc(n * k * sizeof(float));
        float *params = tu_alloc(k * len * sizeof(float));
        float *out = nan_array(n * len);
        tu_fill_int(&rng, pi, n * k, 0, 3);
        tu_fill_int(&rng, params, k * len, -5, 5);
        dc_aggregate(n, k, len, pi, params, out);
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) {
            for (size_t l = 0; l < len; ++l) {
                int64_t want = 0;
                for (size_t j = 0; j < k; ++j) {
                    want += (int64_t)pi[i * k + j] * (int64_t)params[j * len + l];
                }
                if (!((double)out[i * len + l] == (double)want)) {
                    ++bad;
                }
            }
        }
        if (bad) {
            fail_msg("n %zu k %zu len %zu: %zu values differ", n, k, len, bad);
        }
        free(out);
        free(params);
        free(pi);
    }
}

/* The depthwise loop on small stride-1 planes has two forms: over zero-padded copies of each
 * input channel, and (AVX-512) with masked loads from the input itself. They must give the
 * same bits, on random floats (where the order of the sums shows): whole samples, bands of
 * output rows, and ranges of output channels. Skipped where the CPU lacks AVX-512 (or the
 * build is portable), since both calls then run the copies. */
static const conv_case flat_forms[] = {
    /* name                      cin cout  g   h   w kh kw sh sw ph pw dh dw bias */
    {"flat_7x7",                  16, 16, 16,  7,  7, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"flat_14x14_nobias",         20, 20, 20, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, false},
    {"flat_16x16",                 5,  5,  5, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"flat_5x5_kernel",            6,  6,  6,  9, 11, 5, 5, 1, 1, 2, 2, 1, 1, true},
    {"flat_7x7_kernel",            3,  3,  3, 12, 12, 7, 7, 1, 1, 3, 3, 1, 1, true},
    {"flat_dilated",               4,  4,  4, 10,  9, 3, 3, 1, 1, 2, 2, 2, 2, true},
    {"flat_multiplier_2",          4,  8,  4,  7,  7, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"flat_no_row_padding",        3,  3,  3, 10, 12, 3, 3, 1, 1, 0, 1, 1, 1, true},
    {"flat_rows_of_2",             2,  2,  2,  9,  2, 3, 3, 1, 1, 1, 1, 1, 1, true},
    {"flat_3x1",                   3,  3,  3,  8,  8, 3, 1, 1, 1, 1, 0, 1, 1, true},
    {"flat_28x28_copies_only",     3,  3,  3, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, true},
};

static void depthwise_flat_forms_same_bits(void **state)
{
    (void)state;
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(DYNCONV_PORTABLE)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        skip();
    }
#else
    skip();
#endif
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    for (size_t t = 0; t < COUNT(flat_forms); ++t) {
        const conv_case *c = &flat_forms[t];
        const dc_conv_shape s = make_shape(c);
        const size_t x_len = c->cin * c->h * c->w, w_len = c->cout * c->kh * c->kw;
        const size_t y_len = c->cout * s.out_h * s.out_w;
        size_t scratch = 0;
        assert_true(dc_conv_scratch_floats(&s, &scratch));
        float *x = tu_alloc(x_len * sizeof(float));
        float *w = tu_alloc(w_len * sizeof(float));
        float *b = tu_alloc(c->cout * sizeof(float));
        float *col = tu_alloc((scratch ? scratch : 1) * sizeof(float));
        float *y[2] = {nan_array(y_len), nan_array(y_len)};
        tu_fill_uniform(&rng, x, x_len, -1.0f, 1.0f);
        tu_fill_uniform(&rng, w, w_len, -1.0f, 1.0f);
        tu_fill_uniform(&rng, b, c->cout, -1.0f, 1.0f);
        const float *bias = c->bias ? b : NULL;
        for (int form = 0; form < 2; ++form) {
            float *out = y[form];
            dc_conv_force_flat_copies(form == 0);
            /* three ways to cover the sample: whole, bands of rows, ranges of channels */
            dc_conv2d_sample(&s, x, w, bias, out, col);
            float *bands = nan_array(y_len), *chans = nan_array(y_len);
            const size_t mid_row = s.out_h / 2, mid_ch = c->cout / 3;
            dc_conv2d_rows(&s, x, w, bias, bands, col, 0, mid_row);
            dc_conv2d_rows(&s, x, w, bias, bands, col, mid_row, s.out_h);
            dc_conv2d_channels(&s, x, w, bias, chans, col, 0, mid_ch);
            dc_conv2d_channels(&s, x, w, bias, chans, col, mid_ch, c->cout);
            if (memcmp(out, bands, y_len * sizeof(float)) != 0 ||
                memcmp(out, chans, y_len * sizeof(float)) != 0) {
                fail_msg("%s (%s): bands of rows or ranges of channels differ from the sample",
                         c->name, form == 0 ? "copies" : "masked");
            }
            free(chans);
            free(bands);
        }
        dc_conv_force_flat_copies(false);
        if (memcmp(y[0], y[1], y_len * sizeof(float)) != 0) {
            fail_msg("%s: the masked form differs from the copies", c->name);
        }
        free(y[1]);
        free(y[0]);
        free(col);
        free(b);
        free(w);
        free(x);
    }
}

/* dc_aggregate_block on strided rows and outputs: every value the documented sum (p_0 w_0,
 * then + p_j w_j for j = 1, 2, ..., in float, computed here), so bitwise; the gaps between a
 * sample's outputs untouched; K = 1 and 9 (the general loop), 2 to 8 (the rows held in
 * registers), counts with and without 16- and 8-wide tails, one sample and a chunk of them. */
static void aggregate_block_documented_sum(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        size_t k, samples, count, stride_gap, out_gap;
    } cases[] = {
        /* name            K  samples count stride_gap out_gap */
        {"k1_general",     1, 3,      37,   5,         3},
        {"k2_whole_tiles", 2, 8,      48,   0,         16},
        {"k3_short",       3, 5,      7,    0,         1},
        {"k4_one_sample",  4, 1,      33,   0,         0},
        {"k4_chunk8",      4, 8,      1000, 24,        7},
        {"k5_tails",       5, 3,      25,   1,         1},
        {"k8",             8, 2,      64,   3,         0},
        {"k9_general",     9, 4,      50,   2,         2},
    };
    const float sentinel = -777.0f;
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    for (size_t t = 0; t < COUNT(cases); ++t) {
        const size_t k = cases[t].k, n = cases[t].samples, count = cases[t].count;
        const size_t stride = count + cases[t].stride_gap, ld = count + cases[t].out_gap;
        float *pi = tu_alloc(n * k * sizeof(float));
        float *params = tu_alloc(k * stride * sizeof(float));
        float *out = tu_alloc(n * ld * sizeof(float));
        tu_fill_uniform(&rng, pi, n * k, 0.0f, 1.0f);
        tu_fill_uniform(&rng, params, k * stride, -1.0f, 1.0f);
        for (size_t i = 0; i < n * ld; ++i) {
            out[i] = sentinel;
        }
        dc_aggregate_block(k, stride, n, pi, params, out, ld, count);
        size_t bad = 0, touched = 0;
        for (size_t s = 0; s < n; ++s) {
            for (size_t i = 0; i < ld; ++i) {
                const float got = out[s * ld + i];
                if (i >= count) {
                    touched += got != sentinel;
                    continue;
                }
                float want = pi[s * k] * params[i];
                for (size_t j = 1; j < k; ++j) {
                    want += pi[s * k + j] * params[j * stride + i];
                }
                bad += memcmp(&got, &want, sizeof got) != 0;
            }
        }
        if (bad || touched) {
            fail_msg("%s: %zu values not the documented sum, %zu gap values written",
                     cases[t].name, bad, touched);
        }
        free(out);
        free(params);
        free(pi);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Attention                                                                                */

/* softmax(z / T) in double from the same float logits, max subtracted. */
static void softmax_double(const float *z, size_t k, double t, double *out)
{
    double m = -INFINITY;
    for (size_t i = 0; i < k; ++i) {
        m = fmax(m, (double)z[i] / t);
    }
    double sum = 0.0;
    for (size_t i = 0; i < k; ++i) {
        out[i] = exp((double)z[i] / t - m);
        sum += out[i];
    }
    for (size_t i = 0; i < k; ++i) {
        out[i] /= sum;
    }
}

/* Rows are finite, non-negative and sum to 1. */
static void assert_rows_distribution(const float *p, size_t n, size_t k)
{
    for (size_t i = 0; i < n; ++i) {
        double sum = 0.0;
        for (size_t j = 0; j < k; ++j) {
            if (!isfinite(p[i * k + j]) || p[i * k + j] < 0.f) {
                fail_msg("row %zu col %zu: %g", i, j, (double)p[i * k + j]);
            }
            sum += (double)p[i * k + j];
        }
        if (fabs(sum - 1.0) > 1e-6) {
            fail_msg("row %zu sums to %.9g", i, sum);
        }
    }
}

/* Random logits at several temperatures: matches double, rows sum to 1. */
static void softmax_matches_double(void **state)
{
    (void)state;
    static const float temps[] = {1e-3f, 0.05f, 0.5f, 1.f, 30.f, 1000.f};
    enum { N = 4, K = 6 };
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    for (size_t t = 0; t < COUNT(temps); ++t) {
        float z[N * K], p[N * K];
        double want[N * K];
        /* logits spaced so that even T = 1e-3 leaves a few entries clearly non-zero */
        tu_fill_uniform(&rng, z, N * K, -3.f, 3.f);
        if (temps[t] < 0.01f) {
            for (size_t i = 0; i < N * K; ++i) {
                z[i] = z[i] * 1e-3f;
            }
        }
        memcpy(p, z, sizeof z);
        dc_softmax_rows(p, N, K, temps[t]);
        for (size_t i = 0; i < N; ++i) {
            softmax_double(z + i * K, K, (double)temps[t], want + i * K);
        }
        assert_rows_distribution(p, N, K);
        assert_int_equal(tu_count_mismatches("softmax", p, want, N * K, 1e-5, 1e-7), 0);
    }
}

/* Huge logits and tiny temperatures: a softmax that divides before subtracting the maximum, or
 * does not subtract it, turns these into Inf - Inf = NaN. The header promises finite output for
 * any finite logits and T > 0. */
static void softmax_extreme_logits(void **state)
{
    (void)state;
    static const struct {
        float z[3];
        float t;
        float want[3];
    } rows[] = {
        {{1e30f, -1e30f, 0.f}, 1e-3f, {1.f, 0.f, 0.f}},
        {{-1e30f, 1e30f, -1e30f}, 1.f, {0.f, 1.f, 0.f}},
        {{1e30f, 1e30f, -1e30f}, 1e-3f, {0.5f, 0.5f, 0.f}},
        {{-1e30f, -1e30f, -1e30f}, 1e-3f, {1.f / 3.f, 1.f / 3.f, 1.f / 3.f}},
        {{3e38f, -3e38f, 0.f}, 1e-30f, {1.f, 0.f, 0.f}},
        {{1.f, 2.f, 3.f}, 1e-40f, {0.f, 0.f, 1.f}}, /* a subnormal temperature */
        {{1.f, 2.f, 3.f}, 1e30f, {1.f / 3.f, 1.f / 3.f, 1.f / 3.f}},
    };
    for (size_t r = 0; r < COUNT(rows); ++r) {
        float p[3];
        memcpy(p, rows[r].z, sizeof p);
        dc_softmax_rows(p, 1, 3, rows[r].t);
        print_message("  row %zu (T = %g): %g %g %g\n", r, (double)rows[r].t, (double)p[0],
                      (double)p[1], (double)p[2]);
        assert_rows_distribution(p, 1, 3);
        assert_int_equal(tu_count_mismatches_f("softmax", p, rows[r].want, 3, 1e-6, 1e-7), 0);
    }
}

static void global_avg_pool_matches_double(void **state)
{
    (void)state;
    static const size_t spatials[] = {1, 49, 196, 1000};
    tu_rng rng;
    tu_rng_seed(&rng, 13);
    for (size_t t = 0; t < COUNT(spatials); ++t) {
        const size_t n = 3, c = 5, sp = spatials[t];
        float *x = tu_alloc(n * c * sp * sizeof(float));
        for (size_t i = 0; i < n * c; ++i) {
            const float offset = tu_uniform(&rng, -2.f, 2.f);
            for (size_t j = 0; j < sp; ++j) {
                x[i * sp + j] = offset + tu_uniform(&rng, -1.f, 1.f);
            }
        }
        float pooled[15];
        double want[15];
        dc_global_avg_pool(x, n, c, sp, pooled);
        for (size_t i = 0; i < n * c; ++i) {
            double sum = 0.0;
            for (size_t j = 0; j < sp; ++j) {
                sum += (double)x[i * sp + j];
            }
            want[i] = sum / (double)sp;
        }
        assert_int_equal(tu_count_mismatches("pooled", pooled, want, n * c, 1e-5, 1e-6), 0);
        free(x);
    }
}

/* Small integers over a power-of-two area: the mean is exact, so it must be equal. */
static void global_avg_pool_exact(void **state)
{
    (void)state;
    enum { N = 2, C = 3, SP = 64 };
    tu_rng rng;
    tu_rng_seed(&rng, 17);
    float x[N * C * SP], pooled[N * C];
    tu_fill_int(&rng, x, N * C * SP, -3, 3);
    dc_global_avg_pool(x, N, C, SP, pooled);
    for (size_t i = 0; i < N * C; ++i) {
        int64_t sum = 0;
        for (size_t j = 0; j < SP; ++j) {
            sum += (int64_t)x[i * SP + j];
        }
        assert_true((double)pooled[i] == (double)sum / SP);
    }
}

/* The whole branch against a double computation, with and without the optional biases. */
/* The attention against double precision, on batches that take each way of computing its two
 * fully connected layers: one sample (a matrix-vector product), 2 to 32 (the library's own
 * few-rows product, with reduction lengths that are and are not multiples of 16, and odd
 * output counts), and more (sgemm). The hidden layer (after ReLU) is checked as well as pi. */
static void attention_forward_matches_double(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        size_t n, c, hid, k;
    } cases[] = {
        /* name             N   C    hidden K */
        {"small",           3,  6,   4,     5},
        {"one_sample",      1,  40,  10,    4},
        {"two_odd",         2,  33,  7,     3},
        {"five_of_960",     5,  960, 240,   4},
        {"chunk16",         16, 160, 40,    4},
        {"thirty_two",      32, 48,  12,    2},
        {"beyond_32",       33, 20,  5,     4},
    };
    tu_rng rng;
    tu_rng_seed(&rng, 19);
    for (size_t ci = 0; ci < COUNT(cases); ++ci) {
        const size_t N = cases[ci].n, C = cases[ci].c, HID = cases[ci].hid, K = cases[ci].k;
        float *pooled = tu_alloc(N * C * sizeof(float)), *fc1_w = tu_alloc(HID * C * sizeof(float));
        float *fc1_b = tu_alloc(HID * sizeof(float)), *fc2_w = tu_alloc(K * HID * sizeof(float));
        float *fc2_b = tu_alloc(K * sizeof(float)), *hidden = tu_alloc(N * HID * sizeof(float));
        float *pi = tu_alloc(N * K * sizeof(float)), *z = tu_alloc(K * sizeof(float));
        double *want = tu_alloc(N * K * sizeof(double)), *u = tu_alloc(N * HID * sizeof(double));
        /* weights scaled by 1/sqrt(fan-in), as a trained layer's, so that long reductions keep
         * logits of order one */
        const float s1 = 1.0f / sqrtf((float)C), s2 = 1.5f / sqrtf((float)HID);
        tu_fill_uniform(&rng, pooled, N * C, -1.f, 1.f);
        tu_fill_uniform(&rng, fc1_w, HID * C, -s1, s1);
        tu_fill_uniform(&rng, fc1_b, HID, -0.5f, 0.5f);
        tu_fill_uniform(&rng, fc2_w, K * HID, -s2, s2);
        tu_fill_uniform(&rng, fc2_b, K, -0.5f, 0.5f);
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
            const dc_attention att = {C, HID, K, fc1_w, with_bias ? fc1_b : NULL, fc2_w,
                                      with_bias ? fc2_b : NULL};
            for (int ti = 0; ti < 2; ++ti) {
                const float t = ti ? 0.5f : 1.f;
                dc_attention_forward(&att, N, pooled, t, hidden, pi);
                for (size_t n = 0; n < N; ++n) {
                    double *un = u + n * HID;
                    for (size_t j = 0; j < HID; ++j) {
                        double acc = with_bias ? (double)fc1_b[j] : 0.0;
                        for (size_t c = 0; c < C; ++c) {
                            acc += (double)fc1_w[j * C + c] * (double)pooled[n * C + c];
                        }
                        un[j] = acc > 0.0 ? acc : 0.0;
                    }
                    for (size_t k = 0; k < K; ++k) {
                        double acc = with_bias ? (double)fc2_b[k] : 0.0;
                        for (size_t j = 0; j < HID; ++j) {
                            acc += (double)fc2_w[k * HID + j] * un[j];
                        }
                        z[k] = (float)acc; /* the float logits the library would see */
                    }
                    softmax_double(z, K, (double)t, want + n * K);
                }
                assert_rows_distribution(pi, N, K);
                if (tu_count_mismatches(cases[ci].name, hidden, u, N * HID, TU_RTOL, TU_ATOL) != 0 ||
                    tu_count_mismatches(cases[ci].name, pi, want, N * K, TU_RTOL, TU_ATOL) != 0) {
                    fail_msg("%s: bias %d, T %g: the attention differs from double precision",
                             cases[ci].name, with_bias, (double)t);
                }
            }
        }
        free(u);
        free(want);
        free(z);
        free(pi);
        free(hidden);
        free(fc2_b);
        free(fc2_w);
        free(fc1_b);
        free(fc1_w);
        free(pooled);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Tensor                                                                                   */

static void size_arithmetic_overflow(void **state)
{
    (void)state;
    const size_t big = SIZE_MAX, half = SIZE_MAX / 2; /* half = 2^63 - 1 on 64 bits */
    size_t out;

    /* multiplication */
    out = 7;
    assert_true(dc_mul_size(0, big, &out) && out == 0);
    assert_true(dc_mul_size(big, 1, &out) && out == big);
    assert_true(dc_mul_size(2, half, &out) && out == big - 1);
    out = 7;
    assert_false(dc_mul_size(2, half + 1, &out));
    assert_int_equal(out, 7); /* untouched on overflow */
    assert_false(dc_mul_size(big, big, &out));
    assert_false(dc_mul_size(half + 1, 2, &out));
    if (SIZE_MAX > UINT32_MAX) {
        const size_t two32 = (size_t)1 << 16 << 16;
        assert_false(dc_mul_size(two32, two32, &out));
        assert_true(dc_mul_size(two32, two32 - 1, &out) && out == two32 * (two32 - 1));
    }

    /* addition */
    out = 7;
    assert_true(dc_add_size(big, 0, &out) && out == big);
    assert_true(dc_add_size(big - 5, 5, &out) && out == big);
    out = 7;
    assert_false(dc_add_size(big, 1, &out));
    assert_int_equal(out, 7);
    assert_false(dc_add_size(half + 1, half + 1, &out));
    assert_false(dc_add_size(1, big, &out));

    /* product of dimensions */
    const size_t ok_dims[] = {2, 3, 4};
    assert_true(dc_product(ok_dims, 3, &out) && out == 24);
    const size_t max_dims[] = {big, 1, 1};
    assert_true(dc_product(max_dims, 3, &out) && out == big);
    const size_t bad_dims[] = {(size_t)1 << 31, (size_t)1 << 31, 4};
    if (SIZE_MAX > UINT32_MAX) {
        out = 7;
        assert_true(dc_product(bad_dims, 2, &out) && out == (size_t)1 << 31 << 31);
        out = 7;
        assert_false(dc_product(bad_dims, 3, &out));
        assert_int_equal(out, 7);
    }
    const size_t late_overflow[] = {3, 5, half};
    assert_false(dc_product(late_overflow, 3, &out));
}

static void align_up(void **state)
{
    (void)state;
    static const struct {
        size_t in, out;
    } rows[] = {{0, 0}, {1, 64}, {63, 64}, {64, 64}, {65, 128}, {1000, 1024},
                {SIZE_MAX - 63, SIZE_MAX - 63}};
    for (size_t i = 0; i < COUNT(rows); ++i) {
        size_t out = 7;
        assert_true(dc_align_up(rows[i].in, &out));
        assert_true(out == rows[i].out);
    }
    size_t out = 7;
    assert_false(dc_align_up(SIZE_MAX - 62, &out));
    assert_false(dc_align_up(SIZE_MAX, &out));
    assert_int_equal(out, 7);
}

static void ranges_overlap(void **state)
{
    (void)state;
    static char buf[256];
    /* touching is not overlapping; one shared byte is */
    assert_false(dc_ranges_overlap(buf, 10, buf + 10, 10));
    assert_false(dc_ranges_overlap(buf + 10, 10, buf, 10));
    assert_true(dc_ranges_overlap(buf, 11, buf + 10, 10));
    assert_true(dc_ranges_overlap(buf + 10, 10, buf, 11));
    /* containment both ways, identity */
    assert_true(dc_ranges_overlap(buf, 100, buf + 20, 5));
    assert_true(dc_ranges_overlap(buf + 20, 5, buf, 100));
    assert_true(dc_ranges_overlap(buf + 7, 1, buf + 7, 1));
    /* far apart */
    assert_false(dc_ranges_overlap(buf, 16, buf + 200, 16));
    /* an empty range intersects nothing, even at the same address */
    assert_false(dc_ranges_overlap(buf + 8, 0, buf, 100));
}

/* Planning (base NULL) and running (real base) carve the same layout: equal totals, every
 * buffer 64-byte aligned, inside the total and not overlapping its neighbours. */
static void arena_planning_matches_running(void **state)
{
    (void)state;
    static const size_t counts[] = {10, 1, 100, 16, 3, 1000};
    enum { NB = sizeof(counts) / sizeof(counts[0]) };

    dc_arena plan = {NULL, 0, false};
    for (size_t i = 0; i < NB; ++i) {
        assert_null(dc_arena_take(&plan, counts[i]));
    }
    assert_false(plan.overflow);
    size_t need = 0;
    for (size_t i = 0; i < NB; ++i) {
        need += counts[i] * sizeof(float);
    }
    assert_true(plan.used >= need);

    char *base = dc_aligned_alloc(plan.used);
    assert_non_null(base);
    assert_int_equal((uintptr_t)base % DC_ALIGNMENT, 0);
    dc_arena run = {base, 0, false};
    float *ptrs[NB];
    for (size_t i = 0; i < NB; ++i) {
        ptrs[i] = dc_arena_take(&run, counts[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % DC_ALIGNMENT, 0);
        assert_true((char *)ptrs[i] >= base);
        assert_true((char *)(ptrs[i] + counts[i]) <= base + plan.used);
        if (i > 0) {
            assert_true(ptrs[i] >= ptrs[i - 1] + counts[i - 1]);
        }
    }
    assert_false(run.overflow);
    assert_int_equal(run.used, plan.used);
    /* every byte of the plan is writable (caught by a sanitizer otherwise) */
    memset(base, 0, plan.used);
    dc_aligned_free(base);

    /* byte counts that do not fit size_t set the overflow flag */
    dc_arena huge = {NULL, 0, false};
    (void)dc_arena_take(&huge, SIZE_MAX / 2);
    assert_true(huge.overflow);
    dc_arena sum = {NULL, 0, false};
    (void)dc_arena_take(&sum, SIZE_MAX / 8);
    assert_false(sum.overflow);
    (void)dc_arena_take(&sum, SIZE_MAX / 8);
    (void)dc_arena_take(&sum, 16);
    assert_true(sum.overflow);
}

static void aligned_alloc_is_aligned(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 4, 63, 64, 65, 4096, 100000};
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        void *p = dc_aligned_alloc(sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % DC_ALIGNMENT, 0);
        memset(p, 0x5a, sizes[i]);
        dc_aligned_free(p);
    }
    assert_null(dc_aligned_alloc(0));
}

/* ---------------------------------------------------------------------------------------- */

static struct CMUnitTest *table_tests(const char *prefix, CMUnitTestFunction fn, char **names)
{
    const size_t n = COUNT(conv_cases);
    struct CMUnitTest *tests = tu_alloc(n * sizeof(*tests));
    for (size_t i = 0; i < n; ++i) {
        const size_t len = strlen(prefix) + strlen(conv_cases[i].name) + 1;
        names[i] = tu_alloc(len);
        snprintf(names[i], len, "%s%s", prefix, conv_cases[i].name);
        tests[i] = (struct CMUnitTest){names[i], fn, NULL, NULL, (void *)&conv_cases[i]};
    }
    return tests;
}

int main(void)
{
    const size_t n = COUNT(conv_cases);
    char **conv_names = tu_alloc(n * sizeof(char *));
    char **im2col_names = tu_alloc(n * sizeof(char *));
    struct CMUnitTest *conv_tests = table_tests("conv_exact_", conv_exact_case, conv_names);
    struct CMUnitTest *im2col_tests = table_tests("im2col_", im2col_case, im2col_names);

    const struct CMUnitTest others[] = {
        cmocka_unit_test(conv_output_size_formula),
        cmocka_unit_test(aggregate_exact_integers),
        cmocka_unit_test(aggregate_block_documented_sum),
        cmocka_unit_test(depthwise_flat_forms_same_bits),
        cmocka_unit_test(softmax_matches_double),
        cmocka_unit_test(softmax_extreme_logits),
        cmocka_unit_test(global_avg_pool_matches_double),
        cmocka_unit_test(global_avg_pool_exact),
        cmocka_unit_test(attention_forward_matches_double),
        cmocka_unit_test(size_arithmetic_overflow),
        cmocka_unit_test(align_up),
        cmocka_unit_test(ranges_overlap),
        cmocka_unit_test(arena_planning_matches_running),
        cmocka_unit_test(aligned_alloc_is_aligned),
    };

    int failed = 0;
    failed += _cmocka_run_group_tests("conv_exact", conv_tests, n, NULL, NULL);
    failed += _cmocka_run_group_tests("im2col", im2col_tests, n, NULL, NULL);
    failed += cmocka_run_group_tests_name("layers", others, NULL, NULL);

    for (size_t i = 0; i < n; ++i) {
        free(conv_names[i]);
        free(im2col_names[i]);
    }
    free(im2col_tests);
    free(conv_tests);
    free(im2col_names);
    free(conv_names);
    return failed;
}
