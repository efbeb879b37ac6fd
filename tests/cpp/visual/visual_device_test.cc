// The device path of visual selection (core/src/visual/visual_device.h), run on CPU tensors,
// against the exact host path (core/kernels/cpu/visual_greedy.h, what VisualPruner runs for CPU
// inputs). The two kernels round differently (BLAS GEMMs against the reference's sequential sums),
// so the picks must be equal where every greedy step has a clear winner (float64 gap between the
// best and the second-best gain far above float32 rounding), and elsewhere every device pick must
// still be a greedy step up to rounding and the DPP objective (log det of the picked kernel) must
// agree.
#include "visual/visual_device.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "attnkit/visual/visual_pruner.h"
#include "cpu/visual_greedy.h"
#include "cpu/visual_linalg.h"
#include "visual/visual_math.h"
#include "visual_selection_util.h"

namespace attnkit {
namespace {

using testing::Cdp;
using testing::Indices;
using testing::Inputs;
using testing::Random;
using testing::Selection;
using testing::Sorted;

using testing::ExpectSamePicks;
constexpr double kSeparated = testing::kSeparatedGains;
constexpr double kMaxShortfall = testing::kMaxGreedyShortfall;

std::unique_ptr<VisualPruner> Make(const VisualOptions& options) {
  auto p = VisualPruner::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

struct Selections {
  Selection host, device;
};

// VisualPruner::Select (CPU tensors: the exact host path) and the same call forced onto the device
// path; `device_options` (default: `options`) configures the device call.
Selections SelectBoth(const VisualOptions& options, const std::vector<VisualImage>& images,
                      const at::Tensor& text, const VisualOptions* device_options = nullptr) {
  auto host = Make(options)->Select(images, text);
  auto device = visual::SelectOnDeviceForTesting(*Make(device_options ? *device_options : options),
                                                 images, text);
  EXPECT_TRUE(host.ok()) << host.status();
  EXPECT_TRUE(device.ok()) << device.status();
  if (!host.ok() || !device.ok()) return {};
  EXPECT_EQ(host->size(), device->size());
  return {*host, *device};
}

// The device path's picks of one problem in pick order (SelectCdprunerOnDevice directly).
Indices DeviceOrder(const at::Tensor& embeds, const at::Tensor& features, const at::Tensor& text,
                    int64_t k, const VisualOptions& options) {
  visual::SelectionProblem p{embeds.to(at::kFloat), features.to(at::kFloat), k};
  auto r = visual::SelectCdprunerOnDevice({p}, text.to(at::kFloat), options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->at(0) : Indices{};
}

struct Shape {
  int64_t n, k, m, c, dv;
  bool separated;  // every greedy step has a clear winner: the picks must be equal
};

TEST(VisualDevice, CdprunerMatchesTheExactHostPath) {
  // (N, k, M, C, Dv): small cases, k = N, and the LLaVA-1.5 (576 tokens, keep 64) and LLaVA-NeXT
  // (2880, keep 320) token counts with vision features wider than k.
  const Shape shapes[] = {{60, 10, 1, 24, 80, true},
                          {120, 16, 6, 64, 96, false},
                          {200, 200, 3, 16, 256, false},
                          {576, 64, 32, 256, 1024, false},
                          {2880, 320, 8, 128, 1024, false}};
  int exact_cases = 0, near_tie_cases = 0, differing = 0;
  double worst_shortfall = 0;
  for (const Shape& s : shapes) {
    Inputs in = Random(s.n, s.c, s.dv, s.m, 1000 + s.n);
    for (double theta : {0.0, 0.5, 0.8, 1.0}) {
      for (bool positive : {false, true}) {
        if (s.n >= 2880 && (theta == 0.0 || positive)) continue;  // the big one: fewer variants
        VisualOptions exact = Cdp(s.k, theta);
        exact.positive_relevance = positive;
        const at::Tensor kernel64 =
            testing::KernelFloat64(in.embeds, in.features, in.text, theta, positive);
        for (bool fast : {false, true}) {
          // fast_kernel picks the device path's relevance formula (one GEMV, or the reference's
          // GEMM); the host side stays the exact path.
          VisualOptions device = exact;
          device.fast_kernel = fast;
          const std::string what = absl::StrCat("N=", s.n, " k=", s.k, " M=", s.m, " theta=", theta,
                                                " positive=", positive, " fast=", fast);
          Selections got = SelectBoth(exact, {{in.embeds, in.features}}, in.text, &device);
          ASSERT_EQ(got.host.size(), 1u) << what;
          // theta = 0: L = S, every gain ties at 1 before the first pick (rounding decides).
          const double margin = ExpectSamePicks(got.host[0], got.device[0], kernel64, s.k,
                                                s.separated && theta > 0, what);
          exact_cases += margin >= kSeparated;
          near_tie_cases += margin < kSeparated;
          differing += got.host[0] != got.device[0];
          // In pick order: every step of the device path is a greedy step up to rounding.
          const Indices order = DeviceOrder(in.embeds, in.features, in.text, s.k, device);
          EXPECT_EQ(Sorted(order), got.device[0]) << what;
          const double shortfall = testing::GreedyShortfall(kernel64, order);
          EXPECT_LE(shortfall, kMaxShortfall) << what;
          worst_shortfall = std::max(worst_shortfall, shortfall);
        }
      }
    }
  }
  EXPECT_GE(exact_cases, 12);  // the separated shape at least
  std::printf(
      "%d cases with clear greedy steps (equal picks), %d with near-ties (%d picked "
      "differently); largest shortfall of a device step %.1e\n",
      exact_cases, near_tie_cases, differing, worst_shortfall);
}

TEST(VisualDevice, StepsEqualTheHostKernelOnTheSameKernel) {
  // The same float32 L into both greedy loops: only the projection's summation order differs.
  for (int64_t n : {1, 2, 9, 64, 300}) {
    at::manual_seed(200 + n);
    at::Tensor sim = visual::CosineSimilarity(at::randn({n, n + 32}));
    at::Tensor rel = at::exp(at::rand({n}));
    at::Tensor kernel = ((rel.unsqueeze(1) * sim) * rel.unsqueeze(0)).contiguous();
    for (int64_t k : {int64_t{1}, std::min<int64_t>(n, 7), std::min<int64_t>(n, 40)}) {
      Indices host(k);
      std::vector<float> work(kernels::DppGreedyMapWorkSize(n, k));
      kernels::DppGreedyMap(kernel.data_ptr<float>(), nullptr, n, n, k, false, work.data(),
                            host.data());
      visual::GreedyTrace trace = visual::DppGreedyMapSteps(kernel, k);
      ASSERT_EQ(trace.order.numel(), k);
      Indices device(trace.order.data_ptr<int64_t>(), trace.order.data_ptr<int64_t>() + k);
      const double margin = testing::GreedyMinMargin(kernel.to(at::kDouble), k);
      ASSERT_GE(margin, kSeparated) << "n=" << n << " k=" << k;
      EXPECT_EQ(device, host) << "n=" << n << " k=" << k;
      // gains[i] is d2 of the pick at its step: diag(L) first, then decreasing residuals.
      EXPECT_EQ(trace.gains[0].item<float>(), kernel[host[0]][host[0]].item<float>());
      EXPECT_TRUE(at::all(trace.gains > 0).item<bool>());
    }
  }
}

TEST(VisualDevice, TiesGoToTheFirstIndexAsTheHostKernel) {
  // Identity kernel: every gain is exactly 1 until picked, so the picks go in index order.
  visual::GreedyTrace trace = visual::DppGreedyMapSteps(at::eye(6), 6);
  EXPECT_TRUE(at::equal(trace.order, at::arange(6, at::kLong)));
  at::Tensor scale = at::tensor({1.0f, 3.0f, 2.0f, 3.0f, 0.5f, 1.0f});
  at::Tensor kernel = scale.unsqueeze(1) * at::eye(6) * scale.unsqueeze(0);
  trace = visual::DppGreedyMapSteps(kernel, 4);
  EXPECT_TRUE(at::equal(trace.order, at::tensor({1, 3, 2, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(trace.gains, at::tensor({9.0f, 9.0f, 4.0f, 1.0f})));
}

TEST(VisualDevice, GuardedCountKeepsTheLeadingStepsThatPass) {
  auto count = [](std::vector<float> gains) {
    return visual::GuardedCount(at::tensor(gains)).item<int64_t>();
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(count({5.0f, 2.0f, 1.0f}), 3);
  EXPECT_EQ(count({5.0f, 1e-9f, 1e-11f, 3.0f}), 2);  // stops at the first failing step only
  EXPECT_EQ(count({0.0f, 1.0f, 0.0f}), 2);           // never before the first step
  EXPECT_EQ(count({1.0f, nan, 1.0f}), 1);            // NaN stops, as !(d2 >= 1e-10)
  EXPECT_EQ(count({1.0f, 1e-10f}), 2);               // the bound itself passes
  EXPECT_EQ(count({1.0f, std::nextafter(1e-10f, 0.0f)}), 1);
  EXPECT_EQ(count({-std::numeric_limits<float>::infinity()}), 1);
}

TEST(VisualDevice, GainGuardStopsLikeTheHostPath) {
  // Three tokens anti-aligned with the text, the rest identical and least relevant: with theta = 1
  // their relevance (and so their gain) is 0 up to rounding, far below 1e-10.
  at::manual_seed(71);
  at::Tensor text = at::randn({1, 8});
  at::Tensor embeds = text.repeat({12, 1});
  for (int i = 0; i < 3; ++i) embeds[i] = -text[0] + 0.1 * at::randn({8});
  at::Tensor features = at::randn({12, 32});
  VisualOptions o = Cdp(8, 1.0);
  o.gain_guard = true;
  Selections got = SelectBoth(o, {{embeds, features}}, text);
  EXPECT_EQ(got.host, (Selection{{0, 1, 2}}));
  EXPECT_EQ(got.device, got.host);
  // Without the guard both go on to k picks; the guard never cuts well-conditioned inputs.
  o.gain_guard = false;
  got = SelectBoth(o, {{embeds, features}}, text);
  EXPECT_EQ(got.device[0].size(), 8u);
  Inputs in = Random(300, 32, 400, 4, 73);
  o = Cdp(50, 0.5);
  o.gain_guard = true;
  got = SelectBoth(o, {{in.embeds, in.features}}, in.text);
  EXPECT_EQ(got.device[0].size(), 50u);
  EXPECT_EQ(got.device, got.host);
  // Global budget over two images, one of them all zero-relevance tokens.
  o = Cdp(10, 1.0);
  o.gain_guard = true;
  o.global_budget = true;
  got = SelectBoth(o, {{embeds, features}, {text.repeat({5, 1}), at::randn({5, 32})}}, text);
  EXPECT_EQ(got.host, (Selection{{0, 1, 2}, {}}));
  EXPECT_EQ(got.device, got.host);
}

TEST(VisualDevice, PerImageAndGlobalBudgets) {
  at::manual_seed(47);
  const int64_t c = 32, dv = 128;
  at::Tensor text = at::randn({3, c});
  std::vector<VisualImage> images;
  std::vector<int64_t> sizes{30, 45, 12, 90};
  for (int64_t n : sizes) images.push_back({at::randn({n, c}), at::randn({n, dv})});
  for (double theta : {0.5, 1.0}) {
    // Per image: k = 8 each, or keep_ratio (a different k per image).
    for (bool ratio : {false, true}) {
      VisualOptions o = Cdp(8, theta);
      if (ratio) {
        o.num_keep_tokens = 0;
        o.keep_ratio = 0.3;
      }
      Selections got = SelectBoth(o, images, text);
      ASSERT_EQ(got.device.size(), sizes.size());
      for (size_t i = 0; i < sizes.size(); ++i) {
        const int64_t k = *Make(o)->Budget(sizes[i]);
        EXPECT_EQ(static_cast<int64_t>(got.device[i].size()), k);
        ExpectSamePicks(
            got.host[i], got.device[i],
            testing::KernelFloat64(images[i].embeds, images[i].features, text, theta, false), k,
            /*separated=*/false, absl::StrCat("image ", i, " theta=", theta));
      }
    }
    // Global: one selection over all tokens, split back into local indices.
    VisualOptions o = Cdp(40, theta);
    o.global_budget = true;
    Selections got = SelectBoth(o, images, text);
    const Indices host_flat = testing::Flatten(got.host, sizes);
    const Indices device_flat = testing::Flatten(got.device, sizes);
    at::Tensor pooled64 = testing::KernelFloat64(
        at::cat({images[0].embeds, images[1].embeds, images[2].embeds, images[3].embeds}),
        at::cat({images[0].features, images[1].features, images[2].features, images[3].features}),
        text, theta, false);
    EXPECT_EQ(device_flat.size(), 40u);
    ExpectSamePicks(host_flat, device_flat, pooled64, 40, /*separated=*/false,
                    absl::StrCat("global theta=", theta));
  }
}

TEST(VisualDevice, HalfAndBFloat16InputsAreComputedInFloat32) {
  Inputs in = Random(576, 128, 512, 16, 79);
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    Inputs low{in.embeds.to(dtype), in.features.to(dtype), in.text.to(dtype)};
    Selections got = SelectBoth(Cdp(64, 0.5), {{low.embeds, low.features}}, low.text);
    ExpectSamePicks(got.host[0], got.device[0],
                    testing::KernelFloat64(low.embeds, low.features, low.text, 0.5, false), 64,
                    /*separated=*/false, c10::toString(dtype));
    // The same as the float32 inputs holding the same values.
    Selections widened =
        SelectBoth(Cdp(64, 0.5), {{low.embeds.to(at::kFloat), low.features.to(at::kFloat)}},
                   low.text.to(at::kFloat));
    EXPECT_EQ(got.device, widened.device) << c10::toString(dtype);
  }
}

TEST(VisualDevice, DivPruneStepsEqualTheHostKernelOnTheSameSimilarity) {
  // Comparisons and minima only: on the same similarity matrix the picks are identical.
  at::manual_seed(5);
  for (int64_t n : {1, 2, 9, 40, 333}) {
    at::Tensor sim = visual::CosineSimilarity(at::randn({n, 24})).contiguous();
    for (int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 2), n}) {
      Indices host(k);
      std::vector<float> work(2 * n);
      kernels::MaxMinDiversity(sim.data_ptr<float>(), n, n, k, work.data(), host.data());
      at::Tensor order = visual::MaxMinDiversitySteps(sim, k);
      EXPECT_EQ(Indices(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + k), host)
          << "n=" << n << " k=" << k;
    }
  }
  // Duplicates: every distance 0, every item still picked once, in index order.
  at::Tensor order = visual::MaxMinDiversitySteps(at::ones({5, 5}), 5);
  EXPECT_TRUE(at::equal(order, at::arange(5, at::kLong)));
}

TEST(VisualDevice, DivPruneMatchesTheExactHostPath) {
  // Distances of unit vectors round by ~1e-7 (float32 GEMMs): where every max-min step's gap is
  // above kSeparatedDistance the two paths must pick the same tokens; elsewhere every device step
  // must be a max-min step up to rounding.
  constexpr double kSeparatedDistance = 1e-5;
  at::manual_seed(73);
  std::vector<VisualImage> images{{at::Tensor(), at::randn({50, 20})},
                                  {at::Tensor(), at::randn({576, 64})},
                                  {at::Tensor(), at::randn({31, 20})}};
  VisualOptions o;
  o.method = VisualMethod::kDivPrune;
  o.keep_ratio = 0.12;  // 6, 69 and 4 tokens
  auto pruner = Make(o);
  Selections got = SelectBoth(o, images, at::Tensor());
  for (size_t i = 0; i < images.size(); ++i) {
    const int64_t k = *pruner->Budget(images[i].features.size(0));
    const at::Tensor sim64 = testing::Similarity64(images[i].features);
    const double margin = testing::DivPruneMinMargin(sim64, k);
    EXPECT_EQ(static_cast<int64_t>(got.device[i].size()), k);
    if (i != 1) {
      EXPECT_GE(margin, kSeparatedDistance) << "image " << i;  // the small ones
    }
    if (margin >= kSeparatedDistance) {
      EXPECT_EQ(got.device[i], got.host[i]) << "image " << i;
    }
    auto order = visual::SelectDivPruneOnDevice({{at::Tensor(), images[i].features, k}});
    ASSERT_TRUE(order.ok()) << order.status();
    EXPECT_EQ(Sorted(order->at(0)), got.device[i]);
    EXPECT_LE(testing::DivPruneShortfall(sim64, order->at(0)), 1e-6) << "image " << i;
  }
  o.global_budget = true;
  o.keep_ratio = 0.05;
  images.pop_back();
  images[0].features = at::randn({50, 64});
  got = SelectBoth(o, images, at::Tensor());
  EXPECT_GE(testing::DivPruneMinMargin(
                testing::Similarity64(at::cat({images[0].features, images[1].features})), 31),
            kSeparatedDistance);
  EXPECT_EQ(got.device, got.host);
  EXPECT_EQ(got.device[0].size() + got.device[1].size(), 31u);
}

TEST(VisualDevice, RandomAndUniformAreTheHostPicks) {
  std::vector<VisualImage> images{{at::Tensor(), at::randn({100, 4})},
                                  {at::Tensor(), at::randn({37, 4}).to(at::kHalf)}};
  for (VisualMethod method : {VisualMethod::kRandom, VisualMethod::kUniform}) {
    VisualOptions o;
    o.method = method;
    o.num_keep_tokens = 20;
    o.seed = 11;
    Selections got = SelectBoth(o, images, at::Tensor());
    EXPECT_EQ(got.device, got.host);
    EXPECT_EQ(got.device[1].size(), 20u);
  }
}

TEST(VisualDevice, NonFiniteInputsFailWithTheHostErrors) {
  Inputs base = Random(10, 8, 8, 2, 67);
  auto expect_same_error = [](const VisualOptions& o, const Inputs& in, const std::string& what) {
    std::vector<VisualImage> images{{in.embeds, in.features}};
    auto pruner = Make(o);
    auto host = pruner->Select(images, in.text);
    auto device = visual::SelectOnDeviceForTesting(*pruner, images, in.text);
    ASSERT_FALSE(host.ok()) << what;
    ASSERT_FALSE(device.ok()) << what;
    EXPECT_EQ(device.status(), host.status()) << what;
    EXPECT_NE(device.status().message().find(what), std::string::npos) << device.status();
  };
  Inputs in{base.embeds.clone(), base.features.clone(), base.text.clone()};
  in.features[3][2] = std::numeric_limits<float>::quiet_NaN();
  expect_same_error(Cdp(3), in, "similarity");
  in = {base.embeds.clone(), base.features.clone(), base.text.clone()};
  in.embeds[0][0] = std::numeric_limits<float>::infinity();
  expect_same_error(Cdp(3), in, "relevance");
  in = {base.embeds.clone(), base.features.clone(), base.text.clone()};
  in.text[1][0] = std::numeric_limits<float>::quiet_NaN();
  expect_same_error(Cdp(3), in, "text_embeds");
  expect_same_error(Cdp(3, 0.999), base, "theta");  // exp(alpha) overflows float32
  VisualOptions div;
  div.method = VisualMethod::kDivPrune;
  div.num_keep_tokens = 3;
  in = {base.embeds.clone(), base.features.clone(), base.text.clone()};
  in.features[1][1] = std::numeric_limits<float>::infinity();
  expect_same_error(div, in, "similarity");
}

TEST(VisualDevice, TimingLlavaNextShape) {
  // N = 2880, k = 320 with LLaVA's widths (C = 4096, Dv = 1024, M = 32): the device path on CPU
  // tensors against the exact host path, end to end (VisualPruner::Select). Printed, not checked.
  Inputs in = Random(2880, 4096, 1024, 32, 89);
  std::vector<VisualImage> images{{in.embeds, in.features}};
  auto pruner = Make(Cdp(320, 0.5));
  auto time_ms = [&](auto&& select) {
    double best = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 3; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      auto r = select();
      const auto stop = std::chrono::steady_clock::now();
      EXPECT_TRUE(r.ok()) << r.status();
      best = std::min(best, std::chrono::duration<double, std::milli>(stop - start).count());
    }
    return best;
  };
  const double host = time_ms([&] { return pruner->Select(images, in.text); });
  const double device =
      time_ms([&] { return visual::SelectOnDeviceForTesting(*pruner, images, in.text); });
  // The greedy loops alone, on a ready kernel.
  at::Tensor kernel = visual::CosineSimilarity(in.features).contiguous();
  const double device_greedy = time_ms([&] {
    visual::GreedyTrace t = visual::DppGreedyMapSteps(kernel, 320);
    return absl::StatusOr<int64_t>(t.order[319].item<int64_t>());
  });
  const double host_greedy = time_ms([&] {
    std::vector<float> work(kernels::DppGreedyMapWorkSize(2880, 320));
    Indices order(320);
    kernels::DppGreedyMap(kernel.data_ptr<float>(), nullptr, 2880, 2880, 320, false, work.data(),
                          order.data(), kernels::VisualThreads());
    return absl::StatusOr<int64_t>(order[319]);
  });
  std::printf(
      "N=2880 k=320 C=4096 Dv=1024 M=32 on the CPU (best of 3): exact host path %.1f ms, device "
      "path %.1f ms; greedy loops alone: host %.1f ms, device path %.1f ms\n",
      host, device, host_greedy, device_greedy);
}

}  // namespace
}  // namespace attnkit
