#include "eviction/cache_merging.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <ATen/Functions.h>

namespace attnkit::eviction {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t MergeSeed(uint64_t seed, int layer, int64_t tokens_seen, int row) {
  const uint64_t where = (static_cast<uint64_t>(layer) << 40) ^ static_cast<uint64_t>(tokens_seen);
  const uint64_t layer_seed = SplitMix64(seed ^ SplitMix64(where));
  return row == 0 ? layer_seed : SplitMix64(layer_seed + static_cast<uint64_t>(row));
}

RowMerge MergeRow(const at::Tensor& values, const at::Tensor& attention,
                  const std::vector<int64_t>& heads, const std::vector<double>& scores,
                  int64_t start, const std::vector<int64_t>& kept, int64_t cache_len,
                  int64_t merges, int merge_budget, at::Generator& generator) {
  RowMerge result;
  // The evicted positions, ascending.
  std::vector<int64_t> evicted;
  evicted.reserve(static_cast<size_t>(std::max<int64_t>(0, cache_len - kept.size())));
  for (int64_t p = 0, j = 0; p < cache_len; ++p) {
    while (j < static_cast<int64_t>(kept.size()) && kept[j] < p) ++j;
    if (j < static_cast<int64_t>(kept.size()) && kept[j] == p) continue;
    evicted.push_back(p);
  }
  const int64_t k = std::min<int64_t>(merges, static_cast<int64_t>(evicted.size()));
  if (k <= 0 || kept.empty()) return result;
  auto score = [&](int64_t p) {
    const int64_t i = p - start;
    return i >= 0 && i < static_cast<int64_t>(scores.size())
               ? scores[i]
               : -std::numeric_limits<double>::infinity();
  };
  // The k best evicted tokens; among equal scores the later position first (the reference
  // flips the evicted scores and sorts them stably, descending).
  std::vector<int64_t> order(evicted.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int64_t a, int64_t b) {
    const double sa = score(evicted[a]), sb = score(evicted[b]);
    return sa != sb ? sa > sb : a > b;
  });
  std::vector<int64_t> candidates(k);
  for (int64_t i = 0; i < k; ++i) candidates[i] = evicted[order[i]];
  std::sort(candidates.begin(), candidates.end());

  // Each candidate's window: the kept slots [first[i], first[i] + count[i]).
  const int64_t K = static_cast<int64_t>(kept.size()), B = merge_budget;
  std::vector<int64_t> first(k), count(k);
  std::vector<int64_t> local(K, -1);  // kept slot -> index among the targets
  for (int64_t i = 0; i < k; ++i) {
    first[i] = std::upper_bound(kept.begin(), kept.end(), candidates[i]) - kept.begin();
    count[i] = std::min(B, K - first[i]);
    for (int64_t j = 0; j < count[i]; ++j) local[first[i] + j] = 0;
  }
  for (int64_t s = 0; s < K; ++s) {
    if (local[s] < 0) continue;
    local[s] = static_cast<int64_t>(result.targets.size());
    result.targets.push_back(kept[s]);
  }
  const int64_t H = static_cast<int64_t>(heads.size()), d = values.size(2);
  const int64_t T = static_cast<int64_t>(result.targets.size());
  const int64_t stride_a = attention.stride(0), stride_v = values.stride(0);
  const float* a = attention.data_ptr<float>();
  const float* v = values.data_ptr<float>();

  // The windows' attention [H, k, B] (empty slots 0, as the reference's masked gather) summed
  // along the window by ATen as the reference sums it, then each candidate's probability.
  at::Tensor window = at::zeros({H, k, B}, at::kFloat);
  float* w = window.data_ptr<float>();
  for (int64_t h = 0; h < H; ++h) {
    const float* ah = a + heads[h] * stride_a;
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t j = 0; j < count[i]; ++j) w[(h * k + i) * B + j] = ah[kept[first[i] + j]];
    }
  }
  const at::Tensor sums = window.sum(-1).contiguous();
  const float* sum = sums.data_ptr<float>();
  at::Tensor probability = at::empty({H, k}, at::kFloat);
  float* prob = probability.data_ptr<float>();
  for (int64_t h = 0; h < H; ++h) {
    const float* ah = a + heads[h] * stride_a;
    for (int64_t i = 0; i < k; ++i) {
      const float mean = sum[h * k + i] / static_cast<float>(std::max<int64_t>(count[i], 1));
      float p = ah[candidates[i]] / mean;
      if (std::isnan(p)) p = 0.0f;
      if (std::isinf(p)) p = 1.0f;
      prob[h * k + i] = std::min(std::max(p, 0.0f), 1.0f);
    }
  }
  const at::Tensor mask = at::bernoulli(probability, generator).contiguous();
  const float* m = mask.data_ptr<float>();

  // value * (mask / window size) as the reference multiplies, then the additions in candidate
  // order (kept apart so no fused multiply-add changes the rounding).
  at::Tensor scale = at::empty({H, k, 1}, at::kFloat);
  float* sc = scale.data_ptr<float>();
  at::Tensor moved = at::empty({H, k, d}, at::kFloat);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < k; ++i) {
      sc[h * k + i] = count[i] == 0 ? 0.0f : m[h * k + i] / static_cast<float>(count[i]);
      std::copy_n(v + heads[h] * stride_v + candidates[i] * d, d,
                  moved.data_ptr<float>() + (h * k + i) * d);
    }
  }
  const at::Tensor contribution = at::mul(moved, scale).contiguous();
  const float* c = contribution.data_ptr<float>();
  result.values = at::empty({H, T, d}, at::kFloat);
  float* out = result.values.data_ptr<float>();
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      std::copy_n(v + heads[h] * stride_v + result.targets[t] * d, d, out + (h * T + t) * d);
    }
    for (int64_t i = 0; i < k; ++i) {
      if (m[h * k + i] == 0.0f || count[i] == 0) continue;  // adds zeros: nothing changes
      const float* ci = c + (h * k + i) * d;
      for (int64_t j = 0; j < count[i]; ++j) {
        float* o = out + (h * T + local[first[i] + j]) * d;
        for (int64_t x = 0; x < d; ++x) o[x] += ci[x];
      }
    }
  }
  return result;
}

}  // namespace attnkit::eviction
