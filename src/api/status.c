#include "internal.h"
#include "tensor.h"

#include <stdarg.h>

unsigned dynconv_version_number(void) { return DYNCONV_VERSION_NUMBER; }

const char *dynconv_version_string(void) { return DYNCONV_VERSION_STRING; }

const char *dynconv_status_string(dynconv_status status) {
    switch (status) {
    case DYNCONV_OK: return "success";
    case DYNCONV_ERROR_NULL_POINTER: return "null pointer";
    case DYNCONV_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case DYNCONV_ERROR_INVALID_SHAPE: return "invalid shape";
    case DYNCONV_ERROR_SIZE_OVERFLOW: return "size overflow";
    case DYNCONV_ERROR_OUT_OF_MEMORY: return "out of memory";
    case DYNCONV_ERROR_INVALID_STATE: return "invalid state";
    case DYNCONV_ERROR_INSUFFICIENT_WORKSPACE: return "insufficient workspace";
    case DYNCONV_ERROR_MISALIGNED_WORKSPACE: return "misaligned workspace";
    case DYNCONV_ERROR_UNSUPPORTED: return "unsupported";
    case DYNCONV_ERROR_INVALID_MODEL: return "invalid model";
    }
    return "unknown status";
}

/* The message lives in the tensor layer, so that everything built on the library writes the
 * same per-thread buffer. */
const char *dynconv_last_error_message(void) { return dc_error_message(); }

dynconv_status dc_fail(dynconv_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    dc_error_vset(fmt, args);
    va_end(args);
    return status;
}
