// The session against a plain ATen reference: attention (prefill and decode, GQA, dtypes, strided
// inputs), eviction at session level (batches, per head, pages freed), reset and bad input.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>
#include <malloc.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "attnkit/sparse/sparse_attention.h"
#include "session/rope.h"

namespace attnkit {
namespace {

std::unique_ptr<Session> MakeSession(const std::string& text) {
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  auto session = Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  return std::move(*session);
}

// Reference: causal attention of q [B, H, T, d] over keys/values [B, Hkv, L, d] (queries are the
// last T positions), GQA by repeating kv heads.
at::Tensor ReferenceAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t H = q.size(1), Hkv = k.size(1), T = q.size(2), L = k.size(2);
  at::Tensor kr = k.repeat_interleave(H / Hkv, 1), vr = v.repeat_interleave(H / Hkv, 1);
  at::Tensor s = at::matmul(q, kr.transpose(-1, -2)).div(std::sqrt(static_cast<double>(q.size(3))));
  at::Tensor limit = at::arange(L - T, L).unsqueeze(1);
  s.masked_fill_(at::arange(L).unsqueeze(0).gt(limit), -INFINITY);
  return at::matmul(at::softmax(s, -1), vr);
}

const char* kShape = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 4 ";

TEST(SessionTest, PrefillAndDecodeMatchReferenceAttention) {
  auto session = MakeSession(kShape);
  at::manual_seed(1);
  for (int64_t prompt : {1, 5, 40}) {  // 40 > the paged-kernel query limit: the prefill path
    session->Reset();
    at::Tensor keys = at::randn({1, 2, prompt, 16}), values = at::randn({1, 2, prompt, 16});
    at::Tensor q = at::randn({1, 4, prompt, 16});
    for (int step = 0; step < 6; ++step) {
      at::Tensor k_new = step == 0 ? keys : at::randn({1, 2, 1, 16});
      at::Tensor v_new = step == 0 ? values : at::randn({1, 2, 1, 16});
      at::Tensor q_new = step == 0 ? q : at::randn({1, 4, 1, 16});
      if (step > 0) {
        keys = at::cat({keys, k_new}, 2);
        values = at::cat({values, v_new}, 2);
      }
      at::Tensor expected = ReferenceAttention(q_new, keys, values);
      for (int layer = 0; layer < 2; ++layer) {
        at::Tensor out = at::empty_like(q_new);
        ASSERT_TRUE(session->Attend(layer, q_new, k_new, v_new, out).ok());
        EXPECT_LT((out - expected).abs().max().item<float>(), 1e-5) << prompt << " " << step;
      }
    }
  }
}

TEST(SessionTest, StridedInputsNeedNoCopiesAndGiveTheSameResult) {
  at::manual_seed(2);
  // [B, T, H, d] buffers viewed as [B, H, T, d].
  at::Tensor q = at::randn({1, 7, 4, 16}).transpose(1, 2);
  at::Tensor k = at::randn({1, 7, 2, 16}).transpose(1, 2);
  at::Tensor v = at::randn({1, 7, 2, 16}).transpose(1, 2);
  at::Tensor out = at::empty({1, 7, 4, 16}).transpose(1, 2);
  auto a = MakeSession(kShape), b = MakeSession(kShape);
  ASSERT_TRUE(a->Attend(0, q, k, v, out).ok());
  at::Tensor out2 = at::empty({1, 4, 7, 16});
  ASSERT_TRUE(b->Attend(0, q.contiguous(), k.contiguous(), v.contiguous(), out2).ok());
  EXPECT_TRUE(at::allclose(out, out2, 0, 0));
  EXPECT_LT((out - ReferenceAttention(q, k, v)).abs().max().item<float>(), 1e-5);
}

TEST(SessionTest, HalfPrecisionInputsAndStorage) {
  at::manual_seed(3);
  at::Tensor q = at::randn({1, 4, 9, 16}), k = at::randn({1, 2, 9, 16}),
             v = at::randn({1, 2, 9, 16});
  const at::Tensor expected = ReferenceAttention(q, k, v);
  for (const char* dtype : {"FLOAT32", "FLOAT16", "BFLOAT16"}) {
    for (at::ScalarType input : {at::kHalf, at::kBFloat16, at::kFloat}) {
      auto session = MakeSession(std::string(kShape) + "dtype: " + dtype);
      at::Tensor out = at::empty({1, 4, 9, 16}, input);
      ASSERT_TRUE(session->Attend(0, q.to(input), k.to(input), v.to(input), out).ok());
      EXPECT_LT((out.to(at::kFloat) - expected).abs().max().item<float>(), 5e-2) << dtype;
    }
  }
}

TEST(SessionTest, EvictionKeepsTheBudgetAndFreesPages) {
  auto session = MakeSession(std::string(kShape) +
                             "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN "
                             "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 2 }");
  at::manual_seed(4);
  ASSERT_TRUE(session
                  ->Attend(0, at::randn({1, 4, 30, 16}), at::randn({1, 2, 30, 16}),
                           at::randn({1, 2, 30, 16}), at::empty({1, 4, 30, 16}))
                  .ok());
  const int64_t after_layer0 = session->Stats().layers[0].bytes;
  ASSERT_TRUE(session
                  ->Attend(1, at::randn({1, 4, 30, 16}), at::randn({1, 2, 30, 16}),
                           at::randn({1, 2, 30, 16}), at::empty({1, 4, 30, 16}))
                  .ok());
  SessionStatsView stats = session->Stats();
  // 12 tokens per kv head in pages of 4 = 3 pages of 4 x 16 floats x (k + v).
  const int64_t page_bytes = 4 * 16 * 4 * 2;
  EXPECT_EQ(stats.layers[0].bytes, after_layer0);
  EXPECT_EQ(stats.layers[0].tokens, 2 * 12);
  EXPECT_EQ(stats.layers[0].bytes, 2 * 3 * page_bytes);
  EXPECT_LT(stats.layers[0].bytes, stats.bytes_reserved);
  EXPECT_EQ(stats.evicted_tokens, 2 * 2 * 18);
  for (int step = 0; step < 10; ++step) {
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(session
                      ->Attend(layer, at::randn({1, 4, 1, 16}), at::randn({1, 2, 1, 16}),
                               at::randn({1, 2, 1, 16}), at::empty({1, 4, 1, 16}))
                      .ok());
      EXPECT_LE(session->Stats().layers[layer].bytes, 2 * (12 * 16 * 4 * 2 + page_bytes));
    }
  }
  for (int layer = 0; layer < 2; ++layer) {
    auto positions = session->Positions(layer, 0, 0);
    ASSERT_TRUE(positions.ok());
    EXPECT_EQ(positions->size(), 12u);
    EXPECT_EQ((*positions)[0], 0);
    EXPECT_EQ(positions->back(), 39) << "layer " << layer;
  }
}

