#include "attnkit/device.h"

#include "cuda/kernels.h"

namespace attnkit {

bool BuiltWithCuda() { return cuda::Compiled(); }

bool CudaDeviceAvailable() { return cuda::Available(); }

}  // namespace attnkit
