/*
 * train_dynamic_cnn: trains a small dynamic CNN end to end in C, then the same network with
 * static convolutions (K = 1), and compares them.
 *
 * Data: 16x16 grey images generated here, deterministically from the seed (no downloads).
 * Six classes of texture patches (stripes in four orientations, a ring, a checkerboard) drawn
 * in a random window, with a random background level, a random contrast and polarity (dark on
 * light or light on dark) and Gaussian noise. Polarity and background change the whole image,
 * which is what the attention of a dynamic layer sees (its global average pool), so the layer
 * can pick kernels per sample.
 *
 * Network (as in the paper, every dynamic convolution is followed by BatchNorm and ReLU), with
 * C = --width (default 4: a light network, where the paper expects dynamic kernels to help):
 *   dynconv 3x3  1 -> C,  BN, ReLU, maxpool 2     16x16 -> 8x8
 *   dynconv 3x3  C -> 2C, BN, ReLU, maxpool 2      8x8 -> 4x4
 *   dynconv 3x3 2C -> 4C, BN, ReLU, global average pool
 *   linear 4C -> 6, softmax cross-entropy
 * Trained with SGD (momentum 0.9, weight decay 5e-4, learning rate decaying linearly); the
 * softmax temperature of the attention is annealed linearly from 30 to 1, stepped every
 * iteration, over the first epochs.
 *
 *   train_dynamic_cnn [--epochs N] [--anneal-epochs N] [--train N] [--test N] [--batch N]
 *                     [--kernels K] [--width C] [--lr X] [--seed S] [--only-dynamic]
 *                     [--max-final-loss X]
 * --max-final-loss makes the exit status 1 when the dynamic network's mean training loss over
 * the last epoch is not below X (used as a test).
 */
#define _POSIX_C_SOURCE 200809L

#include <dynconv/dynconv.h>

#include "dynconv_train.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { IMG = 16, CLASSES = 6, BLOCKS = 3 };

/* Standard deviation of the pixel noise; strokes have contrast 1 to 2. */
#define NOISE 0.8f

static const char *const class_names[CLASSES] = {"stripes -", "stripes |", "stripes /",
                                                 "stripes \\", "ring", "checker"};

typedef struct options {
    int epochs, anneal_epochs, train, test, batch, kernels, width, only_dynamic;
    float lr, max_final_loss;
    uint64_t seed;
} options;

/* ---- errors ---------------------------------------------------------------------------------- */

static void die_status(const char *what, dynconv_status st, const char *message) {
    fprintf(stderr, "train_dynamic_cnn: %s failed: %s: %s\n", what, dynconv_status_string(st),
            message);
    exit(2);
}

