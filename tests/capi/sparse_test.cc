// The sparse attention C ABI (attnkit_sparse.h): creation from text and bytes, mask shapes, masks
// and attention against an ATen reference written here (batch, GQA, strided views, rank-3 masks,
// bf16 output), and every argument check.
#include <cmath>
#include <cstring>
#include <string>

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/attnkit_config.h"
#include "attnkit/attnkit_sparse.h"
#include "dlpack_util.h"

namespace {

using attnkit::testing::DLView;

struct StatusHolder {
  attnkit_status* s;
  explicit StatusHolder(attnkit_status* status) : s(status) {}
  ~StatusHolder() { attnkit_status_free(s); }
  bool ok() const { return s == nullptr; }
  attnkit_status_code code() const { return attnkit_status_get_code(s); }
  std::string message() const { return attnkit_status_get_message(s); }
};

struct Sparse {
  attnkit_sparse_attention* p = nullptr;
  ~Sparse() { attnkit_sparse_attention_free(p); }
};

void CreateFromText(const std::string& text, Sparse* out) {
  StatusHolder st(attnkit_sparse_attention_create_from_text(text.data(), text.size(), &out->p));
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_NE(out->p, nullptr);
}

void ExpectInvalid(attnkit_status* status, const std::string& fragment) {
  StatusHolder st(status);
  ASSERT_FALSE(st.ok()) << "expected an error containing: " << fragment;
  EXPECT_EQ(st.code(), ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(st.message().find(fragment), std::string::npos) << st.message();
}

// Block-masked causal attention for one sequence: q [H, Lq, d], k/v [Hkv, Lk, d], mask [1|H, qb,
// kb].
at::Tensor Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask, int64_t block, double scale) {
  const int64_t lq = q.size(1), lk = k.size(1), group = q.size(0) / k.size(0);
  at::Tensor kf = k.to(at::kFloat).repeat_interleave(group, 0);
  at::Tensor vf = v.to(at::kFloat).repeat_interleave(group, 0);
  at::Tensor s = at::matmul(q.to(at::kFloat), kf.transpose(1, 2)).mul(scale);
  at::Tensor allowed = mask.to(at::kBool)
                           .repeat_interleave(block, 1)
                           .narrow(1, 0, lq)
                           .repeat_interleave(block, 2)
                           .narrow(2, 0, lk);
  allowed =
      allowed.logical_and(at::arange(lk).unsqueeze(0).le(at::arange(lq).add(lk - lq).unsqueeze(1)));
  at::Tensor p = at::softmax(s.masked_fill(allowed.logical_not(), -INFINITY), -1);
  return at::matmul(p.masked_fill(allowed.logical_not(), 0.0), vf);
}

TEST(CapiSparse, CreateFreeAndConfigErrors) {
  attnkit_sparse_attention_free(nullptr);
  Sparse s;
  CreateFromText("mode: TRI_SHAPE block_size: 64 recent_size: 128", &s);
  attnkit_sparse_attention* bad = nullptr;
  const std::string text = "mode: XATTENTION block_size: 64 xattention { stride: 12 }";
  ExpectInvalid(attnkit_sparse_attention_create_from_text(text.data(), text.size(), &bad),
                "xattention.stride");
  EXPECT_EQ(bad, nullptr);
  ExpectInvalid(attnkit_sparse_attention_create_from_text("mode: NOPE", 10, &bad), "");
  ExpectInvalid(attnkit_sparse_attention_create_from_text("mode: DENSE", 11, nullptr), "out");
  ExpectInvalid(attnkit_sparse_attention_create(nullptr, 5, &bad), "data");
  // From the binary form.
  attnkit_buffer* bytes = nullptr;
  const std::string x = "mode: XATTENTION block_size: 64 xattention { stride: 16 threshold: 0.9 }";
  StatusHolder conv(
      attnkit_config_text_to_binary(ATTNKIT_CONFIG_SPARSE_ATTENTION, x.data(), x.size(), &bytes));
  ASSERT_TRUE(conv.ok()) << conv.message();
  Sparse from_bytes;
  StatusHolder st(attnkit_sparse_attention_create(bytes->data, bytes->size, &from_bytes.p));
  attnkit_buffer_free(bytes);
  ASSERT_TRUE(st.ok()) << st.message();
  Sparse defaults;
  StatusHolder st2(attnkit_sparse_attention_create(nullptr, 0, &defaults.p));
  EXPECT_TRUE(st2.ok()) << st2.message();
}

TEST(CapiSparse, MaskShape) {
  Sparse s;
  CreateFromText(
      "mode: XATTENTION block_size: 64 xattention { stride: 8 head_aggregation: PER_HEAD }", &s);
  int64_t mh = 0, qb = 0, kb = 0;
  StatusHolder st(attnkit_sparse_attention_mask_shape(s.p, 6, 100, 300, &mh, &qb, &kb));
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(mh, 6);
  EXPECT_EQ(qb, 2);
  EXPECT_EQ(kb, 5);
  ExpectInvalid(attnkit_sparse_attention_mask_shape(s.p, 6, 301, 300, &mh, &qb, &kb), "q_len");
  ExpectInvalid(attnkit_sparse_attention_mask_shape(s.p, 6, 1, 3, nullptr, &qb, &kb), "mask_heads");
  ExpectInvalid(attnkit_sparse_attention_mask_shape(nullptr, 6, 1, 3, &mh, &qb, &kb), "sparse");
}

TEST(CapiSparse, MaskAndAttentionMatchTheReference) {
  at::manual_seed(21);
  Sparse s;
  CreateFromText(
      "mode: XATTENTION block_size: 32 last_query_size: 20 "
      "xattention { stride: 8 threshold: 0.6 }",
      &s);
  const int64_t batch = 2, heads = 4, kv_heads = 2, lq = 150, lk = 200, d = 16;
  // [batch, tokens, heads, dim] storage, viewed as [batch, heads, tokens, dim].
  at::Tensor q = at::randn({batch, lq, heads, d}).transpose(1, 2);
  at::Tensor k = at::randn({batch, lk, kv_heads, d}).transpose(1, 2);
  at::Tensor v = at::randn({batch, lk, kv_heads, d}).transpose(1, 2);
  int64_t mh = 0, qb = 0, kb = 0;
  StatusHolder shape(attnkit_sparse_attention_mask_shape(s.p, heads, lq, lk, &mh, &qb, &kb));
  ASSERT_TRUE(shape.ok());
  at::Tensor mask = at::zeros({batch, mh, qb, kb}, at::kByte);
  {
    DLView qv(q), kv(k), mv(mask);
    StatusHolder st(attnkit_sparse_attention_build_mask(s.p, qv, kv, mv));
    ASSERT_TRUE(st.ok()) << st.message();
  }
  EXPECT_EQ(mask.max().item<int>(), 1);
  EXPECT_LT(mask.sum().item<int64_t>(), batch * qb * kb);  // sparse
  at::Tensor out = at::zeros({batch, heads, lq, d}, at::kBFloat16);
  {
    DLView qv(q), kv(k), vv(v), mv(mask), ov(out);
    StatusHolder st(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, 0.0, ov));
    ASSERT_TRUE(st.ok()) << st.message();
  }
  for (int64_t b = 0; b < batch; ++b) {
    at::Tensor want = Reference(q[b], k[b], v[b], mask[b], 32, 1.0 / std::sqrt(16.0));
    EXPECT_LE((out[b].to(at::kFloat) - want).abs().max().item<double>(), 2e-2);  // bf16 output
  }
  // prefill = build_mask + attention; a rank-3 mask is shared by the batch.
  at::Tensor out2 = at::zeros({batch, heads, lq, d});
  at::Tensor out3 = at::zeros({batch, heads, lq, d});
  double density = 0;
  {
    DLView qv(q), kv(k), vv(v), ov(out2), ov3(out3);
    StatusHolder st(attnkit_sparse_attention_prefill(s.p, qv, kv, vv, 0.25, ov, &density));
    ASSERT_TRUE(st.ok()) << st.message();
    at::Tensor shared = mask[1];
    DLView mv(shared);
    StatusHolder st3(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, 0.25, ov3));
    ASSERT_TRUE(st3.ok()) << st3.message();
  }
  EXPECT_GT(density, 0.0);
  EXPECT_LT(density, 1.0);
  for (int64_t b = 0; b < batch; ++b) {
    EXPECT_LE((out2[b] - Reference(q[b], k[b], v[b], mask[b], 32, 0.25)).abs().max().item<double>(),
              2e-5);
    EXPECT_LE((out3[b] - Reference(q[b], k[b], v[b], mask[1], 32, 0.25)).abs().max().item<double>(),
              2e-5);
  }
}

