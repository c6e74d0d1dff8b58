# ctest version_sources: the version is written once, in include/dynconv/dynconv.h; every other
# place that states it must agree (cmake -DSOURCE_DIR=... -P DynconvCheckVersion.cmake):
#   - the header's own DYNCONV_VERSION_STRING,
#   - python/dynconv/_version.py (the Python package's __version__; pyproject.toml reads it),
#   - the latest entry of debian/changelog (the upstream version, optionally followed by .N
#     for a packaging-only revision of the native package).
file(STRINGS ${SOURCE_DIR}/include/dynconv/dynconv.h _lines REGEX "#define DYNCONV_VERSION_")
foreach(_line IN LISTS _lines)
  if(_line MATCHES "DYNCONV_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+)")
    set(_${CMAKE_MATCH_1} ${CMAKE_MATCH_2})
  elseif(_line MATCHES "DYNCONV_VERSION_STRING \"([^\"]*)\"")
    set(_string ${CMAKE_MATCH_1})
  endif()
endforeach()
set(_version "${_MAJOR}.${_MINOR}.${_PATCH}")
set(_errors "")
if(NOT _string STREQUAL _version)
  string(APPEND _errors "  DYNCONV_VERSION_STRING is '${_string}'\n")
endif()

file(STRINGS ${SOURCE_DIR}/python/dynconv/_version.py _py REGEX "^__version__ = ")
if(NOT _py MATCHES "\"${_version}\"")
  string(APPEND _errors "  python/dynconv/_version.py: '${_py}'\n")
endif()
file(STRINGS ${SOURCE_DIR}/python/pyproject.toml _attr REGEX "^version = ")
if(NOT _attr MATCHES "dynconv\\._version\\.__version__")
  string(APPEND _errors "  python/pyproject.toml does not take the version from dynconv._version\n")
endif()

if(EXISTS ${SOURCE_DIR}/debian/changelog)
  file(STRINGS ${SOURCE_DIR}/debian/changelog _first LIMIT_COUNT 1)
  string(REPLACE "." "\\." _re "${_version}")
  if(NOT _first MATCHES "^libdynconv \\(${_re}(\\.[0-9]+)?\\) ")
    string(APPEND _errors "  debian/changelog: '${_first}' (add an entry: dch -v ${_version})\n")
  endif()
endif()

if(_errors)
  message(FATAL_ERROR "include/dynconv/dynconv.h says ${_version}, but:\n${_errors}")
endif()
message(STATUS "version ${_version}: header, Python package and debian/changelog agree")