#define CHECK_DC(expr)                                                   \
    do {                                                                 \
        dynconv_status st_ = (expr);                                     \
        if (st_ != DYNCONV_OK) {                                         \
            die_status(#expr, st_, dynconv_last_error_message());        \
        }                                                                \
    } while (0)

#define CHECK_DCT(expr)                                                  \
    do {                                                                 \
        dynconv_status st_ = (expr);                                     \
        if (st_ != DYNCONV_OK) {                                         \
            die_status(#expr, st_, dct_last_error_message());            \
        }                                                                \
    } while (0)

static void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count, size);
    if (p == NULL) {
        fprintf(stderr, "train_dynamic_cnn: out of memory (%zu x %zu bytes)\n", count, size);
        exit(2);
    }
    return p;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- data ------------------------------------------------------------------------------------ */

/* One image of class `label` into img[IMG * IMG]. */
static void draw_sample(dct_rng *rng, int label, float *img) {
    /* Light strokes on a dark background, or dark strokes on a light one. */
    const float polarity = dct_rng_uniform(rng) < 0.5f ? -1.0f : 1.0f;
    const float background = -polarity * (0.2f + 0.8f * dct_rng_uniform(rng));
    const float contrast = polarity * (1.0f + 1.0f * dct_rng_uniform(rng));
    const int size = 8 + (int)dct_rng_below(rng, 7);              /* window 8..14 pixels */
    const int top = (int)dct_rng_below(rng, (uint64_t)(IMG - size + 1));
    const int left = (int)dct_rng_below(rng, (uint64_t)(IMG - size + 1));
    const float period = 3.0f + 3.0f * dct_rng_uniform(rng);      /* 3..6 pixels */
    const float phase = 6.2831853f * dct_rng_uniform(rng);
    const float two_pi = 6.2831853f;
    for (int r = 0; r < IMG; ++r) {
        for (int c = 0; c < IMG; ++c) {
            float v = 0.0f;
            if (r >= top && r < top + size && c >= left && c < left + size) {
                const float y = (float)(r - top), x = (float)(c - left);
                switch (label) {
                case 0: v = sinf(two_pi * y / period + phase); break;
                case 1: v = sinf(two_pi * x / period + phase); break;
                case 2: v = sinf(two_pi * (x + y) / (1.41421356f * period) + phase); break;
                case 3: v = sinf(two_pi * (x - y) / (1.41421356f * period) + phase); break;
                case 4: {
                    const float half = 0.5f * (float)(size - 1);
                    const float d = sqrtf((x - half) * (x - half) + (y - half) * (y - half));
                    v = fabsf(d - 0.7f * half) < 1.0f ? 1.0f : 0.0f;
                    break;
                }
                default: {
                    const int cell = (int)(period * 0.5f + 0.5f);
                    v = (((int)x / cell + (int)y / cell) % 2) ? 1.0f : 0.0f;
                    break;
                }
                }
                if (label < 4) {
                    v = v > 0.3f ? 1.0f : 0.0f; /* stripes as strokes about a third wide */
                }
            }
            img[r * IMG + c] = background + contrast * v + NOISE * dct_rng_normal(rng);
        }
    }
}

typedef struct dataset {
    int count;
    float *images;   /* [count, 1, IMG, IMG] */
    int32_t *labels; /* [count] */
} dataset;

static dataset make_dataset(int count, uint64_t seed) {
    dataset d = {count, xcalloc((size_t)count * IMG * IMG, sizeof(float)),
                 xcalloc((size_t)count, sizeof(int32_t))};
    dct_rng rng;
    dct_rng_seed(&rng, seed);
    for (int i = 0; i < count; ++i) {
        d.labels[i] = (int32_t)(i % CLASSES);
        draw_sample(&rng, d.labels[i], d.images + (size_t)i * IMG * IMG);
    }
    return d;
}

/* ---- network --------------------------------------------------------------------------------- */

/* One parameter array with its gradient and momentum buffer. */
typedef struct tensor3 {
    float *value, *grad, *velocity;
    size_t count;
} tensor3;

static tensor3 make_param(size_t count) {
    tensor3 t = {xcalloc(count, sizeof(float)), xcalloc(count, sizeof(float)),
                 xcalloc(count, sizeof(float)), count};
    return t;
}

static void free_param(tensor3 *t) {
    free(t->value);
    free(t->grad);
    free(t->velocity);
}

/* dynconv 3x3 (padding 1) -> BatchNorm -> ReLU [-> maxpool 2]. */
typedef struct block {
    int64_t cin, cout, size, out_size; /* input and output spatial sizes */
    bool pool;
    dynconv_conv2d *conv;
    dynconv_conv2d_geometry geometry;
    tensor3 weight, fc1, fc2, fc2_bias, gamma, beta;
    float *running_mean, *running_var, *save_mean, *save_invstd;
    /* Activations for the batch: conv output, BN + ReLU output, pooled output and argmax. */
    float *conv_out, *act, *pooled;
    int64_t *argmax;
    float *attention; /* [N, K]: the attention of the last forward that asked for it */
    /* Gradients of the same tensors (conv_out's also serves BN's). */
    float *d_conv_out, *d_act;
} block;

typedef struct network {
    int kernels;
    block blocks[BLOCKS];
    tensor3 fc_weight, fc_bias;
    float *features, *logits, *d_features, *d_logits;
    float *d_input[BLOCKS]; /* dL/d(input of block b), b > 0 */
} network;

static size_t act_count(const block *b, int64_t batch) {
    return (size_t)(batch * b->cout * b->size * b->size);
}

static void block_init(block *b, int64_t cin, int64_t cout, int64_t size, bool pool, int kernels,
                       int64_t batch, uint64_t seed) {
    b->cin = cin;
    b->cout = cout;
    b->size = size;
    b->pool = pool;
    b->out_size = pool ? size / 2 : size;
    /* The attention's hidden size of the common re-implementation (reduction 4), at least K. */
    int64_t hidden = cin / 4 + 1;
    hidden = hidden < kernels ? kernels : hidden;
    const dynconv_conv2d_geometry g = {
        .in_channels = cin, .out_channels = cout, .kernel_h = 3, .kernel_w = 3,
        .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1, .dilation_h = 1, .dilation_w = 1,
        .groups = 1, .num_kernels = kernels, .hidden = hidden};
    b->geometry = g;
    const size_t k = (size_t)kernels;
    b->weight = make_param(k * (size_t)(cout * cin * 9));
    b->fc1 = make_param((size_t)(hidden * cin));
    b->fc2 = make_param(k * (size_t)hidden);
    b->fc2_bias = make_param(k);
    b->gamma = make_param((size_t)cout);
    b->beta = make_param((size_t)cout);
    /* The convolution needs no bias of its own: the batch norm after it removes any constant. */
    CHECK_DC(dynconv_conv2d_init_parameters(&g, seed, 0, b->weight.value, NULL, b->fc1.value, NULL,
                                            b->fc2.value, b->fc2_bias.value));
    b->running_mean = xcalloc((size_t)cout, sizeof(float));
    b->running_var = xcalloc((size_t)cout, sizeof(float));
    for (int64_t c = 0; c < cout; ++c) {
        b->gamma.value[c] = 1.0f;
        b->running_var[c] = 1.0f;
    }
    b->save_mean = xcalloc((size_t)cout, sizeof(float));
    b->save_invstd = xcalloc((size_t)cout, sizeof(float));
    const dynconv_conv2d_weights w = {b->weight.value, NULL, b->fc1.value, NULL, b->fc2.value,
                                      b->fc2_bias.value};
    /* Borrowed weights: the optimiser updates the arrays in place and the handle sees it. */
    CHECK_DC(dynconv_conv2d_create(&g, &w, 1.0f, DYNCONV_FLAG_BORROW_WEIGHTS, &b->conv));
    const size_t acts = act_count(b, batch);
    b->conv_out = xcalloc(acts, sizeof(float));
    b->act = xcalloc(acts, sizeof(float));
    b->d_conv_out = xcalloc(acts, sizeof(float));
    b->d_act = xcalloc(acts, sizeof(float));
    const size_t pooled = (size_t)(batch * cout * b->out_size * b->out_size);
    b->pooled = pool ? xcalloc(pooled, sizeof(float)) : NULL;
    b->attention = xcalloc((size_t)(batch * kernels), sizeof(float));
    b->argmax = pool ? xcalloc(pooled, sizeof(int64_t)) : NULL;
}

static void block_free(block *b) {
    dynconv_conv2d_destroy(b->conv);
    tensor3 *params[] = {&b->weight, &b->fc1, &b->fc2, &b->fc2_bias, &b->gamma, &b->beta};
    for (size_t i = 0; i < sizeof params / sizeof *params; ++i) {
        free_param(params[i]);
    }
    void *bufs[] = {b->running_mean, b->running_var, b->save_mean, b->save_invstd, b->conv_out,
                    b->act, b->pooled, b->argmax, b->d_conv_out, b->d_act, b->attention};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; ++i) {
        free(bufs[i]);
    }
}

