// Selection building blocks: torch-compatible top-k (ties), integer linspace, pooling.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include <ATen/Functions.h>
#include <gtest/gtest.h>

#include "eviction/scorers.h"
#include "eviction/selection.h"

namespace attnkit::eviction {
namespace {

TEST(SelectionTest, TopKMatchesTorchTopKWithTies) {
  // Scores with many exact ties (as max-pooled scores have): the chosen set must be torch's.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 5 + static_cast<int>(rng() % 120);
    const int k = 1 + static_cast<int>(rng() % n);
    std::vector<double> values(n);
    std::vector<float> as_float(n);
    for (int i = 0; i < n; ++i) {
      values[i] = static_cast<double>(rng() % 6) * 0.25;
      as_float[i] = static_cast<float>(values[i]);
    }
    for (bool largest : {true, false}) {
      at::Tensor t = at::from_blob(as_float.data(), {n}, at::kFloat);
      at::Tensor expected = std::get<1>(at::topk(t, k, -1, largest, /*sorted=*/true));
      std::vector<int64_t> want(expected.data_ptr<int64_t>(), expected.data_ptr<int64_t>() + k);
      std::vector<int64_t> got = TopK(values, k, largest);
      std::sort(want.begin(), want.end());
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, want) << "n=" << n << " k=" << k << " largest=" << largest;
    }
  }
}

bool SameBits(const std::vector<double>& a, const std::vector<double>& b) {
  // memcmp of two empty vectors would pass it null pointers (undefined, and UBSan says so).
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), sizeof(double) * a.size()) == 0);
}

// The observation row sums: every path this CPU has (baseline, AVX2, AVX-512) gives the bits of
// the plain loop, row after row, for lengths around the vector blocks and a stride wider than the
// length (the rows of one observation are a cache's capacity apart). Values of mixed magnitude
// make the order of the additions show in the bits.
TEST(SelectionTest, AddRowsIntoEveryPathMatchesThePlainLoop) {
  __builtin_cpu_init();
  const bool has[] = {true, static_cast<bool>(__builtin_cpu_supports("avx2")),
                      static_cast<bool>(__builtin_cpu_supports("avx512f"))};
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> mantissa(0.0f, 1.0f);
  std::uniform_int_distribution<int> exponent(-30, 10);
  for (int64_t n : {0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 100, 1056}) {
    for (int64_t count : {1, 3, 32}) {
      const int64_t stride = n + 5;
      std::vector<float> src(static_cast<size_t>(stride * count));
      for (float& x : src) x = std::ldexp(mantissa(rng), exponent(rng));
      std::vector<double> start(static_cast<size_t>(n));
      for (double& x : start) x = std::ldexp(static_cast<double>(mantissa(rng)), exponent(rng));
      std::vector<double> want = start;
      for (int64_t j = 0; j < count; ++j)
        for (int64_t k = 0; k < n; ++k) want[k] += static_cast<double>(src[j * stride + k]);
      for (int path = 0; path < 3; ++path) {
        if (!has[path]) {
          std::printf("AddRowsInto path %d: this CPU lacks it, not run\n", path);
          continue;
        }
        std::vector<double> got = start;
        testing::AddRowsIntoPath(path, got.data(), src.data(), stride, count, n);
        ASSERT_TRUE(SameBits(got, want)) << "path " << path << " n=" << n << " count=" << count;
      }
      std::vector<double> got = start;
      AddRowsInto(got.data(), src.data(), stride, count, n);
      ASSERT_TRUE(SameBits(got, want));
    }
  }
}

// torch >= 2 computes integer linspace with a double step and symmetric halves (the reference's
// KVCrush picks depend on it; libtorch 1.13 here uses an integer step, so it is no oracle).
TEST(SelectionTest, IntegerLinspaceFollowsTorchTwoFormula) {
  EXPECT_EQ(IntegerLinspace(10, 4), (std::vector<int64_t>{0, 3, 6, 10}));
  EXPECT_EQ(IntegerLinspace(9, 4), (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(IntegerLinspace(5, 3), (std::vector<int64_t>{0, 2, 5}));
  std::vector<int64_t> ones(16, 0);
  ones[15] = 1;
  EXPECT_EQ(IntegerLinspace(1, 16), ones);
  EXPECT_EQ(IntegerLinspace(7, 1), (std::vector<int64_t>{0}));
  EXPECT_TRUE(IntegerLinspace(7, 0).empty());
}

TEST(SelectionTest, MaxPoolCenteredMatchesTorchAndForwardLooksAhead) {
  std::vector<double> values = {1, 5, 2, 0, 0, 0, 0, 0, 9, 3, 1};
  std::vector<float> f(values.begin(), values.end());
  at::Tensor t = at::from_blob(f.data(), {1, 1, static_cast<int64_t>(f.size())}, at::kFloat);
  at::Tensor expected = at::max_pool1d(t, 7, 1, 3).flatten();
  std::vector<double> centered = MaxPool(values, 7, PoolingAlignment::kCentered);
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(centered[i], expected[i].item<float>()) << i;
  std::vector<double> forward = MaxPool(values, 3, PoolingAlignment::kForward);
  EXPECT_EQ(forward, (std::vector<double>{5, 5, 2, 0, 0, 0, 9, 9, 9, 3, 1}));
}

TEST(SelectionTest, SelectRowKeepsAreasAndBudget) {
  EvictionOptions o;
  o.per_group = false;
  o.group_size = 1;
  o.start_tokens = 2;
  o.intermediate_tokens = 3;
  o.recent_tokens = 2;
  // 10 tokens: scores for positions 2..9.
  std::vector<double> scores = {0.1, 0.9, 0.2, 0.8, 0.05, 0.7, 0.3, 0.3};
  std::mt19937_64 rng(0);
  std::vector<int64_t> kept = SelectRow(scores, 10, Areas{2, 3, 2}, o, at::Tensor(), rng);
  // start {0,1}, top-3 of positions 2..7 by score {3 (0.9), 5 (0.8), 7 (0.7)}, recent {8, 9}.
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1, 3, 5, 7, 8, 9}));
}

TEST(SelectionTest, AdaKvGivesConcentratedHeadsMoreAndKeepsFloor) {
  EvictionOptions o;
  o.per_group = false;
  o.group_size = 1;
  o.adakv_floor = 0.2;
  // Two heads, 2 start + 20 evictable + 2 recent; intermediate 10 each -> 20 in total.
  std::vector<std::vector<double>> scores(2, std::vector<double>(22, 0.0));
  for (int i = 0; i < 20; ++i) {
    scores[0][i] = 1.0 + i;   // head 0: large everywhere
    scores[1][i] = 0.01 * i;  // head 1: small
  }
  auto kept = SelectAdaKV(scores, {24, 24}, Areas{2, 10, 2}, o);
  ASSERT_EQ(kept.size(), 2u);
  const int64_t total = static_cast<int64_t>(kept[0].size() + kept[1].size());
  EXPECT_EQ(total, 2 * (2 + 10 + 2));
  EXPECT_GT(kept[0].size(), kept[1].size());
  // Floor: 20 % of 10 = 2 intermediate tokens for head 1 besides start and recent.
  EXPECT_GE(kept[1].size(), 2u + 2u + 2u);
}

}  // namespace
}  // namespace attnkit::eviction
