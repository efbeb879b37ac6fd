#include "eviction/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <ATen/Functions.h>

namespace attnkit::eviction {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Sum of each group of g entries, the last group right-padded with zeros.
std::vector<double> GroupSums(const std::vector<double>& values, int64_t g) {
  const int64_t groups = (static_cast<int64_t>(values.size()) + g - 1) / g;
  std::vector<double> out(groups, 0.0);
  for (size_t i = 0; i < values.size(); ++i) out[i / g] += values[i];
  return out;
}

// Stable argsort, descending (ties keep index order).
std::vector<int64_t> ArgsortDescending(const std::vector<double>& values) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  return order;
}

// Fewest top entries of `ev` whose sum reaches `mass` x the total (the adaptive refined size).
int64_t MinGroupsForMass(const std::vector<double>& ev, double mass) {
  double total = 0;
  for (double v : ev) total += v;
  std::vector<double> sorted = ev;
  std::sort(sorted.begin(), sorted.end(), std::greater<double>());
  const double target = mass * total;
  double cumsum = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    cumsum += sorted[i];
    if (cumsum >= target) return static_cast<int64_t>(i) + 1;
  }
  return static_cast<int64_t>(sorted.size());
}

// KVCrush over `refined` token scores (-inf = kept by the coarse step). Returns group indices.
std::vector<int64_t> KvCrush(const std::vector<double>& refined, int64_t g, int64_t refined_groups,
                             KVCrushAnchor anchor_mode, bool per_group, std::mt19937_64& rng) {
  const int64_t n = refined.size();
  std::vector<int64_t> keepable;
  for (int64_t i = 0; i < n; ++i)
    if (refined[i] != kNegInf) keepable.push_back(i);
  const int64_t count = keepable.size();
  // Top half 1, the floor(count/2) smallest 0.
  std::vector<int> bits(n, 0);
  {
    std::vector<double> keepable_scores(count);
    for (int64_t i = 0; i < count; ++i) keepable_scores[i] = refined[keepable[i]];
    std::vector<int> keep_bits(count, 1);
    for (int64_t i : TopK(keepable_scores, count / 2, /*largest=*/false)) keep_bits[i] = 0;
    for (int64_t i = 0; i < count; ++i) bits[keepable[i]] = keep_bits[i];
  }
  std::bernoulli_distribution coin(0.5);
  std::vector<double> distance;
  int64_t num_valid = 0;
  if (per_group) {
    const int64_t groups = n / g;
    distance.assign(groups, 0.0);
    for (int64_t gi = 0; gi < groups; ++gi) {
      int anchor = 0;
      switch (anchor_mode) {
        case KVCrushAnchor::kZeros:
          anchor = 0;
          break;
        case KVCrushAnchor::kOnes:
          anchor = 1;
          break;
        case KVCrushAnchor::kAlternate:
          anchor = gi % 2;
          break;
        case KVCrushAnchor::kRandom:
          anchor = coin(rng) ? 1 : 0;
          break;
        case KVCrushAnchor::kMean: {
          int ones = 0;
          for (int64_t j = 0; j < g; ++j) ones += bits[gi * g + j];
          anchor = static_cast<double>(ones) / g > 0.5 ? 1 : 0;
          break;
        }
      }
      int d = 0;
      for (int64_t j = 0; j < g; ++j) d += bits[gi * g + j] != anchor;
      // A group is valid when its first token is keepable (coarse keeps whole groups).
      distance[gi] = refined[gi * g] == kNegInf ? kNegInf : d;
    }
    num_valid = count / g;
  } else {
    distance.assign(n, kNegInf);
    for (int64_t i = 0; i < count; ++i) {
      int anchor = 0;
      switch (anchor_mode) {
        case KVCrushAnchor::kZeros:
          anchor = 0;
          break;
        case KVCrushAnchor::kOnes:
          anchor = 1;
          break;
        case KVCrushAnchor::kAlternate:
          anchor = i % 2;
          break;  // alternates over keepable tokens
        case KVCrushAnchor::kRandom:
          anchor = coin(rng) ? 1 : 0;
          break;
        case KVCrushAnchor::kMean:
          anchor = bits[keepable[i]];
          break;  // rejected by validation
      }
      distance[keepable[i]] = bits[keepable[i]] != anchor ? 1.0 : 0.0;
    }
    num_valid = count;
  }
  const std::vector<int64_t> sorted = ArgsortDescending(distance);
  std::vector<int64_t> out;
  for (int64_t rep : IntegerLinspace(num_valid - 1, refined_groups)) {
    if (rep >= 0 && rep < static_cast<int64_t>(sorted.size())) out.push_back(sorted[rep]);
  }
  return out;
}

