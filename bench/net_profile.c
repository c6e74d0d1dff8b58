/* dynconv-net-profile: where a whole network's forward spends its time, node by node.
 *
 *   dynconv-net-profile NET.safetensors [--batch N] [--size S] [--threads T] [--repeats R]
 *
 * Runs the network (random input, uniform in [-1, 1], at N x C x S x S) twice to warm up, then
 * R timed forwards, and prints for each node (in execution order) the median over the forwards
 * of its wall time, its share of the median forward, its op, output shape and what was fused
 * into it; then the totals per op. Linked with the internal layers: the timing hook
 * (dynconv_network.profile) is not part of the public API, and the public forward never reads
 * a clock. */
#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int usage(void) {
    fprintf(stderr, "usage: dynconv-net-profile NET.safetensors [--batch N] [--size S] "
                    "[--threads T] [--repeats R]\n");
    return 2;
}

static int fail(const char *what, dynconv_status st) {
    fprintf(stderr, "dynconv-net-profile: %s: %s (%s)\n", what, dynconv_status_string(st),
            dynconv_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        return usage();
    }
    long batch = 1, size = 224, threads = 0, repeats = 9;
    for (int i = 2; i + 1 < argc; i += 2) {
        long *dst = strcmp(argv[i], "--batch") == 0     ? &batch
                    : strcmp(argv[i], "--size") == 0    ? &size
                    : strcmp(argv[i], "--threads") == 0 ? &threads
                    : strcmp(argv[i], "--repeats") == 0 ? &repeats
                                                        : NULL;
        char *end = NULL;
        if (dst == NULL || (*dst = strtol(argv[i + 1], &end, 10), *end != '\0') || *dst < 0 ||
            *dst > 100000) {
            return usage();
        }
    }
    if (argc % 2 != 0 || batch < 1 || size < 1 || repeats < 1) {
        return usage();
    }
    dynconv_network *net = NULL;
    dynconv_status st = dynconv_network_create_from_file(argv[1], 0, &net);
    if (st != DYNCONV_OK) {
        return fail(argv[1], st);
    }
    if ((st = dynconv_network_set_num_threads(net, threads)) != DYNCONV_OK ||
        (st = dynconv_network_reshape(net, batch, size, size, NULL)) != DYNCONV_OK) {
        dynconv_network_destroy(net);
        return fail("set_num_threads / reshape", st);
    }
    const size_t nodes = net->num_nodes, in_count = net->input_count;
    const size_t out_count = net_value_count(net, net->outputs[0]);
    float *x = malloc(in_count * sizeof *x);
    float **outs = calloc(net->num_outputs, sizeof *outs);
    double *times = calloc(nodes * (size_t)repeats, sizeof *times);
    double *totals = calloc((size_t)repeats, sizeof *totals);
    net->profile = calloc(nodes, sizeof *net->profile);
    int rc = x == NULL || outs == NULL || times == NULL || totals == NULL ||
             net->profile == NULL;
    for (size_t i = 0; !rc && i < net->num_outputs; ++i) {
        outs[i] = malloc(net_value_count(net, net->outputs[i]) * sizeof(float));
        rc = outs[i] == NULL;
    }
    if (rc) {
        fprintf(stderr, "dynconv-net-profile: out of memory\n");
    }
    unsigned state = 12345;
    for (size_t i = 0; !rc && i < in_count; ++i) {
        state = state * 1103515245u + 12345u;
        x[i] = (float)((state >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (long r = -2; !rc && r < repeats; ++r) {
        memset(net->profile, 0, nodes * sizeof *net->profile);
        const double t0 = now();
        st = dynconv_network_forward(net, x, outs);
        const double t1 = now();
        if (st != DYNCONV_OK) {
            rc = fail("forward", st);
            break;
        }
        if (r >= 0) {
            totals[r] = t1 - t0;
            for (size_t i = 0; i < nodes; ++i) {
                times[i * (size_t)repeats + (size_t)r] = net->profile[i];
            }
        }
    }
    if (!rc) {
        const double total = median(totals, (size_t)repeats);
        printf("%s: batch %ld, %ldx%ld, %ld thread(s) requested, %ld forwards: median %.3f ms "
               "(output[0] %zu floats)\n",
               argv[1], batch, size, size, threads, repeats, 1e3 * total, out_count);
        printf("%4s  %-28s %-18s %-18s %9s %6s  %s\n", "node", "name", "op", "shape", "ms", "%",
               "fused");
        double per_op[OP_COUNT] = {0};
        for (size_t i = 0; i < nodes; ++i) {
            const net_node *n = &net->nodes[i];
            const double t = median(times + i * (size_t)repeats, (size_t)repeats);
            per_op[n->op] += t;
            char shape[64];
            snprintf(shape, sizeof shape, "%zux%zux%zux%zu", n->shape[0],
                     n->rank > 1 ? n->shape[1] : 1, n->rank > 2 ? n->shape[2] : 1,
                     n->rank > 3 ? n->shape[3] : 1);
            printf("%4zu  %-28.28s %-18s %-18s %9.3f %6.1f  %s%s\n", i, n->name,
                   net_op_name(n->op), shape, 1e3 * t, 100.0 * t / total,
                   n->fused & DYNCONV_NETWORK_FUSED_BATCHNORM ? "bn " : "",
                   n->fused & DYNCONV_NETWORK_FUSED_RELU    ? "relu"
                   : n->fused & DYNCONV_NETWORK_FUSED_RELU6 ? "relu6"
                                                            : "");
        }
        printf("per op (sums of the nodes' medians):\n");
        for (int op = 0; op < OP_COUNT; ++op) {
            if (per_op[op] > 0.0) {
                printf("  %-18s %9.3f ms %6.1f %%\n", net_op_name((net_op)op), 1e3 * per_op[op],
                       100.0 * per_op[op] / total);
            }
        }
    }
    for (size_t i = 0; outs != NULL && i < net->num_outputs; ++i) {
        free(outs[i]);
    }
    free(net->profile);
    net->profile = NULL;
    dynconv_network_destroy(net);
    free(outs);
    free(times);
    free(totals);
    free(x);
    return rc;
}
