# ctest java_sample_generate_matches_c_*: the C and Java samples print the same lines for the same
# config, but for the timing line ("generated N tokens in X s: Y tokens/s").
execute_process(COMMAND "${C_SAMPLE}" --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE c_out RESULT_VARIABLE c_result)
execute_process(COMMAND "${JAVA}" -cp "${CLASSPATH}" dev.attnkit.samples.Generate --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE java_out RESULT_VARIABLE java_result)
if(NOT c_result EQUAL 0 OR NOT java_result EQUAL 0)
  message(FATAL_ERROR "a sample failed: C ${c_result}, Java ${java_result}\n${java_out}")
endif()
set(timing "generated [0-9]+ tokens in [0-9.]+ s: [0-9.]+ tokens/s")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" c_out "${c_out}")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" java_out "${java_out}")
if(NOT c_out STREQUAL java_out)
  message(FATAL_ERROR "the samples differ.\n--- C:\n${c_out}\n--- Java:\n${java_out}")
endif()
message(STATUS "C and Java samples agree:\n${java_out}")
