// The token budgets of the eviction areas, Torch-free: the eviction policy and the planner
// (config/kv_plan.h, built into attnkit_config without Torch) share these formulas.
#ifndef ATTNKIT_CORE_EVICTION_BUDGETS_H_
#define ATTNKIT_CORE_EVICTION_BUDGETS_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/config.h"
#include "config/algorithms.h"

namespace attnkit::eviction {

// The intermediate budget of `layer` for a mean of `mean` tokens per layer: the mean itself, or
// with PyramidKV budgets falling linearly from the first layer to the last with the given
// last/first ratio and that mean, each rounded down to whole groups.
inline int64_t IntermediateBudget(const EvictionOptions& o, int64_t mean, int layer,
                                  int num_layers) {
  if (!FindAllocator(o.allocator)->Has(kAllocatorPerLayer) || num_layers == 1) return mean;
  const double first = 2.0 * static_cast<double>(mean) / (1.0 + o.pyramid_min_ratio);
  const double last = first * o.pyramid_min_ratio;
  const double budget = first + (last - first) * layer / (num_layers - 1);
  const int64_t g = o.group_size;
  return static_cast<int64_t>(std::floor(budget / g)) * g;
}

inline std::vector<int64_t> IntermediateBudgets(const EvictionOptions& o, int num_layers) {
  std::vector<int64_t> out(num_layers);
  for (int l = 0; l < num_layers; ++l)
    out[l] = IntermediateBudget(o, o.intermediate_tokens, l, num_layers);
  return out;
}

// Ratio mode (docs/algorithms.md 1.4): the tokens kept after seeing `seen`, rounded as kvpress's
// int(k_len * (1 - compression_ratio)), at least 1.
inline int64_t RatioTarget(int64_t seen, double ratio) {
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(seen) * (1.0 - ratio)));
}

// Ratio mode: the intermediate area of `layer` after seeing `seen` tokens: what the start and
// recent areas leave of the ratio's target, in whole groups, spread over the layers as the
// allocator does.
inline int64_t RatioIntermediate(const EvictionOptions& o, int64_t seen, int layer,
                                 int num_layers) {
  const int64_t g = o.group_size;
  const int64_t rest = RatioTarget(seen, o.compression_ratio) - o.start_tokens - o.recent_tokens;
  const int64_t mean = std::max<int64_t>(0, rest) / g * g;
  return std::max<int64_t>(0, IntermediateBudget(o, mean, layer, num_layers));
}

}  // namespace attnkit::eviction

#endif  // ATTNKIT_CORE_EVICTION_BUDGETS_H_
