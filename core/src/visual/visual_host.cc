#include "visual/visual_host.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cpu/visual_greedy.h"
#include "cpu/visual_linalg.h"
#include "util/status_macros.h"
#include "visual/cdpruner_kernel.h"
#include "visual/visual_math.h"

namespace attnkit::visual {
namespace {

absl::Status CheckFinite(const at::Tensor& t, const std::string& what) {
  if (!at::isfinite(t).all().item<bool>()) return NonFiniteError(what);
  return absl::OkStatus();
}

// Unbiased integer in [0, bound) from a 64-bit engine (std::uniform_int_distribution is
// implementation-defined; this is the same on every platform).
uint64_t Bounded(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t x;
  do {
    x = gen();
  } while (x >= limit);
  return x % bound;
}

}  // namespace

absl::StatusOr<Picks> SelectCdprunerOnHost(absl::Span<const SelectionProblem> problems,
                                           const at::Tensor& text, const VisualOptions& options) {
  const int threads = kernels::VisualThreads();
  ATTNKIT_RETURN_IF_ERROR(CheckFinite(text, "text_embeds"));
  // Kernels (GEMMs, multithreaded inside) one problem at a time; greedy loops in parallel.
  std::vector<at::Tensor> sims(problems.size()), rels(problems.size());
  for (size_t p = 0; p < problems.size(); ++p) {
    at::Tensor rel =
        options.fast_kernel
            ? ApplyTheta(RelevanceFast(problems[p].embeds, text, options.positive_relevance),
                         options.theta)
            : ExactApplyTheta(
                  ExactRelevance(problems[p].embeds, text, options.positive_relevance, threads),
                  options.theta);
    ATTNKIT_RETURN_IF_ERROR(CheckFinite(rel, "relevance (image_embeds)"));
    at::Tensor sim = options.fast_kernel ? CosineSimilarity(problems[p].features).contiguous()
                                         : ExactSimilarity(problems[p].features, threads);
    ATTNKIT_RETURN_IF_ERROR(CheckFinite(at::diagonal(sim), "similarity (image_features)"));
    // L's diagonal overflows iff some (r_a * S_aa) * r_a does.
    ATTNKIT_RETURN_IF_ERROR(CheckFinite(rel * at::diagonal(sim) * rel, "kernel"));
    sims[p] = sim;
    rels[p] = rel.contiguous();
  }
  Picks picks(problems.size());
  std::vector<int64_t> counts(problems.size());
  auto greedy = [&](int64_t p, int threads) {
    const int64_t n = sims[p].size(0), k = problems[p].k;
    std::vector<float> work(kernels::DppGreedyMapWorkSize(n, k));
    picks[p].resize(k);
    counts[p] = kernels::DppGreedyMap(sims[p].data_ptr<float>(), rels[p].data_ptr<float>(), n, n, k,
                                      options.gain_guard, work.data(), picks[p].data(), threads);
  };
  if (problems.size() == 1) {
    // One selection: its steps are split over the threads (for large N).
    greedy(0, threads);
  } else {
    // Several images: one greedy loop per thread.
    const int64_t count = static_cast<int64_t>(problems.size());
    const int team = static_cast<int>(std::min<int64_t>(threads, count));
    kernels::RunOnThreads(team, [&](int t) {
      for (int64_t p = t; p < count; p += team) greedy(p, 1);
    });
  }
  for (size_t p = 0; p < problems.size(); ++p) picks[p].resize(counts[p]);
  return picks;
}

absl::StatusOr<Picks> SelectDivPruneOnHost(absl::Span<const SelectionProblem> problems,
                                           const at::Tensor& /*text*/,
                                           const VisualOptions& /*options*/) {
  const int threads = kernels::VisualThreads();
  Picks picks(problems.size());
  for (size_t p = 0; p < problems.size(); ++p) {
    at::Tensor sim = ExactSimilarity(problems[p].features, threads);
    ATTNKIT_RETURN_IF_ERROR(CheckFinite(at::diagonal(sim), "similarity (image_features)"));
    const int64_t n = sim.size(0), k = problems[p].k;
    std::vector<float> work(2 * n);
    picks[p].resize(k);
    kernels::MaxMinDiversity(sim.data_ptr<float>(), n, n, k, work.data(), picks[p].data());
  }
  return picks;
}

absl::StatusOr<Picks> SelectRandomSubset(absl::Span<const SelectionProblem> problems,
                                         const at::Tensor& /*text*/, const VisualOptions& options) {
  // One generator, consumed problem by problem. A host RNG: the same picks whatever the device.
  std::mt19937_64 gen(options.seed);
  Picks picks(problems.size());
  for (size_t p = 0; p < problems.size(); ++p) {
    const int64_t n = problems[p].features.size(0), k = problems[p].k;
    std::vector<int64_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t r = i + static_cast<int64_t>(Bounded(gen, static_cast<uint64_t>(n - i)));
      std::swap(perm[i], perm[r]);
    }
    picks[p].assign(perm.begin(), perm.begin() + k);
  }
  return picks;
}

absl::StatusOr<Picks> SelectUniformGrid(absl::Span<const SelectionProblem> problems,
                                        const at::Tensor& /*text*/,
                                        const VisualOptions& /*options*/) {
  // Token floor((i + 1/2) N / k) for i < k: the centres of k equal segments.
  Picks picks(problems.size());
  for (size_t p = 0; p < problems.size(); ++p) {
    const int64_t n = problems[p].features.size(0), k = problems[p].k;
    for (int64_t i = 0; i < k; ++i) picks[p].push_back(((2 * i + 1) * n) / (2 * k));
  }
  return picks;
}

}  // namespace attnkit::visual
