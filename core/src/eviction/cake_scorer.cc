// CAKE's eviction indicator (antgroup/cakekv, cake/model/modify_llama.py and cake_cache.py;
// docs/algorithms.md 1.10). At a call of several queries (the prompt), over the last window_size
// queries' attention A [H, w, K]: per key before the window, mean over the queries plus gamma
// times their unbiased variance, average-pooled with kernel 5 (padding 2, zeros counted), then
// averaged over each kv head's query heads. At a decode step: the step's own attention over the
// keys before the window, pooled and averaged the same way. Scores are replaced by every call,
// never accumulated, as CAKE's decoding cache recomputes them from the current query. The prompt
// call also sets the layer's preference entropy(A)^(1/tau1) * sum(var(A))^(1/tau2), the input of
// CAKE's layer budgets (eviction_policy.cc). The arithmetic is ATen's on float32 tensors shaped as
// the reference's, so the scores and the preference are its values.
#include <algorithm>
#include <memory>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "eviction/scorers.h"
#include "util/status_macros.h"

namespace attnkit::eviction {
namespace {

class CakeScorer : public ReplacingScorer {
 public:
  CakeScorer(const EvictionOptions& options, const HeadLayout& layout)
      : ReplacingScorer(options.start_tokens, layout.rows(), "CAKE needs the call's attention"),
        options_(options),
        layout_(layout) {}

  ObservationNeeds needs() const override {
    ObservationNeeds n;
    n.window_rows = options_.window_size;
    return n;
  }

  absl::Status Observe(LayerScores& state, const Observation& obs,
                       const std::vector<int64_t>& row_lengths) override {
    const at::Tensor& rows = obs.window_rows;
    if (!rows.defined() || rows.dim() != 3 || rows.size(0) != layout_.num_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("window_rows: CAKE needs the attention of the last queries [num_heads=",
                       layout_.num_heads, ", queries, cache tokens]"));
    }
    const int64_t prefix = rows.size(2) - options_.window_size;
    const bool prompt = obs.observed_queries == 0 && rows.size(1) > 1;
    // A decode call's rows may wait beside the observation; the prompt's are read now for the
    // layer's preference.
    if (prefix > 0 && !prompt && Defer(state, rows, row_lengths)) return absl::OkStatus();
    state.observed = true;
    state.pending_last = at::Tensor();
    state.scores = Indicator(rows, row_lengths, prompt ? &state : nullptr);
    return absl::OkStatus();
  }

 private:
  // A decode call's scores (ReplacingScorer): the indicator without the prompt's variance.
  std::vector<std::vector<double>> FromRows(
      const at::Tensor& rows, const std::vector<int64_t>& row_lengths) const override {
    return Indicator(rows, row_lengths, nullptr);
  }

  // The eviction indicator of the window rows [H, r, K] (any device; read on the host): the mean
  // over the rows (plus gamma times their variance for a prompt, whose preference is recorded in
  // *prompt_state once), pooled, averaged over each kv head's query heads; per row of the layout,
  // the tokens past the start area, zero from the window on.
  std::vector<std::vector<double>> Indicator(const at::Tensor& rows,
                                             const std::vector<int64_t>& row_lengths,
                                             LayerScores* prompt_state) const {
    const int64_t K = rows.size(2), prefix = K - options_.window_size;
    const int64_t S = options_.start_tokens;
    const int Hkv = layout_.num_kv_heads, G = layout_.num_heads / Hkv;
    std::vector<std::vector<double>> scores(layout_.rows());
    if (prefix <= 0) {
      for (int r = 0; r < layout_.rows(); ++r) {
        scores[r].assign(std::max<int64_t>(row_lengths[r] - S, 0), 0.0);
      }
      return scores;
    }
    const at::Tensor a = rows.to(at::kCPU, at::kFloat).narrow(2, 0, prefix);  // [H, r, prefix]
    at::Tensor indicator = a.mean(1);
    if (prompt_state != nullptr) {
      const at::Tensor var = a.var(1);  // unbiased, as torch.var
      indicator = indicator + var * options_.cake_gamma;
      if (!prompt_state->has_preference) {
        const at::Tensor entropy = -(a * at::log(a + 1e-10)).sum();
        const at::Tensor dispersion = var.sum(0).sum(0);
        const at::Tensor preference =
            entropy.pow(1.0 / options_.cake_tau1) * dispersion.pow(1.0 / options_.cake_tau2);
        prompt_state->preference = preference.item<float>();
        prompt_state->has_preference = true;
      }
    }
    const at::Tensor pooled =
        at::avg_pool1d(indicator.unsqueeze(0), {5}, {1}, {2}, false, true).squeeze(0);
    const at::Tensor per_kv = pooled.reshape({Hkv, G, prefix}).mean(1).contiguous();
    const float* p = per_kv.data_ptr<float>();
    for (int r = 0; r < layout_.rows(); ++r) {
      std::vector<double>& row = scores[r];
      row.assign(std::max<int64_t>(row_lengths[r] - S, 0), 0.0);
      // Layer-wide rows (not reachable: validation asks for per_head) would average the kv heads.
      const int h = layout_.per_head ? r : 0;
      for (int64_t t = S; t < std::min(prefix, row_lengths[r]); ++t) row[t - S] = p[h * prefix + t];
    }
    return scores;
  }

  EvictionOptions options_;
  HeadLayout layout_;
};

}  // namespace

std::unique_ptr<Scorer> MakeCakeScorer(const EvictionOptions& options, const HeadLayout& layout) {
  return std::make_unique<CakeScorer>(options, layout);
}

}  // namespace attnkit::eviction
