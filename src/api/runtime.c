/* What the BLAS underneath reports about itself: which kernels run decides the speed. */
#include "internal.h"

#include <cblas.h>

const char *dynconv_blas_config(void) {
    const char *s = openblas_get_config();
    return s != NULL ? s : "unknown";
}

const char *dynconv_blas_core(void) {
    const char *s = openblas_get_corename();
    return s != NULL ? s : "unknown";
}

int dynconv_blas_num_threads(void) { return openblas_get_num_threads(); }
