// Policy behaviour beyond the reference conformance cases: per-token KVCrush, the policies the
// reference lacks, per-head selection, budgets, counters, and misuse.
#include <algorithm>
#include <set>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"

namespace attnkit {
namespace {

EvictionOptions Options(const std::string& text) {
  auto o = ParseEvictionConfig("enabled: true " + text, true);
  EXPECT_TRUE(o.ok()) << o.status();
  return *o;
}

std::unique_ptr<EvictionPolicy> Make(const std::string& text, int layers = 1, int heads = 4,
                                     int kv_heads = 2) {
  auto p = EvictionPolicy::Create(Options(text), layers, heads, kv_heads);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

// Causal softmax attention weights [1, H, T, K] of random q/k (queries = last T of K keys).
at::Tensor Weights(int heads, int64_t T, int64_t K, int seed) {
  at::manual_seed(seed);
  at::Tensor s = at::randn({1, heads, T, K}).mul(2.0);
  at::Tensor limit = at::arange(K - T, K).unsqueeze(1);
  s.masked_fill_(at::arange(K).unsqueeze(0).gt(limit), -INFINITY);
  return at::softmax(s, -1);
}

std::vector<int64_t> RunSteps(EvictionPolicy& p, int64_t prompt, int steps, int heads,
                              const at::Tensor& keys, std::vector<int64_t>* first_kept = nullptr) {
  int64_t len = prompt;
  std::vector<int64_t> kept;
  for (int step = -1; step < steps; ++step) {
    const int64_t T = step < 0 ? prompt : 1;
    if (step >= 0) len += 1;
    EXPECT_TRUE(p.ObserveWeights(0, Weights(heads, T, len, 100 + step)).ok());
    auto k = p.Select(0, {len}, keys.defined() ? keys.narrow(1, 0, len) : keys);
    EXPECT_TRUE(k.ok()) << k.status();
    kept = (*k)[0];
    if (first_kept && step < 0) *first_kept = kept;
    len = static_cast<int64_t>(kept.size());
  }
  return kept;
}

TEST(EvictionPolicyTest, PerTokenKvCrushKeepsBudgetWithEveryAnchor) {
  for (const char* anchor : {"ZEROS", "ONES", "ALTERNATE", "RANDOM"}) {
    auto p = Make(
        std::string(
            "algorithm: H2O granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 16 "
            "recent_tokens: 8 refined { algorithm: KVCRUSH refined_tokens: 8 kvcrush_anchor: ") +
        anchor + " }");
    std::vector<int64_t> prompt_kept;
    RunSteps(*p, 48, 0, 4, at::Tensor(), &prompt_kept);
    ASSERT_EQ(prompt_kept.size(), 28u) << anchor;
    for (int i = 0; i < 4; ++i) EXPECT_EQ(prompt_kept[i], i) << anchor;
    for (int i = 0; i < 8; ++i) EXPECT_EQ(prompt_kept[20 + i], 40 + i) << anchor;
    EXPECT_TRUE(std::is_sorted(prompt_kept.begin(), prompt_kept.end()));
  }
}

TEST(EvictionPolicyTest, PerTokenKvCrushMeanAnchorIsRejected) {
  auto o = ParseEvictionConfig(
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 8 recent_tokens: "
      "4 "
      "refined { algorithm: KVCRUSH kvcrush_anchor: MEAN }",
      true);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("refined.kvcrush_anchor"), std::string::npos);
}

TEST(EvictionPolicyTest, RandomAnchorIsSeeded) {
  const std::string base =
      "algorithm: H2O granularity: PER_GROUP group_size: 2 start_tokens: 2 intermediate_tokens: 20 "
      "recent_tokens: 2 refined { algorithm: KVCRUSH refined_tokens: 12 kvcrush_anchor: RANDOM "
      "seed: ";
  auto a = Make(base + "1 }"), b = Make(base + "1 }");
  EXPECT_EQ(RunSteps(*a, 64, 10, 4, at::Tensor()), RunSteps(*b, 64, 10, 4, at::Tensor()));
}

TEST(EvictionPolicyTest, StreamingLlmKeepsStartAndNewest) {
  auto p = Make(
      "algorithm: STREAMING_LLM granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 0 "
      "recent_tokens: 8");
  std::vector<int64_t> kept = RunSteps(*p, 40, 0, 4, at::Tensor());
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1, 2, 3, 32, 33, 34, 35, 36, 37, 38, 39}));
}

TEST(EvictionPolicyTest, TovaKeepsWhatTheLastQueryAttends) {
  auto p = Make(
      "algorithm: TOVA granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 2 "
      "recent_tokens: 1",
      1, 2, 1);
  // 6 tokens; the last query attends tokens 1 and 3 most.
  at::Tensor w = at::zeros({1, 2, 1, 6});
  w[0][0][0][1] = 0.5;
  w[0][1][0][3] = 0.4;
  w[0][0][0][2] = 0.1;
  w.select(3, 5).fill_(0.1);
  ASSERT_TRUE(p->ObserveWeights(0, w).ok());
  auto kept = p->Select(0, {6}, at::Tensor());
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ((*kept)[0], (std::vector<int64_t>{1, 3, 5}));
}

