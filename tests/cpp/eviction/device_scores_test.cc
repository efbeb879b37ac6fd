// H2O/SnapKV scores kept beside the observation (LayerScores::device_scores, issue 20): a CUDA
// session's decode steps add each step's attention to scores on the device instead of copying it
// to the host. The same bookkeeping runs on the CPU under testing::SetScoresFollowObservation, so
// it is checked here without a GPU: the kept sets and saved states must equal the host path's bit
// for bit. The GPU side is tests/cpp/cuda/scores_test.cc.
#include <cstring>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "score_driver.h"
#include "eviction/scorers.h"

namespace attnkit {
namespace {

using score_driver::FollowGuard;
using score_driver::kConfigs;
using score_driver::kRowConfigs;
using score_driver::Make;
using score_driver::Options;
using score_driver::Outcome;
using score_driver::Rows;

TEST(DeviceScoresTest, ScoresBesideCpuObservationsKeepWhatTheHostPathKeeps) {
  for (const char* config : kConfigs) {
    for (int interval : {1, 3}) {
      SCOPED_TRACE(std::string(config) + " interval " + std::to_string(interval));
      auto host = Make(config, 8, 2);
      const Outcome want = score_driver::Drive(*host, 8, 2, 40, 30, interval, at::kCPU);
      FollowGuard follow(true);
      auto beside = Make(config, 8, 2);
      const Outcome got = score_driver::Drive(*beside, 8, 2, 40, 30, interval, at::kCPU);
      ASSERT_EQ(got.kept.size(), want.kept.size());
      for (size_t i = 0; i < want.kept.size(); ++i) ASSERT_EQ(got.kept[i], want.kept[i]) << i;
      EXPECT_EQ(got.state, want.state);  // the scores and counters, bit for bit
    }
  }
}

TEST(DeviceScoresTest, StateSavedBetweenEvictionsIsTheHostPathState) {
  // Saved at step 5 of an every-4th-step schedule, two observations after the last eviction, while
  // the scores are beside the observations: the bytes are the host path's, and they load into a
  // policy on the host path.
  for (const char* config : {kConfigs[1], kConfigs[2]}) {
    SCOPED_TRACE(config);
    std::string want, got;
    auto host = Make(config, 8, 2);
    score_driver::Drive(*host, 8, 2, 40, 8, 4, at::kCPU, &want, /*save_at=*/5);
    {
      FollowGuard follow(true);
      auto p = Make(config, 8, 2);
      score_driver::Drive(*p, 8, 2, 40, 8, 4, at::kCPU, &got, /*save_at=*/5);
    }
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(got, want);
    auto loaded = Make(config, 8, 2);
    ASSERT_TRUE(loaded->LoadState(got).ok());
    EXPECT_EQ(loaded->SaveState(), want);
  }
}

TEST(DeviceScoresTest, ScorerKeepsDecodeScoresBesideTheObservation) {
  FollowGuard follow(true);
  const EvictionOptions o = Options(kConfigs[0]);
  eviction::HeadLayout layout{8, 2, false};
  auto scorer = eviction::MakeScorer(o, layout);
  ASSERT_NE(scorer, nullptr);
  eviction::LayerScores state;
  std::vector<double> sum(37, 0.0);
  for (int64_t K = 30; K <= 40; ++K) {
    const at::Tensor a = Rows(8, 1, K, static_cast<int>(K));
    Observation obs;
    obs.all_queries_sum = a.select(1, 0);
    ASSERT_TRUE(scorer->Observe(state, obs, {K}).ok());
    ASSERT_TRUE(state.scores_on_device) << "K=" << K;
    ASSERT_TRUE(state.scores.empty() || state.scores[0].empty()) << "host rows not kept stale";
    // The expected sums on the host: each step's heads in order, then the previous sum.
    std::vector<double> step(K - 3, 0.0);
    eviction::AddRowsInto(step.data(), a.contiguous().data_ptr<float>() + 3, K, 8, K - 3);
    for (int64_t i = 0; i + 1 < K - 3; ++i) step[i] += sum[i];
    sum = step;
  }
  const auto rows = eviction::HostScoreRows(state);
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_EQ(rows[0].size(), sum.size());
  EXPECT_EQ(std::memcmp(rows[0].data(), sum.data(), sum.size() * sizeof(double)), 0);
  eviction::ScoresToHost(state);
  EXPECT_FALSE(state.scores_on_device);
  EXPECT_EQ(state.scores[0], sum);
}

// TOVA and R-KV keep their rows on the observation's device between evictions (TOVA the newest
// row, R-KV its window) and read them on the host only to select or save: the same kept sets and
// the same saved bytes as the host path, evicting every step, every third step, and saved between
// evictions; and the state they save loads into a policy on the host path.
TEST(DeviceScoresTest, RowsBesideCpuObservationsKeepWhatTheHostPathKeeps) {
  for (const char* config : kRowConfigs) {
    for (int interval : {1, 3}) {
      SCOPED_TRACE(std::string(config) + " interval " + std::to_string(interval));
      auto host = Make(config, 8, 2);
      std::string want_mid, got_mid;
      const Outcome want =
          score_driver::Drive(*host, 8, 2, 40, 30, interval, at::kCPU, &want_mid, 4);
      Outcome got;
      {
        FollowGuard follow(true);
        auto beside = Make(config, 8, 2);
        got = score_driver::Drive(*beside, 8, 2, 40, 30, interval, at::kCPU, &got_mid, 4);
      }
      ASSERT_EQ(got.kept.size(), want.kept.size());
      for (size_t i = 0; i < want.kept.size(); ++i) ASSERT_EQ(got.kept[i], want.kept[i]) << i;
      EXPECT_EQ(got.state, want.state);
      EXPECT_EQ(got_mid, want_mid);
      auto loaded = Make(config, 8, 2);
      ASSERT_TRUE(loaded->LoadState(got_mid).ok());
      EXPECT_EQ(loaded->SaveState(), want_mid);
    }
  }
}

TEST(DeviceScoresTest, TovaDefersItsAverageToTheSelection) {
  FollowGuard follow(true);
  const EvictionOptions o = Options(kRowConfigs[0]);
  eviction::HeadLayout layout{8, 2, false};
  auto scorer = eviction::MakeScorer(o, layout);
  ASSERT_NE(scorer, nullptr);
  eviction::LayerScores state;
  at::Tensor a = Rows(8, 1, 30, 5);
  Observation obs;
  obs.window_rows = a;
  ASSERT_TRUE(scorer->Observe(state, obs, {30}).ok());
  ASSERT_TRUE(state.pending_last.defined());
  EXPECT_TRUE(state.scores.empty()) << "nothing averaged on the host before the selection";
  const auto saved = scorer->HostScores(state);
  a.zero_();  // the step's buffer is reused: the policy kept its own copy
  auto scores = scorer->Scores(state, {30}, at::Tensor(), at::Tensor());
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_FALSE(state.pending_last.defined());
  EXPECT_EQ(*scores, saved);
  ASSERT_EQ(scores->size(), 1u);
  EXPECT_EQ((*scores)[0].size(), 27u);  // 30 tokens less the 3 of the start area
  EXPECT_GT((*scores)[0][0], 0.0);
}

}  // namespace
}  // namespace attnkit
