#include "dlpack_check.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnkit::capi {
namespace {

constexpr uint8_t kDLBoolCode = 6;  // kDLBool in DLPack >= 0.8
constexpr int kMaxRank = 8;

std::string Dims(const std::vector<int64_t>& v) {
  return absl::StrCat("[", absl::StrJoin(v, ", "), "]");
}

// Every byte a tensor can reach, computed without overflow: the compact size of its shape (zero
// sizes counted as 1, so an empty tensor cannot smuggle a huge dimension into a kernel), and
// byte_offset + (1 + sum (size_i - 1) * stride_i) * item_size for a non-empty one, must fit in
// int64 (ATen's own storage-size check would throw otherwise) and not wrap the address space.
absl::StatusOr<int64_t> ByteExtent(const DLTensor& t, const std::string& name,
                                   const std::vector<int64_t>& sizes,
                                   const std::vector<int64_t>& strides, int64_t item_size) {
  const std::string what = absl::StrCat(name, ": shape ", Dims(sizes), " of ", DLTypeName(t.dtype));
  int64_t compact = item_size;
  for (int64_t size : sizes) {
    if (__builtin_mul_overflow(compact, std::max<int64_t>(size, 1), &compact)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " spans more than 2^63 bytes (each size x item size must fit int64)"));
    }
  }
  if (t.byte_offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": byte_offset ", t.byte_offset, " is larger than 2^63 - 1"));
  }
  if (std::find(sizes.begin(), sizes.end(), 0) != sizes.end()) return int64_t{0};
  int64_t last = 0;  // element offset of the last reachable element
  for (size_t i = 0; i < sizes.size(); ++i) {
    int64_t step = 0;
    if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " with strides ", Dims(strides),
                       " reaches past 2^63 elements (sizes x strides overflow int64)"));
    }
  }
  int64_t extent = 0;
  if (__builtin_add_overflow(last, 1, &extent) ||
      __builtin_mul_overflow(extent, item_size, &extent) ||
      __builtin_add_overflow(extent, static_cast<int64_t>(t.byte_offset), &extent)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " with strides ", Dims(strides),
                                                   " and byte_offset ", t.byte_offset,
                                                   " spans more than 2^63 bytes"));
  }
  const auto begin = reinterpret_cast<uintptr_t>(t.data);
  if (begin > std::numeric_limits<uintptr_t>::max() - static_cast<uintptr_t>(extent)) {
    return absl::InvalidArgumentError(absl::StrCat(what, " with strides ", Dims(strides),
                                                   " and byte_offset ", t.byte_offset,
                                                   " wraps around the address space from data"));
  }
  return extent;
}

}  // namespace

std::string DLTypeName(DLDataType t) {
  if (t.lanes == 1) {
    if (t.code == kDLFloat && t.bits == 32) return "float32";
    if (t.code == kDLFloat && t.bits == 16) return "float16";
    if (t.code == kDLBfloat && t.bits == 16) return "bfloat16";
    if (t.code == kDLFloat && t.bits == 64) return "float64";
    if (t.code == kDLInt && t.bits == 64) return "int64";
    if (t.code == kDLInt && t.bits == 32) return "int32";
    if (t.code == kDLInt && t.bits == 16) return "int16";
    if (t.code == kDLInt && t.bits == 8) return "int8";
    if (t.code == kDLUInt && t.bits == 8) return "uint8";
    if (t.code == kDLBoolCode && t.bits == 8) return "bool";
  }
  return absl::StrCat("an unsupported dtype (code ", static_cast<int>(t.code), ", bits ",
                      static_cast<int>(t.bits), ", lanes ", static_cast<int>(t.lanes), ")");
}

