// The fused XAttention estimate on CUDA (core/kernels/cuda/xattention_estimate.cu) against the
// plain ATen reference of core/kernels/cpu/xattention_estimate.h, run on the same (rounded) inputs.
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cuda_test_util.h"

#ifdef ATTNKIT_WITH_CUDA
#include "cpu/xattention_estimate.h"
#endif

namespace attnkit::testing {
namespace {

// Lq, Lk, head dim, stride, block
using Case = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;

class XAttentionCuda : public ::testing::TestWithParam<std::tuple<Case, at::ScalarType>> {};

TEST_P(XAttentionCuda, MatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const auto [c, dtype] = GetParam();
  const auto [Lq, Lk, d, stride, block] = c;
  at::manual_seed(31 * Lq + Lk + d + stride);
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  // Queries and keys with a shared direction, so the softmax is far from uniform.
  at::Tensor dir = at::randn({1, 1, d}, o);
  at::Tensor q = (at::randn({8, Lq, d}, o) + 0.5 * dir).to(dtype);
  at::Tensor k = (at::randn({2, Lk, d}, o) + 0.5 * dir).to(dtype);
  auto est = cuda::XAttentionEstimate(q, k, block, stride);
  ASSERT_TRUE(est.ok()) << est.status();
  auto ref = kernels::XAttentionEstimateReference(q.cpu().to(at::kFloat), k.cpu().to(at::kFloat),
                                                  block, stride);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_EQ(est->sizes(), ref->sizes());
  EXPECT_LT(MaxAbsError(*est, *ref), 2e-3);
  EXPECT_LT(RelError(*est, *ref), 1e-3);
  // Each query block row sums to the number of its reshaped rows that hold real queries.
  EXPECT_LT(MaxAbsError(est->sum(-1), ref->sum(-1)), 2e-3);
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Cases, XAttentionCuda,
    ::testing::Combine(
        ::testing::Values(Case{1024, 1024, 128, 8, 128}, Case{700, 1500, 128, 8, 128},
                          Case{2048, 2048, 64, 16, 128}, Case{1000, 1000, 64, 8, 128},
                          Case{513, 900, 128, 4, 128}, Case{640, 1280, 128, 8, 256},
                          // several row and key tiles (one pass); cells of 24
                          // reshaped keys (two-pass kernel)
                          Case{4096, 4500, 128, 8, 128}, Case{1000, 1200, 128, 8, 192},
                          Case{3000, 3000, 64, 8, 1024}),
        ::testing::Values(at::kBFloat16, at::kHalf)));

TEST(XAttentionCudaTest, RejectsBadArguments) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor q = at::randn({4, 256, 128}, o), k = at::randn({2, 256, 128}, o);
  EXPECT_EQ(cuda::XAttentionEstimate(q, k, 128, 32).status().code(),
            absl::StatusCode::kInvalidArgument);  // 128 / 32 = 4 reshaped rows per block
  EXPECT_EQ(cuda::XAttentionEstimate(q, k, 128, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::XAttentionEstimate(q.to(at::kFloat), k, 128, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::XAttentionEstimate(k, q, 128, 8).status().code(),
            absl::StatusCode::kInvalidArgument);  // 2 query heads over 4 kv heads
#endif
}

}  // namespace
}  // namespace attnkit::testing
