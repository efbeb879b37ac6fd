// Planning a session's memory before running it: the bytes of KV pages a session with given
// options holds after a prompt of N tokens per sequence, with the full cache and with the
// configuration's eviction, per layer and kv head. Torch-free (built into attnkit_config, used by
// `attnkit plan`); the page sizes and the budgets come from the formulas the session itself uses
// (session/page_format.h, eviction/budgets.h). The bytes are those of the host (CPU) store's
// pages, which is what Session::BytesHeld() reports after the prompt.
#ifndef ATTNKIT_CORE_CONFIG_KV_PLAN_H_
#define ATTNKIT_CORE_CONFIG_KV_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnkit/config.h"

namespace attnkit {

struct KvPlanLayer {
  // All sequences and kv heads of the layer.
  int64_t full_bytes = 0;
  int64_t config_bytes = 0;
  // One sequence's bytes (and tokens) per kv head (every sequence holds the same).
  std::vector<int64_t> full_head_bytes;
  std::vector<int64_t> config_head_bytes;   // empty when the split is decided at run time
  std::vector<int64_t> config_head_tokens;  // likewise; upper bounds where !exact
  // False: config_bytes is an upper bound, the per-head split (AdaKV) or the kept tokens
  // (threshold eviction, scored tokens in the residual window) being decided at run time.
  bool exact = true;
  bool per_head_runtime = false;  // config_head_bytes is empty
};

struct KvPlan {
  int64_t tokens = 0;  // prompt tokens per sequence
  int64_t batch = 1;
  int64_t full_bytes = 0;
  int64_t config_bytes = 0;
  bool exact = true;  // every layer exact
  std::vector<KvPlanLayer> layers;
  // Page formats, budgets and what is decided at run time, one line each.
  std::vector<std::string> notes;
};

// The plan for `options` (validated: ValidateSessionOptions) after a prompt of `tokens` tokens per
// sequence attended on every layer in one call.
absl::StatusOr<KvPlan> PlanKvBytes(const SessionOptions& options, int64_t tokens);

// Bytes of one page of keys or values in `type` (kDefault: the session dtype) for `options`'s
// page, head dim and group size, as the host store lays them out.
int64_t KvPageBytes(const SessionOptions& options, KvDataType type, bool keys);

}  // namespace attnkit

#endif  // ATTNKIT_CORE_CONFIG_KV_PLAN_H_
