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

// CAKE's layer budgets (cake_cache.py's CakeprefillKVCache and utils.py's adjust_budgets): the
// share of `total` of each layer by its preference, pref / sum(prefs) * total in double (CAKE's
// NumPy 1.x arithmetic: its float32 preferences promote) truncated to integers, capped at
// `seq_len` with the excess spread evenly over the layers under it (the remainder to the first
// ones), then topped up or trimmed to `total` the same way (up: layers under seq_len; down:
// layers over 1).
inline std::vector<int64_t> CakeBudgets(const std::vector<float>& preferences, int64_t total,
                                        int64_t seq_len) {
  const size_t n = preferences.size();
  double sum = 0;
  for (float p : preferences) sum += static_cast<double>(p);
  std::vector<int64_t> b(n, n == 0 ? 0 : total / static_cast<int64_t>(n));
  for (size_t i = 0; i < n && sum > 0 && std::isfinite(sum); ++i) {
    b[i] = static_cast<int64_t>(static_cast<double>(preferences[i]) / sum *
                                static_cast<double>(total));
  }
  auto spread = [&](int64_t amount, bool up, auto valid) {
    std::vector<size_t> idx;
    for (size_t i = 0; i < n; ++i)
      if (valid(b[i])) idx.push_back(i);
    if (idx.empty()) return;
    const int64_t each = amount / static_cast<int64_t>(idx.size());
    const int64_t rem = amount % static_cast<int64_t>(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) {
      const int64_t add = each + (static_cast<int64_t>(k) < rem ? 1 : 0);
      b[idx[k]] += up ? add : -add;
    }
  };
  int64_t excess = 0;
  for (int64_t& x : b) {
    excess += std::max<int64_t>(x - seq_len, 0);
    x = std::min(x, seq_len);
  }
  if (excess > 0) spread(excess, true, [&](int64_t x) { return x < seq_len; });
  int64_t current = 0;
  for (int64_t x : b) current += x;
  const int64_t diff = total - current;
  if (diff > 0) spread(diff, true, [&](int64_t x) { return x < seq_len; });
  if (diff < 0) spread(-diff, false, [](int64_t x) { return x > 1; });
  return b;
}

}  // namespace attnkit::eviction

#endif  // ATTNKIT_CORE_EVICTION_BUDGETS_H_