/* The output of block b: pooled, or the activations when it does not pool. */
static float *block_output(block *b) { return b->pool ? b->pooled : b->act; }

static void network_init(network *net, int kernels, int64_t width, int64_t batch, uint64_t seed) {
    memset(net, 0, sizeof *net);
    net->kernels = kernels;
    const int64_t widths[BLOCKS + 1] = {1, width, 2 * width, 4 * width};
    int64_t size = IMG;
    for (int i = 0; i < BLOCKS; ++i) {
        const bool pool = i < BLOCKS - 1;
        block_init(&net->blocks[i], widths[i], widths[i + 1], size, pool, kernels, batch,
                   seed * 31 + (uint64_t)i);
        size = net->blocks[i].out_size;
        if (i > 0) {
            net->d_input[i] = xcalloc((size_t)(batch * widths[i] * net->blocks[i].size *
                                               net->blocks[i].size),
                                      sizeof(float));
        }
    }
    const int64_t feat = widths[BLOCKS];
    net->fc_weight = make_param((size_t)(CLASSES * feat));
    net->fc_bias = make_param(CLASSES);
    dct_rng rng;
    dct_rng_seed(&rng, seed * 31 + 97);
    CHECK_DCT(dct_init_fan_in_uniform(&rng, net->fc_weight.value, net->fc_weight.count, feat));
    CHECK_DCT(dct_init_fan_in_uniform(&rng, net->fc_bias.value, CLASSES, feat));
    net->features = xcalloc((size_t)(batch * feat), sizeof(float));
    net->d_features = xcalloc((size_t)(batch * feat), sizeof(float));
    net->logits = xcalloc((size_t)(batch * CLASSES), sizeof(float));
    net->d_logits = xcalloc((size_t)(batch * CLASSES), sizeof(float));
}

