#define _POSIX_C_SOURCE 200809L
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>

static _Thread_local char error_message[512];

const char *dc_error_message(void) { return error_message; }

void dc_error_vset(const char *fmt, va_list args) {
    vsnprintf(error_message, sizeof error_message, fmt, args);
}

uint64_t dc_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

bool dc_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) {
        return false;
    }
    *out = a * b;
    return true;
}

bool dc_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) {
        return false;
    }
    *out = a + b;
    return true;
}

bool dc_product(const size_t *dims, size_t count, size_t *out) {
    size_t p = 1;
    for (size_t i = 0; i < count; ++i) {
        if (!dc_mul_size(p, dims[i], &p)) {
            return false;
        }
    }
    *out = p;
    return true;
}

bool dc_align_up(size_t bytes, size_t *out) {
    size_t padded;
    if (!dc_add_size(bytes, DC_ALIGNMENT - 1, &padded)) {
        return false;
    }
    *out = padded / DC_ALIGNMENT * DC_ALIGNMENT;
    return true;
}

void *dc_aligned_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0 || posix_memalign(&p, DC_ALIGNMENT, bytes) != 0) {
        return NULL;
    }
    return p;
}

void dc_aligned_free(void *ptr) { free(ptr); }

bool dc_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes) {
    /* Compared as integers: relational operators on pointers into different objects are
     * undefined in C. */
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    if (a_bytes == 0 || b_bytes == 0) {
        return false;
    }
    return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

float *dc_arena_take(dc_arena *arena, size_t count) {
    size_t bytes, aligned, end;
    float *p;
    if (arena->overflow || !dc_mul_size(count, sizeof(float), &bytes) ||
        !dc_align_up(bytes, &aligned) || !dc_add_size(arena->used, aligned, &end)) {
        arena->overflow = true;
        return NULL;
    }
    p = arena->base != NULL ? (float *)(void *)(arena->base + arena->used) : NULL;
    arena->used = end;
    return p;
}
