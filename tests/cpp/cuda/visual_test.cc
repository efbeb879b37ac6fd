// VisualPruner on CUDA tensors (the device path, core/src/visual/visual_device.h) against the exact
// CPU path on the same values: CDPruner and DivPrune picks, per-image and global budgets, the gain
// guard, half inputs, errors; and the time of a LLaVA-NeXT-sized selection (N = 2880, k = 320) on
// the device. The picks must be equal where every greedy step has a clear winner, and elsewhere
// (rounding of cuBLAS against the reference's sums may flip a near-tie) every device step must be a
// greedy step up to rounding and the objectives must agree (tests/common/visual_selection_util.h).
// Only ATen and VisualPruner are used, so this compiles in every build; without CUDA or a GPU every
// test skips.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "attnkit/visual/visual_pruner.h"
#include "cuda_test_util.h"
#include "visual/visual_device.h"
#include "visual_selection_util.h"

namespace attnkit::testing {
namespace {

std::unique_ptr<VisualPruner> Make(const VisualOptions& options) {
  auto p = VisualPruner::Create(options);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

std::vector<VisualImage> ToCuda(const std::vector<VisualImage>& images) {
  std::vector<VisualImage> out;
  for (const VisualImage& im : images) {
    out.push_back(
        {im.embeds.defined() ? im.embeds.to(at::kCUDA) : at::Tensor(), im.features.to(at::kCUDA)});
  }
  return out;
}

struct Selections {
  Selection cpu, cuda;
};

// The pruner on the CPU tensors (`options` as given: the exact host path unless fast_kernel) and
// on copies on the GPU with fast_kernel (the device path). Without fast_kernel, CUDA inputs are
// selected on the host with the reference's rounding: those picks must equal the CPU's exactly.
Selections SelectBoth(const VisualOptions& options, const std::vector<VisualImage>& images,
                      const at::Tensor& text) {
  auto pruner = Make(options);
  VisualOptions device_options = options;
  device_options.fast_kernel = true;
  auto device_pruner = Make(device_options);
  const std::vector<VisualImage> cuda_images = ToCuda(images);
  const at::Tensor cuda_text = text.defined() ? text.to(at::kCUDA) : at::Tensor();
  auto cpu = pruner->Select(images, text);
  auto cuda = device_pruner->Select(cuda_images, cuda_text);
  EXPECT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_TRUE(cuda.ok()) << cuda.status();
  if (!cpu.ok() || !cuda.ok()) return {};
  EXPECT_EQ(cpu->size(), cuda->size());
  if (!options.fast_kernel) {
    auto exact_from_cuda = pruner->Select(cuda_images, cuda_text);
    EXPECT_TRUE(exact_from_cuda.ok()) << exact_from_cuda.status();
    if (exact_from_cuda.ok()) {
      EXPECT_EQ(*exact_from_cuda, *cpu);
    }
  }
  return {*cpu, *cuda};
}

TEST(VisualCudaTest, CdprunerMatchesTheExactCpuPath) {
  ATTNKIT_REQUIRE_GPU();
  struct Shape {
    int64_t n, k, m, c, dv;
  };
  const Shape shapes[] = {{60, 10, 1, 24, 80},
                          {120, 16, 6, 64, 96},
                          {576, 64, 32, 256, 1024},
                          {2880, 320, 8, 128, 1024}};
  int exact_cases = 0, differing = 0;
  for (const Shape& s : shapes) {
    Inputs in = Random(s.n, s.c, s.dv, s.m, 1000 + s.n);
    for (double theta : {0.0, 0.5, 0.8, 1.0}) {
      for (bool positive : {false, true}) {
        const at::Tensor kernel64 = KernelFloat64(in.embeds, in.features, in.text, theta, positive);
        for (bool fast : {false, true}) {
          VisualOptions o = Cdp(s.k, theta);
          o.positive_relevance = positive;
          o.fast_kernel = fast;  // on the CPU: exact (false) or BLAS; the GPU side sets it
          o.gain_guard = true;   // never cuts these well-conditioned inputs
          const std::string what = absl::StrCat("N=", s.n, " k=", s.k, " M=", s.m, " theta=", theta,
                                                " positive=", positive, " fast=", fast);
          Selections got = SelectBoth(o, {{in.embeds, in.features}}, in.text);
          ASSERT_EQ(got.cuda.size(), 1u) << what;
          EXPECT_EQ(static_cast<int64_t>(got.cuda[0].size()), s.k) << what;
          // theta = 0: L = S, every gain ties at 1 before the first pick (rounding decides).
          const double margin = ExpectSamePicks(got.cpu[0], got.cuda[0], kernel64, s.k,
                                                /*separated=*/s.n == 60 && theta > 0, what);
          exact_cases += margin >= kSeparatedGains;
          differing += got.cpu[0] != got.cuda[0];
          // In pick order, every device step is a greedy step up to rounding.
          visual::SelectionProblem p{in.embeds.to(at::kCUDA), in.features.to(at::kCUDA), s.k};
          VisualOptions device_o = o;
          device_o.fast_kernel = true;  // what SelectBoth's GPU side ran
          auto order = visual::SelectCdprunerOnDevice({p}, in.text.to(at::kCUDA), device_o);
          ASSERT_TRUE(order.ok()) << order.status();
          EXPECT_EQ(Sorted(order->at(0)), got.cuda[0]) << what;
          EXPECT_LE(GreedyShortfall(kernel64, order->at(0)), kMaxGreedyShortfall) << what;
        }
      }
    }
  }
  EXPECT_GE(exact_cases, 12);  // N = 60, theta > 0 at least
  std::printf("%d cases with clear greedy steps (equal picks); %d picked differently\n",
              exact_cases, differing);
}

TEST(VisualCudaTest, BudgetsGuardAndHalfInputs) {
  ATTNKIT_REQUIRE_GPU();
  at::manual_seed(47);
  const int64_t c = 32, dv = 128;
  at::Tensor text = at::randn({3, c});
  std::vector<VisualImage> images;
  const std::vector<int64_t> sizes{30, 45, 12, 90};
  for (int64_t n : sizes) images.push_back({at::randn({n, c}), at::randn({n, dv})});
  // Per image, k = 8 each; one problem after another on the device.
  Selections got = SelectBoth(Cdp(8), images, text);
  for (size_t i = 0; i < sizes.size(); ++i) {
    ExpectSamePicks(got.cpu[i], got.cuda[i],
                    KernelFloat64(images[i].embeds, images[i].features, text, 0.5, false), 8, false,
                    absl::StrCat("image ", i));
  }
  // Global: one selection over all tokens, split back into local indices.
  VisualOptions o = Cdp(40);
  o.global_budget = true;
  got = SelectBoth(o, images, text);
  ExpectSamePicks(
      Flatten(got.cpu, sizes), Flatten(got.cuda, sizes),
      KernelFloat64(
          at::cat({images[0].embeds, images[1].embeds, images[2].embeds, images[3].embeds}),
          at::cat({images[0].features, images[1].features, images[2].features, images[3].features}),
          text, 0.5, false),
      40, false, "global");
  // The gain guard: three relevant tokens, the rest with relevance 0 (theta = 1).
  at::Tensor guard_text = at::randn({1, 8});
  at::Tensor embeds = guard_text.repeat({12, 1});
  for (int i = 0; i < 3; ++i) embeds[i] = -guard_text[0] + 0.1 * at::randn({8});
  VisualOptions guard = Cdp(8, 1.0);
  guard.gain_guard = true;
  got = SelectBoth(guard, {{embeds, at::randn({12, 32})}}, guard_text);
  EXPECT_EQ(got.cpu, (Selection{{0, 1, 2}}));
  EXPECT_EQ(got.cuda, got.cpu);
  // Half and bfloat16 inputs are computed in float32, as on the CPU.
  Inputs in = Random(576, 128, 512, 16, 79);
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    Inputs low{in.embeds.to(dtype), in.features.to(dtype), in.text.to(dtype)};
    got = SelectBoth(Cdp(64), {{low.embeds, low.features}}, low.text);
    ExpectSamePicks(got.cpu[0], got.cuda[0],
                    KernelFloat64(low.embeds, low.features, low.text, 0.5, false), 64, false,
                    c10::toString(dtype));
  }
}

TEST(VisualCudaTest, DivPruneMatchesTheExactCpuPath) {
  ATTNKIT_REQUIRE_GPU();
  at::manual_seed(73);
  std::vector<VisualImage> images{{at::Tensor(), at::randn({50, 20})},
                                  {at::Tensor(), at::randn({576, 64})},
                                  {at::Tensor(), at::randn({31, 20})}};
  VisualOptions o;
  o.method = VisualMethod::kDivPrune;
  o.keep_ratio = 0.12;
  auto pruner = Make(o);
  Selections got = SelectBoth(o, images, at::Tensor());
  for (size_t i = 0; i < images.size(); ++i) {
    const int64_t k = *pruner->Budget(images[i].features.size(0));
    const at::Tensor sim64 = Similarity64(images[i].features);
    EXPECT_EQ(static_cast<int64_t>(got.cuda[i].size()), k);
    // Distances round by ~1e-7: equal picks where every max-min step is clear.
    if (DivPruneMinMargin(sim64, k) >= 1e-5) {
      EXPECT_EQ(got.cuda[i], got.cpu[i]) << "image " << i;
    }
    auto order =
        visual::SelectDivPruneOnDevice({{at::Tensor(), images[i].features.to(at::kCUDA), k}});
    ASSERT_TRUE(order.ok()) << order.status();
    EXPECT_EQ(Sorted(order->at(0)), got.cuda[i]);
    EXPECT_LE(DivPruneShortfall(sim64, order->at(0)), 1e-6) << "image " << i;
  }
}

TEST(VisualCudaTest, MixedDevicesRandomAndErrors) {
  ATTNKIT_REQUIRE_GPU();
  // Features on the GPU pull the other inputs there (text and embeds on the CPU).
  Inputs in = Random(100, 16, 64, 4, 83);
  VisualOptions fast = Cdp(12);
  fast.fast_kernel = true;  // the device path
  auto pruner = Make(fast);
  auto mixed = pruner->Select({{in.embeds, in.features.to(at::kCUDA)}}, in.text);
  auto cuda =
      pruner->Select({{in.embeds.to(at::kCUDA), in.features.to(at::kCUDA)}}, in.text.to(at::kCUDA));
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_EQ(*mixed, *cuda);
  // Random and uniform: host picks, whatever the device.
  for (VisualMethod method : {VisualMethod::kRandom, VisualMethod::kUniform}) {
    VisualOptions o;
    o.method = method;
    o.num_keep_tokens = 20;
    o.seed = 11;
    Selections got = SelectBoth(o, {{at::Tensor(), at::randn({100, 4})}}, at::Tensor());
    EXPECT_EQ(got.cuda, got.cpu);
  }
  // Non-finite inputs: the CPU path's errors.
  Inputs bad{in.embeds.clone(), in.features.clone(), in.text.clone()};
  bad.features[3][2] = std::numeric_limits<float>::quiet_NaN();
  auto cpu_error = pruner->Select({{bad.embeds, bad.features}}, bad.text);
  auto cuda_error = pruner->Select({{bad.embeds.to(at::kCUDA), bad.features.to(at::kCUDA)}},
                                   bad.text.to(at::kCUDA));
  ASSERT_FALSE(cpu_error.ok());
  ASSERT_FALSE(cuda_error.ok());
  EXPECT_EQ(cuda_error.status(), cpu_error.status());
}

TEST(VisualCudaTest, TimingLlavaShapes) {
  ATTNKIT_REQUIRE_GPU();
  // LLaVA's widths (C = 4096, Dv = 1024, M = 32): VisualPruner::Select end to end (picks on the
  // host), CUDA tensors against the exact CPU path on the same values. Printed, not checked.
  struct Shape {
    int64_t n, k;
  };
  for (const Shape& s : {Shape{576, 64}, Shape{2880, 320}}) {
    Inputs in = Random(s.n, 4096, 1024, 32, 89);
    const std::vector<VisualImage> cpu_images{{in.embeds, in.features}};
    const std::vector<VisualImage> cuda_images = ToCuda(cpu_images);
    const at::Tensor cuda_text = in.text.to(at::kCUDA);
    auto pruner = Make(Cdp(s.k));
    VisualOptions fast = Cdp(s.k);
    fast.fast_kernel = true;
    auto device_pruner = Make(fast);  // CUDA inputs with fast_kernel: selected on the device
    auto time_ms = [](int reps, auto&& select) {
      std::vector<double> ms;
      for (int rep = 0; rep < reps; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        auto r = select();  // returns host vectors: the device work is done
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count());
        EXPECT_TRUE(r.ok()) << r.status();
      }
      std::sort(ms.begin(), ms.end());
      return ms[ms.size() / 2];
    };
    time_ms(2, [&] { return device_pruner->Select(cuda_images, cuda_text); });  // warm-up
    const double cuda = time_ms(10, [&] { return device_pruner->Select(cuda_images, cuda_text); });
    const double cpu = time_ms(3, [&] { return pruner->Select(cpu_images, in.text); });
    std::printf(
        "N=%lld k=%lld C=4096 Dv=1024 M=32 (median): CUDA (fast_kernel) %.2f ms, exact CPU path "
        "%.1f ms\n",
        static_cast<long long>(s.n), static_cast<long long>(s.k), cuda, cpu);
  }
}

}  // namespace
}  // namespace attnkit::testing
