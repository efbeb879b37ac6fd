// The KV stores behind the session (core/src/session/kv_store.h), driven directly: the host store
// and the device store (on the CPU) must hold the same tokens, give the same attention and
// observation as a dense ATen computation, compact by index, release pages and re-rotate the same.
#include "session/kv_store.h"

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "session/rope.h"

namespace attnkit::session {
namespace {

SessionOptions Shape() {
  SessionOptions o;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 8;
  o.batch_size = 2;
  o.page_size = 4;
  o.scale = 1.0 / std::sqrt(8.0);
  return o;
}

std::vector<std::unique_ptr<KvStore>> BothStores(const SessionOptions& o) {
  std::vector<std::unique_ptr<KvStore>> stores;
  auto host = MakeHostStore(StoreContext{&o, nullptr});
  EXPECT_TRUE(host.ok()) << host.status();
  stores.push_back(std::move(*host));
  auto device = MakeDeviceStore(StoreContext{&o, nullptr}, at::Device(at::kCPU));
  EXPECT_TRUE(device.ok()) << device.status();
  stores.push_back(std::move(*device));
  return stores;
}

// softmax(q K^T * scale) V over the first `length` keys, causal for the last T queries: the
// reference the stores' output and observation rows are checked against.
at::Tensor DenseProbs(const at::Tensor& q, const at::Tensor& k, double scale) {
  const int64_t T = q.size(1), L = k.size(0);
  at::Tensor scores = at::matmul(q, k.t()) * scale;  // [G, T, L]
  const at::Tensor pos = at::arange(L).unsqueeze(0);
  const at::Tensor limit = at::arange(L - T, L).unsqueeze(1);
  scores.masked_fill_(pos.gt(limit), -std::numeric_limits<float>::infinity());
  return at::softmax(scores, -1);
}

TEST(KvStore, BothStoresAttendLikeDenseAttention) {
  const SessionOptions o = Shape();
  at::manual_seed(3);
  const int64_t T1 = 20, T2 = 1;  // a prefill (BLAS blocks) and a decode step (paged kernel)
  const at::Tensor k1 = at::randn({2, 2, T1, 8}), v1 = at::randn({2, 2, T1, 8});
  const at::Tensor q1 = at::randn({2, 4, T1, 8});
  const at::Tensor k2 = at::randn({2, 2, T2, 8}), v2 = at::randn({2, 2, T2, 8});
  const at::Tensor q2 = at::randn({2, 4, T2, 8});
  for (auto& store : BothStores(o)) {
    store->Append(0, k1, v1, {0, 0});
    auto prefill = store->Attend(0, q1, 3, true);
    ASSERT_TRUE(prefill.ok()) << prefill.status();
    store->Append(0, k2, v2, {T1, T1});
    auto decode = store->Attend(0, q2, 1, true);
    ASSERT_TRUE(decode.ok()) << decode.status();
    const at::Tensor k = at::cat({k1, k2}, 2), v = at::cat({v1, v2}, 2);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t kvh = 0; kvh < 2; ++kvh) {
        const at::Tensor keys = k[b][kvh], values = v[b][kvh];
        // Query heads 2*kvh, 2*kvh+1 read kv head kvh.
        const at::Tensor p1 =
            DenseProbs(q1[b].narrow(0, 2 * kvh, 2), keys.narrow(0, 0, T1), o.scale);
        EXPECT_TRUE(at::allclose(prefill->out[b].narrow(0, 2 * kvh, 2),
                                 at::matmul(p1, values.narrow(0, 0, T1)), 1e-4, 1e-5));
        EXPECT_TRUE(at::allclose(prefill->window_rows[b].narrow(0, 2 * kvh, 2),
                                 p1.narrow(1, T1 - 3, 3), 1e-5, 1e-6));
        EXPECT_TRUE(
            at::allclose(prefill->column_sums[b].narrow(0, 2 * kvh, 2), p1.sum(1), 1e-4, 1e-5));
        const at::Tensor p2 = DenseProbs(q2[b].narrow(0, 2 * kvh, 2), keys, o.scale);
        EXPECT_TRUE(
            at::allclose(decode->out[b].narrow(0, 2 * kvh, 2), at::matmul(p2, values), 1e-4, 1e-5));
        EXPECT_TRUE(
            at::allclose(decode->column_sums[b].narrow(0, 2 * kvh, 2), p2.sum(1), 1e-5, 1e-6));
      }
    }
  }
}

