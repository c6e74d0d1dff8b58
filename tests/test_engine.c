/* The own convolution engine (src/gemm) on its own, with small integers so that every product
 * and sum is exact in float and the expected values can be held to tolerance 0:
 *   - each micro-kernel (every ISA this CPU runs, in both layouts: vectors along the positions
 *     and along the channels; the others are skipped and reported) against
 *     an integer matrix product, for every tile edge (m, n), reduction lengths and strides,
 *     overwrite, bias and accumulate, and that nothing outside the tile is written;
 *   - the A packing against its index formula, the B packing (both packers, each copy
 *     routine) against the conv layer's im2col (an independent implementation);
 *   - dc_engine_conv against a direct integer convolution, whole and cut into column bands and
 *     reduction slices (which must give the same bits);
 *   - the row-panel driver dc_engine_conv_rows (and on three samples at once,
 *     dc_engine_conv_rows_batch) against dc_engine_conv_clamped, on random
 *     floats (where the order of the sums shows), the panels cut between calls, the slices it
 *     asks for and the ones announced to its prefetch callback checked against each other.
 * tests/test_engine_forward.c has the public forward on the engine. */
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

#include "engine_cases.h"
#include "testutil.h"

/* ---- micro-kernels ---- */

/* pf: through the kernel's prefetching form, with 2 * kc - 1 lines (an odd count: the last
 * step prefetches one) inside B. */
static void check_tile(const dc_gemm_kernel *k, size_t kc, size_t m, size_t n, size_t ldb,
                       bool accumulate, bool with_bias, bool pf, tu_rng *rng) {
    const size_t mr = k->mr, nr = k->nr, ldc = nr + 3, rows = mr + 2;
    float *a = tu_alloc((kc * mr + 1) * sizeof(float));
    float *b = tu_alloc((kc * ldb + 1) * sizeof(float));
    float *c = tu_alloc(rows * ldc * sizeof(float));
    float *before = tu_alloc(rows * ldc * sizeof(float));
    tu_fill_int(rng, a, kc * mr, -4, 4);
    tu_fill_int(rng, b, kc * ldb, -4, 4);
    tu_fill_int(rng, c, rows * ldc, -9, 9);
    memcpy(before, c, rows * ldc * sizeof(float));
    /* m values only, so that a read past row m is caught (ASan) */
    float *bias = with_bias ? tu_alloc(m * sizeof(float)) : NULL;
    if (bias != NULL) {
        tu_fill_int(rng, bias, m, -9, 9);
    }
    if (pf) {
        const size_t pf_n = 2 * kc - 1;
        const void **lines = tu_alloc(pf_n * sizeof(*lines));
        for (size_t i = 0; i < pf_n; ++i) {
            lines[i] = b + i % (kc * ldb);
        }
        k->tile_pf(kc, a, b, ldb, c, ldc, m, n, bias, accumulate, lines, pf_n);
        free(lines);
    } else {
        k->tile(kc, a, b, ldb, c, ldc, m, n, bias, accumulate);
    }
    for (size_t r = 0; r < rows; ++r) {
        for (size_t j = 0; j < ldc; ++j) {
            double want = before[r * ldc + j];
            if (r < m && j < n) {
                int64_t sum = accumulate  ? (int64_t)before[r * ldc + j]
                              : bias != NULL ? (int64_t)bias[r]
                                             : 0;
                for (size_t p = 0; p < kc; ++p) {
                    sum += (int64_t)a[p * mr + r] * (int64_t)b[p * ldb + j];
                }
                want = (double)sum;
            }
            if ((double)c[r * ldc + j] != want) {
                fail_msg("%s%s kc=%zu m=%zu n=%zu ldb=%zu acc=%d: C[%zu][%zu] = %g, want %g",
                         k->name, pf ? " (prefetching)" : "", kc, m, n, ldb, (int)accumulate, r,
                         j, (double)c[r * ldc + j], want);
            }
        }
    }
    free(bias);
    free(before);
    free(c);
    free(b);
    free(a);
}

static void run_tile_tests_of(dc_isa isa, bool channel_lanes) {
    const dc_gemm_kernel *k = kernel_of_or_skip(isa, channel_lanes);
    assert_true(k->channel_lanes == channel_lanes);
    tu_rng rng;
    tu_rng_seed(&rng, 1000 + (uint64_t)isa);
    const size_t kcs[] = {1, 3, 17, 256, 300};
    for (size_t ik = 0; ik < sizeof kcs / sizeof kcs[0]; ++ik) {
        for (size_t m = 1; m <= k->mr; ++m) {
            /* every width of a narrow tile; the edges and the middle of a wide one */
            size_t ns[8] = {1, k->nr / 2 + 1, k->nr - 1, k->nr}, count = 4;
            if (k->nr <= 8) {
                for (count = 0; count < k->nr; ++count) {
                    ns[count] = count + 1;
                }
            }
            for (size_t in = 0; in < count; ++in) {
                for (int mode = 0; mode < 3; ++mode) { /* overwrite, with bias, accumulate */
                    for (int pf = 0; pf < (k->tile_pf != NULL ? 2 : 1); ++pf) {
                        check_tile(k, kcs[ik], m, ns[in], k->nr, mode == 2, mode == 1, pf,
                                   &rng);
                        /* B read in place, rows further apart than NR */
                        check_tile(k, kcs[ik], m, ns[in], k->nr + 13, mode == 2, mode == 1, pf,
                                   &rng);
                    }
                }
            }
        }
    }
}

