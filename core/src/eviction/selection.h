// Selection: which cached tokens a row keeps, given its token scores (docs/algorithms.md 1.2, 1.3).
#ifndef ATTNKIT_CORE_EVICTION_SELECTION_H_
#define ATTNKIT_CORE_EVICTION_SELECTION_H_

#include <cstdint>
#include <random>
#include <vector>

#include <ATen/core/Tensor.h>

#include "attnkit/config.h"

namespace attnkit::eviction {

// Areas of one row, in tokens (multiples of group_size).
struct Areas {
  int64_t start = 0;
  int64_t intermediate = 0;
  int64_t recent = 0;
};

// Kept positions (ascending) of a row of `cache_len` tokens whose positions S.. have `scores`.
// `keys` [Hkv, cache_len, d] are used by DIVERSEKV only; `rng` by the RANDOM KVCrush anchor.
std::vector<int64_t> SelectRow(const std::vector<double>& scores, int64_t cache_len,
                               const Areas& areas, const EvictionOptions& options,
                               const at::Tensor& keys, std::mt19937_64& rng);

// Threshold eviction (DMS): the start and recent areas plus every token between them whose score
// is at least `threshold`; with areas.intermediate > 0, only the best intermediate of those
// (torch.topk's set among ties).
std::vector<int64_t> SelectThreshold(const std::vector<double>& scores, int64_t cache_len,
                                     const Areas& areas, double threshold);

// StreamingLLM: the start area and the newest intermediate + recent tokens.
std::vector<int64_t> SelectStreaming(int64_t cache_len, const Areas& areas);

// AdaKV: every kv head keeps its start and recent areas; the intermediate budget of all heads
// together (areas.intermediate per head) goes first to each head's `floor` share of its own best
// groups, then to the best remaining groups of any head (one top-k over the layer).
std::vector<std::vector<int64_t>> SelectAdaKV(const std::vector<std::vector<double>>& scores,
                                              const std::vector<int64_t>& cache_lens,
                                              const Areas& areas, const EvictionOptions& options);

// Indices of the k largest (or smallest) values: the set torch.topk's CPU kernel picks, ties
// included (the reference's choices among equal scores are reproduced exactly), in no particular
// order (every caller uses it as a set; ordering the k would cost a sort per call).
std::vector<int64_t> TopK(const std::vector<double>& values, int64_t k, bool largest = true);

// torch.linspace(0, end, steps, dtype=long) exactly (double step, symmetric halves, truncation).
std::vector<int64_t> IntegerLinspace(int64_t end, int64_t steps);

}  // namespace attnkit::eviction

#endif  // ATTNKIT_CORE_EVICTION_SELECTION_H_
