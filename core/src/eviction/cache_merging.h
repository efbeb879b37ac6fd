// CaM, cache merging (kvpress's CAMPress; docs/algorithms.md 1.9): when a layer evicts, the
// values of some evicted tokens are added, shared out, to the kept tokens after them instead of
// being dropped. The policy (eviction_policy.cc) keeps each layer's running decode attention and
// calls MergeRow() once per score row when it evicts; the session writes the new values into its
// cache before it compacts.
#ifndef ATTNKIT_CORE_EVICTION_CACHE_MERGING_H_
#define ATTNKIT_CORE_EVICTION_CACHE_MERGING_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace attnkit::eviction {

// The seed of the merge draws of score row `row` at one eviction of `layer` after it has seen
// `tokens_seen` tokens: SplitMix64 of the configured seed mixed with the layer and the count (the
// reference draws from torch's global generator, whose state a session cannot share), advanced by
// the row for rows past 0, so a per-head policy's kv heads draw independently of each other.
uint64_t MergeSeed(uint64_t seed, int layer, int64_t tokens_seen, int row = 0);

// What one score row's merge changes: the kept cache indices whose values change (ascending)
// and their new values, float32 [heads.size(), targets.size(), d] in the order of `heads`.
struct RowMerge {
  std::vector<int64_t> targets;
  at::Tensor values;
};

// kvpress's CAMPress.compress for one score row (all kv heads of a layer-wide policy, or one kv
// head of a per-head one), on the cache as it is before compaction:
// - the candidates are the `merges` best-scored evicted tokens (the positions in [0, cache_len)
//   not in `kept`), ties to the later position; `scores` holds the row's scores of positions
//   start, start + 1, ... (evicted tokens are never in the start area);
// - candidate m's window is the `merge_budget` kept tokens after it (fewer at the end);
// - per kv head h (rows `heads` of `values` [Hkv, K, d] and of `attention` [Hkv, K], float32 on
//   the host), m merges with probability clamp(A[m] / mean(A over the window), 0, 1) (NaN: 0,
//   infinity: 1), one torch.bernoulli draw per (head, candidate) from `generator`;
// - a merging candidate adds value / window size to every value of its window, in candidate
//   order (scatter_add_'s order), in float32.
RowMerge MergeRow(const at::Tensor& values, const at::Tensor& attention,
                  const std::vector<int64_t>& heads, const std::vector<double>& scores,
                  int64_t start, const std::vector<int64_t>& kept, int64_t cache_len,
                  int64_t merges, int merge_budget, at::Generator& generator);

}  // namespace attnkit::eviction

#endif  // ATTNKIT_CORE_EVICTION_CACHE_MERGING_H_