// The schedule of kvpress's DecodingPress: every interval-th decode call evicts down to the budget,
// the calls between only append. A session stepping every call is the baseline: both keep the
// same tokens right after each scheduled eviction when the scores agree (here: StreamingLLM, whose
// selection depends on positions only).
TEST(SessionTest, IntervalScheduleEvictsEveryNthDecodeStep) {
  const std::string areas = "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 2 ";
  constexpr int kInterval = 5, kBudget = 12, kPrompt = 30, kSteps = 23;
  for (const char* algorithm : {"SNAPKV", "STREAMING_LLM"}) {
    SCOPED_TRACE(algorithm);
    const std::string eviction = std::string("eviction { enabled: true granularity: PER_TOKEN ") +
                                 areas + "algorithm: " + algorithm;
    auto scheduled = MakeSession(std::string(kShape) + eviction + " schedule { interval_steps: " +
                                 std::to_string(kInterval) + " } }");
    auto every = MakeSession(std::string(kShape) + eviction + " }");
    at::manual_seed(7);
    auto attend_all = [&](int64_t tokens) {
      for (int layer = 0; layer < 2; ++layer) {
        at::Tensor q = at::randn({1, 4, tokens, 16}), k = at::randn({1, 2, tokens, 16}),
                   v = at::randn({1, 2, tokens, 16});
        ASSERT_TRUE(scheduled->Attend(layer, q, k, v, at::empty({1, 4, tokens, 16})).ok());
        ASSERT_TRUE(every->Attend(layer, q, k, v, at::empty({1, 4, tokens, 16})).ok());
      }
    };
    attend_all(kPrompt);  // the prompt evicts as before: the schedule counts decode calls only
    int64_t length = kBudget, evictions = 1;
    ASSERT_EQ(scheduled->Positions(0, 0, 0)->size(), static_cast<size_t>(length));
    for (int step = 1; step <= kSteps; ++step) {
      attend_all(1);
      ++length;
      if (step % kInterval == 0) {
        length = kBudget;
        ++evictions;
      }
      for (int layer = 0; layer < 2; ++layer) {
        auto positions = scheduled->Positions(layer, 0, 1);
        ASSERT_TRUE(positions.ok());
        EXPECT_EQ(positions->size(), static_cast<size_t>(length)) << "step " << step;
        EXPECT_EQ(positions->back(), kPrompt + step - 1);
        EXPECT_EQ(scheduled->Stats().layers[layer].evictions, evictions);
        EXPECT_EQ(every->Stats().layers[layer].evictions, 1 + step);
        if (std::string(algorithm) == "STREAMING_LLM" && step % kInterval == 0) {
          EXPECT_EQ(*positions, *every->Positions(layer, 0, 1));
        }
      }
    }
    // Reset restarts the count: the first decode steps of a new prompt only append.
    scheduled->Reset();
    attend_all(kPrompt);
    attend_all(1);
    EXPECT_EQ(scheduled->Positions(0, 0, 0)->size(), static_cast<size_t>(kBudget + 1));
  }
}

