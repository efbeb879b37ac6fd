# The Python binding's toolchain: Debian's interpreter (its numpy and protobuf are Debian packages;
# a pyenv or other python3 earlier on PATH usually lacks them), its headers, protoc for attnkit_pb2.
if(NOT Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
  set(Python3_EXECUTABLE /usr/bin/python3 CACHE FILEPATH "Python interpreter of the Python binding")
endif()
find_package(Python3 3.8 REQUIRED COMPONENTS Interpreter Development.Module)

execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c "import numpy, google.protobuf"
  RESULT_VARIABLE attnkit_python_imports
  OUTPUT_QUIET ERROR_VARIABLE attnkit_python_import_error)
if(NOT attnkit_python_imports EQUAL 0)
  message(FATAL_ERROR "attnkit: ${Python3_EXECUTABLE} cannot import numpy and google.protobuf "
    "(Debian: apt-get install python3-numpy python3-protobuf): ${attnkit_python_import_error}")
endif()
# Where bindings/python assembles the importable package (extension, sources, attnkit_pb2).
set(ATTNKIT_PYTHON_PACKAGE_DIR "${PROJECT_BINARY_DIR}/bindings/python/package")
message(STATUS "attnkit: Python binding for ${Python3_EXECUTABLE} (${Python3_VERSION})")

# attnkit_add_python_test(<name> SCRIPT <file> [ARGS ...] [LABELS ...] [PYTHONPATH <dir>]
#                         [TIMEOUT <s>]): ctest `<name>` running `python3 <file> ARGS` with the
# package from the build tree importable, labelled `python` (plus LABELS).
function(attnkit_add_python_test name)
  cmake_parse_arguments(ARG "" "SCRIPT;PYTHONPATH;TIMEOUT" "ARGS;LABELS" ${ARGN})
  add_test(NAME ${name} COMMAND "${Python3_EXECUTABLE}" "${ARG_SCRIPT}" ${ARG_ARGS})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES
    LABELS "python;${ARG_LABELS}"
    TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "PYTHONPATH=${ARG_PYTHONPATH};PYTHONDONTWRITEBYTECODE=1;ATTNKIT_SHARED_DIR=${ATTNKIT_SHARED_DIR};ATTNKIT_SOURCE_DIR=${PROJECT_SOURCE_DIR};ATTNKIT_BUILD_DIR=${PROJECT_BINARY_DIR};OMP_NUM_THREADS=2")
endfunction()
