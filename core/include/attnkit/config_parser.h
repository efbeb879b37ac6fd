// Parsing and validation of the attnkit.v1 messages into the structs of config.h: the one place
// where configuration rules live, so every language sees the same error text. Every error is
// absl::InvalidArgumentError whose message starts with the offending field's path.
#ifndef ATTNKIT_CONFIG_PARSER_H_
#define ATTNKIT_CONFIG_PARSER_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnkit/config.h"

namespace attnkit {

// Which message a serialized config holds.
enum class ConfigKind { kEviction, kSparseAttention, kVisualPruning, kSession };

// `text` is textproto, `bytes` the binary wire format.
absl::StatusOr<EvictionOptions> ParseEvictionConfig(absl::string_view data, bool text);
absl::StatusOr<SparseOptions> ParseSparseAttentionConfig(absl::string_view data, bool text);
absl::StatusOr<VisualOptions> ParseVisualPruningConfig(absl::string_view data, bool text);
absl::StatusOr<SessionOptions> ParseSessionConfig(absl::string_view data, bool text);

// The rules of each message on its plain struct, with the parser's messages: the parser resolves
// the proto's defaults into the struct and calls these, and the C++ entry points that take a
// struct (EvictionPolicy::Create, SparseAttention::Create, VisualPruner::Create, Session::Create)
// call them too, so a rule is written once. `field_prefix` is prepended to the field paths (e.g.
// "eviction." inside a session).
absl::Status ValidateEvictionOptions(const EvictionOptions& options,
                                     absl::string_view field_prefix = "");
absl::Status ValidateSparseOptions(const SparseOptions& options,
                                   absl::string_view field_prefix = "");
absl::Status ValidateVisualOptions(const VisualOptions& options);
// The model shape, the page and the scale, the eviction options when eviction.enabled, the sparse
// options, rope, and the rules between them (eviction.rerotate_keys needs rope and layer-wide
// selection; xattention.per_head_thresholds has num_heads entries).
absl::Status ValidateSessionOptions(const SessionOptions& options);

// Whether a session saved with the binary SessionConfig `saved` may be loaded into one created
// from `current`: OK when they are the same configuration (device and device_index aside: the
// pages' bytes do not depend on where they live), else INVALID_ARGUMENT naming the first field
// that differs and both values.
absl::Status CheckSavedSessionConfig(absl::string_view saved, absl::string_view current);

// What an EvictionConfig with `algorithm` and every other field omitted gives: EvictionOptions{}
// with the algorithm and its default window (config.h).
EvictionOptions DefaultEvictionOptions(EvictionAlgorithm algorithm);

// Validates a config of any kind; on success returns its canonical binary form (defaults resolved
// are not written back: the bytes are the message as given, re-serialized).
absl::StatusOr<std::string> ValidateConfig(ConfigKind kind, absl::string_view data, bool text);

// Converts between textproto and binary for a kind (used by bindings for round trips).
absl::StatusOr<std::string> ConfigTextToBinary(ConfigKind kind, absl::string_view text);
absl::StatusOr<std::string> ConfigBinaryToText(ConfigKind kind, absl::string_view bytes);

// Serialized attnkit.v1.SessionStats from plain stats (keeps protobuf out of compute code).
struct HeadStatsView {
  int layer, sequence, kv_head;
  int64_t tokens, bytes;
};
struct LayerStatsView {
  int layer;
  int64_t tokens, bytes, evicted_tokens, evictions;
};
struct FormatBytesView {
  KvDataType data_type = KvDataType::kDefault;
  bool values = false;
  int64_t bytes = 0;
};
struct SessionStatsView {
  int64_t steps = 0, tokens_seen = 0, tokens_held = 0, bytes_held = 0, bytes_reserved = 0;
  int64_t peak_bytes_held = 0, evictions = 0, evicted_tokens = 0, page_size = 0;
  int64_t peak_bytes_within_calls = 0;
  int64_t sparse_decode_tokens_read = 0, sparse_decode_tokens_held = 0;
  double attention_seconds = 0, policy_seconds = 0, sparse_density = 1.0;
  std::vector<LayerStatsView> layers;
  std::vector<HeadStatsView> heads;
  std::vector<FormatBytesView> format_bytes;
};
std::string SerializeSessionStats(const SessionStatsView& stats);

}  // namespace attnkit

#endif  // ATTNKIT_CONFIG_PARSER_H_
