# ctest go_sample_generate_*_matches_c: the C and Go samples print the same lines for the same config,
# but for the timing line ("generated N tokens in X s: Y tokens/s").
execute_process(COMMAND "${C_SAMPLE}" --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE c_out RESULT_VARIABLE c_result)
execute_process(COMMAND "${GO_SAMPLE}" --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE go_out RESULT_VARIABLE go_result)
if(NOT c_result EQUAL 0 OR NOT go_result EQUAL 0)
  message(FATAL_ERROR "a sample failed: C ${c_result}, Go ${go_result}")
endif()
set(timing "generated [0-9]+ tokens in [0-9.]+ s: [0-9.]+ tokens/s")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" c_out "${c_out}")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" go_out "${go_out}")
if(NOT c_out STREQUAL go_out)
  message(FATAL_ERROR "the samples differ.\n--- C:\n${c_out}\n--- Go:\n${go_out}")
endif()
message(STATUS "C and Go samples agree:\n${go_out}")
