/* Test helpers for network files: a small safetensors writer (the tensors and the graph's JSON,
 * escaped into the metadata) and the conv -> batchnorm2d [-> relu | relu6] networks of the
 * folding and API tests, with their parameters kept for a reference. */
#ifndef DYNCONV_TESTS_NETFILE_H
#define DYNCONV_TESTS_NETFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NF_MAX_TENSORS 16

typedef struct st_tensor {
    char name[64];
    int rank;
    int64_t shape[5];
    float *data;
    size_t count;
} st_tensor;

typedef struct st_file {
    st_tensor t[NF_MAX_TENSORS];
    size_t n;
} st_file;

/* Adds a tensor (its data allocated, to be filled by the caller) and returns its data. */
float *add_tensor(st_file *f, const char *name, int rank, const int64_t *shape);
/* The file's bytes (malloc'd): the graph (plain JSON) and the tensors in the order added. */
unsigned char *st_bytes(const st_file *f, const char *graph, size_t *size);
void st_free(st_file *f);

/* A convolution (static or dynamic) followed by a batch norm and an optional activation. */
typedef struct fold_case {
    const char *name;
    bool dynamic, bias;
    int64_t cin, cout, k, stride, pad, groups, kernels, hidden;
    const char *act;          /* "relu", "relu6" or NULL */
    int64_t n, h, w;          /* the input the tests run */
} fold_case;

/* Its parameters (views of the file's tensors). */
typedef struct fold_net {
    st_file file;
    float *w, *b, *fc1, *fc1b, *fc2, *fc2b, *gamma, *beta, *mean, *var;
    float temperature;
    double eps;
} fold_net;

/* The case's network file (malloc'd); the graph's nodes are "conv", "bn" and "act". */
unsigned char *build_fold(const fold_case *c, fold_net *m, size_t *size);

#endif
