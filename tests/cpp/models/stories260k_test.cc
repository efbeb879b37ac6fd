// The real-model check: stories260k with its attention through the session. Eviction off must
// reproduce reference.json's greedy ids; SnapKV at a 128-token budget generates 400 tokens, and the
// test reports its agreement with the full-cache run and the mean log-likelihood the full-cache
// model gives each run's continuation.
#include <cstdio>

#include <ATen/Functions.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "llama2c_model.h"
#include "test_env.h"

namespace attnkit {
namespace {

std::unique_ptr<Session> MakeSession(const samples::Llama2c& m, const std::string& policies) {
  const std::string text = absl::StrCat("num_layers: ", m.n_layers, " num_heads: ", m.n_heads,
                                        " num_kv_heads: ", m.n_kv_heads,
                                        " head_dim: ", m.head_dim(), " page_size: 16 ", policies);
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  return std::move(*Session::Create(*options));
}

// Mean negative log-likelihood of ids[prompt..] under the full-cache model (teacher forcing).
double MeanNll(const samples::Llama2c& m, const std::vector<int64_t>& ids, size_t prompt) {
  auto session = MakeSession(m, "");
  auto logits = m.Forward(*session, ids);
  EXPECT_TRUE(logits.ok()) << logits.status();
  at::Tensor logp = at::log_softmax(*logits, -1);
  double total = 0;
  for (size_t i = prompt; i < ids.size(); ++i) total -= logp[i - 1][ids[i]].item<double>();
  return total / static_cast<double>(ids.size() - prompt);
}

TEST(Stories260kTest, FullCacheMatchesReferenceAndSnapKvStaysWithinBudget) {
  const std::string dir = testing::ModelsDir() + "/stories260k";
  ATTNKIT_SKIP_IF_MISSING(dir + "/stories260K.bin");
  auto model = samples::Llama2c::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int64_t> prompt = samples::ReadJsonIds(dir + "/reference.json", "prompt_ids");
  const std::vector<int64_t> reference =
      samples::ReadJsonIds(dir + "/reference.json", "greedy_ids_full_cache");
  ASSERT_FALSE(prompt.empty());

  constexpr int kSteps = 400;
  auto full_session = MakeSession(*model, "");
  auto full = model->Generate(*full_session, prompt, kSteps);
  ASSERT_TRUE(full.ok()) << full.status();
  for (int i = 0; i < 100; ++i)
    ASSERT_EQ((*full)[i], reference[prompt.size() + i]) << "token " << i;

  // 128 tokens per kv head: start 4 + intermediate 96 + recent 28, groups of 4.
  auto snap_session =
      MakeSession(*model,
                  "eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP "
                  "group_size: 4 start_tokens: 4 intermediate_tokens: 96 "
                  "recent_tokens: 28 }");
  auto snap = model->Generate(*snap_session, prompt, kSteps);
  ASSERT_TRUE(snap.ok()) << snap.status();
  const SessionStatsView stats = snap_session->Stats();
  const int64_t page_bytes = 16 * model->head_dim() * 4 * 2;
  for (const HeadStatsView& h : stats.heads) {
    EXPECT_LE(h.tokens, 128);
    EXPECT_LE(h.bytes, 128 * model->head_dim() * 4 * 2 + page_bytes);
  }
  EXPECT_GT(stats.evictions, 0);

  int agree = 0;
  for (int i = 0; i < kSteps; ++i) agree += (*full)[i] == (*snap)[i];
  std::vector<int64_t> full_ids = prompt, snap_ids = prompt;
  full_ids.insert(full_ids.end(), full->begin(), full->end());
  snap_ids.insert(snap_ids.end(), snap->begin(), snap->end());
  const double full_nll = MeanNll(*model, full_ids, prompt.size());
  const double snap_nll = MeanNll(*model, snap_ids, prompt.size());
  std::printf(
      "stories260k, %d generated tokens: SnapKV(128) agrees with the full cache on %d ids "
      "(%.1f %%); mean NLL under the full-cache model: full-cache run %.4f, SnapKV run %.4f "
      "(uniform would be %.4f); SnapKV holds %lld of %lld bytes at the end\n",
      kSteps, agree, 100.0 * agree / kSteps, full_nll, snap_nll, std::log(512.0),
      static_cast<long long>(stats.bytes_held),
      static_cast<long long>(full_session->Stats().bytes_held));
  // The compressed run must stay a plausible continuation: far from uniform text.
  EXPECT_LT(snap_nll, full_nll + 1.5);
  EXPECT_LT(stats.bytes_held, full_session->Stats().bytes_held / 2);
}

}  // namespace
}  // namespace attnkit
