// SparseAttention, the entry the session calls: option checks, masks per mode (dense below
// min_sparse_length, per-head XAttention), Prefill = BuildMask + Attention, density, bad inputs.
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/sparse/sparse_attention.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"

namespace attnkit::sparse {
namespace {

std::unique_ptr<SparseAttention> Make(const SparseOptions& o) {
  auto s = SparseAttention::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

SparseOptions XAttention(int block, int stride, double threshold, HeadAggregation agg) {
  SparseOptions o;
  o.mode = SparseMode::kXAttention;
  o.block_size = block;
  o.stride = stride;
  o.threshold = threshold;
  o.head_aggregation = agg;
  o.last_query_size = 0;
  return o;
}

TEST(SparseAttention, CreateRejectsBadOptions) {
  SparseOptions o = XAttention(64, 12, 0.9, HeadAggregation::kSum);
  auto bad_stride = SparseAttention::Create(o);
  ASSERT_FALSE(bad_stride.ok());
  EXPECT_NE(std::string(bad_stride.status().message()).find("xattention.stride"),
            std::string::npos);
  o.stride = 8;
  o.threshold = 1.5;
  EXPECT_EQ(SparseAttention::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o.threshold = 0.9;
  o.per_head_thresholds = {0.5};
  EXPECT_EQ(SparseAttention::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  SparseOptions tri;
  tri.mode = SparseMode::kTriShape;
  tri.recent_size = 100;  // not a multiple of 128
  EXPECT_EQ(SparseAttention::Create(tri).status().code(), absl::StatusCode::kInvalidArgument);
  tri.recent_size = 256;
  tri.block_size = 0;
  EXPECT_EQ(SparseAttention::Create(tri).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SparseAttention, StaticMasksPerMode) {
  at::Tensor q = at::zeros({2, 1000, 4}), k = at::zeros({1, 1000, 4});
  SparseOptions o;
  o.mode = SparseMode::kTriShape;
  o.recent_size = 256;
  auto tri = Make(o);
  auto mask = tri->BuildMask(q, k);
  ASSERT_TRUE(mask.ok()) << mask.status();
  auto grid = BlockGrid::Make(1000, 1000, 128);
  EXPECT_TRUE(mask->equal(TriShapeMask(*grid, 0, 256, 100)));
  EXPECT_LT(MaskDensity(*mask, *grid), 1.0);
  // Below min_sparse_length: dense.
  o.min_sparse_length = 1001;
  auto short_prompt = Make(o)->BuildMask(q, k);
  ASSERT_TRUE(short_prompt.ok());
  EXPECT_TRUE(short_prompt->equal(CausalBlockMask(*grid)));
  o.mode = SparseMode::kDense;
  o.min_sparse_length = 0;
  EXPECT_TRUE(Make(o)->BuildMask(q, k)->equal(CausalBlockMask(*grid)));
  EXPECT_EQ(
      Make(XAttention(64, 8, 0.9, HeadAggregation::kSum))->BuildStaticMask(10, 10).status().code(),
      absl::StatusCode::kFailedPrecondition);
}

TEST(SparseAttention, XAttentionMaskSumAndPerHead) {
  at::manual_seed(11);
  const int64_t heads = 4;
  at::Tensor q = at::randn({heads, 640, 16}), k = at::randn({2, 640, 16});
  auto grid = BlockGrid::Make(640, 640, 64);
  at::Tensor scores = *kernels::XAttentionEstimateReference(q, k, 64, 8);

  auto sum = Make(XAttention(64, 8, 0.5, HeadAggregation::kSum))->BuildMask(q, k);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(sum->sizes(), at::IntArrayRef({1, 10, 10}));
  EXPECT_TRUE(sum->equal(*SelectXAttentionBlocks(scores.sum(0, true), *grid, {0.5}, 0)));
  const double density = MaskDensity(*sum, *grid);
  EXPECT_GT(density, 0.0);
  EXPECT_LT(density, 1.0);

  SparseOptions per_head = XAttention(64, 8, 0.5, HeadAggregation::kPerHead);
  per_head.per_head_thresholds = {0.1, 0.5, 0.9, 1.0};
  auto masks = Make(per_head)->BuildMask(q, k);
  ASSERT_TRUE(masks.ok()) << masks.status();
  EXPECT_EQ(masks->sizes(), at::IntArrayRef({heads, 10, 10}));
  EXPECT_TRUE(
      masks->equal(*SelectXAttentionBlocks(scores, *grid, per_head.per_head_thresholds, 0)));
  // Higher thresholds keep more blocks.
  EXPECT_LE((*masks)[0].sum().item<int64_t>(), (*masks)[2].sum().item<int64_t>());
  EXPECT_TRUE((*masks)[3].equal(CausalBlockMask(*grid)[0]));
  // The thresholds must match the heads.
  auto wrong = Make(per_head)->BuildMask(at::randn({2, 640, 16}), k);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SparseAttention, PrefillIsMaskPlusAttention) {
  at::manual_seed(12);
  at::Tensor q = at::randn({4, 300, 16}).to(at::kBFloat16);
  at::Tensor k = at::randn({2, 420, 16}).to(at::kBFloat16);
  at::Tensor v = at::randn({2, 420, 16}).to(at::kBFloat16);
  SparseOptions o = XAttention(32, 8, 0.7, HeadAggregation::kSum);
  o.last_query_size = 40;
  auto sparse = Make(o);
  double density = -1;
  auto out = sparse->Prefill(q, k, v, 0.25, &density);
  ASSERT_TRUE(out.ok()) << out.status();
  auto mask = sparse->BuildMask(q, k);
  ASSERT_TRUE(mask.ok());
  auto want = kernels::BlockSparseAttentionReference(q, k, v, *mask, 32, 0.25);
  // bfloat16 inputs take the AVX512-BF16 path where the CPU has it: probabilities in bfloat16.
  const bool bf16 = kernels::Bf16PathTaken(at::kBFloat16, at::kBFloat16, at::kBFloat16);
  EXPECT_LE((*out - *want).abs().max().item<double>(), bf16 ? 1e-2 : 2e-5);
  EXPECT_DOUBLE_EQ(density, MaskDensity(*mask, *BlockGrid::Make(300, 420, 32)));
  EXPECT_GT(density, 0.0);
  EXPECT_LT(density, 1.0);
}

// A continued prompt whose queries reach one key block past the block diagonal (40 queries over
// 123 keys, block 16: offset 5, but 83 % 16 = 3 <= 8 padded queries): DENSE, and A-/Tri-shape with
// q_len <= recent_size (the reference then runs plain dense attention), give dense causal
// attention.
TEST(SparseAttention, DenseMasksSeeEveryCausalKeyOfAContinuedPrompt) {
  at::manual_seed(13);
  const int64_t lq = 40, lk = 123;
  at::Tensor q = at::randn({2, lq, 8}), k = at::randn({1, lk, 8}), v = at::randn({1, lk, 8});
  at::Tensor scores = at::matmul(q, k.transpose(1, 2)).mul(0.25);
  at::Tensor future = at::arange(lk).unsqueeze(0).gt(at::arange(lq).add(lk - lq).unsqueeze(1));
  at::Tensor want = at::matmul(at::softmax(scores.masked_fill(future, -INFINITY), -1), v);
  for (SparseMode mode : {SparseMode::kDense, SparseMode::kAShape, SparseMode::kTriShape}) {
    SparseOptions o;
    o.mode = mode;
    o.block_size = 16;
    o.recent_size = 64;
    auto sparse = Make(o);
    double density = -1;
    auto out = sparse->Prefill(q, k, v, 0.25, &density);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_LE((*out - want).abs().max().item<double>(), 2e-5) << static_cast<int>(mode);
    EXPECT_DOUBLE_EQ(density, 1.0);
  }
}

TEST(SparseAttention, DegenerateLengths) {
  SparseOptions o = XAttention(64, 16, 0.9, HeadAggregation::kPerHead);
  auto sparse = Make(o);
  for (int64_t len : {1, 5, 63}) {
    at::Tensor q = at::randn({2, len, 8}), k = at::randn({2, len, 8}), v = at::randn({2, len, 8});
    double density = 0;
    auto out = sparse->Prefill(q, k, v, 0.3, &density);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->sizes(), at::IntArrayRef({2, len, 8}));
    EXPECT_DOUBLE_EQ(density, 1.0);  // one block: always the diagonal
    auto want =
        kernels::BlockSparseAttentionReference(q, k, v, at::ones({1, 1, 1}, at::kBool), 64, 0.3);
    EXPECT_LE((*out - *want).abs().max().item<double>(), 2e-5);
  }
}

TEST(SparseAttention, RejectsBadInputs) {
  SparseOptions o;
  o.mode = SparseMode::kTriShape;
  auto sparse = Make(o);
  at::Tensor q = at::randn({2, 300, 8}), k = at::randn({2, 300, 8}), v = at::randn({2, 300, 8});
  EXPECT_EQ(sparse->BuildMask(q.unsqueeze(0), k).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sparse->BuildMask(at::randn({2, 301, 8}), k).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto bad_mask = sparse->Attention(q, k, v, at::ones({1, 2, 2}, at::kBool), 0.3);
  ASSERT_FALSE(bad_mask.ok());
  EXPECT_NE(std::string(bad_mask.status().message()).find("mask: expected shape [1 or 2, 3, 3]"),
            std::string::npos)
      << bad_mask.status();
  EXPECT_EQ(sparse->Prefill(q, k, at::Tensor(), 0.3).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto x = Make(XAttention(64, 8, 0.9, HeadAggregation::kSum));
  EXPECT_EQ(x->BuildMask(q.to(at::kLong), k).status().code(), absl::StatusCode::kInvalidArgument);
}

// The ATen formulation the CUDA path falls back to (float32, other head dims or blocks) equals the
// CPU kernel: GQA, q_len < k_len, per-head masks, chunking over query blocks, rows with no key.
TEST(SparseAttention, TensorOpsAttentionMatchesTheCpuKernel) {
  at::manual_seed(3);
  struct Case {
    int64_t heads, kv_heads, q_len, k_len, dim, block, mask_heads;
  };
  for (const Case& c : std::vector<Case>{{4, 2, 200, 300, 32, 64, 1},
                                         {4, 4, 130, 130, 16, 16, 4},
                                         {8, 2, 1000, 1000, 64, 128, 8},
                                         {2, 1, 5, 700, 8, 32, 1}}) {
    const at::Tensor q = at::randn({c.heads, c.q_len, c.dim});
    const at::Tensor k = at::randn({c.kv_heads, c.k_len, c.dim});
    const at::Tensor v = at::randn({c.kv_heads, c.k_len, c.dim});
    const int64_t qb = (c.q_len + c.block - 1) / c.block, kb = (c.k_len + c.block - 1) / c.block;
    at::Tensor mask = at::rand({c.mask_heads, qb, kb}).lt(0.4);
    mask.select(2, kb - 1).fill_(false);  // some rows see no key at all
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
    auto cpu = kernels::BlockSparseAttentionCpu(q, k, v, mask, c.block, scale);
    auto ops = BlockSparseAttentionTensorOps(q, k, v, mask, c.block, scale);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    ASSERT_TRUE(ops.ok()) << ops.status();
    EXPECT_LT((*cpu - *ops).abs().max().item<float>(), 1e-4) << "q_len " << c.q_len;
  }
  EXPECT_FALSE(BlockSparseAttentionTensorOps(at::randn({2, 4, 8}), at::randn({3, 4, 8}),
                                             at::randn({3, 4, 8}), at::ones({1, 1, 1}, at::kBool),
                                             64, 1.0)
                   .ok());
}

}  // namespace
}  // namespace attnkit::sparse
