// Which handles the C ABI has given out and not yet taken back. Every entry point checks a handle
// argument against this registry before touching it, so a freed, foreign or wrong-kind pointer is
// an INVALID_ARGUMENT status (and freeing one twice a no-op) instead of a use after free. An
// address the allocator hands out again for a new object of the same kind is live again: a stale
// pointer that happens to equal a newer handle cannot be told apart from it.
#ifndef ATTNKIT_CAPI_SRC_HANDLES_H_
#define ATTNKIT_CAPI_SRC_HANDLES_H_

#include <cstdint>

#include "absl/status/status.h"

namespace attnkit::capi {

enum class HandleKind : uint8_t {
  kStatus,
  kBuffer,
  kInt64Array,
  kSession,
  kEvictionPolicy,
  kKeptPositions,
  kSparseAttention,
  kVisualPruner,
  kVisualSelection,
};

// The C type's name: "attnkit_session".
const char* HandleKindName(HandleKind kind);

// Records `handle` as live. Never throws: if the registry cannot grow, the handle stays
// unregistered (calls then refuse it and its free leaks it) rather than ending the process.
void RegisterHandle(const void* handle, HandleKind kind) noexcept;

// Whether `handle` is live and of `kind`.
bool IsLiveHandle(const void* handle, HandleKind kind) noexcept;

// Forgets `handle` when it is live and of `kind`, returning whether it was (whether the caller
// may delete it).
bool ReleaseHandle(const void* handle, HandleKind kind) noexcept;

// OK for a live handle of `kind`; INVALID_ARGUMENT naming `argument` otherwise ("session: must not
// be NULL", "session: not a live attnkit_session (freed already, or not made by attnkit)").
absl::Status CheckHandle(const void* handle, HandleKind kind, const char* argument);

// Registers and returns `handle`: `*out = Adopt(new T{...}, kind)`.
template <typename T>
T* Adopt(T* handle, HandleKind kind) noexcept {
  RegisterHandle(handle, kind);
  return handle;
}

}  // namespace attnkit::capi

// Returns CheckHandle's error for `ptr` from the enclosing function.
#define ATTNKIT_CHECK_HANDLE(ptr, kind)                                               \
  do {                                                                                \
    ::absl::Status attnkit_handle_status_ =                                           \
        ::attnkit::capi::CheckHandle((ptr), ::attnkit::capi::HandleKind::kind, #ptr); \
    if (!attnkit_handle_status_.ok()) return attnkit_handle_status_;                  \
  } while (0)

#endif  // ATTNKIT_CAPI_SRC_HANDLES_H_
