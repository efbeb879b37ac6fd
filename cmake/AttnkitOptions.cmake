# Compiler flags shared by every attnkit target.
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  add_compile_options(-Wall -Wextra -Wno-unused-parameter)
  # Kernels are written to vectorize; allow the machine's SIMD unless the user asks otherwise.
  set(ATTNKIT_NATIVE_ARCH "-march=x86-64-v3" CACHE STRING "Architecture flags for CPU kernels")
endif()
if(ATTNKIT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
if(ATTNKIT_SANITIZE_THREAD)
  if(ATTNKIT_SANITIZE)
    message(FATAL_ERROR "ATTNKIT_SANITIZE_THREAD and ATTNKIT_SANITIZE cannot be combined")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()

# Where tests and samples look for ../shared (overridable by the environment at run time).
set(ATTNKIT_SHARED_DIR "${CMAKE_CURRENT_SOURCE_DIR}/../shared" CACHE PATH "The shared/ folder beside the checkout")
get_filename_component(ATTNKIT_SHARED_DIR "${ATTNKIT_SHARED_DIR}" ABSOLUTE)
