// Fused paged decode attention with eviction scores on CUDA (core/kernels/cuda/paged_decode.cu)
// against the ATen reference over the same tokens gathered into contiguous tensors.
#include <cmath>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "cuda_test_util.h"

namespace attnkit::testing {
namespace {

// head dim, page size, group, lengths (one per kv head), tokens per split (0: the device's pick)
using Case = std::tuple<int64_t, int64_t, int64_t, std::vector<int64_t>, int64_t>;
class PagedDecodeCuda : public ::testing::TestWithParam<std::tuple<Case, at::ScalarType>> {};

TEST_P(PagedDecodeCuda, MatchesReference) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const auto [c, dtype] = GetParam();
  const auto [d, page_size, group, lengths, split_tokens] = c;
  const int64_t Hkv = static_cast<int64_t>(lengths.size()), H = Hkv * group;
  int64_t max_len = 0, total_pages = 0, max_pages = 1;
  for (int64_t len : lengths) {
    max_len = std::max(max_len, len);
    total_pages += (len + page_size - 1) / page_size;
    max_pages = std::max(max_pages, (len + page_size - 1) / page_size);
  }
  at::manual_seed(17 + d + page_size + max_len);
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  // A pool of pages [pages, 2 (keys, values), page_size, d], filled with noise, handed out in a
  // shuffled order.
  at::Tensor pool = at::randn({total_pages + 3, 2, page_size, d}, o).to(dtype);
  at::Tensor order = at::randperm(total_pages + 3, at::kLong);
  at::Tensor ptrs = at::zeros({Hkv, max_pages}, at::kLong);
  const int64_t page_bytes = 2 * page_size * d * pool.element_size();
  const auto base = reinterpret_cast<int64_t>(pool.data_ptr());
  at::Tensor q = at::randn({H, d}, o).to(dtype) * 2;
  at::Tensor scores0 = at::rand({Hkv, max_len + 5}, o);
  at::Tensor scores = scores0.clone();
  std::vector<at::Tensor> ref_out(H), ref_scores(Hkv), ref_head_probs(Hkv);
  int64_t next = 0;
  for (int64_t g = 0; g < Hkv; ++g) {
    const int64_t n_pages = (lengths[g] + page_size - 1) / page_size;
    std::vector<at::Tensor> ks, vs;
    for (int64_t p = 0; p < n_pages; ++p) {
      const int64_t page = order[next++].item<int64_t>();
      ptrs[g][p] = base + page * page_bytes;
      const int64_t rows = std::min(page_size, lengths[g] - p * page_size);
      ks.push_back(pool[page][0].narrow(0, 0, rows));
      vs.push_back(pool[page][1].narrow(0, 0, rows));
    }
    at::Tensor qg = q.narrow(0, g * group, group);
    if (lengths[g] == 0) {
      for (int64_t i = 0; i < group; ++i) ref_out[g * group + i] = at::zeros({d}, o);
      ref_scores[g] = at::zeros({0}, o);
      ref_head_probs[g] = at::zeros({group, 0}, o);
      continue;
    }
    auto ref = cuda::DenseDecodeReference(qg, at::cat(ks).unsqueeze(0), at::cat(vs).unsqueeze(0),
                                          1 / std::sqrt(double(d)));
    ASSERT_TRUE(ref.ok());
    for (int64_t i = 0; i < group; ++i) ref_out[g * group + i] = ref->first[i];
    ref_scores[g] = ref->second[0];
    // Each query head's own probabilities (the per-head score rows).
    ref_head_probs[g] = at::softmax(
        at::matmul(qg.to(at::kFloat), at::cat(ks).to(at::kFloat).t()) / std::sqrt(double(d)), -1);
  }
  cuda::PagedCache cache;
  cache.page_ptrs = ptrs.to(at::kCUDA);
  std::vector<int32_t> len32(lengths.begin(), lengths.end());
  cache.lengths = at::tensor(len32, at::kInt).to(at::kCUDA);
  cache.max_length = max_len;
  cache.page_size = page_size;
  cache.head_dim = d;
  cache.dtype = dtype;
  PoisonAllocator(H * d, dtype);
  auto out = cuda::PagedDecodeAttention(q, cache, 1 / std::sqrt(double(d)), &scores, split_tokens);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(at::isnan(*out).any().item<bool>());
  const double tol = dtype == at::kBFloat16 ? 1e-2 : 3e-3;
  EXPECT_LT(RelError(*out, at::stack(ref_out)), tol);
  for (int64_t g = 0; g < Hkv; ++g) {
    at::Tensor added = (scores[g] - scores0[g]);
    if (lengths[g] > 0) {
      EXPECT_LT(MaxAbsError(added.narrow(0, 0, lengths[g]), ref_scores[g]), 2e-4) << g;
      EXPECT_NEAR(added.narrow(0, 0, lengths[g]).sum().item<double>(), double(group), 1e-3);
    }
    EXPECT_TRUE(at::equal(scores[g].narrow(0, lengths[g], max_len + 5 - lengths[g]),
                          scores0[g].narrow(0, lengths[g], max_len + 5 - lengths[g])))
        << "scores past the cached tokens must stay";
  }
  // Per query head: a scores tensor of H rows takes each head's own probabilities.
  if (group > 1) {
    at::Tensor head0 = at::rand({H, max_len + 3}, o), head = head0.clone();
    auto out2 = cuda::PagedDecodeAttention(q, cache, 1 / std::sqrt(double(d)), &head, split_tokens);
    ASSERT_TRUE(out2.ok()) << out2.status();
    EXPECT_TRUE(at::equal(*out2, *out)) << "the output does not depend on the score layout";
    for (int64_t g = 0; g < Hkv; ++g) {
      const at::Tensor added = (head - head0).narrow(0, g * group, group);
      if (lengths[g] > 0) {
        EXPECT_LT(MaxAbsError(added.narrow(1, 0, lengths[g]), ref_head_probs[g]), 2e-4) << g;
      }
      EXPECT_TRUE(at::equal(
          head.narrow(0, g * group, group).narrow(1, lengths[g], max_len + 3 - lengths[g]),
          head0.narrow(0, g * group, group).narrow(1, lengths[g], max_len + 3 - lengths[g])))
          << "scores past the cached tokens must stay";
    }
  }
#endif
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PagedDecodeCuda,
    ::testing::Combine(
        ::testing::Values(Case{128, 16, 4, {1000, 777}, 0}, Case{128, 64, 8, {5000, 1, 4096}, 0},
                          Case{64, 32, 2, {300, 0, 2049, 64}, 0},
                          Case{128, 128, 4, {32768, 20000}, 0}, Case{64, 16, 1, {70000}, 0},
                          // fixed split sizes; one token per page; 3 heads per kv head (kernel
                          // built for 4); 8 heads with 1024-token splits
                          Case{128, 64, 4, {32768, 5000}, 64}, Case{128, 1, 4, {2500, 1300}, 128},
                          Case{128, 32, 3, {4000, 100}, 0}, Case{64, 64, 8, {9000, 3}, 1024}),
        ::testing::Values(at::kBFloat16, at::kHalf)));

TEST(PagedDecodeCudaTest, RejectsBadArguments) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  auto o = at::TensorOptions().device(at::kCUDA);
  cuda::PagedCache cache;
  cache.page_ptrs = at::zeros({2, 4}, o.dtype(at::kLong));
  cache.lengths = at::zeros({2}, o.dtype(at::kInt));
  cache.max_length = 64;
  cache.page_size = 16;
  cache.head_dim = 128;
  at::Tensor q = at::randn({8, 128}, o.dtype(at::kBFloat16));
  EXPECT_EQ(cuda::PagedDecodeAttention(q.to(at::kFloat), cache, 0.1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::PagedDecodeAttention(at::randn({36, 128}, o.dtype(at::kBFloat16)), cache, 0.1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);  // 18 heads per kv head
  EXPECT_EQ(cuda::PagedDecodeAttention(q, cache, 0.1, nullptr, 100).status().code(),
            absl::StatusCode::kInvalidArgument);  // not a multiple of 64
  EXPECT_EQ(cuda::PagedDecodeAttention(q, cache, 0.1, nullptr, 2048).status().code(),
            absl::StatusCode::kInvalidArgument);  // over 1024
  cache.max_length = 65;                          // more than 4 pages of 16
  EXPECT_EQ(cuda::PagedDecodeAttention(q, cache, 0.1).status().code(),
            absl::StatusCode::kInvalidArgument);
#endif
}

}  // namespace
}  // namespace attnkit::testing
