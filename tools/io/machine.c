/* See dcio.h, "The machine". */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "dcio.h"

static void read_cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) {
        return;
    }
    char line[512];
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *colon = strchr(line, ':');
            if (colon != NULL) {
                colon++;
                while (*colon == ' ' || *colon == '\t') {
                    colon++;
                }
                snprintf(buf, size, "%s", colon);
                buf[strcspn(buf, "\n")] = '\0';
            }
            break;
        }
    }
    fclose(f);
}

void dcio_cpu_detect(dcio_cpu *cpu)
{
    memset(cpu, 0, sizeof *cpu);
    read_cpu_model(cpu->model, sizeof cpu->model);
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    cpu->sse42 = __builtin_cpu_supports("sse4.2") != 0;
    cpu->avx = __builtin_cpu_supports("avx") != 0;
    cpu->avx2 = __builtin_cpu_supports("avx2") != 0;
    cpu->fma = __builtin_cpu_supports("fma") != 0;
    cpu->avx512f = __builtin_cpu_supports("avx512f") != 0;
    /* What OpenBLAS's SkylakeX kernels execute. */
    cpu->avx512_skylakex = cpu->avx512f && __builtin_cpu_supports("avx512bw") != 0 &&
                           __builtin_cpu_supports("avx512vl") != 0 &&
                           __builtin_cpu_supports("avx512dq") != 0 &&
                           __builtin_cpu_supports("avx512cd") != 0;
#endif
}

const char *dcio_cpu_isa(const dcio_cpu *cpu)
{
    return cpu->avx512f ? "avx512f" : cpu->avx2 ? "avx2" : "baseline";
}

/* OpenBLAS's cores for CPUs without AVX2, which it also runs when it does not recognise a CPU
 * (Prescott is the usual one). A name not in the list is a core it chose for this CPU. */
static const char *const generic_cores[] = {
    "prescott", "core2",   "penryn",  "dunnington", "nehalem",      "atom",
    "katmai",   "coppermine", "northwood", "banias", "opteron",     "opteron_sse3",
    "barcelona", "bobcat", "nano",    "sandybridge", "generic",     "unknown",
};

static bool same_name(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; ++a, ++b) {
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) {
            return false;
        }
    }
    return *a == *b;
}

const char *dcio_blas_better_core(const char *core, const dcio_cpu *cpu)
{
    bool generic = false;
    for (size_t i = 0; i < sizeof generic_cores / sizeof generic_cores[0]; ++i) {
        generic = generic || same_name(core, generic_cores[i]);
    }
    if (!generic) {
        return NULL;
    }
    if (cpu->avx512_skylakex) {
        return "SkylakeX";
    }
    if (cpu->avx2 && cpu->fma) {
        return "Haswell";
    }
    return NULL;
}