TEST(EvictionPolicyTest, KNormKeepsLowNormKeysAndKeyDiffKeepsDistinctiveKeys) {
  at::Tensor keys = at::ones({1, 8, 4});  // one kv head, 8 tokens
  keys[0][2] *= 0.1;                      // low norm
  keys[0][5] *= 0.2;
  auto knorm = Make(
      "algorithm: KNORM granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 2 "
      "recent_tokens: 1",
      1, 1, 1);
  auto kept = knorm->Select(0, {8}, keys);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)[0], (std::vector<int64_t>{2, 5, 7}));

  at::Tensor diverse = at::ones({1, 8, 4});
  diverse[0][3] = at::tensor({1.0f, -1.0f, 1.0f, -1.0f});  // orthogonal to the others
  auto keydiff = Make(
      "algorithm: KEYDIFF granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 1 "
      "recent_tokens: 1",
      1, 1, 1);
  kept = keydiff->Select(0, {8}, diverse);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)[0], (std::vector<int64_t>{3, 7}));
  // Without keys they fail with a message naming the argument.
  auto missing = keydiff->Select(0, {8}, at::Tensor());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("keys"), std::string::npos);
}

TEST(EvictionPolicyTest, PerHeadSelectionKeepsDifferentTokensPerKvHead) {
  auto p = Make(
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 2 recent_tokens: "
      "0 per_head: true",
      1, 2, 2);
  at::Tensor w = at::full({1, 2, 1, 6}, 0.01);
  w[0][0][0][1] = 0.9;  // head 0 (kv head 0) likes tokens 1, 4
  w[0][0][0][4] = 0.8;
  w[0][1][0][0] = 0.9;  // head 1 (kv head 1) likes tokens 0, 2
  w[0][1][0][2] = 0.8;
  ASSERT_TRUE(p->ObserveWeights(0, w).ok());
  auto kept = p->Select(0, {6, 6}, at::Tensor());
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ((*kept)[0], (std::vector<int64_t>{1, 4}));
  EXPECT_EQ((*kept)[1], (std::vector<int64_t>{0, 2}));
}

TEST(EvictionPolicyTest, AdaKvAllocatesAcrossHeadsOfALayer) {
  auto p = Make(
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 4 recent_tokens: "
      "0 "
      "budget { allocator: ADAKV }",
      1, 2, 2);
  at::Tensor w = at::full({1, 2, 1, 10}, 0.001);
  for (int t = 0; t < 7; ++t) w[0][0][0][t] = 0.1 + 0.01 * t;  // head 0 spreads attention widely
  w[0][1][0][9] = 0.9;                                         // head 1 concentrates on one token
  ASSERT_TRUE(p->ObserveWeights(0, w).ok());
  auto kept = p->Select(0, {10, 10}, at::Tensor());
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)[0].size() + (*kept)[1].size(), 8u);  // 2 heads x 4
  EXPECT_GT((*kept)[0].size(), (*kept)[1].size());
  EXPECT_GE((*kept)[1].size(), 1u);  // floor: 20 % of 4, rounded down to 0, plus its best token won
}

TEST(EvictionPolicyTest, PyramidKvBudgetsFallWithDepthAndKeepTheMean) {
  auto p = Make(
      "algorithm: SNAPKV group_size: 4 start_tokens: 4 intermediate_tokens: 64 recent_tokens: 8 "
      "budget { allocator: PYRAMIDKV pyramid_min_ratio: 0.25 }",
      4);
  int64_t sum = 0;
  for (int l = 0; l < 4; ++l) {
    sum += p->LayerBudget(l) - 12;
    if (l > 0) {
      EXPECT_LT(p->LayerBudget(l), p->LayerBudget(l - 1));
    }
    EXPECT_EQ((p->LayerBudget(l) - 12) % 4, 0);
  }
  EXPECT_NEAR(sum / 4.0, 64.0, 4.0);
}

TEST(EvictionPolicyTest, NormSumCountersDifferOnlyForMultiTokenSteps) {
  const std::string base =
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 6 "
      "recent_tokens: 2 normalize_scores: true ";
  auto reference = Make(base), norm_sum = Make(base + "normalization: NORM_SUM");
  // Single-token decode steps: identical choices.
  EXPECT_EQ(RunSteps(*reference, 16, 12, 4, at::Tensor()),
            RunSteps(*norm_sum, 16, 12, 4, at::Tensor()));
}

TEST(EvictionPolicyTest, MisuseIsAnError) {
  auto p = Make(
      "algorithm: H2O granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 2 recent_tokens: "
      "0",
      2);
  EXPECT_EQ(p->ObserveWeights(2, Weights(4, 1, 4, 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->ObserveWeights(0, at::ones({4, 4})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(p->ObserveWeights(0, Weights(3, 1, 4, 0)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(p->ObserveWeights(0, Weights(4, 4, 4, 0)).ok());
  // Scores for 4 tokens but the cache claims 6: observe was skipped.
  auto kept = p->Select(0, {6}, at::Tensor());
  ASSERT_FALSE(kept.ok());
  EXPECT_EQ(kept.status().code(), absl::StatusCode::kFailedPrecondition);
  // A layer-wide policy needs equal lengths.
  EXPECT_FALSE(p->Select(0, {4, 5}, at::Tensor()).ok());
  // One length, or one per kv head (2), and no other count (found by an independent bad-input
  // check: three equal lengths were accepted).
  auto three = p->Select(0, {4, 4, 4}, at::Tensor());
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.status().message(), "lengths: expected 1 or num_kv_heads (2) entries, got 3");
  EXPECT_FALSE(p->ObserveWeights(0, Weights(4, 1, 5, 0), {5, 5, 5}).ok());
  EXPECT_TRUE(p->Select(0, {4, 4}, at::Tensor()).ok());
}

TEST(EvictionPolicyTest, ResetForgetsScores) {
  auto a = Make(
      "algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 6 "
      "recent_tokens: 2");
  const std::vector<int64_t> first = RunSteps(*a, 20, 5, 4, at::Tensor());
  a->Reset();
  EXPECT_EQ(RunSteps(*a, 20, 5, 4, at::Tensor()), first);
}

}  // namespace
}  // namespace attnkit
