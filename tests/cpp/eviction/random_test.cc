// RANDOM_SCORES, the random-eviction baseline (kvpress's RandomPress): the draws and the kept
// tokens equal what PyTorch gives (tests/conformance/cases/random/cases.json, written by
// generate.py beside it), a seed always gives the same selection, the draws look uniform, and
// every selection and budget rule works with it.
#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "eviction/scorers.h"
#include "gtest/gtest.h"
#include "support/json.h"

namespace attnkit {
namespace {

EvictionOptions Options(const std::string& text) {
  auto o = ParseEvictionConfig("enabled: true algorithm: RANDOM_SCORES " + text, true);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? *o : EvictionOptions();
}

KeptPositions Select(const EvictionOptions& o, int num_heads, int num_kv_heads, int64_t tokens,
                     int layer = 0, int num_layers = 1) {
  auto policy = EvictionPolicy::Create(o, num_layers, num_heads, num_kv_heads);
  EXPECT_TRUE(policy.ok()) << policy.status();
  if (!policy.ok()) return {};
  auto kept = (*policy)->Select(layer, {tokens}, at::Tensor());
  EXPECT_TRUE(kept.ok()) << kept.status();
  return kept.ok() ? *kept : KeptPositions();
}

std::vector<int64_t> Ints(const JsonValue& array) {
  std::vector<int64_t> out;
  for (const auto& v : array.array()) out.push_back(static_cast<int64_t>(v.number()));
  return out;
}

TEST(RandomEvictionTest, DrawsAndSelectionsMatchPyTorch) {
  std::ifstream in(std::string(ATTNKIT_SOURCE_DIR) + "/tests/conformance/cases/random/cases.json");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  auto json = JsonValue::Parse(text.str());
  ASSERT_TRUE(json.ok()) << json.status();
  const auto& cases = json->Find("cases")->array();
  ASSERT_GE(cases.size(), 5u);
  for (const auto& c : cases) {
    const std::string seed_text = c.Find("seed")->string();
    SCOPED_TRACE(absl::StrCat("seed ", seed_text));
    uint64_t seed = 0;
    ASSERT_TRUE(absl::SimpleAtoi(seed_text, &seed));
    const int heads = static_cast<int>(c.Find("kv_heads")->number());
    const int64_t tokens = static_cast<int64_t>(c.Find("tokens")->number());
    const std::string areas =
        absl::StrCat("granularity: PER_TOKEN random_seed: ", seed_text,
                     " start_tokens: ", c.Find("start")->number(),
                     " intermediate_tokens: ", c.Find("intermediate")->number(),
                     " recent_tokens: ", c.Find("recent")->number(), " ");

    // The draws: torch.rand(kv_heads, tokens) after manual_seed(seed), bit for bit.
    EvictionOptions whole = DefaultEvictionOptions(EvictionAlgorithm::kRandom);
    whole.random_seed = seed;
    whole.per_head = true;
    eviction::HeadLayout layout{heads, heads, /*per_head=*/true};
    auto scorer = eviction::MakeScorer(whole, layout);
    ASSERT_NE(scorer, nullptr);
    eviction::LayerScores state;
    auto scores =
        scorer->Scores(state, std::vector<int64_t>(heads, tokens), at::Tensor(), at::Tensor());
    ASSERT_TRUE(scores.ok()) << scores.status();
    const auto& expected = c.Find("scores")->array();
    ASSERT_EQ(scores->size(), expected.size());
    for (int h = 0; h < heads; ++h) {
      ASSERT_EQ((*scores)[h].size(), expected[h].array().size());
      for (int64_t t = 0; t < tokens; ++t) {
        EXPECT_EQ((*scores)[h][t], expected[h].array()[t].number()) << h << "," << t;
      }
    }

    // Per kv head (RandomPress's own selection) and layer-wide (mean over the kv heads).
    KeptPositions per_head = Select(Options(areas + "per_head: true"), heads, heads, tokens);
    const auto& expected_per_head = c.Find("kept_per_head")->array();
    ASSERT_EQ(per_head.size(), expected_per_head.size());
    for (int h = 0; h < heads; ++h) EXPECT_EQ(per_head[h], Ints(expected_per_head[h])) << h;
    KeptPositions layer = Select(Options(areas), heads, heads, tokens);
    ASSERT_EQ(layer.size(), 1u);
    EXPECT_EQ(layer[0], Ints(*c.Find("kept_layer")));
  }
}

TEST(RandomEvictionTest, SameSeedSameSelectionOtherSeedOther) {
  const std::string areas =
      "granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 64 "
      "recent_tokens: 4 ";
  const KeptPositions a = Select(Options(areas + "random_seed: 11"), 8, 2, 1000);
  const KeptPositions b = Select(Options(areas + "random_seed: 11"), 8, 2, 1000);
  const KeptPositions c = Select(Options(areas + "random_seed: 12"), 8, 2, 1000);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  // A policy draws anew from the seed at every selection (as RandomPress seeds before scoring),
  // so equal caches evict alike, also after Reset().
  auto policy = EvictionPolicy::Create(Options(areas + "random_seed: 11"), 1, 8, 2);
  ASSERT_TRUE(policy.ok());
  auto first = (*policy)->Select(0, {1000}, at::Tensor());
  (*policy)->Reset();
  auto again = (*policy)->Select(0, {1000}, at::Tensor());
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(*first, a);
  EXPECT_EQ(*again, a);
}

TEST(RandomEvictionTest, DrawsAreUniformOnZeroOne) {
  EvictionOptions o = DefaultEvictionOptions(EvictionAlgorithm::kRandom);
  o.random_seed = 2024;
  o.per_head = true;
  eviction::HeadLayout layout{4, 4, /*per_head=*/true};
  auto scorer = eviction::MakeScorer(o, layout);
  eviction::LayerScores state;
  auto scores = scorer->Scores(state, std::vector<int64_t>(4, 5000), at::Tensor(), at::Tensor());
  ASSERT_TRUE(scores.ok());
  std::vector<int> deciles(10, 0);
  double sum = 0;
  int n = 0;
  for (const auto& row : *scores) {
    for (double v : row) {
      ASSERT_GE(v, 0.0);
      ASSERT_LT(v, 1.0);
      ++deciles[static_cast<int>(v * 10)];
      sum += v;
      ++n;
    }
  }
  ASSERT_EQ(n, 20000);
  EXPECT_NEAR(sum / n, 0.5, 0.01);
  for (int d = 0; d < 10; ++d) EXPECT_NEAR(deciles[d], 2000, 150) << "decile " << d;
  // The kv heads draw different numbers.
  EXPECT_NE((*scores)[0], (*scores)[1]);
}

// The start and recent areas, whole groups, within budget.
void ExpectAreasAndGroups(const std::vector<int64_t>& kept, int64_t tokens, int64_t start,
                          int64_t recent, int64_t group, int64_t budget) {
  EXPECT_EQ(static_cast<int64_t>(kept.size()), budget);
  EXPECT_TRUE(std::is_sorted(kept.begin(), kept.end()));
  const std::set<int64_t> set(kept.begin(), kept.end());
  for (int64_t p = 0; p < start; ++p) EXPECT_TRUE(set.count(p)) << p;
  for (int64_t p = tokens - recent; p < tokens; ++p) EXPECT_TRUE(set.count(p)) << p;
  for (int64_t g = start; g < tokens - recent; g += group) {
    int in = 0;
    for (int64_t p = g; p < g + group; ++p) in += static_cast<int>(set.count(p));
    EXPECT_TRUE(in == 0 || in == group) << "group at " << g;
  }
}

TEST(RandomEvictionTest, KeepsAreasAndWholeGroups) {
  const KeptPositions kept =
      Select(Options("start_tokens: 8 intermediate_tokens: 32 recent_tokens: 16 group_size: 8 "
                     "random_seed: 3"),
             4, 4, 200);
  ASSERT_EQ(kept.size(), 1u);
  ExpectAreasAndGroups(kept[0], 200, 8, 16, 8, 56);
}

TEST(RandomEvictionTest, WorksWithEveryAllocatorAndRefinement) {
  // PYRAMIDKV: deeper layers keep less; each keeps its layer budget.
  const EvictionOptions pyramid = Options(
      "granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 40 recent_tokens: 2 "
      "budget { allocator: PYRAMIDKV }");
  auto policy = EvictionPolicy::Create(pyramid, 4, 4, 2);
  ASSERT_TRUE(policy.ok()) << policy.status();
  EXPECT_GT((*policy)->LayerBudget(0), (*policy)->LayerBudget(3));
  for (int layer = 0; layer < 4; ++layer) {
    auto kept = (*policy)->Select(layer, {300}, at::Tensor());
    ASSERT_TRUE(kept.ok()) << kept.status();
    ExpectAreasAndGroups((*kept)[0], 300, 2, 2, 1, (*policy)->LayerBudget(layer));
  }

  // ADAKV: per kv head, the layer's total budget shared out, each head keeping its areas.
  const KeptPositions ada = Select(
      Options("granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 20 recent_tokens: 2 "
              "budget { allocator: ADAKV }"),
      8, 4, 100);
  ASSERT_EQ(ada.size(), 4u);
  size_t total = 0;
  for (const auto& row : ada) {
    total += row.size();
    EXPECT_GE(row.size(), 4u + 4u);  // areas plus the floor: 20 % of 20
    for (int64_t p : {0, 1, 98, 99}) EXPECT_TRUE(std::count(row.begin(), row.end(), p)) << p;
  }
  EXPECT_EQ(total, 4u * 24u);

  // KVCRUSH refines part of the intermediate area; the budget still holds.
  const KeptPositions crush =
      Select(Options("start_tokens: 32 intermediate_tokens: 128 recent_tokens: 32 "
                     "refined { algorithm: KVCRUSH refined_tokens: 64 }"),
             4, 4, 512);
  ASSERT_EQ(crush.size(), 1u);
  ExpectAreasAndGroups(crush[0], 512, 32, 32, 32, 192);
}

TEST(RandomEvictionTest, ConfigRulesComeFromItsRow) {
  auto window =
      ParseEvictionConfig("algorithm: RANDOM_SCORES recent_tokens: 32 window_size: 4", true);
  EXPECT_EQ(window.status().message(),
            "window_size: is only supported by SNAPKV, RKV and CAKE, not RANDOM_SCORES");
  auto normalize = ParseEvictionConfig(
      "algorithm: RANDOM_SCORES recent_tokens: 32 normalize_scores: true", true);
  EXPECT_EQ(normalize.status().message(),
            "normalize_scores: only applies to H2O and SNAPKV, not RANDOM_SCORES");
  EXPECT_STREQ(EvictionAlgorithmName(EvictionAlgorithm::kRandom), "RANDOM_SCORES");
  auto policy = EvictionPolicy::Create(Options("recent_tokens: 32"), 1, 2, 2);
  ASSERT_TRUE(policy.ok());
  const ObservationNeeds needs = (*policy)->needs();
  EXPECT_EQ(needs.window_rows, 0);
  EXPECT_FALSE(needs.all_queries_sum);
  EXPECT_FALSE(needs.keys);
}

}  // namespace
}  // namespace attnkit
