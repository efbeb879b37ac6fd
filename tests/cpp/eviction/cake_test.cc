// CAKE (algorithm CAKE, allocator CAKE; docs/algorithms.md 1.10): the budget arithmetic against
// values from CAKE's own adjust_budgets (cake/utils.py, run on these preferences), the validation
// of its options, and the policy's allocation: the short-prompt rule, waiting for the last layer
// without cascading, the cascade list with it, and the saved state. Whole sessions are checked
// against CAKE's code in the conformance cases (tests/conformance/cases/cake).
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "eviction/budgets.h"
#include "gtest/gtest.h"

namespace attnkit {
namespace {

TEST(CakeTest, BudgetsAsAdjustBudgets) {
  // adjust_budgets([p / sum(p) * total ...], total, seq_len, n) in cakekv c4675ce.
  EXPECT_EQ(eviction::CakeBudgets({10, 1, 1, 1}, 128, 40), std::vector<int64_t>({40, 30, 29, 29}));
  EXPECT_EQ(eviction::CakeBudgets({1, 1, 1}, 100, 200), std::vector<int64_t>({34, 33, 33}));
  EXPECT_EQ(eviction::CakeBudgets({0.5f, 3, 0.25f}, 90, 40), std::vector<int64_t>({28, 40, 22}));
  EXPECT_EQ(eviction::CakeBudgets({5}, 128, 88), std::vector<int64_t>({88}));
}

std::string Config(const std::string& extra) {
  return "enabled: true algorithm: CAKE granularity: PER_TOKEN per_head: true window_size: 4 "
         "recent_tokens: 4 intermediate_tokens: 8 " +
         extra;
}

TEST(CakeTest, ValidationNamesTheField) {
  const std::pair<std::string, std::string> bad[] = {
      {"enabled: true algorithm: CAKE granularity: PER_TOKEN window_size: 4 recent_tokens: 4 "
       "intermediate_tokens: 8",
       "per_head: must be true for CAKE"},
      {"enabled: true algorithm: CAKE per_head: true window_size: 4 recent_tokens: 4 "
       "group_size: 4 intermediate_tokens: 8",
       "granularity: CAKE needs PER_TOKEN"},
      {"enabled: true algorithm: CAKE granularity: PER_TOKEN per_head: true window_size: 4 "
       "recent_tokens: 8 intermediate_tokens: 8",
       "recent_tokens: must equal window_size"},
      {Config("budget { allocator: CAKE cake_tau1: -1 }"), "budget.cake_tau1: must be positive"},
      {Config("cake { gamma: inf }"), "cake.gamma: must be finite"},
      {Config("budget { cake_cascading: true }"), "budget.cake_tau1: cake_tau1, cake_tau2"},
      {"enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true recent_tokens: 4 "
       "intermediate_tokens: 8 budget { allocator: CAKE }",
       "budget.allocator: CAKE needs algorithm CAKE"},
      {"enabled: true algorithm: H2O granularity: PER_TOKEN recent_tokens: 4 cake { gamma: 1 }",
       "cake: only applies to CAKE"},
  };
  for (const auto& [text, want] : bad) {
    auto o = ParseEvictionConfig(text, true);
    ASSERT_FALSE(o.ok()) << text;
    EXPECT_NE(std::string(o.status().message()).find(want), std::string::npos) << o.status();
  }
  auto ok = ParseEvictionConfig(Config("budget { allocator: CAKE cake_cascading: true }"), true);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->cake_gamma, 200.0);
  EXPECT_EQ(ok->cake_tau1, 1.0);
  EXPECT_TRUE(ok->cake_cascading);
}

// A prompt of `tokens` through `layer`: its window rows (random attention, rows summing to 1).
absl::Status Prompt(EvictionPolicy& p, int layer, int64_t tokens, at::Generator& gen) {
  at::Tensor rows = at::rand({2, 4, tokens}, gen, at::TensorOptions(at::kFloat));
  rows = rows / rows.sum(-1, true);
  Observation obs;
  obs.window_rows = rows;
  obs.call_queries = tokens;
  return p.Observe(layer, obs);
}

TEST(CakeTest, AllocationWaitsCascadesAndSaves) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  for (bool cascading : {false, true}) {
    SCOPED_TRACE(cascading ? "cascading" : "at the last layer");
    auto o = ParseEvictionConfig(Config(std::string("budget { allocator: CAKE cake_cascading: ") +
                                        (cascading ? "true" : "false") + " }"),
                                 true);
    ASSERT_TRUE(o.ok()) << o.status();
    auto policy = EvictionPolicy::Create(*o, 3, 2, 2);
    ASSERT_TRUE(policy.ok());
    EvictionPolicy& p = **policy;
    // 40 tokens > cache size (8 + 4) + window (4): the prompt evicts.
    ASSERT_TRUE(Prompt(p, 0, 40, gen).ok());
    EXPECT_EQ(p.OverBudget(0, {40, 40}), cascading);  // cascading: layer 0 alone shares 24
    ASSERT_TRUE(Prompt(p, 1, 40, gen).ok());
    EXPECT_EQ(p.TakeCascade(), cascading ? std::vector<int>({0}) : std::vector<int>());
    ASSERT_TRUE(Prompt(p, 2, 40, gen).ok());
    EXPECT_EQ(p.TakeCascade(), std::vector<int>({0, 1}));  // both modes: the rest evict now
    int64_t sum = 0;
    for (int l = 0; l < 3; ++l) sum += p.LayerBudget(l) - 4;
    EXPECT_EQ(sum, 3 * 8);  // the layers share num_layers * intermediate_tokens
    // The state carries the preferences and the budgets.
    auto copy = EvictionPolicy::Create(*o, 3, 2, 2);
    ASSERT_TRUE((*copy)->LoadState(p.SaveState()).ok());
    for (int l = 0; l < 3; ++l) EXPECT_EQ((*copy)->LayerBudget(l), p.LayerBudget(l));
  }
  // A short prompt (16 <= 8 + 4 + 4) evicts nothing; decoding keeps the configured 8 + 4.
  auto o = ParseEvictionConfig(Config("budget { allocator: CAKE }"), true);
  auto policy = EvictionPolicy::Create(*o, 1, 2, 2);
  EvictionPolicy& p = **policy;
  ASSERT_TRUE(Prompt(p, 0, 16, gen).ok());
  EXPECT_FALSE(p.OverBudget(0, {16, 16}));
  Observation step;
  step.window_rows = at::full({2, 1, 17}, 1.0f / 17);
  step.call_queries = 1;
  ASSERT_TRUE(p.Observe(0, step).ok());
  EXPECT_EQ(p.LayerBudget(0), 12);
  EXPECT_TRUE(p.OverBudget(0, {17, 17}));
}

}  // namespace
}  // namespace attnkit
