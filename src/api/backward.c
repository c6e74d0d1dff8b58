/* Backward pass of the dynamic layers: argument checks and the workspace protocol; the
 * pipeline itself is the execution layer's (src/exec/backward.c). */
#include "internal.h"

#include "exec.h"
#include "tensor.h"

static dynconv_status backward_size(const char *fn, const dynconv_conv2d *layer,
                                    size_t *workspace_size) {
    if (!layer->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    if (!layer->backward_size_ok) {
        return dc_fail(DYNCONV_ERROR_SIZE_OVERFLOW,
                       "%s: the backward workspace size for batch %zu, %zu x %zu overflows", fn,
                       layer->batch, layer->core.shape.height, layer->core.shape.width);
    }
    *workspace_size = layer->backward_workspace_size;
    return DYNCONV_OK;
}

static dynconv_status workspace_size_named(const char *fn, const dynconv_conv2d *layer,
                                           size_t *workspace_size) {
    if (layer == NULL || workspace_size == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       layer == NULL ? "layer" : "workspace_size");
    }
    return backward_size(fn, layer, workspace_size);
}

static dynconv_status prepare_named(const char *fn, dynconv_conv2d *layer,
                                    size_t *workspace_size) {
    if (layer == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: layer is NULL", fn);
    }
    size_t bytes = 0;
    TRY(backward_size(fn, layer, &bytes));
    if (!(layer->flags & DYNCONV_FLAG_EXTERNAL_WORKSPACE)) {
        if (layer->own_workspace_size < bytes) {
            void *grown = dc_aligned_alloc(bytes);
            if (grown == NULL) {
                return dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY,
                               "%s: cannot allocate a workspace of %zu bytes", fn, bytes);
            }
            dc_aligned_free(layer->own_workspace);
            layer->own_workspace = grown;
            layer->own_workspace_size = bytes;
        }
        layer->backward_enabled = true;
    }
    if (workspace_size != NULL) {
        *workspace_size = bytes;
    }
    return DYNCONV_OK;
}

