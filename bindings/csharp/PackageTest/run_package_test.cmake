# ctest csharp_nuget_package: a fresh project in WORK_DIR restores the AttnKit package from the local
# folder PACKAGE_DIR (Google.Protobuf from the machine's configured NuGet sources) into its own
# packages folder, so the package under test is never an older copy from the global cache, then runs.
foreach(var DOTNET PACKAGE_DIR PACKAGE_VERSION CONSUMER_SOURCE WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_package_test.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT EXISTS "${PACKAGE_DIR}/AttnKit.${PACKAGE_VERSION}.nupkg")
  message(FATAL_ERROR "no package ${PACKAGE_DIR}/AttnKit.${PACKAGE_VERSION}.nupkg (build attnkit_csharp_nupkg)")
endif()
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(PACKAGES_DIR "${WORK_DIR}/packages")
configure_file("${CONSUMER_SOURCE}/PackageTest.csproj.in" "${WORK_DIR}/PackageTest.csproj" @ONLY)
file(COPY "${CONSUMER_SOURCE}/Program.cs" DESTINATION "${WORK_DIR}")
set(extra "")
if(EXTRA_SOURCE AND EXISTS "${EXTRA_SOURCE}")
  set(extra "    <add key=\"offline\" value=\"${EXTRA_SOURCE}\" />\n")
endif()
file(WRITE "${WORK_DIR}/nuget.config" "<?xml version=\"1.0\" encoding=\"utf-8\"?>
<configuration>
  <packageSources>
    <add key=\"attnkit-local\" value=\"${PACKAGE_DIR}\" />
${extra}  </packageSources>
</configuration>
")
execute_process(COMMAND "${DOTNET}" run --project "${WORK_DIR}/PackageTest.csproj" -c Release
                WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "the package consumer failed (${result})")
endif()
file(GLOB native "${PACKAGES_DIR}/attnkit/${PACKAGE_VERSION}/runtimes/linux-x64/native/*")
list(LENGTH native count)
if(count LESS 2)
  message(FATAL_ERROR "the restored package lacks runtimes/linux-x64/native libraries: ${native}")
endif()
message(STATUS "native libraries restored from the package: ${native}")
