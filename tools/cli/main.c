/* dynconv: the command-line tool. Runs a dynamic convolution or linear layer, or a whole
 * network, saved from PyTorch (safetensors) on a NumPy array, times the benchmark workload, and
 * reports the platform.
 * This file dispatches to the commands and answers --help and --version; see cli.h. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include <dynconv/dynconv.h>

static void main_help(void) {
    printf("usage: dynconv <command> [options]\n"
           "\n"
           "Commands:\n"
           "  run     run a dynamic convolution layer from a safetensors file on a .npy array\n"
           "  infer   run a whole network exported from PyTorch on a .npy array\n"
           "  bench   time the benchmark workload and report GFLOP/s per layer\n"
           "  info    version, BLAS and its kernel set, threads, CPU features; with --model,\n"
           "          the nodes of a network\n"
           "\n"
           "'dynconv <command> --help' describes a command. 'dynconv --version' prints the\n"
           "version. Exit status: 0 success, 1 failure, 2 bad usage.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        return usage_error("no command given (run, infer, bench or info)");
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        main_help();
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("dynconv %s\n", dynconv_version_string());
        return 0;
    }
    if (strcmp(cmd, "run") == 0) {
        return cmd_run(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "infer") == 0) {
        return cmd_infer(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "bench") == 0) {
        return cmd_bench(argc - 2, argv + 2);
    }
    if (strcmp(cmd, "info") == 0) {
        return cmd_info(argc - 2, argv + 2);
    }
    return usage_error("unknown command '%s' (run, infer, bench or info)", cmd);
}
