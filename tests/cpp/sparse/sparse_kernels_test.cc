// The fused CPU kernels (block-sparse attention, XAttention estimate) against their plain ATen
// references, on random shapes: partial last blocks, q_len < k_len, GQA, bf16/f16, strided views,
// degenerate lengths; and their input checks.
#include <cmath>
#include <string>

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"

namespace attnkit::kernels {
namespace {

struct Shape {
  int64_t heads, kv_heads, q_len, k_len, dim, block;
};

at::Tensor Randn(std::vector<int64_t> sizes, at::ScalarType type = at::kFloat) {
  return at::randn(sizes, at::TensorOptions().dtype(at::kFloat)).to(type);
}

// A random mask (each block kept with probability `p`) over [mask_heads, qb, kb].
at::Tensor RandomMask(int64_t mask_heads, const Shape& s, double p) {
  const int64_t qb = (s.q_len + s.block - 1) / s.block, kb = (s.k_len + s.block - 1) / s.block;
  return at::rand({mask_heads, qb, kb}).lt(p);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

void ExpectAttentionMatches(const Shape& s, at::ScalarType type, double p, bool per_head_mask,
                            double tol) {
  SCOPED_TRACE(testing::Message() << "H " << s.heads << " Hkv " << s.kv_heads << " Lq " << s.q_len
                                  << " Lk " << s.k_len << " d " << s.dim << " B " << s.block
                                  << " dtype " << c10::toString(type) << " p " << p);
  at::Tensor q = Randn({s.heads, s.q_len, s.dim}, type);
  at::Tensor k = Randn({s.kv_heads, s.k_len, s.dim}, type);
  at::Tensor v = Randn({s.kv_heads, s.k_len, s.dim}, type);
  at::Tensor mask = RandomMask(per_head_mask ? s.heads : 1, s, p);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
  auto want = BlockSparseAttentionReference(q, k, v, mask, s.block, scale);
  ASSERT_TRUE(want.ok()) << want.status();
  for (SparseGemm gemm : {SparseGemm::kVectorized, SparseGemm::kBlas}) {
    auto got = BlockSparseAttentionCpu(q, k, v, mask, s.block, scale, gemm);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->sizes(), want->sizes());
    EXPECT_EQ(got->scalar_type(), at::kFloat);
    EXPECT_LE(MaxAbsDiff(*got, *want), tol) << (gemm == SparseGemm::kBlas ? "blas" : "vectorized");
  }
}

TEST(BlockSparseAttention, MatchesReferenceOnRandomShapes) {
  at::manual_seed(1);
  const Shape shapes[] = {
      {2, 2, 256, 256, 32, 64},   // whole blocks
      {3, 3, 300, 300, 16, 64},   // partial last block
      {4, 2, 100, 333, 32, 32},   // q_len < k_len, GQA 2
      {6, 1, 77, 77, 8, 16},      // MQA
      {2, 2, 50, 50, 16, 128},    // shorter than one block
      {2, 1, 1, 1, 16, 64},       // one token
      {2, 1, 1, 200, 16, 64},     // one query over a cache (decode-like)
      {1, 1, 129, 130, 24, 128},  // offset not a multiple of the block
      {1, 1, 400, 1100, 16, 32},  // several online-softmax chunks (micro-kernel: 512 keys)
      {1, 1, 200, 2300, 8, 64},   // several chunks on the BLAS path too (2048 keys)
  };
  for (const Shape& s : shapes) {
    for (double p : {1.0, 0.5, 0.15}) ExpectAttentionMatches(s, at::kFloat, p, false, 2e-5);
    ExpectAttentionMatches(s, at::kFloat, 0.5, true, 2e-5);
  }
}

TEST(BlockSparseAttention, HalfPrecisionInputsAccumulateInFloat) {
  at::manual_seed(2);
  const Shape s{4, 2, 200, 260, 32, 64};
  // The reference converts the same bf16/f16 values to float32, so only summation order differs.
  ExpectAttentionMatches(s, at::kBFloat16, 0.6, false, 2e-5);
  ExpectAttentionMatches(s, at::kHalf, 0.6, true, 2e-5);
}

// kBf16Dot: bfloat16 inputs through AVX512-BF16 dot products, the probabilities rounded to
// bfloat16 before the second product (so the tolerance is bfloat16's, not float32's); float inputs
// on that setting run the float32 kernel.
TEST(BlockSparseAttention, Bf16DotPathMatchesReference) {
  at::manual_seed(7);
  {
    const Shape s{2, 1, 90, 120, 16, 32};
    at::Tensor q = Randn({2, 90, 16}), k = Randn({1, 120, 16}), v = Randn({1, 120, 16});
    at::Tensor mask = RandomMask(1, s, 0.7);
    auto a = BlockSparseAttentionCpu(q, k, v, mask, 32, 0.25, SparseGemm::kBf16Dot);
    auto b = BlockSparseAttentionCpu(q, k, v, mask, 32, 0.25, SparseGemm::kBlas);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_TRUE(at::equal(*a, *b));  // float inputs: the float32 kernel
  }
  if (!Bf16PathTaken(at::kBFloat16, at::kBFloat16, at::kBFloat16)) {
    GTEST_SKIP() << "this CPU has no AVX512-BF16: the bfloat16 path cannot run here (bfloat16 "
                    "inputs take the float32 kernel, HalfPrecisionInputsAccumulateInFloat)";
  }
  const Shape shapes[] = {
      {2, 2, 256, 256, 32, 64},    // whole blocks
      {4, 2, 100, 333, 64, 32},    // q_len < k_len, GQA
      {2, 1, 77, 77, 15, 16},      // odd head dim, partial blocks
      {1, 1, 300, 1100, 128, 64},  // several chunks of 512 keys, d 128
      {2, 1, 1, 200, 16, 64},      // one query
  };
  for (const Shape& s : shapes) {
    for (double p : {1.0, 0.4}) {
      SCOPED_TRACE(testing::Message()
                   << "Lq " << s.q_len << " Lk " << s.k_len << " d " << s.dim << " p " << p);
      at::Tensor q = Randn({s.heads, s.q_len, s.dim}, at::kBFloat16);
      at::Tensor k = Randn({s.kv_heads, s.k_len, s.dim}, at::kBFloat16);
      at::Tensor v = Randn({s.kv_heads, s.k_len, s.dim}, at::kBFloat16);
      at::Tensor mask = RandomMask(1, s, p);
      const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
      auto want = BlockSparseAttentionReference(q, k, v, mask, s.block, scale);
      auto got = BlockSparseAttentionCpu(q, k, v, mask, s.block, scale, SparseGemm::kBf16Dot);
      ASSERT_TRUE(want.ok() && got.ok());
      EXPECT_LE(MaxAbsDiff(*got, *want), 1e-2);
      // The float32 kernel on the same values lands within float32 rounding: the bfloat16 path
      // differs from it only by the probabilities' rounding.
      auto floats = BlockSparseAttentionCpu(q, k, v, mask, s.block, scale, SparseGemm::kBlas);
      ASSERT_TRUE(floats.ok());
      EXPECT_LE(MaxAbsDiff(*floats, *want), 2e-5);
    }
  }
}

TEST(BlockSparseAttention, FullMaskIsCausalAttention) {
  at::manual_seed(3);
  const int64_t h = 2, lq = 150, lk = 190, d = 16, b = 32;
  at::Tensor q = Randn({h, lq, d}), k = Randn({h, lk, d}), v = Randn({h, lk, d});
  at::Tensor mask = at::ones({1, (lq + b - 1) / b, (lk + b - 1) / b}, at::kBool);
  auto got = BlockSparseAttentionCpu(q, k, v, mask, b, 0.25);
  ASSERT_TRUE(got.ok()) << got.status();
  // Causal softmax attention written out directly.
  at::Tensor scores = at::matmul(q, k.transpose(1, 2)).mul(0.25);
  at::Tensor future = at::arange(lk).unsqueeze(0).gt(at::arange(lq).add(lk - lq).unsqueeze(1));
  at::Tensor want = at::matmul(at::softmax(scores.masked_fill(future, -INFINITY), -1), v);
  EXPECT_LE(MaxAbsDiff(*got, want), 2e-5);
}

TEST(BlockSparseAttention, AcceptsStridedViewsAndUint8Masks) {
  at::manual_seed(4);
  // [tokens, heads, dim] storage viewed as [heads, tokens, dim].
  at::Tensor q = Randn({120, 4, 16}).transpose(0, 1);
  at::Tensor k = Randn({120, 2, 16}).transpose(0, 1);
  at::Tensor v = Randn({120, 2, 32}).transpose(0, 1);  // dv != d
  at::Tensor mask = at::rand({4, 4, 4}).lt(0.7).to(at::kByte);
  auto got = BlockSparseAttentionCpu(q, k, v, mask, 32, 0.3);
  auto want = BlockSparseAttentionReference(q.contiguous(), k.contiguous(), v.contiguous(),
                                            mask.to(at::kBool), 32, 0.3);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(got->sizes(), at::IntArrayRef({4, 120, 32}));
  EXPECT_LE(MaxAbsDiff(*got, *want), 2e-5);
}

TEST(BlockSparseAttention, EmptyRowsGiveZeros) {
  at::Tensor q = Randn({1, 64, 8}), k = Randn({1, 64, 8}), v = Randn({1, 64, 8});
  at::Tensor mask = at::zeros({1, 2, 2}, at::kBool);
  mask[0][1][1].fill_(true);
  auto got = BlockSparseAttentionCpu(q, k, v, mask, 32, 1.0);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->narrow(1, 0, 32).abs().max().item<float>(), 0.0f);
  EXPECT_GT(got->narrow(1, 32, 32).abs().max().item<float>(), 0.0f);
}

void ExpectInvalid(const absl::StatusOr<at::Tensor>& result, const std::string& fragment) {
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(result.status().message()).find(fragment), std::string::npos)
      << result.status();
}

