#include "support/tensor_io.h"

#include <cstring>

#include <ATen/Functions.h>

namespace attnkit {

at::Tensor ToTensor(const SafetensorsEntry& entry) {
  at::ScalarType type = at::kFloat;
  switch (entry.dtype) {
    case SafetensorsDType::kF64:
      type = at::kDouble;
      break;
    case SafetensorsDType::kF32:
      type = at::kFloat;
      break;
    case SafetensorsDType::kF16:
      type = at::kHalf;
      break;
    case SafetensorsDType::kBF16:
      type = at::kBFloat16;
      break;
    case SafetensorsDType::kI64:
      type = at::kLong;
      break;
    case SafetensorsDType::kI32:
      type = at::kInt;
      break;
    case SafetensorsDType::kI16:
      type = at::kShort;
      break;
    case SafetensorsDType::kI8:
      type = at::kChar;
      break;
    case SafetensorsDType::kU8:
      type = at::kByte;
      break;
    case SafetensorsDType::kBool:
      type = at::kBool;
      break;
  }
  at::Tensor out = at::empty(entry.shape, at::TensorOptions().dtype(type));
  if (!entry.data.empty()) std::memcpy(out.data_ptr(), entry.data.data(), entry.data.size());
  return out;
}

absl::StatusOr<at::Tensor> LoadTensor(const SafetensorsFile& file, absl::string_view name) {
  auto entry = file.Get(name);
  if (!entry.ok()) return entry.status();
  return ToTensor(**entry);
}

}  // namespace attnkit
