# The Java binding's toolchain: a JDK (javac, jar, javadoc, JNI headers), Debian's protobuf-java
# matching protoc, and JUnit 5's console launcher (Debian junit5). ctest registration:
# attnkit_java_test().
find_package(Java 11 REQUIRED COMPONENTS Runtime Development)
# FindJava looks for javadoc too (CMake 3.25 has no component for it); attnkit_java_docs needs it.
if(NOT Java_JAVADOC_EXECUTABLE)
  message(FATAL_ERROR "attnkit: javadoc not found (Debian: apt-get install default-jdk-headless)")
endif()
include(UseJava)
# Only the JNI headers are needed (libattnkit_java does not link libjvm).
# The JDK of the javac found (FindJNI may pick another one or none without JAVA_HOME).
get_filename_component(attnkit_javac_real "${Java_JAVAC_EXECUTABLE}" REALPATH)
get_filename_component(attnkit_jdk_home "${attnkit_javac_real}" DIRECTORY)
get_filename_component(attnkit_jdk_home "${attnkit_jdk_home}" DIRECTORY)
find_path(ATTNKIT_JNI_INCLUDE_DIR jni.h HINTS "${attnkit_jdk_home}/include" NO_DEFAULT_PATH)
if(NOT ATTNKIT_JNI_INCLUDE_DIR)
  find_package(JNI)
  set(ATTNKIT_JNI_INCLUDE_DIR "${JAVA_INCLUDE_PATH}")
endif()
if(NOT ATTNKIT_JNI_INCLUDE_DIR OR NOT EXISTS "${ATTNKIT_JNI_INCLUDE_DIR}/jni.h")
  message(FATAL_ERROR "attnkit: jni.h not found (Debian: apt-get install default-jdk-headless)")
endif()
set(ATTNKIT_JNI_INCLUDE_DIRS "${ATTNKIT_JNI_INCLUDE_DIR}" "${ATTNKIT_JNI_INCLUDE_DIR}/linux")

# protobuf-java must be the protoc's release (generated code checks the runtime it runs against).
find_jar(ATTNKIT_PROTOBUF_JAR NAMES protobuf PATHS /usr/share/java DOC "protobuf-java runtime jar")
if(NOT ATTNKIT_PROTOBUF_JAR)
  message(FATAL_ERROR "attnkit: protobuf-java not found (Debian: apt-get install libprotobuf-java)")
endif()
get_filename_component(protobuf_jar_real "${ATTNKIT_PROTOBUF_JAR}" REALPATH)
execute_process(COMMAND "${Protobuf_PROTOC_EXECUTABLE}" --version OUTPUT_VARIABLE protoc_version ERROR_QUIET)
string(REGEX MATCH "[0-9]+\\.[0-9]+" protoc_minor "${protoc_version}")
string(REGEX MATCH "protobuf-(java-)?([0-9]+\\.[0-9]+)" jar_match "${protobuf_jar_real}")
set(jar_minor "${CMAKE_MATCH_2}")
if(protoc_minor AND jar_minor AND NOT protoc_minor VERSION_EQUAL jar_minor)
  message(FATAL_ERROR "attnkit: protobuf-java ${protobuf_jar_real} (${jar_minor}) does not match "
    "protoc ${protoc_minor}; install the matching libprotobuf-java")
endif()
# The full release (e.g. 3.21.12), declared as the protobuf-java dependency of attnkit's pom.
string(REGEX MATCH "protobuf-(java-)?([0-9]+\\.[0-9]+\\.[0-9]+)" jar_match "${protobuf_jar_real}")
set(ATTNKIT_PROTOBUF_JAVA_VERSION "${CMAKE_MATCH_2}")
if(NOT ATTNKIT_PROTOBUF_JAVA_VERSION)  # a jar named without its release: protoc's (they match above)
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" ATTNKIT_PROTOBUF_JAVA_VERSION "${protoc_version}")
endif()
if(NOT ATTNKIT_PROTOBUF_JAVA_VERSION)
  message(FATAL_ERROR "attnkit: no protobuf-java release in ${protobuf_jar_real} or protoc's version (the pom declares it)")
endif()
message(STATUS "attnkit: Java binding with ${protobuf_jar_real} (protobuf-java ${ATTNKIT_PROTOBUF_JAVA_VERSION}, protoc ${protoc_minor})")

find_jar(ATTNKIT_JUNIT_CONSOLE NAMES junit-platform-console-standalone PATHS /usr/share/java
  DOC "JUnit 5 console launcher (standalone jar)")
if(ATTNKIT_BUILD_TESTS AND NOT ATTNKIT_JUNIT_CONSOLE)
  message(FATAL_ERROR "attnkit: junit-platform-console-standalone.jar not found (Debian: apt-get install junit5)")
endif()

# The jar's resource folder for the native libraries (AttnKit.resourceFolder() in Java).
string(TOLOWER "${CMAKE_SYSTEM_NAME}" attnkit_java_os)
set(attnkit_java_arch "${CMAKE_SYSTEM_PROCESSOR}")
if(attnkit_java_arch STREQUAL "AMD64")
  set(attnkit_java_arch "x86_64")
endif()
set(ATTNKIT_JAVA_PLATFORM "${attnkit_java_os}-${attnkit_java_arch}")

# attnkit_java_test(<name> COMMAND <cmd...> [LABELS <labels>]): ctest java_<name>, label java.
function(attnkit_java_test name)
  cmake_parse_arguments(ARG "" "" "COMMAND;LABELS" ${ARGN})
  add_test(NAME java_${name} COMMAND ${ARG_COMMAND})
  set_tests_properties(java_${name} PROPERTIES
    LABELS "java;${ARG_LABELS}"
    TIMEOUT 600
    ENVIRONMENT "ATTNKIT_SHARED_DIR=${ATTNKIT_SHARED_DIR};ATTNKIT_MODELS_DIR=${ATTNKIT_SHARED_DIR}/models;ATTNKIT_SOURCE_DIR=${PROJECT_SOURCE_DIR};OMP_NUM_THREADS=2")
endfunction()
