/* dynconv info, and the platform report that dynconv bench prints first. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdlib.h>
#include <unistd.h>

#include <dynconv/dynconv.h>

#include "dcio.h"

/* Prints the BLAS lines: which core OpenBLAS runs and who chose it. Warns (on stderr) when it
 * runs a generic core although the CPU has AVX2 or AVX-512: OpenBLAS did not recognise the CPU,
 * or OPENBLAS_CORETYPE asked for it. A core OpenBLAS chose for this CPU gets no advice. */
void print_blas(FILE *out) {
    const char *core = dynconv_blas_core();
    dcio_cpu cpu;
    dcio_cpu_detect(&cpu);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    const bool forced = coretype != NULL && coretype[0] != '\0';
    const char *better = dcio_blas_better_core(core, &cpu);
    fprintf(out, "BLAS:          %s\n", dynconv_blas_config());
    if (forced) {
        fprintf(out, "BLAS core:     %s (OPENBLAS_CORETYPE=%s)\n", core, coretype);
    } else {
        fprintf(out, "BLAS core:     %s (chosen by OpenBLAS)\n", core);
    }
    fprintf(out, "BLAS fallback: %s\n", better != NULL ? "yes" : "no");
    if (better != NULL) {
        fprintf(out, "BLAS suggested core: %s\n", better);
    }
    fprintf(out, "BLAS threads:  %d\n", dynconv_blas_num_threads());
    if (better != NULL) {
        fprintf(stderr,
                "warning: OpenBLAS runs its generic '%s' kernels on a CPU with %s (%s), several "
                "times slower than its '%s' kernels. Set OPENBLAS_CORETYPE=%s in the environment "
                "before starting the program.\n",
                core, cpu.avx512_skylakex ? "AVX-512" : "AVX2",
                forced ? "OPENBLAS_CORETYPE asked for them" : "it did not recognise the CPU",
                better, better);
    }
}

/* The thread count a new handle starts with (one per CPU the process may run on), as the
 * library resolves it; 0 if it cannot be asked. */
int default_threads(void) {
    const dynconv_conv2d_geometry g = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
    const float one = 1.0f;
    const dynconv_conv2d_weights w = {&one, NULL, &one, NULL, &one, NULL};
    dynconv_conv2d *layer = NULL;
    int threads = 0;
    if (dynconv_conv2d_create(&g, &w, 1.0f, 0, &layer) != DYNCONV_OK ||
        dynconv_conv2d_get_num_threads(layer, &threads) != DYNCONV_OK) {
        threads = 0;
    }
    dynconv_conv2d_destroy(layer);
    return threads;
}

static void info_help(void) {
    printf("usage: dynconv info [--model NET.safetensors]\n"
           "\n"
           "Prints the library version, the BLAS it calls (configuration, kernel set, threads),\n"
           "the threads a layer uses by default, and the CPU's model and vector features.\n"
           "\"BLAS fallback: yes\" (with a warning on stderr) means OpenBLAS runs one of its\n"
           "generic kernel sets (Prescott, ...) on a CPU with AVX2 or AVX-512, usually because it\n"
           "did not recognise the CPU; \"BLAS suggested core:\" then names the OPENBLAS_CORETYPE\n"
           "to set before the program starts.\n"
           "\n"
           "  --model FILE   instead, describe the network of FILE (dynconv infer's --model):\n"
           "                 its nodes as the network runs them (execution order, after\n"
           "                 BatchNorm folding and activation fusion) with name, op, K, the\n"
           "                 fused BatchNorm/ReLU, the output shape at the input shape the\n"
           "                 file was traced with, and the parameters; then the total\n"
           "                 parameters and the peak memory at that shape\n");
}

int cmd_info(int argc, char **argv) {
    program_command = "dynconv info";
    option opts[] = {{"model", true, NULL}};
    const int rc = parse_options(argc, argv, opts, 1, info_help);
    if (rc != OPTIONS_PARSED) {
        return rc;
    }
    if (opts[0].value != NULL) {
        return print_model_info(opts[0].value);
    }
    dcio_cpu cpu;
    dcio_cpu_detect(&cpu);
    printf("libdynconv:    %s (built against %s)\n", dynconv_version_string(),
           DYNCONV_VERSION_STRING);
    print_blas(stdout);
    printf("CPU:           %s\n", cpu.model);
    printf("CPUs online:   %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    printf("threads:       %d per layer by default (the CPUs this process may run on)\n",
           default_threads());
    printf("CPU features:  sse4.2=%s avx=%s avx2=%s fma=%s avx512f=%s\n", cpu.sse42 ? "yes" : "no",
           cpu.avx ? "yes" : "no", cpu.avx2 ? "yes" : "no", cpu.fma ? "yes" : "no",
           cpu.avx512f ? "yes" : "no");
    return 0;
}
