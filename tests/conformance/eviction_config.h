// The reference's eviction parameters (conformance `config` JSON) as an EvictionConfig textproto,
// and the session-level check shared by the eviction cases.
#ifndef ATTNKIT_TESTS_CONFORMANCE_EVICTION_CONFIG_H_
#define ATTNKIT_TESTS_CONFORMANCE_EVICTION_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "support/safetensors.h"
#include "support/json.h"

namespace attnkit::conformance {

// Unknown keys or values are errors (a case must never pass by being misread).
absl::StatusOr<std::string> EvictionTextproto(const JsonValue& config);

// Feeds q/k/v of every step to a session and compares its kept positions with kept.*.
absl::Status SessionLevel(const SafetensorsFile& file, const std::string& eviction_textproto,
                          int num_steps, int num_heads, int num_kv_heads, int head_dim);

}  // namespace attnkit::conformance

#endif  // ATTNKIT_TESTS_CONFORMANCE_EVICTION_CONFIG_H_
