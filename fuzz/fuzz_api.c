/* Fuzz target: argument validation of the dynamic layers' API.
 *
 * The input chooses a layer kind, every hyper-parameter (small, interesting or raw 64-bit
 * values, so zero, negative, huge and overflowing sizes all come up), the temperature, the
 * flags, which pointers are NULL, the input size and a forward mode. An independent model of
 * the documented rules (docs/errors.md) predicts the status of create, reshape and forward;
 * the harness aborts when the library disagrees, writes an output on failure, or crashes.
 * Small valid layers also run a forward that is compared with the double-precision reference.
 *
 * The model computes in 128-bit integers, so it cannot overflow where the library must detect
 * overflow. Where the true requirement depends on the library's private workspace layout, it
 * accepts either success or DYNCONV_ERROR_SIZE_OVERFLOW inside a band of sizes. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dynconv/dynconv.h>

#include "reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef unsigned __int128 u128;

/* Arrays larger than this are never allocated by the harness: such layers are created with
 * borrowed weights and external workspaces, so the library allocates nothing big either. */
#define MAX_FLOATS ((u128)1 << 20)
/* Multiply-adds of the reference above which no forward is run. */
#define MAX_WORK ((u128)1 << 22)
#define SENTINEL_BITS 0x7fc0beefu

#define ST_OK DYNCONV_OK
#define ST_NULL DYNCONV_ERROR_NULL_POINTER
#define ST_ARG DYNCONV_ERROR_INVALID_ARGUMENT
#define ST_SHAPE DYNCONV_ERROR_INVALID_SHAPE
#define ST_OVERFLOW DYNCONV_ERROR_SIZE_OVERFLOW
#define ST_STATE DYNCONV_ERROR_INVALID_STATE
#define ST_SHORT DYNCONV_ERROR_INSUFFICIENT_WORKSPACE
#define ST_ALIGN DYNCONV_ERROR_MISALIGNED_WORKSPACE
/* "either success or overflow" */
#define ST_OK_OR_OVERFLOW 100

/* The case being run, printed when the library and the model disagree. */
static const int64_t *current_geometry;
static int64_t current_input[3];

static void report_case(void) {
    if (current_geometry != NULL) {
        fprintf(stderr, "fuzz_api: geometry");
        for (int i = 0; i < 13; ++i) {
            fprintf(stderr, " %lld", (long long)current_geometry[i]);
        }
        fprintf(stderr, "\n");
        fprintf(stderr, "fuzz_api: input %lld x %lld x %lld\n", (long long)current_input[0],
                (long long)current_input[1], (long long)current_input[2]);
    }
}

static void fail(const char *what, int got, int want) {
    report_case();
    fprintf(stderr, "fuzz_api: %s: status %d (%s), model expects %d\nmessage: %s\n", what, got,
            dynconv_status_string((dynconv_status)got), want, dynconv_last_error_message());
    abort();
}

static void check(const char *what, dynconv_status got, int want) {
    const bool ok = want == ST_OK_OR_OVERFLOW ? (got == ST_OK || got == ST_OVERFLOW)
                                              : (int)got == want;
    if (!ok) {
        fail(what, (int)got, want);
    }
    if (got != DYNCONV_OK && dynconv_last_error_message()[0] == '\0') {
        report_case();
        fprintf(stderr, "fuzz_api: %s failed without a message\n", what);
        abort();
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Reading the input                                                                        */

typedef struct reader {
    const uint8_t *p;
    size_t left;
} reader;

static uint8_t byte(reader *r) {
    if (r->left == 0) {
        return 0;
    }
    --r->left;
    return *r->p++;
}

static uint64_t raw64(reader *r) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
        v = v << 8 | byte(r);
    }
    return v;
}

/* Values near every boundary the rules have: zero, signs, INT_MAX, SIZE_MAX factors (so that
 * products land exactly on 2^64 - 1 or wrap to small numbers), 2^62, INT64 limits. */
