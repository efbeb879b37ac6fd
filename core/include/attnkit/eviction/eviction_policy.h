// KV cache eviction policies (docs/algorithms.md section 1): scorers (H2O, SnapKV, R-KV, TOVA,
// KNorm, KeyDiff, StreamingLLM), selection with start/intermediate/recent areas at token or group
// granularity, KVCrush/DiverseKV refinement, per-head selection and layer/head budget allocation.
//
// One EvictionPolicy serves every layer of one sequence; each layer has its own state. Per step and
// layer the host appends the new keys/values to its cache, computes attention, calls Observe() with
// the attention weights, then Select() with the cache length: when the cache holds more than the
// layer's budget, Select() returns the positions to keep (and forgets the state of the others).
#ifndef ATTNKIT_EVICTION_EVICTION_POLICY_H_
#define ATTNKIT_EVICTION_EVICTION_POLICY_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnkit/config.h"

namespace attnkit {

// What attention summary a policy needs from each attention call (so a fused kernel computes only
// that, never the whole attention matrix).
struct ObservationNeeds {
  // Rows of the last `window_rows` queries ([H, r, K], r = min(window_rows, q_len)); 0: none.
  int window_rows = 0;
  // Column sums over all queries ([H, K]).
  bool all_queries_sum = false;
  // Keys of the cache at selection time.
  bool keys = false;
  // Values of the cache at selection time.
  bool values = false;
  // The call's queries with their RoPE positions and the RoPE layout (Observation::queries).
  bool queries = false;
  // Column sums ([H, K], as all_queries_sum) of single-query (decode) calls only: CaM's running
  // attention (cache_merging).
  bool decode_column_sums = false;
};

// Attention of one step of one layer, summed over the batch of the sequence group.
struct Observation {
  // [H, r, K] float32: the attention rows of the last r queries, or undefined.
  at::Tensor window_rows;
  // [H, K] float32: sum of all queries' attention rows, or undefined.
  at::Tensor all_queries_sum;
  // Per kv head cache lengths for per-head policies (padded entries past a head's length are
  // ignored); empty: every head has K tokens.
  std::vector<int64_t> lengths;
  // [H, T, d]: every query of the call as the host gave it, RoPE applied at positions
  // first_position, first_position + 1, ... (when needs().queries; else undefined).
  at::Tensor queries;
  int64_t first_position = 0;
  // The RoPE layout the queries were rotated with; nullptr when unknown (the policy-level C ABI,
  // which hands attention weights only).
  const RopeOptions* rope = nullptr;
  // The queries of an observe-only call (Session::Observe): how many there were. They are not in
  // the cache, so the observation brings no new token and each query saw every cached token (what
  // the normalized scores' counters count). 0: an attention call, whose queries are its new tokens.
  int64_t observed_queries = 0;
  // Queries of the attention call (1: a decode step; 0: not said). CaM sums the attention of
  // single-query calls and starts over at a call of several.
  int64_t call_queries = 0;
  // Only CaM's running attention learns from this call: a session's schedule has the scorer skip
  // it (SnapKV and R-KV observe only the window before a scheduled eviction).
  bool merge_only = false;
};

// New values for some cached tokens of one kv head (CaM: evicted values merged into kept ones):
// cache indices as they were given to Select() (ascending) and float32 [rows, head_dim].
struct MergedValues {
  std::vector<int64_t> rows;
  at::Tensor values;
};

// Kept positions (indices into the cache as it is, ascending) per row: one row for layer-wide
// policies, num_kv_heads rows for per-head ones.
using KeptPositions = std::vector<std::vector<int64_t>>;

class EvictionPolicy {
 public:
  static absl::StatusOr<std::unique_ptr<EvictionPolicy>> Create(const EvictionOptions& options,
                                                                int num_layers, int num_heads,
                                                                int num_kv_heads);
  virtual ~EvictionPolicy() = default;

  virtual const EvictionOptions& options() const = 0;
  virtual int num_layers() const = 0;
  virtual ObservationNeeds needs() const = 0;
  // True when every kv head keeps its own tokens.
  virtual bool per_head() const = 0;
  // Tokens a layer may hold (per kv head) after an eviction (the largest int64 for threshold
  // eviction without a cap: the scores decide). In ratio mode (schedule.compression_ratio), the
  // budget for the tokens seen last given by SetTokensSeen() or counted by Select() (1 before).
  virtual int64_t LayerBudget(int layer) const = 0;
  // Ratio mode: the tokens `layer` has seen (evicted ones included), from which its budget
  // follows; sessions call it before every OverBudget()/Select(). Without it, Select() counts the
  // longest row it is given. Other modes ignore it.
  virtual void SetTokensSeen(int layer, int64_t tokens_seen) = 0;

  // Adds one step's attention to `layer`'s scores.
  virtual absl::Status Observe(int layer, const Observation& observation) = 0;
  // Same from full attention weights [B, H, q, K] (the policy-level C ABI and tests).
  absl::Status ObserveWeights(int layer, const at::Tensor& attention,
                              const std::vector<int64_t>& lengths = {});

  // Decides what `layer` keeps. `lengths`: per kv head cache lengths (size 1 or num_kv_heads);
  // `keys`: [Hkv, Kmax, d] float32 when needs().keys, else may be undefined; `values` the same
  // when needs().values. When no row is over budget, returns every position and changes nothing.
  virtual absl::StatusOr<KeptPositions> Select(int layer, const std::vector<int64_t>& lengths,
                                               const at::Tensor& keys,
                                               const at::Tensor& values) = 0;
  // Select() without values (for policies that do not need them).
  absl::StatusOr<KeptPositions> Select(int layer, const std::vector<int64_t>& lengths,
                                       const at::Tensor& keys) {
    return Select(layer, lengths, keys, at::Tensor());
  }
  // With cache_merging: the values the last Select() changed, per kv head (empty rows: none);
  // the host writes them into its cache before keeping the selected positions. Moved out (a
  // second call returns nothing); empty without cache_merging.
  virtual std::vector<MergedValues> TakeMergedValues() { return {}; }
  // CAKE's cascading budgets: the layers other than the one just observed whose budget a
  // prompt's allocation shrank; the host selects and compacts each of them again (Select() with
  // its own cache). Moved out; empty for every other policy.
  virtual std::vector<int> TakeCascade() { return {}; }
  // True when Select() would evict from some row.
  virtual bool OverBudget(int layer, const std::vector<int64_t>& lengths) const = 0;

  // Forgets every layer's state (a new prompt).
  virtual void Reset() = 0;

  // The policy's whole state (every layer's scores and counters, tokens seen, the random state)
  // as bytes, for Session::Save() and Fork(). LoadState() of those bytes on a policy created with
  // the same options and shape makes it select exactly what the saved one would have. Bytes that
  // do not fit this policy (another shape, truncated, inconsistent rows) are INVALID_ARGUMENT and
  // leave the policy as it was.
  virtual std::string SaveState() const = 0;
  virtual absl::Status LoadState(absl::string_view state) = 0;
};

}  // namespace attnkit

#endif  // ATTNKIT_EVICTION_EVICTION_POLICY_H_
