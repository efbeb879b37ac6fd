// Session capabilities beyond attend: observe-only calls (queries that score the cache without
// entering it), ratio mode (keep a share of the tokens seen, kvpress's compression_ratio) and
// eviction between prefill chunks (peak bytes within the budget plus one chunk).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "attnkit/session/session.h"
#include "session/session_testing.h"

namespace attnkit {
namespace {

std::unique_ptr<Session> MakeSession(const std::string& text) {
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  auto session = Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  return std::move(*session);
}

const char* kShape = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 4 ";
constexpr int kHeads = 4, kKvHeads = 2, kDim = 16;

// Attention weights [1, H, T, L] of q [1, H, T, d] over keys [1, Hkv, L, d]; causal with the
// queries as the last T keys, or every query seeing every key.
at::Tensor Weights(const at::Tensor& q, const at::Tensor& k, bool causal) {
  const int64_t T = q.size(2), L = k.size(2);
  at::Tensor kr = k.repeat_interleave(q.size(1) / k.size(1), 1);
  at::Tensor s = at::matmul(q, kr.transpose(-1, -2)).div(std::sqrt(static_cast<double>(q.size(3))));
  if (causal) {
    s.masked_fill_(at::arange(L).unsqueeze(0).gt(at::arange(L - T, L).unsqueeze(1)), -INFINITY);
  }
  return at::softmax(s, -1);
}

// Plain ATen reference of an observe call's output: every query over the whole cache.
at::Tensor ReferenceObserve(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return at::matmul(Weights(q, k, false), v.repeat_interleave(q.size(1) / v.size(1), 1));
}

// The policy's observation of full weights [1, H, T, L], as the session builds it.
absl::Status ObserveReference(EvictionPolicy& policy, int layer, const at::Tensor& weights,
                              int64_t observed_queries) {
  const ObservationNeeds n = policy.needs();
  Observation obs;
  const at::Tensor summed = weights.sum(0);  // [H, T, L]
  if (n.window_rows > 0) {
    const int64_t r = std::min<int64_t>(n.window_rows, summed.size(1));
    obs.window_rows = summed.narrow(1, summed.size(1) - r, r);
  }
  if (n.all_queries_sum) obs.all_queries_sum = summed.sum(1);
  obs.observed_queries = observed_queries;
  return policy.Observe(layer, obs);
}

std::vector<int64_t> Positions(Session& s, int layer, int kv_head = 0) {
  auto p = s.Positions(layer, 0, kv_head);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : std::vector<int64_t>{};
}

void AttendAll(Session& s, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (int layer = 0; layer < 2; ++layer) {
    ASSERT_TRUE(s.Attend(layer, q, k, v, at::empty_like(q)).ok());
  }
}

TEST(ObserveTest, OutputMatchesReferenceAndTheCacheIsUntouched) {
  auto session = MakeSession(std::string(kShape) +
                             "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                             "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 2 "
                             "defer_eviction_to_decode: true }");
  at::manual_seed(11);
  const at::Tensor k = at::randn({1, kKvHeads, 20, kDim}), v = at::randn({1, kKvHeads, 20, kDim});
  AttendAll(*session, at::randn({1, kHeads, 20, kDim}), k, v);
  const SessionStatsView before = session->Stats();
  const std::vector<int64_t> positions = Positions(*session, 1);
  // 5 queries (the paged-kernel size of a short call) and 40 (the prefill size): one path.
  for (int64_t T : {5, 40}) {
    const at::Tensor q = at::randn({1, kHeads, T, kDim});
    const at::Tensor expected = ReferenceObserve(q, k, v);
    for (int layer = 0; layer < 2; ++layer) {
      at::Tensor out = at::empty({1, T, kHeads, kDim}).transpose(1, 2);  // strided output
      ASSERT_TRUE(session->Observe(layer, q, out).ok());
      EXPECT_LT((out - expected).abs().max().item<float>(), 1e-5) << T;
    }
    for (int layer = 0; layer < 2; ++layer) {  // no output wanted
      ASSERT_TRUE(session->Observe(layer, q, at::Tensor()).ok());
    }
  }
  const SessionStatsView after = session->Stats();
  EXPECT_EQ(after.tokens_seen, before.tokens_seen);
  EXPECT_EQ(after.tokens_held, before.tokens_held);
  EXPECT_EQ(after.bytes_held, before.bytes_held);
  EXPECT_EQ(after.steps, before.steps);
  EXPECT_EQ(after.evictions, 0);
  EXPECT_EQ(Positions(*session, 1), positions);
  EXPECT_EQ(*session->NextPosition(0), 20);
  // Decoding continues over the same cache: the first decode step evicts (deferred prompt).
  AttendAll(*session, at::randn({1, kHeads, 1, kDim}), at::randn({1, kKvHeads, 1, kDim}),
            at::randn({1, kKvHeads, 1, kDim}));
  EXPECT_EQ(Positions(*session, 0).size(), 12u);
}

// The session's scores after an observe pass equal a policy fed the same weights by hand: the
// prompt's causal weights, the observed queries' weights over the whole cache (no new token), the
// decode step's; then the first decode step's selection keeps the same positions. SnapKV with
// normalized scores checks the counters of queries that add no token.
TEST(ObserveTest, ObservedQueriesFeedTheScoresAsAttendQueriesWould) {
  for (const char* eviction :
       {"algorithm: H2O", "algorithm: SNAPKV window_size: 3 normalize_scores: true",
        "algorithm: SNAPKV window_size: 3 per_head: true", "algorithm: TOVA"}) {
    SCOPED_TRACE(eviction);
    const std::string config = std::string(
                                   "enabled: true granularity: PER_TOKEN start_tokens: 2 "
                                   "intermediate_tokens: 6 recent_tokens: 2 ") +
                               eviction;
    auto session = MakeSession(std::string(kShape) + "eviction { " + config +
                               " defer_eviction_to_decode: true }");
    auto parsed = ParseEvictionConfig(config, true);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    auto policy = EvictionPolicy::Create(*parsed, 2, kHeads, kKvHeads);
    ASSERT_TRUE(policy.ok()) << policy.status();
    at::manual_seed(12);
    at::Tensor k = at::randn({1, kKvHeads, 24, kDim}), v = at::randn({1, kKvHeads, 24, kDim});
    const at::Tensor prompt_q = at::randn({1, kHeads, 24, kDim});
    const at::Tensor question = at::randn({1, kHeads, 5, kDim}).mul(3);
    const at::Tensor step_q = at::randn({1, kHeads, 1, kDim});
    const at::Tensor step_k = at::randn({1, kKvHeads, 1, kDim});
    const at::Tensor step_v = at::randn({1, kKvHeads, 1, kDim});
    AttendAll(*session, prompt_q, k, v);
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(session->Observe(layer, question, at::Tensor()).ok());
    }
    AttendAll(*session, step_q, step_k, step_v);
    const at::Tensor all_k = at::cat({k, step_k}, 2);
    for (int layer = 0; layer < 2; ++layer) {
      EvictionPolicy& p = **policy;
      ASSERT_TRUE(ObserveReference(p, layer, Weights(prompt_q, k, true), 0).ok());
      ASSERT_TRUE(ObserveReference(p, layer, Weights(question, k, false), 5).ok());
      ASSERT_TRUE(ObserveReference(p, layer, Weights(step_q, all_k, true), 0).ok());
      auto kept = p.Select(layer, {25}, at::Tensor());
      ASSERT_TRUE(kept.ok()) << kept.status();
      for (int h = 0; h < kKvHeads; ++h) {
        EXPECT_EQ(Positions(*session, layer, h), (*kept)[p.per_head() ? h : 0])
            << "layer " << layer << " kv head " << h;
      }
    }
  }
}

// Normalized scores (docs/algorithms.md 1.6): an observe-only observation of q queries adds
// min(w, q) to every token's counter. After a prompt of 10 tokens (window 3: counters 3 x 8, 2, 1),
// token 9 (score 1, counter 1) outranks token 5 (score 2, counter 3); three observed queries that
// attend nowhere make the counters 4 and 6, and token 5 (2/6) outranks token 9 (1/4).
TEST(ObserveTest, NormalizedCountersCountTheObservedQueries) {
  auto options = ParseEvictionConfig(
      "enabled: true algorithm: SNAPKV window_size: 3 normalize_scores: true granularity: "
      "PER_TOKEN "
      "intermediate_tokens: 1 pooling { kernel_size: 1 }",
      true);
  ASSERT_TRUE(options.ok()) << options.status();
  for (int64_t observed : {0, 3}) {
    auto policy = EvictionPolicy::Create(*options, 1, kHeads, kKvHeads);
    ASSERT_TRUE(policy.ok()) << policy.status();
    Observation prompt;
    prompt.window_rows = at::zeros({kHeads, 3, 10});
    prompt.window_rows.select(1, 2).select(1, 9).fill_(1.0);
    prompt.window_rows.select(1, 0).select(1, 5).fill_(2.0);
    ASSERT_TRUE((*policy)->Observe(0, prompt).ok());
    if (observed > 0) {
      Observation question;
      question.window_rows = at::zeros({kHeads, 3, 10});
      question.observed_queries = observed;
      ASSERT_TRUE((*policy)->Observe(0, question).ok());
    }
    auto kept = (*policy)->Select(0, {10}, at::Tensor());
    ASSERT_TRUE(kept.ok()) << kept.status();
    EXPECT_EQ((*kept)[0], std::vector<int64_t>{observed > 0 ? 5 : 9}) << observed;
  }
}

// A question whose queries point at one token keeps it; without the observe pass it goes.
TEST(ObserveTest, AQuestionKeepsTheTokensItAttends) {
  const std::string config = std::string(kShape) +
                             "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                             "start_tokens: 1 intermediate_tokens: 3 recent_tokens: 1 "
                             "defer_eviction_to_decode: true }";
  at::manual_seed(13);
  const at::Tensor k = at::randn({1, kKvHeads, 30, kDim}), v = at::randn({1, kKvHeads, 30, kDim});
  const at::Tensor prompt_q = at::randn({1, kHeads, 30, kDim});
  // Every query head aims at token 13's key (GQA: heads 0-1 read kv head 0, heads 2-3 kv head 1).
  const at::Tensor target = k.select(2, 13).repeat_interleave(2, 1).unsqueeze(2);  // [1, H, 1, d]
  const at::Tensor question = target.mul(20).repeat({1, 1, 4, 1});
  const at::Tensor step_q = at::zeros({1, kHeads, 1, kDim});  // uniform weights: no preference
  const at::Tensor step_k = at::randn({1, kKvHeads, 1, kDim});
  const at::Tensor step_v = at::randn({1, kKvHeads, 1, kDim});
  std::vector<int64_t> with, without;
  for (bool observe : {true, false}) {
    auto session = MakeSession(config);
    AttendAll(*session, prompt_q, k, v);
    for (int layer = 0; observe && layer < 2; ++layer) {
      ASSERT_TRUE(session->Observe(layer, question, at::Tensor()).ok());
    }
    AttendAll(*session, step_q, step_k, step_v);
    (observe ? with : without) = Positions(*session, 1);
  }
  EXPECT_EQ(with.size(), 5u);
  EXPECT_NE(std::find(with.begin(), with.end(), 13), with.end());
  EXPECT_EQ(std::find(without.begin(), without.end(), 13), without.end());
}

TEST(ObserveTest, BadCallsAreRejectedAndLeaveTheSessionAsItWas) {
  auto session = MakeSession(std::string(kShape) +
                             "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                             "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 2 }");
  const at::Tensor q = at::randn({1, kHeads, 3, kDim});
  auto message = [](const absl::Status& s) { return std::string(s.message()); };
  absl::Status s = session->Observe(0, q, at::Tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(message(s).find("holds no token"), std::string::npos) << s;
  AttendAll(*session, at::randn({1, kHeads, 6, kDim}), at::randn({1, kKvHeads, 6, kDim}),
            at::randn({1, kKvHeads, 6, kDim}));
  s = session->Observe(2, q, at::Tensor());
  EXPECT_NE(message(s).find("layer: must be in [0, 2)"), std::string::npos) << s;
  s = session->Observe(1, q, at::Tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(message(s).find("before layer 0 observed pass 0"), std::string::npos) << s;
  s = session->Observe(0, at::randn({1, kHeads + 1, 3, kDim}), at::Tensor());
  EXPECT_NE(message(s).find("q: expected [batch_size=1, num_heads=4"), std::string::npos) << s;
  s = session->Observe(0, at::randn({1, kHeads, 0, kDim}), at::Tensor());
  EXPECT_NE(message(s).find("q: needs at least one token"), std::string::npos) << s;
  s = session->Observe(0, q, at::empty({1, kHeads, 2, kDim}));
  EXPECT_NE(message(s).find("out: expected [1, 4, 3, 16]"), std::string::npos) << s;
  at::Tensor nan = q.clone();
  nan[0][0][0][0] = NAN;
  s = session->Observe(0, nan, at::Tensor());
  EXPECT_NE(message(s).find("q: contains NaN"), std::string::npos) << s;
  // An observe pass partway through: attention steps wait for it, and it waits for them.
  ASSERT_TRUE(session->Observe(0, q, at::Tensor()).ok());
  s = session->Attend(0, at::randn({1, kHeads, 1, kDim}), at::randn({1, kKvHeads, 1, kDim}),
                      at::randn({1, kKvHeads, 1, kDim}), at::empty({1, kHeads, 1, kDim}));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(message(s).find("observe pass 0 is partway"), std::string::npos) << s;
  s = session->Observe(0, q, at::Tensor());
  EXPECT_NE(message(s).find("before layer 1 finished observe pass 0"), std::string::npos) << s;
  ASSERT_TRUE(session->Observe(1, q, at::Tensor()).ok());
  ASSERT_TRUE(session
                  ->Attend(0, at::randn({1, kHeads, 1, kDim}), at::randn({1, kKvHeads, 1, kDim}),
                           at::randn({1, kKvHeads, 1, kDim}), at::empty({1, kHeads, 1, kDim}))
                  .ok());
  s = session->Observe(0, q, at::Tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(message(s).find("while step 1 is partway"), std::string::npos) << s;
  EXPECT_EQ(session->Stats().tokens_seen, 7);
}

// The device store's path (what CUDA sessions run), on the CPU: the same output and the same
// kept positions as the host store.
TEST(ObserveTest, TheTensorPathStoreObservesAsTheHostStore) {
  const std::string config = std::string(kShape) +
                             "eviction { enabled: true algorithm: SNAPKV window_size: 4 "
                             "granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 6 "
                             "recent_tokens: 2 per_head: true defer_eviction_to_decode: true }";
  auto options = ParseSessionConfig(config, true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto tensor_path = session::CreateTensorPathSessionForTesting(*options);
  ASSERT_TRUE(tensor_path.ok()) << tensor_path.status();
  auto host = MakeSession(config);
  at::manual_seed(14);
  const at::Tensor q = at::randn({1, kHeads, 30, kDim}), k = at::randn({1, kKvHeads, 30, kDim});
  const at::Tensor v = at::randn({1, kKvHeads, 30, kDim});
  const at::Tensor question = at::randn({1, kHeads, 6, kDim}).mul(2);
  const at::Tensor step_q = at::randn({1, kHeads, 1, kDim}),
                   step_k = at::randn({1, kKvHeads, 1, kDim});
  const at::Tensor step_v = at::randn({1, kKvHeads, 1, kDim});
  at::Tensor outs[2];
  Session* sessions[2] = {host.get(), tensor_path->get()};
  for (int i = 0; i < 2; ++i) {
    AttendAll(*sessions[i], q, k, v);
    outs[i] = at::empty({1, kHeads, 6, kDim});
    ASSERT_TRUE(sessions[i]->Observe(0, question, outs[i]).ok());
    ASSERT_TRUE(sessions[i]->Observe(1, question, at::Tensor()).ok());
    AttendAll(*sessions[i], step_q, step_k, step_v);
  }
  EXPECT_LT((outs[0] - outs[1]).abs().max().item<float>(), 1e-5);
  for (int layer = 0; layer < 2; ++layer) {
    for (int h = 0; h < kKvHeads; ++h) {
      EXPECT_EQ(Positions(*host, layer, h), Positions(**tensor_path, layer, h));
    }
  }
}

// ----- Ratio mode -----

const char* kRatioEviction =
    "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
    "recent_tokens: 2 schedule { compression_ratio: ";

// kvpress rounds int(n * (1 - ratio)) in double: 0.3 of 90 keeps 62 (not 63), 0.55 of 100 keeps
// 44, 0.8 of 10 keeps 1 (values from Python).
TEST(RatioModeTest, ThePromptKeepsTheShareKvpressKeeps) {
  for (const auto& [ratio, prompt, kept] :
       {std::tuple<const char*, int64_t, size_t>{"0.3", 90, 62},
        {"0.55", 100, 44},
        {"0.8", 10, 4},  // int(10 * 0.2) = 1, below the start and recent areas: those stay
        {"0.25", 40, 30}}) {
    SCOPED_TRACE(ratio);
    auto session = MakeSession(std::string(kShape) + kRatioEviction + ratio + " } }");
    at::manual_seed(21);
    AttendAll(*session, at::randn({1, kHeads, prompt, kDim}),
              at::randn({1, kKvHeads, prompt, kDim}), at::randn({1, kKvHeads, prompt, kDim}));
    EXPECT_EQ(Positions(*session, 0).size(), kept);
    EXPECT_EQ(Positions(*session, 1).size(), kept);
  }
}

TEST(RatioModeTest, DecodingKeepsTheShareOfEveryTokenSeen) {
  for (int interval : {1, 4}) {
    SCOPED_TRACE(interval);
    auto session = MakeSession(std::string(kShape) + kRatioEviction +
                               "0.25 interval_steps: " + std::to_string(interval) + " } }");
    at::manual_seed(22);
    AttendAll(*session, at::randn({1, kHeads, 40, kDim}), at::randn({1, kKvHeads, 40, kDim}),
              at::randn({1, kKvHeads, 40, kDim}));
    int64_t held = 30;
    for (int step = 1; step <= 12; ++step) {
      AttendAll(*session, at::randn({1, kHeads, 1, kDim}), at::randn({1, kKvHeads, 1, kDim}),
                at::randn({1, kKvHeads, 1, kDim}));
      const int64_t seen = 40 + step;
      ++held;
      if (step % interval == 0) held = std::min(held, static_cast<int64_t>(seen * 0.75));
      EXPECT_EQ(static_cast<int64_t>(Positions(*session, 1).size()), held) << "step " << step;
      EXPECT_EQ(Positions(*session, 1).back(), seen - 1);
    }
  }
}

TEST(RatioModeTest, AllocatorsSpreadTheRatiosBudget) {
  // PyramidKV: the layers' intermediate areas around the ratio's mean, falling with depth.
  auto pyramid = MakeSession(std::string(kShape) +
                             "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                             "start_tokens: 2 recent_tokens: 2 budget { allocator: PYRAMIDKV "
                             "pyramid_min_ratio: 0.5 } schedule { compression_ratio: 0.5 } }");
  at::manual_seed(23);
  AttendAll(*pyramid, at::randn({1, kHeads, 100, kDim}), at::randn({1, kKvHeads, 100, kDim}),
            at::randn({1, kKvHeads, 100, kDim}));
  // Target 50: mean intermediate 46, first layer 2 * 46 / 1.5 = 61 (floor), last 30.
  EXPECT_EQ(Positions(*pyramid, 0).size(), 2u + 61 + 2);
  EXPECT_EQ(Positions(*pyramid, 1).size(), 2u + 30 + 2);
  // AdaKV: every kv head keeps its areas; the heads share 2 x 46 intermediate tokens.
  auto adakv = MakeSession(std::string(kShape) +
                           "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                           "start_tokens: 2 recent_tokens: 2 budget { allocator: ADAKV } "
                           "per_head: true schedule { compression_ratio: 0.5 } }");
  AttendAll(*adakv, at::randn({1, kHeads, 100, kDim}), at::randn({1, kKvHeads, 100, kDim}),
            at::randn({1, kKvHeads, 100, kDim}));
  EXPECT_EQ(Positions(*adakv, 0, 0).size() + Positions(*adakv, 0, 1).size(), 2u * 50);
}

TEST(RatioModeTest, PolicyObjectsCountTheCacheTheyAreGiven) {
  auto options = ParseEvictionConfig(
      "enabled: true algorithm: KNORM granularity: PER_TOKEN schedule { compression_ratio: 0.3 }",
      true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto policy = EvictionPolicy::Create(*options, 1, kHeads, kKvHeads);
  ASSERT_TRUE(policy.ok()) << policy.status();
  auto kept = (*policy)->Select(0, {90}, at::randn({kKvHeads, 90, kDim}));
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ((*kept)[0].size(), 62u);
  EXPECT_EQ((*policy)->LayerBudget(0), 62);
  kept = (*policy)->Select(0, {62}, at::randn({kKvHeads, 62, kDim}));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ((*kept)[0].size(), 43u);  // int(62 * 0.7) = 43: every select compresses again
}

TEST(RatioModeTest, ValidationNamesTheField) {
  for (const auto& [eviction, fragment] :
       {std::pair<const char*, const char*>{
            "schedule { compression_ratio: 1 }",
            "eviction.schedule.compression_ratio: must be in [0, 1)"},
        {"schedule { compression_ratio: -0.5 }", "eviction.schedule.compression_ratio"},
        {"schedule { compression_ratio: nan }", "eviction.schedule.compression_ratio"},
        {"intermediate_tokens: 8 schedule { compression_ratio: 0.5 }",
         "eviction.intermediate_tokens: must be 0 with schedule.compression_ratio"},
        {"score_threshold: 0.1 schedule { compression_ratio: 0.5 }",
         "eviction.schedule.compression_ratio: does not compose with score_threshold"}}) {
    auto options = ParseSessionConfig(std::string(kShape) +
                                          "eviction { enabled: true algorithm: H2O granularity: "
                                          "PER_TOKEN start_tokens: 2 recent_tokens: 2 " +
                                          eviction + " }",
                                      true);
    ASSERT_FALSE(options.ok()) << eviction;
    EXPECT_NE(std::string(options.status().message()).find(fragment), std::string::npos)
        << options.status();
  }
  // No area at all is fine with a ratio: the ratio is the budget.
  EXPECT_TRUE(ParseSessionConfig(std::string(kShape) +
                                     "eviction { enabled: true algorithm: H2O granularity: "
                                     "PER_TOKEN schedule { compression_ratio: 0.5 } }",
                                 true)
                  .ok());
}

// ----- Chunked prefill -----

// A prompt of 8 chunks of 16 tokens with a budget of 16: each chunk's layer evicts before the next
// layer appends, so the most bytes ever held are every layer's budget plus one chunk of one layer.
TEST(ChunkedPrefillTest, PeakBytesStayWithinTheBudgetPlusOneChunk) {
  const std::string config = std::string(kShape) +
                             "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN "
                             "start_tokens: 4 intermediate_tokens: 8 recent_tokens: 4 }";
  const int64_t page_bytes = 4 * kDim * 4 * 2;  // page of 4 tokens, keys and values, float32
  const int64_t budget_bytes = 2 * kKvHeads * (16 / 4) * page_bytes;  // both layers
  const int64_t chunk_bytes = kKvHeads * (16 / 4) * page_bytes;       // one layer's chunk
  at::manual_seed(31);
  const at::Tensor q = at::randn({1, kHeads, 128, kDim}), k = at::randn({1, kKvHeads, 128, kDim});
  const at::Tensor v = at::randn({1, kKvHeads, 128, kDim});
  auto chunked = MakeSession(config), whole = MakeSession(config);
  for (int64_t c = 0; c < 128; c += 16) {
    AttendAll(*chunked, q.narrow(2, c, 16), k.narrow(2, c, 16), v.narrow(2, c, 16));
    EXPECT_EQ(chunked->BytesHeld(), budget_bytes) << "after chunk " << c / 16;
  }
  AttendAll(*whole, q, k, v);
  const SessionStatsView c = chunked->Stats(), w = whole->Stats();
  EXPECT_EQ(c.peak_bytes_within_calls, budget_bytes + chunk_bytes);
  EXPECT_EQ(c.peak_bytes_held, budget_bytes);
  EXPECT_EQ(c.tokens_seen, 128);
  // Unchunked: layer 1 holds the whole prompt before it evicts, layer 0 its budget.
  EXPECT_EQ(w.peak_bytes_within_calls, kKvHeads * (128 / 4 + 16 / 4) * page_bytes);
  EXPECT_EQ(w.bytes_held, budget_bytes);
  EXPECT_EQ(Positions(*chunked, 1).back(), 127);
  // defer_eviction_to_decode keeps every chunk: the prompt is whole until the first decode step.
  auto deferred =
      MakeSession(config.substr(0, config.size() - 1) + " defer_eviction_to_decode: true }");
  for (int64_t c0 = 0; c0 < 128; c0 += 16) {
    AttendAll(*deferred, q.narrow(2, c0, 16), k.narrow(2, c0, 16), v.narrow(2, c0, 16));
  }
  EXPECT_EQ(deferred->BytesHeld(), 2 * kKvHeads * (128 / 4) * page_bytes);
}

}  // namespace
}  // namespace attnkit
