#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

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
    }
    return "unknown status";
}

/* One buffer per thread, so a failure in one thread never garbles another's message. */
static _Thread_local char last_error[512];

const char *dynconv_last_error_message(void) { return last_error; }

dynconv_status dc_fail(dynconv_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}
