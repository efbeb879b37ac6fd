// Ragged batches (Session::AttendRagged, Session::ResetSequence): one session holding sequences of
// different lengths, one prefilling while others decode or sit a step out, sequences retired and
// their slots reused, computes for each sequence exactly what a session of its own computes, and
// holds exactly the pages those sessions hold.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "session/session_testing.h"

namespace attnkit {
namespace {

constexpr int kLayers = 2, kHeads = 4, kKvHeads = 2, kDim = 16, kBatch = 3;

struct Variant {
  const char* name;
  const char* config;  // after the shape
  bool tensor_path;    // the device store's code on the CPU
};

std::unique_ptr<Session> MakeSession(const Variant& v, int batch) {
  const std::string text = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 4 " +
                           std::string("batch_size: ") + std::to_string(batch) + " " + v.config;
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  if (!options.ok()) return nullptr;
  auto session = v.tensor_path ? session::CreateTensorPathSessionForTesting(*options)
                               : Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  return session.ok() ? std::move(*session) : nullptr;
}

// One sequence's tokens of one step and layer.
struct Tokens {
  at::Tensor q, k, v;  // [1, H, n, d], [1, Hkv, n, d]
};

Tokens RandomTokens(int64_t n) {
  return {at::randn({1, kHeads, n, kDim}), at::randn({1, kKvHeads, n, kDim}),
          at::randn({1, kKvHeads, n, kDim})};
}

class RaggedTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    at::manual_seed(7);
    ragged_ = MakeSession(GetParam(), kBatch);
    ASSERT_NE(ragged_, nullptr);
    for (int b = 0; b < kBatch; ++b) {
      separate_.push_back(MakeSession(GetParam(), 1));
      ASSERT_NE(separate_.back(), nullptr);
    }
  }

  // One step: sequence b brings counts[b] tokens. The ragged call pads with NaN (never read);
  // each sequence's rows must equal its own session's output, the padding rows must be zeros,
  // and both sides must hold the same tokens, positions and bytes.
  void Step(const std::vector<int64_t>& counts) {
    const int64_t T = *std::max_element(counts.begin(), counts.end());
    for (int layer = 0; layer < kLayers; ++layer) {
      const float nan = std::nanf("");
      at::Tensor q = at::full({kBatch, kHeads, T, kDim}, nan);
      at::Tensor k = at::full({kBatch, kKvHeads, T, kDim}, nan);
      at::Tensor v = at::full({kBatch, kKvHeads, T, kDim}, nan);
      std::vector<at::Tensor> expected(kBatch);
      for (int b = 0; b < kBatch; ++b) {
        if (counts[b] == 0) continue;
        const Tokens t = RandomTokens(counts[b]);
        q[b].narrow(1, 0, counts[b]).copy_(t.q[0]);
        k[b].narrow(1, 0, counts[b]).copy_(t.k[0]);
        v[b].narrow(1, 0, counts[b]).copy_(t.v[0]);
        expected[b] = at::empty_like(t.q);
        const absl::Status s = separate_[b]->Attend(layer, t.q, t.k, t.v, expected[b]);
        ASSERT_TRUE(s.ok()) << s;
      }
      at::Tensor out = at::full_like(q, 5.f);
      const absl::Status s = ragged_->AttendRagged(layer, q, k, v, out, counts);
      ASSERT_TRUE(s.ok()) << s;
      for (int b = 0; b < kBatch; ++b) {
        if (counts[b] > 0) {
          const at::Tensor got = out[b].narrow(1, 0, counts[b]);
          EXPECT_TRUE(at::equal(got, expected[b][0]))
              << "step " << step_ << " layer " << layer << " sequence " << b << ": max diff "
              << (got - expected[b][0]).abs().max().item<float>();
        }
        if (counts[b] < T) {
          EXPECT_TRUE(at::equal(out[b].narrow(1, counts[b], T - counts[b]),
                                at::zeros({kHeads, T - counts[b], kDim})))
              << "padding rows of sequence " << b;
        }
      }
    }
    ++step_;
    ExpectSameState();
  }

