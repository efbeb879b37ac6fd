# ctest <lang>_sample_*_matches_c: a sample's port prints what the C sample prints for the same
# arguments, run after run, but for the lines TIMING matches (a regex: the lines that hold a time).
#   cmake -DC_SAMPLE=<executable> -DPORT=<command> -DRUNS=<arguments>[|<arguments>...]
#         [-DPORT_NAME=<language>] [-DTIMING=<regex>] -P compare_with_c.cmake
# PORT's words are separated by | (an interpreter, then its script, jar or assembly); each run's
# arguments by spaces, runs by |. Both samples must exit with status 0.
string(REPLACE "|" ";" port "${PORT}")
string(REPLACE "|" ";" runs "${RUNS}")
if(NOT PORT_NAME)
  set(PORT_NAME "the port")
endif()
foreach(run IN LISTS runs)
  separate_arguments(args UNIX_COMMAND "${run}")
  execute_process(COMMAND "${C_SAMPLE}" ${args} OUTPUT_VARIABLE c_out RESULT_VARIABLE c_result)
  execute_process(COMMAND ${port} ${args} OUTPUT_VARIABLE port_out RESULT_VARIABLE port_result)
  if(NOT c_result EQUAL 0 OR NOT port_result EQUAL 0)
    message(FATAL_ERROR "a sample failed with ${run}: C ${c_result}, ${PORT_NAME} ${port_result}\n"
                        "--- C:\n${c_out}\n--- ${PORT_NAME}:\n${port_out}")
  endif()
  if(TIMING)
    string(REGEX REPLACE "${TIMING}" "(timing)" c_out "${c_out}")
    string(REGEX REPLACE "${TIMING}" "(timing)" port_out "${port_out}")
  endif()
  if(NOT c_out STREQUAL port_out)
    message(FATAL_ERROR "the samples differ with ${run}.\n"
                        "--- C:\n${c_out}\n--- ${PORT_NAME}:\n${port_out}")
  endif()
  message(STATUS "C and ${PORT_NAME} samples agree with ${run}:\n${port_out}")
endforeach()
