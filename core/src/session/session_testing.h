// Testing entry of the session's tensor path (the code CUDA sessions run: pages in one arena,
// every step as tensor operations, rows appended and compacted by index) on the CPU, so the path
// is checked against the host path on machines without a GPU. Internal to core and its tests.
#ifndef ATTNKIT_CORE_SESSION_SESSION_TESTING_H_
#define ATTNKIT_CORE_SESSION_SESSION_TESTING_H_

#include <memory>

#include "absl/status/statusor.h"
#include "attnkit/session/session.h"

namespace attnkit::session {

// A CPU session (options.device must be CPU) that runs the tensor path instead of the host path.
absl::StatusOr<std::unique_ptr<Session>> CreateTensorPathSessionForTesting(
    const SessionOptions& options);

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_SESSION_TESTING_H_
