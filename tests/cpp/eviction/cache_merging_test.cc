// CaM (cache_merging, docs/algorithms.md 1.9): MergeRow against a restatement of kvpress's
// CAMPress.compress in ATen tensor operations (topk, stable argsort, searchsorted, gather,
// bernoulli, scatter_add_), its special cases (a window past the last kept token, zero attention),
// and the policy around it: the running decode attention, what starts it over, the merges handed
// to the host, and its saved state. Sessions with CaM are checked against kvpress's own code in
// the conformance cases (tests/conformance/cases/cam) and across stores in
// session_tensor_path_test.cc.
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "eviction/cache_merging.h"
#include "gtest/gtest.h"

namespace attnkit {
namespace {

using eviction::MergeRow;

at::Tensor Rand(at::IntArrayRef shape, at::Generator& gen) {
  return at::rand(shape, gen, at::TensorOptions(at::kFloat));
}

// kvpress's compress for one layer-wide row, written as its tensor program: the new values of
// every cached token (kept or not) after the scatter-add.
at::Tensor ReferenceMerge(const at::Tensor& values, const at::Tensor& attention,
                          const at::Tensor& scores, int64_t target, int64_t k, int64_t budget,
                          at::Generator gen) {
  const int64_t L = scores.size(0), H = values.size(0), d = values.size(2);
  const int64_t n_evict = L - target;
  const at::Tensor evict = std::get<0>(at::sort(std::get<1>(at::topk(scores, n_evict, -1, false))));
  const at::Tensor evict_scores = scores.index_select(0, evict);
  const at::Tensor order = std::get<1>(at::sort(evict_scores.flip({0}), /*stable=*/true, /*dim=*/-1,
                                                /*descending=*/true))
                               .narrow(0, 0, std::min(k, n_evict));
  const at::Tensor merge = std::get<0>(at::sort(evict.index_select(0, (n_evict - 1) - order)));
  const at::Tensor kept = std::get<0>(at::sort(std::get<1>(at::topk(scores, target))));
  const int64_t n = merge.size(0);
  const at::Tensor starts = at::searchsorted(kept, merge, /*out_int32=*/false, /*right=*/true);
  const at::Tensor window = starts.unsqueeze(-1) + at::arange(budget, at::kLong).view({1, -1});
  const at::Tensor valid = window < target;
  const at::Tensor targets =
      kept.index_select(0, window.clamp_max(target - 1).reshape(-1)).view({n, budget});
  const at::Tensor actual = valid.sum(-1);
  const at::Tensor window_attention =
      attention.index_select(1, targets.reshape(-1)).view({H, n, budget}) * valid.unsqueeze(0);
  const at::Tensor mean = window_attention.sum(-1) / actual.clamp_min(1).unsqueeze(0);
  at::Tensor p = attention.index_select(1, merge) / mean;
  p = at::where(at::isnan(p), at::zeros_like(p), p);
  p = at::where(at::isinf(p), at::ones_like(p), p);
  p = p.clamp(0, 1);
  const at::Tensor mask = at::bernoulli(p, gen);
  at::Tensor scale = (mask / actual.unsqueeze(0)).unsqueeze(-1);
  scale = at::where((actual == 0).view({1, n, 1}), at::zeros_like(scale), scale);
  at::Tensor contributions = values.index_select(1, merge) * scale;  // [H, n, d]
  contributions =
      contributions.unsqueeze(2).expand({H, n, budget, d}) * valid.view({1, n, budget, 1});
  at::Tensor out = values.clone();
  out.scatter_add_(1, targets.reshape({1, n * budget, 1}).expand({H, n * budget, d}),
                   contributions.reshape({H, n * budget, d}));
  return out;
}

std::vector<int64_t> ToVector(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

TEST(CacheMergingTest, MatchesKvpressTensorProgram) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  struct Shape {
    int64_t H, L, d, target, k, budget;
  };
  for (const Shape& s :
       {Shape{2, 48, 16, 32, 4, 8}, Shape{3, 40, 8, 36, 8, 32}, Shape{1, 65, 8, 64, 1, 32},
        Shape{4, 100, 16, 60, 40, 3}, Shape{2, 30, 4, 10, 20, 1}}) {
    SCOPED_TRACE(testing::Message() << "L " << s.L << " target " << s.target << " k " << s.k);
    const at::Tensor values = at::randn({s.H, s.L, s.d}, gen, at::TensorOptions(at::kFloat));
    at::Tensor attention = Rand({s.H, s.L}, gen);
    // Some zero attention: 0 / 0 (probability 0) and x / 0 (probability 1) happen.
    attention.narrow(1, s.L / 3, 3).zero_();
    const at::Tensor scores = Rand({s.L}, gen).to(at::kDouble);
    const at::Tensor kept_t = std::get<0>(at::sort(std::get<1>(at::topk(scores, s.target))));
    const std::vector<int64_t> kept = ToVector(kept_t);
    std::vector<double> score(scores.data_ptr<double>(), scores.data_ptr<double>() + s.L);
    std::vector<int64_t> heads(s.H);
    std::iota(heads.begin(), heads.end(), 0);

    at::Generator mine = at::make_generator<at::CPUGeneratorImpl>(77);
    const eviction::RowMerge m = MergeRow(values, attention, heads, score, 0, kept, s.L, s.k,
                                          static_cast<int>(s.budget), mine);
    const at::Tensor want = ReferenceMerge(values, attention, scores, s.target, s.k, s.budget,
                                           at::make_generator<at::CPUGeneratorImpl>(77));
    at::Tensor got = values.clone();
    if (!m.targets.empty()) {
      got.index_copy_(1, at::tensor(m.targets, at::kLong), m.values);
    }
    EXPECT_TRUE(at::equal(got.index_select(1, kept_t), want.index_select(1, kept_t)));
    // Only kept tokens change.
    for (int64_t t : m.targets) EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), t));
  }
}