static void network_free(network *net) {
    for (int i = 0; i < BLOCKS; ++i) {
        block_free(&net->blocks[i]);
        free(net->d_input[i]);
    }
    free_param(&net->fc_weight);
    free_param(&net->fc_bias);
    free(net->features);
    free(net->d_features);
    free(net->logits);
    free(net->d_logits);
}

/* Fixes the batch size of every layer (reshape allocates only when a workspace must grow). */
static void network_reshape(network *net, int64_t batch, bool for_backward) {
    for (int i = 0; i < BLOCKS; ++i) {
        block *b = &net->blocks[i];
        CHECK_DC(dynconv_conv2d_reshape(b->conv, batch, b->size, b->size, NULL, NULL, NULL));
        if (for_backward) {
            CHECK_DC(dynconv_conv2d_prepare_backward(b->conv, NULL));
        }
    }
}

/* Forward of a batch; training uses batch statistics (and updates the running ones). Inference
 * also keeps each layer's attention, to report how the kernels are chosen. */
static void network_forward(network *net, int64_t batch, const float *input, bool training) {
    const float *x = input;
    for (int i = 0; i < BLOCKS; ++i) {
        block *b = &net->blocks[i];
        CHECK_DC(dynconv_conv2d_forward(b->conv, x, b->conv_out, training ? NULL : b->attention,
                                        NULL, 0));
        const dct_batchnorm2d bn = {b->cout,        1e-5f,          0.1f,
                                    b->gamma.value, b->beta.value,  b->running_mean,
                                    b->running_var};
        if (training) {
            CHECK_DCT(dct_batchnorm2d_forward_train(&bn, batch, b->size, b->size, b->conv_out,
                                                    b->act, b->save_mean, b->save_invstd));
        } else {
            CHECK_DCT(dct_batchnorm2d_forward_eval(&bn, batch, b->size, b->size, b->conv_out,
                                                   b->act));
        }
        CHECK_DCT(dct_relu_forward((int64_t)act_count(b, batch), b->act, b->act));
        if (b->pool) {
            CHECK_DCT(dct_maxpool2d_forward(batch, b->cout, b->size, b->size, 2, 2, b->act,
                                            b->pooled, b->argmax));
        }
        x = block_output(b);
    }
    const block *last = &net->blocks[BLOCKS - 1];
    CHECK_DCT(dct_global_avg_pool_forward(batch, last->cout, last->size, last->size, last->act,
                                          net->features));
    CHECK_DCT(dct_linear_forward(batch, last->cout, CLASSES, net->features, net->fc_weight.value,
                                 net->fc_bias.value, net->logits));
}

/* Backward of the batch just run forward in training mode, from net->d_logits. Every backward,
 * the dynamic layers' and the training module's, overwrites the gradients it is given. */