TEST(CapiSparse, TriShapeMaskFromLengths) {
  Sparse s;
  CreateFromText("mode: TRI_SHAPE block_size: 128 recent_size: 256 last_query_size: 100", &s);
  at::Tensor q = at::zeros({1, 1, 1000, 1}), k = at::zeros({1, 1, 1000, 1});
  at::Tensor mask = at::zeros({1, 1, 8, 8}, at::kByte);
  DLView qv(q), kv(k), mv(mask);
  StatusHolder st(attnkit_sparse_attention_build_mask(s.p, qv, kv, mv));
  ASSERT_TRUE(st.ok()) << st.message();
  // Row 5: sink block 0 and recent blocks 4, 5; the last row (the 100 last queries) dense.
  EXPECT_TRUE(
      mask[0][0][5].equal(at::tensor(std::vector<int64_t>{1, 0, 0, 0, 1, 1, 0, 0}).to(at::kByte)));
  EXPECT_EQ(mask[0][0][7].sum().item<int64_t>(), 8);
}

TEST(CapiSparse, RejectsBadArguments) {
  Sparse s;
  CreateFromText("mode: DENSE block_size: 32", &s);
  at::Tensor q = at::randn({1, 4, 64, 8}), k = at::randn({1, 2, 96, 8}),
             v = at::randn({1, 2, 96, 8});
  at::Tensor mask = at::ones({1, 1, 2, 3}, at::kByte), out = at::zeros({1, 4, 64, 8});
  DLView qv(q), kv(k), vv(v), mv(mask), ov(out);
  {
    StatusHolder ok(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, 0.0, ov));
    ASSERT_TRUE(ok.ok()) << ok.message();
  }
  ExpectInvalid(attnkit_sparse_attention_attention(nullptr, qv, kv, vv, mv, 0.0, ov), "sparse");
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, nullptr, kv, vv, mv, 0.0, ov),
                "q: must not be NULL");
  at::Tensor q3 = q[0];
  DLView q3v(q3);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, q3v, kv, vv, mv, 0.0, ov),
                "q: expected rank 4 [batch, heads, q_len, head_dim], got rank 3");
  at::Tensor bad_mask = at::ones({1, 1, 2, 2}, at::kByte);
  DLView bmv(bad_mask);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, bmv, 0.0, ov),
                "mask: expected shape [1, 1 or 4, 2, 3]");
  at::Tensor float_mask = at::ones({1, 1, 2, 3});
  DLView fmv(float_mask);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, fmv, 0.0, ov),
                "mask: expected uint8");
  at::Tensor k3 = at::randn({1, 3, 96, 8});
  DLView k3v(k3);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, k3v, vv, mv, 0.0, ov), "k: expected");
  at::Tensor v_short = at::randn({1, 2, 95, 8});
  DLView vsv(v_short);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vsv, mv, 0.0, ov), "v: expected");
  at::Tensor small_out = at::zeros({1, 4, 63, 8});
  DLView sov(small_out);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, 0.0, sov),
                "out: expected shape [1, 4, 64, 8]");
  DLView alias(q);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, 0.0, alias),
                "out: must not share memory");
  at::Tensor int_q = at::zeros({1, 4, 64, 8}, at::kInt);
  DLView iqv(int_q);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, iqv, kv, vv, mv, 0.0, ov), "q: expected");
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, mv, NAN, ov), "scale");
  // build_mask: the output mask must have the documented shape and dtype.
  at::Tensor wrong = at::zeros({1, 4, 2, 3}, at::kByte);
  DLView wv(wrong);
  ExpectInvalid(attnkit_sparse_attention_build_mask(s.p, qv, kv, wv),
                "mask_out: expected shape [1, 1, 2, 3]");
  ExpectInvalid(attnkit_sparse_attention_build_mask(s.p, qv, kv, nullptr), "mask_out");
  at::Tensor long_q = at::randn({1, 4, 97, 8});
  DLView lqv(long_q);
  ExpectInvalid(attnkit_sparse_attention_build_mask(s.p, lqv, kv, mv), "q_len (97)");
  ExpectInvalid(attnkit_sparse_attention_prefill(s.p, qv, kv, vv, 0.0, nullptr, nullptr), "out");
}

