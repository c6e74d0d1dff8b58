/* Shared by the API layer's translation units only. */
#ifndef DYNCONV_SRC_API_INTERNAL_H
#define DYNCONV_SRC_API_INTERNAL_H

#include <dynconv/dynconv.h>

#include <stdbool.h>
#include <stddef.h>

/* Records a printf-style explanation for dynconv_last_error_message() and returns status. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
dynconv_status dc_fail(dynconv_status status, const char *fmt, ...);

/* Both the conv2d and linear entry points go through these, each naming itself in messages. */
dynconv_status dc_conv2d_create_named(const char *fn, const dynconv_conv2d_geometry *geometry,
                                      const dynconv_conv2d_weights *weights, float temperature,
                                      uint32_t flags, dynconv_conv2d **out);
dynconv_status dc_conv2d_reshape_named(const char *fn, dynconv_conv2d *layer, int64_t batch,
                                       int64_t height, int64_t width, int64_t *out_h,
                                       int64_t *out_w, size_t *workspace_size);
dynconv_status dc_conv2d_forward_named(const char *fn, dynconv_conv2d *layer, const float *input,
                                       float *output, float *attention, void *workspace,
                                       size_t workspace_size);
dynconv_status dc_check_temperature(const char *fn, float temperature);

#endif
