// The CPU kernels of visual selection (core/kernels/cpu/visual_greedy.h) against the plain ATen
// reference implementations (core/src/visual/visual_reference.h).
#include "cpu/visual_greedy.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu/visual_linalg.h"
#include "visual/cdpruner_kernel.h"
#include "visual/visual_math.h"
#include "visual/visual_reference.h"

namespace attnkit {
namespace {

std::vector<int64_t> FastGreedy(const at::Tensor& kernel, const at::Tensor& scale, int64_t k,
                                bool guard, int threads = 1) {
  at::Tensor kc = kernel.contiguous();
  const int64_t n = kc.size(0);
  std::vector<float> work(kernels::DppGreedyMapWorkSize(n, k));
  std::vector<int64_t> order(k);
  at::Tensor sc = scale.defined() ? scale.contiguous() : at::Tensor();
  const int64_t count =
      kernels::DppGreedyMap(kc.data_ptr<float>(), sc.defined() ? sc.data_ptr<float>() : nullptr, n,
                            n, k, guard, work.data(), order.data(), threads);
  order.resize(count);
  return order;
}

// A well-conditioned conditional kernel: features with more dimensions than items (full rank).
struct Kernel {
  at::Tensor similarity, relevance, full;
};
Kernel RandomKernel(int64_t n, int64_t d, uint64_t seed) {
  at::manual_seed(seed);
  Kernel k;
  k.similarity = visual::CosineSimilarity(at::randn({n, d}));
  k.relevance = at::exp(at::rand({n}));
  k.full = k.relevance.unsqueeze(1) * k.similarity * k.relevance.unsqueeze(0);
  return k;
}

TEST(DppGreedyMap, MatchesReferenceOnFullRankKernels) {
  for (int64_t n : {1, 2, 7, 8, 9, 33, 64, 100}) {
    for (int64_t k : {int64_t{1}, std::min<int64_t>(n, 5), n}) {
      Kernel kern = RandomKernel(n, n + 16, 100 + n);
      const std::vector<int64_t> ref = visual::ReferenceGreedyMap(kern.full, k, false);
      EXPECT_EQ(FastGreedy(kern.full, at::Tensor(), k, false), ref) << "n=" << n << " k=" << k;
      // Scaled on the fly: the same kernel, rounded the same way.
      EXPECT_EQ(FastGreedy(kern.similarity, kern.relevance, k, false), ref)
          << "n=" << n << " k=" << k;
    }
  }
}

TEST(DppGreedyMap, OnTheFlyScalingRoundsLikeTheReference) {
  // Every step's row of L is (r_j * S_jb) * r_b: the picks of the scaled and the materialized
  // kernel agree even where rounding decides (a rank-deficient kernel, picks in the noise).
  Kernel kern = RandomKernel(96, 8, 7);
  EXPECT_EQ(FastGreedy(kern.similarity, kern.relevance, 40, false),
            FastGreedy(kern.full, at::Tensor(), 40, false));
}

TEST(DppGreedyMap, FirstPickIsLargestDiagonalAndTiesGoFirst) {
  at::Tensor eye = at::eye(6);
  // Identity kernel: every gain equals 1 until picked, so picks go in index order.
  EXPECT_EQ(FastGreedy(eye, at::Tensor(), 6, false), (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  at::Tensor scale = at::tensor({1.0f, 3.0f, 2.0f, 3.0f, 0.5f, 1.0f});
  EXPECT_EQ(FastGreedy(eye, scale, 4, false), (std::vector<int64_t>{1, 3, 2, 0}));
}

TEST(DppGreedyMap, GuardStopsOnVanishingGain) {
  // Items 3.. have zero relevance: their gain is 0 < 1e-10 once the relevant ones are picked.
  Kernel kern = RandomKernel(10, 32, 3);
  at::Tensor scale = kern.relevance.clone();
  scale.narrow(0, 3, 7).zero_();
  const std::vector<int64_t> guarded = FastGreedy(kern.similarity, scale, 8, true);
  EXPECT_EQ(guarded.size(), 3u);
  at::Tensor full = scale.unsqueeze(1) * kern.similarity * scale.unsqueeze(0);
  EXPECT_EQ(guarded, visual::ReferenceGreedyMap(full, 8, true));
  EXPECT_EQ(FastGreedy(kern.similarity, scale, 8, false).size(), 8u);
  // No guard in the reference either: both go on to exactly k picks.
  EXPECT_EQ(FastGreedy(full, at::Tensor(), 8, false), visual::ReferenceGreedyMap(full, 8, false));
}

TEST(DppGreedyMap, ThreadedStepsEqualSerial) {
  Kernel kern = RandomKernel(1500, 64, 11);
  const auto serial = FastGreedy(kern.similarity, kern.relevance, 80, false, 1);
  const auto threaded = FastGreedy(kern.similarity, kern.relevance, 80, false, 2);
  EXPECT_EQ(serial, threaded);
  EXPECT_EQ(serial.size(), 80u);
}

TEST(DppGreedyMap, NaNGainIsPickedFirstLikeTorchArgmax) {
  at::Tensor kernel = at::eye(4);
  kernel[2][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(FastGreedy(kernel, at::Tensor(), 1, false), (std::vector<int64_t>{2}));
  EXPECT_EQ(visual::ReferenceGreedyMap(kernel, 1, false), (std::vector<int64_t>{2}));
}

std::vector<int64_t> FastDivPrune(const at::Tensor& features, int64_t k) {
  at::Tensor sim = visual::CosineSimilarity(features).contiguous();
  const int64_t n = sim.size(0);
  std::vector<float> work(2 * n);
  std::vector<int64_t> order(k);
  kernels::MaxMinDiversity(sim.data_ptr<float>(), n, n, k, work.data(), order.data());
  return order;
}

TEST(MaxMinDiversity, MatchesReference) {
  at::manual_seed(5);
  for (int64_t n : {2, 9, 40}) {
    at::Tensor x = at::randn({n, 24});
    for (int64_t k : {int64_t{1}, n / 2, n}) {
      if (k < 1) continue;
      EXPECT_EQ(FastDivPrune(x, k), visual::ReferenceDivPrune(x, k)) << "n=" << n << " k=" << k;
    }
  }
}

TEST(MaxMinDiversity, DuplicatesNeverPickedTwice) {
  at::Tensor x = at::ones({5, 3});  // every distance is 0
  std::vector<int64_t> order = FastDivPrune(x, 5);
  std::sort(order.begin(), order.end());
  EXPECT_EQ(order, (std::vector<int64_t>{0, 1, 2, 3, 4}));
}

TEST(MaxMinDiversity, FirstPickIsTheMostIsolatedItem) {
  // Two tight clusters and one outlier: the outlier has the largest nearest-neighbour distance.
  at::Tensor x =
      at::tensor({1.0f, 0.0f, 0.99f, 0.1f, 0.0f, 1.0f, 0.1f, 0.99f, -1.0f, 0.05f}).reshape({5, 2});
  EXPECT_EQ(FastDivPrune(x, 1), (std::vector<int64_t>{4}));
}

#pragma GCC optimize("fp-contract=off")

// Scalar statements of the rounding visual_linalg.h promises.
float ScalarNorm8(const float* x, int64_t d) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= d; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] = std::fma(x[i + l], x[i + l], lanes[l]);
  }
  float s = lanes[0];
  for (int l = 1; l < 8; ++l) s = s + lanes[l];
  for (; i < d; ++i) s = std::fma(x[i], x[i], s);
  return std::sqrt(s);
}

TEST(NormalizeRowsExact, RoundsAsSpecifiedAndMatchesATen) {
  at::manual_seed(13);
  for (int64_t d : {1, 7, 8, 19, 64}) {
    at::Tensor x = at::randn({9, d});
    x[3].zero_();
    at::Tensor out = at::empty({9, d}), out_t = at::empty({d, 9});
    kernels::NormalizeRowsExact(x.data_ptr<float>(), 9, d, d, out.data_ptr<float>(),
                                out_t.data_ptr<float>());
    EXPECT_TRUE(at::equal(out.t(), out_t));
    EXPECT_TRUE(at::allclose(out, visual::NormalizeRows(x), 1e-6, 1e-6)) << "d=" << d;
    EXPECT_TRUE(at::equal(out[3], at::zeros({d})));
    for (int64_t i = 0; i < 9; ++i) {
      if (i == 3) continue;
      const float norm = ScalarNorm8(x[i].data_ptr<float>(), d);
      for (int64_t j = 0; j < d; ++j) {
        ASSERT_EQ(out[i][j].item<float>(), x[i][j].item<float>() / norm) << i << "," << j;
      }
    }
  }
}

TEST(SequentialDotGemm, RoundsAsSpecifiedAndMatchesMatmul) {
  at::manual_seed(17);
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{7, 13, 19},
                         {16, 37, 64},
                         {33, 8, 5},
                         {1, 1, 1},
                         {5, 40, 130}}) {
    at::Tensor a = at::randn({m, k}), b = at::randn({n, k});
    at::Tensor bt = b.t().contiguous();
    for (int threads : {1, 2}) {
      at::Tensor c = at::empty({m, n});
      kernels::SequentialDotGemm(a.data_ptr<float>(), k, bt.data_ptr<float>(), n, m, n, k,
                                 c.data_ptr<float>(), n, false, threads);
      EXPECT_TRUE(at::allclose(c, at::matmul(a, b.t()), 1e-4, 1e-4));
      auto av = a.accessor<float, 2>();
      auto bv = b.accessor<float, 2>();
      auto cv = c.accessor<float, 2>();
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          float s = 0.0f;
          for (int64_t t = 0; t < k; ++t) {
            const float p = av[i][t] * bv[j][t];
            s = s + p;
          }
          ASSERT_EQ(cv[i][j], s) << i << "," << j;
        }
      }
    }
  }
}

