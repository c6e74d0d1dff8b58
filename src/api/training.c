/* Training helpers that are part of the layer API: the temperature schedule and the usual
 * parameter initialisation. */
#include "internal.h"

#include "tensor.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Temperature schedule                                                                       */
/* ------------------------------------------------------------------------------------------ */

static float scheduled_temperature(const dynconv_conv2d *l) {
    if (l->step >= l->steps) {
        return l->t1; /* exactly t1 at the end, whatever the rounding on the way */
    }
    const double frac = (double)l->step / (double)l->steps;
    return (float)((double)l->t0 + ((double)l->t1 - (double)l->t0) * frac);
}

static dynconv_status set_schedule_named(const char *fn, dynconv_conv2d *layer, float t0,
                                         float t1, int64_t steps) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    TRY(dc_check_temperature(fn, t0));
    TRY(dc_check_temperature(fn, t1));
    if (steps < 0) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: steps must be >= 0, got %lld", fn,
                       (long long)steps);
    }
    layer->scheduled = true;
    layer->t0 = t0;
    layer->t1 = t1;
    layer->steps = steps;
    layer->step = 0;
    layer->temperature = scheduled_temperature(layer);
    return DYNCONV_OK;
}

static dynconv_status step_named(const char *fn, dynconv_conv2d *layer, float *temperature) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    if (!layer->scheduled) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE,
                       "%s: no temperature schedule: call set_temperature_schedule first", fn);
    }
    if (layer->step < layer->steps) {
        layer->step += 1;
    }
    layer->temperature = scheduled_temperature(layer);
    if (temperature != NULL) {
        *temperature = layer->temperature;
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_set_temperature_schedule(dynconv_conv2d *layer, float t0, float t1,
                                                       int64_t steps) {
    return set_schedule_named(__func__, layer, t0, t1, steps);
}

dynconv_status dynconv_conv2d_step_temperature(dynconv_conv2d *layer, float *temperature) {
    return step_named(__func__, layer, temperature);
}

dynconv_status dynconv_linear_set_temperature_schedule(dynconv_linear *layer, float t0, float t1,
                                                       int64_t steps) {
    return set_schedule_named(__func__, layer != NULL ? layer->conv : NULL, t0, t1, steps);
}

dynconv_status dynconv_linear_step_temperature(dynconv_linear *layer, float *temperature) {
    return step_named(__func__, layer != NULL ? layer->conv : NULL, temperature);
}

/* ------------------------------------------------------------------------------------------ */
/* Initialisation                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* splitmix64: a tiny generator whose every seed gives a good stream. Each array gets its own
 * stream (seed mixed with the array's index), so skipping one array leaves the others alone. */
typedef struct init_rng {
    uint64_t state;
} init_rng;

static uint64_t rng_next(init_rng *r) { return dc_splitmix64(&r->state); }

static init_rng rng_for(uint64_t seed, uint64_t array) {
    init_rng r = {seed};
    r.state = rng_next(&r) ^ (array * 0xD1B54A32D192ED03ull);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_unit(init_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static void fill_uniform(float *p, size_t count, double bound, init_rng r) {
    for (size_t i = 0; i < count; ++i) {
        float v = (float)(bound * (2.0 * rng_unit(&r) - 1.0));
        p[i] = v >= (float)bound ? nextafterf((float)bound, 0.0f) : v; /* keep [-b, b) */
    }
}

/* Normal(0, std^2) by Box-Muller (1 - u keeps the logarithm's argument in (0, 1]). */
static void fill_normal(float *p, size_t count, double std, init_rng r) {
    const double two_pi = 6.283185307179586476925286766559;
    for (size_t i = 0; i < count; i += 2) {
        const double radius = sqrt(-2.0 * log(1.0 - rng_unit(&r)));
        const double angle = two_pi * rng_unit(&r);
        p[i] = (float)(std * radius * cos(angle));
        if (i + 1 < count) {
            p[i + 1] = (float)(std * radius * sin(angle));
        }
    }
}

static dynconv_status init_named(const char *fn, const dynconv_conv2d_geometry *geometry,
                                 uint64_t seed, uint32_t flags, float *weight,
                                 float *bias, float *fc1_weight, float *fc1_bias,
                                 float *fc2_weight, float *fc2_bias) {
    if ((flags & ~(uint32_t)DYNCONV_INIT_BIAS_UNIFORM) != 0) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)(flags & ~(uint32_t)DYNCONV_INIT_BIAS_UNIFORM));
    }
    dynconv_conv2d l;
    memset(&l, 0, sizeof l);
    TRY(dc_read_geometry(fn, geometry, &l));
    size_t n_weight, n_bias, n_fc1, n_fc2;
    if (!dc_mul_size(l.core.kernels, l.core.kernel_len, &n_weight) ||
        !dc_mul_size(l.core.kernels, l.core.shape.out_channels, &n_bias) ||
        !dc_mul_size(l.core.hidden, l.core.shape.in_channels, &n_fc1) ||
        !dc_mul_size(l.core.kernels, l.core.hidden, &n_fc2)) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW, "%s: parameter sizes overflow", fn);
    }
    const size_t fan_in = l.core.kernel_len / l.core.shape.out_channels; /* C_in/g * kh * kw */
    const double bound = 1.0 / sqrt((double)fan_in);
    if (weight != NULL) {
        fill_uniform(weight, n_weight, bound, rng_for(seed, 0));
    }
    if (bias != NULL) {
        if (flags & DYNCONV_INIT_BIAS_UNIFORM) {
            fill_uniform(bias, n_bias, bound, rng_for(seed, 1));
        } else {
            memset(bias, 0, n_bias * sizeof(float));
        }
    }
    /* Kaiming-normal, fan_out mode, ReLU gain sqrt(2): fan_out of a 1x1 layer is its output
     * count. */
    if (fc1_weight != NULL) {
        fill_normal(fc1_weight, n_fc1, sqrt(2.0 / (double)l.core.hidden), rng_for(seed, 2));
    }
    if (fc1_bias != NULL) {
        memset(fc1_bias, 0, l.core.hidden * sizeof(float));
    }
    if (fc2_weight != NULL) {
        fill_normal(fc2_weight, n_fc2, sqrt(2.0 / (double)l.core.kernels), rng_for(seed, 3));
    }
    if (fc2_bias != NULL) {
        memset(fc2_bias, 0, l.core.kernels * sizeof(float));
    }
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_init_parameters(const dynconv_conv2d_geometry *geometry,
                                              uint64_t seed, uint32_t flags, float *weight,
                                              float *bias, float *fc1_weight, float *fc1_bias,
                                              float *fc2_weight, float *fc2_bias) {
    if (geometry == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: geometry is NULL", __func__);
    }
    return init_named(__func__, geometry, seed, flags, weight, bias, fc1_weight, fc1_bias,
                      fc2_weight, fc2_bias);
}

dynconv_status dynconv_linear_init_parameters(const dynconv_linear_geometry *geometry,
                                              uint64_t seed, uint32_t flags, float *weight,
                                              float *bias, float *fc1_weight, float *fc1_bias,
                                              float *fc2_weight, float *fc2_bias) {
    static const char fn[] = "dynconv_linear_init_parameters";
    if (geometry == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: geometry is NULL", fn);
    }
    dynconv_conv2d_geometry g;
    TRY(dc_linear_as_conv2d(fn, geometry, &g));
    return init_named(fn, &g, seed, flags, weight, bias, fc1_weight, fc1_bias, fc2_weight,
                      fc2_bias);
}