TEST(BlockSparseAttention, RejectsBadInputs) {
  at::Tensor q = Randn({4, 100, 16}), k = Randn({2, 200, 16}), v = Randn({2, 200, 16});
  at::Tensor mask = at::ones({1, 4, 7}, at::kBool);  // block 32: 4 x 7
  EXPECT_TRUE(BlockSparseAttentionCpu(q, k, v, mask, 32, 0.25).ok());
  ExpectInvalid(BlockSparseAttentionCpu(q, k, v, at::ones({1, 4, 6}, at::kBool), 32, 0.25),
                "mask: expected shape [1 or 4, 4, 7]");
  ExpectInvalid(BlockSparseAttentionCpu(q, k, v, at::ones({3, 4, 7}, at::kBool), 32, 0.25),
                "mask: expected shape");
  ExpectInvalid(BlockSparseAttentionCpu(q, k, v, at::ones({1, 4, 7}), 32, 0.25),
                "mask: expected bool or uint8");
  ExpectInvalid(BlockSparseAttentionCpu(q.unsqueeze(0), k, v, mask, 32, 0.25),
                "q: expected rank 3");
  ExpectInvalid(BlockSparseAttentionCpu(q.to(at::kDouble), k, v, mask, 32, 0.25),
                "q: expected float32, float16 or bfloat16");
  ExpectInvalid(BlockSparseAttentionCpu(q, Randn({3, 200, 16}), v, mask, 32, 0.25),
                "k: kv heads (3) must divide");
  ExpectInvalid(BlockSparseAttentionCpu(q, Randn({2, 200, 8}), v, mask, 32, 0.25), "k: expected");
  ExpectInvalid(BlockSparseAttentionCpu(q, k, Randn({2, 199, 16}), mask, 32, 0.25), "v: expected");
  ExpectInvalid(BlockSparseAttentionCpu(Randn({4, 300, 16}), k, v, mask, 32, 0.25),
                "must be <= k_len");
  ExpectInvalid(BlockSparseAttentionCpu(q, k, v, mask, 0, 0.25), "block_size");
  ExpectInvalid(BlockSparseAttentionCpu(q, k, v, mask, 32, NAN), "scale");
}