TEST(SequentialDotGemm, SymmetricEqualsFull) {
  at::manual_seed(19);
  for (int64_t n : {1, 5, 17, 40, 103}) {
    at::Tensor x = at::randn({n, 24});
    at::Tensor xt = x.t().contiguous();
    at::Tensor full = at::empty({n, n}), sym = at::empty({n, n});
    kernels::SequentialDotGemm(x.data_ptr<float>(), 24, xt.data_ptr<float>(), n, n, n, 24,
                               full.data_ptr<float>(), n, false, 1);
    kernels::SequentialDotGemm(x.data_ptr<float>(), 24, xt.data_ptr<float>(), n, n, n, 24,
                               sym.data_ptr<float>(), n, true, 2);
    EXPECT_TRUE(at::equal(full, sym)) << "n=" << n;
    EXPECT_TRUE(at::equal(full, full.t())) << "n=" << n;
  }
}

TEST(AtenOrderSum, OrderAndValue) {
  // Short rows: 4-way interleave, leftovers to the first accumulator.
  const float x[5] = {1e8f, 1.0f, 1.0f, 1.0f, -1e8f};
  EXPECT_EQ(kernels::AtenOrderSum(x, 5), ((((1e8f + -1e8f) + 1.0f) + 1.0f) + 1.0f));
  at::manual_seed(23);
  for (int64_t n : {1, 3, 8, 13, 40, 100, 1000, 70000}) {
    at::Tensor v = at::randn({n});
    EXPECT_NEAR(kernels::AtenOrderSum(v.data_ptr<float>(), n), v.sum().item<float>(),
                1e-4 * std::sqrt(static_cast<double>(n)))
        << "n=" << n;
  }
}