static const int64_t interesting[] = {
    0, 1, -1, 2, 3, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1, INT32_MAX,
    (int64_t)INT32_MAX + 1, (int64_t)INT32_MAX + 2, UINT32_MAX, (int64_t)1 << 32,
    (int64_t)1 << 31, (int64_t)1 << 62, (int64_t)1 << 61, (int64_t)1 << 40, 46341, 65536,
    65537, 6700417, 1722007169, 1722007170, 10712350335, 6148914691236517205,
    6148914691236517206, 3074457345618258602, 4294967297, 1000000007, -2, -(INT64_C(1) << 32),
    65538, 281470681808895};

static int64_t size_value(reader *r) {
    const uint8_t sel = byte(r);
    if (sel < 160) {
        return (int64_t)(sel % 10) - 1; /* -1 .. 8: mostly valid small sizes */
    }
    if (sel < 232) {
        return interesting[(sel - 160) % (sizeof interesting / sizeof interesting[0])];
    }
    return (int64_t)raw64(r);
}

static float temperature_value(reader *r) {
    static const float table[] = {1.f,      0.5f,   2.f,      0.7f,      1e-45f,  FLT_MIN,
                                  FLT_MAX,  1e-3f,  1e30f,    0.f,       -0.f,    -1.f,
                                  NAN,      -NAN,   INFINITY, -INFINITY, 1e-38f, 30.f};
    const uint8_t sel = byte(r);
    if (sel < 240) {
        return table[sel % (sizeof table / sizeof table[0])];
    }
    const uint32_t bits = (uint32_t)raw64(r);
    float t;
    memcpy(&t, &bits, sizeof t);
    return t;
}

/* ---------------------------------------------------------------------------------------- */
/* The model                                                                                */

static u128 max128(u128 a, u128 b) { return a > b ? a : b; }

typedef struct layer_model {
    int64_t g[13];          /* conv2d geometry fields, in struct order */
    bool linear;
    u128 kernel_len;        /* C_out * C_in/g * kh * kw */
    u128 params;            /* total parameter floats */
    bool borrow, external;
} layer_model;

enum { CIN, COUT, KH, KW, SH, SW, PH, PW, DH, DW, GROUPS, KERNELS, HIDDEN };

/* Status of create for a geometry whose pointers are all valid. */
static int model_create(layer_model *m, float temperature, uint32_t flags, bool has_bias) {
    if ((flags & ~(uint32_t)(DYNCONV_FLAG_BORROW_WEIGHTS | DYNCONV_FLAG_EXTERNAL_WORKSPACE)) !=
        0) {
        return DYNCONV_ERROR_UNSUPPORTED;
    }
    if (!(temperature > 0.0f) || isinf(temperature)) {
        return ST_ARG;
    }
    const int64_t *g = m->g;
    for (int i = 0; i < 13; ++i) {
        const bool may_be_zero = i == PH || i == PW;
        if (g[i] < 0 || (g[i] == 0 && !may_be_zero)) {
            return ST_ARG;
        }
    }
    if (g[CIN] % g[GROUPS] != 0 || g[COUT] % g[GROUPS] != 0) {
        return ST_ARG;
    }
    /* Products of positive int64 values: at most 2^126 per step, and every step is compared
     * with SIZE_MAX before the next one multiplies again. */
    const u128 size_max = SIZE_MAX;
    const u128 depth0 = (u128)(g[CIN] / g[GROUPS]) * (u128)g[KH];
    if (depth0 > size_max) {
        return ST_OVERFLOW;
    }
    const u128 depth = depth0 * (u128)g[KW];
    if (depth > size_max) {
        return ST_OVERFLOW;
    }
    m->kernel_len = depth * (u128)g[COUT];
    if (m->kernel_len > size_max || (u128)g[DH] * (u128)(g[KH] - 1) > size_max ||
        (u128)g[DW] * (u128)(g[KW] - 1) > size_max ||
        2 * (u128)max128((u128)g[PH], (u128)g[PW]) > size_max) {
        return ST_OVERFLOW;
    }
    /* OpenBLAS indexes with int. */
    if (depth > INT_MAX || m->kernel_len > INT_MAX || (u128)g[CIN] > INT_MAX ||
        (u128)g[HIDDEN] > INT_MAX || (u128)g[KERNELS] > INT_MAX) {
        return ST_OVERFLOW;
    }
    const u128 k = (u128)g[KERNELS];
    const u128 counts[4] = {k * m->kernel_len, has_bias ? k * (u128)g[COUT] : 0,
                            (u128)g[HIDDEN] * (u128)g[CIN], k * (u128)g[HIDDEN]};
    m->params = (u128)g[HIDDEN] + k; /* room for the optional fc biases */
    for (int i = 0; i < 4; ++i) {
        if (counts[i] > size_max) {
            return ST_OVERFLOW;
        }
        m->params += counts[i];
    }
    /* The copy's bytes: each array rounded up to 64 bytes, as the header's alignment implies;
     * overflow is only possible within a few cache lines of SIZE_MAX. */
    if (!(flags & DYNCONV_FLAG_BORROW_WEIGHTS) && m->params * 4 + 6 * 64 > size_max) {
        return m->params * 4 > size_max ? ST_OVERFLOW : ST_OK_OR_OVERFLOW;
    }
    return ST_OK;
}

