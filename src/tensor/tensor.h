/* Tensor layer: checked size arithmetic, aligned buffers, workspace carving, and the two bits of
 * state every layer above shares: the calling thread's error message and the seeded generator.
 * Lowest layer of the library; depends on nothing but libc. */
#ifndef DYNCONV_SRC_TENSOR_H
#define DYNCONV_SRC_TENSOR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every buffer the library hands to BLAS starts on a cache line. */
#define DC_ALIGNMENT 64

/* a * b and a + b, false (and *out untouched) on overflow. */
bool dc_mul_size(size_t a, size_t b, size_t *out);
bool dc_add_size(size_t a, size_t b, size_t *out);

/* Product of `count` dimensions, false on overflow. */
bool dc_product(const size_t *dims, size_t count, size_t *out);

/* Rounds up to a multiple of DC_ALIGNMENT, false on overflow. */
bool dc_align_up(size_t bytes, size_t *out);

/* 64-byte aligned allocation; NULL when bytes == 0 or on failure. Free with dc_aligned_free. */
void *dc_aligned_alloc(size_t bytes);
void dc_aligned_free(void *ptr);

/* True when the byte ranges [a, a + a_bytes) and [b, b + b_bytes) intersect. */
bool dc_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes);

/* Workspace carving. Planning: start with base == NULL, call dc_arena_take for every buffer in
 * a fixed order and read `used` as the total size. Running: the same calls on a real base give
 * aligned pointers at the same offsets. */
typedef struct dc_arena {
    char *base;
    size_t used;
    bool overflow;
} dc_arena;

/* Reserves `count` floats; returns the pointer (NULL while planning). */
float *dc_arena_take(dc_arena *arena, size_t count);

/* The calling thread's error message: one buffer per thread, so a failure in one thread never
 * garbles another's. The API's dynconv_last_error_message() returns it, and every failing
 * function writes it (the library's, and the training module's built on it). */
const char *dc_error_message(void);
#if defined(__GNUC__)
__attribute__((format(printf, 1, 0)))
#endif
void dc_error_vset(const char *fmt, va_list args);

/* splitmix64: every seed, 0 included, gives a good stream; the same seed the same numbers on
 * every platform. Advances *state and returns the next 64 random bits. */
uint64_t dc_splitmix64(uint64_t *state);

/* A read prefetch into all cache levels (nothing where the compiler has no such builtin). */
#if defined(__GNUC__)
#define DC_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define DC_PREFETCH(p) ((void)(p))
#endif

#endif
