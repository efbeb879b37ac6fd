# The Go toolchain for the Go binding (Debian: golang-go, protoc-gen-go, golang-google-protobuf-dev).
#
# Go modules are staged in the build tree: hand-written sources are copied there (at configure time,
# so an edit re-runs CMake), generated code (SWIG's cgo package, protoc-gen-go's messages) is written
# there at build time, and each staged go.mod gets a replace directive that resolves
# google.golang.org/protobuf from Debian's /usr/share/gocode. Nothing generated lands in the source
# tree, every Go cache lives in the build tree, and the go command never reaches the network.
#
# attnkit_go_stage_module(<source_dir> <staged_dir> [REPLACE <module=>dir>...] [EXCLUDE <regex>])
#   Copies <source_dir>'s *.go files and go.mod into <staged_dir>, appending the replace directives,
#   and removes staged *.go files that no longer have a source; files whose path (relative to
#   <source_dir>) matches EXCLUDE are left to the build.
# attnkit_go_test(<name> DIRECTORY <dir> COMMAND <args...> [LABELS <labels>])
#   Registers ctest `go_<name>` running `go <args>` in <dir> with the Go environment.
find_program(ATTNKIT_GO go REQUIRED)
find_program(ATTNKIT_PROTOC_GEN_GO protoc-gen-go REQUIRED)
find_program(ATTNKIT_GOFMT gofmt HINTS /usr/lib/go/bin REQUIRED)
set(ATTNKIT_GO_PROTOBUF_DIR "/usr/share/gocode/src/google.golang.org/protobuf" CACHE PATH
    "google.golang.org/protobuf's source (Debian golang-google-protobuf-dev)")
if(NOT EXISTS "${ATTNKIT_GO_PROTOBUF_DIR}/go.mod")
  message(FATAL_ERROR "ATTNKIT_BUILD_GO: no google.golang.org/protobuf at ${ATTNKIT_GO_PROTOBUF_DIR} "
                      "(apt-get install golang-google-protobuf-dev)")
endif()

set(ATTNKIT_GO_HOME "${PROJECT_BINARY_DIR}/go")
set(ATTNKIT_GO_PKGCONFIG_DIR "${ATTNKIT_GO_HOME}/pkgconfig")
# The environment of every go command: caches in the build tree, offline, local toolchain, cgo on,
# pkg-config finding the build tree's libattnkit (see bindings/go/CMakeLists.txt).
set(ATTNKIT_GO_ENV
  "GOCACHE=${ATTNKIT_GO_HOME}/cache"
  "GOPATH=${ATTNKIT_GO_HOME}/path"
  "GOMODCACHE=${ATTNKIT_GO_HOME}/path/pkg/mod"
  "GOPROXY=off"
  "GOSUMDB=off"
  "GOFLAGS=-mod=mod"
  "GO111MODULE=on"
  "GOTOOLCHAIN=local"
  "CGO_ENABLED=1"
  "PKG_CONFIG_PATH=${ATTNKIT_GO_PKGCONFIG_DIR}")

function(attnkit_go_stage_module source_dir staged_dir)
  cmake_parse_arguments(ARG "" "EXCLUDE" "REPLACE" ${ARGN})
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS RELATIVE "${source_dir}" "${source_dir}/*.go")
  if(ARG_EXCLUDE)
    list(FILTER sources EXCLUDE REGEX "${ARG_EXCLUDE}")
  endif()
  foreach(source IN LISTS sources)
    configure_file("${source_dir}/${source}" "${staged_dir}/${source}" COPYONLY)
  endforeach()
  # A staged file whose source was moved or deleted would still be compiled: remove it.
  file(GLOB_RECURSE staged RELATIVE "${staged_dir}" "${staged_dir}/*.go")
  foreach(staged_file IN LISTS staged)
    if(NOT staged_file IN_LIST sources AND NOT (ARG_EXCLUDE AND staged_file MATCHES "${ARG_EXCLUDE}"))
      file(REMOVE "${staged_dir}/${staged_file}")
    endif()
  endforeach()
  file(READ "${source_dir}/go.mod" go_mod)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${source_dir}/go.mod")
  string(APPEND go_mod "\n// Added by the build (cmake/AttnkitGo.cmake): offline resolution.\n")
  foreach(replace IN LISTS ARG_REPLACE)
    string(APPEND go_mod "replace ${replace}\n")
  endforeach()
  file(CONFIGURE OUTPUT "${staged_dir}/go.mod" CONTENT "${go_mod}" @ONLY)
endfunction()

function(attnkit_go_test name)
  cmake_parse_arguments(ARG "" "DIRECTORY" "COMMAND;LABELS" ${ARGN})
  add_test(NAME go_${name} COMMAND ${CMAKE_COMMAND} -E env ${ATTNKIT_GO_ENV} ${ATTNKIT_GO} ${ARG_COMMAND}
           WORKING_DIRECTORY "${ARG_DIRECTORY}")
  set_tests_properties(go_${name} PROPERTIES LABELS "go;${ARG_LABELS}"
    ENVIRONMENT "ATTNKIT_SHARED_DIR=${ATTNKIT_SHARED_DIR};ATTNKIT_MODELS_DIR=${ATTNKIT_SHARED_DIR}/models;OMP_NUM_THREADS=2")
endfunction()
