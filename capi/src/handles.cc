#include "handles.h"

#include <mutex>
#include <new>
#include <shared_mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace attnkit::capi {
namespace {

// std::shared_mutex (pthread rwlock) rather than absl::Mutex: Debian's Abseil is a shared library
// built without ThreadSanitizer, whose annotations would then be missing, and scripts/tsan.sh
// checks this registry from many threads.
class Registry {
 public:
  bool Insert(const void* handle, HandleKind kind) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    return live_.insert_or_assign(handle, kind).second;
  }
  bool Contains(const void* handle, HandleKind kind) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = live_.find(handle);
    return it != live_.end() && it->second == kind;
  }
  bool Erase(const void* handle, HandleKind kind) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto it = live_.find(handle);
    if (it == live_.end() || it->second != kind) return false;
    live_.erase(it);
    return true;
  }

 private:
  mutable std::shared_mutex mutex_;
  absl::flat_hash_map<const void*, HandleKind> live_;  // guarded by mutex_
};

// Never destroyed: handles may be freed from static destructors of the host after ours ran.
Registry& TheRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace

const char* HandleKindName(HandleKind kind) {
  switch (kind) {
    case HandleKind::kStatus:
      return "attnkit_status";
    case HandleKind::kBuffer:
      return "attnkit_buffer";
    case HandleKind::kInt64Array:
      return "attnkit_int64_array";
    case HandleKind::kSession:
      return "attnkit_session";
    case HandleKind::kEvictionPolicy:
      return "attnkit_eviction_policy";
    case HandleKind::kKeptPositions:
      return "attnkit_kept_positions";
    case HandleKind::kSparseAttention:
      return "attnkit_sparse_attention";
    case HandleKind::kVisualPruner:
      return "attnkit_visual_pruner";
    case HandleKind::kVisualSelection:
      return "attnkit_visual_selection";
  }
  return "attnkit handle";
}

void RegisterHandle(const void* handle, HandleKind kind) noexcept {
  if (handle == nullptr) return;
  try {
    TheRegistry().Insert(handle, kind);
  } catch (...) {  // std::bad_alloc growing the table: see the header
  }
}

bool IsLiveHandle(const void* handle, HandleKind kind) noexcept {
  return handle != nullptr && TheRegistry().Contains(handle, kind);
}

bool ReleaseHandle(const void* handle, HandleKind kind) noexcept {
  return handle != nullptr && TheRegistry().Erase(handle, kind);
}

absl::Status CheckHandle(const void* handle, HandleKind kind, const char* argument) {
  if (handle == nullptr)
    return absl::InvalidArgumentError(absl::StrCat(argument, ": must not be NULL"));
  if (!IsLiveHandle(handle, kind)) {
    return absl::InvalidArgumentError(absl::StrCat(argument, ": not a live ", HandleKindName(kind),
                                                   " (freed already, or not made by attnkit)"));
  }
  return absl::OkStatus();
}

}  // namespace attnkit::capi
