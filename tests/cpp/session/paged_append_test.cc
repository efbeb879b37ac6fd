// session::AppendPagedRows on CPU tensors (the ATen reference the device store runs in tests and
// the CUDA kernel is checked against): every new token lands in the slot its page table and
// length name, nothing else in the arena changes, and the lengths advance.
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "session/paged_append.h"

namespace attnkit::session {
namespace {

TEST(PagedAppendTest, WritesTheSlotsTheTableNames) {
  at::manual_seed(3);
  const int64_t S = 2, Hkv = 3, R = S * Hkv, T = 5, P = 4, d = 8, max_pages = 8;
  const int64_t pages = R * max_pages + 2;
  const at::Tensor arena = at::randn({pages * 2 * P, d});
  const at::Tensor before = arena.clone();
  const at::Tensor ids =
      at::randperm(pages, at::kLong).narrow(0, 0, R * max_pages).view({R, max_pages}).to(at::kInt);
  const std::vector<int32_t> start = {0, 3, 4, 7, 11, 19};
  const at::Tensor lengths = at::tensor(start, at::kInt);
  // k as a strided view (every other head of a wider tensor), v contiguous.
  const at::Tensor k = at::randn({S, 2 * Hkv, T, d}).slice(1, 0, 2 * Hkv, 2);
  const at::Tensor v = at::randn({S, Hkv, T, d});
  ASSERT_TRUE(AppendPagedRows(arena, ids, lengths, P, k, v).ok());
  at::Tensor expected = before.clone();
  for (int64_t r = 0; r < R; ++r) {
    EXPECT_EQ(lengths[r].item<int32_t>(), start[r] + T) << r;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = start[r] + t;
      const int64_t page = ids[r][i / P].item<int32_t>();
      expected[page * 2 * P + i % P].copy_(k[r / Hkv][r % Hkv][t]);
      expected[page * 2 * P + P + i % P].copy_(v[r / Hkv][r % Hkv][t]);
    }
  }
  EXPECT_TRUE(at::equal(arena, expected));
  // A second call continues where the first left off.
  const at::Tensor k2 = at::randn({S, Hkv, 1, d}), v2 = at::randn({S, Hkv, 1, d});
  ASSERT_TRUE(AppendPagedRows(arena, ids, lengths, P, k2, v2).ok());
  const int64_t i = start[5] + T, page = ids[5][i / P].item<int32_t>();
  EXPECT_TRUE(at::equal(arena[page * 2 * P + i % P], k2[1][2][0]));
  EXPECT_TRUE(at::equal(arena[page * 2 * P + P + i % P], v2[1][2][0]));
  EXPECT_EQ(lengths[5].item<int32_t>(), start[5] + T + 1);
}

}  // namespace
}  // namespace attnkit::session
