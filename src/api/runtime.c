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

/* Case-insensitive equality of an ASCII name (OpenBLAS has spelt its cores both ways). */
static bool same_name(const char *a, const char *b) {
    for (; *a != '\0' && *b != '\0'; ++a, ++b) {
        const char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
        const char y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
        if (x != y) {
            return false;
        }
    }
    return *a == *b;
}

/* Whether the core OpenBLAS runs is one of names[0 .. n). */
static bool blas_core_in(const char *const *names, size_t n) {
    const char *core = dynconv_blas_core();
    for (size_t i = 0; i < n; ++i) {
        if (same_name(core, names[i])) {
            return true;
        }
    }
    return false;
}

bool dc_blas_runs_avx512(void) {
    static const char *const wide[] = {"skylakex", "cooperlake", "sapphirerapids"};
    return blas_core_in(wide, sizeof wide / sizeof wide[0]);
}

bool dc_blas_runs_fma(void) {
    static const char *const fma[] = {"haswell", "zen", "skylakex", "cooperlake",
                                      "sapphirerapids"};
    return blas_core_in(fma, sizeof fma / sizeof fma[0]);
}

int dynconv_blas_num_threads(void) { return openblas_get_num_threads(); }
