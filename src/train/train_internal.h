/* Shared by the training module's translation units only. The module is built on the
 * library's own lowest layers: the tensor layer (overlap checks, the per-thread error message,
 * the seeded generator) and the attention layer (global average pooling). */
#ifndef DYNCONV_SRC_TRAIN_INTERNAL_H
#define DYNCONV_SRC_TRAIN_INTERNAL_H

#include "dynconv_train.h"
#include "tensor.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns from the calling function when expr is not DYNCONV_OK. */
#define DCT_TRY(expr)                        \
    do {                                     \
        dynconv_status dct_try_ = (expr);    \
        if (dct_try_ != DYNCONV_OK) {        \
            return dct_try_;                 \
        }                                    \
    } while (0)

/* Records a printf-style explanation for dct_last_error_message() and returns status. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
dynconv_status dct_fail(dynconv_status status, const char *fmt, ...);

/* Checks that every one of the `count` sizes is > 0 and that their product, times
 * sizeof(float), fits in size_t and ptrdiff_t; *total receives the element count. names[i]
 * names sizes[i] in the message. */
dynconv_status dct_check_sizes(const char *fn, const char *const *names, const int64_t *sizes,
                               size_t count, size_t *total);

/* DYNCONV_ERROR_UNSUPPORTED for flag bits other than DYNCONV_BACKWARD_ACCUMULATE, as the
 * library's own backward functions answer. */
dynconv_status dct_check_backward_flags(const char *fn, uint32_t flags);

#endif
