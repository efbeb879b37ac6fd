# Helpers for the C# binding and samples: protoc --csharp_out, dotnet builds driven from CMake, and
# ctest registration. dotnet writes nothing into the source tree (--artifacts-path in the build tree).
find_program(ATTNKIT_DOTNET dotnet REQUIRED)

# Where every dotnet project of this build puts bin/ and obj/.
set(ATTNKIT_DOTNET_ARTIFACTS "${PROJECT_BINARY_DIR}/dotnet")
# The offline NuGet folder of the dotnet machines (xunit, test SDK) beside the NuGet registry.
set(ATTNKIT_NUGET_EXTRA_SOURCE "/opt/nuget/packages" CACHE PATH "Extra NuGet source folder (empty: none)")

# attnkit_csharp_protos(<out_var> <gen_dir>): C# for proto/attnkit/v1/*.proto, generated at build time.
function(attnkit_csharp_protos out_var gen_dir)
  file(GLOB protos CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/proto/attnkit/v1/*.proto")
  set(outputs)
  foreach(proto IN LISTS protos)
    # protoc names the file after the proto in PascalCase: sparse_attention.proto -> SparseAttention.cs.
    get_filename_component(stem "${proto}" NAME_WE)
    string(REPLACE "_" ";" words "${stem}")
    set(pascal "")
    foreach(word IN LISTS words)
      string(SUBSTRING "${word}" 0 1 first)
      string(SUBSTRING "${word}" 1 -1 rest)
      string(TOUPPER "${first}" first)
      string(APPEND pascal "${first}${rest}")
    endforeach()
    list(APPEND outputs "${gen_dir}/${pascal}.cs")
  endforeach()
  add_custom_command(
    OUTPUT ${outputs}
    COMMAND ${CMAKE_COMMAND} -E make_directory "${gen_dir}"
    COMMAND protobuf::protoc --csharp_out=${gen_dir} -I "${PROJECT_SOURCE_DIR}/proto" ${protos}
    DEPENDS ${protos} protobuf::protoc
    COMMENT "protoc --csharp_out attnkit.v1"
    VERBATIM)
  set(${out_var} ${outputs} PARENT_SCOPE)
endfunction()

include(AttnkitSwig)

# Where bindings/csharp generates the binding's sources and native libraries, and the -p: properties
# every dotnet call of this build passes (the samples are configured before bindings/, so these
# are fixed here rather than exported from there).
set(ATTNKIT_CSHARP_BINARY_DIR "${PROJECT_BINARY_DIR}/bindings/csharp")
set(ATTNKIT_CSHARP_SWIG_DIR "${ATTNKIT_CSHARP_BINARY_DIR}/swig")
set(ATTNKIT_CSHARP_PROTO_DIR "${ATTNKIT_CSHARP_BINARY_DIR}/proto")
set(ATTNKIT_CSHARP_NATIVE_DIR "${ATTNKIT_CSHARP_BINARY_DIR}/native")
# The generated sources (swig/, proto/ below this folder) carry few doc comments: no CS1591 for
# them, while AttnKit.csproj makes it an error for the hand-written API.
file(WRITE "${ATTNKIT_CSHARP_BINARY_DIR}/.editorconfig"
     "# Written by cmake/AttnkitCSharp.cmake: generated C# sources need no doc comments.\n"
     "[*.cs]\ndotnet_diagnostic.CS1591.severity = none\n")
set(ATTNKIT_DOTNET_PROPERTIES
  "-p:AttnKitSwigDir=${ATTNKIT_CSHARP_SWIG_DIR}/csharp"
  "-p:AttnKitProtoDir=${ATTNKIT_CSHARP_PROTO_DIR}"
  "-p:AttnKitNativeDir=${ATTNKIT_CSHARP_NATIVE_DIR}"
  "-p:AttnKitVersion=${PROJECT_VERSION}")

# Every dotnet build and pack runs in this one-job pool (Ninja): each rebuilds the AttnKit project
# it references into the same artifacts folder, and two at once collide on its files ("The process
# cannot access the file .../AttnKit.deps.json because it is being used by another process", seen
# when `dotnet pack AttnKit` and the Generate sample's build ran side by side). Other generators
# ignore pools; there, the targets' DEPENDS order what must come first.
# (This file is included by the binding and by the samples: the pool is declared once.)
get_property(attnkit_job_pools GLOBAL PROPERTY JOB_POOLS)
if(NOT "attnkit_dotnet=1" IN_LIST attnkit_job_pools)
  set_property(GLOBAL APPEND PROPERTY JOB_POOLS attnkit_dotnet=1)
endif()

# attnkit_dotnet_build(<target> PROJECT <csproj> [SOURCES <files...>] [DEPENDS <deps...>])
#   `dotnet build` of <csproj> (and what it references) when its sources change; target <target>.
#   Runs in the attnkit_dotnet job pool.
function(attnkit_dotnet_build target)
  cmake_parse_arguments(ARG "" "PROJECT" "SOURCES;DEPENDS" ${ARGN})
  set(stamp "${CMAKE_CURRENT_BINARY_DIR}/${target}.stamp")
  set(restore_sources)
  if(ATTNKIT_NUGET_EXTRA_SOURCE AND EXISTS "${ATTNKIT_NUGET_EXTRA_SOURCE}")
    set(restore_sources "-p:RestoreAdditionalProjectSources=${ATTNKIT_NUGET_EXTRA_SOURCE}")
  endif()
  add_custom_command(
    OUTPUT "${stamp}"
    COMMAND ${ATTNKIT_DOTNET} build "${ARG_PROJECT}" -c Release --nologo -v:minimal
            --artifacts-path "${ATTNKIT_DOTNET_ARTIFACTS}" ${restore_sources} ${ATTNKIT_DOTNET_PROPERTIES}
    COMMAND ${CMAKE_COMMAND} -E touch "${stamp}"
    DEPENDS "${ARG_PROJECT}" ${ARG_SOURCES} ${ARG_DEPENDS}
    COMMENT "dotnet build ${target}"
    JOB_POOL attnkit_dotnet
    VERBATIM)
  add_custom_target(${target} ALL DEPENDS "${stamp}")
endfunction()

# attnkit_dotnet_output(<out_var> <project name>): the folder dotnet builds <project name> into.
function(attnkit_dotnet_output out_var name)
  string(TOLOWER "${name}" lower)
  set(${out_var} "${ATTNKIT_DOTNET_ARTIFACTS}/bin/${name}/release" PARENT_SCOPE)
endfunction()

# attnkit_csharp_test(<name> COMMAND <cmd...> [LABELS <labels>]): ctest csharp_<name>, label csharp.
function(attnkit_csharp_test name)
  cmake_parse_arguments(ARG "" "" "COMMAND;LABELS" ${ARGN})
  add_test(NAME csharp_${name} COMMAND ${ARG_COMMAND})
  set_tests_properties(csharp_${name} PROPERTIES
    LABELS "csharp;${ARG_LABELS}"
    ENVIRONMENT "ATTNKIT_SHARED_DIR=${ATTNKIT_SHARED_DIR};ATTNKIT_MODELS_DIR=${ATTNKIT_SHARED_DIR}/models;OMP_NUM_THREADS=2;DOTNET_CLI_TELEMETRY_OPTOUT=1;DOTNET_NOLOGO=1")
endfunction()