/* Checks and runs one backward; `fn` names the public entry point in messages. */
static dynconv_status backward_named(const char *fn, dynconv_conv2d *layer, const float *input,
                                     const float *grad_output,
                                     const dynconv_conv2d_gradients *grads, uint32_t flags,
                                     void *workspace, size_t workspace_size) {
    if (layer == NULL || input == NULL || grad_output == NULL || grads == NULL) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER, "%s: %s is NULL", fn,
                       layer == NULL         ? "layer"
                       : input == NULL       ? "input"
                       : grad_output == NULL ? "grad_output"
                                             : "gradients");
    }
    if (workspace == NULL && (layer->flags & DYNCONV_FLAG_EXTERNAL_WORKSPACE)) {
        return dc_fail(DYNCONV_ERROR_NULL_POINTER,
                       "%s: workspace is NULL but the layer was created with "
                       "DYNCONV_FLAG_EXTERNAL_WORKSPACE",
                       fn);
    }
    if ((flags & ~(uint32_t)DYNCONV_BACKWARD_ACCUMULATE) != 0) {
        return dc_fail(DYNCONV_ERROR_UNSUPPORTED, "%s: unknown flags 0x%x", fn,
                       (unsigned)(flags & ~(uint32_t)DYNCONV_BACKWARD_ACCUMULATE));
    }
    if ((grads->bias != NULL && layer->core.bias == NULL) ||
        (grads->fc1_bias != NULL && layer->core.fc1_bias == NULL) ||
        (grads->fc2_bias != NULL && layer->core.fc2_bias == NULL)) {
        return dc_fail(DYNCONV_ERROR_INVALID_ARGUMENT,
                       "%s: gradients->%s is given but the layer has no such parameter", fn,
                       grads->bias != NULL && layer->core.bias == NULL           ? "bias"
                       : grads->fc1_bias != NULL && layer->core.fc1_bias == NULL ? "fc1_bias"
                                                                            : "fc2_bias");
    }
    if (!layer->shaped) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE, "%s: no input shape yet: call reshape first",
                       fn);
    }
    if (workspace == NULL && !layer->backward_enabled) {
        return dc_fail(DYNCONV_ERROR_INVALID_STATE,
                       "%s: the layer's own workspace is not sized for backward: call "
                       "prepare_backward after create (or pass a workspace)",
                       fn);
    }
    size_t needed = 0;
    TRY(backward_size(fn, layer, &needed));
    if (workspace == NULL) {
        workspace = layer->own_workspace;
    } else {
        TRY(dc_check_workspace(fn, workspace, workspace_size, needed));
    }

    /* Sizes were checked by reshape (every product below is at most a checked one). */
    const dc_conv_shape *s = &layer->core.shape;
    const size_t n = layer->batch, K = layer->core.kernels;
    const size_t in_plane = s->height * s->width, out_plane = s->out_h * s->out_w;
    const size_t in_floats = s->in_channels * in_plane, out_floats = s->out_channels * out_plane;
    const size_t F = sizeof(float);
    const dc_buffer written[8] = {
        {"gradients->input", grads->input, n * in_floats * F},
        {"gradients->weight", grads->weight, K * layer->core.kernel_len * F},
        {"gradients->bias", grads->bias, K * s->out_channels * F},
        {"gradients->fc1_weight", grads->fc1_weight, layer->core.hidden * s->in_channels * F},
        {"gradients->fc1_bias", grads->fc1_bias, layer->core.hidden * F},
        {"gradients->fc2_weight", grads->fc2_weight, K * layer->core.hidden * F},
        {"gradients->fc2_bias", grads->fc2_bias, K * F},
        {"workspace", workspace, needed}};
    const dc_buffer read[8] = {
        {"input", input, n * in_floats * F},
        {"grad_output", grad_output, n * out_floats * F},
        {"the layer's parameter weight", layer->core.weight, K * layer->core.kernel_len * F},
        {"the layer's parameter bias", layer->core.bias, K * s->out_channels * F},
        {"the layer's parameter fc1_weight", layer->core.fc1_weight,
         layer->core.hidden * s->in_channels * F},
        {"the layer's parameter fc1_bias", layer->core.fc1_bias, layer->core.hidden * F},
        {"the layer's parameter fc2_weight", layer->core.fc2_weight, K * layer->core.hidden * F},
        {"the layer's parameter fc2_bias", layer->core.fc2_bias, K * F}};
    TRY(dc_check_disjoint(fn, written, 8, read, 8));

    /* Everything is checked: from here on only the outputs and the workspace are written. */
    const dc_exec_grads g = {grads->input,    grads->weight,     grads->bias,
                             grads->fc1_weight, grads->fc1_bias, grads->fc2_weight,
                             grads->fc2_bias};
    dc_exec_backward(&layer->core, n, layer->temperature, layer->threads,
                     layer->threadpool->pool, input, grad_output, &g,
                     (flags & DYNCONV_BACKWARD_ACCUMULATE) != 0, workspace);
    return DYNCONV_OK;
}

dynconv_status dynconv_conv2d_backward_workspace_size(const dynconv_conv2d *layer,
                                                      size_t *workspace_size) {
    return workspace_size_named(__func__, layer, workspace_size);
}

dynconv_status dynconv_conv2d_prepare_backward(dynconv_conv2d *layer, size_t *workspace_size) {
    return prepare_named(__func__, layer, workspace_size);
}

dynconv_status dynconv_conv2d_backward(dynconv_conv2d *layer, const float *input,
                                       const float *grad_output,
                                       const dynconv_conv2d_gradients *gradients, uint32_t flags,
                                       void *workspace, size_t workspace_size) {
    return backward_named(__func__, layer, input, grad_output, gradients, flags, workspace,
                          workspace_size);
}

dynconv_status dynconv_linear_backward_workspace_size(const dynconv_linear *layer,
                                                      size_t *workspace_size) {
    return workspace_size_named(__func__, layer != NULL ? layer->conv : NULL, workspace_size);
}

dynconv_status dynconv_linear_prepare_backward(dynconv_linear *layer, size_t *workspace_size) {
    return prepare_named(__func__, layer != NULL ? layer->conv : NULL, workspace_size);
}

dynconv_status dynconv_linear_backward(dynconv_linear *layer, const float *input,
                                       const float *grad_output,
                                       const dynconv_linear_gradients *gradients, uint32_t flags,
                                       void *workspace, size_t workspace_size) {
    /* The two structs list the same arrays; the linear one speaks of features. */
    dynconv_conv2d_gradients g = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    if (gradients != NULL) {
        g = (dynconv_conv2d_gradients){gradients->input,      gradients->weight,
                                       gradients->bias,       gradients->fc1_weight,
                                       gradients->fc1_bias,   gradients->fc2_weight,
                                       gradients->fc2_bias};
    }
    return backward_named(__func__, layer != NULL ? layer->conv : NULL, input, grad_output,
                          gradients != NULL ? &g : NULL, flags, workspace, workspace_size);
}