// DiverseKV: low mean similarity to the coarse-kept tokens. `keys` [Hkv, L, d]. Returns groups.
std::vector<int64_t> DiverseKv(const std::vector<double>& refined, int64_t g,
                               int64_t refined_groups, bool per_group, const at::Tensor& keys,
                               int64_t start) {
  const int64_t n = refined.size();
  at::Tensor k = keys.to(at::kCPU, at::kFloat);
  at::Tensor normalized = k.div(k.norm(2, -1, true).clamp_min(1e-30));
  at::Tensor sim = at::matmul(normalized, normalized.transpose(-1, -2));
  const int64_t L = sim.size(-1);
  sim = sim.narrow(1, start, L - start).narrow(2, start, L - start).contiguous();
  const int64_t heads = sim.size(0), m = L - start;
  sim.diagonal(0, 1, 2).zero_();
  at::Tensor head_means = sim.reshape({heads, -1}).mean(-1).reshape({heads, 1, 1});
  sim = at::where(sim.ge(head_means), sim, at::zeros_like(sim)).mean(0);  // [m, m]
  const at::Tensor sim_c = sim.contiguous();
  const float* s = sim_c.data_ptr<float>();
  std::vector<int64_t> selected;
  for (int64_t i = 0; i < n; ++i)
    if (refined[i] == kNegInf) selected.push_back(i);
  std::vector<double> diversity(n, 0.0);
  for (int64_t t = 0; t < n && t < m; ++t) {
    double acc = 0;
    for (int64_t j : selected)
      if (j < m) acc += s[t * m + j];
    diversity[t] = selected.empty() ? 0.0 : -acc / static_cast<double>(selected.size());
  }
  std::vector<double> unit = diversity;
  if (per_group) {
    unit = GroupSums(diversity, g);
    for (int64_t gi = 0; gi < static_cast<int64_t>(unit.size()); ++gi) {
      for (int64_t j = 0; j < g && gi * g + j < n; ++j)
        if (refined[gi * g + j] == kNegInf) unit[gi] = kNegInf;
    }
  } else {
    for (int64_t t = 0; t < n; ++t)
      if (refined[t] == kNegInf) unit[t] = kNegInf;
  }
  return TopK(unit, refined_groups);
}

}  // namespace

std::vector<int64_t> TopK(const std::vector<double>& values, int64_t k, bool largest) {
  // The reference's choice among tied scores is whatever torch.topk's CPU kernel does, so do the
  // same: std::partial_sort when k * 64 <= n, else std::nth_element on (value, index) pairs in
  // index order, with a value-only comparison. Ties are common (max-pooled scores share values).
  // torch then sorts the first k - 1; that orders the set without changing it, so it is skipped.
  const int64_t n = values.size();
  k = std::max<int64_t>(0, std::min<int64_t>(k, n));
  if (k == 0) return {};
  using Elem = std::pair<double, int64_t>;
  std::vector<Elem> queue(n);
  for (int64_t j = 0; j < n; ++j) queue[j] = {values[j], j};
  auto greater = [](const Elem& x, const Elem& y) { return x.first > y.first; };
  auto less = [](const Elem& x, const Elem& y) { return x.first < y.first; };
  if (k * 64 <= n) {
    if (largest) {
      std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), greater);
    } else {
      std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), less);
    }
  } else if (largest) {
    std::nth_element(queue.begin(), queue.begin() + k - 1, queue.end(), greater);
  } else {
    std::nth_element(queue.begin(), queue.begin() + k - 1, queue.end(), less);
  }
  std::vector<int64_t> out(k);
  for (int64_t j = 0; j < k; ++j) out[j] = queue[j].second;
  return out;
}

