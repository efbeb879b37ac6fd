// Shared plumbing of the C ABI: status objects, the catch-all guard, DLPack -> at::Tensor views.
#ifndef ATTNKIT_CAPI_SRC_CAPI_INTERNAL_H_
#define ATTNKIT_CAPI_SRC_CAPI_INTERNAL_H_

#include <exception>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnkit/attnkit_common.h"
#include "dlpack_check.h"
#include "handles.h"

struct attnkit_status {
  attnkit_status_code code;
  std::string message;
};

namespace attnkit::capi {

// NULL for OK, a new status otherwise.
attnkit_status* ToC(const absl::Status& status);
attnkit_status* MakeStatus(attnkit_status_code code, std::string message);

// Every exported function's body is one call of Guard, GuardValue or GuardVoid, so no exception
// (c10::Error from ATen, std::bad_alloc, anything else) ever crosses the C boundary; the ctest
// capi_entry_points_guarded (tests/capi/check_guards.cmake) fails on an exported function whose
// body does not start with one of them.

// For the duration of an entry point, the calling thread's OpenMP thread count is the one set
// with attnkit_set_num_threads() (when set); its own setting comes back afterwards.
class ScopedLibraryThreads {
 public:
  ScopedLibraryThreads() noexcept;
  ~ScopedLibraryThreads();
  ScopedLibraryThreads(const ScopedLibraryThreads&) = delete;
  ScopedLibraryThreads& operator=(const ScopedLibraryThreads&) = delete;

 private:
  int restore_ = 0;  // the caller's count to put back, 0: nothing changed
};

// Whether `e` is ATen's report of an allocation that failed: c10::OutOfMemoryError (the CUDA
// caching allocator) or the CPU allocator's enforce ("DefaultCPUAllocator: can't allocate memory:
// you tried to allocate N bytes", a plain c10::Error in libtorch 1.13).
bool IsAllocationFailure(const c10::Error& e) noexcept;

// Runs `body` (returning absl::Status) under ScopedLibraryThreads: bad_alloc and ATen's
// allocation failures become RESOURCE_EXHAUSTED, any other exception INTERNAL, each message
// prefixed with the entry point's name.
template <typename Body>
attnkit_status* Guard(const char* function, Body&& body) noexcept {
  try {
    ScopedLibraryThreads threads;
    return ToC(body());
  } catch (const std::bad_alloc&) {
    return MakeStatus(ATTNKIT_RESOURCE_EXHAUSTED, std::string(function) + ": out of memory");
  } catch (const c10::Error& e) {
    if (IsAllocationFailure(e)) {
      return MakeStatus(ATTNKIT_RESOURCE_EXHAUSTED, std::string(function) + ": out of memory (" +
                                                        e.what_without_backtrace() + ")");
    }
    return MakeStatus(ATTNKIT_INTERNAL, std::string(function) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return MakeStatus(ATTNKIT_INTERNAL, std::string(function) + ": " + e.what());
  } catch (...) {
    return MakeStatus(ATTNKIT_INTERNAL, std::string(function) + ": unknown exception");
  }
}

// For entry points without a status (getters): `fallback` when `body` throws.
template <typename T, typename Body>
T GuardValue(T fallback, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return fallback;
  }
}

// For entry points that return nothing (the *_free functions): whatever `body` throws is dropped.
template <typename Body>
void GuardVoid(Body&& body) noexcept {
  try {
    body();
  } catch (...) {
  }
}

// A borrowed at::Tensor viewing `tensor` (no copy), after every check of CheckDLTensor
// (dlpack_check.h): nothing ATen could throw on, or read out of bounds through, gets here.
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
