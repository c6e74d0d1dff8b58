/* Helpers shared by the dynconv_io sources only. */
#ifndef DYNCONV_TOOLS_IO_DCIO_INTERNAL_H
#define DYNCONV_TOOLS_IO_DCIO_INTERNAL_H

#include "dcio.h"

#include <stdint.h>
#include <string.h>

/* The writers copy float arrays byte for byte into little-endian formats. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dynconv_io writes little-endian files by copying memory: a big-endian host needs swaps"
#endif

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void dcio_fail(dcio_error *err, const char *fmt, ...);

char *dcio_strdup(const char *s);

static inline bool dcio_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) {
        return false;
    }
    *out = a * b;
    return true;
}

static inline uint16_t dcio_le16(const unsigned char *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t dcio_le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t dcio_le64(const unsigned char *p) {
    return (uint64_t)dcio_le32(p) | ((uint64_t)dcio_le32(p + 4) << 32);
}

static inline float dcio_f32_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#endif
