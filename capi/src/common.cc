#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <ATen/Functions.h>
#include <c10/core/ScalarType.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit_common.h"
#include "attnkit/device.h"
#include "capi_internal.h"

#ifndef ATTNKIT_VERSION_STRING
#define ATTNKIT_VERSION_STRING "0.0.0"
#endif

namespace attnkit::capi {

attnkit_status* MakeStatus(attnkit_status_code code, std::string message) {
  return new attnkit_status{code, std::move(message)};
}

attnkit_status* ToC(const absl::Status& status) {
  if (status.ok()) return nullptr;
  return MakeStatus(static_cast<attnkit_status_code>(status.code()), std::string(status.message()));
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

namespace {

constexpr uint8_t kDLBoolCode = 6;  // kDLBool in DLPack >= 0.8

const char* DLTypeName(DLDataType t) {
  if (t.code == kDLFloat && t.bits == 32) return "float32";
  if (t.code == kDLFloat && t.bits == 16) return "float16";
  if (t.code == kDLBfloat && t.bits == 16) return "bfloat16";
  if (t.code == kDLFloat && t.bits == 64) return "float64";
  if (t.code == kDLInt && t.bits == 64) return "int64";
  if (t.code == kDLInt && t.bits == 32) return "int32";
  if (t.code == kDLUInt && t.bits == 8) return "uint8";
  if (t.code == kDLBoolCode && t.bits == 8) return "bool";
  return "an unsupported dtype";
}

}  // namespace

absl::StatusOr<at::Tensor> FromDLPack(const DLTensor* t, const TensorSpec& spec) {
  const std::string name = spec.name;
  if (t == nullptr) return absl::InvalidArgumentError(name + ": must not be NULL");
  if (t->ndim < 0 || t->ndim > 8) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": rank ", t->ndim, " is not supported"));
  }
  if (spec.rank >= 0 && t->ndim != spec.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected rank ", spec.rank,
                     spec.layout != nullptr ? absl::StrCat(" ", spec.layout) : std::string(),
                     ", got rank ", t->ndim));
  }
  if (t->ndim > 0 && t->shape == nullptr) {
    return absl::InvalidArgumentError(name + ": shape must not be NULL");
  }
  if (t->dtype.lanes != 1) {
    return absl::InvalidArgumentError(name + ": vector dtypes (lanes != 1) are not supported");
  }
  c10::ScalarType scalar;
  const DLDataType d = t->dtype;
  if (spec.mask) {
    if (d.bits != 8 || (d.code != kDLUInt && d.code != kDLBoolCode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": expected uint8 (or 8-bit bool), got ", DLTypeName(d)));
    }
    scalar = c10::ScalarType::Byte;  // bool bytes are 0 or 1: read as uint8
  } else if (d.code == kDLFloat && d.bits == 32) {
    scalar = c10::ScalarType::Float;
  } else if (d.code == kDLFloat && d.bits == 16) {
    scalar = c10::ScalarType::Half;
  } else if (d.code == kDLBfloat && d.bits == 16) {
    scalar = c10::ScalarType::BFloat16;
  } else if (spec.allow_int64 && d.code == kDLInt && d.bits == 64) {
    scalar = c10::ScalarType::Long;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected ", spec.allow_int64 ? "int64" : "float32, float16 or bfloat16", ", got ",
        DLTypeName(d)));
  }
  if (spec.float_only && scalar == c10::ScalarType::Long) {
    return absl::InvalidArgumentError(name + ": expected a floating-point tensor, got int64");
  }
  at::Device device(at::kCPU);
  switch (t->device.device_type) {
    case kDLCPU:
      break;
    case kDLCUDA:
      if (!BuiltWithCuda()) {
        return absl::InvalidArgumentError(
            name + ": is on a CUDA device, but this attnkit was built without CUDA");
      }
      device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(t->device.device_id));
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": device type ", static_cast<int>(t->device.device_type),
                       " is not supported (expected CPU", BuiltWithCuda() ? " or CUDA)" : ")"));
  }
  std::vector<int64_t> sizes(t->shape, t->shape + t->ndim);
  int64_t numel = 1;
  for (int i = 0; i < t->ndim; ++i) {
    if (sizes[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": negative size ", sizes[i], " in dimension ", i));
    }
    // A lying shape must not wrap around (signed overflow is undefined behaviour).
    if (__builtin_mul_overflow(numel, sizes[i], &numel)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": shape ", ShapeString(sizes), " has too many elements"));
    }
  }
  std::vector<int64_t> strides(t->ndim);
  if (t->strides == nullptr) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; --i) {
      strides[i] = s;
      if (__builtin_mul_overflow(s, std::max<int64_t>(sizes[i], 1), &s)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": shape ", ShapeString(sizes), " has too many elements"));
      }
    }
  } else {
    for (int i = 0; i < t->ndim; ++i) {
      strides[i] = t->strides[i];
      if (strides[i] < 0) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": negative stride ", strides[i],
                                                       " in dimension ", i, " is not supported"));
      }
    }
  }
  if (t->data == nullptr && numel > 0) {
    return absl::InvalidArgumentError(name + ": data must not be NULL");
  }
  if (spec.is_output && numel > 1) {
    // No two indices may reach the same element: sorted by stride, each dimension must step past
    // everything the smaller ones span.
    std::vector<int> order(t->ndim);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return strides[a] < strides[b]; });
    int64_t span = 1;
    for (int i : order) {
      if (sizes[i] == 1) continue;
      if (strides[i] < span) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": output strides ", ShapeString(strides), " for shape ",
                         ShapeString(sizes), " overlap (distinct elements would share memory)"));
      }
      if (__builtin_mul_overflow(strides[i], sizes[i], &span)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": output strides ", ShapeString(strides), " for shape ",
                         ShapeString(sizes), " span more than 2^63 elements"));
      }
    }
  }
  char* base = static_cast<char*>(t->data) + t->byte_offset;
  auto options = at::TensorOptions().dtype(scalar).device(device);
  if (numel == 0) return at::empty(sizes, options);
  return at::from_blob(base, sizes, strides, options);
}