std::vector<int64_t> IntegerLinspace(int64_t end, int64_t steps) {
  std::vector<int64_t> out;
  if (steps <= 0) return out;
  if (steps == 1) return {0};
  const double step = static_cast<double>(end) / static_cast<double>(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i) {
    const double v = i < halfway
                         ? step * static_cast<double>(i)
                         : static_cast<double>(end) - step * static_cast<double>(steps - i - 1);
    out.push_back(static_cast<int64_t>(v));
  }
  return out;
}

std::vector<int64_t> SelectRow(const std::vector<double>& scores, int64_t cache_len,
                               const Areas& areas, const EvictionOptions& options,
                               const at::Tensor& keys, std::mt19937_64& rng) {
  const int64_t g = options.group_size;
  const bool per_group = options.per_group && g > 1;
  const int64_t s = areas.start / g, i = areas.intermediate / g, r = areas.recent / g;
  // Token scores padded to whole groups (per-token: g = 1, no padding).
  std::vector<double> padded = scores;
  if (per_group) padded.resize(((scores.size() + g - 1) / g) * g, 0.0);
  const std::vector<double> units = per_group ? GroupSums(padded, g) : padded;
  const int64_t total_units = units.size();
  const int64_t evictable = std::max<int64_t>(total_units - r, 0);
  const std::vector<double> ev(units.begin(), units.begin() + evictable);

  int64_t refined = 0;
  if (options.refined_algorithm != RefinedAlgorithm::kNone) {
    int64_t refined_tokens = options.refined_tokens;
    if (options.adaptive_refined() && !ev.empty()) {
      const int64_t k_min = MinGroupsForMass(ev, options.attention_mass_threshold);
      refined_tokens = std::max<int64_t>(0, areas.intermediate - k_min * g);
    }
    refined = std::min(refined_tokens / g, i);
  }
  const int64_t coarse = std::min(i - refined, evictable);

  std::vector<int64_t> kept_units;
  for (int64_t u = 0; u < s; ++u) kept_units.push_back(u);
  std::vector<int64_t> coarse_units;
  if (i > 0 && coarse > 0) {
    coarse_units = TopK(ev, coarse);
    std::sort(coarse_units.begin(), coarse_units.end());
    for (int64_t u : coarse_units) kept_units.push_back(u + s);
  }
  if (i > 0 && refined > 0) {
    std::vector<double> refined_scores(padded.begin(),
                                       padded.begin() + evictable * (per_group ? g : 1));
    for (int64_t u : coarse_units) {
      for (int64_t j = 0; j < (per_group ? g : 1); ++j) {
        refined_scores[u * (per_group ? g : 1) + j] = kNegInf;
      }
    }
    std::vector<int64_t> picked =
        options.refined_algorithm == RefinedAlgorithm::kKVCrush
            ? KvCrush(refined_scores, per_group ? g : 1, refined, options.kvcrush_anchor, per_group,
                      rng)
            : DiverseKv(refined_scores, per_group ? g : 1, refined, per_group, keys, areas.start);
    for (int64_t u : picked) kept_units.push_back(u + s);
  }
  for (int64_t u = std::max<int64_t>(total_units - r, 0); u < total_units; ++u) {
    kept_units.push_back(u + s);
  }
  std::vector<int64_t> positions;
  const int64_t unit = per_group ? g : 1;
  positions.reserve(kept_units.size() * unit);
  for (int64_t u : kept_units) {
    for (int64_t j = 0; j < unit; ++j) {
      const int64_t p = u * unit + j;
      if (p < cache_len) positions.push_back(p);
    }
  }
  // Only the refined picks can come out of order.
  if (!std::is_sorted(positions.begin(), positions.end())) {
    std::sort(positions.begin(), positions.end());
  }
  positions.erase(std::unique(positions.begin(), positions.end()), positions.end());
  return positions;
}