TEST(CacheMergingTest, WindowsAndCertainMerges) {
  // 8 tokens, kept {1, 3, 4, 6}: token 7 has no kept token after it, token 5's window is {6}.
  const at::Tensor values = at::arange(16, at::kFloat).view({1, 8, 2});
  const std::vector<int64_t> kept = {1, 3, 4, 6};
  const std::vector<double> scores = {0, 1, 0.5, 1, 1, 0.9, 1, 0.95};
  // Zero attention on the windows and positive on the candidates: probability x / 0 = 1.
  at::Tensor attention = at::zeros({1, 8}, at::kFloat);
  for (int64_t p : {0, 2, 5, 7}) attention[0][p] = 1.0f;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  // The two best evicted: 7 (0.95) and 5 (0.9).
  eviction::RowMerge m = MergeRow(values, attention, {0}, scores, 0, kept, 8, 2, 2, gen);
  ASSERT_EQ(m.targets, std::vector<int64_t>({6}));  // 7 has no window; 5 merges into 6 alone
  EXPECT_TRUE(at::equal(m.values[0][0], values[0][6] + values[0][5]));
  // Three candidates: 2 (0.5) also merges into {3, 4}, half each.
  m = MergeRow(values, attention, {0}, scores, 0, kept, 8, 3, 2, gen);
  ASSERT_EQ(m.targets, std::vector<int64_t>({3, 4, 6}));
  EXPECT_TRUE(at::equal(m.values[0][0], values[0][3] + values[0][2] * 0.5f));
  EXPECT_TRUE(at::equal(m.values[0][1], values[0][4] + values[0][2] * 0.5f));
  // No attention at all: every probability is 0 / 0, no value changes.
  m = MergeRow(values, at::zeros({1, 8}, at::kFloat), {0}, scores, 0, kept, 8, 3, 2, gen);
  EXPECT_TRUE(at::equal(m.values[0], values[0].index_select(0, at::tensor(m.targets))));
  // No decode step since the last eviction: nothing to merge.
  EXPECT_TRUE(MergeRow(values, attention, {0}, scores, 0, kept, 8, 0, 2, gen).targets.empty());
}

TEST(CacheMergingTest, SeedsDifferPerLayerAndEviction) {
  EXPECT_EQ(eviction::MergeSeed(3, 1, 100), eviction::MergeSeed(3, 1, 100));
  EXPECT_NE(eviction::MergeSeed(3, 1, 100), eviction::MergeSeed(3, 2, 100));
  EXPECT_NE(eviction::MergeSeed(3, 1, 100), eviction::MergeSeed(3, 1, 101));
  EXPECT_NE(eviction::MergeSeed(3, 1, 100), eviction::MergeSeed(4, 1, 100));
  EXPECT_EQ(eviction::MergeSeed(3, 1, 100), eviction::MergeSeed(3, 1, 100, 0));
  EXPECT_NE(eviction::MergeSeed(3, 1, 100, 1), eviction::MergeSeed(3, 1, 100, 2));
}