static void network_backward(network *net, int64_t batch, const float *input) {
    block *last = &net->blocks[BLOCKS - 1];
    CHECK_DCT(dct_linear_backward(batch, last->cout, CLASSES, net->features, net->fc_weight.value,
                                  net->d_logits, net->d_features, net->fc_weight.grad,
                                  net->fc_bias.grad, 0));
    CHECK_DCT(dct_global_avg_pool_backward(batch, last->cout, last->size, last->size,
                                           net->d_features, last->d_act));
    for (int i = BLOCKS - 1; i >= 0; --i) {
        block *b = &net->blocks[i];
        if (b->pool) {
            /* d_act was produced as the next block's input gradient. */
            CHECK_DCT(dct_maxpool2d_backward(batch, b->cout, b->size, b->size, 2, 2,
                                             net->d_input[i + 1], b->argmax, b->d_act));
        }
        const int64_t acts = (int64_t)act_count(b, batch);
        CHECK_DCT(dct_relu_backward(acts, b->act, b->d_act, b->d_act));
        const dct_batchnorm2d bn = {b->cout,        1e-5f,          0.1f,
                                    b->gamma.value, b->beta.value,  b->running_mean,
                                    b->running_var};
        CHECK_DCT(dct_batchnorm2d_backward(&bn, batch, b->size, b->size, b->conv_out, b->d_act,
                                           b->save_mean, b->save_invstd, b->d_conv_out,
                                           b->gamma.grad, b->beta.grad, 0));
        const float *x = i == 0 ? input : block_output(&net->blocks[i - 1]);
        const dynconv_conv2d_gradients grads = {
            .input = i == 0 ? NULL : net->d_input[i], .weight = b->weight.grad, .bias = NULL,
            .fc1_weight = b->fc1.grad, .fc1_bias = NULL, .fc2_weight = b->fc2.grad,
            .fc2_bias = b->fc2_bias.grad};
        CHECK_DC(dynconv_conv2d_backward(b->conv, x, b->d_conv_out, &grads, 0, NULL, 0));
    }
}

static void network_step(network *net, float lr) {
    enum { PER_BLOCK = 6 };
    dct_param params[BLOCKS * PER_BLOCK + 2];
    size_t n = 0;
    for (int i = 0; i < BLOCKS; ++i) {
        block *b = &net->blocks[i];
        /* Weight decay on the kernels and classifier weights only, as is common practice. */
        const struct {
            tensor3 *t;
            bool decay;
        } list[PER_BLOCK] = {{&b->weight, true}, {&b->fc1, true},   {&b->fc2, true},
                             {&b->fc2_bias, false}, {&b->gamma, false}, {&b->beta, false}};
        for (int j = 0; j < PER_BLOCK; ++j) {
            params[n++] = (dct_param){list[j].t->value, list[j].t->grad, list[j].t->velocity,
                                      (int64_t)list[j].t->count, list[j].decay};
        }
    }
    params[n++] = (dct_param){net->fc_weight.value, net->fc_weight.grad, net->fc_weight.velocity,
                              (int64_t)net->fc_weight.count, true};
    params[n++] = (dct_param){net->fc_bias.value, net->fc_bias.grad, net->fc_bias.velocity,
                              (int64_t)net->fc_bias.count, false};
    const dct_sgd sgd = {lr, 0.9f, 5e-4f};
    CHECK_DCT(dct_sgd_step(&sgd, params, n));
}

static size_t network_parameter_count(const network *net) {
    size_t total = net->fc_weight.count + net->fc_bias.count;
    for (int i = 0; i < BLOCKS; ++i) {
        const block *b = &net->blocks[i];
        total += b->weight.count + b->gamma.count + b->beta.count;
        if (net->kernels > 1) { /* with K = 1 the attention is a constant 1 and unused */
            total += b->fc1.count + b->fc2.count + b->fc2_bias.count;
        }
    }
    return total;
}

/* ---- training loop --------------------------------------------------------------------------- */

typedef struct run_result {
    double final_loss, train_acc, test_acc, seconds;
    size_t parameters;
} run_result;

/* How a layer's attention chose among its K kernels over a data set. */
typedef struct attention_stats {
    double sum_largest;              /* sum over samples of max_k pi */
    int64_t top_count[64];           /* samples whose largest weight is kernel k */
    int64_t samples;
} attention_stats;

/* Accuracy (%) of the network in inference mode (running statistics, T as it stands) over the
 * whole set, the last partial batch included; optionally per class and the attention stats. */
