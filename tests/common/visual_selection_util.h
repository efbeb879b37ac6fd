// Comparing two visual selections whose kernels round differently (the exact host path against the
// device path, whose GEMMs sum in another order): the picks must be equal where every greedy step
// has a clear winner; after a near-tie they may part, but every step must still be a greedy step up
// to rounding and the DPP objectives must agree. Everything here is float64 on the CPU, from the
// same formulas as core/src/visual/visual_math.h. Also the inputs and options the visual tests
// share.
#ifndef ATTNKIT_TESTS_COMMON_VISUAL_SELECTION_UTIL_H_
#define ATTNKIT_TESTS_COMMON_VISUAL_SELECTION_UTIL_H_

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <gtest/gtest.h>

#include "attnkit/config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace attnkit::testing {

using Indices = std::vector<int64_t>;
using Selection = std::vector<Indices>;

// A CDPruner configuration keeping k tokens.
inline VisualOptions Cdp(int64_t k, double theta = 0.5) {
  VisualOptions o;
  o.num_keep_tokens = static_cast<int>(k);
  o.theta = theta;
  return o;
}

// Random image embeddings [n, c], features [n, dv] and text embeddings [m, c] on the CPU.
struct Inputs {
  at::Tensor embeds, features, text;
};
inline Inputs Random(int64_t n, int64_t c, int64_t dv, int64_t m, uint64_t seed) {
  at::manual_seed(seed);
  return {at::randn({n, c}), at::randn({n, dv}), at::randn({m, c})};
}

inline Indices Sorted(Indices v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Per-image picks of a global budget as indices into the images' concatenation.
inline Indices Flatten(const Selection& picks, const std::vector<int64_t>& sizes) {
  Indices flat;
  int64_t offset = 0;
  for (size_t i = 0; i < sizes.size() && i < picks.size(); ++i) {
    for (int64_t idx : picks[i]) flat.push_back(offset + idx);
    offset += sizes[i];
  }
  return flat;
}

// x / ||x|| per row, zero rows stay zero (float64).
inline at::Tensor NormalizeRows64(const at::Tensor& x) {
  at::Tensor norm = at::linalg_vector_norm(x, 2, at::IntArrayRef{-1}, /*keepdim=*/true);
  return x / at::where(norm == 0, at::ones_like(norm), norm);
}

// CDPruner's conditional kernel L = diag(r) S diag(r) in float64 on the CPU, inputs of any device
// and dtype: relevance (mean -cos, or +cos with `positive`, min-max normalized), theta, cosine S.
inline at::Tensor KernelFloat64(const at::Tensor& embeds, const at::Tensor& features,
                                const at::Tensor& text, double theta, bool positive) {
  const auto f64 = at::TensorOptions().device(at::kCPU).dtype(at::kDouble);
  at::Tensor e = NormalizeRows64(embeds.to(f64)), t = NormalizeRows64(text.to(f64));
  at::Tensor rel = at::mm(e, t.t()).mean(1);
  if (!positive) rel = -rel;
  rel = (rel - rel.min()) / (rel.max() - rel.min() + 1e-6);
  if (theta != 1.0) rel = at::exp(theta / (2 * (1 - theta)) * rel);
  at::Tensor x = NormalizeRows64(features.to(f64));
  return rel.unsqueeze(1) * at::mm(x, x.t()) * rel.unsqueeze(0);
}

// The cosine similarity in float64 on the CPU (DivPrune's side).
inline at::Tensor Similarity64(const at::Tensor& features) {
  at::Tensor x =
      NormalizeRows64(features.to(at::TensorOptions().device(at::kCPU).dtype(at::kDouble)));
  return at::mm(x, x.t());
}

// The smallest gap between the largest and the second-largest remaining gain over the first k
// steps of the float64 greedy MAP of `kernel64`, relative to the kernel's largest diagonal entry
// (the scale of float32 rounding in every gain, however small the gains have become); steps whose
// best gain is below 1e-10 (the guard's stop) end the walk. Float32 rounding (~1e-6 of that scale
// here) cannot flip a step whose gap is far above it.
inline double GreedyMinMargin(const at::Tensor& kernel64, int64_t k) {
  const int64_t n = kernel64.size(0);
  at::Tensor d2 = at::diagonal(kernel64).clone();
  const double scale = d2.max().item<double>();
  at::Tensor c = at::zeros({k, n}, kernel64.options());
  double margin = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = at::argmax(d2).item<int64_t>();
    const double best = d2[j].item<double>();
    if (best < 1e-10) break;
    if (i + 1 < n) {
      const double second = std::get<0>(at::topk(d2, 2))[1].item<double>();
      margin = std::min(margin, (best - second) / scale);
    }
    at::Tensor e = kernel64[j].clone();
    if (i > 0) e -= at::mv(c.narrow(0, 0, i).t(), c.narrow(0, 0, i).select(1, j));
    e /= std::sqrt(best + 1e-5);
    c[i].copy_(e);
    d2 -= e * e;
    d2[j] = -std::numeric_limits<double>::infinity();
  }
  return margin;
}

