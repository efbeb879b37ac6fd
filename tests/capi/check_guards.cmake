# Fails unless every function libattnkit exports (`nm -D --defined-only LIB`, type T) is defined in
# one of SOURCE_DIR/*.cc (capi/src) with a body that starts with a catch-all guard of
# capi/src/capi_internal.h: `return Guard(`, `return GuardValue<...>(` or `GuardVoid(`. A new entry
# point that lets an exception reach its C caller (std::terminate in the host) fails it. Run by ctest:
#   cmake -DNM=<nm> -DLIB=<libattnkit.so> -DSOURCE_DIR=<capi/src> -P check_guards.cmake
if(NOT NM OR NOT LIB OR NOT SOURCE_DIR)
  message(FATAL_ERROR "usage: cmake -DNM=<nm> -DLIB=<library> -DSOURCE_DIR=<dir> -P check_guards.cmake")
endif()
file(GLOB SOURCES "${SOURCE_DIR}/*.cc")
execute_process(COMMAND "${NM}" -D --defined-only "${LIB}"
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} failed (${rc}): ${err}")
endif()
string(REPLACE "\n" ";" lines "${out}")
set(functions)
foreach(line IN LISTS lines)
  # "<address> T <name>[@version]": exported code (data symbols are not entry points).
  if(line MATCHES "^[0-9a-fA-F]* +[Tt] +(attnkit_[A-Za-z0-9_]+)")
    list(APPEND functions "${CMAKE_MATCH_1}")
  endif()
endforeach()
list(REMOVE_DUPLICATES functions)
list(LENGTH functions num_functions)
if(num_functions EQUAL 0)
  message(FATAL_ERROR "${LIB} exports no attnkit_* function (nm output:\n${out})")
endif()

set(all_sources "")
foreach(source IN LISTS SOURCES)
  file(READ "${source}" text)
  string(APPEND all_sources "\n${text}")
endforeach()

set(unguarded)
set(undefined)
foreach(fn IN LISTS functions)
  # A definition at file scope: a line starting with the return type, the name, the parameter list
  # (no ';' or '{' inside), then the body's first statement.
  if(all_sources MATCHES "\n[A-Za-z][^\n(;{}]*[ *]${fn}\\(([^;{]*)\\)[ \n]*{[ \n]*([^\n]*)")
    string(REPLACE ";" "," first "${CMAKE_MATCH_2}")  # ';' would split the list below
    if(NOT first MATCHES "^(return Guard\\(|return GuardValue(<[^>]*>)?\\(|GuardVoid\\()")
      list(APPEND unguarded "${fn}: body starts with `${first}`")
    endif()
  else()
    list(APPEND undefined "${fn}")
  endif()
endforeach()
if(undefined)
  string(REPLACE ";" "\n  " listing "${undefined}")
  message(FATAL_ERROR "exported but no definition found in the C ABI sources:\n  ${listing}")
endif()
if(unguarded)
  list(LENGTH unguarded count)
  string(REPLACE ";" "\n  " listing "${unguarded}")
  message(FATAL_ERROR "${count} exported function(s) without a catch-all guard (Guard, GuardValue "
    "or GuardVoid of capi/src/capi_internal.h as the first statement):\n  ${listing}")
endif()
message(STATUS "${LIB}: all ${num_functions} exported functions start with a guard")