void ExpectEstimateMatches(int64_t heads, int64_t kv_heads, int64_t q_len, int64_t k_len,
                           int64_t dim, int64_t block, int64_t stride, at::ScalarType type) {
  SCOPED_TRACE(testing::Message() << "H " << heads << " Hkv " << kv_heads << " Lq " << q_len
                                  << " Lk " << k_len << " B " << block << " S " << stride);
  at::Tensor q = Randn({heads, q_len, dim}, type), k = Randn({kv_heads, k_len, dim}, type);
  auto got = XAttentionEstimateCpu(q, k, block, stride);
  auto want = XAttentionEstimateReference(q, k, block, stride);
  auto blas = XAttentionEstimateCpu(q, k, block, stride, SparseGemm::kBlas);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(blas.ok()) << blas.status();
  ASSERT_EQ(got->sizes(), want->sizes());
  EXPECT_LE(MaxAbsDiff(*got, *want), 2e-5);
  EXPECT_LE(MaxAbsDiff(*blas, *want), 2e-5);
  // Each reshaped row holding a real query sums to 1.
  const int64_t q_rows = (q_len + stride - 1) / stride;
  EXPECT_NEAR(got->sum().item<double>(), static_cast<double>(heads * q_rows),
              1e-3 * heads * q_rows);
}