typedef struct shape_model {
    int64_t n, h, w;
    u128 out_h, out_w;
    u128 in_count, out_count;
    u128 ws_floats; /* upper estimate of the workspace */
} shape_model;

static int model_reshape(const layer_model *m, shape_model *s, int threads) {
    const int64_t *g = m->g;
    if (s->n <= 0 || s->h <= 0 || s->w <= 0) {
        return ST_ARG;
    }
    const u128 size_max = SIZE_MAX;
    const u128 padded_h = (u128)s->h + 2 * (u128)g[PH], padded_w = (u128)s->w + 2 * (u128)g[PW];
    if (padded_h > size_max || padded_w > size_max) {
        return ST_OVERFLOW;
    }
    /* The dilated kernel's extent, exactly: it may exceed 2^64 only if create allowed it. */
    const u128 span_h = (u128)g[DH] * (u128)(g[KH] - 1) + 1;
    const u128 span_w = (u128)g[DW] * (u128)(g[KW] - 1) + 1;
    if (span_h > padded_h || span_w > padded_w) {
        return ST_SHAPE;
    }
    s->out_h = (padded_h - span_h) / (u128)g[SH] + 1;
    s->out_w = (padded_w - span_w) / (u128)g[SW] + 1;
    const u128 n = (u128)s->n, cin = (u128)g[CIN], cout = (u128)g[COUT];
    /* Element and byte counts of input and output, step by step as they cannot overflow u128. */
    const u128 in_plane = (u128)s->h * (u128)s->w, out_plane = s->out_h * s->out_w;
    if (in_plane > size_max || out_plane > size_max) {
        return ST_OVERFLOW;
    }
    const u128 in_per_sample = cin * in_plane, out_per_sample = cout * out_plane;
    if (in_per_sample > size_max || out_per_sample > size_max) {
        return ST_OVERFLOW;
    }
    s->in_count = n * in_per_sample;
    s->out_count = n * out_per_sample;
    if (s->in_count > (u128)PTRDIFF_MAX / 4 || s->out_count > (u128)PTRDIFF_MAX / 4) {
        return ST_OVERFLOW;
    }
    if (n > INT_MAX || out_plane > INT_MAX) {
        return ST_OVERFLOW;
    }
    /* The workspace layout is the library's business. An upper estimate: per sample the pooled
     * values, hidden units and attention; per thread an aggregated kernel and bias and one
     * scratch (an im2col matrix, or a zero-padded input plane), plus alignment. Far below
     * SIZE_MAX the library must accept the shape; close to it, either answer. Every factor is
     * below 2^64 here, so the sums fit in 128 bits. */
    const u128 depth = m->kernel_len / cout;
    const u128 col = depth * out_plane;
    const u128 huge = (u128)1 << 100; /* clamps the padded plane so the sums cannot wrap */
    const u128 padded_plane = padded_h * padded_w; /* both < 2^64 */
    const u128 plane = (padded_plane < huge ? padded_plane : huge) + 8 * (u128)g[SW];
    const u128 scratch = col > plane ? col : plane;
    const u128 per_thread = m->kernel_len + cout + scratch + 4 * 64;
    s->ws_floats = n * (cin + (u128)g[HIDDEN] + (u128)g[KERNELS]) +
                   (u128)threads * per_thread + 4 * 64;
    return s->ws_floats * 4 < ((u128)1 << 60) ? ST_OK : ST_OK_OR_OVERFLOW;
}

