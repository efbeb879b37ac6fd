// Quest-style sparse decode (SessionConfig.sparse_decode): the page selection's fast path against
// its plain ATen reference (kernels::QuestReferencePages), the session's decode output against
// exact attention over the reference's pages (with and without eviction, every query head of a
// group reading its kv head's pages), the page summaries kept right through eviction, re-rotation,
// fork and save/load (a session whose summaries are rebuilt from scratch must compute the same
// bits), and the config's validation.
#include <cmath>
#include <cstdio>
#include <tuple>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "cpu/paged_attention.h"
#include "cpu/quest.h"
#include "session/session_testing.h"

namespace attnkit {
namespace {

using kernels::QuestPagesToRead;
using kernels::QuestReferencePages;

// A session on the host store, or (tensor_path) on the device store's tensor path (what CUDA
// sessions run) on the CPU.
std::unique_ptr<Session> MakeSession(const std::string& text, bool tensor_path = false) {
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  if (!options.ok()) return nullptr;
  auto session = tensor_path ? session::CreateTensorPathSessionForTesting(*options)
                             : Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  return session.ok() ? std::move(*session) : nullptr;
}

// The fast path's pages for q [G, d] over keys [L, d], summaries built in pieces of `piece` rows
// (as appends extend them).
std::vector<int64_t> FastPages(const at::Tensor& q, const at::Tensor& keys, int P, int64_t budget,
                               int64_t start, int64_t recent, int64_t piece) {
  const int64_t L = keys.size(0), d = keys.size(1), pages = (L + P - 1) / P;
  std::vector<float> summaries(static_cast<size_t>(pages * 2 * d));
  std::vector<const float*> pointers;
  const at::Tensor kc = keys.contiguous();
  for (int64_t p = 0; p < pages; ++p) {
    const int64_t rows = std::min<int64_t>(P, L - p * P);
    const char* page = static_cast<const char*>(kc.data_ptr()) + p * P * d * kc.element_size();
    float* summary = summaries.data() + p * 2 * d;
    for (int64_t from = 0; from < rows; from += piece) {
      kernels::ExtendKeySummary(kernels::RowFormatOf(kc.scalar_type()), page, static_cast<int>(d),
                                from, std::min(rows, from + piece), summary);
    }
    pointers.push_back(summary);
  }
  std::vector<float> bounds(static_cast<size_t>(pages));
  const at::Tensor qc = q.contiguous();
  kernels::QuestPageBounds(qc.data_ptr<float>(), static_cast<int>(q.size(0)), static_cast<int>(d),
                           pointers.data(), pages, bounds.data());
  return kernels::QuestSelectPages(
      bounds.data(), pages, QuestPagesToRead(L, pages, P, budget, start, recent), start, recent);
}

std::vector<int64_t> ReferencePages(const at::Tensor& q, const at::Tensor& keys, int P,
                                    int64_t budget, int64_t start, int64_t recent) {
  const at::Tensor mask = QuestReferencePages(q, keys, P, budget, start, recent);
  std::vector<int64_t> out;
  for (int64_t p = 0; p < mask.size(0); ++p) {
    if (mask[p].item<bool>()) out.push_back(p);
  }
  return out;
}

class QuestKernelTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { kernels::SetQuestMaxIsaForTesting(GetParam()); }
  void TearDown() override { kernels::SetQuestMaxIsaForTesting(2); }
};

// Every vector path this CPU has (and the scalar one); head dims that fill the vectors and one
// that leaves a tail.
TEST_P(QuestKernelTest, FastSelectionMatchesTheReference) {
  std::printf("bound path: %s\n", kernels::QuestBoundPath());
  at::manual_seed(3);
  int cases = 0;
  for (int G : {1, 4}) {
    for (int P : {8, 16}) {
      for (int64_t L : {5, 37, 160, 333}) {
        for (int64_t budget : {16, 64, 100, 4096}) {
          for (auto [start, recent] : {std::pair<int64_t, int64_t>{0, 0}, {1, 2}, {0, 1}}) {
            const int d = G == 1 ? 40 : 64;
            const at::Tensor q = at::randn({G, d});
            const at::Tensor keys = at::randn({L, d});
            for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
              const at::Tensor k = keys.to(t);
              const auto fast = FastPages(q, k, P, budget, start, recent, 5);
              EXPECT_EQ(fast, ReferencePages(q, k, P, budget, start, recent))
                  << "G " << G << " P " << P << " L " << L << " budget " << budget << " start "
                  << start << " recent " << recent;
              const int64_t pages = (L + P - 1) / P;
              EXPECT_EQ(static_cast<int64_t>(fast.size()),
                        QuestPagesToRead(L, pages, P, budget, start, recent));
              ++cases;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 2 * 2 * 4 * 4 * 3 * 2);
}

INSTANTIATE_TEST_SUITE_P(Isa, QuestKernelTest, ::testing::Values(0, 1, 2));

TEST(QuestPagesTest, PagesToReadFollowsTheReference) {
  // min(max(3, min(L, budget) // P), pages): a cache shorter than the budget may still lose its
  // partial last page, as the reference's token_budget = min(kv_seq_len, token_budget) does.
  EXPECT_EQ(QuestPagesToRead(100, 7, 16, 1024, 0, 0), 6);
  EXPECT_EQ(QuestPagesToRead(8192, 512, 16, 1024, 0, 0), 64);
  EXPECT_EQ(QuestPagesToRead(8192, 512, 16, 16, 0, 0), 3);
  EXPECT_EQ(QuestPagesToRead(20, 2, 16, 16, 0, 0), 2);
  EXPECT_EQ(QuestPagesToRead(8192, 512, 16, 32, 2, 4), 6);
}

// A session's decode output against exact attention over the reference's pages: every step's
// kv head h reads the pages QuestReferencePages picks for its query heads over the keys it holds
// (the history rows at Positions()).
class QuestSessionTest : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr int kHeads = 4, kKvHeads = 2, kDim = 16, kPage = 4;

  std::string Config(const std::string& extra) const {
    return "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 4 " + extra;
  }

  // Expected output [1, H, 1, d] of a decode step over the history k/v [Hkv, N, d] rows each kv
  // head holds (`held[h]`, the step's own token last).
  at::Tensor Expected(const std::vector<std::vector<int64_t>>& held, const at::Tensor& q,
                      const at::Tensor& hist_k, const at::Tensor& hist_v, int64_t budget,
                      int64_t start, int64_t recent, bool dense) {
    const int G = kHeads / kKvHeads;
    at::Tensor out = at::empty({1, kHeads, 1, kDim});
    for (int h = 0; h < kKvHeads; ++h) {
      const at::Tensor index = at::tensor(held[h], at::kLong);
      const at::Tensor k = hist_k[h].index_select(0, index), v = hist_v[h].index_select(0, index);
      const at::Tensor qg = q[0].narrow(0, h * G, G).select(1, 0);  // [G, d]
      const int64_t L = k.size(0);
      at::Tensor token_mask = at::ones({L}, at::kBool);
      if (!dense) {
        const at::Tensor pages = QuestReferencePages(qg, k, kPage, budget, start, recent);
        token_mask = pages.repeat_interleave(kPage).narrow(0, 0, L);
      }
      at::Tensor scores = at::matmul(qg, k.transpose(0, 1)).div(std::sqrt(double{kDim}));
      scores.masked_fill_(token_mask.logical_not().unsqueeze(0), -INFINITY);
      out[0].narrow(0, h * G, G).select(1, 0).copy_(at::matmul(at::softmax(scores, -1), v));
    }
    return out;
  }

  // Prompt of `prompt` tokens then `steps` decode steps through both layers (layer 1 uses the
  // history tensors' second half); checks every step against Expected.
  void Run(const std::string& config, int64_t prompt, int steps, int64_t budget, int64_t start,
           int64_t recent, int dense_layers) {
    session_ = MakeSession(config, GetParam());
    Session* s = session_.get();
    ASSERT_NE(s, nullptr);
    at::manual_seed(11);
    const int64_t N = prompt + steps;
    std::vector<at::Tensor> hk, hv;
    for (int layer = 0; layer < 2; ++layer) {
      hk.push_back(at::randn({kKvHeads, N, kDim}));
      hv.push_back(at::randn({kKvHeads, N, kDim}));
    }
    for (int layer = 0; layer < 2; ++layer) {
      const at::Tensor q = at::randn({1, kHeads, prompt, kDim});
      ASSERT_TRUE(s->Attend(layer, q, hk[layer].narrow(1, 0, prompt).unsqueeze(0),
                            hv[layer].narrow(1, 0, prompt).unsqueeze(0), at::empty_like(q))
                      .ok());
    }
    for (int step = 0; step < steps; ++step) {
      const int64_t t = prompt + step;
      for (int layer = 0; layer < 2; ++layer) {
        const at::Tensor q = at::randn({1, kHeads, 1, kDim}).mul_(2.0);
        // What each kv head holds when the step attends: its tokens before the call (an eviction
        // comes at the step's end), then the step's own.
        std::vector<std::vector<int64_t>> held;
        for (int h = 0; h < kKvHeads; ++h) {
          auto positions = s->Positions(layer, 0, h);
          ASSERT_TRUE(positions.ok());
          held.push_back(*positions);
          held.back().push_back(t);
        }
        at::Tensor out = at::empty_like(q);
        ASSERT_TRUE(s->Attend(layer, q, hk[layer].narrow(1, t, 1).unsqueeze(0),
                              hv[layer].narrow(1, t, 1).unsqueeze(0), out)
                        .ok());
        const at::Tensor expected =
            Expected(held, q, hk[layer], hv[layer], budget, start, recent, layer < dense_layers);
        EXPECT_TRUE(at::allclose(out, expected, 1e-5, 1e-5))
            << "step " << step << " layer " << layer << " max diff "
            << (out - expected).abs().max().item<float>();
        ++checked_;
      }
    }
  }

  int checked_ = 0;
  std::unique_ptr<Session> session_;
};

TEST_P(QuestSessionTest, DecodeReadsTheReferencePages) {
  Run(Config("sparse_decode { token_budget: 16 }"), 61, 12, 16, 0, 0, 0);
  EXPECT_EQ(checked_, 24);
  // Every decode attention read 4 pages of 4 (the last one partial while the length is not a
  // multiple of 4): 12 steps x 2 layers x 2 kv heads, over caches of 62..73 tokens.
  const SessionStatsView stats = session_->Stats();
  int64_t held = 0, read_at_most = 0;
  for (int64_t L = 62; L <= 73; ++L) {
    held += 4 * L;
    read_at_most += 4 * 16;
  }
  EXPECT_EQ(stats.sparse_decode_tokens_held, held);
  EXPECT_LE(stats.sparse_decode_tokens_read, read_at_most);
  EXPECT_GE(stats.sparse_decode_tokens_read, read_at_most - 4 * 12 * 3);
}

TEST_P(QuestSessionTest, StartRecentPagesAndDenseLayers) {
  Run(Config("sparse_decode { token_budget: 20 start_pages: 1 recent_pages: 2 dense_layers: 1 }"),
      70, 10, 20, 1, 2, 1);
  EXPECT_EQ(checked_, 20);
}

TEST_P(QuestSessionTest, ComposesWithEviction) {
  // H2O reads every step's column sums, which come from the pages read (zero elsewhere); the
  // kept sets differ per kv head and the expectation follows Positions().
  Run(Config("eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true "
             "start_tokens: 4 intermediate_tokens: 40 recent_tokens: 8 } "
             "sparse_decode { token_budget: 12 }"),
      80, 30, 12, 0, 0, 0);
  EXPECT_EQ(checked_, 60);
}

TEST_P(QuestSessionTest, CacheShorterThanTheBudgetFollowsTheReference) {
  // The reference reads min(L, budget) // page_size pages: a 41-token cache reads 10 of its 11.
  Run(Config("sparse_decode { token_budget: 4096 }"), 40, 5, 4096, 0, 0, 0);
  EXPECT_EQ(checked_, 10);
}

// Page summaries follow every write: a session whose summaries are all rebuilt (a Load() of its
// blob) and a fork that shares its pages must decode the same bits as the session, through
// eviction that moves rows and re-rotation that changes keys.
// (eviction config, tensor path)
class QuestSummaryTest : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

TEST_P(QuestSummaryTest, LoadedCopyAndForkDecodeTheSameBits) {
  const std::string config =
      std::string("num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 4 ") +
      std::get<0>(GetParam()) + " sparse_decode { token_budget: 12 recent_pages: 1 }";
  const bool tensor_path = std::get<1>(GetParam());
  auto s = MakeSession(config, tensor_path);
  ASSERT_NE(s, nullptr);
  at::manual_seed(5);
  auto step = [](Session& session, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    at::Tensor out = at::empty_like(q);
    EXPECT_TRUE(session.Attend(0, q, k, v, out).ok());
    return out;
  };
  const at::Tensor pq = at::randn({1, 4, 50, 16});
  step(*s, pq, at::randn({1, 2, 50, 16}), at::randn({1, 2, 50, 16}));
  int compared = 0;
  for (int i = 0; i < 24; ++i) {
    auto blob = s->Save();
    ASSERT_TRUE(blob.ok()) << blob.status();
    auto loaded = MakeSession(config, tensor_path);
    ASSERT_TRUE(loaded->Load(*blob).ok());
    auto fork = s->Fork();
    ASSERT_TRUE(fork.ok()) << fork.status();
    const at::Tensor q = at::randn({1, 4, 1, 16}).mul_(3.0);
    const at::Tensor k = at::randn({1, 2, 1, 16}), v = at::randn({1, 2, 1, 16});
    const at::Tensor a = step(*s, q, k, v);
    EXPECT_TRUE(at::equal(a, step(*loaded, q, k, v))) << "step " << i << ": loaded copy";
    EXPECT_TRUE(at::equal(a, step(**fork, q, k, v))) << "step " << i << ": fork";
    ++compared;
  }
  EXPECT_EQ(compared, 24);
  EXPECT_GT(s->Stats().evictions, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Evictions, QuestSummaryTest,
    ::testing::Combine(
        ::testing::Values(
            // Rows move and every kept key turns (re-rotation) every 5th step.
            "rope { theta: 10000 } eviction { enabled: true algorithm: SNAPKV granularity: "
            "PER_TOKEN "
            "rerotate_keys: true start_tokens: 4 intermediate_tokens: 30 recent_tokens: 6 "
            "window_size: 4 schedule { interval_steps: 5 } }",
            // One token per kv head out every step: pages cut short, then appended to again.
            "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true "
            "start_tokens: 4 intermediate_tokens: 30 recent_tokens: 6 }"),
        ::testing::Bool()));

INSTANTIATE_TEST_SUITE_P(Stores, QuestSessionTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "TensorPath" : "HostStore";
                         });

TEST(QuestConfigTest, BadValuesNameTheField) {
  const std::string shape = "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 16 ";
  struct Case {
    std::string extra, field;
  };
  for (const Case& c : std::vector<Case>{
           {"sparse_decode { token_budget: -1 }", "sparse_decode.token_budget"},
           {"sparse_decode { token_budget: 64 start_pages: -2 }", "sparse_decode.start_pages"},
           {"sparse_decode { token_budget: 64 recent_pages: -1 }", "sparse_decode.recent_pages"},
           {"sparse_decode { token_budget: 64 dense_layers: -1 }", "sparse_decode.dense_layers"},
       }) {
    auto options = ParseSessionConfig(shape + c.extra, true);
    ASSERT_FALSE(options.ok()) << c.extra;
    EXPECT_NE(std::string(options.status().message()).find(c.field), std::string::npos)
        << options.status();
  }
  EXPECT_TRUE(
      ParseSessionConfig(shape + "sparse_decode { token_budget: 64 } dtype: BFLOAT16", true).ok());
  // Quantized pages (host store; QuantizedStore.QuestChoosesAmongQuantizedPages checks them).
  EXPECT_TRUE(ParseSessionConfig(shape + "sparse_decode { token_budget: 64 } kv_format { keys: "
                                         "INT8 values: INT8 residual_tokens: 8 }",
                                 true)
                  .ok());
}

}  // namespace
}  // namespace attnkit
