# cmake -DJAR_TOOL=<jar> -DCLASSES_JAR=<in> -DOUTPUT=<out.jar> -DNATIVE_ROOT=<dir> -DNATIVE_PATH=<rel>
#       -P assemble_jar.cmake: the classes jar plus the native libraries under NATIVE_PATH.
file(COPY_FILE "${CLASSES_JAR}" "${OUTPUT}.tmp")
execute_process(COMMAND "${JAR_TOOL}" uf "${OUTPUT}.tmp" -C "${NATIVE_ROOT}" "${NATIVE_PATH}"
                RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "jar uf failed (${result})")
endif()
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
