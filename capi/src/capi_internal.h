// Shared plumbing of the C ABI: status objects, the catch-all guard, DLPack -> at::Tensor views.
#ifndef ATTNKIT_CAPI_SRC_CAPI_INTERNAL_H_
#define ATTNKIT_CAPI_SRC_CAPI_INTERNAL_H_

#include <exception>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnkit/attnkit_common.h"

struct attnkit_status {
  attnkit_status_code code;
  std::string message;
};

namespace attnkit::capi {

// NULL for OK, a new status otherwise.
attnkit_status* ToC(const absl::Status& status);
attnkit_status* MakeStatus(attnkit_status_code code, std::string message);

// Runs `body` (returning absl::Status) and turns anything it throws into INTERNAL, so no exception
// ever crosses the C boundary.
template <typename Body>
attnkit_status* Guard(const char* function, Body&& body) noexcept {
  try {
    return ToC(body());
  } catch (const std::bad_alloc&) {
    return MakeStatus(ATTNKIT_RESOURCE_EXHAUSTED, std::string(function) + ": out of memory");
  } catch (const std::exception& e) {
    return MakeStatus(ATTNKIT_INTERNAL, std::string(function) + ": " + e.what());
  } catch (...) {
    return MakeStatus(ATTNKIT_INTERNAL, std::string(function) + ": unknown exception");
  }
}

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

// A borrowed at::Tensor viewing `tensor` (no copy), after every check of `spec`: rank, dtype,
// device, sizes and strides (no negative value, no element count or output span past 2^63),
// data, and for outputs no two elements sharing memory.
absl::StatusOr<at::Tensor> FromDLPack(const DLTensor* tensor, const TensorSpec& spec);

// "[2, 4, 128, 64]"
std::string ShapeString(at::IntArrayRef shape);

// A caller's (data, size) bytes as a view; size 0 is the empty view whatever data is.
inline absl::string_view ByteView(const void* data, size_t size) {
  return size == 0 ? absl::string_view() : absl::string_view(static_cast<const char*>(data), size);
}

// Copies into a new library-owned array.
attnkit_int64_array* NewInt64Array(const std::vector<int64_t>& values);
attnkit_buffer* NewBuffer(const std::string& bytes);

}  // namespace attnkit::capi

// Checks an argument pointer; returns INVALID_ARGUMENT naming it when NULL.
#define ATTNKIT_CHECK_ARG(ptr)                                                       \
  do {                                                                               \
    if ((ptr) == nullptr)                                                            \
      return ::absl::InvalidArgumentError(std::string(#ptr) + ": must not be NULL"); \
  } while (0)

#endif  // ATTNKIT_CAPI_SRC_CAPI_INTERNAL_H_
