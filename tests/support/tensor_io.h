// at::Tensor views of safetensors entries (copies: the tensors own their memory). Test support
// (tests/support), not part of the library.
#ifndef ATTNKIT_TESTS_SUPPORT_TENSOR_IO_H_
#define ATTNKIT_TESTS_SUPPORT_TENSOR_IO_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "support/safetensors.h"

namespace attnkit {

// A new tensor holding a copy of `entry` (F64/F32/F16/BF16/I64/I32/I16/I8/U8/BOOL).
at::Tensor ToTensor(const SafetensorsEntry& entry);
// The named tensor of `file`, or NotFoundError.
absl::StatusOr<at::Tensor> LoadTensor(const SafetensorsFile& file, absl::string_view name);

}  // namespace attnkit

#endif  // ATTNKIT_TESTS_SUPPORT_TENSOR_IO_H_