// Quest's choice when only some kv rows choose (the others hold no more than the budget), over
// two sequences: the device store batches the choosing rows' bounds and must pair each with its
// own queries and pages; its decode output equals the host store's, which chooses head by head.
TEST(KvStore, QuestWithHeadsOfDifferentLengthsAttendsAlike) {
  SessionOptions o = Shape();
  o.num_kv_heads = 3;
  o.num_heads = 6;
  o.sparse_decode.token_budget = 12;
  at::manual_seed(8);
  const at::Tensor k1 = at::randn({2, 3, 40, 8}), v1 = at::randn({2, 3, 40, 8});
  const at::Tensor q1 = at::randn({2, 6, 40, 8});
  std::vector<at::Tensor> outs;
  for (auto& store : BothStores(o)) {
    store->Append(0, k1, v1, {0, 0});
    ASSERT_TRUE(store->Attend(0, q1, 0, false).ok());
    // Sequence 0's kv head 1 and sequence 1's kv head 0 keep 6 tokens (they read them all); the
    // others keep 40 or 33 and choose.
    std::vector<int64_t> most(33);
    for (int64_t i = 0; i < 33; ++i) most[i] = i + (i >= 10 ? 7 : 0);
    store->Keep(0, 1, {0, 5, 9, 20, 30, 39});
    store->Keep(0, 2, most);
    store->Keep(0, 3, {1, 2, 3, 4, 5, 6});
    store->FinishKeep(0);
    at::manual_seed(9);
    for (int step = 0; step < 6; ++step) {
      const at::Tensor k = at::randn({2, 3, 1, 8}), v = at::randn({2, 3, 1, 8});
      const at::Tensor q = at::randn({2, 6, 1, 8}).mul_(3.0);
      store->Append(0, k, v, {40 + step, 40 + step});
      auto r = store->Attend(0, q, 0, false);
      ASSERT_TRUE(r.ok()) << r.status();
      outs.push_back(r->out);
    }
    EXPECT_LT(store->sparse_decode_tokens_read(), store->sparse_decode_tokens_held());
  }
  ASSERT_EQ(outs.size(), 12u);
  for (int step = 0; step < 6; ++step) {
    EXPECT_TRUE(at::allclose(outs[step], outs[6 + step], 1e-5, 1e-5))
        << "step " << step << " max diff " << (outs[step] - outs[6 + step]).abs().max();
  }
}

TEST(KvStore, KeepCompactsReleasesPagesAndKeepsPositions) {
  const SessionOptions o = Shape();
  const at::Tensor k = at::arange(2 * 2 * 10 * 8, at::kFloat).view({2, 2, 10, 8});
  for (auto& store : BothStores(o)) {
    store->Append(1, k, k + 1, {0, 0});
    const int64_t full = store->LayerBytes(1);
    EXPECT_EQ(full, 4 * 3 * 2 * 4 * 8 * 4);  // 4 heads x 3 pages x (keys + values) x 4 rows x d
    const std::vector<int64_t> kept{0, 3, 9};
    store->Keep(1, 2, kept);  // sequence 1, kv head 0
    store->FinishKeep(1);
    EXPECT_EQ(store->head(1, 2).length, 3);
    EXPECT_EQ(store->head(1, 2).origin, kept);
    EXPECT_EQ(store->LayerBytes(1), full - 2 * 2 * 4 * 8 * 4);  // two pages released
    const at::Tensor keys = store->SequenceKeys(1, 1);          // [Hkv, max_len, d]
    EXPECT_TRUE(at::equal(keys[0].narrow(0, 0, 3), k[1][0].index_select(0, at::tensor(kept))));
    EXPECT_TRUE(at::equal(keys[1], k[1][1]));
    store->Clear();
    EXPECT_EQ(store->BytesHeld(), 0);
    EXPECT_GT(store->BytesReserved(), 0);  // pages stay reserved for reuse
  }
}

TEST(KvStore, RerotateMovesKeysToTheirIndex) {
  SessionOptions o = Shape();
  o.rope.theta = 10000;
  const at::Tensor k = at::randn({2, 2, 6, 8});
  std::vector<at::Tensor> rotated;
  for (auto& store : BothStores(o)) {
    store->Append(0, k, k, {5, 5});  // positions 5..10
    store->Keep(0, 0, {1, 4});
    store->FinishKeep(0);
    store->Rerotate(0, 0, o.rope);
    EXPECT_EQ(store->head(0, 0).rotated, (std::vector<int64_t>{0, 1}));
    rotated.push_back(store->SequenceKeys(0, 0)[0].narrow(0, 0, 2).clone());
  }
  // Both stores' arithmetic is the host formula: token 1 (position 6) and 4 (position 9) moved to
  // positions 0 and 1.
  at::Tensor expected = k[0][0].index_select(0, at::tensor(std::vector<int64_t>{1, 4})).clone();
  RotateRow(expected[0].data_ptr(), at::kFloat, 8, -6, o.rope);
  RotateRow(expected[1].data_ptr(), at::kFloat, 8, -8, o.rope);
  EXPECT_TRUE(at::allclose(rotated[0], expected, 1e-6, 1e-6));
  EXPECT_TRUE(at::allclose(rotated[1], expected, 1e-6, 1e-6));
}

TEST(KvStore, DecodeKernelLimits) {
  const SessionOptions o = Shape();
  auto stores = BothStores(o);
  EXPECT_EQ(stores[0]->max_decode_queries(), 16);  // the host paged kernel
  EXPECT_EQ(stores[1]->max_decode_queries(), 1);   // the fused CUDA decode
}

}  // namespace
}  // namespace attnkit::session
