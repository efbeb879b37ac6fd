// The Torch-free half of the C ABI's tensor conversion: every check of a borrowed DLTensor
// descriptor (rank, dtype, device, sizes, strides, byte extent, output overlap), with the messages
// the entry points return. FromDLPack (capi_internal.h) wraps the result in an at::Tensor view.
// Kept free of ATen so the libFuzzer target tests/fuzz/dlpack_fuzzer.cc can build it with clang.
#ifndef ATTNKIT_CAPI_SRC_DLPACK_CHECK_H_
#define ATTNKIT_CAPI_SRC_DLPACK_CHECK_H_

#include <cstdint>
#include <string>
#include <vector>

#include <dlpack/dlpack.h>

#include "absl/status/statusor.h"

namespace attnkit::capi {

// What an entry point accepts for one tensor argument.
struct TensorSpec {
  const char* name;
  int rank = -1;                 // -1: any
  bool is_output = false;        // outputs must not overlap themselves
  bool allow_int64 = false;      // index tensors
  bool float_only = true;        // float32/float16/bfloat16
  bool mask = false;             // masks: uint8 or 8-bit bool (kDLBool) only, viewed as uint8
  const char* layout = nullptr;  // e.g. "[batch, heads, q_len, head_dim]", named in rank errors
};

enum class ElementType { kFloat32, kFloat16, kBFloat16, kInt64, kUInt8 };

// A descriptor that passed every check.
struct CheckedTensor {
  ElementType type = ElementType::kFloat32;
  int64_t item_size = 4;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;  // in elements; compact row-major when the caller gave NULL
  int64_t numel = 0;
  // Bytes from data to one past the last reachable byte, byte_offset included (0 when empty).
  int64_t extent_bytes = 0;
  bool cuda = false;
  int32_t device_index = 0;
};

// Checks `tensor` against `spec`: non-NULL, rank in [0, 8] (and spec.rank), shape non-NULL, one
// lane, an accepted dtype, a CPU device (or CUDA when `cuda_available`), no negative size or
// stride, data non-NULL unless empty, the element count, the compact byte size of the shape (zero
// sizes counted as 1) and byte_offset + the strided byte extent all within 2^63 - 1 and not
// wrapping the address space, and for outputs no two elements sharing memory. Every error is
// InvalidArgumentError starting with "<spec.name>: ".
absl::StatusOr<CheckedTensor> CheckDLTensor(const DLTensor* tensor, const TensorSpec& spec,
                                            bool cuda_available);

// "float32", "int32", ... or "an unsupported dtype (code C, bits B)".
std::string DLTypeName(DLDataType type);

}  // namespace attnkit::capi

#endif  // ATTNKIT_CAPI_SRC_DLPACK_CHECK_H_