static void run_tile_tests(dc_isa isa) { run_tile_tests_of(isa, false); }

static void test_tile_baseline(void **state) {
    (void)state;
    run_tile_tests(DC_ISA_BASELINE);
}
static void test_tile_baseline_channels(void **state) {
    (void)state;
    run_tile_tests_of(DC_ISA_BASELINE, true);
}
static void test_tile_avx512_channels(void **state) {
    (void)state;
    run_tile_tests_of(DC_ISA_AVX512, true);
}
static void test_tile_avx2(void **state) {
    (void)state;
    run_tile_tests(DC_ISA_AVX2);
}
static void test_tile_avx512(void **state) {
    (void)state;
    run_tile_tests(DC_ISA_AVX512);
}

/* The choice: the automatic one is the widest available, a forced one sticks until undone, an
 * unavailable one is refused without changing anything. */
static void test_select_and_force(void **state) {
    (void)state;
    const dc_gemm_kernel *best = dc_gemm_select();
    assert_non_null(best);
    for (int isa = DC_ISA_AVX512; isa > (int)best->isa; --isa) {
        assert_null(dc_gemm_kernel_for((dc_isa)isa));
        assert_false(dc_gemm_force_isa((dc_isa)isa));
        assert_ptr_equal(dc_gemm_select(), best);
    }
    for (int isa = 0; isa <= (int)best->isa; ++isa) {
        if (dc_gemm_kernel_for((dc_isa)isa) != NULL) {
            assert_true(dc_gemm_force_isa((dc_isa)isa));
            assert_int_equal(dc_gemm_select()->isa, isa);
        }
    }
    /* the channel-lanes kernels: forced like the others; AVX2 has none */
    assert_null(dc_gemm_kernel_of(DC_ISA_AVX2, true));
    assert_false(dc_gemm_force(DC_ISA_AVX2, true));
    for (int isa = 0; isa <= DC_ISA_AVX512; ++isa) {
        const dc_gemm_kernel *k = dc_gemm_kernel_of((dc_isa)isa, true);
        assert_true(dc_gemm_force((dc_isa)isa, true) == (k != NULL));
        if (k != NULL) {
            assert_true(k->channel_lanes && k->isa == (dc_isa)isa);
            assert_ptr_equal(dc_gemm_select(), k);
            assert_ptr_equal(dc_gemm_forced(), k);
        }
    }
    dc_gemm_force_auto();
    assert_null(dc_gemm_forced());
    assert_ptr_equal(dc_gemm_select(), best);
    assert_false(best->channel_lanes);
}

/* dc_engine_pack_a: element (g, panel j, p, r) = w[g * g_out + j * MR + r][p], 0 past g_out. */
static void check_pack_a(const geo *g, const dc_gemm_kernel *k) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), g_out = s.out_channels / s.groups, mr = k->mr;
    const size_t panels = (g_out + mr - 1) / mr;
    size_t len;
    assert_true(dc_engine_packed_floats(&s, k, &len));
    assert_int_equal(len, s.groups * panels * mr * depth);
    float *w = tu_alloc(s.out_channels * depth * sizeof(float));
    float *packed = tu_alloc(len * sizeof(float));
    for (size_t i = 0; i < s.out_channels * depth; ++i) {
        w[i] = (float)(i + 1); /* distinct, exact */
    }
    dc_engine_pack_a(&s, k, w, packed);
    for (size_t gi = 0; gi < s.groups; ++gi) {
        for (size_t j = 0; j < panels; ++j) {
            for (size_t p = 0; p < depth; ++p) {
                for (size_t r = 0; r < mr; ++r) {
                    const size_t row = j * mr + r;
                    const float want = row < g_out ? w[(gi * g_out + row) * depth + p] : 0.0f;
                    assert_true(packed[((gi * panels + j) * depth + p) * mr + r] == want);
                }
            }
        }
    }
    free(packed);
    free(w);
}

/* dc_engine_pack_b (and for stride-1 shapes dc_engine_pack_b_padded, with each copy routine)
 * against dc_im2col for several column ranges and reduction slices. */