attnkit_int64_array* NewInt64Array(const std::vector<int64_t>& values) {
  auto* out = new attnkit_int64_array{nullptr, values.size()};
  out->data =
      static_cast<int64_t*>(std::malloc(std::max<size_t>(values.size(), 1) * sizeof(int64_t)));
  if (out->data == nullptr) {
    delete out;
    throw std::bad_alloc();
  }
  if (!values.empty()) std::memcpy(out->data, values.data(), values.size() * sizeof(int64_t));
  return out;
}

attnkit_buffer* NewBuffer(const std::string& bytes) {
  auto* out = new attnkit_buffer{nullptr, bytes.size()};
  out->data = static_cast<uint8_t*>(std::malloc(std::max<size_t>(bytes.size(), 1)));
  if (out->data == nullptr) {
    delete out;
    throw std::bad_alloc();
  }
  if (!bytes.empty()) std::memcpy(out->data, bytes.data(), bytes.size());
  return out;
}

}  // namespace attnkit::capi

using attnkit::capi::Guard;

extern "C" {

attnkit_status_code attnkit_status_get_code(const attnkit_status* status) {
  return status == nullptr ? ATTNKIT_OK : status->code;
}

const char* attnkit_status_get_message(const attnkit_status* status) {
  return status == nullptr ? "" : status->message.c_str();
}

void attnkit_status_free(attnkit_status* status) { delete status; }

int32_t attnkit_abi_version(void) { return ATTNKIT_ABI_VERSION; }

const char* attnkit_version_string(void) { return ATTNKIT_VERSION_STRING; }

void attnkit_buffer_free(attnkit_buffer* buffer) {
  if (buffer == nullptr) return;
  std::free(buffer->data);
  delete buffer;
}

void attnkit_int64_array_free(attnkit_int64_array* array) {
  if (array == nullptr) return;
  std::free(array->data);
  delete array;
}

attnkit_status* attnkit_tensor_check(const DLTensor* tensor, const char* name,
                                     int32_t expected_rank, int32_t is_output) {
  return Guard(__func__, [&]() -> absl::Status {
    attnkit::capi::TensorSpec spec{name != nullptr ? name : "tensor"};
    spec.rank = expected_rank;
    spec.is_output = is_output != 0;
    return attnkit::capi::FromDLPack(tensor, spec).status();
  });
}

}  // extern "C"
