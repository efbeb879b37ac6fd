# The fuzz smoke test: writes the seed corpus (SEEDS: a program that writes it into a folder, or a
# folder of seed files), then runs the fuzzer for SECONDS seconds on it; any crash, sanitizer report
# or broken invariant fails the test and leaves the input under WORK. DICT is optional.
#   cmake -DFUZZER=<fuzzer> -DSEEDS=<seed writer|dir> [-DDICT=<dict>] -DWORK=<dir> -DSECONDS=<n> -P run_smoke.cmake
foreach(var FUZZER SEEDS WORK SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_smoke.cmake needs -D${var}=...")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/seeds" "${WORK}/corpus")
if(IS_DIRECTORY "${SEEDS}")
  file(GLOB seed_files "${SEEDS}/*")
  file(COPY ${seed_files} DESTINATION "${WORK}/seeds")
else()
  execute_process(COMMAND "${SEEDS}" "${WORK}/seeds" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "writing the seed corpus failed (${rc})")
  endif()
endif()
set(dict_arg)
if(DICT)
  set(dict_arg "-dict=${DICT}")
endif()
execute_process(
  COMMAND "${FUZZER}" -max_total_time=${SECONDS} -max_len=4096 -timeout=10 -rss_limit_mb=2048
          -print_final_stats=1 ${dict_arg} "-artifact_prefix=${WORK}/"
          "${WORK}/corpus" "${WORK}/seeds"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(REGEX MATCHALL "(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[ \t]+DONE)[^\n]*" stats "${out}")
string(REPLACE ";" "\n" stats "${stats}")
message("${stats}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzzer failed (${rc}); inputs kept under ${WORK}:\n${out}")
endif()
