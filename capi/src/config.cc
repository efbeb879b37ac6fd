#include "attnkit/attnkit_config.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "capi_internal.h"

using attnkit::capi::Guard;

namespace {

// A C caller may pass any int as the enum; reading such a value as attnkit_config_kind is undefined
// in C++, so the caller's bits are read as an int first.
absl::StatusOr<attnkit::ConfigKind> Kind(const attnkit_config_kind& kind) {
  int32_t raw = 0;
  static_assert(sizeof(attnkit_config_kind) == sizeof(int32_t), "C enums are int-sized here");
  std::memcpy(&raw, &kind, sizeof(raw));
  switch (raw) {
    case ATTNKIT_CONFIG_EVICTION:
      return attnkit::ConfigKind::kEviction;
    case ATTNKIT_CONFIG_SPARSE_ATTENTION:
      return attnkit::ConfigKind::kSparseAttention;
    case ATTNKIT_CONFIG_VISUAL_PRUNING:
      return attnkit::ConfigKind::kVisualPruning;
    case ATTNKIT_CONFIG_SESSION:
      return attnkit::ConfigKind::kSession;
  }
  return absl::InvalidArgumentError(absl::StrCat("kind: unknown config kind ", raw));
}

// `name`: the parameter as the header names it (data, text).
absl::Status CheckData(const void* data, size_t size, const char* name) {
  if (data == nullptr && size > 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": must not be NULL"));
  }
  return absl::OkStatus();
}

}  // namespace

extern "C" {

attnkit_status* attnkit_config_validate(attnkit_config_kind kind, const void* data, size_t size) {
  return Guard(__func__, [&]() -> absl::Status {
    auto k = Kind(kind);
    if (!k.ok()) return k.status();
    if (absl::Status s = CheckData(data, size, "data"); !s.ok()) return s;
    return attnkit::ValidateConfig(*k, attnkit::capi::ByteView(data, size), /*text=*/false)
        .status();
  });
}

attnkit_status* attnkit_config_validate_text(attnkit_config_kind kind, const char* text,
                                             size_t size) {
  return Guard(__func__, [&]() -> absl::Status {
    auto k = Kind(kind);
    if (!k.ok()) return k.status();
    if (absl::Status s = CheckData(text, size, "text"); !s.ok()) return s;
    return attnkit::ValidateConfig(*k, attnkit::capi::ByteView(text, size), /*text=*/true).status();
  });
}

attnkit_status* attnkit_config_text_to_binary(attnkit_config_kind kind, const char* text,
                                              size_t size, attnkit_buffer** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto k = Kind(kind);
    if (!k.ok()) return k.status();
    if (absl::Status s = CheckData(text, size, "text"); !s.ok()) return s;
    auto bytes = attnkit::ConfigTextToBinary(*k, attnkit::capi::ByteView(text, size));
    if (!bytes.ok()) return bytes.status();
    *out = attnkit::capi::NewBuffer(*bytes);
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_config_binary_to_text(attnkit_config_kind kind, const void* data,
                                              size_t size, attnkit_buffer** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto k = Kind(kind);
    if (!k.ok()) return k.status();
    if (absl::Status s = CheckData(data, size, "data"); !s.ok()) return s;
    auto text = attnkit::ConfigBinaryToText(*k, attnkit::capi::ByteView(data, size));
    if (!text.ok()) return text.status();
    *out = attnkit::capi::NewBuffer(*text);
    return absl::OkStatus();
  });
}

}  // extern "C"
