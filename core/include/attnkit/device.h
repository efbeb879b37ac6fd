// Which devices this build of attnkit can compute on (C++ API, not ABI-stable). The answer comes
// from the kernel units CMake compiled in (core/kernels/cuda or core/kernels/no_cuda), so code that
// asks needs no #ifdef.
#ifndef ATTNKIT_DEVICE_H_
#define ATTNKIT_DEVICE_H_

namespace attnkit {

// True when this build has the CUDA kernels (configured with ATTNKIT_CUDA=ON).
bool BuiltWithCuda();

// True when the CUDA kernels are built in and a CUDA device is visible to this process.
bool CudaDeviceAvailable();

}  // namespace attnkit

#endif  // ATTNKIT_DEVICE_H_