TEST(XAttentionEstimate, MatchesReferenceOnRandomShapes) {
  at::manual_seed(5);
  ExpectEstimateMatches(2, 2, 512, 512, 16, 64, 8, at::kFloat);
  ExpectEstimateMatches(2, 1, 300, 300, 16, 64, 16, at::kFloat);  // partial blocks, GQA
  ExpectEstimateMatches(4, 2, 123, 411, 8, 32, 4, at::kFloat);    // q_len < k_len, odd offset
  ExpectEstimateMatches(1, 1, 1, 1, 8, 16, 8, at::kFloat);        // one token
  ExpectEstimateMatches(2, 2, 20, 20, 8, 128, 16, at::kFloat);    // shorter than a block
  ExpectEstimateMatches(2, 2, 200, 256, 32, 128, 8, at::kBFloat16);
  ExpectEstimateMatches(1, 1, 1000, 1000, 16, 128, 8, at::kFloat);  // several strips per head
}

TEST(XAttentionEstimate, RejectsBadInputs) {
  at::Tensor q = Randn({2, 64, 8}), k = Randn({2, 64, 8});
  ExpectInvalid(XAttentionEstimateCpu(q, k, 64, 12), "must be a positive multiple of stride (12)");
  ExpectInvalid(XAttentionEstimateCpu(q, k, 64, 0), "stride");
  ExpectInvalid(XAttentionEstimateCpu(q.unsqueeze(0), k, 64, 8), "q: expected rank 3");
  ExpectInvalid(XAttentionEstimateCpu(q, k.to(at::kInt), 64, 8), "k: expected float32");
  ExpectInvalid(XAttentionEstimateCpu(Randn({2, 65, 8}), k, 64, 8), "q_len (65) must be <= k_len");
  ExpectInvalid(XAttentionEstimateCpu(Randn({3, 64, 8}), k, 64, 8), "must divide");
}

}  // namespace
}  // namespace attnkit::kernels