static double evaluate(network *net, const dataset *d, int64_t batch, int per_class_correct[],
                       int per_class_total[], attention_stats stats[BLOCKS]) {
    int64_t correct_total = 0, shaped = batch;
    for (int at = 0; at < d->count; at += (int)batch) {
        const int64_t n = d->count - at < batch ? d->count - at : batch;
        if (n != shaped) {
            network_reshape(net, n, false); /* smaller: nothing is allocated */
            shaped = n;
        }
        network_forward(net, n, d->images + (size_t)at * IMG * IMG, false);
        float loss;
        int64_t correct;
        CHECK_DCT(dct_softmax_cross_entropy(n, CLASSES, net->logits, d->labels + at, &loss, NULL,
                                            &correct));
        correct_total += correct;
        for (int64_t i = 0; per_class_correct != NULL && i < n; ++i) {
            const float *z = net->logits + i * CLASSES;
            int best = 0;
            for (int j = 1; j < CLASSES; ++j) {
                best = z[j] > z[best] ? j : best;
            }
            per_class_total[d->labels[at + i]] += 1;
            per_class_correct[d->labels[at + i]] += best == d->labels[at + i];
        }
        for (int l = 0; stats != NULL && l < BLOCKS; ++l) {
            for (int64_t i = 0; i < n; ++i) {
                const float *pi = net->blocks[l].attention + i * net->kernels;
                int top = 0;
                for (int k = 1; k < net->kernels; ++k) {
                    top = pi[k] > pi[top] ? k : top;
                }
                stats[l].sum_largest += pi[top];
                stats[l].top_count[top] += 1;
                stats[l].samples += 1;
            }
        }
    }
    if (shaped != batch) {
        network_reshape(net, batch, true);
    }
    return 100.0 * (double)correct_total / (double)d->count;
}

static void progress_bar(int epoch, int epochs, int done, int total, double loss, float t) {
    const int width = 30, filled = (int)((int64_t)done * width / total);
    char bar[32];
    for (int i = 0; i < width; ++i) {
        bar[i] = i < filled ? '#' : '.';
    }
    bar[width] = '\0';
    fprintf(stderr, "\r  epoch %2d/%d [%s] %3d%%  loss %.4f  T %5.2f ", epoch, epochs, bar,
            100 * done / total, loss, (double)t);
    fflush(stderr);
}

