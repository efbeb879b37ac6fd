# Install rules: headers, libattnkit.so.N, attnkitConfig.cmake (find_package(attnkit)), attnkit.pc.
# Two install components, one Debian package each (cmake/AttnkitPackage.cmake): `runtime` (the
# versioned library and the programs, libattnkit1) and `dev` (headers, the unversioned .so link,
# CMake config, attnkit.pc; libattnkit-dev). A plain `cmake --install` installs both.
include(CMakePackageConfigHelpers)
install(TARGETS attnkit EXPORT attnkitTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/capi/include/attnkit" DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT dev)
install(EXPORT attnkitTargets NAMESPACE attnkit:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnkit
  COMPONENT dev)
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/attnkitConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/attnkitConfig.cmake" INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnkit)
write_basic_package_version_file("${PROJECT_BINARY_DIR}/attnkitConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion)
install(FILES "${PROJECT_BINARY_DIR}/attnkitConfig.cmake" "${PROJECT_BINARY_DIR}/attnkitConfigVersion.cmake"
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/attnkit COMPONENT dev)
# Relocatable: the prefix is found from the .pc file's own folder, so `cmake --install --prefix X`
# works wherever X is.
file(RELATIVE_PATH ATTNKIT_PC_TO_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
configure_file("${PROJECT_SOURCE_DIR}/cmake/attnkit.pc.in" "${PROJECT_BINARY_DIR}/attnkit.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/attnkit.pc" DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT dev)