std::unique_ptr<EvictionPolicy> Policy(const std::string& text, int heads, int kv_heads) {
  auto o = ParseEvictionConfig(text, true);
  EXPECT_TRUE(o.ok()) << o.status();
  if (!o.ok()) return nullptr;
  auto p = EvictionPolicy::Create(*o, 1, heads, kv_heads);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

// One decode observation of `sums` [H, K] (or a prompt's, with queries > 1).
absl::Status Observe(EvictionPolicy& p, const at::Tensor& sums, int64_t queries = 1) {
  Observation obs;
  obs.all_queries_sum = sums;
  obs.call_queries = queries;
  return p.Observe(0, obs);
}

TEST(CacheMergingTest, PolicyMergesDecodeAttentionOnly) {
  const std::string text =
      "enabled: true algorithm: KNORM granularity: PER_TOKEN intermediate_tokens: 8 "
      "cache_merging { merge_budget: 4 seed: 9 }";
  auto policy = Policy(text, 4, 2);
  ASSERT_NE(policy, nullptr);
  EXPECT_TRUE(policy->needs().values);
  EXPECT_TRUE(policy->needs().decode_column_sums);
  EXPECT_FALSE(policy->needs().all_queries_sum);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor keys = at::randn({2, 12, 4}, gen, at::TensorOptions(at::kFloat));
  const at::Tensor values = at::randn({2, 12, 4}, gen, at::TensorOptions(at::kFloat));
  // A prompt only: no decode attention, no merge.
  ASSERT_TRUE(Observe(*policy, Rand({4, 12}, gen), 12).ok());
  auto kept = policy->Select(0, {12}, keys, values);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)[0].size(), 8u);
  std::vector<MergedValues> merged = policy->TakeMergedValues();
  ASSERT_EQ(merged.size(), 2u);
  for (const auto& m : merged) EXPECT_TRUE(m.rows.empty());

  // Three decode steps of equal attention everywhere: every probability is 1.
  auto fresh = Policy(text, 4, 2);
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(Observe(*fresh, at::ones({4, 12}, at::kFloat)).ok());
  kept = fresh->Select(0, {12}, keys, values);
  ASSERT_TRUE(kept.ok());
  merged = fresh->TakeMergedValues();
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_FALSE(merged[0].rows.empty());
  EXPECT_EQ(merged[0].rows, merged[1].rows);       // layer-wide: one kept set for both kv heads
  EXPECT_TRUE(fresh->TakeMergedValues().empty());  // moved out
  // A prompt call starts the count over: the next eviction merges nothing.
  ASSERT_TRUE(Observe(*fresh, Rand({4, 10}, gen), 2).ok());
  kept = fresh->Select(0, {10}, keys.narrow(1, 0, 10), values.narrow(1, 0, 10));
  ASSERT_TRUE(kept.ok());
  for (const auto& m : fresh->TakeMergedValues()) EXPECT_TRUE(m.rows.empty());
}

TEST(CacheMergingTest, PerHeadMergesAndSavedState) {
  const std::string text =
      "enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 12 recent_tokens: 2 budget { allocator: ADAKV } per_head: true "
      "cache_merging { merge_budget: 3 seed: 4 }";
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto a = Policy(text, 4, 2);
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(Observe(*a, Rand({4, 20}, gen), 20).ok());
  for (int s = 0; s < 4; ++s) ASSERT_TRUE(Observe(*a, Rand({4, 20}, gen)).ok());
  const std::string saved = a->SaveState();
  auto b = Policy(text, 4, 2);
  ASSERT_TRUE(b->LoadState(saved).ok());
  const at::Tensor keys = at::randn({2, 20, 4}, gen, at::TensorOptions(at::kFloat));
  const at::Tensor values = at::randn({2, 20, 4}, gen, at::TensorOptions(at::kFloat));
  auto ka = a->Select(0, {20, 20}, keys, values);
  auto kb = b->Select(0, {20, 20}, keys, values);
  ASSERT_TRUE(ka.ok() && kb.ok());
  EXPECT_EQ(*ka, *kb);
  const auto ma = a->TakeMergedValues(), mb = b->TakeMergedValues();
  ASSERT_EQ(ma.size(), 2u);
  ASSERT_EQ(mb.size(), 2u);
  bool any = false;
  for (int h = 0; h < 2; ++h) {
    EXPECT_EQ(ma[h].rows, mb[h].rows);
    if (ma[h].rows.empty()) continue;
    any = true;
    EXPECT_TRUE(at::equal(ma[h].values, mb[h].values));
    for (int64_t r : ma[h].rows) {  // merged into kept tokens of that head only
      EXPECT_TRUE(std::binary_search((*ka)[h].begin(), (*ka)[h].end(), r));
    }
  }
  EXPECT_TRUE(any);
  // A state with a malformed merge tensor is refused.
  auto c = Policy(text, 4, 2);
  EXPECT_FALSE(c->LoadState(saved.substr(0, saved.size() - 4)).ok());
}

TEST(CacheMergingTest, ValidationNamesTheField) {
  auto bad = ParseEvictionConfig(
      "enabled: true algorithm: STREAMING_LLM recent_tokens: 32 cache_merging {}", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("cache_merging: STREAMING_LLM has no scores"),
            std::string::npos)
      << bad.status();
  bad = ParseEvictionConfig(
      "enabled: true algorithm: H2O recent_tokens: 32 cache_merging { merge_budget: -1 }", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("cache_merging.merge_budget"),
            std::string::npos)
      << bad.status();
  auto ok =
      ParseEvictionConfig("enabled: true algorithm: H2O recent_tokens: 32 cache_merging {}", true);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->cache_merging);
  EXPECT_EQ(ok->merge_budget, 32);
}

}  // namespace
}  // namespace attnkit
