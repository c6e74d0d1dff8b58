# Debian packages with CPack (cpack -G DEB in the build directory; scripts/package-test.sh):
#   libdynconv<SOVERSION>  runtime: the SONAME'd shared library, with a shlibs file
#   libdynconv-dev         headers, the .so link, dynconv.pc and the CMake package
#   dynconv-tools          the dynconv command (when the tools are built)
# The runtime package is named after the SONAME, so an incompatible libdynconv2 can be
# installed next to it.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dynconv)
set(CPACK_PACKAGE_VENDOR "libdynconv")
set(CPACK_PACKAGE_CONTACT "libdynconv maintainers <maintainers@libdynconv.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_INSTALL_DIRECTORY dynconv)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
if(TARGET dynconv_cli)
  list(APPEND CPACK_COMPONENTS_ALL tools)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://libdynconv.invalid/")

set(_runtime libdynconv${DYNCONV_SOVERSION})
set(_dep_runtime "${_runtime} (= ${PROJECT_VERSION})")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME ${_runtime})
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "dynamic convolution (attention over convolution kernels) - shared library
libdynconv computes dynamic convolutions (Chen et al., CVPR 2020): K kernels per layer,
mixed per sample by a squeeze-and-excitation attention with a softmax temperature.
This package contains the shared library.")
# Depends from dpkg-shlibdeps (libc6, OpenBLAS); a shlibs file so that programs built against
# the library depend on this package at the version that introduced the symbols they use.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON) # only the runtime package holds a library
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libdynconv-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# dynconv.pc says Requires.private: openblas, so pkg-config needs openblas.pc to answer at all.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "${_dep_runtime}, libopenblas-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION "dynamic convolution (attention over convolution kernels) - development files
Headers, the libdynconv.so link, the pkg-config file dynconv.pc and the CMake package
(find_package(dynconv)) for building programs against libdynconv.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME dynconv-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION science)
# dpkg-shlibdeps finds libc6 and libjansson4; libdynconv itself is not installed at packaging
# time, so the dependency on it is stated here.
set(CPACK_DEBIAN_TOOLS_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR}/src)
set(CPACK_DEBIAN_TOOLS_PACKAGE_DEPENDS "${_dep_runtime}")
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "dynamic convolution (attention over convolution kernels) - command-line tool
The dynconv command: runs a dynamic convolution layer stored in a safetensors file on .npy
inputs, prints the library's configuration and benchmarks layers.")

include(CPack)