static void check_pack_b(const geo *g, size_t nr, const dc_gemm_kernel *padded_with) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), plane = s.out_h * s.out_w;
    const size_t g_in = s.in_channels / s.groups, in_plane = s.height * s.width;
    tu_rng rng;
    tu_rng_seed(&rng, 77 + nr);
    float *x = tu_alloc(s.in_channels * in_plane * sizeof(float));
    float *col = tu_alloc(depth * plane * sizeof(float));
    const size_t max_panels = (plane + nr - 1) / nr;
    float *panels = tu_alloc(depth * max_panels * nr * sizeof(float));
    tu_fill_int(&rng, x, s.in_channels * in_plane, -9, 9);
    size_t xp_len = 0;
    assert_true(dc_engine_padded_floats(&s, &xp_len));
    float *xp = tu_alloc(xp_len * sizeof(float));
    for (size_t gi = 0; gi < s.groups; ++gi) {
        const float *xg = x + gi * g_in * in_plane;
        dc_im2col(&s, xg, g_in, col);
        dc_engine_pad_input(&s, xg, 0, g_in, xp);
        const size_t starts[] = {0, 1, plane / 2, plane - 1};
        for (size_t is = 0; is < 4; ++is) {
            const size_t col0 = starts[is], n = plane - col0;
            const size_t slices[][2] = {{0, depth}, {depth / 3, depth - depth / 3}};
            for (size_t sl = 0; sl < 2; ++sl) {
                const size_t p0 = slices[sl][0], kc = slices[sl][1];
                if (kc == 0) {
                    continue;
                }
                const size_t npan = (n + nr - 1) / nr;
                memset(panels, 0xFF, depth * max_panels * nr * sizeof(float)); /* NaN */
                if (padded_with != NULL) {
                    dc_engine_pack_b_padded(&s, padded_with, xp, p0, kc, col0, n, nr, panels);
                } else {
                    dc_engine_pack_b(&s, xg, p0, kc, col0, n, nr, panels);
                }
                for (size_t jp = 0; jp < npan; ++jp) {
                    for (size_t q = 0; q < kc; ++q) {
                        for (size_t l = 0; l < nr; ++l) {
                            const size_t j = jp * nr + l;
                            const float want = j < n ? col[(p0 + q) * plane + col0 + j] : 0.0f;
                            const float got = panels[(jp * kc + q) * nr + l];
                            if (got != want) {
                                fail_msg("%s nr=%zu group %zu col0=%zu p0=%zu: panel %zu row %zu "
                                         "lane %zu = %g, want %g",
                                         g->name, nr, gi, col0, p0, jp, q, l, (double)got,
                                         (double)want);
                            }
                        }
                    }
                }
            }
        }
    }
    free(xp);
    free(panels);
    free(col);
    free(x);
}

static void test_pack_a(void **state) {
    (void)state;
    for (int v = 0; v < 2 * (DC_ISA_AVX512 + 1); ++v) {
        const dc_gemm_kernel *k = dc_gemm_kernel_of((dc_isa)(v / 2), v % 2 != 0);
        for (size_t i = 0; k != NULL && i < sizeof geos / sizeof geos[0]; ++i) {
            check_pack_a(&geos[i], k);
        }
    }
}

static void test_pack_b(void **state) {
    (void)state;
    const size_t nrs[] = {7, 8, 16, 32};
    for (size_t in = 0; in < 4; ++in) {
        for (size_t i = 0; i < sizeof geos / sizeof geos[0]; ++i) {
            check_pack_b(&geos[i], nrs[in], NULL);
            const dc_conv_shape s = shape_of(&geos[i]);
            for (int isa = 0; isa <= DC_ISA_AVX512 && dc_engine_uses_padded(&s); ++isa) {
                const dc_gemm_kernel *k = dc_gemm_kernel_for((dc_isa)isa);
                if (k != NULL) {
                    check_pack_b(&geos[i], nrs[in], k);
                }
            }
        }
    }
}

static void test_pack_rows(void **state) {
    (void)state;
    enum { LD = 11, M = 3, NP = 7, MR = 5 };
    float rows[M * LD], dst[NP * MR];
    for (size_t i = 0; i < M * LD; ++i) {
        rows[i] = (float)i;
    }
    memset(dst, 0xFF, sizeof dst);
    dc_engine_pack_rows(rows, LD, M, NP, MR, dst);
    for (size_t p = 0; p < NP; ++p) {
        for (size_t r = 0; r < MR; ++r) {
            assert_true(dst[p * MR + r] == (r < M ? rows[r * LD + p] : 0.0f));
        }
    }
}

/* ---- the driver ---- */

/* Direct integer convolution of one sample: y [C_out, plane] (+ bias). */
static void int_conv(const dc_conv_shape *s, const float *x, const float *w, const float *b,
                     double *y) {
    const size_t g_in = s->in_channels / s->groups, g_out = s->out_channels / s->groups;
    for (size_t oc = 0; oc < s->out_channels; ++oc) {
        const size_t gi = oc / g_out;
        for (size_t oh = 0; oh < s->out_h; ++oh) {
            for (size_t ow = 0; ow < s->out_w; ++ow) {
                int64_t sum = b != NULL ? (int64_t)b[oc] : 0;
                for (size_t c = 0; c < g_in; ++c) {
                    for (size_t ki = 0; ki < s->kernel_h; ++ki) {
                        for (size_t kj = 0; kj < s->kernel_w; ++kj) {
                            const int64_t ih = (int64_t)(oh * s->stride_h + ki * s->dilation_h) -
                                               (int64_t)s->pad_h;
                            const int64_t iw = (int64_t)(ow * s->stride_w + kj * s->dilation_w) -
                                               (int64_t)s->pad_w;
                            if (ih < 0 || iw < 0 || ih >= (int64_t)s->height ||
                                iw >= (int64_t)s->width) {
                                continue;
                            }
                            const float xv = x[((gi * g_in + c) * s->height + (size_t)ih) *
                                                   s->width + (size_t)iw];
                            const float wv =
                                w[((oc * g_in + c) * s->kernel_h + ki) * s->kernel_w + kj];
                            sum += (int64_t)xv * (int64_t)wv;
                        }
                    }
                }
                y[oc * s->out_h * s->out_w + oh * s->out_w + ow] = (double)sum;
            }
        }
    }
}

