// fast_kernel (BLAS GEMMs, relevance as one GEMV) against the default reference-exact path.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/visual/visual_pruner.h"
#include "visual/visual_math.h"

namespace attnkit {
namespace {

TEST(VisualFastKernelTest, RelevanceFastEqualsTheReferenceFormula) {
  at::manual_seed(3);
  at::Tensor embeds = at::randn({50, 24}), text = at::randn({5, 24});
  embeds[7].zero_();  // zero-norm rows: cosine 0 in both
  for (bool positive : {false, true}) {
    at::Tensor fast = visual::RelevanceFast(embeds, text, positive);
    at::Tensor reference = visual::Relevance(embeds, text, positive);
    EXPECT_LT((fast - reference).abs().max().item<float>(), 1e-5) << positive;
  }
}

TEST(VisualFastKernelTest, PicksMatchTheExactPathWhenGainsAreWellSeparated) {
  at::manual_seed(4);
  // k well below the feature rank: no near-tied gains, both paths must agree.
  at::Tensor embeds = at::randn({120, 64}), features = at::randn({120, 96}),
             text = at::randn({6, 64});
  VisualOptions options;
  options.num_keep_tokens = 16;
  auto exact = VisualPruner::Create(options);
  options.fast_kernel = true;
  auto fast = VisualPruner::Create(options);
  ASSERT_TRUE(exact.ok() && fast.ok());
  std::vector<VisualImage> images = {{embeds, features}};
  auto a = (*exact)->Select(images, text);
  auto b = (*fast)->Select(images, text);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*a, *b);
}

}  // namespace
}  // namespace attnkit