static run_result train_network(const options *o, int kernels, const dataset *train,
                                const dataset *test) {
    printf("\n== %s network: K = %d kernels per layer%s\n", kernels > 1 ? "dynamic" : "static",
           kernels, kernels > 1 ? ", temperature 30 -> 1" : " (a static convolution)");
    network net;
    network_init(&net, kernels, o->width, o->batch, o->seed);
    const int64_t batch = o->batch;
    /* The last partial batch of an epoch is dropped: every epoch has the same iterations, and
     * batch statistics of a handful of samples would be noisy. */
    const int iters = train->count / o->batch;
    const int64_t total_iters = (int64_t)iters * o->epochs;
    const int64_t anneal = (int64_t)iters * o->anneal_epochs;
    for (int i = 0; i < BLOCKS; ++i) {
        CHECK_DC(dynconv_conv2d_set_temperature_schedule(net.blocks[i].conv, 30.0f, 1.0f, anneal));
    }
    const bool tty = isatty(fileno(stderr));
    int *order = xcalloc((size_t)train->count, sizeof(int));
    float *xb = xcalloc((size_t)batch * IMG * IMG, sizeof(float));
    int32_t *yb = xcalloc((size_t)batch, sizeof(int32_t));
    for (int i = 0; i < train->count; ++i) {
        order[i] = i;
    }
    dct_rng shuffle;
    dct_rng_seed(&shuffle, o->seed + 1000);
    run_result res = {0};
    res.parameters = network_parameter_count(&net);
    printf("  %zu trainable parameters, %d iterations of batch %lld per epoch\n", res.parameters,
           iters, (long long)batch);
    const double start = now_seconds();
    int64_t step = 0;
    for (int epoch = 1; epoch <= o->epochs; ++epoch) {
        const double epoch_start = now_seconds();
        for (int i = train->count - 1; i > 0; --i) { /* Fisher-Yates */
            const int j = (int)dct_rng_below(&shuffle, (uint64_t)i + 1);
            const int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        network_reshape(&net, batch, true);
        double loss_sum = 0.0;
        int64_t correct_sum = 0;
        float temperature = 1.0f;
        for (int it = 0; it < iters; ++it, ++step) {
            for (int64_t i = 0; i < batch; ++i) {
                const int s = order[it * batch + i];
                memcpy(xb + i * IMG * IMG, train->images + (size_t)s * IMG * IMG,
                       IMG * IMG * sizeof(float));
                yb[i] = train->labels[s];
            }
            network_forward(&net, batch, xb, true);
            float loss;
            int64_t correct;
            CHECK_DCT(dct_softmax_cross_entropy(batch, CLASSES, net.logits, yb, &loss,
                                                net.d_logits, &correct));
            network_backward(&net, batch, xb);
            network_step(&net, dct_linear_schedule(o->lr, 0.02f * o->lr, step, total_iters));
            /* The schedule advances after the iteration's backward, never between forward and
             * backward. */
            for (int i = 0; i < BLOCKS; ++i) {
                CHECK_DC(dynconv_conv2d_step_temperature(net.blocks[i].conv, &temperature));
            }
            loss_sum += loss;
            correct_sum += correct;
            if (tty && (it % 8 == 0 || it == iters - 1)) {
                progress_bar(epoch, o->epochs, it + 1, iters, loss_sum / (it + 1), temperature);
            }
        }
        if (tty) {
            fprintf(stderr, "\r%80s\r", "");
        }
        res.final_loss = loss_sum / iters;
        res.train_acc = 100.0 * (double)correct_sum / (double)((int64_t)iters * batch);
        res.test_acc = evaluate(&net, test, batch, NULL, NULL, NULL);
        char t_text[16] = "    -"; /* with K = 1 the attention, and so T, plays no role */
        if (kernels > 1) {
            snprintf(t_text, sizeof t_text, "%5.2f", (double)temperature);
        }
        printf("  epoch %2d/%d  T %s  loss %.4f  train %5.1f%%  test %5.1f%%  (%.1f s)\n",
               epoch, o->epochs, t_text, res.final_loss, res.train_acc, res.test_acc,
               now_seconds() - epoch_start);
        fflush(stdout);
    }
    res.seconds = now_seconds() - start;
    int pc[CLASSES] = {0}, pt[CLASSES] = {0};
    attention_stats stats[BLOCKS];
    memset(stats, 0, sizeof stats);
    evaluate(&net, test, batch, pc, pt, stats);
    printf("  test accuracy per class:");
    for (int c = 0; c < CLASSES; ++c) {
        printf("  %s %.0f%%", class_names[c], pt[c] ? 100.0 * pc[c] / pt[c] : 0.0);
    }
    printf("\n");
    /* Per-sample kernel choice: a uniform attention would give 1/K as the largest weight. */
    for (int l = 0; kernels > 1 && l < BLOCKS; ++l) {
        printf("  layer %d attention on the test set: mean largest weight %.2f (uniform %.2f); "
               "samples per top kernel:",
               l + 1, stats[l].sum_largest / (double)stats[l].samples, 1.0 / kernels);
        for (int k = 0; k < kernels; ++k) {
            printf(" %.0f%%", 100.0 * (double)stats[l].top_count[k] / (double)stats[l].samples);
        }
        printf("\n");
    }
    free(order);
    free(xb);
    free(yb);
    network_free(&net);
    return res;
}

/* ---- command line ---------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: train_dynamic_cnn [options]\n"
            "  --epochs N          training epochs (default 10)\n"
            "  --anneal-epochs N   epochs over which T goes from 30 to 1 (default 4)\n"
            "  --train N           training images (default 6144)\n"
            "  --test N            test images (default 2048)\n"
            "  --batch N           batch size (default 64)\n"
            "  --kernels K         kernels of the dynamic network (default 4)\n"
            "  --width C           channels of the first layer; then 2C and 4C (default 4)\n"
            "  --lr X              initial learning rate (default 0.1)\n"
            "  --seed S            data and initialisation seed (default 1)\n"
            "  --only-dynamic      skip the static (K = 1) network\n"
            "  --max-final-loss X  exit 1 unless the dynamic network's last-epoch loss < X\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_float(const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    const float v = strtof(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) {
        return false;
    }
    *out = v;
    return true;
}

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){.epochs = 10, .anneal_epochs = 4, .train = 6144, .test = 2048, .batch = 64,
                   .kernels = 4, .width = 4, .lr = 0.1f, .seed = 1, .only_dynamic = 0,
                   .max_final_loss = INFINITY};
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--only-dynamic") == 0) {
            o->only_dynamic = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "train_dynamic_cnn: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        long n = 0;
        bool ok;
        if (strcmp(a, "--epochs") == 0) {
            ok = parse_long(v, 1, 1000, &n) && (o->epochs = (int)n, true);
        } else if (strcmp(a, "--anneal-epochs") == 0) {
            ok = parse_long(v, 0, 1000, &n) && (o->anneal_epochs = (int)n, true);
        } else if (strcmp(a, "--train") == 0) {
            ok = parse_long(v, 1, 1000000, &n) && (o->train = (int)n, true);
        } else if (strcmp(a, "--test") == 0) {
            ok = parse_long(v, 1, 1000000, &n) && (o->test = (int)n, true);
        } else if (strcmp(a, "--batch") == 0) {
            ok = parse_long(v, 2, 4096, &n) && (o->batch = (int)n, true);
        } else if (strcmp(a, "--kernels") == 0) {
            ok = parse_long(v, 1, 64, &n) && (o->kernels = (int)n, true); /* attention_stats */
        } else if (strcmp(a, "--width") == 0) {
            ok = parse_long(v, 1, 256, &n) && (o->width = (int)n, true);
        } else if (strcmp(a, "--seed") == 0) {
            ok = parse_long(v, 0, 1000000000L, &n) && (o->seed = (uint64_t)n, true);
        } else if (strcmp(a, "--lr") == 0) {
            ok = parse_float(v, 1e-6f, 10.0f, &o->lr);
        } else if (strcmp(a, "--max-final-loss") == 0) {
            ok = parse_float(v, 0.0f, 100.0f, &o->max_final_loss);
        } else {
            fprintf(stderr, "train_dynamic_cnn: unknown option %s\n", a);
            usage(stderr);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "train_dynamic_cnn: invalid value '%s' for %s\n", v, a);
            return -1;
        }
    }
    if (o->train < o->batch) {
        fprintf(stderr, "train_dynamic_cnn: --train must be at least --batch (%d)\n", o->batch);
        return -1;
    }
    if (o->anneal_epochs > o->epochs) {
        o->anneal_epochs = o->epochs;
    }
    return 0;
}