static void check_driver(const geo *g, const dc_gemm_kernel *k, bool with_bias) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), plane = s.out_h * s.out_w;
    const size_t y_len = s.out_channels * plane, mr = k->mr;
    tu_rng rng;
    tu_rng_seed(&rng, 5 + (uint64_t)k->isa);
    float *x = tu_alloc(s.in_channels * s.height * s.width * sizeof(float));
    float *w = tu_alloc(s.out_channels * depth * sizeof(float));
    float *b = tu_alloc(s.out_channels * sizeof(float));
    tu_fill_int(&rng, x, s.in_channels * s.height * s.width, -3, 3);
    tu_fill_int(&rng, w, s.out_channels * depth, -3, 3);
    tu_fill_int(&rng, b, s.out_channels, -20, 20);
    size_t len, scratch_len;
    assert_true(dc_engine_packed_floats(&s, k, &len));
    assert_true(dc_engine_scratch_floats(&s, k, plane, &scratch_len));
    float *packed = tu_alloc(len * sizeof(float));
    float *scratch = tu_alloc((scratch_len + 1) * sizeof(float));
    float *y = tu_alloc(y_len * sizeof(float));
    float *y2 = tu_alloc(y_len * sizeof(float));
    double *want = tu_alloc(y_len * sizeof(double));
    dc_engine_pack_a(&s, k, w, packed);
    const float *bias = with_bias ? b : NULL;
    int_conv(&s, x, w, bias, want);

    /* whole */
    dc_engine_conv(&s, k, x, packed, depth * mr, 0, bias, y, scratch, 0, plane, 0, depth);
    assert_int_equal(tu_count_mismatches("engine", y, want, y_len, 0.0, 0.0), 0);

    /* three column bands, one of them not a whole number of panels */
    const size_t cut1 = plane / 3, cut2 = plane - plane / 4;
    memset(y2, 0xFF, y_len * sizeof(float));
    dc_engine_conv(&s, k, x, packed, depth * mr, 0, bias, y2, scratch, 0, cut1, 0, depth);
    dc_engine_conv(&s, k, x, packed, depth * mr, 0, bias, y2, scratch, cut1, cut2, 0, depth);
    dc_engine_conv(&s, k, x, packed, depth * mr, 0, bias, y2, scratch, cut2, plane, 0, depth);
    assert_memory_equal(y, y2, y_len * sizeof(float));

    /* reduction slice by slice, each slice's A copied out on its own (as the fused mixing
     * gives it): the same bits */
    const size_t panels_all = len / (depth * mr);
    float *slice = tu_alloc(panels_all * DC_ENGINE_KC * mr * sizeof(float));
    memset(y2, 0xFF, y_len * sizeof(float));
    for (size_t p0 = 0; p0 < depth; p0 += DC_ENGINE_KC) {
        const size_t np = depth - p0 < DC_ENGINE_KC ? depth - p0 : DC_ENGINE_KC;
        for (size_t gp = 0; gp < panels_all; ++gp) {
            memcpy(slice + gp * DC_ENGINE_KC * mr, packed + (gp * depth + p0) * mr,
                   np * mr * sizeof(float));
        }
        dc_engine_conv(&s, k, x, slice, DC_ENGINE_KC * mr, p0, bias, y2, scratch, 0, plane, p0,
                       p0 + np);
    }
    assert_memory_equal(y, y2, y_len * sizeof(float));

    free(slice);
    free(want);
    free(y2);
    free(y);
    free(scratch);
    free(packed);
    free(b);
    free(w);
    free(x);
}

static void run_driver_tests_of(dc_isa isa, bool channel_lanes) {
    const dc_gemm_kernel *k = kernel_of_or_skip(isa, channel_lanes);
    for (size_t i = 0; i < sizeof geos / sizeof geos[0]; ++i) {
        check_driver(&geos[i], k, i % 2 == 0);
    }
}

static void run_driver_tests(dc_isa isa) { run_driver_tests_of(isa, false); }

static void test_driver_baseline_channels(void **state) {
    (void)state;
    run_driver_tests_of(DC_ISA_BASELINE, true);
}
static void test_driver_avx512_channels(void **state) {
    (void)state;
    run_driver_tests_of(DC_ISA_AVX512, true);
}

static void test_driver_baseline(void **state) {
    (void)state;
    run_driver_tests(DC_ISA_BASELINE);
}
static void test_driver_avx2(void **state) {
    (void)state;
    run_driver_tests(DC_ISA_AVX2);
}
static void test_driver_avx512(void **state) {
    (void)state;
    run_driver_tests(DC_ISA_AVX512);
}

/* ---- the row-panel driver ---- */

/* What the driver asked for: the packed kernel it reads, and the slice announced last. */
typedef struct rows_probe {
    const float *packed;
    size_t depth, mr, gp0, gp1;
    bool copy;                /* made into buf (else pointed to where it lies) */
    bool announced;           /* a prefetch named (next_gp, next_p0) before this slice */
    size_t next_gp, next_p0, next_kc, parts_seen, slices;
    size_t errors;
} rows_probe;

static const float *probe_slice(void *p, size_t gp, size_t p0, size_t kc, float *buf) {
    rows_probe *r = p;
    /* every slice but a call's first was announced, with its length, all parts of it */
    const bool first = r->slices == 0;
    if (gp < r->gp0 || gp >= r->gp1 || p0 % DC_ENGINE_KC != 0 ||
        kc != (r->depth - p0 < DC_ENGINE_KC ? r->depth - p0 : DC_ENGINE_KC) ||
        (!first && (!r->announced || r->next_gp != gp || r->next_p0 != p0 ||
                    r->next_kc != kc))) {
        ++r->errors;
    }
    r->announced = false;
    r->parts_seen = 0;
    ++r->slices;
    const float *src = r->packed + (gp * r->depth + p0) * r->mr;
    if (!r->copy) {
        return src;
    }
    memcpy(buf, src, kc * r->mr * sizeof(float));
    return buf;
}

