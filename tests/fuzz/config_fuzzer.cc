// libFuzzer target for the config parsers (textproto and binary, every kind) and their validation
// rules: core/src/config/config_parser.cc with the generated attnkit.v1 messages, protobuf and
// Abseil, built by clang++ with -fsanitize=fuzzer,address,undefined (tests/fuzz/clang). The first
// byte selects the input: kind = b % 4 (eviction, sparse attention, visual pruning, session), text
// when (b / 4) % 2 == 1; the rest is the config. Invariants beyond "no crash, no sanitizer report":
// every error is INVALID_ARGUMENT with a message; an accepted session stays within the documented
// bounds (config.h kMax*); an accepted config prints as text; an accepted text config converts to
// binary and back with every form accepted again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "attnkit/config.h"
#include "attnkit/config_parser.h"

namespace {

void CheckError(const absl::Status& status) {
  if (status.ok()) return;
  if (status.code() != absl::StatusCode::kInvalidArgument || status.message().empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto kind = static_cast<attnkit::ConfigKind>(data[0] % 4);
  const bool text = (data[0] / 4) % 2 == 1;
  const absl::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  auto canonical = attnkit::ValidateConfig(kind, input, text);
  CheckError(canonical.status());
  if (kind == attnkit::ConfigKind::kSession) {
    auto session = attnkit::ParseSessionConfig(input, text);
    CheckError(session.status());
    if (session.ok() != canonical.ok()) std::abort();
    if (session.ok()) {
      const attnkit::SessionOptions& o = *session;
      if (o.num_layers < 1 || o.num_layers > attnkit::kMaxLayers || o.num_heads < 1 ||
          o.num_heads > attnkit::kMaxHeads || o.num_kv_heads < 1 ||
          o.num_heads % o.num_kv_heads != 0 || o.head_dim < 1 ||
          o.head_dim > attnkit::kMaxHeadDim || o.batch_size < 1 ||
          o.batch_size > attnkit::kMaxBatchSize) {
        std::abort();
      }
      if (!attnkit::ValidateSessionOptions(o).ok()) std::abort();
    }
  }
  if (!canonical.ok()) return 0;
  auto printed = attnkit::ConfigBinaryToText(kind, *canonical);
  if (!printed.ok()) std::abort();
  // Round trip of a text config through binary and back: accepted at every step. (Binary input is
  // only printed: protobuf keeps the fields it does not know, which print as field numbers that
  // the text parser, strict about names, rejects.)
  if (!text) return 0;
  auto again = attnkit::ValidateConfig(kind, *printed, /*text=*/true);
  if (!again.ok()) std::abort();
  auto binary = attnkit::ConfigTextToBinary(kind, *printed);
  if (!binary.ok()) std::abort();
  auto revalidated = attnkit::ValidateConfig(kind, *binary, /*text=*/false);
  if (!revalidated.ok()) std::abort();
  return 0;
}
