// The host store with compressed pages (kv_format): what it holds (each format's rounding, the
// residual window in the session dtype) against rows computed here with plain ATen, attention
// over what it holds, compaction and RoPE re-rotation on int8 pages, and sessions evicting
// (SnapKV, H2O, AdaKV per-head budgets) on int8 pages; formats a store cannot hold are refused at
// creation. KIVI's INT4/INT2 pages: kivi_test.cc.
#include <cmath>
#include <limits>
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "cpu/quest.h"
#include "session/kv_store.h"
#include "store_testing.h"
#include "session/rope.h"
#include "session/session_testing.h"

namespace attnkit::session {
namespace {

using testing::Dense;
using testing::Host;

// Symmetric int8 per token and group (ATen): the rows the pages give back.
at::Tensor Int8Held(const at::Tensor& x, int group) {
  const int64_t n = x.size(0), d = x.size(1);
  const at::Tensor g = x.reshape({n, d / group, group});
  const at::Tensor s = (std::get<0>(g.abs().max(-1)) / 127.0)
                           .clamp_max(65504.0)
                           .to(at::kHalf)
                           .to(at::kFloat)
                           .unsqueeze(-1);
  const at::Tensor q =
      at::where(s > 0, at::round(g / at::where(s > 0, s, at::ones_like(s))), at::zeros_like(g))
          .clamp(-127, 127);
  return (q * s).reshape({n, d});
}

// Rows [n, d] as a page of `type` holds them, after rounding to the session dtype `storage`.
at::Tensor Held(const at::Tensor& x, KvDataType type, at::ScalarType storage, int group) {
  const at::Tensor s = x.to(storage).to(at::kFloat);
  switch (type) {
    case KvDataType::kFloat16:
      return s.to(at::kHalf).to(at::kFloat);
    case KvDataType::kBFloat16:
      return s.to(at::kBFloat16).to(at::kFloat);
    case KvDataType::kInt8:
      return Int8Held(s, group);
    default:
      return s;
  }
}

SessionOptions Shape(KvDataType keys, KvDataType values, int residual, DType dtype) {
  SessionOptions o;
  o.num_layers = 1;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 64;
  o.batch_size = 1;
  o.page_size = 4;
  o.dtype = dtype;
  o.scale = 1.0 / 8.0;
  o.kv_format.keys = keys;
  o.kv_format.values = values;
  o.kv_format.group_size = keys == KvDataType::kInt8 || values == KvDataType::kInt8 ? 16 : 0;
  o.kv_format.residual_tokens = residual;
  return o;
}

// The held rows of all `L` tokens of rows [L, d]: the last `residual` in the session dtype, the
// others in `type`.
at::Tensor HeldAll(const at::Tensor& x, int64_t residual, const SessionOptions& o, bool values) {
  const int64_t L = x.size(0), window = std::min(L, residual);
  const at::ScalarType storage = StorageType(o.dtype);
  const KvDataType type = values ? o.value_type() : o.key_type();
  return at::cat({Held(x.narrow(0, 0, L - window), type, storage, o.kv_group_size()),
                  x.narrow(0, L - window, window).to(storage).to(at::kFloat)});
}

// What a call of T queries attends to: the rows held, except that a prefill (more queries than the
// paged kernel's 16) reads its own T tokens as given (in the session dtype), not as stored.
at::Tensor AttendedRows(const at::Tensor& held, const at::Tensor& x, int64_t T,
                        const SessionOptions& o) {
  if (T <= 16) return held;
  const int64_t L = x.size(0);
  return at::cat(
      {held.narrow(0, 0, L - T), x.narrow(0, L - T, T).to(StorageType(o.dtype)).to(at::kFloat)});
}

struct FormatCase {
  KvDataType keys, values;
  int residual;
  DType dtype;
};

TEST(QuantizedStore, HoldsEachFormatAndAttendsOverWhatItHolds) {
  const FormatCase cases[] = {
      {KvDataType::kInt8, KvDataType::kInt8, 5, DType::kFloat32},
      {KvDataType::kInt8, KvDataType::kInt8, 0, DType::kFloat32},
      {KvDataType::kBFloat16, KvDataType::kInt8, 0, DType::kFloat32},
      {KvDataType::kInt8, KvDataType::kFloat16, 3, DType::kBFloat16},
      {KvDataType::kFloat16, KvDataType::kBFloat16, 0, DType::kFloat32},
      {KvDataType::kInt8, KvDataType::kDefault, 6, DType::kFloat16},
  };
  for (const FormatCase& c : cases) {
    const SessionOptions o = Shape(c.keys, c.values, c.residual, c.dtype);
    SCOPED_TRACE(std::string("keys ") + KvDataTypeName(o.key_type()) + " values " +
                 KvDataTypeName(o.value_type()) + " residual " + std::to_string(c.residual));
    at::manual_seed(21);
    auto store = Host(o);
    at::Tensor k = at::randn({1, 2, 20, 64}), v = at::randn({1, 2, 20, 64});
    store->Append(0, k, v, {0});
    for (int step = 0; step <= 9; ++step) {
      const int64_t T = step == 0 ? 20 : (step == 5 ? 3 : 1);  // a prefill, then decode calls
      if (step > 0) {
        const at::Tensor k1 = at::randn({1, 2, T, 64}), v1 = at::randn({1, 2, T, 64});
        store->Append(0, k1, v1, {k.size(2)});
        k = at::cat({k, k1}, 2);
        v = at::cat({v, v1}, 2);
      }
      const at::Tensor q = at::randn({1, 4, T, 64});
      auto r = store->Attend(0, q, 0, false);
      ASSERT_TRUE(r.ok()) << r.status();
      const at::Tensor keys = store->SequenceKeys(0, 0);
      for (int64_t h = 0; h < 2; ++h) {
        EXPECT_EQ(store->head(0, h).residual, std::min<int64_t>(c.residual, k.size(2)));
        const at::Tensor kh = HeldAll(k[0][h], c.residual, o, false);
        const at::Tensor vh = HeldAll(v[0][h], c.residual, o, true);
        ASSERT_TRUE(at::equal(keys[h], kh)) << "step " << step << " head " << h;
        const at::Tensor expect = Dense(q[0].narrow(0, 2 * h, 2), AttendedRows(kh, k[0][h], T, o),
                                        AttendedRows(vh, v[0][h], T, o), o.scale);
        EXPECT_TRUE(at::allclose(r->out[0].narrow(0, 2 * h, 2), expect, 1e-4, 1e-5))
            << "step " << step << " head " << h << " max diff "
            << (r->out[0].narrow(0, 2 * h, 2) - expect).abs().max().item<float>();
      }
    }
  }
}

// Quest over quantized pages: each decode step reads the main pages QuestReferencePages picks
// over the keys as stored (dequantized), chunked by the main page, and always the residual
// window; the output is exact attention over those tokens as held. Page summaries follow the
// rows that compaction moves and re-quantizes (KIVI keys).
TEST(QuantizedStore, QuestChoosesAmongQuantizedPages) {
  struct QuestCase {
    KvDataType keys, values;
    int residual, group;
    int64_t prompt, budget;
  };
  const QuestCase cases[] = {
      {KvDataType::kInt8, KvDataType::kInt8, 6, 16, 60, 12},
      {KvDataType::kInt8, KvDataType::kInt8, 0, 16, 60, 16},
      {KvDataType::kInt4, KvDataType::kInt4, 8, 16, 120, 48},
  };
  for (const QuestCase& c : cases) {
    SessionOptions o = Shape(c.keys, c.values, c.residual, DType::kFloat32);
    o.kv_format.group_size = c.group;
    o.sparse_decode.token_budget = c.budget;
    SCOPED_TRACE(std::string("keys ") + KvDataTypeName(o.key_type()) + " residual " +
                 std::to_string(c.residual));
    ASSERT_TRUE(ValidateSessionOptions(o).ok());
    at::manual_seed(31);
    auto store = Host(o);
    const at::Tensor k0 = at::randn({1, 2, c.prompt, 64}), v0 = at::randn({1, 2, c.prompt, 64});
    store->Append(0, k0, v0, {0});
    ASSERT_TRUE(store->Attend(0, at::randn({1, 4, c.prompt, 64}), 0, false).ok());
    int64_t length = c.prompt;
    for (int step = 0; step < 8; ++step) {
      if (step == 4) {  // compaction: every other token of the first half goes
        for (int64_t h = 0; h < 2; ++h) {
          std::vector<int64_t> kept;
          for (int64_t i = 0; i < length; ++i) {
            if (i >= length / 2 || i % 2 == 0) kept.push_back(i);
          }
          store->Keep(0, h, kept);
        }
        store->FinishKeep(0);
        length = store->head(0, 0).length;
      }
      store->Append(0, at::randn({1, 2, 1, 64}), at::randn({1, 2, 1, 64}), {c.prompt + step});
      ++length;
      const at::Tensor q = at::randn({1, 4, 1, 64}).mul(2.0);
      auto r = store->Attend(0, q, 0, false);
      ASSERT_TRUE(r.ok()) << r.status();
      const at::Tensor keys = store->SequenceKeys(0, 0), values = store->SequenceValues(0, 0);
      for (int64_t h = 0; h < 2; ++h) {
        const int64_t L = store->head(0, h).length, window = store->head(0, h).residual;
        const int64_t main = L - window;
        const int64_t page = o.key_type() == KvDataType::kInt4 ? c.group : o.page_size;
        const at::Tensor qg = q[0].narrow(0, 2 * h, 2).select(1, 0);  // [2, d]
        const at::Tensor pages =
            kernels::QuestReferencePages(qg, keys[h].narrow(0, 0, main), page, c.budget, 0, 0);
        const at::Tensor read = at::cat(
            {pages.repeat_interleave(page).narrow(0, 0, main), at::ones({window}, at::kBool)});
        at::Tensor scores = at::matmul(qg, keys[h].narrow(0, 0, L).t()) * o.scale;
        scores.masked_fill_(read.logical_not().unsqueeze(0), -INFINITY);
        const at::Tensor expect = at::matmul(at::softmax(scores, -1), values[h].narrow(0, 0, L));
        const at::Tensor got = r->out[0].narrow(0, 2 * h, 2).select(1, 0);
        EXPECT_TRUE(at::allclose(got, expect, 1e-4, 1e-5))
            << "step " << step << " head " << h << " max diff "
            << (got - expect).abs().max().item<float>();
        EXPECT_LT(read.sum().item<int64_t>(), L);  // pages were skipped
      }
    }
    EXPECT_GT(store->sparse_decode_tokens_held(), store->sparse_decode_tokens_read());
  }
}

TEST(QuantizedStore, BytesFollowTheFormats) {
  // 64 channels, groups of 16: an int8 row is 64 bytes + 4 float16 scales = 72 bytes.
  const SessionOptions o = Shape(KvDataType::kInt8, KvDataType::kBFloat16, 4, DType::kFloat32);
  auto store = Host(o);
  store->Append(0, at::randn({1, 2, 12, 64}), at::randn({1, 2, 12, 64}), {0});
  // Per kv head: 8 tokens in 2 main pages of 4 x (72 + 128) bytes, 4 in one float32 window page
  // of 4 x (256 + 256) bytes.
  EXPECT_EQ(store->HeadBytes(0, 0), 2 * 4 * (72 + 128) + 4 * 512);
  EXPECT_EQ(store->LayerBytes(0), 2 * store->HeadBytes(0, 0));
  store->Clear();
  EXPECT_EQ(store->BytesHeld(), 0);
  EXPECT_GT(store->BytesReserved(), 0);
}

TEST(QuantizedStore, KeepCompactsInt8PagesAndTheWindowWithoutRequantizing) {
  const SessionOptions o = Shape(KvDataType::kInt8, KvDataType::kInt8, 6, DType::kFloat32);
  at::manual_seed(8);
  auto store = Host(o);
  const at::Tensor k = at::randn({1, 2, 30, 64}), v = at::randn({1, 2, 30, 64});
  store->Append(0, k, v, {0});
  const int64_t before = store->HeadBytes(0, 1);
  const at::Tensor keys_before = store->SequenceKeys(0, 0)[1].clone();
  // Main tokens (< 24) and window tokens (24..29) kept.
  const std::vector<int64_t> kept{0, 2, 3, 9, 17, 23, 24, 27, 29};
  store->Keep(0, 1, kept);
  store->FinishKeep(0);
  const HeadCache& head = store->head(0, 1);
  EXPECT_EQ(head.length, 9);
  EXPECT_EQ(head.residual, 3);
  EXPECT_EQ(head.origin, kept);
  EXPECT_LT(store->HeadBytes(0, 1), before);
  const at::Tensor index = at::tensor(kept);
  EXPECT_TRUE(
      at::equal(store->SequenceKeys(0, 0)[1].narrow(0, 0, 9), keys_before.index_select(0, index)));
  // Decode after the compaction: the window fills up again, its oldest tokens move to int8 pages.
  at::Tensor kh = keys_before.index_select(0, index);
  at::Tensor vh = HeldAll(v[0][1], 6, o, true).index_select(0, index);
  int64_t quantized = 9 - 3;  // tokens before this index are in int8 pages
  for (int step = 0; step < 6; ++step) {
    const at::Tensor k1 = at::randn({1, 2, 1, 64}), v1 = at::randn({1, 2, 1, 64});
    store->Append(0, k1, v1, {30 + step});
    kh = at::cat({kh, k1[0][1]});
    vh = at::cat({vh, v1[0][1]});
    const at::Tensor q = at::randn({1, 4, 1, 64});
    auto r = store->Attend(0, q, 1, true);
    ASSERT_TRUE(r.ok()) << r.status();
    // The window holds min(6, ...) newest tokens in float32; older ones are quantized once.
    const int64_t L = kh.size(0), window = store->head(0, 1).residual;
    EXPECT_EQ(window, std::min<int64_t>(6, 3 + step + 1));
    for (int64_t i = quantized; i < L - window; ++i) {  // moved out of the window: quantized
      kh[i] = Int8Held(kh[i].unsqueeze(0), 16)[0];
      vh[i] = Int8Held(vh[i].unsqueeze(0), 16)[0];
    }
    quantized = L - window;
    // SequenceKeys pads to the longest kv head (head 0 keeps every token).
    ASSERT_TRUE(at::equal(store->SequenceKeys(0, 0)[1].narrow(0, 0, L), kh)) << "step " << step;
    const at::Tensor expect = Dense(q[0].narrow(0, 2, 2), kh, vh, o.scale);
    EXPECT_TRUE(at::allclose(r->out[0].narrow(0, 2, 2), expect, 1e-4, 1e-5)) << "step " << step;
  }
}

TEST(QuantizedStore, RerotateRequantizesInt8KeysAndRotatesTheWindow) {
  SessionOptions o = Shape(KvDataType::kInt8, KvDataType::kInt8, 2, DType::kFloat32);
  o.rope.theta = 10000;
  at::manual_seed(9);
  auto store = Host(o);
  const at::Tensor k = at::randn({1, 2, 8, 64});
  store->Append(0, k, k, {5});  // positions 5..12; tokens 6, 7 in the window
  const at::Tensor held = store->SequenceKeys(0, 0)[0].clone();
  store->Keep(0, 0, {1, 4, 7});
  store->FinishKeep(0);
  store->Rerotate(0, 0, o.rope);
  EXPECT_EQ(store->head(0, 0).rotated, (std::vector<int64_t>{0, 1, 2}));
  at::Tensor expect = held.index_select(0, at::tensor(std::vector<int64_t>{1, 4, 7})).clone();
  RotateRow(expect[0].data_ptr(), at::kFloat, 64, -6, o.rope);
  RotateRow(expect[1].data_ptr(), at::kFloat, 64, -8, o.rope);
  RotateRow(expect[2].data_ptr(), at::kFloat, 64, -10, o.rope);
  // Main-page keys are quantized again after the rotation; the window key stays float32.
  expect.narrow(0, 0, 2).copy_(Int8Held(expect.narrow(0, 0, 2), 16));
  EXPECT_TRUE(at::allclose(store->SequenceKeys(0, 0)[0].narrow(0, 0, 3), expect, 1e-6, 1e-6));
}

TEST(QuantizedStore, FormatsAStoreCannotHoldAreRefusedAtCreation) {
  // The host store holds every format (KIVI's INT4/INT2 too: kivi_test.cc).
  for (KvDataType type : {KvDataType::kInt4, KvDataType::kInt2}) {
    const SessionOptions o = Shape(type, type, 0, DType::kFloat32);
    EXPECT_TRUE(MakeHostStore(StoreContext{&o, nullptr}).ok());
    auto device = MakeDeviceStore(StoreContext{&o, nullptr}, at::Device(at::kCPU));
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.status().code(), absl::StatusCode::kUnimplemented);
  }
  // The device store holds the session dtype only.
  const SessionOptions int8 = Shape(KvDataType::kInt8, KvDataType::kInt8, 0, DType::kFloat32);
  auto device = MakeDeviceStore(StoreContext{&int8, nullptr}, at::Device(at::kCPU));
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(device.status().message().find("kv_format"), std::string::npos) << device.status();
  auto tensor_path = CreateTensorPathSessionForTesting(int8);
  EXPECT_EQ(tensor_path.status().code(), absl::StatusCode::kUnimplemented);
  // An explicit format equal to the session dtype is native.
  const SessionOptions same = Shape(KvDataType::kFloat32, KvDataType::kDefault, 0, DType::kFloat32);
  EXPECT_TRUE(MakeDeviceStore(StoreContext{&same, nullptr}, at::Device(at::kCPU)).ok());
}

// Sessions evicting on int8 pages: the budget holds, pages are released, decode keeps working and
// every kept token is one the session was given.
TEST(QuantizedSession, EvictionPoliciesWorkOnInt8Pages) {
  const std::string shape =
      "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 32 page_size: 4 "
      "kv_format { keys: INT8 values: INT8 group_size: 16 residual_tokens: 4 } ";
  const std::string policies[] = {
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 8 recent_tokens: 4 }",
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 8 recent_tokens: 4 }",
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 8 recent_tokens: 4 per_head: true budget { allocator: ADAKV } }",
      "eviction { enabled: true algorithm: KNORM granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 8 recent_tokens: 4 }",
  };
  for (const std::string& policy : policies) {
    SCOPED_TRACE(policy);
    std::unique_ptr<Session> session;
    ASSERT_NO_FATAL_FAILURE(testing::RunRandomCalls(shape + policy, 40, 11, 12, 3.0, &session));
    const SessionStatsView stats = session->Stats();
    EXPECT_GT(stats.evictions, 0);
    // 14 tokens per kv head on average (AdaKV moves budget between heads).
    EXPECT_EQ(stats.tokens_held, 2 * 2 * 14);
    // Less than the same tokens in float32 rows, pages of the window included.
    EXPECT_LT(stats.bytes_held, stats.tokens_held * 32 * 4 * 2);
    for (int layer = 0; layer < 2; ++layer) {
      for (int h = 0; h < 2; ++h) {
        auto positions = session->Positions(layer, 0, h);
        ASSERT_TRUE(positions.ok());
        EXPECT_TRUE(std::is_sorted(positions->begin(), positions->end()));
        EXPECT_LT(positions->back(), 51);
        EXPECT_EQ(positions->back(), 50);  // the newest token is always kept (recent area)
      }
    }
  }
}

}  // namespace
}  // namespace attnkit::session
