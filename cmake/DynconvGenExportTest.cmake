# cmake -DHEADERS=<a;b> -DOUT=<file.c> -P DynconvGenExportTest.cmake
# Writes a C program that takes the address of every function the public headers declare with
# DYNCONV_API. Linked against the shared library, a function that is declared but not exported
# fails the link; at run time the program also looks each name up with its symbol version.
cmake_minimum_required(VERSION 3.25)
set(_names)
set(_includes)
foreach(_h IN LISTS HEADERS)
  file(READ "${_h}" _text)
  # Comments could mention DYNCONV_API( in prose; drop them before matching declarations.
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" _text "${_text}")
  # The export macro's own #define lines are not declarations.
  string(REGEX REPLACE "(^|\n)[ \t]*#[^\n]*" "\\1" _text "${_text}")
  string(REGEX MATCHALL "DYNCONV_API[^;{}()#]*\\(" _decls "${_text}")
  foreach(_d IN LISTS _decls)
    string(REGEX MATCH "([A-Za-z_][A-Za-z0-9_]*)[ \t\r\n]*\\($" _ "${_d}")
    set(_name "${CMAKE_MATCH_1}")
    if(NOT _name MATCHES "^dynconv_")
      message(FATAL_ERROR "${_h}: exported function '${_name}' lacks the dynconv_ prefix")
    endif()
    list(APPEND _names "${_name}")
  endforeach()
  get_filename_component(_base "${_h}" NAME)
  string(APPEND _includes "#include <dynconv/${_base}>\n")
endforeach()
list(REMOVE_DUPLICATES _names)
list(SORT _names)
list(LENGTH _names _count)
if(_count EQUAL 0)
  message(FATAL_ERROR "no DYNCONV_API declarations found in ${HEADERS}")
endif()

set(_table "")
foreach(_n IN LISTS _names)
  string(APPEND _table "    {\"${_n}\", (any_fn)${_n}},\n")
endforeach()

set(_c "/* Generated from the public headers by cmake/DynconvGenExportTest.cmake: do not edit. */
#define _GNU_SOURCE /* dlvsym */
${_includes}
#include <dlfcn.h>
#include <stdio.h>

typedef void (*any_fn)(void);
static const struct {
    const char *name;
    any_fn address;
} declared[] = {
${_table}};

int main(int argc, char **argv) {
    /* argv[1]: the library to look the names up in (its SONAME path); argv[2]: the version. */
    if (argc != 3) {
        fprintf(stderr, \"usage: %s LIBRARY VERSION_NODE\\n\", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, \"dlopen %s: %s\\n\", argv[1], dlerror());
        return 1;
    }
    int bad = 0;
    const size_t n = sizeof declared / sizeof declared[0];
    for (size_t i = 0; i < n; ++i) {
        if (declared[i].address == NULL) {
            fprintf(stderr, \"%s: no address\\n\", declared[i].name);
            ++bad;
        } else if (dlvsym(lib, declared[i].name, argv[2]) == NULL) {
            fprintf(stderr, \"%s: not exported with version %s\\n\", declared[i].name, argv[2]);
            ++bad;
        }
    }
    printf(\"%zu declared functions, %d missing\\n\", n, bad);
    dlclose(lib);
    return bad == 0 ? 0 : 1;
}
")
file(CONFIGURE OUTPUT "${OUT}" CONTENT "${_c}" @ONLY)
# The list the export check compares the library's dynamic symbols with.
string(REPLACE ";" "\n" _lines "${_names}")
file(WRITE "${OUT}.names" "${_lines}\n")
