# Finds attnkit's dependencies. Debian packages (see attnkit.sh) provide all of them here; on the GPU
# machine Torch comes from PyTorch (CMAKE_PREFIX_PATH) and Abseil/dlpack from unpacked .debs.
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(absl REQUIRED)
find_package(Torch REQUIRED)

find_path(DLPACK_INCLUDE_DIR dlpack/dlpack.h REQUIRED)
add_library(attnkit_dlpack INTERFACE)
target_include_directories(attnkit_dlpack INTERFACE $<BUILD_INTERFACE:${DLPACK_INCLUDE_DIR}>)

# Torch's CMake config adds its include dirs (with PyTorch's bundled protobuf headers) and flags to
# whatever links `torch`; wrap it so only compute targets see it.
add_library(attnkit_torch INTERFACE)
target_link_libraries(attnkit_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(attnkit_torch INTERFACE ${TORCH_INCLUDE_DIRS})

set(ATTNKIT_HAS_CUDA OFF)
if(ATTNKIT_CUDA STREQUAL "ON" OR (ATTNKIT_CUDA STREQUAL "AUTO" AND TORCH_CUDA_LIBRARIES))
  if(NOT TORCH_CUDA_LIBRARIES)
    message(FATAL_ERROR "ATTNKIT_CUDA=ON but the Torch found has no CUDA")
  endif()
  # CUDA kernels (core/kernels/cuda): architecture flags are set on attnkit_core (sm_90a unless
  # Torch's CUDA flags already name it), one shared cudart with libtorch, and the host-compiler
  # warning flags of AttnkitOptions kept away from nvcc.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES OFF)
  endif()
  set(CMAKE_CUDA_RUNTIME_LIBRARY Shared)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  get_directory_property(attnkit_host_options COMPILE_OPTIONS)
  set(attnkit_wrapped_options "")
  foreach(opt IN LISTS attnkit_host_options)
    list(APPEND attnkit_wrapped_options "$<$<NOT:$<COMPILE_LANGUAGE:CUDA>>:${opt}>")
  endforeach()
  set_directory_properties(PROPERTIES COMPILE_OPTIONS "${attnkit_wrapped_options}")
  set(ATTNKIT_HAS_CUDA ON)
endif()
message(STATUS "attnkit: Torch ${Torch_VERSION}, CUDA kernels: ${ATTNKIT_HAS_CUDA}")
