# ctest go_gofmt: `gofmt -l` lists no hand-written Go file (DIRS: the folders to check).
execute_process(COMMAND "${GOFMT}" -l ${DIRS} OUTPUT_VARIABLE unformatted RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "gofmt failed (${result})")
endif()
if(NOT unformatted STREQUAL "")
  message(FATAL_ERROR "not gofmt-formatted (run gofmt -w):\n${unformatted}")
endif()
message(STATUS "gofmt: clean")