  void ExpectSameState() {
    int64_t separate_bytes = 0;
    for (int b = 0; b < kBatch; ++b) {
      separate_bytes += separate_[b]->BytesHeld();
      EXPECT_EQ(*ragged_->NextPosition(b), *separate_[b]->NextPosition(0)) << "sequence " << b;
      for (int layer = 0; layer < kLayers; ++layer) {
        for (int h = 0; h < kKvHeads; ++h) {
          EXPECT_EQ(*ragged_->Positions(layer, b, h), *separate_[b]->Positions(layer, 0, h))
              << "step " << step_ << " layer " << layer << " sequence " << b << " kv head " << h;
        }
      }
    }
    EXPECT_EQ(ragged_->BytesHeld(), separate_bytes) << "step " << step_;
  }

  // An observe pass of `n` queries: slots that hold no token (`empty`) sit it out (NaN in their
  // query rows, never read; zeros in their output rows); the others' rows must equal their own
  // sessions' observe outputs, and the next steps then keep what those sessions keep.
  void Observe(int64_t n, const std::vector<bool>& empty) {
    for (int layer = 0; layer < kLayers; ++layer) {
      at::Tensor q = at::full({kBatch, kHeads, n, kDim}, std::nanf(""));
      at::Tensor out = at::full_like(q, 5.f);
      std::vector<at::Tensor> expected(kBatch);
      for (int b = 0; b < kBatch; ++b) {
        if (empty[b]) continue;
        const at::Tensor qb = at::randn({1, kHeads, n, kDim});
        q[b].copy_(qb[0]);
        expected[b] = at::empty_like(qb);
        const absl::Status s = separate_[b]->Observe(layer, qb, expected[b]);
        ASSERT_TRUE(s.ok()) << s;
      }
      const absl::Status s = ragged_->Observe(layer, q, out);
      ASSERT_TRUE(s.ok()) << s;
      for (int b = 0; b < kBatch; ++b) {
        if (empty[b]) {
          EXPECT_TRUE(at::equal(out[b], at::zeros_like(out[b]))) << "empty slot " << b;
        } else {
          EXPECT_TRUE(at::equal(out[b], expected[b][0]))
              << "observe, layer " << layer << " sequence " << b << ": max diff "
              << (out[b] - expected[b][0]).abs().max().item<float>();
        }
      }
    }
    ExpectSameState();
  }

  void Retire(int b) {
    ASSERT_TRUE(ragged_->ResetSequence(b).ok());
    separate_[b] = MakeSession(GetParam(), 1);
  }

  std::unique_ptr<Session> ragged_;
  std::vector<std::unique_ptr<Session>> separate_;
  int step_ = 0;
};

TEST_P(RaggedTest, EachSequenceComputesWhatItsOwnSessionComputes) {
  Step({20, 7, 0});  // two prompts; the third slot waits
  Step({1, 1, 13});  // two decode while the third prefills
  Step({1, 0, 1});
  for (int i = 0; i < 24; ++i) Step({1, 1, 1});
  Step({3, 1, 2});  // a chunk, a decode and a short chunk
  for (int i = 0; i < 6; ++i) Step({1, 1, 1});
}

TEST_P(RaggedTest, ARetiredSequenceFreesItsPagesAndItsSlotTakesANewOne) {
  Step({18, 11, 25});
  for (int i = 0; i < 10; ++i) Step({1, 1, 1});
  const int64_t before = ragged_->BytesHeld();
  Retire(1);
  ExpectSameState();  // the retired slot holds nothing, the others what they held
  EXPECT_LT(ragged_->BytesHeld(), before);
  EXPECT_EQ(*ragged_->NextPosition(1), 0);
  for (int layer = 0; layer < kLayers; ++layer) {
    EXPECT_TRUE(ragged_->Positions(layer, 1, 0)->empty());
  }
  Step({1, 0, 1});   // the slot is empty for a step
  Step({1, 16, 1});  // a new request's prompt
  for (int i = 0; i < 12; ++i) Step({1, 1, 1});
  Retire(0);
  Retire(2);
  Step({5, 1, 9});
  for (int i = 0; i < 4; ++i) Step({1, 1, 1});
}

TEST_P(RaggedTest, ObservePassesSkipEmptySlots) {
  Step({14, 0, 9});  // slot 1 never started
  Observe(3, {false, true, false});
  for (int i = 0; i < 6; ++i) Step({1, 0, 1});
  Step({1, 12, 1});
  Observe(2, {false, false, false});
  for (int i = 0; i < 4; ++i) Step({1, 1, 1});
  Retire(0);  // a retired slot sits out too
  Observe(4, {true, false, false});
  for (int i = 0; i < 6; ++i) Step({0, 1, 1});
  Step({10, 1, 1});
  for (int i = 0; i < 4; ++i) Step({1, 1, 1});
}