std::vector<int64_t> SelectThreshold(const std::vector<double>& scores, int64_t cache_len,
                                     const Areas& areas, double threshold) {
  const int64_t start = std::min(areas.start, cache_len);
  const int64_t end = std::max(start, cache_len - areas.recent);  // first recent position
  std::vector<int64_t> passing;                                   // score indices (position - S)
  for (int64_t p = start; p < end; ++p) {
    if (scores[p - areas.start] >= threshold) passing.push_back(p - areas.start);
  }
  if (areas.intermediate > 0 && static_cast<int64_t>(passing.size()) > areas.intermediate) {
    std::vector<double> values(passing.size());
    for (size_t i = 0; i < passing.size(); ++i) values[i] = scores[passing[i]];
    std::vector<int64_t> best = TopK(values, areas.intermediate);
    std::vector<int64_t> capped;
    for (int64_t i : best) capped.push_back(passing[i]);
    std::sort(capped.begin(), capped.end());
    passing = std::move(capped);
  }
  std::vector<int64_t> kept;
  for (int64_t p = 0; p < start; ++p) kept.push_back(p);
  for (int64_t i : passing) kept.push_back(i + areas.start);
  for (int64_t p = end; p < cache_len; ++p) kept.push_back(p);
  return kept;
}

std::vector<int64_t> SelectStreaming(int64_t cache_len, const Areas& areas) {
  std::vector<int64_t> positions;
  const int64_t tail = areas.intermediate + areas.recent;
  for (int64_t p = 0; p < cache_len; ++p) {
    if (p < areas.start || p >= cache_len - tail) positions.push_back(p);
  }
  return positions;
}

std::vector<std::vector<int64_t>> SelectAdaKV(const std::vector<std::vector<double>>& scores,
                                              const std::vector<int64_t>& cache_lens,
                                              const Areas& areas, const EvictionOptions& options) {
  const int64_t g = options.per_group ? options.group_size : 1;
  const int64_t heads = scores.size();
  const int64_t s = areas.start / g, i = areas.intermediate / g, r = areas.recent / g;
  const int64_t floor_units = static_cast<int64_t>(std::floor(options.adakv_floor * i));
  std::vector<std::vector<double>> units(heads);
  std::vector<std::vector<bool>> taken(heads);
  std::vector<int64_t> evictable(heads);
  std::vector<std::vector<int64_t>> kept_units(heads);
  int64_t remaining = i * heads;
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<double> padded = scores[h];
    padded.resize(((padded.size() + g - 1) / g) * g, 0.0);
    units[h] = GroupSums(padded, g);
    evictable[h] = std::max<int64_t>(static_cast<int64_t>(units[h].size()) - r, 0);
    taken[h].assign(evictable[h], false);
    std::vector<double> ev(units[h].begin(), units[h].begin() + evictable[h]);
    // A head whose evictable area fits its equal share keeps it all and frees the rest.
    const int64_t own = std::min(evictable[h] <= i ? evictable[h] : floor_units, evictable[h]);
    for (int64_t u : TopK(ev, own)) {
      taken[h][u] = true;
      kept_units[h].push_back(u);
    }
    remaining -= own;
  }
  // One top-k over every head's remaining groups.
  std::vector<std::pair<double, std::pair<int64_t, int64_t>>> pool;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t u = 0; u < evictable[h]; ++u)
      if (!taken[h][u]) pool.push_back({units[h][u], {h, u}});
  remaining = std::max<int64_t>(0, std::min<int64_t>(remaining, pool.size()));
  std::partial_sort(pool.begin(), pool.begin() + remaining, pool.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && a.second < b.second);
                    });
  for (int64_t j = 0; j < remaining; ++j)
    kept_units[pool[j].second.first].push_back(pool[j].second.second);
  std::vector<std::vector<int64_t>> out(heads);
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<int64_t> all;
    for (int64_t u = 0; u < s; ++u) all.push_back(u);
    for (int64_t u : kept_units[h]) all.push_back(u + s);
    const int64_t total = units[h].size();
    for (int64_t u = std::max<int64_t>(total - r, 0); u < total; ++u) all.push_back(u + s);
    for (int64_t u : all)
      for (int64_t j = 0; j < g; ++j)
        if (u * g + j < cache_lens[h]) out[h].push_back(u * g + j);
    std::sort(out[h].begin(), out[h].end());
    out[h].erase(std::unique(out[h].begin(), out[h].end()), out[h].end());
  }
  return out;
}

}  // namespace attnkit::eviction
