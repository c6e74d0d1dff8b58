/* The dynamic perceptron is a dynamic 1x1 convolution of a 1x1 "image": pooling is then the
 * identity, so the attention sees x itself, exactly as the layer is defined. Reusing the conv2d
 * handle keeps one implementation of the pipeline and of its checks. */
#include "internal.h"

#include "tensor.h"

#include <limits.h>
#include <stdlib.h>

dynconv_status dc_linear_as_conv2d(const char *fn, const dynconv_linear_geometry *geometry,
                                   dynconv_conv2d_geometry *out) {
    const struct {
        const char *name;
        int64_t value;
    } sizes[] = {{"in_features", geometry->in_features},
                 {"out_features", geometry->out_features},
                 {"num_kernels", geometry->num_kernels},
                 {"hidden", geometry->hidden}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        if (sizes[i].value <= 0) {
            return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT, "%s: %s must be > 0, got %lld", fn,
                           sizes[i].name, (long long)sizes[i].value);
        }
    }
    size_t kernel_len, all_kernels;
    if (!dc_mul_size((size_t)geometry->in_features, (size_t)geometry->out_features, &kernel_len) ||
        !dc_mul_size(kernel_len, (size_t)geometry->num_kernels, &all_kernels) ||
        kernel_len > (size_t)INT_MAX) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: in_features (%lld) * out_features (%lld) * num_kernels (%lld) is too "
                       "large",
                       fn, (long long)geometry->in_features, (long long)geometry->out_features,
                       (long long)geometry->num_kernels);
    }
    *out = (dynconv_conv2d_geometry){
        .in_channels = geometry->in_features, .out_channels = geometry->out_features,
        .kernel_h = 1, .kernel_w = 1, .stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0,
        .dilation_h = 1, .dilation_w = 1, .groups = 1,
        .num_kernels = geometry->num_kernels, .hidden = geometry->hidden};
    return DYNCONV_OK;
}

dynconv_status dynconv_linear_create(const dynconv_linear_geometry *geometry,
                                     const dynconv_linear_weights *weights, float temperature,
                                     uint32_t flags, dynconv_linear **out) {
    static const char fn[] = "dynconv_linear_create";
    if (geometry == NULL || weights == NULL || out == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       geometry == NULL ? "geometry" : weights == NULL ? "weights" : "out");
    }
    const dynconv_conv2d_weights w = {weights->weight,     weights->bias,
                                      weights->fc1_weight, weights->fc1_bias,
                                      weights->fc2_weight, weights->fc2_bias};
    dynconv_conv2d_geometry g;
    TRY(dc_check_create_args(fn, &w, flags, temperature));
    TRY(dc_linear_as_conv2d(fn, geometry, &g));
    dynconv_linear *handle = malloc(sizeof *handle);
    if (handle == NULL) {
        return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the handle", fn);
    }
    dynconv_status st = dc_conv2d_create_named(fn, &g, &w, temperature, flags, &handle->conv);
    if (st != DYNCONV_OK) {
        free(handle);
        return st;
    }
    *out = handle;
    return DYNCONV_OK;
}

void dynconv_linear_destroy(dynconv_linear *layer) {
    if (layer == NULL) {
        return;
    }
    dynconv_conv2d_destroy(layer->conv);
    free(layer);
}

dynconv_status dynconv_linear_set_temperature(dynconv_linear *layer, float temperature) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    dynconv_status st = dc_check_temperature(__func__, temperature);
    return st != DYNCONV_OK ? st : dynconv_conv2d_set_temperature(layer->conv, temperature);
}

dynconv_status dynconv_linear_get_temperature(const dynconv_linear *layer, float *temperature) {
    if (layer == NULL || temperature == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", __func__,
                       layer == NULL ? "layer" : "temperature");
    }
    return dynconv_conv2d_get_temperature(layer->conv, temperature);
}

dynconv_status dynconv_linear_reshape(dynconv_linear *layer, int64_t batch,
                                      size_t *workspace_size) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    return dc_conv2d_reshape_named(__func__, layer->conv, batch, 1, 1, NULL, NULL,
                                   workspace_size);
}

dynconv_status dynconv_linear_forward(dynconv_linear *layer, const float *input, float *output,
                                      float *attention, void *workspace, size_t workspace_size) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    return dc_conv2d_forward_named(__func__, layer->conv, input, output, attention, workspace,
                                   workspace_size);
}

dynconv_status dynconv_linear_set_num_threads(dynconv_linear *layer, int threads) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    return dc_conv2d_set_num_threads_named(__func__, layer->conv, threads);
}

dynconv_status dynconv_linear_get_num_threads(const dynconv_linear *layer, int *threads) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    return dc_conv2d_get_num_threads_named(__func__, layer->conv, threads);
}

dynconv_status dynconv_linear_set_threadpool(dynconv_linear *layer, dynconv_threadpool *pool) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", __func__);
    }
    return dc_conv2d_set_threadpool_named(__func__, layer->conv, pool);
}
