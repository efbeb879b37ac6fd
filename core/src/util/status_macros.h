// Status propagation helpers used across core.
#ifndef ATTNKIT_CORE_UTIL_STATUS_MACROS_H_
#define ATTNKIT_CORE_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ATTNKIT_STATUS_CONCAT_INNER(a, b) a##b
#define ATTNKIT_STATUS_CONCAT(a, b) ATTNKIT_STATUS_CONCAT_INNER(a, b)

#define ATTNKIT_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status attnkit_status_ = (expr);           \
    if (!attnkit_status_.ok()) return attnkit_status_; \
  } while (0)

// ATTNKIT_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
#define ATTNKIT_ASSIGN_OR_RETURN(lhs, expr) \
  ATTNKIT_ASSIGN_OR_RETURN_IMPL(ATTNKIT_STATUS_CONCAT(attnkit_statusor_, __LINE__), lhs, expr)
#define ATTNKIT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(*tmp)

#endif  // ATTNKIT_CORE_UTIL_STATUS_MACROS_H_
