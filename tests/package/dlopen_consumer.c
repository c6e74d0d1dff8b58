/* A program that only has the header: it loads libdynconv.so.<major> at run time, as language
 * bindings do, and resolves the API by name and symbol version. */
#define _GNU_SOURCE /* dlvsym */
#include <dlfcn.h>
#include <string.h>

#include "check.h"

#define STR2(x) #x
#define STR(x) STR2(x)
#define SONAME "libdynconv.so." STR(DYNCONV_VERSION_MAJOR)
#define NODE "DYNCONV_" STR(DYNCONV_VERSION_MAJOR)

static void *lib;
static int missing;

/* Object and function pointers do not convert in ISO C; POSIX guarantees this copy works. */
static void resolve(const char *name, void *fn_ptr, size_t size) {
    void *sym = dlvsym(lib, name, NODE);
    if (sym == NULL) {
        fprintf(stderr, "dlopen consumer: %s@%s not found\n", name, NODE);
        ++missing;
        return;
    }
    memcpy(fn_ptr, &sym, size);
}
#define RESOLVE(field, name) resolve(name, &a.field, sizeof a.field)

int main(void) {
    lib = dlopen(SONAME, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "dlopen consumer: %s\n", dlerror());
        return 1;
    }
    api a;
    RESOLVE(create, "dynconv_conv2d_create");
    RESOLVE(reshape, "dynconv_conv2d_reshape");
    RESOLVE(forward, "dynconv_conv2d_forward");
    RESOLVE(destroy, "dynconv_conv2d_destroy");
    RESOLVE(status_string, "dynconv_status_string");
    RESOLVE(last_error_message, "dynconv_last_error_message");
    RESOLVE(version_number, "dynconv_version_number");
    const int rc = missing == 0 ? run_check(&a, "dlopen consumer") : 1;
    dlclose(lib);
    return rc;
}
