# SWIG wrappers over the C headers, shared by the C#, Java and Go bindings (bindings/swig/).
#
# attnkit_swig_wrapper(<target> LANGUAGE <csharp|java|go> INTERFACE <module.i> OUTDIR <dir>
#                      [SWIG_FLAGS <flags...>])
#   Runs SWIG at build time: the language sources go to <dir>/<language>/ (cleared first), the C
#   wrapper to <dir>/<target>_wrap.c. Builds it with the shim (bindings/swig/attnkit_swig_shim.c)
#   into the shared library <target>, which links libattnkit only and finds it beside itself
#   ($ORIGIN). Sets <target>_SWIG_STAMP (a file to depend on once the language sources exist).
find_package(SWIG 4.0 REQUIRED)
# SWIG's -MMD depfile names absolute paths; let Ninja read it as written (recorded by the function).
if(POLICY CMP0116)
  cmake_policy(SET CMP0116 NEW)
endif()

set(ATTNKIT_SWIG_DIR "${PROJECT_SOURCE_DIR}/bindings/swig")

function(attnkit_swig_wrapper target)
  cmake_parse_arguments(ARG "" "LANGUAGE;INTERFACE;OUTDIR" "SWIG_FLAGS" ${ARGN})
  set(lang_dir "${ARG_OUTDIR}/${ARG_LANGUAGE}")
  set(wrapper "${ARG_OUTDIR}/${target}_wrap.c")
  set(stamp "${ARG_OUTDIR}/${target}.stamp")
  get_filename_component(interface_dir "${ARG_INTERFACE}" DIRECTORY)
  add_custom_command(
    OUTPUT "${wrapper}" "${stamp}"
    COMMAND ${CMAKE_COMMAND} -E rm -rf "${lang_dir}"
    COMMAND ${CMAKE_COMMAND} -E make_directory "${lang_dir}"
    COMMAND ${SWIG_EXECUTABLE} -${ARG_LANGUAGE} ${ARG_SWIG_FLAGS}
            -I${ATTNKIT_SWIG_DIR} -I${interface_dir} -I${PROJECT_SOURCE_DIR}/capi/include
            -MMD -MF "${wrapper}.d" -outdir "${lang_dir}" -o "${wrapper}" "${ARG_INTERFACE}"
    COMMAND ${CMAKE_COMMAND} -E touch "${stamp}"
    DEPENDS "${ARG_INTERFACE}" "${ATTNKIT_SWIG_DIR}/attnkit.i"
    DEPFILE "${wrapper}.d"
    COMMENT "SWIG ${ARG_LANGUAGE}: ${target}"
    VERBATIM)
  add_library(${target} SHARED "${wrapper}" "${ATTNKIT_SWIG_DIR}/attnkit_swig_shim.c")
  target_include_directories(${target} PRIVATE "${ATTNKIT_SWIG_DIR}")
  target_link_libraries(${target} PRIVATE attnkit::attnkit)
  # SWIG's generated C is not ours to lint; the shim is compiled with the project's warnings.
  set_source_files_properties("${wrapper}" PROPERTIES COMPILE_OPTIONS "-Wno-unused-parameter;-Wno-unused-function")
  set_target_properties(${target} PROPERTIES
    C_STANDARD 11
    BUILD_RPATH "\$ORIGIN"
    INSTALL_RPATH "\$ORIGIN"
    LINK_DEPENDS "${ATTNKIT_SWIG_DIR}/attnkit_swig_shim.h")
  target_link_options(${target} PRIVATE "-Wl,--no-undefined")
  set(${target}_SWIG_STAMP "${stamp}" PARENT_SCOPE)
endfunction()
