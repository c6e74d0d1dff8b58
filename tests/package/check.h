/* Shared by the three consumers of the installed packages: one small dynamic convolution run
 * through the API, compared with a direct double-precision computation written out here (the
 * consumers see only the installed files, not the project's test helpers). The API is reached
 * through a table of function pointers, so that the dlopen consumer runs the same check. */
#ifndef DYNCONV_PACKAGE_CHECK_H
#define DYNCONV_PACKAGE_CHECK_H

#include <math.h>
#include <stdio.h>

#include <dynconv/dynconv.h>

typedef struct api {
    dynconv_status (*create)(const dynconv_conv2d_geometry *, const dynconv_conv2d_weights *,
                             float, uint32_t, dynconv_conv2d **);
    dynconv_status (*reshape)(dynconv_conv2d *, int64_t, int64_t, int64_t, int64_t *, int64_t *,
                              size_t *);
    dynconv_status (*forward)(dynconv_conv2d *, const float *, float *, float *, void *, size_t);
    void (*destroy)(dynconv_conv2d *);
    const char *(*status_string)(dynconv_status);
    const char *(*last_error_message)(void);
    unsigned (*version_number)(void);
} api;

/* 2 -> 3 channels, 3x3, padding 1, K = 2, hidden 2, T = 0.5; batch 2 of 4x5. */
enum { CI = 2, CO = 3, KS = 3, KN = 2, HI = 2, NB = 2, IH = 4, IW = 5 };

/* Deterministic values in [-1, 1] with few bits, distinct per array. */
static float value(int array, int i) {
    return (float)((i * 7 + array * 13) % 17 - 8) / 8.0f;
}

static int run_check(const api *a, const char *who) {
    static float weight[KN * CO * CI * KS * KS], bias[KN * CO], fc1[HI * CI], fc2[KN * HI];
    static float x[NB * CI * IH * IW], y[NB * CO * IH * IW], att[NB * KN];
    float *arrays[] = {weight, bias, fc1, fc2, x};
    const int lengths[] = {KN * CO * CI * KS * KS, KN * CO, HI * CI, KN * HI, NB * CI * IH * IW};
    for (int k = 0; k < 5; ++k) {
        for (int i = 0; i < lengths[k]; ++i) {
            arrays[k][i] = value(k, i);
        }
    }
    if (a->version_number() / 10000 != DYNCONV_VERSION_MAJOR) {
        fprintf(stderr, "%s: library version %u, header major %d\n", who, a->version_number(),
                DYNCONV_VERSION_MAJOR);
        return 1;
    }
    const dynconv_conv2d_geometry g = {CI, CO, KS, KS, 1, 1, 1, 1, 1, 1, 1, KN, HI};
    const dynconv_conv2d_weights w = {weight, bias, fc1, NULL, fc2, NULL};
    const float temperature = 0.5f;
    dynconv_conv2d *layer = NULL;
    int64_t oh = 0, ow = 0;
    dynconv_status st = a->create(&g, &w, temperature, 0, &layer);
    if (st == DYNCONV_OK) {
        st = a->reshape(layer, NB, IH, IW, &oh, &ow, NULL);
    }
    if (st == DYNCONV_OK) {
        st = a->forward(layer, x, y, att, NULL, 0);
    }
    a->destroy(layer);
    if (st != DYNCONV_OK || oh != IH || ow != IW) {
        fprintf(stderr, "%s: %s: %s\n", who, a->status_string(st), a->last_error_message());
        return 1;
    }

    /* The definition, directly. */
    double max_err = 0.0, max_abs = 0.0;
    for (int n = 0; n < NB; ++n) {
        const float *xn = x + n * CI * IH * IW;
        double s[CI], u[HI], z[KN], pi[KN], zmax = -INFINITY, sum = 0.0;
        for (int c = 0; c < CI; ++c) {
            s[c] = 0.0;
            for (int i = 0; i < IH * IW; ++i) {
                s[c] += xn[c * IH * IW + i];
            }
            s[c] /= IH * IW;
        }
        for (int j = 0; j < HI; ++j) {
            u[j] = 0.0;
            for (int c = 0; c < CI; ++c) {
                u[j] += (double)fc1[j * CI + c] * s[c];
            }
            u[j] = u[j] > 0.0 ? u[j] : 0.0;
        }
        for (int k = 0; k < KN; ++k) {
            z[k] = 0.0;
            for (int j = 0; j < HI; ++j) {
                z[k] += (double)fc2[k * HI + j] * u[j];
            }
            z[k] /= temperature;
            zmax = z[k] > zmax ? z[k] : zmax;
        }
        for (int k = 0; k < KN; ++k) {
            pi[k] = exp(z[k] - zmax);
            sum += pi[k];
        }
        for (int k = 0; k < KN; ++k) {
            pi[k] /= sum;
            max_err = fmax(max_err, fabs(att[n * KN + k] - pi[k]));
        }
        for (int o = 0; o < CO; ++o) {
            for (int r = 0; r < IH; ++r) {
                for (int q = 0; q < IW; ++q) {
                    double acc = 0.0;
                    for (int k = 0; k < KN; ++k) {
                        acc += pi[k] * bias[k * CO + o];
                    }
                    for (int c = 0; c < CI; ++c) {
                        for (int i = 0; i < KS; ++i) {
                            for (int j = 0; j < KS; ++j) {
                                const int rr = r + i - 1, qq = q + j - 1;
                                if (rr < 0 || rr >= IH || qq < 0 || qq >= IW) {
                                    continue;
                                }
                                double wk = 0.0;
                                for (int k = 0; k < KN; ++k) {
                                    wk += pi[k] *
                                          weight[(((k * CO + o) * CI + c) * KS + i) * KS + j];
                                }
                                acc += wk * xn[(c * IH + rr) * IW + qq];
                            }
                        }
                    }
                    const double got = y[((n * CO + o) * IH + r) * IW + q];
                    max_err = fmax(max_err, fabs(got - acc));
                    max_abs = fmax(max_abs, fabs(acc));
                }
            }
        }
    }
    /* A zero result would match a broken library that wrote nothing. */
    if (!(max_err <= 1e-4) || !(max_abs > 0.1)) {
        fprintf(stderr, "%s: max error %g (max |y| %g)\n", who, max_err, max_abs);
        return 1;
    }
    printf("%s: dynamic convolution matches the direct computation (max error %.2g)\n", who,
           max_err);
    return 0;
}

#endif
