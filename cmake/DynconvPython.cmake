# The Python package python/dynconv (pure Python: ctypes + numpy) and its `dynconv-export`
# command, installed next to the library (component "python"):
#   <prefix>/<DYNCONV_PYTHON_INSTALL_DIR>/dynconv/   the package
#   <prefix>/bin/dynconv-export                      runs dynconv.export:main
# The package's version must be the library's: python/dynconv/_version.py is checked against
# the header here, so a release cannot be configured with the two apart.
file(STRINGS ${PROJECT_SOURCE_DIR}/python/dynconv/_version.py _dc_py_version_line
     REGEX "^__version__ = ")
string(REGEX MATCH "\"([^\"]*)\"" _ "${_dc_py_version_line}")
if(NOT CMAKE_MATCH_1 STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "python/dynconv/_version.py says '${CMAKE_MATCH_1}', "
                      "include/dynconv/dynconv.h says ${PROJECT_VERSION}")
endif()

find_package(Python3 COMPONENTS Interpreter)
option(DYNCONV_INSTALL_PYTHON "Install the Python package and the dynconv-export command"
       ${Python3_Interpreter_FOUND})
if(NOT DYNCONV_INSTALL_PYTHON)
  return()
endif()
if(NOT Python3_Interpreter_FOUND)
  message(FATAL_ERROR "DYNCONV_INSTALL_PYTHON needs a python3 interpreter (Python3_EXECUTABLE)")
endif()

# Where the interpreter looks for packages under this prefix: Debian's /usr/lib/python3/
# dist-packages for a Debian interpreter and the /usr prefix, its dist-packages under /usr/local,
# else the interpreter's own layout (lib/python3.X/site-packages) below the prefix.
if(NOT DEFINED CACHE{DYNCONV_PYTHON_INSTALL_DIR})
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c [=[
import sys, sysconfig
prefix = sys.argv[1]
schemes = sysconfig.get_scheme_names()
if prefix == "/usr" and "deb_system" in schemes:
    print("lib/python3/dist-packages", end="")
elif prefix == "/usr/local" and "posix_local" in schemes:
    path = sysconfig.get_path("purelib", "posix_local", vars={"base": "/usr"})
    print(path[len("/usr/local/"):], end="")
else:
    path = sysconfig.get_path("purelib", "posix_prefix", vars={"base": prefix})
    print(path[len(prefix.rstrip("/")) + 1:], end="")
]=] ${CMAKE_INSTALL_PREFIX}
    OUTPUT_VARIABLE _dc_pydir RESULT_VARIABLE _dc_rc)
  if(NOT _dc_rc EQUAL 0 OR _dc_pydir STREQUAL "")
    message(FATAL_ERROR "cannot ask ${Python3_EXECUTABLE} for its package directory")
  endif()
  set(DYNCONV_PYTHON_INSTALL_DIR "${_dc_pydir}" CACHE STRING
      "Directory (relative to the prefix, or absolute) for the Python package")
endif()
message(STATUS "Python package: ${DYNCONV_PYTHON_INSTALL_DIR} (for ${Python3_EXECUTABLE})")

install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/dynconv
        DESTINATION ${DYNCONV_PYTHON_INSTALL_DIR} COMPONENT python
        FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)

# The command: a small script for this interpreter. Outside the interpreter's own search path
# (a private prefix) it finds the package relative to itself.
if(IS_ABSOLUTE "${DYNCONV_PYTHON_INSTALL_DIR}")
  set(_dc_pyabs "${DYNCONV_PYTHON_INSTALL_DIR}")
else()
  set(_dc_pyabs "${CMAKE_INSTALL_PREFIX}/${DYNCONV_PYTHON_INSTALL_DIR}")
endif()
file(RELATIVE_PATH DYNCONV_BIN_TO_PYTHON "${CMAKE_INSTALL_FULL_BINDIR}" "${_dc_pyabs}")
set(DYNCONV_PYTHON_SHEBANG "${Python3_EXECUTABLE}")
configure_file(${PROJECT_SOURCE_DIR}/python/dynconv-export.in
               ${PROJECT_BINARY_DIR}/dynconv-export @ONLY)
install(PROGRAMS ${PROJECT_BINARY_DIR}/dynconv-export
        DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT python)
if(DYNCONV_INSTALL_MAN)
  install(FILES ${PROJECT_SOURCE_DIR}/man/dynconv-export.1
          DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT python)
endif()