static void probe_prefetch(void *p, size_t gp, size_t p0, size_t kc, size_t part,
                           size_t parts) {
    rows_probe *r = p;
    /* parts 0, 1, ..., parts - 1 in order, all naming the same slice */
    if (part != r->parts_seen || part >= parts ||
        (part > 0 && (gp != r->next_gp || p0 != r->next_p0 || kc != r->next_kc))) {
        ++r->errors;
    }
    r->parts_seen = part + 1;
    r->announced = part + 1 == parts;
    r->next_gp = gp;
    r->next_p0 = p0;
    r->next_kc = kc;
}

/* Random floats, bias and a clamp (ReLU6): panels [0, all) cut into three calls (the middle
 * one empty when there are fewer than three panels), with buffered and in-place slices, must
 * give bitwise what dc_engine_conv_clamped gives, and leave the rows they do not own alone. */
static void check_rows_driver(const geo *g, const dc_gemm_kernel *k) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), plane = s.out_h * s.out_w;
    const size_t y_len = s.out_channels * plane, mr = k->mr;
    tu_rng rng;
    tu_rng_seed(&rng, 77 + (uint64_t)k->isa);
    const size_t x_len = s.in_channels * s.height * s.width;
    float *x = tu_alloc(x_len * sizeof(float));
    float *w = tu_alloc(s.out_channels * depth * sizeof(float));
    float *b = tu_alloc(s.out_channels * sizeof(float));
    tu_fill_uniform(&rng, x, x_len, -1.0f, 1.0f);
    tu_fill_uniform(&rng, w, s.out_channels * depth, -1.0f, 1.0f);
    tu_fill_uniform(&rng, b, s.out_channels, -1.0f, 4.0f);
    size_t len, scratch_len;
    assert_true(dc_engine_packed_floats(&s, k, &len));
    assert_true(dc_engine_scratch_floats(&s, k, plane, &scratch_len));
    float *packed = tu_alloc(len * sizeof(float));
    float *scratch = tu_alloc(scratch_len * sizeof(float));
    const size_t kc_max = depth < DC_ENGINE_KC ? depth : DC_ENGINE_KC;
    float *abuf = tu_alloc(kc_max * mr * sizeof(float));
    float *y = tu_alloc(y_len * sizeof(float));
    float *y2 = tu_alloc(y_len * sizeof(float));
    dc_engine_pack_a(&s, k, w, packed);
    const dc_engine_clamp relu6 = {0.0f, 6.0f};
    dc_engine_conv_clamped(&s, k, x, packed, depth * mr, 0, b, y, scratch, 0, plane, 0, depth,
                           &relu6);

    const size_t all = len / (depth * mr), cut1 = all / 3, cut2 = all < 3 ? cut1 : all - all / 3;
    const size_t cuts[4] = {0, cut1, cut2, all};
    for (int copy = 0; copy <= 1; ++copy) {
        memset(y2, 0xFF, y_len * sizeof(float));
        for (size_t c = 0; c < 3; ++c) {
            rows_probe probe = {.packed = packed, .depth = depth, .mr = mr, .gp0 = cuts[c],
                                .gp1 = cuts[c + 1], .copy = copy != 0};
            const dc_engine_rows_src src = {probe_slice, probe_prefetch, NULL, &probe, 0};
            dc_engine_conv_rows(&s, k, x, &src, cuts[c], cuts[c + 1], b, y2, scratch,
                                copy ? abuf : NULL, &relu6);
            /* each owned panel slice once per column block */
            const size_t blocks = (plane + 511) / 512;
            const size_t slices = (depth + DC_ENGINE_KC - 1) / DC_ENGINE_KC;
            if (probe.errors != 0 || probe.slices != (cuts[c + 1] - cuts[c]) * slices * blocks ||
                probe.announced) {
                fail_msg("%s (%s): panels [%zu, %zu): %zu slices fetched, %zu protocol errors",
                         g->name, k->name, cuts[c], cuts[c + 1], probe.slices, probe.errors);
            }
        }
        if (memcmp(y, y2, y_len * sizeof(float)) != 0) {
            fail_msg("%s (%s): the row-panel driver differs (copy %d)", g->name, k->name, copy);
        }
    }
    free(y2);
    free(y);
    free(abuf);
    free(scratch);
    free(packed);
    free(b);
    free(w);
    free(x);
}

/* Three samples' kernels, packed: each slice copied into buf side by side, sample n's
 * DC_ENGINE_KC * MR floats after sample n - 1's (as the forward mixes a chunk). */
typedef struct batch_kernels {
    const float *packed[3];
    size_t depth, mr;
} batch_kernels;

static const float *batch_slice(void *p, size_t gp, size_t p0, size_t kc, float *buf) {
    const batch_kernels *bk = p;
    for (size_t n = 0; n < 3; ++n) {
        memcpy(buf + n * DC_ENGINE_KC * bk->mr, bk->packed[n] + (gp * bk->depth + p0) * bk->mr,
               kc * bk->mr * sizeof(float));
    }
    return buf;
}

/* dc_engine_conv_rows_batch on three samples of random floats: with a kernel and a bias of
 * their own each, and with one kernel and bias for all (sample_stride and b_stride 0), the
 * panels cut into three calls; every sample bitwise what dc_engine_conv_clamped gives it. */
