// EXPECTED_ATTENTION (kvpress's ExpectedAttentionPress; docs/algorithms.md 1.1): each cached key
// scored by the attention that future queries are expected to pay it. The statistics are the mean
// and covariance of every query past the start area (un-rotated to their pre-RoPE values with the
// session's RoPE layout), rotated by the RoPE averaged over the next n_future_positions positions.
#include <cmath>
#include <memory>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "eviction/scorers.h"

namespace attnkit::eviction {
namespace {

// The first and second member of RoPE pair j (interleaved pairs or halves).
int PairFirst(const RopeOptions& rope, int j) { return rope.interleaved ? 2 * j : j; }
int PairSecond(const RopeOptions& rope, int j, int d) {
  return rope.interleaved ? 2 * j + 1 : j + d / 2;
}

double InverseFrequency(const RopeOptions& rope, int j, int d) {
  return std::pow(rope.theta, -2.0 * j / d);
}

// Undoes the rotation of q [H, T, d] (float64) whose query t sits at position first + t.
at::Tensor Unrotate(const at::Tensor& q, int64_t first, const RopeOptions& rope) {
  const int64_t H = q.size(0), T = q.size(1), d = q.size(2);
  at::Tensor out = q.clone();
  const double* src = q.data_ptr<double>();
  double* dst = out.data_ptr<double>();
  for (int j = 0; j < d / 2; ++j) {
    const int a = PairFirst(rope, j), b = PairSecond(rope, j, static_cast<int>(d));
    const double inv_freq = InverseFrequency(rope, j, static_cast<int>(d));
    for (int64_t t = 0; t < T; ++t) {
      const double angle = static_cast<double>(first + t) * inv_freq;
      const double c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < H; ++h) {
        const double* x = src + (h * T + t) * d;
        double* y = dst + (h * T + t) * d;
        y[a] = x[a] * c + x[b] * s;  // rotation by -angle
        y[b] = -x[a] * s + x[b] * c;
      }
    }
  }
  return out;
}

// The rotation averaged over positions first .. first + count - 1, as a [d, d] float64 matrix R
// (a rotated vector is R x): per pair, [[mean cos, -mean sin], [mean sin, mean cos]].
at::Tensor AverageRotation(int64_t first, int count, const RopeOptions& rope, int d) {
  at::Tensor r = at::zeros({d, d}, at::TensorOptions().dtype(at::kDouble));
  double* m = r.data_ptr<double>();
  for (int j = 0; j < d / 2; ++j) {
    const double inv_freq = InverseFrequency(rope, j, d);
    // Sums of cos and sin over an arithmetic progression of angles, in closed form:
    // sum_i e^{i(x0 + i f)} = e^{i(x0 + (n-1) f / 2)} sin(n f / 2) / sin(f / 2).
    const double half = 0.5 * inv_freq;
    const double middle = (static_cast<double>(first) + 0.5 * (count - 1)) * inv_freq;
    double c = 0, s = 0;
    if (std::abs(std::sin(half)) > 1e-9) {
      const double ratio = std::sin(count * half) / std::sin(half) / count;
      c = std::cos(middle) * ratio;
      s = std::sin(middle) * ratio;
    } else {  // f a multiple of 2 pi: every angle is the same
      c = std::cos(middle);
      s = std::sin(middle);
    }
    const int a = PairFirst(rope, j), b = PairSecond(rope, j, d);
    m[a * d + a] = c;
    m[b * d + b] = c;
    m[a * d + b] = -s;
    m[b * d + a] = s;
  }
  return r;
}

class ExpectedAttentionScorer : public Scorer {
 public:
  ExpectedAttentionScorer(const EvictionOptions& options, const HeadLayout& layout)
      : options_(options), layout_(layout) {}

  ObservationNeeds needs() const override {
    ObservationNeeds n;
    n.keys = true;
    n.values = options_.expected_use_vnorm;
    n.queries = true;
    return n;
  }

