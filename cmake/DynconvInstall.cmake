# Install rules: headers, the SONAME'd library, pkg-config metadata and a CMake package.
include(CMakePackageConfigHelpers)

install(TARGETS dynconv EXPORT dynconvTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(DIRECTORY include/dynconv DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)

# pkg-config: the prefix is found relative to the .pc file itself (${pcfiledir}), so the
# installed tree stays valid when `cmake --install --prefix` or DESTDIR puts it elsewhere.
# Absolute LIBDIR/INCLUDEDIR are written as they are. A distribution package, whose prefix
# never moves, turns DYNCONV_PC_RELOCATABLE off: prefix=/usr then lets pkg-config drop the
# system directories from the flags (-I/usr/include would change the compiler's search order).
option(DYNCONV_PC_RELOCATABLE "dynconv.pc finds the prefix relative to itself" ON)
set(DYNCONV_PC_DIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${DYNCONV_PC_DIR}" OR NOT DYNCONV_PC_RELOCATABLE)
  set(DYNCONV_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _dc_up "/__prefix__/${DYNCONV_PC_DIR}" "/__prefix__")
  string(REGEX REPLACE "/$" "" _dc_up "${_dc_up}")
  set(DYNCONV_PC_PREFIX "\${pcfiledir}/${_dc_up}")
endif()
foreach(_kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_kind}}")
    set(DYNCONV_PC_${_kind} "${CMAKE_INSTALL_${_kind}}")
  else()
    set(DYNCONV_PC_${_kind} "\${prefix}/${CMAKE_INSTALL_${_kind}}")
  endif()
endforeach()
configure_file(pkgconfig/dynconv.pc.in ${PROJECT_BINARY_DIR}/dynconv.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dynconv.pc
        DESTINATION ${DYNCONV_PC_DIR} COMPONENT dev)

set(DYNCONV_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dynconv)
install(EXPORT dynconvTargets NAMESPACE dynconv:: DESTINATION ${DYNCONV_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/dynconvConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dynconvConfig.cmake INSTALL_DESTINATION ${DYNCONV_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dynconvConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dynconvConfig.cmake ${PROJECT_BINARY_DIR}/dynconvConfigVersion.cmake
        DESTINATION ${DYNCONV_CMAKE_DIR} COMPONENT dev)