/* ---------------------------------------------------------------------------------------- */
/* Driving the library                                                                      */

static void fill(float *p, size_t n, uint32_t seed) {
    uint32_t s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)((int32_t)(s >> 8) % 2001 - 1000) / 1000.0f; /* [-1, 1] in 0.001 steps */
    }
}

static float *array(u128 count, uint32_t seed) {
    float *p = malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
    if (p == NULL) {
        abort();
    }
    fill(p, (size_t)count, seed);
    return p;
}

static void set_sentinel(float *p, size_t n) {
    const uint32_t bits = SENTINEL_BITS;
    for (size_t i = 0; i < n; ++i) {
        memcpy(&p[i], &bits, sizeof bits);
    }
}

static void check_sentinel(const char *what, const float *p, size_t n) {
    const uint32_t bits = SENTINEL_BITS;
    for (size_t i = 0; i < n; ++i) {
        if (memcmp(&p[i], &bits, sizeof bits) != 0) {
            report_case();
            fprintf(stderr, "fuzz_api: %s wrote element %zu of an output although it failed\n",
                    what, i);
            abort();
        }
    }
}

/* Runs a forward that must succeed and compares it with the reference. */
static void check_forward_result(const layer_model *m, const shape_model *s, float temperature,
                                 const dynconv_conv2d_weights *w, const float *x, const float *y,
                                 const float *att) {
    const size_t k = (size_t)m->g[KERNELS];
    for (size_t r = 0; r < (size_t)s->n; ++r) {
        double sum = 0.0;
        for (size_t j = 0; j < k; ++j) {
            const float v = att[r * k + j];
            if (!(v >= 0.0f && v <= 1.0f)) {
                report_case();
                fprintf(stderr, "fuzz_api: attention[%zu][%zu] = %g\n", r, j, (double)v);
                abort();
            }
            sum += v;
        }
        if (fabs(sum - 1.0) > 1e-4) {
            report_case();
            fprintf(stderr, "fuzz_api: attention row %zu sums to %.9g\n", r, sum);
            abort();
        }
    }
    for (size_t i = 0; i < (size_t)s->out_count; ++i) {
        if (!isfinite(y[i])) {
            report_case();
            fprintf(stderr, "fuzz_api: output %zu is %g for finite data\n", i, (double)y[i]);
            abort();
        }
    }
    /* The attention's sensitivity grows as 1/T: compare values only at moderate temperatures. */
    if (!(temperature >= 0.25f && temperature <= 64.0f)) {
        return;
    }
    /* The reference indexes in int64 (o * stride - pad + tap * dilation): strides, paddings and
     * dilations the library accepts near 2^63 would overflow it. Those layers are still run
     * and checked above; their values are compared only up to 2^30. */
    for (int i = SH; i <= DW; ++i) {
        if (m->g[i] > ((int64_t)1 << 30)) {
            return;
        }
    }
    const dynconv_conv2d_geometry g = {m->g[0], m->g[1], m->g[2],  m->g[3],  m->g[4],
                                       m->g[5], m->g[6], m->g[7],  m->g[8],  m->g[9],
                                       m->g[10], m->g[11], m->g[12]};
    double *ref = malloc((size_t)s->out_count * sizeof(double));
    double *pi = malloc((size_t)s->n * k * sizeof(double));
    if (ref == NULL || pi == NULL) {
        abort();
    }
    ref_conv2d_forward(&g, w, (double)temperature, s->n, s->h, s->w, x, ref, pi);
    double scale = 1.0;
    for (size_t i = 0; i < (size_t)s->out_count; ++i) {
        scale = fmax(scale, fabs(ref[i]));
    }
    for (size_t i = 0; i < (size_t)s->out_count; ++i) {
        if (fabs((double)y[i] - ref[i]) > 1e-3 * scale) {
            report_case();
            fprintf(stderr, "fuzz_api: output %zu = %.9g, reference %.9g\n", i, (double)y[i],
                    ref[i]);
            abort();
        }
    }
    for (size_t i = 0; i < (size_t)s->n * k; ++i) {
        if (fabs((double)att[i] - pi[i]) > 1e-3) {
            report_case();
            fprintf(stderr, "fuzz_api: attention %zu = %.9g, reference %.9g\n", i,
                    (double)att[i], pi[i]);
            abort();
        }
    }
    free(ref);
    free(pi);
}