// The same for DivPrune over the float64 similarity: the smallest absolute gap between the best
// and the next lower score (second-smallest distance of a column for the first pick, the min
// distance to the picks after), over the first k picks. Exact ties do not count: they are the two
// columns of a pair of mutual nearest neighbours, equal on both paths too (their similarity is
// exactly symmetric), where the first index wins.
inline double DivPruneMinMargin(const at::Tensor& similarity64, int64_t k) {
  const int64_t n = similarity64.size(0);
  at::Tensor dist = 1.0 - similarity64;
  at::Tensor score =
      n == 1 ? dist[0] : std::get<0>(at::topk(dist, 2, 0, /*largest=*/false)).select(0, 1).clone();
  at::Tensor nearest = at::full({n}, std::numeric_limits<double>::infinity(), dist.options());
  double margin = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < k; ++i) {
    const double best = score.max().item<double>();
    at::Tensor lower = score.masked_select(score < best - 1e-12);
    if (lower.numel() > 0) margin = std::min(margin, best - lower.max().item<double>());
    const int64_t j = at::argmax(score).item<int64_t>();
    nearest = at::minimum(nearest, dist[j]);
    nearest[j] = -std::numeric_limits<double>::infinity();
    score = nearest;
  }
  return margin;
}

// How far a DivPrune pick order `order` over the float64 similarity is from exact max-min steps:
// the largest shortfall, over its steps, of the pick's score below the best score of that step.
// 0 for the exact steps, rounding-sized (~1e-6) for float32 ones; infinite for a repeated pick.
inline double DivPruneShortfall(const at::Tensor& similarity64, const std::vector<int64_t>& order) {
  const int64_t n = similarity64.size(0);
  at::Tensor dist = 1.0 - similarity64;
  at::Tensor score =
      n == 1 ? dist[0] : std::get<0>(at::topk(dist, 2, 0, /*largest=*/false)).select(0, 1).clone();
  at::Tensor nearest = at::full({n}, std::numeric_limits<double>::infinity(), dist.options());
  double shortfall = 0;
  for (int64_t j : order) {
    shortfall = std::max(shortfall, (score.max() - score[j]).item<double>());
    nearest = at::minimum(nearest, dist[j]);
    nearest[j] = -std::numeric_limits<double>::infinity();
    score = nearest;
  }
  return shortfall;
}

// How far a greedy MAP pick order `order` over `kernel64` is from exact greedy steps: the largest
// shortfall, over its steps, of the float64 gain of the pick below the best gain of that step,
// relative to the largest diagonal entry of the kernel. 0 for the exact greedy; float32 rounding
// makes it ~1e-6 at most (a pick decided by rounding among near-tied gains); a wrong pick far more.
inline double GreedyShortfall(const at::Tensor& kernel64, const std::vector<int64_t>& order) {
  const int64_t n = kernel64.size(0), k = static_cast<int64_t>(order.size());
  at::Tensor d2 = at::diagonal(kernel64).clone();
  const double scale = d2.max().item<double>();
  at::Tensor c = at::zeros({std::max<int64_t>(k, 1), n}, kernel64.options());
  double shortfall = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = order[i];
    const double gain = d2[j].item<double>();
    shortfall = std::max(shortfall, (d2.max().item<double>() - gain) / scale);
    at::Tensor e = kernel64[j].clone();
    if (i > 0) e -= at::mv(c.narrow(0, 0, i).t(), c.narrow(0, 0, i).select(1, j));
    e /= std::sqrt(std::max(gain, 0.0) + 1e-5);
    c[i].copy_(e);
    d2 -= e * e;
    d2[j] = -std::numeric_limits<double>::infinity();
  }
  return shortfall;
}

// log det L[S, S] of the picks S (the DPP objective greedy MAP maximizes), float64.
inline double LogDet(const at::Tensor& kernel64, const std::vector<int64_t>& picks) {
  at::Tensor idx = at::tensor(picks, at::kLong);
  at::Tensor sub = kernel64.index_select(0, idx).index_select(1, idx);
  return std::get<1>(at::linalg_slogdet(sub)).item<double>();
}

// A greedy step whose float64 gap (GreedyMinMargin) is above this cannot be flipped by float32
// rounding (~1e-6 here): both paths must pick the same tokens.
constexpr double kSeparatedGains = 1e-4;
// The largest GreedyShortfall allowed of a float32 greedy: rounding among near-tied gains.
constexpr double kMaxGreedyShortfall = 1e-5;

// Two selections (host: the exact path; device: the device path) of one problem with the float64
// kernel `kernel64` and budget k: equal picks when every greedy step has a clear winner (with
// `separated` the inputs must be so). Elsewhere rounding may flip a near-tie and the two greedy
// paths part: equal sizes, and objectives within 0.01 per pick in mean log gain (check each step
// with GreedyShortfall on the device's pick order). Returns the smallest gap.
inline double ExpectSamePicks(const std::vector<int64_t>& host, const std::vector<int64_t>& device,
                              const at::Tensor& kernel64, int64_t k, bool separated,
                              const std::string& what) {
  const double margin = GreedyMinMargin(kernel64, k);
  if (separated) {
    EXPECT_GE(margin, kSeparatedGains) << what << ": inputs meant to be well separated are not";
  }
  if (margin >= kSeparatedGains) {
    EXPECT_EQ(device, host) << what << " (smallest gap " << margin << ")";
  } else if (device != host) {
    EXPECT_EQ(device.size(), host.size()) << what;
    const double a = LogDet(kernel64, host), b = LogDet(kernel64, device);
    EXPECT_NEAR(b, a, 0.01 * static_cast<double>(host.size()))
        << what << " (smallest gap " << margin << ")";
  }
  return margin;
}

}  // namespace attnkit::testing

#endif  // ATTNKIT_TESTS_COMMON_VISUAL_SELECTION_UTIL_H_
