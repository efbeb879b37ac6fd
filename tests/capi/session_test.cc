// The session and eviction-policy C ABI: ownership, argument checks and error codes as a C host
// sees them (linked against libattnkit only).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/attnkit.h"
#include "dlpack_util.h"

namespace {

using attnkit::testing::DLView;

struct Status {
  attnkit_status* s;
  ~Status() { attnkit_status_free(s); }
  attnkit_status_code code() const { return attnkit_status_get_code(s); }
  std::string message() const { return attnkit_status_get_message(s); }
};

const char kConfig[] =
    "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
    "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
    "intermediate_tokens: 2 recent_tokens: 1 }";

attnkit_session* NewSession() {
  attnkit_session* session = nullptr;
  Status st{attnkit_session_create_from_text(kConfig, std::strlen(kConfig), &session)};
  EXPECT_EQ(st.s, nullptr) << st.message();
  return session;
}

TEST(SessionCapiTest, CreatesFromBytesAndTextAndRejectsBadConfigs) {
  attnkit_buffer* bytes = nullptr;
  Status conv{
      attnkit_config_text_to_binary(ATTNKIT_CONFIG_SESSION, kConfig, std::strlen(kConfig), &bytes)};
  ASSERT_EQ(conv.s, nullptr);
  attnkit_session* session = nullptr;
  Status created{attnkit_session_create(bytes->data, bytes->size, &session)};
  EXPECT_EQ(created.s, nullptr);
  EXPECT_NE(session, nullptr);
  attnkit_session_free(session);
  attnkit_buffer_free(bytes);

  const char bad[] = "num_layers: 1 num_heads: 4 num_kv_heads: 3 head_dim: 8";
  session = reinterpret_cast<attnkit_session*>(0x1);
  Status rejected{attnkit_session_create_from_text(bad, std::strlen(bad), &session)};
  EXPECT_EQ(rejected.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_EQ(rejected.message().rfind("num_kv_heads:", 0), 0u) << rejected.message();
  EXPECT_EQ(session, nullptr);
  const char garbage[] = "\xff\x01\x02 not a proto";
  Status garbled{attnkit_session_create(garbage, sizeof(garbage), &session)};
  EXPECT_EQ(garbled.code(), ATTNKIT_INVALID_ARGUMENT);
  Status null_out{attnkit_session_create_from_text(kConfig, std::strlen(kConfig), nullptr)};
  EXPECT_EQ(null_out.code(), ATTNKIT_INVALID_ARGUMENT);
  attnkit_session_free(nullptr);
}

TEST(SessionCapiTest, AttendChecksEveryTensor) {
  attnkit_session* session = NewSession();
  at::Tensor q = at::randn({1, 4, 3, 8}), k = at::randn({1, 2, 3, 8}), v = at::randn({1, 2, 3, 8});
  at::Tensor out = at::empty({1, 4, 3, 8});
  DLView qv(q), kv(k), vv(v), ov(out);
  at::Tensor q_long = at::ones({1, 4, 3, 8}, at::kLong);
  DLView qlv(q_long);
  Status wrong_dtype{attnkit_session_attend(session, 0, qlv, kv, vv, ov)};
  EXPECT_EQ(wrong_dtype.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(wrong_dtype.message().find("q: expected float32, float16 or bfloat16"),
            std::string::npos)
      << wrong_dtype.message();
  Status null_v{attnkit_session_attend(session, 0, qv, kv, nullptr, ov)};
  EXPECT_NE(null_v.message().find("v: must not be NULL"), std::string::npos);
  at::Tensor overlapping = at::empty({1, 4, 1, 8}).expand({1, 4, 3, 8});
  DLView overlap_view(overlapping);
  Status overlap{attnkit_session_attend(session, 0, qv, kv, vv, overlap_view)};
  EXPECT_NE(overlap.message().find("out: output strides"), std::string::npos) << overlap.message();
  Status null_session{attnkit_session_attend(nullptr, 0, qv, kv, vv, ov)};
  EXPECT_EQ(null_session.code(), ATTNKIT_INVALID_ARGUMENT);

  Status ok{attnkit_session_attend(session, 0, qv, kv, vv, ov)};
  EXPECT_EQ(ok.s, nullptr) << ok.message();
  attnkit_buffer* stats = nullptr;
  Status st{attnkit_session_stats(session, &stats)};
  ASSERT_EQ(st.s, nullptr);
  EXPECT_GT(stats->size, 0u);
  attnkit_buffer_free(stats);
  int64_t held = 0;
  Status bytes{attnkit_session_bytes_held(session, &held)};
  EXPECT_GT(held, 0);
  attnkit_int64_array* positions = nullptr;
  Status pos{attnkit_session_positions(session, 0, 0, 1, &positions)};
  ASSERT_EQ(pos.s, nullptr);
  EXPECT_EQ(positions->size, 3u);
  attnkit_int64_array_free(positions);
  Status bad_head{attnkit_session_positions(session, 0, 0, 2, &positions)};
  EXPECT_NE(bad_head.message().find("kv_head"), std::string::npos);
  Status reset{attnkit_session_reset(session)};
  EXPECT_EQ(reset.s, nullptr);
  Status held_after{attnkit_session_bytes_held(session, &held)};
  EXPECT_EQ(held, 0);
  attnkit_session_free(session);
}

// Observe-only calls through the C ABI: every query over the whole cache (plain ATen reference),
// nothing appended, NULL output accepted, and the observed queries decide what the first decode
// step keeps.
TEST(SessionCapiTest, ObserveAttendsTheCacheAndAppendsNothing) {
  const char config[] =
      "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
      "intermediate_tokens: 2 recent_tokens: 1 defer_eviction_to_decode: true }";
  at::manual_seed(5);
  at::Tensor q = at::randn({1, 4, 10, 8}), k = at::randn({1, 2, 10, 8}),
             v = at::randn({1, 2, 10, 8});
  // The question aims every head at token 6's key.
  at::Tensor question =
      k.select(2, 6).repeat_interleave(2, 1).unsqueeze(2).mul(20).repeat({1, 1, 3, 1});
  at::Tensor step_q = at::zeros({1, 4, 1, 8}), step_k = at::randn({1, 2, 1, 8});
  at::Tensor step_v = at::randn({1, 2, 1, 8});
  std::vector<int64_t> kept[2];
  for (int observe = 0; observe < 2; ++observe) {
    attnkit_session* session = nullptr;
    Status created{attnkit_session_create_from_text(config, std::strlen(config), &session)};
    ASSERT_EQ(created.s, nullptr) << created.message();
    at::Tensor out = at::empty({1, 4, 10, 8});
    DLView qv(q), kv(k), vv(v), ov(out);
    Status prompt{attnkit_session_attend(session, 0, qv, kv, vv, ov)};
    ASSERT_EQ(prompt.s, nullptr) << prompt.message();
    int64_t held_before = 0, held_after = 0;
    attnkit_session_bytes_held(session, &held_before);
    if (observe == 1) {
      at::Tensor observed = at::empty({1, 4, 3, 8});
      DLView question_view(question), observed_view(observed);
      Status st{attnkit_session_observe(session, 0, question_view, observed_view)};
      ASSERT_EQ(st.s, nullptr) << st.message();
      at::Tensor weights = at::softmax(
          at::matmul(question, k.repeat_interleave(2, 1).transpose(-1, -2)).div(std::sqrt(8.0)),
          -1);
      at::Tensor expected = at::matmul(weights, v.repeat_interleave(2, 1));
      EXPECT_LT((observed - expected).abs().max().item<float>(), 1e-5);
      Status no_out{attnkit_session_observe(session, 0, question_view, nullptr)};
      EXPECT_EQ(no_out.s, nullptr) << no_out.message();
      Status bad_layer{attnkit_session_observe(session, 1, question_view, nullptr)};
      EXPECT_EQ(bad_layer.code(), ATTNKIT_INVALID_ARGUMENT);
      EXPECT_NE(bad_layer.message().find("layer: must be in [0, 1)"), std::string::npos)
          << bad_layer.message();
      Status null_q{attnkit_session_observe(session, 0, nullptr, nullptr)};
      EXPECT_NE(null_q.message().find("q: must not be NULL"), std::string::npos)
          << null_q.message();
    }
    attnkit_session_bytes_held(session, &held_after);
    EXPECT_EQ(held_after, held_before);
    int64_t next = 0;
    attnkit_session_next_position(session, 0, &next);
    EXPECT_EQ(next, 10);
    at::Tensor step_out = at::empty({1, 4, 1, 8});
    DLView sq(step_q), sk(step_k), sv(step_v), so(step_out);
    Status step{attnkit_session_attend(session, 0, sq, sk, sv, so)};
    ASSERT_EQ(step.s, nullptr) << step.message();
    attnkit_int64_array* positions = nullptr;
    Status pos{attnkit_session_positions(session, 0, 0, 0, &positions)};
    ASSERT_EQ(pos.s, nullptr);
    kept[observe].assign(positions->data, positions->data + positions->size);
    attnkit_int64_array_free(positions);
    attnkit_session_free(session);
  }
  EXPECT_EQ(kept[1].size(), 4u);
  EXPECT_NE(std::find(kept[1].begin(), kept[1].end(), 6), kept[1].end());
  EXPECT_EQ(std::find(kept[0].begin(), kept[0].end(), 6), kept[0].end());
}

// Save, load and fork through the C ABI: the loaded and the forked session give the original's
// outputs bit for bit; a bad blob is a clear status and changes nothing.
TEST(SessionCapiTest, SaveLoadAndForkRoundTripBitForBit) {
  at::manual_seed(9);
  auto attend = [](attnkit_session* s, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v) {
    at::Tensor out = at::empty_like(q);
    DLView qv(q), kv(k), vv(v), ov(out);
    Status st{attnkit_session_attend(s, 0, qv, kv, vv, ov)};
    EXPECT_EQ(st.s, nullptr) << st.message();
    return out;
  };
  attnkit_session* original = NewSession();
  attend(original, at::randn({1, 4, 6, 8}), at::randn({1, 2, 6, 8}), at::randn({1, 2, 6, 8}));
  attnkit_buffer* blob = nullptr;
  Status saved{attnkit_session_save(original, &blob)};
  ASSERT_EQ(saved.s, nullptr) << saved.message();
  attnkit_session* loaded = NewSession();
  Status load{attnkit_session_load(loaded, blob->data, blob->size)};
  ASSERT_EQ(load.s, nullptr) << load.message();
  attnkit_session* fork = nullptr;
  Status forked{attnkit_session_fork(original, &fork)};
  ASSERT_EQ(forked.s, nullptr) << forked.message();
  for (int step = 0; step < 6; ++step) {  // the budget is 4 tokens: every step evicts
    at::Tensor q = at::randn({1, 4, 1, 8}), k = at::randn({1, 2, 1, 8}),
               v = at::randn({1, 2, 1, 8});
    const at::Tensor want = attend(original, q, k, v);
    EXPECT_TRUE(at::equal(attend(loaded, q, k, v), want)) << "step " << step;
    EXPECT_TRUE(at::equal(attend(fork, q, k, v), want)) << "step " << step;
  }
  // Truncated: a clear status, and the session still saves what it saved before.
  attnkit_buffer* before = nullptr;
  Status again{attnkit_session_save(loaded, &before)};
  ASSERT_EQ(again.s, nullptr);
  Status truncated{attnkit_session_load(loaded, blob->data, blob->size - 1)};
  EXPECT_EQ(truncated.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(truncated.message().find("blob: truncated"), std::string::npos) << truncated.message();
  attnkit_buffer* after = nullptr;
  Status after_st{attnkit_session_save(loaded, &after)};
  ASSERT_EQ(after_st.s, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(before->data), before->size),
            std::string(reinterpret_cast<char*>(after->data), after->size));
  Status null_blob{attnkit_session_load(loaded, nullptr, 10)};
  EXPECT_NE(null_blob.message().find("blob: must not be NULL"), std::string::npos);
  Status null_out{attnkit_session_fork(original, nullptr)};
  EXPECT_EQ(null_out.code(), ATTNKIT_INVALID_ARGUMENT);
  for (attnkit_buffer* b : {blob, before, after}) attnkit_buffer_free(b);
  for (attnkit_session* s : {original, loaded, fork}) attnkit_session_free(s);
}

// Ratio mode through the C ABI: a session keeps int(n * (1 - r)) of the n tokens it saw (0.3 of
// 90: 62, kvpress's rounding), a policy object the same share of the cache it is given; the
// config's field path names a bad ratio.
TEST(SessionCapiTest, RatioModeKeepsTheShareOfTheTokensSeen) {
  const char config[] =
      "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN "
      "schedule { compression_ratio: 0.3 } }";
  attnkit_session* session = nullptr;
  Status created{attnkit_session_create_from_text(config, std::strlen(config), &session)};
  ASSERT_EQ(created.s, nullptr) << created.message();
  at::Tensor q = at::randn({1, 4, 90, 8}), k = at::randn({1, 2, 90, 8}),
             v = at::randn({1, 2, 90, 8});
  at::Tensor out = at::empty({1, 4, 90, 8});
  DLView qv(q), kv(k), vv(v), ov(out);
  Status prompt{attnkit_session_attend(session, 0, qv, kv, vv, ov)};
  ASSERT_EQ(prompt.s, nullptr) << prompt.message();
  attnkit_int64_array* positions = nullptr;
  Status pos{attnkit_session_positions(session, 0, 0, 0, &positions)};
  ASSERT_EQ(pos.s, nullptr);
  EXPECT_EQ(positions->size, 62u);
  attnkit_int64_array_free(positions);
  attnkit_session_free(session);

  const char policy_config[] =
      "enabled: true algorithm: KNORM granularity: PER_TOKEN schedule { compression_ratio: 0.55 }";
  attnkit_eviction_policy* policy = nullptr;
  Status made{attnkit_eviction_policy_create_from_text(policy_config, std::strlen(policy_config), 1,
                                                       4, 2, &policy)};
  ASSERT_EQ(made.s, nullptr) << made.message();
  at::Tensor keys = at::randn({2, 100, 8});
  DLView keys_view(keys);
  const int64_t lengths[] = {100};
  attnkit_kept_positions* kept = nullptr;
  Status selected{attnkit_eviction_policy_select(policy, 0, keys_view, lengths, 1, &kept)};
  ASSERT_EQ(selected.s, nullptr) << selected.message();
  size_t size = 0;
  attnkit_kept_positions_row(kept, 0, &size);
  EXPECT_EQ(size, 44u);  // int(100 * (1 - 0.55)) in double
  attnkit_kept_positions_free(kept);
  attnkit_eviction_policy_free(policy);

  const char bad[] =
      "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 "
      "eviction { enabled: true algorithm: H2O schedule { compression_ratio: 1.5 } }";
  Status rejected{attnkit_session_create_from_text(bad, std::strlen(bad), &session)};
  EXPECT_EQ(rejected.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_EQ(rejected.message().rfind("eviction.schedule.compression_ratio: must be in [0, 1)", 0),
            0u)
      << rejected.message();
}

// Continuous batching through the C ABI: a batch-2 session where one sequence prefills while the
// other decodes, a retired sequence's slot reused; each sequence's rows equal a batch-1 session's.
TEST(SessionCapiTest, RaggedCallsAndRetiredSequencesMatchSeparateSessions) {
  const std::string shape = "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 8 page_size: 4 ";
  const std::string policy =
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 1 "
      "intermediate_tokens: 4 recent_tokens: 2 window_size: 2 }";
  auto create = [&](int batch) {
    const std::string text = shape + "batch_size: " + std::to_string(batch) + " " + policy;
    attnkit_session* s = nullptr;
    Status st{attnkit_session_create_from_text(text.data(), text.size(), &s)};
    EXPECT_EQ(st.s, nullptr) << st.message();
    return s;
  };
  attnkit_session* ragged = create(2);
  attnkit_session* own[2] = {create(1), create(1)};
  at::manual_seed(3);
  auto step = [&](std::vector<int64_t> counts) {
    const int64_t T = std::max(counts[0], counts[1]);
    at::Tensor q = at::full({2, 4, T, 8}, NAN), k = at::full({2, 2, T, 8}, NAN);
    at::Tensor v = at::full({2, 2, T, 8}, NAN), out = at::empty({2, 4, T, 8});
    at::Tensor expected[2];
    for (int b = 0; b < 2; ++b) {
      if (counts[b] == 0) continue;
      at::Tensor qb = at::randn({1, 4, counts[b], 8}), kb = at::randn({1, 2, counts[b], 8});
      at::Tensor vb = at::randn({1, 2, counts[b], 8});
      q[b].narrow(1, 0, counts[b]).copy_(qb[0]);
      k[b].narrow(1, 0, counts[b]).copy_(kb[0]);
      v[b].narrow(1, 0, counts[b]).copy_(vb[0]);
      expected[b] = at::empty_like(qb);
      DLView qv(qb), kv(kb), vv(vb), ov(expected[b]);
      Status st{attnkit_session_attend(own[b], 0, qv, kv, vv, ov)};
      ASSERT_EQ(st.s, nullptr) << st.message();
    }
    DLView qv(q), kv(k), vv(v), ov(out);
    Status st{attnkit_session_attend_ragged(ragged, 0, qv, kv, vv, ov, counts.data(), 2)};
    ASSERT_EQ(st.s, nullptr) << st.message();
    int64_t own_bytes = 0;
    for (int b = 0; b < 2; ++b) {
      if (counts[b] > 0) {
        EXPECT_TRUE(at::equal(out[b].narrow(1, 0, counts[b]), expected[b][0])) << "sequence " << b;
      }
      if (counts[b] < T) {
        EXPECT_EQ(out[b].narrow(1, counts[b], T - counts[b]).abs().sum().item<float>(), 0.f);
      }
      int64_t bytes = 0;
      Status held{attnkit_session_bytes_held(own[b], &bytes)};
      own_bytes += bytes;
    }
    int64_t bytes = 0;
    Status held{attnkit_session_bytes_held(ragged, &bytes)};
    EXPECT_EQ(bytes, own_bytes);
  };
  step({9, 0});
  step({1, 12});
  for (int i = 0; i < 6; ++i) step({1, 1});
  Status retired{attnkit_session_reset_sequence(ragged, 0)};
  ASSERT_EQ(retired.s, nullptr) << retired.message();
  attnkit_session_free(own[0]);
  own[0] = create(1);
  int64_t next = -1;
  Status position{attnkit_session_next_position(ragged, 0, &next)};
  EXPECT_EQ(next, 0);
  step({5, 1});
  for (int i = 0; i < 4; ++i) step({1, 1});

  // Bad counts: clear statuses naming new_tokens.
  at::Tensor q = at::randn({2, 4, 2, 8}), kv = at::randn({2, 2, 2, 8}), out = at::empty_like(q);
  DLView qv(q), kvv(kv), ov(out);
  const int64_t too_many[] = {3, 1};
  Status over{attnkit_session_attend_ragged(ragged, 0, qv, kvv, kvv, ov, too_many, 2)};
  EXPECT_EQ(over.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(over.message().find("new_tokens: sequence 0 brings 3 tokens"), std::string::npos)
      << over.message();
  Status null_counts{attnkit_session_attend_ragged(ragged, 0, qv, kvv, kvv, ov, nullptr, 2)};
  EXPECT_NE(null_counts.message().find("new_tokens: must not be NULL"), std::string::npos);
  Status short_counts{attnkit_session_attend_ragged(ragged, 0, qv, kvv, kvv, ov, too_many, 1)};
  EXPECT_NE(short_counts.message().find("one count per sequence (2), got 1"), std::string::npos);
  Status bad_sequence{attnkit_session_reset_sequence(ragged, 2)};
  EXPECT_EQ(bad_sequence.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(bad_sequence.message().find("sequence: must be in [0, 2), got 2"), std::string::npos)
      << bad_sequence.message();
  attnkit_session_free(ragged);
  attnkit_session_free(own[0]);
  attnkit_session_free(own[1]);
}

TEST(EvictionPolicyCapiTest, ObserveSelectAndKeptPositions) {
  const char config[] =
      "enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 1 "
      "intermediate_tokens: 2 recent_tokens: 1";
  attnkit_eviction_policy* policy = nullptr;
  Status created{
      attnkit_eviction_policy_create_from_text(config, std::strlen(config), 1, 2, 1, &policy)};
  ASSERT_EQ(created.s, nullptr) << created.message();
  EXPECT_EQ(attnkit_eviction_policy_needs_keys(policy), 0);
  EXPECT_EQ(attnkit_eviction_policy_per_head(policy), 0);
  int64_t budget = 0;
  Status b{attnkit_eviction_policy_layer_budget(policy, 0, &budget)};
  EXPECT_EQ(budget, 4);
  Status bad_layer{attnkit_eviction_policy_layer_budget(policy, 1, &budget)};
  EXPECT_EQ(bad_layer.code(), ATTNKIT_INVALID_ARGUMENT);

  at::Tensor attention = at::softmax(at::randn({1, 2, 6, 6}), -1);
  DLView av(attention);
  Status observed{attnkit_eviction_policy_observe(policy, 0, av, nullptr, 0)};
  ASSERT_EQ(observed.s, nullptr) << observed.message();
  at::Tensor flat = at::ones({6, 6});
  DLView fv(flat);
  Status wrong_rank{attnkit_eviction_policy_observe(policy, 0, fv, nullptr, 0)};
  EXPECT_NE(wrong_rank.message().find("attention: expected rank 4"), std::string::npos);
  const int64_t length = 6;
  attnkit_kept_positions* kept = nullptr;
  Status selected{attnkit_eviction_policy_select(policy, 0, nullptr, &length, 1, &kept)};
  ASSERT_EQ(selected.s, nullptr) << selected.message();
  ASSERT_EQ(attnkit_kept_positions_num_rows(kept), 1u);
  size_t n = 0;
  const int64_t* row = attnkit_kept_positions_row(kept, 0, &n);
  ASSERT_EQ(n, 4u);
  EXPECT_EQ(row[0], 0);
  EXPECT_EQ(row[3], 5);
  EXPECT_EQ(attnkit_kept_positions_row(kept, 1, &n), nullptr);
  EXPECT_EQ(n, 0u);
  attnkit_kept_positions_free(kept);
  Status null_lengths{attnkit_eviction_policy_select(policy, 0, nullptr, nullptr, 1, &kept)};
  EXPECT_NE(null_lengths.message().find("lengths"), std::string::npos);
  attnkit_kept_positions_free(nullptr);
  attnkit_eviction_policy_free(policy);
  attnkit_eviction_policy_free(nullptr);
}

}  // namespace