  absl::Status Observe(LayerScores& state, const Observation& obs,
                       const std::vector<int64_t>&) override {
    if (!obs.queries.defined() || obs.rope == nullptr) {
      return absl::FailedPreconditionError(
          "EXPECTED_ATTENTION scores from the queries and their RoPE layout, which only a session "
          "with SessionConfig.rope hands to the policy; the policy-level observe of attention "
          "weights cannot drive it");
    }
    if (obs.queries.dim() != 3 || obs.queries.size(0) != layout_.num_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("queries: expected [num_heads=", layout_.num_heads, ", tokens, head_dim]"));
    }
    const int64_t T = obs.queries.size(1), d = obs.queries.size(2);
    // Queries at positions inside the start area stay out of the statistics (kvpress's n_sink).
    const int64_t skip =
        std::min<int64_t>(T, std::max<int64_t>(options_.start_tokens - obs.first_position, 0));
    rope_ = *obs.rope;
    state.next_position = obs.first_position + T;
    state.observed = true;
    if (skip == T) return absl::OkStatus();
    const at::Tensor q =
        obs.queries.narrow(1, skip, T - skip).to(at::kCPU, at::kDouble).contiguous();
    const at::Tensor pre = Unrotate(q, obs.first_position + skip, *obs.rope);  // [H, T', d]
    if (!state.query_sum.defined()) {
      const auto doubles = at::TensorOptions().dtype(at::kDouble);
      state.query_sum = at::zeros({layout_.num_heads, d}, doubles);
      state.query_outer = at::zeros({layout_.num_heads, d, d}, doubles);
      state.query_count = 0;
    }
    state.query_sum += pre.sum(1);
    state.query_outer += at::bmm(pre.transpose(1, 2), pre);
    state.query_count += T - skip;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores& state,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor& keys,
                                                          const at::Tensor& values) override {
    if (state.query_count == 0) {
      return absl::FailedPreconditionError(
          "EXPECTED_ATTENTION has no query past the start area yet: observe before selecting");
    }
    const at::Tensor k = keys.to(at::kCPU, at::kDouble).contiguous();  // [Hkv, K, d]
    const int64_t Hkv = k.size(0), d = k.size(2);
    const int64_t S = options_.start_tokens;
    const double n = static_cast<double>(state.query_count);
    const at::Tensor mean = state.query_sum / n;  // [H, d]
    const at::Tensor rotation = AverageRotation(
        state.next_position, options_.expected_future_positions, rope_, static_cast<int>(d));
    const at::Tensor mean_rotated = at::matmul(mean, rotation.t());  // rows R mu
    at::Tensor cov_rotated;
    if (options_.expected_use_covariance) {
      const at::Tensor cov =
          state.query_outer / n - at::bmm(mean.unsqueeze(2), mean.unsqueeze(1));  // [H, d, d]
      cov_rotated = at::matmul(at::matmul(rotation, cov), rotation.t());
    }
    at::Tensor value_norms;
    if (options_.expected_use_vnorm) {
      value_norms = values.to(at::kCPU, at::kDouble).norm(2, {2}).contiguous();  // [Hkv, K]
    }
    const int group = layout_.num_heads / layout_.num_kv_heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    std::vector<std::vector<double>> per_kv(Hkv);
    for (int64_t g = 0; g < Hkv; ++g) {
      const int64_t len = std::min<int64_t>(k.size(1), row_lengths[layout_.per_head ? g : 0]);
      per_kv[g].assign(len, 0.0);
      if (len <= S) continue;
      // The group's query heads at once: logits [group, L'].
      const at::Tensor kg = k[g].narrow(0, S, len - S);  // [L', d]
      at::Tensor logits = at::matmul(mean_rotated.narrow(0, g * group, group), kg.t()) * scale;
      if (cov_rotated.defined()) {
        const at::Tensor ck = at::matmul(kg.unsqueeze(0), cov_rotated.narrow(0, g * group, group));
        logits = logits + (ck * kg.unsqueeze(0)).sum(2) / (2.0 * d);
      }
      const at::Tensor expected = at::softmax(logits, 1).mean(0).contiguous();
      const double* e = expected.data_ptr<double>();
      const double* norms = value_norms.defined()
                                ? value_norms.data_ptr<double>() + g * value_norms.size(1)
                                : nullptr;
      for (int64_t t = 0; t < len - S; ++t) {
        per_kv[g][S + t] =
            norms != nullptr ? (e[t] + options_.expected_epsilon) * norms[S + t] : e[t];
      }
    }
    return RowsFromKvHeads(per_kv, layout_, row_lengths, options_.start_tokens);
  }

  void Compact(LayerScores&, const KeptPositions&) override {}

 private:
  EvictionOptions options_;
  HeadLayout layout_;
  RopeOptions rope_;  // the session's layout, from the observations
};

}  // namespace

std::unique_ptr<Scorer> MakeExpectedAttentionScorer(const EvictionOptions& options,
                                                    const HeadLayout& layout) {
  return std::make_unique<ExpectedAttentionScorer>(options, layout);
}

}  // namespace attnkit::eviction
