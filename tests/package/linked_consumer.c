/* A program linked against the installed library (by pkg-config or by CMake's find_package). */
#include "check.h"

int main(int argc, char **argv) {
    const api a = {dynconv_conv2d_create, dynconv_conv2d_reshape, dynconv_conv2d_forward,
                   dynconv_conv2d_destroy, dynconv_status_string, dynconv_last_error_message,
                   dynconv_version_number};
    return run_check(&a, argc > 1 ? argv[1] : argv[0]);
}
