/* Fuzz target: the .npy reader (dcio_npy_parse) on arbitrary bytes.
 * Beyond "never crash, never read outside the buffer" (ASan), it checks what the reader
 * promises: on failure a message and an untouched output; on success a shape whose product is
 * numel, exactly numel * 4 data bytes ending at the buffer's end, and an array that survives a
 * round trip through the writer's header (dcio_npy_header) unchanged. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what) {
    fprintf(stderr, "fuzz_npy: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A copy of exactly `size` bytes, so that ASan sees any read past the end. */
    unsigned char *buf = malloc(size > 0 ? size : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data, size);

    dcio_npy npy, untouched;
    memset(&npy, 0xa5, sizeof npy);
    untouched = npy;
    dcio_error err;
    err.message[0] = '\0';
    if (!dcio_npy_parse(buf, size, &npy, &err)) {
        if (memcmp(&npy, &untouched, sizeof npy) != 0) {
            die("a failed parse wrote its output");
        }
        if (err.message[0] == '\0') {
            die("a failed parse left no message");
        }
        free(buf);
        return 0;
    }

    if (npy.rank < 0 || npy.rank > DCIO_MAX_RANK) {
        die("rank out of range");
    }
    size_t numel = 1;
    for (int i = 0; i < npy.rank; ++i) {
        if (npy.shape[i] < 0) {
            die("negative dimension accepted");
        }
        if (__builtin_mul_overflow(numel, (size_t)npy.shape[i], &numel)) {
            die("a shape whose element count overflows was accepted");
        }
    }
    if (numel != npy.numel) {
        die("numel is not the product of the shape");
    }
    const size_t header = (size_t)(npy.data - buf);
    if (npy.data < buf || header > size || (size - header) / 4 != numel ||
        (size - header) % 4 != 0) {
        die("the data does not fill the rest of the buffer with numel floats");
    }
    float *values = malloc(numel > 0 ? numel * sizeof(float) : 1);
    if (values == NULL) {
        free(buf);
        return 0;
    }
    dcio_npy_to_f32(&npy, values);

    /* Round trip: the writer's header for this shape, then the same data, parses to the same. */
    char head[DCIO_NPY_MAX_HEADER];
    const size_t head_len = dcio_npy_header(npy.shape, npy.rank, head, sizeof head);
    if (head_len == 0 || head_len % 64 != 0) {
        die("the writer cannot describe an array the reader accepted");
    }
    unsigned char *copy = malloc(head_len + numel * 4);
    if (copy == NULL) {
        free(values);
        free(buf);
        return 0;
    }
    memcpy(copy, head, head_len);
    memcpy(copy + head_len, npy.data, numel * 4);
    dcio_npy again;
    if (!dcio_npy_parse(copy, head_len + numel * 4, &again, &err)) {
        fprintf(stderr, "%s\n", err.message);
        die("the writer's header does not parse");
    }
    if (again.rank != npy.rank || again.numel != npy.numel ||
        memcmp(again.shape, npy.shape, (size_t)npy.rank * sizeof(int64_t)) != 0) {
        die("the round trip changed the shape");
    }
    float *values2 = malloc(numel > 0 ? numel * sizeof(float) : 1);
    if (values2 != NULL) {
        dcio_npy_to_f32(&again, values2);
        if (memcmp(values, values2, numel * sizeof(float)) != 0) {
            die("the round trip changed the data");
        }
        free(values2);
    }
    free(copy);
    free(values);
    free(buf);
    return 0;
}
