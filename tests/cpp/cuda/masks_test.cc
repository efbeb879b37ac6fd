// A-shape / Tri-shape block lists built on CUDA (core/kernels/cuda/masks.cu) against the CPU masks
// of attnkit/sparse/masks.h, bool masks to lists, and Tri-shape attention end to end.
#include <cmath>
#include <tuple>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cuda_test_util.h"

#ifdef ATTNKIT_WITH_CUDA
#include "attnkit/sparse/masks.h"
#endif

namespace attnkit::testing {
namespace {

#ifdef ATTNKIT_WITH_CUDA
// Lists back to a bool mask on the CPU.
at::Tensor ListsToMask(const cuda::BlockLists& lists, int64_t k_blocks) {
  at::Tensor idx = lists.indices.cpu(), cnt = lists.counts.cpu();
  at::Tensor m = at::zeros({idx.size(0), idx.size(1), k_blocks}, at::kBool);
  auto mi = m.accessor<bool, 3>();
  auto ii = idx.accessor<int32_t, 3>();
  auto ci = cnt.accessor<int32_t, 2>();
  for (int64_t h = 0; h < idx.size(0); ++h)
    for (int64_t r = 0; r < idx.size(1); ++r) {
      int32_t prev = -1;
      for (int32_t i = 0; i < ci[h][r]; ++i) {
        EXPECT_GT(ii[h][r][i], prev) << "lists must be ascending";
        prev = ii[h][r][i];
        mi[h][r][ii[h][r][i]] = true;
      }
    }
  return m;
}
#endif

// q_len, k_len, sink, recent, last_query
using Case = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;
class ShapeMasksCuda : public ::testing::TestWithParam<Case> {};

TEST_P(ShapeMasksCuda, MatchCpuMasks) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const auto [q_len, k_len, sink, recent, last] = GetParam();
  auto grid = sparse::BlockGrid::Make(q_len, k_len, 128);
  ASSERT_TRUE(grid.ok());
  for (bool tri : {false, true}) {
    at::Tensor mask;
    auto lists = cuda::ShapeBlockLists(q_len, k_len, 128, sink, recent, last, tri,
                                       at::Device(at::kCUDA, 0), &mask);
    ASSERT_TRUE(lists.ok()) << lists.status();
    at::Tensor expected = tri ? sparse::TriShapeMask(*grid, sink, recent, last)
                              : sparse::AShapeMask(*grid, sink, recent);
    EXPECT_TRUE(at::equal(mask.cpu(), expected)) << (tri ? "tri-shape" : "a-shape");
    EXPECT_TRUE(at::equal(ListsToMask(*lists, grid->k_blocks), expected));
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ShapeMasksCuda,
    ::testing::Values(Case{8192, 8192, 128, 1024, 100}, Case{5000, 9000, 300, 2048, 100},
                      Case{1000, 1000, 128, 1024, 100},  // dense
                      Case{40000, 40000, 0, 4096, 1000}, Case{4097, 4097, 128, 512, 0},
                      // Continued prompts off the block: dense with a short offset (the rows
                      // reach past the diagonal), a tail over a partial block, none at 0.
                      Case{200, 630, 128, 256, 100}, Case{700, 1000, 128, 768, 100},
                      Case{1000, 1500, 0, 256, 0}, Case{650, 1200, 128, 256, 28}));

TEST(MaskListsCudaTest, RandomMasksRoundTrip) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  at::manual_seed(3);
  for (int64_t kb : {1, 31, 32, 33, 100, 1000}) {
    at::Tensor m = at::rand({3, 7, kb}) < 0.3;
    auto lists = cuda::MaskToBlockLists(m, at::Device(at::kCUDA, 0));
    ASSERT_TRUE(lists.ok());
    EXPECT_TRUE(at::equal(ListsToMask(*lists, kb), m)) << kb;
    EXPECT_TRUE(at::equal(lists->counts.cpu().to(at::kLong), m.sum(-1)));
  }
#endif
}

TEST(MaskListsCudaTest, TriShapeAttentionMatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  at::manual_seed(4);
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  const int64_t L = 3000;
  at::Tensor q = at::randn({8, L, 128}, o), k = at::randn({2, L, 128}, o),
             v = at::randn({2, L, 128}, o);
  at::Tensor mask;
  auto lists = cuda::ShapeBlockLists(L, L, 128, 128, 512, 100, true, q.device(), &mask);
  ASSERT_TRUE(lists.ok());
  auto out = cuda::BlockSparseAttention(q, k, v, *lists, 128, 1 / std::sqrt(128.0));
  ASSERT_TRUE(out.ok()) << out.status();
  auto ref = cuda::BlockSparseAttentionReference(q, k, v, mask, 128, 1 / std::sqrt(128.0));
  ASSERT_TRUE(ref.ok());
  EXPECT_LT(RelError(*out, *ref), 1.2e-2);
#endif
}

}  // namespace
}  // namespace attnkit::testing
