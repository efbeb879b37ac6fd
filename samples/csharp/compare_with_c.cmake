# ctest csharp_sample_generate_matches_c: the C and C# samples print the same lines for the same
# config, but for the timing line ("generated N tokens in X s: Y tokens/s").
execute_process(COMMAND "${C_SAMPLE}" --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE c_out RESULT_VARIABLE c_result)
execute_process(COMMAND "${DOTNET}" "${CSHARP_SAMPLE}" --config "${CONFIG}" --tokens ${TOKENS}
                OUTPUT_VARIABLE cs_out RESULT_VARIABLE cs_result)
if(NOT c_result EQUAL 0 OR NOT cs_result EQUAL 0)
  message(FATAL_ERROR "a sample failed: C ${c_result}, C# ${cs_result}")
endif()
set(timing "generated [0-9]+ tokens in [0-9.]+ s: [0-9.]+ tokens/s")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" c_out "${c_out}")
string(REGEX REPLACE "${timing}" "generated N tokens (timing)" cs_out "${cs_out}")
if(NOT c_out STREQUAL cs_out)
  message(FATAL_ERROR "the samples differ.\n--- C:\n${c_out}\n--- C#:\n${cs_out}")
endif()
message(STATUS "C and C# samples agree:\n${cs_out}")
