/* Short deterministic training runs: the loss must fall below a stated value. A run that does
 * not learn (a sign error in a backward, a wrong optimiser step, batch norm mixing up samples)
 * stays near log(classes) and fails. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dynconv_train.h"

#define OK(expr) assert_int_equal((expr), DYNCONV_OK)

/* Spiral-like data that no linear classifier separates: class c is a noisy arc at angle
 * offset 2 pi c / 3, embedded in 8 features by a fixed random rotation. */
enum { SAMPLES = 192, FEAT = 8, HID = 32, CLS = 3, BATCH = 32, STEPS = 300 };

static void make_data(float *x, int32_t *y) {
    dct_rng rng;
    dct_rng_seed(&rng, 2024);
    float mix[FEAT][2];
    for (int f = 0; f < FEAT; ++f) {
        mix[f][0] = dct_rng_normal(&rng);
        mix[f][1] = dct_rng_normal(&rng);
    }
    for (int i = 0; i < SAMPLES; ++i) {
        const int c = i % CLS;
        const float t = dct_rng_uniform(&rng);
        const float angle = 3.0f * t + 2.0943951f * (float)c;
        const float r = 0.3f + t;
        const float a = r * cosf(angle) + 0.05f * dct_rng_normal(&rng);
        const float b = r * sinf(angle) + 0.05f * dct_rng_normal(&rng);
        for (int f = 0; f < FEAT; ++f) {
            x[i * FEAT + f] = mix[f][0] * a + mix[f][1] * b;
        }
        y[i] = c;
    }
}

/* linear -> batch norm -> ReLU -> linear -> softmax cross-entropy, SGD with momentum. */
static void mlp_loss_falls(void **state) {
    (void)state;
    static float x[SAMPLES * FEAT];
    static int32_t labels[SAMPLES];
    make_data(x, labels);

    static float w1[HID * FEAT], b1[HID], gamma[HID], beta[HID], w2[CLS * HID], b2[CLS];
    static float gw1[HID * FEAT], gb1[HID], ggamma[HID], gbeta[HID], gw2[CLS * HID], gb2[CLS];
    static float vw1[HID * FEAT], vb1[HID], vgamma[HID], vbeta[HID], vw2[CLS * HID], vb2[CLS];
    static float rm[HID], rv[HID];
    dct_rng rng;
    dct_rng_seed(&rng, 7);
    OK(dct_init_fan_in_uniform(&rng, w1, HID * FEAT, FEAT));
    OK(dct_init_fan_in_uniform(&rng, b1, HID, FEAT));
    OK(dct_init_fan_in_uniform(&rng, w2, CLS * HID, HID));
    OK(dct_init_fan_in_uniform(&rng, b2, CLS, HID));
    for (int i = 0; i < HID; ++i) {
        gamma[i] = 1.0f;
        rv[i] = 1.0f;
    }
    const dct_param params[] = {
        {w1, gw1, vw1, HID * FEAT, true}, {b1, gb1, vb1, HID, false},
        {gamma, ggamma, vgamma, HID, false}, {beta, gbeta, vbeta, HID, false},
        {w2, gw2, vw2, CLS * HID, true},  {b2, gb2, vb2, CLS, false}};
    const size_t num_params = sizeof params / sizeof *params;
    const dct_batchnorm2d bn = {HID, 1e-5f, 0.1f, gamma, beta, rm, rv};

    static float h[BATCH * HID], a[BATCH * HID], z[BATCH * CLS], dz[BATCH * CLS];
    static float da[BATCH * HID], dh[BATCH * HID], mean[HID], invstd[HID];
    float first = 0.0f, last_epoch = 0.0f;
    const int per_epoch = SAMPLES / BATCH;
    for (int step = 0; step < STEPS; ++step) {
        const int at = (step % per_epoch) * BATCH;
        const float *xb = x + at * FEAT;
        const int32_t *yb = labels + at;
        float loss;
        OK(dct_linear_forward(BATCH, FEAT, HID, xb, w1, b1, h));
        OK(dct_batchnorm2d_forward_train(&bn, BATCH, 1, 1, h, a, mean, invstd));
        OK(dct_relu_forward(BATCH * HID, a, a));
        OK(dct_linear_forward(BATCH, HID, CLS, a, w2, b2, z));
        OK(dct_softmax_cross_entropy(BATCH, CLS, z, yb, &loss, dz, NULL));
        OK(dct_linear_backward(BATCH, HID, CLS, a, w2, dz, da, gw2, gb2, 0));
        OK(dct_relu_backward(BATCH * HID, a, da, da));
        OK(dct_batchnorm2d_backward(&bn, BATCH, 1, 1, h, da, mean, invstd, dh, ggamma, gbeta, 0));
        OK(dct_linear_backward(BATCH, FEAT, HID, xb, w1, dh, NULL, gw1, gb1, 0));
        const dct_sgd sgd = {dct_linear_schedule(0.2f, 0.02f, step, STEPS), 0.9f, 1e-4f};
        OK(dct_sgd_step(&sgd, params, num_params));
        if (step == 0) {
            first = loss;
        }
        if (step >= STEPS - per_epoch) {
            last_epoch += loss / (float)per_epoch;
        }
    }
    printf("training loss: first step %.4f, mean of the last epoch %.4f\n", (double)first,
           (double)last_epoch);
    /* Chance level is log(3) = 1.10: the run starts there and must end far below. */
    assert_true(first > 0.9f);
    assert_true(last_epoch < 0.15f);

    /* Inference with the running statistics classifies the training set almost perfectly. */
    int64_t correct_total = 0;
    for (int at = 0; at < SAMPLES; at += BATCH) {
        float loss;
        int64_t correct;
        OK(dct_linear_forward(BATCH, FEAT, HID, x + at * FEAT, w1, b1, h));
        OK(dct_batchnorm2d_forward_eval(&bn, BATCH, 1, 1, h, h));
        OK(dct_relu_forward(BATCH * HID, h, h));
        OK(dct_linear_forward(BATCH, HID, CLS, h, w2, b2, z));
        OK(dct_softmax_cross_entropy(BATCH, CLS, z, labels + at, &loss, NULL, &correct));
        correct_total += correct;
    }
    printf("training accuracy in inference mode: %lld / %d\n", (long long)correct_total, SAMPLES);
    assert_true(correct_total >= SAMPLES * 95 / 100);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mlp_loss_falls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
