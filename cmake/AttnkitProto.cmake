# attnkit_generate_proto(<out_srcs> <out_hdrs> <proto files...>): C++ code for the proto files, generated
# into the build tree with include paths rooted at proto/ (so `#include "attnkit/v1/eviction.pb.h"`).
function(attnkit_generate_proto out_srcs out_hdrs)
  set(proto_root "${PROJECT_SOURCE_DIR}/proto")
  set(gen_dir "${PROJECT_BINARY_DIR}/proto")
  set(srcs)
  set(hdrs)
  foreach(proto IN LISTS ARGN)
    get_filename_component(abs "${proto}" ABSOLUTE)
    file(RELATIVE_PATH rel "${proto_root}" "${abs}")
    string(REGEX REPLACE "\\.proto$" "" stem "${rel}")
    list(APPEND srcs "${gen_dir}/${stem}.pb.cc")
    list(APPEND hdrs "${gen_dir}/${stem}.pb.h")
    add_custom_command(
      OUTPUT "${gen_dir}/${stem}.pb.cc" "${gen_dir}/${stem}.pb.h"
      COMMAND ${CMAKE_COMMAND} -E make_directory "${gen_dir}"
      COMMAND protobuf::protoc --cpp_out=${gen_dir} -I ${proto_root} ${abs}
      DEPENDS "${abs}" protobuf::protoc
      COMMENT "protoc ${rel}")
  endforeach()
  set(${out_srcs} ${srcs} PARENT_SCOPE)
  set(${out_hdrs} ${hdrs} PARENT_SCOPE)
endfunction()
