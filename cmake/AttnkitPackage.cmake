# Debian packages of the C library and the programs (CPack's DEB generator; `./attnkit.sh package`
# or `cpack --config build/CPackConfig.cmake -B dist`), one per install component of
# cmake/AttnkitInstall.cmake and tools/CMakeLists.txt:
#   libattnkit1     (component runtime): libattnkit.so.1*, the attnkit command and the other programs
#   libattnkit-dev  (component dev): headers, libattnkit.so, attnkitConfig*.cmake, attnkit.pc
# Anything installed without a component (the Java binding's Maven files) is in neither.
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "attnkit")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "attnkit")
set(CPACK_PACKAGE_CONTACT "attnkit maintainers <maintainers@users.noreply.h-seed-0f04dc61.example>")
# Each package's Description is its own (first line: the summary). CPACK_PACKAGE_DESCRIPTION_SUMMARY
# stays unset: CPack would put it in front of both as a second summary line.
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # NAME_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME "libattnkit${ATTNKIT_ABI_VERSION}")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION "libs")
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "KV cache eviction and sparse attention library (C ABI)
attnkit keeps the KV cache of long LLM generations within a budget, computes only the
important blocks of long prompts and prunes VLM image tokens. This package holds the
shared library (C ABI ${ATTNKIT_ABI_VERSION}) and the attnkit command-line tool.")
# The runtime Depends come from the ELF files themselves (libtorch, Abseil, protobuf, OpenMP, the C++
# runtime: whatever the build linked), and the package declares its own shlibs for packages that
# link libattnkit.so.1.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# libtorch reaches BLAS through the libblas.so.3 alternative; the OpenMP OpenBLAS is the one attnkit
# is measured with (docs/DEPENDENCIES.md), so it is recommended rather than required.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_RECOMMENDS "libopenblas0-openmp")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME "libattnkit-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION "libdevel")
set(CPACK_DEBIAN_DEV_DESCRIPTION "KV cache eviction and sparse attention library: development files
The C headers (<attnkit/attnkit.h>), the libattnkit.so link, attnkit.pc for pkg-config and
attnkitConfig.cmake for find_package(attnkit).")
# The headers include <dlpack/dlpack.h>; the others are what the library is built against, for hosts
# that build attnkit's own tools and bindings against the installed package.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libattnkit${ATTNKIT_ABI_VERSION} (= ${CPACK_PACKAGE_VERSION}), libdlpack-dev, libtorch-dev, libabsl-dev, libprotobuf-dev")

include(CPack)