static void check_rows_batch(const geo *g, const dc_gemm_kernel *k) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), plane = s.out_h * s.out_w, mr = k->mr;
    const size_t x_len = s.in_channels * s.height * s.width, y_len = s.out_channels * plane;
    const size_t w_len = s.out_channels * depth;
    tu_rng rng;
    tu_rng_seed(&rng, 91 + (uint64_t)k->isa);
    float *x = tu_alloc(3 * x_len * sizeof(float));
    float *w = tu_alloc(3 * w_len * sizeof(float));
    float *b = tu_alloc(3 * s.out_channels * sizeof(float));
    tu_fill_uniform(&rng, x, 3 * x_len, -1.0f, 1.0f);
    tu_fill_uniform(&rng, w, 3 * w_len, -1.0f, 1.0f);
    tu_fill_uniform(&rng, b, 3 * s.out_channels, -1.0f, 4.0f);
    size_t len, one, scratch_len;
    assert_true(dc_engine_packed_floats(&s, k, &len));
    assert_true(dc_engine_scratch_floats(&s, k, plane, &one));
    assert_true(dc_engine_rows_scratch_floats(&s, k, 3, &scratch_len));
    float *packed = tu_alloc(3 * len * sizeof(float));
    float *scratch = tu_alloc((scratch_len > one ? scratch_len : one) * sizeof(float));
    float *abuf = tu_alloc(3 * DC_ENGINE_KC * mr * sizeof(float));
    float *want = tu_alloc(3 * y_len * sizeof(float));
    float *got = tu_alloc(3 * y_len * sizeof(float));
    for (size_t n = 0; n < 3; ++n) {
        dc_engine_pack_a(&s, k, w + n * w_len, packed + n * len);
    }
    const dc_engine_clamp relu6 = {0.0f, 6.0f};
    const size_t all = len / (depth * mr), cut1 = all / 3, cut2 = all < 3 ? cut1 : all - all / 3;
    const size_t cuts[4] = {0, cut1, cut2, all};
    for (int shared = 0; shared <= 1; ++shared) {
        for (size_t n = 0; n < 3; ++n) {
            const size_t own = shared ? 0 : n;
            dc_engine_conv_clamped(&s, k, x + n * x_len, packed + own * len, depth * mr, 0,
                                   b + own * s.out_channels, want + n * y_len, scratch, 0,
                                   plane, 0, depth, &relu6);
        }
        memset(got, 0xFF, 3 * y_len * sizeof(float));
        batch_kernels bk = {{packed, packed + len, packed + 2 * len}, depth, mr};
        for (size_t c = 0; c < 3; ++c) {
            rows_probe probe = {.packed = packed, .depth = depth, .mr = mr, .gp0 = cuts[c],
                                .gp1 = cuts[c + 1], .copy = false};
            const dc_engine_rows_src one_kernel = {probe_slice, probe_prefetch, NULL, &probe, 0};
            const dc_engine_rows_src own_kernels = {batch_slice, NULL, NULL, &bk,
                                                    DC_ENGINE_KC * mr};
            dc_engine_conv_rows_batch(&s, k, 3, x, x_len, shared ? &one_kernel : &own_kernels,
                                      cuts[c], cuts[c + 1], b, shared ? 0 : s.out_channels, got,
                                      y_len, scratch, abuf, &relu6);
            if (shared && probe.errors != 0) {
                fail_msg("%s (%s): panels [%zu, %zu): %zu protocol errors", g->name, k->name,
                         cuts[c], cuts[c + 1], probe.errors);
            }
        }
        if (memcmp(want, got, 3 * y_len * sizeof(float)) != 0) {
            fail_msg("%s (%s): three samples on the row-panel driver differ (%s)", g->name,
                     k->name, shared ? "one kernel" : "a kernel each");
        }
    }
    free(got);
    free(want);
    free(abuf);
    free(scratch);
    free(packed);
    free(b);
    free(w);
    free(x);
}

static void run_rows_tests_of(dc_isa isa, bool channel_lanes) {
    const dc_gemm_kernel *k = kernel_of_or_skip(isa, channel_lanes);
    for (size_t i = 0; i < sizeof geos / sizeof geos[0]; ++i) {
        check_rows_driver(&geos[i], k);
        check_rows_batch(&geos[i], k);
    }
}

static void run_rows_tests(dc_isa isa) { run_rows_tests_of(isa, false); }

static void test_rows_baseline_channels(void **state) {
    (void)state;
    run_rows_tests_of(DC_ISA_BASELINE, true);
}
static void test_rows_avx512_channels(void **state) {
    (void)state;
    run_rows_tests_of(DC_ISA_AVX512, true);
}

static void test_rows_baseline(void **state) {
    (void)state;
    run_rows_tests(DC_ISA_BASELINE);
}
static void test_rows_avx2(void **state) {
    (void)state;
    run_rows_tests(DC_ISA_AVX2);
}
static void test_rows_avx512(void **state) {
    (void)state;
    run_rows_tests(DC_ISA_AVX512);
}

/* ---- stride 1 without B panels (engine_inplace.c) ---- */

