// The conformance runner's plumbing: each case kind (the `kind` metadata of a case file) registers
// a function that runs one case through the public API and says what differed.
#ifndef ATTNKIT_TESTS_CONFORMANCE_CONFORMANCE_H_
#define ATTNKIT_TESTS_CONFORMANCE_CONFORMANCE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnkit/attnkit_common.h"
#include "attnkit/attnkit_session.h"
#include "support/safetensors.h"
#include "support/json.h"

namespace attnkit::conformance {

// OK when the case passes; otherwise a status whose message says what differed and where.
using CaseRunner =
    std::function<absl::Status(const SafetensorsFile& file, const JsonValue& config)>;

bool RegisterKind(const std::string& kind, CaseRunner runner);

// Takes a C ABI status (NULL = OK) and frees it; the message is prefixed with "`what`: " when
// `what` is not empty.
absl::Status FromC(attnkit_status* status, absl::string_view what = "");

// The cache positions (ascending) a session's (layer, sequence, kv head) holds.
absl::StatusOr<std::vector<int64_t>> SessionPositions(attnkit_session* session, int layer,
                                                      int sequence, int kv_head);

// A number of a case's config; INVALID_ARGUMENT naming the key when it is absent or not a number.
absl::StatusOr<double> ConfigNumber(const JsonValue& config, const char* key);

// A session made through the C ABI from a SessionConfig textproto, freed when dropped.
using SessionHandle = std::unique_ptr<attnkit_session, decltype(&attnkit_session_free)>;
absl::StatusOr<SessionHandle> CreateSession(absl::string_view textproto);

// An integer metadata value of a case file; INVALID_ARGUMENT naming the key when it is absent or
// not an integer.
absl::StatusOr<int64_t> MetadataInt(const SafetensorsFile& file, const std::string& key);

// The device the cases hand their tensors to attnkit on (--device cpu|cuda[:N]; CPU by default):
// inputs and outputs are allocated there, and outputs are copied back to the host to compare.
at::Device CaseDevice();
// `t` on CaseDevice() (the same tensor when it is already there).
at::Tensor OnCaseDevice(const at::Tensor& t);
// Text for the SessionConfig of session-level cases: "device: CUDA device_index: N " on a CUDA
// case device, "" otherwise.
std::string SessionDeviceText();

}  // namespace attnkit::conformance

#define ATTNKIT_CONFORMANCE_KIND(kind, runner) \
  static const bool attnkit_registered_##runner = ::attnkit::conformance::RegisterKind(kind, runner)

#endif  // ATTNKIT_TESTS_CONFORMANCE_CONFORMANCE_H_
