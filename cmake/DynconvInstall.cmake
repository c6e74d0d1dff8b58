# Install rules: headers, the SONAME'd library, pkg-config metadata and a CMake package.
include(CMakePackageConfigHelpers)

install(TARGETS dynconv EXPORT dynconvTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(DIRECTORY include/dynconv DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)

# pkg-config: paths are written relative to ${prefix} only when LIBDIR/INCLUDEDIR are relative.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(DYNCONV_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(DYNCONV_PC_LIBDIR "\${exec_prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(DYNCONV_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(DYNCONV_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(pkgconfig/dynconv.pc.in ${PROJECT_BINARY_DIR}/dynconv.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dynconv.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

set(DYNCONV_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/dynconv)
install(EXPORT dynconvTargets NAMESPACE dynconv:: DESTINATION ${DYNCONV_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/dynconvConfig.cmake.in
  ${PROJECT_BINARY_DIR}/dynconvConfig.cmake INSTALL_DESTINATION ${DYNCONV_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/dynconvConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/dynconvConfig.cmake ${PROJECT_BINARY_DIR}/dynconvConfigVersion.cmake
        DESTINATION ${DYNCONV_CMAKE_DIR} COMPONENT dev)