// Under a schedule, SnapKV observes only the last window_size decode calls before each scheduled
// eviction (DecodingPress scores with the newest queries): queries earlier in the interval cannot
// change what is kept, queries in the window do. The probe queries point at one cached token's key,
// so every query head puts nearly all its attention on that token.
TEST(SessionTest, IntervalScheduleObservesOnlyTheWindowBeforeEachEviction) {
  constexpr int kInterval = 6, kWindow = 2, kPrompt = 30;
  const std::string config = std::string(kShape) +
                             "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN "
                             "start_tokens: 2 intermediate_tokens: 8 recent_tokens: 2 "
                             "window_size: 2 schedule { interval_steps: 6 } }";
  at::manual_seed(11);
  std::vector<std::array<at::Tensor, 3>> calls;  // per call: q, k, v of layer 0 (layer 1 reuses)
  for (int call = 0; call <= kInterval; ++call) {
    const int64_t tokens = call == 0 ? kPrompt : 1;
    calls.push_back({at::randn({1, 4, tokens, 16}), at::randn({1, 2, tokens, 16}),
                     at::randn({1, 2, tokens, 16})});
  }
  // Query heads 0-1 read kv head 0, 2-3 kv head 1: each probes its kv head's key of `target`.
  auto kept = [&](int64_t target, bool probe_early, bool probe_late) {
    const at::Tensor key = calls[target - kPrompt + 1][1];  // decode call 1 appends position 30
    const at::Tensor probe = key.repeat_interleave(2, 1).mul(10.0);
    auto session = MakeSession(config);
    for (int call = 0; call <= kInterval; ++call) {
      const bool early = call >= 1 && call <= kInterval - kWindow,
                 late = call > kInterval - kWindow;
      const at::Tensor q = (early && probe_early) || (late && probe_late) ? probe : calls[call][0];
      const int64_t tokens = q.size(2);
      for (int layer = 0; layer < 2; ++layer) {
        EXPECT_TRUE(
            session->Attend(layer, q, calls[call][1], calls[call][2], at::empty({1, 4, tokens, 16}))
                .ok());
      }
    }
    EXPECT_EQ(session->Stats().layers[0].evictions, 2);  // the prompt's and the scheduled one
    return *session->Positions(0, 0, 0);
  };
  const std::vector<int64_t> base = kept(kPrompt, false, false);
  ASSERT_EQ(base.size(), 12u);
  // The target: a token appended by an early decode call (so in the cache when the scheduled
  // eviction selects, and probed only by queries after it) that the base run drops.
  int64_t target = kPrompt;
  while (std::count(base.begin(), base.end(), target) != 0) ++target;
  ASSERT_LT(target, kPrompt + kInterval - kWindow - 1);
  EXPECT_EQ(kept(target, true, false), base);  // early queries are not observed
  const std::vector<int64_t> with_late = kept(target, false, true);
  EXPECT_EQ(std::count(with_late.begin(), with_late.end(), target), 1);  // the window's are
}

TEST(SessionTest, IntervalScheduleRejectsNegativeIntervals) {
  auto options = ParseSessionConfig(
      std::string(kShape) +
          "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
          "recent_tokens: 2 schedule { interval_steps: -3 } }",
      true);
  ASSERT_FALSE(options.ok());
  EXPECT_NE(std::string(options.status().message()).find("eviction.schedule.interval_steps"),
            std::string::npos)
      << options.status();
}

// Heap bytes in use (glibc): arena allocations and mmapped blocks.
size_t HeapBytesInUse() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

