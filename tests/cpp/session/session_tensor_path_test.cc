// The session's tensor path (what CUDA sessions run: pages in one arena, rows appended, gathered,
// compacted and re-rotated by index with tensor operations) against the host path on the CPU:
// every configuration below runs the same prompt and decode steps through both and must give the
// same outputs, the same kept positions and the same bytes held. On a GPU machine the CUDA tests
// (tests/cpp/cuda/session_test.cc) repeat this with CUDA sessions.
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "eviction/scorers.h"
#include "session/session_testing.h"

namespace attnkit {
namespace {

struct Config {
  const char* name;
  std::string text;
  double tolerance;
};

std::vector<Config> Configs() {
  const std::string shape =
      "num_layers: 2 num_heads: 8 num_kv_heads: 2 head_dim: 32 batch_size: 2 page_size: 16 ";
  const std::string small_budget = "start_tokens: 4 intermediate_tokens: 40 recent_tokens: 12 ";
  return {
      {"full cache", shape, 1e-5},
      {"float16 storage", shape + "dtype: FLOAT16", 2e-3},
      {"bfloat16 storage", shape + "dtype: BFLOAT16", 1e-2},
      {"snapkv groups",
       shape +
           "eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP "
           "group_size: 4 window_size: 8 " +
           small_budget + "}",
       1e-5},
      {"h2o normalized + kvcrush",
       shape +
           "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN normalize_scores: "
           "true " +
           small_budget + "refined { algorithm: KVCRUSH refined_tokens: 8 } }",
       1e-5},
      {"adakv per head",
       shape +
           "eviction { enabled: true algorithm: SNAPKV granularity: "
           "PER_TOKEN " +
           small_budget + "budget { allocator: ADAKV adakv_floor: 0.2 } }",
       1e-5},
      {"keydiff per head",
       shape +
           "eviction { enabled: true algorithm: KEYDIFF granularity: "
           "PER_TOKEN per_head: true " +
           small_budget + "}",
       1e-5},
      {"cam over h2o, every third decode step",
       shape + "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN " + small_budget +
           "schedule { interval_steps: 3 } cache_merging { merge_budget: 8 seed: 5 } }",
       1e-5},
      {"cam over adakv per head",
       shape + "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN " + small_budget +
           "budget { allocator: ADAKV } cache_merging { merge_budget: 4 } }",
       1e-5},
      {"head split with snapkv retrieval heads",
       shape +
           "head_split { streaming: [true, false, false, true] sink_tokens: 4 recent_tokens: 12 } "
           "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN per_head: true " +
           small_budget + "}",
       1e-5},
      {"cake cascading budgets",
       shape + "eviction { enabled: true algorithm: CAKE granularity: PER_TOKEN per_head: true "
               "window_size: 12 recent_tokens: 12 intermediate_tokens: 24 "
               "budget { allocator: CAKE cake_cascading: true } }",
       1e-5},
      {"streaming rerotate",
       shape + "rope { theta: 10000 } eviction { enabled: true algorithm: "
               "STREAMING_LLM granularity: PER_TOKEN start_tokens: 4 "
               "intermediate_tokens: 0 recent_tokens: 28 rerotate_keys: true }",
       1e-5},
      {"tri-shape prefill",
       shape + "sparse_attention { mode: TRI_SHAPE block_size: 16 "
               "recent_size: 32 last_query_size: 8 min_sparse_length: 64 }",
       1e-5},
      {"xattention prefill + snapkv",
       shape +
           "sparse_attention { mode: XATTENTION block_size: 32 last_query_size: 8 "
           "min_sparse_length: 64 xattention { threshold: 0.9 stride: 8 } } eviction { "
           "enabled: true algorithm: SNAPKV granularity: PER_TOKEN window_size: 8 " +
           small_budget + "}",
       1e-5},
  };
}

// With `follow`, the tensor path's H2O/SnapKV scores stay beside its observations between
// evictions (eviction::ScoresFollowObservation), as a CUDA session's do.
void ExpectTensorPathMatchesHostPath(bool follow) {
  eviction::testing::SetScoresFollowObservation(follow);
  for (const Config& c : Configs()) {
    SCOPED_TRACE(std::string(c.name) + (follow ? " (scores beside the observations)" : ""));
    auto options = ParseSessionConfig(c.text, /*is_text=*/true);
    ASSERT_TRUE(options.ok()) << options.status();
    auto host = Session::Create(*options);
    auto tensors = session::CreateTensorPathSessionForTesting(*options);
    ASSERT_TRUE(host.ok()) << host.status();
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    at::manual_seed(11);
    const int64_t B = 2, H = 8, Hkv = 2, d = 32;
    // A prompt long enough for the prefill paths, then decode steps that keep evicting, then a
    // second chunk of 20 tokens (the multi-query path over an evicted cache).
    std::vector<int64_t> steps{150};
    for (int i = 0; i < 30; ++i) steps.push_back(1);
    steps.push_back(20);
    for (int i = 0; i < 5; ++i) steps.push_back(1);
    for (size_t step = 0; step < steps.size(); ++step) {
      const int64_t T = steps[step];
      for (int layer = 0; layer < 2; ++layer) {
        const at::Tensor q = at::randn({B, H, T, d}), k = at::randn({B, Hkv, T, d}),
                         v = at::randn({B, Hkv, T, d});
        at::Tensor a = at::empty({B, H, T, d}), b = at::empty({B, H, T, d});
        ASSERT_TRUE((*host)->Attend(layer, q, k, v, a).ok());
        absl::Status s = (*tensors)->Attend(layer, q, k, v, b);
        ASSERT_TRUE(s.ok()) << s;
        ASSERT_LT((a - b).abs().max().item<float>(), c.tolerance)
            << "step " << step << " layer " << layer;
        for (int seq = 0; seq < B; ++seq) {
          for (int kvh = 0; kvh < Hkv; ++kvh) {
            ASSERT_EQ(*(*host)->Positions(layer, seq, kvh), *(*tensors)->Positions(layer, seq, kvh))
                << "step " << step << " layer " << layer << " sequence " << seq;
          }
        }
      }
      ASSERT_EQ((*host)->BytesHeld(), (*tensors)->BytesHeld()) << "step " << step;
      ASSERT_EQ(*(*host)->NextPosition(1), *(*tensors)->NextPosition(1));
    }
    const SessionStatsView a = (*host)->Stats(), b = (*tensors)->Stats();
    EXPECT_EQ(a.evicted_tokens, b.evicted_tokens);
    EXPECT_EQ(a.tokens_held, b.tokens_held);
    EXPECT_DOUBLE_EQ(a.sparse_density, b.sparse_density);
    if (c.text.find("eviction") != std::string::npos) {
      EXPECT_GT(a.evicted_tokens, 0);
    }
    // After a reset both start over and still agree.
    (*host)->Reset();
    (*tensors)->Reset();
    const at::Tensor q = at::randn({B, H, 3, d}), k = at::randn({B, Hkv, 3, d}),
                     v = at::randn({B, Hkv, 3, d});
    at::Tensor a2 = at::empty({B, H, 3, d}), b2 = at::empty({B, H, 3, d});
    ASSERT_TRUE((*host)->Attend(0, q, k, v, a2).ok());
    ASSERT_TRUE((*tensors)->Attend(0, q, k, v, b2).ok());
    EXPECT_LT((a2 - b2).abs().max().item<float>(), c.tolerance);
  }
  eviction::testing::SetScoresFollowObservation(false);
}

TEST(SessionTensorPath, MatchesTheHostPath) { ExpectTensorPathMatchesHostPath(false); }

TEST(SessionTensorPath, MatchesTheHostPathWithScoresBesideObservations) {
  ExpectTensorPathMatchesHostPath(true);
}

TEST(SessionTensorPath, TestingEntryIsCpuOnly) {
  auto options = ParseSessionConfig(
      "num_layers: 1 num_heads: 2 num_kv_heads: 1 head_dim: 8 "
      "device: CUDA",
      true);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_FALSE(session::CreateTensorPathSessionForTesting(*options).ok());
}

}  // namespace
}  // namespace attnkit