/* The layer is driven through one of the two APIs; the linear layer is a 1x1 conv2d of a 1x1
 * input, and the model treats it as such. */
typedef struct handle {
    bool linear;
    dynconv_conv2d *conv;
    dynconv_linear *lin;
} handle;

static dynconv_status do_create(handle *h, const dynconv_conv2d_geometry *g,
                                const dynconv_conv2d_weights *w, float t, uint32_t flags,
                                int null_sel) {
    if (!h->linear) {
        return dynconv_conv2d_create(null_sel == 1 ? NULL : g, null_sel == 2 ? NULL : w, t, flags,
                                     null_sel == 3 ? NULL : &h->conv);
    }
    const dynconv_linear_geometry lg = {g->in_channels, g->out_channels, g->num_kernels,
                                        g->hidden};
    const dynconv_linear_weights lw = {w->weight,     w->bias,       w->fc1_weight,
                                       w->fc1_bias,   w->fc2_weight, w->fc2_bias};
    return dynconv_linear_create(null_sel == 1 ? NULL : &lg, null_sel == 2 ? NULL : &lw, t,
                                 flags, null_sel == 3 ? NULL : &h->lin);
}

static dynconv_status do_reshape(handle *h, int64_t n, int64_t hh, int64_t ww, int64_t *oh,
                                 int64_t *ow, size_t *ws) {
    if (!h->linear) {
        return dynconv_conv2d_reshape(h->conv, n, hh, ww, oh, ow, ws);
    }
    return dynconv_linear_reshape(h->lin, n, ws);
}

static dynconv_status do_forward(handle *h, const float *x, float *y, float *att, void *ws,
                                 size_t ws_size) {
    if (!h->linear) {
        return dynconv_conv2d_forward(h->conv, x, y, att, ws, ws_size);
    }
    return dynconv_linear_forward(h->lin, x, y, att, ws, ws_size);
}