/* clang-format off */
static const geo inplace_geos[] = {
    /* name                 cin cout kh kw sh sw ph pw dh dw  g   h   w */
    {"inplace_3x3_pad1_odd",     5, 11, 3, 3, 1, 1, 1, 1, 1, 1, 1,  9, 13},
    {"inplace_3x3_pad0_odd",     4,  9, 3, 3, 1, 1, 0, 0, 1, 1, 1, 10, 11},
    {"inplace_5x5_pad2",         3, 10, 5, 5, 1, 1, 2, 2, 1, 1, 1,  8,  9},
    {"inplace_3x3_pad2",         3,  7, 3, 3, 1, 1, 2, 2, 1, 1, 1,  6,  7},
    {"inplace_3x3_dil2_pad2",    4,  9, 3, 3, 1, 1, 2, 2, 2, 2, 1, 11,  9},
    {"inplace_3x5_pad1x0",       3,  6, 3, 5, 1, 1, 1, 0, 1, 1, 1,  7, 12},
    {"inplace_1x3_padw1",        6,  5, 1, 3, 1, 1, 0, 1, 1, 1, 1,  5,  9},
    {"inplace_groups2",          6, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2,  8,  7},
    {"inplace_groups3_deep",    90, 12, 3, 3, 1, 1, 1, 1, 1, 1, 3,  5,  6},
    {"inplace_deep_300",        40,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1,  6,  6},
    {"inplace_many_cols_700",    3,  9, 3, 3, 1, 1, 1, 1, 1, 1, 1, 25, 28},
    {"inplace_wide_40",          3, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1,  3, 40},
    {"inplace_output_1x1",       3,  4, 3, 3, 1, 1, 0, 0, 1, 1, 1,  3,  3},
    {"inplace_width_1",          2,  5, 3, 3, 1, 1, 1, 1, 1, 1, 1,  7,  1},
    {"inplace_56_narrow_tiles", 20, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1,  4, 56},
    {"inplace_3x1_padh1",        4,  9, 3, 1, 1, 1, 1, 0, 1, 1, 1,  7, 10},
    {"inplace_5x5_pad2_big",    12, 20, 5, 5, 1, 1, 2, 2, 1, 1, 1, 14, 30},
};
/* Stride-1 shapes the path cannot take (it falls back to the panels even when forced). */
static const geo inplace_refused[] = {
    {"k3x1_padw1",            3,  5, 3, 1, 1, 1, 1, 1, 1, 1, 1,  6,  7},
    {"3x3_pad2_wider",        3,  5, 3, 3, 1, 1, 1, 3, 1, 1, 1,  6,  7},
    {"stride2",               3,  5, 3, 3, 2, 2, 1, 1, 1, 1, 1,  6,  7},
    {"pointwise",             3,  5, 1, 1, 1, 1, 0, 0, 1, 1, 1,  6,  7},
};
/* clang-format on */

/* One call over columns [c0, c1) of the whole reduction, with clamp cl. */
static void inplace_range(const dc_conv_shape *s, const dc_gemm_kernel *k, const float *x,
                       const float *packed, const float *bias, float *y, float *scratch,
                       size_t c0, size_t c1, const dc_engine_clamp *cl) {
    const size_t depth = depth_of(s);
    dc_engine_conv_clamped(s, k, x, packed, depth * k->mr, 0, bias, y, scratch, c0, c1, 0, depth,
                           cl);
}

/* The path (forced `mode`: 1, or 2 for the AVX-512 kernel's form without masked loads) against
 * the integer convolution (check_driver: whole, bands, slice by slice), then
 * the same bits as the packed path: whole, clamped, in bands that cut output rows anywhere
 * (one column, a row and one, one short of the end), and slice by slice with the clamp on the
 * last slice. */
