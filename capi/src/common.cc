#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
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
namespace {

constexpr int32_t kMaxThreads = 1024;
std::atomic<int32_t> library_threads{0};  // attnkit_set_num_threads(); 0: the default

}  // namespace

// OpenMP's thread count is a per-thread setting (nthreads-var): at::parallel_for's regions, the
// kernels' worker counts (at::get_num_threads()) and the OpenMP build of OpenBLAS all read the
// calling thread's, so setting it here reaches every kernel of the call and no other thread.
ScopedLibraryThreads::ScopedLibraryThreads() noexcept {
  const int32_t wanted = library_threads.load(std::memory_order_relaxed);
  if (wanted <= 0) return;
  // at::get_num_threads() first: ATen sets a thread's count on its first use there (its lazy
  // init), which would otherwise undo ours in the middle of the call.
  const int current = at::get_num_threads();
  if (current == wanted) return;
  omp_set_num_threads(wanted);
  restore_ = current;
}

ScopedLibraryThreads::~ScopedLibraryThreads() {
  if (restore_ > 0) omp_set_num_threads(restore_);
}

bool IsAllocationFailure(const c10::Error& e) noexcept {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  const char* what = e.what_without_backtrace();
  return what != nullptr && (std::strstr(what, "can't allocate memory") != nullptr ||
                             std::strstr(what, "not enough memory") != nullptr);
}

attnkit_status* MakeStatus(attnkit_status_code code, std::string message) {
  return Adopt(new attnkit_status{code, std::move(message)}, HandleKind::kStatus);
}

attnkit_status* ToC(const absl::Status& status) {
  if (status.ok()) return nullptr;
  return MakeStatus(static_cast<attnkit_status_code>(status.code()), std::string(status.message()));
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<at::Tensor> FromDLPack(const DLTensor* t, const TensorSpec& spec) {
  auto checked = CheckDLTensor(t, spec, BuiltWithCuda());
  if (!checked.ok()) return checked.status();
  c10::ScalarType scalar = c10::ScalarType::Float;
  switch (checked->type) {
    case ElementType::kFloat32:
      scalar = c10::ScalarType::Float;
      break;
    case ElementType::kFloat16:
      scalar = c10::ScalarType::Half;
      break;
    case ElementType::kBFloat16:
      scalar = c10::ScalarType::BFloat16;
      break;
    case ElementType::kInt64:
      scalar = c10::ScalarType::Long;
      break;
    case ElementType::kUInt8:
      scalar = c10::ScalarType::Byte;  // bool bytes are 0 or 1: read as uint8
      break;
  }
  const at::Device device =
      checked->cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(checked->device_index))
                    : at::Device(at::kCPU);
  auto options = at::TensorOptions().dtype(scalar).device(device);
  if (checked->numel == 0) return at::empty(checked->sizes, options);
  char* base = static_cast<char*>(t->data) + t->byte_offset;
  if (!checked->cuda) return at::from_blob(base, checked->sizes, checked->strides, options);
  // ATen asks CUDA which device the pointer belongs to: host memory (or another device's) given
  // as a CUDA tensor is the caller's mistake, not an internal error.
  try {
    return at::from_blob(base, checked->sizes, checked->strides, options);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.name, ": device is CUDA ", checked->device_index,
                     " but data is not memory of that device (", e.what_without_backtrace(), ")"));
  }
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
  return Adopt(out, HandleKind::kInt64Array);
}

attnkit_buffer* NewBuffer(const std::string& bytes) {
  auto* out = new attnkit_buffer{nullptr, bytes.size()};
  out->data = static_cast<uint8_t*>(std::malloc(std::max<size_t>(bytes.size(), 1)));
  if (out->data == nullptr) {
    delete out;
    throw std::bad_alloc();
  }
  if (!bytes.empty()) std::memcpy(out->data, bytes.data(), bytes.size());
  return Adopt(out, HandleKind::kBuffer);
}

}  // namespace attnkit::capi

using attnkit::capi::Guard;
using attnkit::capi::GuardValue;
using attnkit::capi::GuardVoid;
using attnkit::capi::HandleKind;
using attnkit::capi::IsLiveHandle;
using attnkit::capi::ReleaseHandle;

extern "C" {

attnkit_status_code attnkit_status_get_code(const attnkit_status* status) {
  return GuardValue(ATTNKIT_UNKNOWN, [&] {
    if (status == nullptr) return ATTNKIT_OK;
    return IsLiveHandle(status, HandleKind::kStatus) ? status->code : ATTNKIT_UNKNOWN;
  });
}

const char* attnkit_status_get_message(const attnkit_status* status) {
  return GuardValue<const char*>("", [&] {
    if (status == nullptr) return "";
    return IsLiveHandle(status, HandleKind::kStatus)
               ? status->message.c_str()
               : "status: not a live attnkit_status (freed already, or not made by attnkit)";
  });
}

void attnkit_status_free(attnkit_status* status) {
  GuardVoid([&] {
    if (ReleaseHandle(status, HandleKind::kStatus)) delete status;
  });
}

int32_t attnkit_abi_version(void) {
  return GuardValue<int32_t>(ATTNKIT_ABI_VERSION, [] { return ATTNKIT_ABI_VERSION; });
}

const char* attnkit_version_string(void) {
  return GuardValue<const char*>(ATTNKIT_VERSION_STRING, [] { return ATTNKIT_VERSION_STRING; });
}

attnkit_status* attnkit_set_num_threads(int32_t num_threads) {
  return Guard(__func__, [&]() -> absl::Status {
    if (num_threads < 0 || num_threads > attnkit::capi::kMaxThreads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "num_threads: must be in [0, ", attnkit::capi::kMaxThreads, "], got ", num_threads));
    }
    attnkit::capi::library_threads.store(num_threads, std::memory_order_relaxed);
    return absl::OkStatus();
  });
}

int32_t attnkit_get_num_threads(void) {
  return GuardValue<int32_t>(
      0, [] { return attnkit::capi::library_threads.load(std::memory_order_relaxed); });
}

void attnkit_buffer_free(attnkit_buffer* buffer) {
  GuardVoid([&] {
    if (!ReleaseHandle(buffer, HandleKind::kBuffer)) return;
    std::free(buffer->data);
    delete buffer;
  });
}

void attnkit_int64_array_free(attnkit_int64_array* array) {
  GuardVoid([&] {
    if (!ReleaseHandle(array, HandleKind::kInt64Array)) return;
    std::free(array->data);
    delete array;
  });
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
