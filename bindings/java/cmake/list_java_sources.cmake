# cmake -DOUTPUT=<file> -DDIRS=<dir:dir> -P list_java_sources.cmake: writes javac's @argfile of every
# .java file under DIRS (SWIG and protoc name their outputs after the headers and protos).
set(sources)
string(REPLACE ":" ";" DIRS "${DIRS}")
foreach(dir IN LISTS DIRS)
  file(GLOB_RECURSE found "${dir}/*.java")
  list(APPEND sources ${found})
endforeach()
list(SORT sources)
list(JOIN sources "\n" content)
file(WRITE "${OUTPUT}" "${content}\n")