// Distance in units in the last place between two finite floats of the same sign.
int64_t UlpDistance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof(a));
  std::memcpy(&ib, &b, sizeof(b));
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

TEST(ExpU10, WithinOneUlpOfATenAndSameOnVectorAndScalarPaths) {
  // Every float in [-104, 100] on a fine grid (2^21 points), plus random values near 0.
  const int64_t n = int64_t{1} << 21;
  at::Tensor x = at::linspace(-104.0, 100.0, n, at::kFloat);
  x = at::cat({x, at::randn({4099}) * 0.5});
  const int64_t total = x.numel();
  at::Tensor out = at::empty_like(x);
  kernels::ExpU10(x.data_ptr<float>(), total, out.data_ptr<float>());
  at::Tensor ref = at::exp(x);
  const float* xv = x.data_ptr<float>();
  const float* o = out.data_ptr<float>();
  const float* r = ref.data_ptr<float>();
  int64_t differ = 0, worst = 0;
  for (int64_t i = 0; i < total; ++i) {
    const int64_t ulp = UlpDistance(o[i], r[i]);
    differ += ulp != 0;
    worst = std::max(worst, ulp);
    if (i % 977 == 0 || i >= total - 9) {
      // One element alone takes the scalar path: it must round as the 8-wide path.
      float single;
      kernels::ExpU10(xv + i, 1, &single);
      ASSERT_EQ(UlpDistance(single, o[i]), 0) << "x=" << xv[i];
    }
  }
  EXPECT_LE(worst, 1);
  // Informational: where at::exp of this libtorch build is not SLEEF's u10 (bit differences).
  std::printf("ExpU10 vs at::exp: %lld of %lld values differ (max %lld ulp)\n",
              static_cast<long long>(differ), static_cast<long long>(total),
              static_cast<long long>(worst));
}

TEST(ExpU10, SpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const float in[8] = {
      0.0f, -0.0f, -inf, inf, -104.5f, 100.5f, std::numeric_limits<float>::quiet_NaN(), 1.0f};
  for (int64_t n : {8, 1}) {  // the 8-wide path, then each value on the scalar path
    for (int64_t start = 0; start < 8; start += n) {
      float out[8];
      kernels::ExpU10(in + start, n, out);
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = start + j;
        const float want = i == 7 ? std::exp(1.0f) : std::exp(in[i]);
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(out[j])) << i;
        } else if (i == 7) {
          EXPECT_LE(UlpDistance(out[j], want), 1);
        } else {
          EXPECT_EQ(out[j], want) << "x=" << in[i];
        }
      }
    }
  }
}

TEST(ExactApplyTheta, MatchesApplyTheta) {
  at::manual_seed(29);
  at::Tensor rel = at::rand({1001});
  for (double theta : {0.2, 0.5, 0.8, 0.95}) {
    at::Tensor exact = visual::ExactApplyTheta(rel, theta);
    at::Tensor ref = visual::ApplyTheta(rel, theta);
    for (int64_t i = 0; i < rel.numel(); ++i) {
      ASSERT_LE(UlpDistance(exact[i].item<float>(), ref[i].item<float>()), 1) << theta << " " << i;
    }
  }
  EXPECT_TRUE(visual::ExactApplyTheta(rel, 1.0).is_same(rel));
}

}  // namespace
}  // namespace attnkit
