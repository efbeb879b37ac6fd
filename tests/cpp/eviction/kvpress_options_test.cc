// The kvpress-parity options and EXPECTED_ATTENTION beyond the kvpress conformance cases
// (tests/conformance/cases/{snapkv,tova,expected_attention}): average pooling against hand-computed
// values, SnapKV's pool before the window, EXPECTED_ATTENTION against a plain ATen restatement of
// its formula, in a session during decode, and the validation of every new field.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "attnkit/session/session.h"
#include "eviction/scorers.h"
#include "eviction/selection.h"

namespace attnkit {
namespace {

EvictionOptions Options(const std::string& text) {
  auto o = ParseEvictionConfig("enabled: true " + text, true);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? *o : EvictionOptions();
}

std::string ErrorOf(const std::string& text) {
  auto o = ParseEvictionConfig("enabled: true granularity: PER_TOKEN " + text, true);
  return o.ok() ? "" : std::string(o.status().message());
}

TEST(KvpressOptionsTest, AveragePoolCountsPaddingAsZeros) {
  const std::vector<double> v{1, 2, 3, 4, 5};
  // avg_pool1d(kernel 3, padding 1, count_include_pad): the edges divide by 3 too.
  const std::vector<double> centered = eviction::AveragePool(v, 3, PoolingAlignment::kCentered);
  const std::vector<double> want{1.0, 2.0, 3.0, 4.0, 3.0};
  for (size_t i = 0; i < v.size(); ++i) EXPECT_DOUBLE_EQ(centered[i], want[i]) << i;
  const std::vector<double> forward = eviction::AveragePool(v, 2, PoolingAlignment::kForward);
  const std::vector<double> want_forward{1.5, 2.5, 3.5, 4.5, 2.5};
  for (size_t i = 0; i < v.size(); ++i) EXPECT_DOUBLE_EQ(forward[i], want_forward[i]) << i;
  EXPECT_EQ(eviction::AveragePool(v, 1, PoolingAlignment::kCentered), v);
}

// One head, one prompt of 8 tokens, a window of 2 whose attention puts a large weight on key 6
// (the first window key): pooling over every key lets key 5 inherit it, pooling before the
// window does not.
TEST(KvpressOptionsTest, PoolBeforeWindowNeverReadsTheWindowKeys) {
  at::Tensor attn = at::zeros({1, 1, 2, 8});
  // Rows of queries 6 and 7; keys 0..4 get small distinct weights, key 6 a large one.
  for (int r = 0; r < 2; ++r) {
    for (int k = 0; k < 5; ++k) attn[0][0][r][k] = 0.01 * (k + 1);
    attn[0][0][r][6] = 0.8;
  }
  const std::string base =
      "algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 0 recent_tokens: 2 "
      "intermediate_tokens: 1 window_size: 2 ";
  for (bool before : {false, true}) {
    auto policy = EvictionPolicy::Create(
        Options(base + "pooling { kernel_size: 3 kind: AVERAGE before_window_only: " +
                (before ? "true" : "false") + " }"),
        1, 1, 1);
    ASSERT_TRUE(policy.ok()) << policy.status();
    ASSERT_TRUE((*policy)->ObserveWeights(0, attn).ok());
    auto kept = (*policy)->Select(0, {8}, at::Tensor());
    ASSERT_TRUE(kept.ok()) << kept.status();
    // Window sums 0.02, 0.04, 0.06, 0.08, 0.10, 0, 1.6, 0. Before the window (keys 0..5, zero
    // padding past key 5): key 3 averages 0.08, the best; over every key, key 5 averages in key
    // 6's 1.6.
    const std::vector<int64_t> want =
        before ? std::vector<int64_t>{3, 6, 7} : std::vector<int64_t>{5, 6, 7};
    EXPECT_EQ((*kept)[0], want) << "before_window_only: " << before;
  }
}

TEST(KvpressOptionsTest, NewFieldsAreValidatedByName) {
  EXPECT_NE(ErrorOf("algorithm: H2O start_tokens: 4 pooling { kind: AVERAGE }")
                .find("pooling.kind: AVERAGE only applies to SNAPKV and RKV, not H2O"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: RKV start_tokens: 4 pooling { before_window_only: true }")
                .find("pooling.before_window_only: only applies to SNAPKV, not RKV"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: SNAPKV start_tokens: 4 expected_attention { epsilon: 1 }")
                .find("expected_attention: only applies to EXPECTED_ATTENTION, not SNAPKV"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: EXPECTED_ATTENTION start_tokens: 4 "
                    "expected_attention { n_future_positions: -3 }")
                .find("expected_attention.n_future_positions: must be positive, got -3"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: EXPECTED_ATTENTION start_tokens: 4 "
                    "expected_attention { epsilon: -0.5 }")
                .find("expected_attention.epsilon: must be finite and non-negative"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: EXPECTED_ATTENTION start_tokens: 4 window_size: 8")
                .find("window_size: is only supported by"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: EXPECTED_ATTENTION start_tokens: 4 "
                    "pooling { kind: AVERAGE }")
                .find("pooling.kind"),
            std::string::npos);
  // Defaults are kvpress's; explicit false switches the terms off.
  const EvictionOptions d =
      Options("algorithm: EXPECTED_ATTENTION granularity: PER_TOKEN start_tokens: 4");
  EXPECT_EQ(d.expected_future_positions, 512);
  EXPECT_TRUE(d.expected_use_covariance);
  EXPECT_TRUE(d.expected_use_vnorm);
  EXPECT_EQ(d.expected_epsilon, 0.0);
  const EvictionOptions off = Options(
      "algorithm: EXPECTED_ATTENTION granularity: PER_TOKEN start_tokens: 4 expected_attention { "
      "use_covariance: false "
      "use_vnorm: false n_future_positions: 7 epsilon: 0.25 }");
  EXPECT_FALSE(off.expected_use_covariance);
  EXPECT_FALSE(off.expected_use_vnorm);
  EXPECT_EQ(off.expected_future_positions, 7);
  EXPECT_EQ(off.expected_epsilon, 0.25);
}

TEST(ThresholdEvictionTest, KeepsAreasAndEveryTokenAtOrAboveTheThresholdUpToTheCap) {
  // Positions 1..5 have scores 0.5, 0.1, 0.9, 0.7, 0.4; position 0 is the start area and 6 the
  // recent one (its score is never read).
  const std::vector<double> scores{0.5, 0.1, 0.9, 0.7, 0.4, 0.0};
  eviction::Areas areas{1, 0, 1};
  EXPECT_EQ(eviction::SelectThreshold(scores, 7, areas, 0.4),
            (std::vector<int64_t>{0, 1, 3, 4, 5, 6}));
  areas.intermediate = 2;  // the cap: the best two of those passing
  EXPECT_EQ(eviction::SelectThreshold(scores, 7, areas, 0.4), (std::vector<int64_t>{0, 3, 4, 6}));
  // A cache inside the areas keeps everything.
  EXPECT_EQ(eviction::SelectThreshold({}, 2, areas, 0.4), (std::vector<int64_t>{0, 1}));
}

TEST(ThresholdEvictionTest, PolicyEvictsPerHeadAndReportsNoBudgetWithoutACap) {
  auto policy = EvictionPolicy::Create(
      Options("algorithm: KNORM granularity: PER_TOKEN per_head: true recent_tokens: 2 "
              "score_threshold: -1.5"),
      1, 2, 2);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_EQ((*policy)->LayerBudget(0), std::numeric_limits<int64_t>::max());
  // Key norms: head 0 rows 1, 2, 1, 3, 1, 1; head 1 rows 2, 1, 1, 1, 2, 2 (the last two recent).
  const std::vector<std::vector<double>> norms{{1, 2, 1, 3, 1, 1}, {2, 1, 1, 1, 2, 2}};
  at::Tensor keys = at::zeros({2, 6, 4});
  for (int h = 0; h < 2; ++h)
    for (int t = 0; t < 6; ++t) keys[h][t][0] = norms[h][t];
  EXPECT_TRUE((*policy)->OverBudget(0, {6, 6}));
  auto kept = (*policy)->Select(0, {6, 6}, keys);
  ASSERT_TRUE(kept.ok()) << kept.status();
  // Scores -||k|| >= -1.5 survive: norms of 1.
  EXPECT_EQ((*kept)[0], (std::vector<int64_t>{0, 2, 4, 5}));
  EXPECT_EQ((*kept)[1], (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

TEST(ThresholdEvictionTest, ValidationNamesTheField) {
  EXPECT_NE(ErrorOf("algorithm: KNORM recent_tokens: 4 score_threshold: nan")
                .find("score_threshold: must be finite"),
            std::string::npos);
  auto grouped = ParseEvictionConfig(
      "enabled: true algorithm: KNORM recent_tokens: 32 score_threshold: 1", true);
  ASSERT_FALSE(grouped.ok());
  EXPECT_NE(
      std::string(grouped.status().message()).find("score_threshold: needs granularity: PER_TOKEN"),
      std::string::npos)
      << grouped.status();
  EXPECT_NE(ErrorOf("algorithm: STREAMING_LLM recent_tokens: 4 score_threshold: 1")
                .find("score_threshold: STREAMING_LLM has no scores to compare"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: H2O recent_tokens: 4 intermediate_tokens: 4 score_threshold: 1 "
                    "refined { algorithm: DIVERSEKV }")
                .find("refined.algorithm: does not compose with score_threshold"),
            std::string::npos);
  EXPECT_NE(ErrorOf("algorithm: H2O recent_tokens: 4 per_head: true score_threshold: 1 "
                    "budget { allocator: ADAKV }")
                .find("budget.allocator: ADAKV does not compose with score_threshold"),
            std::string::npos);
  EXPECT_EQ(ErrorOf("algorithm: H2O recent_tokens: 4 score_threshold: 0.01"), "");
}

TEST(ExpectedAttentionTest, SessionWithoutRopeIsRejected) {
  auto o = ParseSessionConfig(
      "num_layers: 1 num_heads: 2 num_kv_heads: 1 head_dim: 8 eviction { enabled: true "
      "algorithm: EXPECTED_ATTENTION granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 8 "
      "}",
      true);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(std::string(o.status().message())
                .find("eviction.algorithm: EXPECTED_ATTENTION needs the rope message"),
            std::string::npos)
      << o.status();
}

TEST(ExpectedAttentionTest, AttentionWeightsAloneAreAFailedPrecondition) {
  auto policy = EvictionPolicy::Create(Options("algorithm: EXPECTED_ATTENTION granularity: "
                                               "PER_TOKEN start_tokens: 2 intermediate_tokens: 4"),
                                       1, 2, 1);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_TRUE((*policy)->needs().queries);
  const absl::Status s = (*policy)->ObserveWeights(0, at::softmax(at::randn({1, 2, 3, 10}), -1));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(std::string(s.message()).find("SessionConfig.rope"), std::string::npos) << s;
}

// RoPE of x [.., d] at `position` (halves layout), float64.
at::Tensor Rotate(const at::Tensor& x, double position, double theta) {
  const int64_t d = x.size(-1), half = d / 2;
  at::Tensor inv = at::pow(theta, at::arange(half, at::kDouble) * (-2.0 / d));
  at::Tensor c = at::cos(inv * position), s = at::sin(inv * position);
  at::Tensor a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);
  return at::cat({a * c - b * s, a * s + b * c}, -1);
}

// The expected-attention scores of one kv head, restated with plain ATen ops from the formula
// (docs/algorithms.md 1.1): statistics of the pre-RoPE queries q_pre [G, T, d] past `sink`,
// rotation averaged over positions next .. next + future - 1, softmax over keys past `sink`.
at::Tensor ReferenceScores(const at::Tensor& q_pre, const at::Tensor& keys,
                           const at::Tensor& values, int sink, int64_t next, int future,
                           bool covariance, bool vnorm, double eps, double theta) {
  const int64_t d = keys.size(-1);
  const at::Tensor q = q_pre.narrow(1, sink, q_pre.size(1) - sink);
  const at::Tensor mu = q.mean(1);  // [G, d]
  const at::Tensor centered = q - mu.unsqueeze(1);
  const at::Tensor cov = at::bmm(centered.transpose(1, 2), centered) / q.size(1);  // [G, d, d]
  // R as the mean of rotation matrices: rotate the identity's columns.
  at::Tensor r = at::zeros({d, d}, at::kDouble);
  const at::Tensor eye = at::eye(d, at::kDouble);
  for (int i = 0; i < future; ++i) r += Rotate(eye, static_cast<double>(next + i), theta).t();
  r /= future;
  const at::Tensor k = keys.narrow(0, sink, keys.size(0) - sink);  // [L', d]
  at::Tensor total = at::zeros({k.size(0)}, at::kDouble);
  for (int64_t h = 0; h < q_pre.size(0); ++h) {
    at::Tensor logits = at::matmul(k, at::matmul(r, mu[h])) / std::sqrt(double(d));
    if (covariance) {
      const at::Tensor c = at::matmul(r, at::matmul(cov[h], r.t()));
      logits = logits + (at::matmul(k, c) * k).sum(1) / (2.0 * d);
    }
    total += at::softmax(logits, 0);
  }
  total /= q_pre.size(0);
  if (vnorm) total = (total + eps) * values.narrow(0, sink, k.size(0)).norm(2, {1});
  return total;
}

std::vector<int64_t> TopKept(const at::Tensor& scores, int sink, int64_t keep) {
  const at::Tensor top = std::get<1>(at::topk(scores, keep));
  std::vector<int64_t> kept;
  for (int i = 0; i < sink; ++i) kept.push_back(i);
  for (int64_t i = 0; i < keep; ++i) kept.push_back(top[i].item<int64_t>() + sink);
  std::sort(kept.begin(), kept.end());
  return kept;
}

// A session fed rotated q/k keeps, after the prompt and after each decode step, the tokens the
// plain restatement ranks best, for each combination of the terms; decode steps add their queries
// to the statistics.
TEST(ExpectedAttentionTest, SessionMatchesThePlainRestatementAtPrefillAndDecode) {
  const int H = 4, Hkv = 2, d = 8, sink = 2, P = 24, budget = 12;
  const double theta = 10000;
  for (int variant = 0; variant < 4; ++variant) {
    const bool covariance = variant & 1, vnorm = variant & 2;
    const std::string config =
        "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 rope { theta: 10000 } "
        "eviction { enabled: true algorithm: EXPECTED_ATTENTION granularity: PER_TOKEN "
        "per_head: true start_tokens: 2 intermediate_tokens: 10 expected_attention { "
        "n_future_positions: 5 epsilon: 0.01 use_covariance: " +
        std::string(covariance ? "true" : "false") + " use_vnorm: " + (vnorm ? "true" : "false") +
        " } }";
    auto options = ParseSessionConfig(config, true);
    ASSERT_TRUE(options.ok()) << options.status();
    auto session = Session::Create(*options);
    ASSERT_TRUE(session.ok()) << session.status();
    at::manual_seed(7 + variant);
    const int steps = 3;
    const at::Tensor q_pre =
        (at::randn({1, H, P + steps, d}) + at::randn({1, H, 1, d}) * 2).to(at::kDouble);
    const at::Tensor k_pre = at::randn({1, Hkv, P + steps, d}).to(at::kDouble);
    const at::Tensor v = at::randn({1, Hkv, P + steps, d}).to(at::kDouble);
    at::Tensor q = q_pre.clone(), k = k_pre.clone();
    for (int t = 0; t < P + steps; ++t) {
      q.select(2, t).copy_(Rotate(q_pre.select(2, t), t, theta));
      k.select(2, t).copy_(Rotate(k_pre.select(2, t), t, theta));
    }
    std::vector<std::vector<int64_t>> cache(Hkv);  // original positions held per kv head
    for (int step = -1; step < steps; ++step) {
      const int64_t first = step < 0 ? 0 : P + step, T = step < 0 ? P : 1;
      const at::Tensor qs = q.narrow(2, first, T).to(at::kFloat).contiguous();
      const at::Tensor ks = k.narrow(2, first, T).to(at::kFloat).contiguous();
      const at::Tensor vs = v.narrow(2, first, T).to(at::kFloat).contiguous();
      at::Tensor out = at::empty_like(qs);
      ASSERT_TRUE((*session)->Attend(0, qs, ks, vs, out).ok());
      for (int g = 0; g < Hkv; ++g) {
        for (int64_t t = first; t < first + T; ++t) cache[g].push_back(t);
        if (static_cast<int64_t>(cache[g].size()) > budget) {
          const at::Tensor index = at::tensor(cache[g], at::kLong);
          // Keys and values as the session holds them (float32), the queries as it saw them.
          const at::Tensor kg = k[0][g].index_select(0, index).to(at::kFloat).to(at::kDouble);
          const at::Tensor vg = v[0][g].index_select(0, index).to(at::kFloat).to(at::kDouble);
          const at::Tensor qg = q_pre[0].narrow(0, g * 2, 2).narrow(1, 0, first + T);
          const at::Tensor scores =
              ReferenceScores(qg, kg, vg, sink, first + T, 5, covariance, vnorm, 0.01, theta);
          std::vector<int64_t> kept;
          for (int64_t i : TopKept(scores, sink, budget - sink)) kept.push_back(cache[g][i]);
          cache[g] = kept;
        }
        auto held = (*session)->Positions(0, 0, g);
        ASSERT_TRUE(held.ok());
        EXPECT_EQ(*held, cache[g]) << "variant " << variant << " step " << step << " kv head " << g;
        cache[g] = *held;  // follow the session after a mismatch to report each step once
      }
    }
  }
}

}  // namespace
}  // namespace attnkit