TEST_P(RaggedTest, AttendIsTheRaggedCallWithEveryCount) {
  // A step where every sequence brings every token takes the plain path: the same results.
  Step({12, 12, 12});
  for (int i = 0; i < 8; ++i) Step({1, 1, 1});
}

INSTANTIATE_TEST_SUITE_P(
    Stores, RaggedTest,
    ::testing::Values(
        Variant{"HostSnapKV",
                "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
                "intermediate_tokens: 8 recent_tokens: 4 window_size: 3 }",
                false},
        Variant{
            "HostH2OPerHeadAdaKV",
            "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
            "intermediate_tokens: 6 recent_tokens: 3 per_head: true budget { allocator: ADAKV } }",
            false},
        Variant{"HostInt8WindowScheduled",
                "kv_format { keys: INT8 values: INT8 residual_tokens: 4 } "
                "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
                "intermediate_tokens: 8 recent_tokens: 4 window_size: 2 "
                "schedule { interval_steps: 4 } }",
                false},
        Variant{"HostKeepEverything", "", false},
        Variant{"TensorPathSnapKV",
                "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
                "intermediate_tokens: 8 recent_tokens: 4 window_size: 3 }",
                true}),
    [](const ::testing::TestParamInfo<Variant>& info) { return std::string(info.param.name); });

class RaggedBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    session_ = MakeSession(Variant{"", "", false}, kBatch);
    ASSERT_NE(session_, nullptr);
  }
  absl::Status Call(int layer, int64_t T, const std::vector<int64_t>& counts) {
    at::Tensor q = at::randn({kBatch, kHeads, T, kDim});
    at::Tensor kv = at::randn({kBatch, kKvHeads, T, kDim});
    return session_->AttendRagged(layer, q, kv, kv, at::empty_like(q), counts);
  }
  std::unique_ptr<Session> session_;
};

TEST_F(RaggedBadInputTest, CountsAreCheckedAndTheSessionIsLeftAsItWas) {
  auto expect = [&](const absl::Status& s, const std::string& part) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(std::string(s.message()).find(part), std::string::npos) << s;
  };
  expect(Call(0, 4, {4, 4}), "new_tokens: expected one count per sequence (3), got 2");
  expect(Call(0, 4, {4, 5, 1}), "new_tokens: sequence 1 brings 5 tokens; expected 0 to 4");
  expect(Call(0, 4, {4, -1, 1}), "sequence 1 brings -1 tokens");
  expect(Call(0, 4, {0, 0, 0}), "new_tokens: every sequence brings 0 tokens");
  EXPECT_EQ(session_->BytesHeld(), 0);
  ASSERT_TRUE(Call(0, 4, {4, 2, 0}).ok());
  // Layer 1 of the step must take layer 0's counts.
  expect(Call(1, 4, {4, 2, 1}), "new_tokens: layer 1 of step 0 got 1 new tokens of sequence 2");
  expect(Call(1, 4, {4, 4, 4}), "layer 1 of step 0 got 4 new tokens of sequence 1, layer 0 got 2");
  // No reset partway through a step.
  const absl::Status reset = session_->ResetSequence(0);
  EXPECT_EQ(reset.code(), absl::StatusCode::kFailedPrecondition) << reset;
  ASSERT_TRUE(Call(1, 4, {4, 2, 0}).ok());
  EXPECT_EQ(session_->ResetSequence(3).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(session_->ResetSequence(-1).code(), absl::StatusCode::kInvalidArgument);
  // Padding may hold anything; the counted rows may not.
  at::Tensor q = at::randn({kBatch, kHeads, 2, kDim});
  at::Tensor kv = at::randn({kBatch, kKvHeads, 2, kDim});
  q[0][0][1][0] = NAN;
  EXPECT_TRUE(session_->AttendRagged(0, q, kv, kv, at::empty_like(q), {1, 1, 1}).ok());
  EXPECT_TRUE(session_->AttendRagged(1, q, kv, kv, at::empty_like(q), {1, 1, 1}).ok());
  const absl::Status nan = session_->AttendRagged(0, q, kv, kv, at::empty_like(q), {2, 1, 1});
  EXPECT_EQ(nan.code(), absl::StatusCode::kInvalidArgument) << nan;
  EXPECT_NE(std::string(nan.message()).find("q: contains NaN"), std::string::npos) << nan;
}

}  // namespace
}  // namespace attnkit