static void do_destroy(handle *h) {
    dynconv_conv2d_destroy(h->conv);
    dynconv_linear_destroy(h->lin);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size};
    layer_model m;
    memset(&m, 0, sizeof m);
    const uint8_t kind = byte(&r);
    m.linear = (kind & 1) != 0;
    const bool has_bias = (kind & 2) != 0, has_fc_bias = (kind & 4) != 0;
    const int null_sel = (kind >> 3) % 8; /* 1..3: a create argument, 4..6: a required array */
    const uint8_t forward_mode = byte(&r);

    if (m.linear) {
        /* in_features, out_features, K, hidden; the rest is a 1x1 pointwise kernel */
        const int64_t din = size_value(&r), dout = size_value(&r), k = size_value(&r),
                      hid = size_value(&r);
        const int64_t g[13] = {din, dout, 1, 1, 1, 1, 0, 0, 1, 1, 1, k, hid};
        memcpy(m.g, g, sizeof g);
    } else {
        for (int i = 0; i < 13; ++i) {
            m.g[i] = size_value(&r);
        }
    }
    const float temperature = temperature_value(&r);
    const uint8_t flag_byte = byte(&r);
    uint32_t flags = flag_byte & 3u;
    if (flag_byte & 0x80) {
        flags = (uint32_t)raw64(&r);
    }
    shape_model s = {size_value(&r), m.linear ? 1 : size_value(&r),
                     m.linear ? 1 : size_value(&r), 0, 0, 0, 0, 0};

    current_geometry = m.g;
    current_input[0] = s.n;
    current_input[1] = s.h;
    current_input[2] = s.w;
    int want = null_sel >= 1 && null_sel <= 6 ? ST_NULL : model_create(&m, temperature, flags,
                                                                       has_bias);
    /* Large layers: the harness cannot provide their weights, so they are borrowed (never
     * read before a forward, which is not run) and their workspace is external. */
    const bool small = want == ST_OK && m.params <= MAX_FLOATS;
    if (want == ST_OK && !small) {
        flags |= DYNCONV_FLAG_BORROW_WEIGHTS | DYNCONV_FLAG_EXTERNAL_WORKSPACE;
        want = model_create(&m, temperature, flags, has_bias);
    }
    static float dummy[16];
    float *weight = dummy, *bias = has_bias ? dummy : NULL, *fc1 = dummy,
          *fc1_b = has_fc_bias ? dummy : NULL, *fc2 = dummy, *fc2_b = has_fc_bias ? dummy : NULL;
    if (small) {
        const u128 k = (u128)m.g[KERNELS], hid = (u128)m.g[HIDDEN];
        weight = array(k * m.kernel_len, 1);
        bias = has_bias ? array(k * (u128)m.g[COUT], 2) : NULL;
        fc1 = array(hid * (u128)m.g[CIN], 3);
        fc1_b = has_fc_bias ? array(hid, 4) : NULL;
        fc2 = array(k * hid, 5);
        fc2_b = has_fc_bias ? array(k, 6) : NULL;
    }
    const dynconv_conv2d_geometry g = {m.g[0], m.g[1], m.g[2],  m.g[3],  m.g[4],
                                       m.g[5], m.g[6], m.g[7],  m.g[8],  m.g[9],
                                       m.g[10], m.g[11], m.g[12]};
    const dynconv_conv2d_weights w = {null_sel == 4 ? NULL : weight, bias,
                                      null_sel == 5 ? NULL : fc1,    fc1_b,
                                      null_sel == 6 ? NULL : fc2,    fc2_b};
    handle h = {m.linear, NULL, NULL};
    /* Linear layers name their four sizes first; the rest of the model is the same. */
    dynconv_status st = do_create(&h, &g, &w, temperature, flags, null_sel);
    check(m.linear ? "dynconv_linear_create" : "dynconv_conv2d_create", st, want);
    if (st != DYNCONV_OK) {
        if (h.conv != NULL || h.lin != NULL) {
            report_case();
            fprintf(stderr, "fuzz_api: a failed create wrote *out\n");
            abort();
        }
        goto out;
    }

    /* forward before any reshape */
    const bool external = (flags & DYNCONV_FLAG_EXTERNAL_WORKSPACE) != 0;
    if (forward_mode % 16 == 8) {
        float y[4];
        set_sentinel(y, 4);
        static float x[4];
        st = do_forward(&h, x, y, NULL, external ? (void *)dummy : NULL, 0);
        /* NULL workspace on an external handle is reported before the state. */
        check("forward before reshape", st, ST_STATE);
        check_sentinel("forward before reshape", y, 4);
    }

    /* 1 to 3 threads per handle: the forward's thread paths are fuzzed too. */
    const int threads = 1 + (forward_mode >> 4) % 3;
    st = h.linear ? dynconv_linear_set_num_threads(h.lin, threads)
                  : dynconv_conv2d_set_num_threads(h.conv, threads);
    check("set_num_threads", st, ST_OK);

    want = model_reshape(&m, &s, threads);
    if (want != ST_ARG && want != ST_SHAPE && want != ST_OVERFLOW && !external &&
        s.ws_floats > MAX_FLOATS * 4) {
        /* The handle would allocate a workspace this large; that is not what is tested. */
        goto out;
    }
    int64_t out_h = -7, out_w = -7;
    size_t ws_size = 7;
    st = do_reshape(&h, s.n, s.h, s.w, &out_h, &out_w, &ws_size);
    check(m.linear ? "dynconv_linear_reshape" : "dynconv_conv2d_reshape", st, want);
    if (st != DYNCONV_OK) {
        if (out_h != -7 || out_w != -7 || ws_size != 7) {
            report_case();
            fprintf(stderr, "fuzz_api: a failed reshape wrote its out-parameters\n");
            abort();
        }
        goto out;
    }
    if (!m.linear && ((u128)out_h != s.out_h || (u128)out_w != s.out_w)) {
        report_case();
        fprintf(stderr, "fuzz_api: reshape gives %lld x %lld, the formula %llu x %llu\n",
                (long long)out_h, (long long)out_w, (unsigned long long)s.out_h,
                (unsigned long long)s.out_w);
        abort();
    }

    const u128 work = s.out_count * (m.kernel_len / (u128)m.g[COUT]) +
                      s.in_count * (u128)m.g[HIDDEN] +
                      (u128)s.n * (u128)m.g[KERNELS] * m.kernel_len;
    if (!small || s.in_count > MAX_FLOATS || s.out_count > MAX_FLOATS ||
        ws_size > MAX_FLOATS * 64 || work > MAX_WORK) {
        goto out;
    }
    /* Forward: input and output share one allocation so that overlap can be provoked. */
    const size_t in_count = (size_t)s.in_count, out_count = (size_t)s.out_count;
    const size_t att_count = (size_t)s.n * (size_t)m.g[KERNELS];
    float *buf = malloc((in_count + out_count + att_count) * sizeof(float));
    unsigned char *ws_raw = malloc(ws_size + 2 * DYNCONV_WORKSPACE_ALIGNMENT);
    if (buf == NULL || ws_raw == NULL) {
        abort();
    }
    float *x = buf, *y = buf + in_count, *att = y + out_count;
    unsigned char *ws = ws_raw + (DYNCONV_WORKSPACE_ALIGNMENT -
                                  (uintptr_t)ws_raw % DYNCONV_WORKSPACE_ALIGNMENT);
    fill(x, in_count, 7);
    set_sentinel(y, out_count + att_count);
    const int mode = forward_mode % 8;
    void *wsp = external || mode == 1 ? ws : NULL;
    size_t wss = ws_size;
    int want_fwd = ST_OK;
    const float *xp = x;
    float *yp = y;
    switch (mode) {
    case 2: /* one byte short */
        if (ws_size > 0) {
            wsp = ws;
            wss = ws_size - 1;
            want_fwd = ST_SHORT;
        }
        break;
    case 3: /* misaligned by 4 bytes */
        wsp = ws + 4;
        want_fwd = ST_ALIGN;
        break;
    case 4:
        xp = NULL;
        want_fwd = ST_NULL;
        break;
    case 5: /* the output starts inside the input */
        yp = x + in_count / 2;
        want_fwd = ST_ARG;
        break;
    default:
        break;
    }
    if (mode != 4 && mode != 5 && external && wsp == NULL) {
        wsp = ws;
    }
    if (mode == 6 && external) {
        wsp = NULL;
        want_fwd = ST_NULL;
    }
    st = do_forward(&h, xp, yp, att, wsp, wss);
    check(m.linear ? "dynconv_linear_forward" : "dynconv_conv2d_forward", st, want_fwd);
    if (st != DYNCONV_OK) {
        if (mode != 5) {
            check_sentinel("forward", y, out_count + att_count);
        }
    } else {
        check_forward_result(&m, &s, temperature, &w, x, y, att);
    }
    free(ws_raw);
    free(buf);

out:
    current_geometry = NULL;
    do_destroy(&h);
    if (small) {
        free(weight);
        free(bias);
        free(fc1);
        free(fc1_b);
        free(fc2);
        free(fc2_b);
    }
    return 0;
}
