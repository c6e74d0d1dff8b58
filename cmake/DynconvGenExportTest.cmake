# cmake -DHEADERS=<a;b> -DMAP=<version script> -DOUT=<file.c> -P DynconvGenExportTest.cmake
# Writes a C program that takes the address of every function the public headers declare with
# DYNCONV_API. Linked against the shared library, a function that is declared but not exported
# fails the link; at run time the program also looks each name up with the symbol version the
# version script gives it (a declared function the script does not list fails here).
# Also writes OUT.names: one "name node" line per declared function, for the exact-exports check.
cmake_minimum_required(VERSION 3.25)

# The version script: every node's explicit global names (no wildcards: each function is listed
# under the release that added it).
file(READ "${MAP}" _map)
string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" _map "${_map}")
# Semicolons would split CMake lists: the script's separators become blanks.
string(REPLACE ";" " " _map "${_map}")
string(REGEX MATCHALL "[A-Za-z_][A-Za-z0-9_.]*[ \t\r\n]*{[^}]*}" _blocks "${_map}")
set(_nodes)
foreach(_b IN LISTS _blocks)
  string(REGEX MATCH "^([A-Za-z_][A-Za-z0-9_.]*)" _ "${_b}")
  set(_node "${CMAKE_MATCH_1}")
  list(APPEND _nodes "${_node}")
  string(REGEX REPLACE "local:.*" "" _b "${_b}")
  string(REGEX REPLACE "^[^{]*{[ \t\r\n]*(global:)?" "" _b "${_b}")
  string(REGEX MATCHALL "[^ \t\r\n}]+" _listed "${_b}")
  foreach(_name IN LISTS _listed)
    if(_name MATCHES "[*?]")
      message(FATAL_ERROR "${MAP}: node ${_node} exports by pattern ('${_name}'): list names")
    endif()
    if(DEFINED _node_of_${_name})
      message(FATAL_ERROR "${MAP}: ${_name} is listed in ${_node_of_${_name}} and ${_node}")
    endif()
    set(_node_of_${_name} "${_node}")
  endforeach()
endforeach()
if(NOT _nodes)
  message(FATAL_ERROR "${MAP}: no version node found")
endif()
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
set(_lines "")
foreach(_n IN LISTS _names)
  if(NOT DEFINED _node_of_${_n})
    message(FATAL_ERROR "${_n} is declared in the public headers but not listed in ${MAP}")
  endif()
  string(APPEND _table "    {\"${_n}\", \"${_node_of_${_n}}\", (any_fn)${_n}},\n")
  string(APPEND _lines "${_n} ${_node_of_${_n}}\n")
endforeach()

set(_c "/* Generated from the public headers by cmake/DynconvGenExportTest.cmake: do not edit. */
#define _GNU_SOURCE /* dlvsym */
${_includes}
#include <dlfcn.h>
#include <stdio.h>

typedef void (*any_fn)(void);
static const struct {
    const char *name;
    const char *node; /* the symbol version the version script gives it */
    any_fn address;
} declared[] = {
${_table}};

int main(int argc, char **argv) {
    /* argv[1]: the library to look the names up in (its SONAME path). */
    if (argc != 2) {
        fprintf(stderr, \"usage: %s LIBRARY\\n\", argv[0]);
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
        } else if (dlvsym(lib, declared[i].name, declared[i].node) == NULL) {
            fprintf(stderr, \"%s: not exported with version %s\\n\", declared[i].name,
                    declared[i].node);
            ++bad;
        }
    }
    printf(\"%zu declared functions, %d missing\\n\", n, bad);
    dlclose(lib);
    return bad == 0 ? 0 : 1;
}
")
file(CONFIGURE OUTPUT "${OUT}" CONTENT "${_c}" @ONLY)
# The list the export check compares the library's dynamic symbols with: "name node" lines.
file(WRITE "${OUT}.names" "${_lines}")