// Creation allocates no per-layer or per-sequence state: a session at the largest shape the config
// allows (1024 layers, heads and kv heads, batch 4096: 4.3e9 kv heads in all, which eager
// per-head state could never hold) is created within a few MB; a layer gets its state on its first
// call, and the layers not called yet read as empty.
TEST(SessionTest, CreationAllocatesNoPerLayerState) {
  const size_t before = HeapBytesInUse();
  auto options = ParseSessionConfig(
      "num_layers: 1024 num_heads: 1024 num_kv_heads: 1024 head_dim: 1024 batch_size: 4096 "
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN per_head: true "
      "intermediate_tokens: 64 }",
      true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto big = Session::Create(*options);
  ASSERT_TRUE(big.ok()) << big.status();
  const size_t grown = HeapBytesInUse() - std::min(before, HeapBytesInUse());
  EXPECT_LT(grown, size_t{16} << 20) << "bytes allocated by creation: " << grown;
  EXPECT_EQ((*big)->BytesHeld(), 0);
  auto positions = (*big)->Positions(1023, 4095, 1023);
  ASSERT_TRUE(positions.ok()) << positions.status();
  EXPECT_TRUE(positions->empty());
  big->reset();

  auto session = MakeSession(std::string(kShape) +
                             "batch_size: 2 eviction { enabled: true algorithm: SNAPKV "
                             "granularity: PER_TOKEN intermediate_tokens: 4 }");
  at::manual_seed(9);
  at::Tensor q = at::randn({2, 4, 6, 16}), k = at::randn({2, 2, 6, 16}),
             v = at::randn({2, 2, 6, 16});
  at::Tensor out = at::empty_like(q);
  ASSERT_TRUE(session->Attend(0, q, k, v, out).ok());
  auto layer0 = session->Positions(0, 1, 1), layer1 = session->Positions(1, 1, 1);
  ASSERT_TRUE(layer0.ok() && layer1.ok());
  EXPECT_EQ(layer0->size(), 4u);  // the prompt evicted down to the budget
  EXPECT_TRUE(layer1->empty());
  EXPECT_EQ(session->Stats().heads.size(), 2u * 2 * 2);  // every (layer, sequence, kv head)
}

// DuoAttention's split: streaming kv heads keep their first sink_tokens and last recent_tokens
// after every call (their pages follow), retrieval heads everything; decode attends over what each
// head kept.
TEST(SessionTest, HeadSplitStreamingHeadsKeepSinkAndRecent) {
  auto session = MakeSession(std::string(kShape) +
                             "head_split { streaming: [true, false, false, true] sink_tokens: 2 "
                             "recent_tokens: 3 }");
  at::manual_seed(12);
  at::Tensor keys = at::randn({1, 2, 10, 16}), values = at::randn({1, 2, 10, 16});
  at::Tensor q = at::randn({1, 4, 10, 16});
  for (int step = 0; step < 4; ++step) {
    at::Tensor k_new = step == 0 ? keys : at::randn({1, 2, 1, 16});
    at::Tensor v_new = step == 0 ? values : at::randn({1, 2, 1, 16});
    at::Tensor q_new = step == 0 ? q : at::randn({1, 4, 1, 16});
    if (step > 0) {
      keys = at::cat({keys, k_new}, 2);
      values = at::cat({values, v_new}, 2);
    }
    const int64_t L = keys.size(2);
    for (int layer = 0; layer < 2; ++layer) {
      // Before the call: what each head holds (streaming heads: sink + recent of L - 1 tokens).
      std::vector<int64_t> held[2];
      for (int h = 0; h < 2; ++h) {
        auto p = session->Positions(layer, 0, h);
        ASSERT_TRUE(p.ok());
        held[h] = *p;
        held[h].push_back(L - 1);  // the token this call brings
      }
      at::Tensor out = at::empty_like(q_new);
      ASSERT_TRUE(session->Attend(layer, q_new, k_new, v_new, out).ok());
      for (int h = 0; h < 2; ++h) {
        const bool streaming = (layer == 0 && h == 0) || (layer == 1 && h == 1);
        auto p = session->Positions(layer, 0, h);
        ASSERT_TRUE(p.ok());
        std::vector<int64_t> want;
        for (int64_t i = 0; i < L; ++i) {
          if (!streaming || i < 2 || i >= L - 3) want.push_back(i);
        }
        EXPECT_EQ(*p, want) << "layer " << layer << " head " << h << " step " << step;
        if (step == 0) continue;  // the prompt attends to all of itself
        const at::Tensor index = at::tensor(held[h]);
        const at::Tensor kh = keys[0][h].index_select(0, index).unsqueeze(0).unsqueeze(0);
        const at::Tensor vh = values[0][h].index_select(0, index).unsqueeze(0).unsqueeze(0);
        const at::Tensor expect = ReferenceAttention(
            q_new.narrow(1, 2 * h, 2), kh.expand({1, 1, -1, 16}), vh.expand({1, 1, -1, 16}));
        EXPECT_LT((out.narrow(1, 2 * h, 2) - expect).abs().max().item<float>(), 1e-5)
            << "layer " << layer << " head " << h << " step " << step;
      }
    }
  }
  const SessionStatsView stats = session->Stats();
  for (const HeadStatsView& head : stats.heads) {
    const bool streaming = head.layer == head.kv_head;  // (0, 0) and (1, 1)
    EXPECT_EQ(head.tokens, streaming ? 5 : 13) << head.layer << " " << head.kv_head;
    EXPECT_EQ(head.bytes, (streaming ? 2 : 4) * 4 * 16 * 4 * 2);  // pages of 4 rows, k and v
  }
}

TEST(SessionTest, HeadSplitLabelsFromScoresAsKvpressDerivesThem) {
  auto labels = [](const std::string& split) {
    auto o = ParseSessionConfig(std::string(kShape) + "head_split { " + split + " }", true);
    EXPECT_TRUE(o.ok()) << o.status();
    return o.ok() ? o->head_split.streaming : std::vector<bool>();
  };
  const std::string scores = "head_scores: [0.5, 0.1, 0.9, 0.3] recent_tokens: 4 ";
  EXPECT_EQ(labels(scores + "streaming_ratio: 0.5"), (std::vector<bool>{false, true, false, true}));
  // round(4 * 0.625) = round(2.5) = 2 and round(4 * 0.875) = round(3.5) = 4, half to even.
  EXPECT_EQ(labels(scores + "streaming_ratio: 0.625"),
            (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(labels(scores + "streaming_ratio: 0.875"), (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(labels(scores + "streaming_ratio: 0"), (std::vector<bool>{false, false, false, false}));
  // Equal scores: the lower index streams first.
  EXPECT_EQ(labels("head_scores: [1, 1, 1, 1] streaming_ratio: 0.25 recent_tokens: 1"),
            (std::vector<bool>{true, false, false, false}));

  for (const auto& [split, field] : std::vector<std::pair<std::string, std::string>>{
           {"recent_tokens: 4", "head_split: needs head_scores"},
           {"streaming: [true] head_scores: [1] recent_tokens: 4", "head_split.streaming: give"},
           {"streaming: [true, false] recent_tokens: 4", "head_split.streaming: must have"},
           {"head_scores: [1, 2] streaming_ratio: 0.5 recent_tokens: 4",
            "head_split.head_scores: must have"},
           {"head_scores: [1, nan, 1, 1] streaming_ratio: 0.5 recent_tokens: 4",
            "head_split.head_scores[1]"},
           {"head_scores: [1, 2, 3, 4] streaming_ratio: 1.5 recent_tokens: 4",
            "head_split.streaming_ratio"},
           {"streaming: [true, false, true, true] streaming_ratio: 0.5 recent_tokens: 4",
            "head_split.streaming_ratio"},
           {"streaming: [true, false, true, true] recent_tokens: 0", "head_split.recent_tokens"},
           {"streaming: [true, false, true, true] sink_tokens: -1 recent_tokens: 2",
            "head_split.sink_tokens"}}) {
    auto o = ParseSessionConfig(std::string(kShape) + "head_split { " + split + " }", true);
    ASSERT_FALSE(o.ok()) << split;
    EXPECT_EQ(std::string(o.status().message()).rfind(field, 0), 0u) << o.status();
  }
  auto with_eviction = ParseSessionConfig(
      std::string(kShape) +
          "head_split { streaming: [true, false, true, true] recent_tokens: 2 } eviction { "
          "enabled: true algorithm: SNAPKV granularity: PER_TOKEN intermediate_tokens: 4 }",
      true);
  ASSERT_FALSE(with_eviction.ok());
  EXPECT_EQ(
      std::string(with_eviction.status().message()).rfind("eviction.per_head: must be true", 0), 0u)
      << with_eviction.status();
  auto with_adakv = ParseSessionConfig(
      std::string(kShape) +
          "head_split { streaming: [true, false, true, true] recent_tokens: 2 } eviction { "
          "enabled: true algorithm: SNAPKV granularity: PER_TOKEN intermediate_tokens: 4 "
          "budget { allocator: ADAKV } }",
      true);
  ASSERT_FALSE(with_adakv.ok());
  EXPECT_EQ(std::string(with_adakv.status().message()).rfind("eviction.budget.allocator", 0), 0u)
      << with_adakv.status();
}

// Head split with eviction: retrieval heads follow the per-head policy, so each keeps exactly
// what the same head keeps in a session without the split; streaming heads keep their first
// sink_tokens and last recent_tokens whenever their layer evicts (every call here).
TEST(SessionTest, HeadSplitRetrievalHeadsFollowThePolicy) {
  const std::string eviction =
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN per_head: true "
      "start_tokens: 1 intermediate_tokens: 6 recent_tokens: 2 cache_merging { merge_budget: 2 } "
      "}";
  auto split = MakeSession(std::string(kShape) +
                           "head_split { streaming: [true, false, false, true] sink_tokens: 2 "
                           "recent_tokens: 3 } " +
                           eviction);
  auto plain = MakeSession(std::string(kShape) + eviction);
  at::manual_seed(5);
  for (int step = 0; step < 12; ++step) {
    const int64_t T = step == 0 ? 14 : 1;
    const at::Tensor q = at::randn({1, 4, T, 16}), k = at::randn({1, 2, T, 16});
    const at::Tensor v = at::randn({1, 2, T, 16});
    for (int layer = 0; layer < 2; ++layer) {
      at::Tensor a = at::empty_like(q), b = at::empty_like(q);
      ASSERT_TRUE(split->Attend(layer, q, k, v, a).ok());
      ASSERT_TRUE(plain->Attend(layer, q, k, v, b).ok());
      const int64_t seen = 14 + step;
      for (int h = 0; h < 2; ++h) {
        const bool streaming = (layer == 0 && h == 0) || (layer == 1 && h == 1);
        auto p = split->Positions(layer, 0, h), want = plain->Positions(layer, 0, h);
        ASSERT_TRUE(p.ok() && want.ok());
        if (streaming) {
          std::vector<int64_t> stream = {0, 1, seen - 3, seen - 2, seen - 1};
          EXPECT_EQ(*p, stream) << "layer " << layer << " step " << step;
        } else {
          EXPECT_EQ(*p, *want) << "layer " << layer << " head " << h << " step " << step;
          // The retrieval head's output too: its scores, merges and cache are the plain head's.
          EXPECT_TRUE(at::equal(a.narrow(1, 2 * h, 2), b.narrow(1, 2 * h, 2)))
              << "layer " << layer << " head " << h << " step " << step;
        }
      }
    }
  }
}

TEST(SessionTest, BatchSequencesKeepTheirOwnTokens) {
  const std::string eviction =
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
      "intermediate_tokens: 4 recent_tokens: 1 }";
  auto batch = MakeSession(std::string(kShape) + "batch_size: 2 " + eviction);
  auto single0 = MakeSession(std::string(kShape) + eviction);
  auto single1 = MakeSession(std::string(kShape) + eviction);
  at::manual_seed(5);
  at::Tensor q = at::randn({2, 4, 20, 16}).mul(3), k = at::randn({2, 2, 20, 16}),
             v = at::randn({2, 2, 20, 16});
  at::Tensor out = at::empty({2, 4, 20, 16});
  ASSERT_TRUE(batch->Attend(0, q, k, v, out).ok());
  at::Tensor out0 = at::empty({1, 4, 20, 16}), out1 = at::empty({1, 4, 20, 16});
  ASSERT_TRUE(
      single0->Attend(0, q.narrow(0, 0, 1), k.narrow(0, 0, 1), v.narrow(0, 0, 1), out0).ok());
  ASSERT_TRUE(
      single1->Attend(0, q.narrow(0, 1, 1), k.narrow(0, 1, 1), v.narrow(0, 1, 1), out1).ok());
  EXPECT_EQ(*batch->Positions(0, 0, 0), *single0->Positions(0, 0, 0));
  EXPECT_EQ(*batch->Positions(0, 1, 0), *single1->Positions(0, 0, 0));
  EXPECT_NE(*batch->Positions(0, 0, 0), *batch->Positions(0, 1, 0));
  EXPECT_TRUE(at::allclose(out.narrow(0, 1, 1), out1, 1e-6, 1e-6));
}

TEST(SessionTest, PerHeadEvictionHoldsDifferentTokensPerKvHead) {
  auto session =
      MakeSession(std::string(kShape) +
                  "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
                  "start_tokens: 0 intermediate_tokens: 4 recent_tokens: 0 per_head: true }");
  at::manual_seed(6);
  ASSERT_TRUE(session
                  ->Attend(0, at::randn({1, 4, 16, 16}).mul(4), at::randn({1, 2, 16, 16}),
                           at::randn({1, 2, 16, 16}), at::empty({1, 4, 16, 16}))
                  .ok());
  auto h0 = session->Positions(0, 0, 0), h1 = session->Positions(0, 0, 1);
  ASSERT_TRUE(h0.ok() && h1.ok());
  EXPECT_EQ(h0->size(), 4u);
  EXPECT_EQ(h1->size(), 4u);
  EXPECT_NE(*h0, *h1);
  ASSERT_TRUE(session
                  ->Attend(1, at::randn({1, 4, 16, 16}), at::randn({1, 2, 16, 16}),
                           at::randn({1, 2, 16, 16}), at::empty({1, 4, 16, 16}))
                  .ok());
  // Decode keeps working with different tokens per head.
  for (int layer = 0; layer < 2; ++layer) {
    auto s = session->Attend(layer, at::randn({1, 4, 1, 16}), at::randn({1, 2, 1, 16}),
                             at::randn({1, 2, 1, 16}), at::empty({1, 4, 1, 16}));
    ASSERT_TRUE(s.ok()) << s;
  }
}

TEST(SessionTest, ResetStartsANewPrompt) {
  auto session = MakeSession(kShape);
  at::manual_seed(7);
  at::Tensor q = at::randn({1, 4, 6, 16}), k = at::randn({1, 2, 6, 16}),
             v = at::randn({1, 2, 6, 16});
  at::Tensor first = at::empty_like(q), second = at::empty_like(q), scratch = at::empty_like(q);
  ASSERT_TRUE(session->Attend(0, q, k, v, first).ok());
  ASSERT_TRUE(session->Attend(1, q, k, v, scratch).ok());
  session->Reset();
  EXPECT_EQ(*session->NextPosition(0), 0);
  ASSERT_TRUE(session->Attend(0, q, k, v, second).ok());
  EXPECT_TRUE(at::equal(first, second));
}

TEST(SessionTest, BadInputIsRejectedWithClearErrors) {
  auto session = MakeSession(kShape);
  at::Tensor q = at::randn({1, 4, 3, 16}), k = at::randn({1, 2, 3, 16}),
             v = at::randn({1, 2, 3, 16});
  at::Tensor out = at::empty_like(q);
  auto expect_error = [&](absl::Status s, absl::StatusCode code, const char* needle) {
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s;
  };
  expect_error(session->Attend(2, q, k, v, out), absl::StatusCode::kInvalidArgument, "layer");
  expect_error(session->Attend(0, q, at::randn({1, 2, 4, 16}), v, out),
               absl::StatusCode::kInvalidArgument, "k: expected [1, 2, 3, 16]");
  expect_error(session->Attend(0, at::randn({1, 3, 3, 16}), k, v, out),
               absl::StatusCode::kInvalidArgument, "num_heads=4");
  expect_error(session->Attend(1, q, k, v, out), absl::StatusCode::kFailedPrecondition,
               "before layer 0");
  at::Tensor nan_q = q.clone();
  nan_q[0][1][2][3] = NAN;
  expect_error(session->Attend(0, nan_q, k, v, out), absl::StatusCode::kInvalidArgument,
               "q: contains NaN");
  expect_error(session->Attend(0, q, k, v, at::empty({1, 4, 2, 16})),
               absl::StatusCode::kInvalidArgument, "out");
  // Nothing was cached by the rejected calls.
  EXPECT_EQ(session->Stats().tokens_held, 0);
}

TEST(SessionTest, SkipFiniteCheckTakesNonFiniteInputs) {
  // skip_finite_check: the caller vouches for its inputs, so a NaN is not looked for; it reaches
  // the cache (and that call's output), and the shape checks still run.
  auto options = ParseSessionConfig(std::string(kShape) + " skip_finite_check: true", true);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_TRUE(options->skip_finite_check);
  auto session = Session::Create(*options);
  ASSERT_TRUE(session.ok()) << session.status();
  at::Tensor q = at::randn({1, 4, 3, 16}), k = at::randn({1, 2, 3, 16}),
             v = at::randn({1, 2, 3, 16});
  at::Tensor out = at::empty_like(q);
  v[0][1][0][3] = NAN;
  ASSERT_TRUE((*session)->Attend(0, q, k, v, out).ok());
  EXPECT_TRUE(at::isnan(out).any().item<bool>());
  EXPECT_EQ((*session)->Stats().tokens_held, 3 * 2);
  EXPECT_EQ((*session)->Attend(0, q, at::randn({1, 2, 4, 16}), v, out).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SessionTest, RerotatedKeysEqualKeysRotatedAtTheirNewPositions) {
  RopeOptions rope;
  rope.theta = 10000;
  for (bool interleaved : {true, false}) {
    rope.interleaved = interleaved;
    at::Tensor x = at::randn({16});
    at::Tensor at_9 = x.clone(), at_3 = x.clone(), direct = x.clone();
    session::RotateRow(at_9.data_ptr(), at::kFloat, 16, 9, rope);      // position 9
    session::RotateRow(at_9.data_ptr(), at::kFloat, 16, 3 - 9, rope);  // re-rotated to 3
    session::RotateRow(direct.data_ptr(), at::kFloat, 16, 3, rope);
    EXPECT_LT((at_9 - direct).abs().max().item<float>(), 1e-5);
  }
  auto session =
      MakeSession(std::string(kShape) +
                  "rope { theta: 10000 } eviction { enabled: true algorithm: STREAMING_LLM "
                  "granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 0 "
                  "recent_tokens: 4 rerotate_keys: true }");
  for (int step = 0; step < 10; ++step) {
    for (int layer = 0; layer < 2; ++layer) {
      ASSERT_TRUE(session
                      ->Attend(layer, at::randn({1, 4, 1, 16}), at::randn({1, 2, 1, 16}),
                               at::randn({1, 2, 1, 16}), at::empty({1, 4, 1, 16}))
                      .ok());
    }
  }
  EXPECT_EQ(*session->NextPosition(0), 6);  // the cache length: positions stay contiguous

  // Every kv head's keys carry the same positions: with the same keys, values and queries in both
  // kv heads, both groups' outputs agree after evictions and re-rotations (a prompt chunk of 5
  // tokens, then single tokens).
  auto twin = MakeSession(std::string(kShape) +
                          "rope { theta: 10000 } eviction { enabled: true algorithm: "
                          "STREAMING_LLM granularity: PER_TOKEN start_tokens: 2 "
                          "intermediate_tokens: 0 recent_tokens: 4 rerotate_keys: true }");
  for (int step = 0; step < 8; ++step) {
    const int64_t T = step == 0 ? 5 : 1;
    const at::Tensor k = at::randn({1, 1, T, 16}).expand({1, 2, T, 16});
    const at::Tensor v = at::randn({1, 1, T, 16}).expand({1, 2, T, 16});
    const at::Tensor q = at::randn({1, 2, T, 16}).repeat({1, 2, 1, 1});
    for (int layer = 0; layer < 2; ++layer) {
      at::Tensor out = at::empty({1, 4, T, 16});
      ASSERT_TRUE(twin->Attend(layer, q, k, v, out).ok());
      EXPECT_LT((out.narrow(1, 0, 2) - out.narrow(1, 2, 2)).abs().max().item<float>(), 1e-6)
          << "step " << step << " layer " << layer;
    }
  }
}

TEST(SessionTest, SparsePrefillUsesTheBlockSparseKernelAndKeepsTheObservationExact) {
  const std::string sparse =
      "sparse_attention { mode: TRI_SHAPE block_size: 16 recent_size: 32 last_query_size: 8 } ";
  const std::string eviction =
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 4 "
      "intermediate_tokens: 16 recent_tokens: 8 }";
  auto sparse_session = MakeSession(std::string(kShape) + sparse + eviction);
  auto dense_session = MakeSession(std::string(kShape) + eviction);
  at::manual_seed(8);
  at::Tensor q = at::randn({1, 4, 100, 16}), k = at::randn({1, 2, 100, 16}),
             v = at::randn({1, 2, 100, 16});
  at::Tensor out = at::empty_like(q), dense_out = at::empty_like(q);
  ASSERT_TRUE(sparse_session->Attend(0, q, k, v, out).ok());
  ASSERT_TRUE(dense_session->Attend(0, q, k, v, dense_out).ok());
  SparseOptions options;
  options.mode = SparseMode::kTriShape;
  options.block_size = 16;
  options.recent_size = 32;
  options.last_query_size = 8;
  auto kernel = sparse::SparseAttention::Create(options);
  ASSERT_TRUE(kernel.ok());
  auto expected = (*kernel)->Prefill(q[0], k[0], v[0], 0.25);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_LT((out[0] - *expected).abs().max().item<float>(), 1e-5);
  EXPECT_GT((out - dense_out).abs().max().item<float>(), 1e-3);  // sparse really skipped blocks
  EXPECT_LT(sparse_session->Stats().sparse_density, 1.0);
  // SnapKV's window rows are exact either way: same kept tokens.
  EXPECT_EQ(*sparse_session->Positions(0, 0, 0), *dense_session->Positions(0, 0, 0));
}

}  // namespace
}  // namespace attnkit