absl::StatusOr<CheckedTensor> CheckDLTensor(const DLTensor* t, const TensorSpec& spec,
                                            bool cuda_available) {
  const std::string name = spec.name != nullptr ? spec.name : "tensor";
  if (t == nullptr) return absl::InvalidArgumentError(name + ": must not be NULL");
  if (t->ndim < 0 || t->ndim > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": rank ", t->ndim, " is not supported (expected 0 to ", kMaxRank,
                     spec.rank >= 0 ? absl::StrCat(", here ", spec.rank) : std::string(), ")"));
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
  const DLDataType d = t->dtype;
  if (d.lanes != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": vector dtypes (lanes != 1) are not supported, got ", DLTypeName(d)));
  }
  CheckedTensor out;
  if (spec.mask) {
    if (d.bits != 8 || (d.code != kDLUInt && d.code != kDLBoolCode)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": expected uint8 (or 8-bit bool), got ", DLTypeName(d)));
    }
    out.type = ElementType::kUInt8;
    out.item_size = 1;
  } else if (d.code == kDLFloat && d.bits == 32) {
    out.type = ElementType::kFloat32;
    out.item_size = 4;
  } else if (d.code == kDLFloat && d.bits == 16) {
    out.type = ElementType::kFloat16;
    out.item_size = 2;
  } else if (d.code == kDLBfloat && d.bits == 16) {
    out.type = ElementType::kBFloat16;
    out.item_size = 2;
  } else if (spec.allow_int64 && d.code == kDLInt && d.bits == 64) {
    if (spec.float_only) {
      return absl::InvalidArgumentError(name + ": expected a floating-point tensor, got int64");
    }
    out.type = ElementType::kInt64;
    out.item_size = 8;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected ", spec.allow_int64 ? "int64" : "float32, float16 or bfloat16", ", got ",
        DLTypeName(d)));
  }
  // A C caller may put any int in the enum; reading a value outside the enumerators' range as
  // DLDeviceType is undefined in C++ (the fuzzer found it), so the caller's bits are read as an
  // int.
  int32_t device_type = 0;
  static_assert(sizeof(t->device.device_type) == sizeof(device_type), "C enums are int-sized here");
  std::memcpy(&device_type, &t->device.device_type, sizeof(device_type));
  switch (device_type) {
    case kDLCPU:
      break;
    case kDLCUDA:
      if (!cuda_available) {
        return absl::InvalidArgumentError(
            name + ": is on a CUDA device, but this attnkit was built without CUDA");
      }
      out.cuda = true;
      out.device_index = t->device.device_id;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(name, ": device type ", device_type,
                                                     " is not supported (expected CPU",
                                                     cuda_available ? " or CUDA)" : ")"));
  }
  std::vector<int64_t>& sizes = out.sizes;
  sizes.assign(t->shape, t->shape + t->ndim);
  int64_t numel = 1;
  for (int i = 0; i < t->ndim; ++i) {
    if (sizes[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": negative size ", sizes[i], " in dimension ", i));
    }
    // A lying shape must not wrap around (signed overflow is undefined behaviour).
    if (__builtin_mul_overflow(numel, sizes[i], &numel)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": shape ", Dims(sizes), " has too many elements (past 2^63)"));
    }
  }
  out.numel = numel;
  std::vector<int64_t>& strides = out.strides;
  strides.assign(t->ndim, 0);
  if (t->strides == nullptr) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; --i) {
      strides[i] = s;
      if (__builtin_mul_overflow(s, std::max<int64_t>(sizes[i], 1), &s)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": shape ", Dims(sizes), " has too many elements (past 2^63)"));
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
  auto extent = ByteExtent(*t, name, sizes, strides, out.item_size);
  if (!extent.ok()) return extent.status();
  out.extent_bytes = *extent;
  if (spec.is_output && numel > 1) {
    // No two indices may reach the same element: sorted by stride, each dimension must step past
    // everything the smaller ones reach (`span`: the largest offset they reach, plus one), which
    // makes the offsets a mixed-radix numbering, distinct for distinct indices.
    std::vector<int> order(t->ndim);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return strides[a] < strides[b]; });
    int64_t span = 1;
    for (int i : order) {
      if (sizes[i] == 1) continue;
      if (strides[i] < span) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": output strides ", Dims(strides), " for shape ", Dims(sizes),
                         " overlap or may overlap (sorted by stride, each dimension's stride must "
                         "step past the largest offset the smaller-stride dimensions reach)"));
      }
      int64_t reach = 0;
      if (__builtin_mul_overflow(strides[i], sizes[i] - 1, &reach) ||
          __builtin_add_overflow(span, reach, &span)) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": output strides ", Dims(strides),
                                                       " for shape ", Dims(sizes),
                                                       " span more than 2^63 elements"));
      }
    }
  }
  return out;
}

}  // namespace attnkit::capi