static void check_inplace(const geo *g, const dc_gemm_kernel *k, int mode) {
    const dc_conv_shape s = shape_of(g);
    const size_t depth = depth_of(&s), plane = s.out_h * s.out_w;
    const size_t y_len = s.out_channels * plane, mr = k->mr;
    dc_engine_force_inplace(mode);
    if (!dc_engine_uses_inplace(&s, k)) {
        fail_msg("%s (%s): the path is not taken", g->name, k->name);
    }
    check_driver(g, k, true);
    check_driver(g, k, false);
    tu_rng rng;
    tu_rng_seed(&rng, 300 + (uint64_t)k->isa);
    float *x = tu_alloc(s.in_channels * s.height * s.width * sizeof(float));
    float *w = tu_alloc(s.out_channels * depth * sizeof(float));
    float *b = tu_alloc(s.out_channels * sizeof(float));
    tu_fill_int(&rng, x, s.in_channels * s.height * s.width, -3, 3);
    tu_fill_int(&rng, w, s.out_channels * depth, -3, 3);
    tu_fill_int(&rng, b, s.out_channels, -20, 20);
    size_t len, scratch_len;
    assert_true(dc_engine_packed_floats(&s, k, &len));
    assert_true(dc_engine_scratch_floats(&s, k, plane, &scratch_len));
    float *packed = tu_alloc(len * sizeof(float));
    /* NaN everywhere at first: a lane read from scratch the path did not fill would show */
    float *scratch = tu_alloc(scratch_len * sizeof(float));
    memset(scratch, 0xFF, scratch_len * sizeof(float));
    float *y_pan = tu_alloc(y_len * sizeof(float));
    float *y_rows = tu_alloc(y_len * sizeof(float));
    double *want = tu_alloc(y_len * sizeof(double));
    dc_engine_pack_a(&s, k, w, packed);
    int_conv(&s, x, w, b, want);
    const dc_engine_clamp cl = {-40.0f, 45.0f};
    for (size_t i = 0; i < y_len; ++i) {
        want[i] = want[i] < cl.lo ? cl.lo : want[i] > cl.hi ? cl.hi : want[i];
    }
    dc_engine_force_inplace(0);
    inplace_range(&s, k, x, packed, b, y_pan, scratch, 0, plane, &cl);
    assert_int_equal(tu_count_mismatches("panels", y_pan, want, y_len, 0.0, 0.0), 0);

    dc_engine_force_inplace(mode);
    memset(y_rows, 0xFF, y_len * sizeof(float));
    inplace_range(&s, k, x, packed, b, y_rows, scratch, 0, plane, &cl);
    assert_memory_equal(y_pan, y_rows, y_len * sizeof(float));

    size_t cuts[] = {0, 1, s.out_w + 1, plane - 1, plane};
    for (size_t i = 1; i < 5; ++i) { /* tiny planes: keep the cuts in order */
        cuts[i] = cuts[i] < cuts[i - 1] ? cuts[i - 1] : cuts[i] > plane ? plane : cuts[i];
    }
    memset(y_rows, 0xFF, y_len * sizeof(float));
    for (size_t i = 0; i < 4; ++i) {
        inplace_range(&s, k, x, packed, b, y_rows, scratch, cuts[i], cuts[i + 1], &cl);
    }
    assert_memory_equal(y_pan, y_rows, y_len * sizeof(float));

    /* slices, later ones adding to y, over two bands */
    memset(y_rows, 0xFF, y_len * sizeof(float));
    for (size_t p0 = 0; p0 < depth; p0 += DC_ENGINE_KC) {
        const size_t p1 = depth - p0 < DC_ENGINE_KC ? depth : p0 + DC_ENGINE_KC;
        const size_t half = plane / 2 + 1 < plane ? plane / 2 + 1 : plane;
        dc_engine_conv_clamped(&s, k, x, packed, depth * mr, 0, b, y_rows, scratch, 0, half, p0,
                               p1, p1 == depth ? &cl : NULL);
        dc_engine_conv_clamped(&s, k, x, packed, depth * mr, 0, b, y_rows, scratch, half, plane,
                               p0, p1, p1 == depth ? &cl : NULL);
    }
    assert_memory_equal(y_pan, y_rows, y_len * sizeof(float));
    dc_engine_force_inplace(-1);
    free(want);
    free(y_rows);
    free(y_pan);
    free(scratch);
    free(packed);
    free(b);
    free(w);
    free(x);
}

static void run_inplace_tests(dc_isa isa) {
    const dc_gemm_kernel *k = kernel_or_skip(isa);
    for (size_t i = 0; i < sizeof inplace_geos / sizeof inplace_geos[0]; ++i) {
        check_inplace(&inplace_geos[i], k, 1);
        if (isa == DC_ISA_AVX512) {
            check_inplace(&inplace_geos[i], k, 2);
        }
    }
}

static void test_inplace_baseline(void **state) {
    (void)state;
    run_inplace_tests(DC_ISA_BASELINE);
}
static void test_inplace_avx2(void **state) {
    (void)state;
    run_inplace_tests(DC_ISA_AVX2);
}
static void test_inplace_avx512(void **state) {
    (void)state;
    run_inplace_tests(DC_ISA_AVX512);
}

/* Shapes outside the path are refused even when it is forced, and still computed right. */
static void test_inplace_refused(void **state) {
    (void)state;
    dc_engine_force_inplace(1);
    for (int isa = 0; isa <= DC_ISA_AVX512; ++isa) {
        const dc_gemm_kernel *k = dc_gemm_kernel_for((dc_isa)isa);
        for (size_t i = 0; k != NULL && i < sizeof inplace_refused / sizeof inplace_refused[0]; ++i) {
            const dc_conv_shape s = shape_of(&inplace_refused[i]);
            assert_false(dc_engine_inplace_possible(&s, k));
            assert_false(dc_engine_uses_inplace(&s, k));
            check_driver(&inplace_refused[i], k, true);
        }
    }
    dc_engine_force_inplace(0);
    const dc_conv_shape s = shape_of(&inplace_geos[0]);
    assert_false(dc_engine_uses_inplace(&s, dc_gemm_select()));
    dc_engine_force_inplace(-1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_and_force),
        cmocka_unit_test(test_tile_baseline),
        cmocka_unit_test(test_tile_avx2),
        cmocka_unit_test(test_tile_avx512),
        cmocka_unit_test(test_tile_baseline_channels),
        cmocka_unit_test(test_tile_avx512_channels),
        cmocka_unit_test(test_pack_rows),
        cmocka_unit_test(test_pack_a),
        cmocka_unit_test(test_pack_b),
        cmocka_unit_test(test_driver_baseline),
        cmocka_unit_test(test_driver_avx2),
        cmocka_unit_test(test_driver_avx512),
        cmocka_unit_test(test_driver_baseline_channels),
        cmocka_unit_test(test_driver_avx512_channels),
        cmocka_unit_test(test_rows_baseline),
        cmocka_unit_test(test_rows_avx2),
        cmocka_unit_test(test_rows_avx512),
        cmocka_unit_test(test_rows_baseline_channels),
        cmocka_unit_test(test_rows_avx512_channels),
        cmocka_unit_test(test_inplace_baseline),
        cmocka_unit_test(test_inplace_avx2),
        cmocka_unit_test(test_inplace_avx512),
        cmocka_unit_test(test_inplace_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