// Masks go through the one DLPack converter: uint8 and 8-bit bool read alike, and every check of
// the other tensors (element counts and output spans past 2^63, negative sizes and strides,
// overlapping outputs) applies to them too.
TEST(CapiSparse, MasksHaveEveryCheckOfTheConverter) {
  Sparse s;
  CreateFromText("mode: DENSE block_size: 32", &s);
  at::Tensor q = at::randn({1, 4, 64, 8}), k = at::randn({1, 2, 96, 8}),
             v = at::randn({1, 2, 96, 8});
  at::Tensor mask = at::ones({1, 1, 2, 3}, at::kByte), out = at::zeros({1, 4, 64, 8});
  DLView qv(q), kv(k), vv(v), ov(out);
  {
    DLView as_bool(mask);
    as_bool.get()->dtype = {6, 8, 1};  // kDLBool
    StatusHolder ok(attnkit_sparse_attention_attention(s.p, qv, kv, vv, as_bool, 0.0, ov));
    ASSERT_TRUE(ok.ok()) << ok.message();
  }
  DLView huge(mask);
  huge.get()->shape[2] = int64_t{1} << 40;
  huge.get()->shape[3] = int64_t{1} << 40;
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, huge, 0.0, ov),
                "mask: shape [1, 1, 1099511627776, 1099511627776] has too many elements");
  DLView negative(mask);
  negative.get()->strides[3] = -1;
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, negative, 0.0, ov),
                "mask: negative stride -1 in dimension 3");
  at::Tensor rank5 = at::ones({1, 1, 1, 2, 3}, at::kByte);
  DLView r5(rank5);
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, r5, 0.0, ov),
                "mask: expected rank 3 or 4 [1, 1 or 4, 2, 3]");
  at::Tensor wide = at::ones({1, 1, 2, 3}, at::kShort);
  DLView wv(wide);
  wv.get()->dtype = {kDLUInt, 16, 1};
  ExpectInvalid(attnkit_sparse_attention_attention(s.p, qv, kv, vv, wv, 0.0, ov),
                "mask: expected uint8 (or 8-bit bool)");
  // An output mask whose strides make two elements share a byte.
  at::Tensor target = at::zeros({1, 1, 2, 3}, at::kByte);
  DLView overlapping(target);
  overlapping.get()->strides[2] = 1;
  overlapping.get()->strides[3] = 1;
  ExpectInvalid(attnkit_sparse_attention_build_mask(s.p, qv, kv, overlapping),
                "mask_out: output strides");
  at::Tensor rank3 = at::zeros({1, 2, 3}, at::kByte);
  DLView r3(rank3);
  ExpectInvalid(attnkit_sparse_attention_build_mask(s.p, qv, kv, r3),
                "mask_out: expected rank 4 [1, 1, 2, 3] [batch, mask_heads, q_blocks, k_blocks], "
                "got rank 3");
}

}  // namespace
