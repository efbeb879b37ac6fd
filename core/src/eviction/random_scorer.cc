// RANDOM_SCORES: the random-eviction baseline (kvpress's RandomPress, seeded uniform scores).
// Every selection scores the cache with uniform draws in [0, 1), one per (kv head, token),
// from a CPU generator seeded with EvictionOptions::random_seed: ATen's CPU generator and uniform
// kernel are PyTorch's, so the draws are torch.rand(kv_heads, tokens) after manual_seed(seed), as
// RandomPress seeds before each scoring. Per-head selection keeps each kv head's best draws;
// layer-wide selection their mean over kv heads. No attention and no keys are needed.
#include <algorithm>
#include <memory>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "eviction/scorers.h"

namespace attnkit::eviction {
namespace {

class RandomScorer : public Scorer {
 public:
  RandomScorer(const EvictionOptions& options, const HeadLayout& layout)
      : options_(options), layout_(layout) {}

  ObservationNeeds needs() const override { return {}; }

  absl::Status Observe(LayerScores& state, const Observation&,
                       const std::vector<int64_t>&) override {
    state.observed = true;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores&,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor&,
                                                          const at::Tensor&) override {
    const int64_t tokens = *std::max_element(row_lengths.begin(), row_lengths.end());
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options_.random_seed);
    const at::Tensor draws =
        at::rand({layout_.num_kv_heads, tokens}, generator, at::TensorOptions(at::kFloat));
    const float* p = draws.data_ptr<float>();
    std::vector<std::vector<double>> per_kv(layout_.num_kv_heads);
    for (int h = 0; h < layout_.num_kv_heads; ++h)
      per_kv[h].assign(p + h * tokens, p + (h + 1) * tokens);
    return RowsFromKvHeads(per_kv, layout_, row_lengths, options_.start_tokens);
  }

  void Compact(LayerScores&, const KeptPositions&) override {}

 private:
  EvictionOptions options_;
  HeadLayout layout_;
};

}  // namespace

std::unique_ptr<Scorer> MakeRandomScorer(const EvictionOptions& options, const HeadLayout& layout) {
  return std::make_unique<RandomScorer>(options, layout);
}

}  // namespace attnkit::eviction