int main(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o) != 0) {
        return 2;
    }
    printf("train_dynamic_cnn: %d training and %d test images (16x16, %d classes), seed %llu\n",
           o.train, o.test, CLASSES, (unsigned long long)o.seed);
    printf("channels 1 -> %d -> %d -> %d, %d epochs (T annealed over %d), batch %d, lr %g\n",
           o.width, 2 * o.width, 4 * o.width, o.epochs, o.anneal_epochs, o.batch, (double)o.lr);
    printf("BLAS: %s (core %s, %d threads)\n", dynconv_blas_config(), dynconv_blas_core(),
           dynconv_blas_num_threads());
    dataset train = make_dataset(o.train, o.seed * 2 + 1);
    dataset test = make_dataset(o.test, o.seed * 2 + 2);

    const run_result dyn = train_network(&o, o.kernels, &train, &test);
    run_result stat = {0};
    if (!o.only_dynamic) {
        stat = train_network(&o, 1, &train, &test);
    }

    printf("\n%-22s %10s %12s %10s %9s %8s\n", "network", "parameters", "final loss", "train",
           "test", "time");
    printf("%-22s %10zu %12.4f %9.1f%% %8.1f%% %7.1fs\n", "dynamic (K kernels)", dyn.parameters,
           dyn.final_loss, dyn.train_acc, dyn.test_acc, dyn.seconds);
    if (!o.only_dynamic) {
        printf("%-22s %10zu %12.4f %9.1f%% %8.1f%% %7.1fs\n", "static (K = 1)", stat.parameters,
               stat.final_loss, stat.train_acc, stat.test_acc, stat.seconds);
    }
    free(train.images);
    free(train.labels);
    free(test.images);
    free(test.labels);
    if (!(dyn.final_loss < (double)o.max_final_loss)) {
        fprintf(stderr, "train_dynamic_cnn: final training loss %.4f is not below %.4f\n",
                dyn.final_loss, (double)o.max_final_loss);
        return 1;
    }
    return 0;
}
