// Block-sparse causal attention on CUDA (core/kernels/cuda/block_sparse_attention.cu) against the
// ATen reference (scores materialized in float32) and the CPU reference of core/kernels/cpu.
#include <cmath>
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cuda_test_util.h"

#ifdef ATTNKIT_WITH_CUDA
#include "attnkit/sparse/masks.h"
#include "cpu/block_sparse_attention.h"
#endif

namespace attnkit::testing {
namespace {

#ifdef ATTNKIT_WITH_CUDA
struct Inputs {
  at::Tensor q, k, v;
};
Inputs Random(int64_t H, int64_t Hkv, int64_t Lq, int64_t Lk, int64_t d, at::ScalarType dtype,
              uint64_t seed) {
  at::manual_seed(seed);
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  return {at::randn({H, Lq, d}, o).to(dtype), at::randn({Hkv, Lk, d}, o).to(dtype),
          at::randn({Hkv, Lk, d}, o).to(dtype)};
}

// Random block-causal mask [mh, qb, kb] with about `density` of the causal blocks, seeded.
at::Tensor RandomMask(int64_t mh, int64_t qb, int64_t kb, double density, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor m = at::rand({mh, qb, kb}) < density;
  at::Tensor r = at::arange(qb).unsqueeze(1), c = at::arange(kb).unsqueeze(0);
  return at::logical_and(m, (c <= r + (kb - qb)).unsqueeze(0));
}

void ExpectMatches(const Inputs& in, const at::Tensor& mask, int64_t block, double scale,
                   const char* what) {
  const int64_t H = in.q.size(0), Lq = in.q.size(1), d = in.q.size(2);
  auto lists = cuda::MaskToBlockLists(mask, in.q.device());
  ASSERT_TRUE(lists.ok()) << lists.status();
  PoisonAllocator(H * Lq * d, in.q.scalar_type());
  auto out = cuda::BlockSparseAttention(in.q, in.k, in.v, *lists, block, scale);
  ASSERT_TRUE(out.ok()) << out.status();
  auto ref = cuda::BlockSparseAttentionReference(in.q, in.k, in.v, mask, block, scale);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(out->sizes(), ref->sizes());
  EXPECT_EQ(out->scalar_type(), in.q.scalar_type());
  EXPECT_FALSE(at::isnan(*out).any().item<bool>()) << what << ": unwritten or NaN output";
  const double rel = RelError(*out, *ref);
  const double tol = in.q.scalar_type() == at::kBFloat16 ? 1.2e-2 : 4e-3;
  EXPECT_LT(rel, tol) << what;
  EXPECT_LT(MaxAbsError(*out, *ref), 30 * tol) << what;
}
#endif

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // Lq, Lk, head dim

class BlockSparseCuda : public ::testing::TestWithParam<std::tuple<Shape, at::ScalarType>> {};

TEST_P(BlockSparseCuda, FullCausalMaskMatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const auto [shape, dtype] = GetParam();
  const auto [Lq, Lk, d] = shape;
  const Inputs in = Random(8, 2, Lq, Lk, d, dtype, 1000 + Lq + d);
  auto grid = sparse::BlockGrid::Make(Lq, Lk, 128);
  ASSERT_TRUE(grid.ok());
  ExpectMatches(in, sparse::CausalBlockMask(*grid), 128, 1.0 / std::sqrt(double(d)), "causal");
#endif
}

TEST_P(BlockSparseCuda, RandomPerHeadMaskMatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const auto [shape, dtype] = GetParam();
  const auto [Lq, Lk, d] = shape;
  const Inputs in = Random(8, 4, Lq, Lk, d, dtype, 2000 + Lk + d);
  const int64_t qb = (Lq + 127) / 128, kb = (Lk + 127) / 128;
  // Per-head masks (some rows empty: those queries get zeros) and one shared mask.
  ExpectMatches(in, RandomMask(8, qb, kb, 0.4, 7 + Lq), 128, 0.09, "per-head mask");
  ExpectMatches(in, RandomMask(1, qb, kb, 0.6, 8 + Lq), 128, 0.09, "shared mask");
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BlockSparseCuda,
    ::testing::Combine(::testing::Values(Shape{512, 512, 128}, Shape{1000, 1000, 128},
                                         Shape{300, 1100, 128}, Shape{777, 777, 64},
                                         Shape{130, 2000, 64}),
                       ::testing::Values(at::kBFloat16, at::kHalf)));

TEST(BlockSparseCudaTest, BlockSize256AndStridedInputs) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  // [L, H, d] storage viewed as [H, L, d]: read in place through the strides.
  at::manual_seed(5);
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor q = at::randn({900, 6, 128}, o).transpose(0, 1);
  at::Tensor k = at::randn({1200, 2, 128}, o).transpose(0, 1);
  at::Tensor v = at::randn({1200, 2, 128}, o).transpose(0, 1);
  ExpectMatches({q, k, v}, RandomMask(6, 4, 5, 0.7, 11), 256, 0.088, "block 256, strided");
  auto lists = cuda::MaskToBlockLists(RandomMask(1, 4, 5, 1.0, 1), q.device());
  ASSERT_TRUE(lists.ok());
  auto strided = cuda::BlockSparseAttention(q, k, v, *lists, 256, 0.088);
  auto packed = cuda::BlockSparseAttention(q.contiguous(), k.contiguous(), v.contiguous(), *lists,
                                           256, 0.088);
  ASSERT_TRUE(strided.ok() && packed.ok());
  EXPECT_TRUE(at::equal(*strided, *packed));
#endif
}

TEST(BlockSparseCudaTest, AgreesWithTheCpuReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const Inputs in = Random(4, 1, 384, 640, 128, at::kBFloat16, 99);
  at::Tensor mask = RandomMask(4, 3, 5, 0.5, 3);
  auto lists = cuda::MaskToBlockLists(mask, in.q.device());
  ASSERT_TRUE(lists.ok());
  auto out = cuda::BlockSparseAttention(in.q, in.k, in.v, *lists, 128, 0.1);
  ASSERT_TRUE(out.ok()) << out.status();
  auto cpu =
      kernels::BlockSparseAttentionReference(in.q.cpu().to(at::kFloat), in.k.cpu().to(at::kFloat),
                                             in.v.cpu().to(at::kFloat), mask, 128, 0.1);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_LT(RelError(*out, *cpu), 1.2e-2);
#endif
}

TEST(BlockSparseCudaTest, RejectsBadArguments) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const Inputs in = Random(4, 2, 256, 256, 128, at::kBFloat16, 1);
  auto lists = cuda::MaskToBlockLists(RandomMask(1, 2, 2, 1.0, 1), in.q.device());
  ASSERT_TRUE(lists.ok());
  auto f32 = cuda::BlockSparseAttention(in.q.to(at::kFloat), in.k, in.v, *lists, 128, 0.1);
  EXPECT_EQ(f32.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(f32.status().message().find("q must be bfloat16 or float16"), std::string::npos);
  auto cpu = cuda::BlockSparseAttention(in.q.cpu(), in.k, in.v, *lists, 128, 0.1);
  EXPECT_EQ(cpu.status().code(), absl::StatusCode::kInvalidArgument);
  auto b64 = cuda::BlockSparseAttention(in.q, in.k, in.v, *lists, 64, 0.1);
  EXPECT_EQ(b64.status().code(), absl::StatusCode::kInvalidArgument);
  auto heads = cuda::BlockSparseAttention(in.q.narrow(0, 0, 3), in.k, in.v, *lists, 128, 0.1);
  EXPECT_EQ(heads.status().code(), absl::StatusCode::kInvalidArgument);
  auto d96 = cuda::BlockSparseAttention(in.q.narrow(2, 0, 96), in.k.narrow(2, 0, 96),
                                        in.v.narrow(2, 0, 96), *lists, 128, 0.1);
  EXPECT_EQ(d96.status().code(), absl::StatusCode::kInvalidArgument);
#endif
}

}  // namespace
}  // namespace attnkit::testing
