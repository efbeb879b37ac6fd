// Where a visual selection runs and which selector runs it (core/src/visual/visual_backend.h): the
// backend decision for CPU and CUDA features, the selector table, and the rules VisualPruner takes
// from a selector (CDPRUNER needs the embeddings and the text; the baselines do not).
#include "visual/visual_backend.h"

#include <ATen/Functions.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "attnkit/visual/visual_pruner.h"
#include "visual/visual_device.h"
#include "visual/visual_host.h"

namespace attnkit::visual {
namespace {

VisualOptions Options(VisualMethod method, bool fast_kernel) {
  VisualOptions o;
  o.method = method;
  o.num_keep_tokens = 3;
  o.fast_kernel = fast_kernel;
  return o;
}

TEST(VisualBackend, ExactSelectionStaysOnTheHostAndFastCudaSelectionOnTheDevice) {
  const at::Device cpu(at::kCPU), cuda(at::kCUDA, 1);
  for (VisualMethod m : {VisualMethod::kCDPruner, VisualMethod::kDivPrune, VisualMethod::kRandom,
                         VisualMethod::kUniform}) {
    EXPECT_EQ(ChooseVisualBackend(cpu, Options(m, false)), VisualBackend::kCpu);
    EXPECT_EQ(ChooseVisualBackend(cpu, Options(m, true)), VisualBackend::kCpu);
    // The exact kernels reproduce the reference's rounding only on the host.
    EXPECT_EQ(ChooseVisualBackend(cuda, Options(m, false)), VisualBackend::kCpu);
    EXPECT_EQ(ChooseVisualBackend(cuda, Options(m, true)), VisualBackend::kTensorOps);
  }
  EXPECT_STREQ(VisualBackendName(VisualBackend::kCpu), "cpu");
  EXPECT_STREQ(VisualBackendName(VisualBackend::kTensorOps), "tensor_ops");
}

TEST(VisualBackend, EveryMethodHasItsSelector) {
  const VisualSelector& cdp = SelectorFor(VisualMethod::kCDPruner);
  EXPECT_EQ(cdp.method, VisualMethod::kCDPruner);
  EXPECT_STREQ(cdp.name, "CDPRUNER");
  EXPECT_TRUE(cdp.needs_embeds);
  EXPECT_EQ(cdp.On(VisualBackend::kCpu), &SelectCdprunerOnHost);
  EXPECT_EQ(cdp.On(VisualBackend::kTensorOps), &SelectCdprunerOnDevice);
  const VisualSelector& div = SelectorFor(VisualMethod::kDivPrune);
  EXPECT_EQ(div.method, VisualMethod::kDivPrune);
  EXPECT_STREQ(div.name, "DIVPRUNE");
  EXPECT_FALSE(div.needs_embeds);
  EXPECT_EQ(div.On(VisualBackend::kCpu), &SelectDivPruneOnHost);
  EXPECT_NE(div.On(VisualBackend::kTensorOps), &SelectDivPruneOnHost);
  // The baselines read only the token counts: one function for both backends.
  const VisualSelector& random = SelectorFor(VisualMethod::kRandom);
  EXPECT_STREQ(random.name, "RANDOM_SUBSET");
  EXPECT_FALSE(random.needs_embeds);
  EXPECT_EQ(random.On(VisualBackend::kCpu), &SelectRandomSubset);
  EXPECT_EQ(random.On(VisualBackend::kTensorOps), &SelectRandomSubset);
  const VisualSelector& uniform = SelectorFor(VisualMethod::kUniform);
  EXPECT_STREQ(uniform.name, "UNIFORM_GRID");
  EXPECT_FALSE(uniform.needs_embeds);
  EXPECT_EQ(uniform.On(VisualBackend::kCpu), &SelectUniformGrid);
  EXPECT_EQ(uniform.On(VisualBackend::kTensorOps), &SelectUniformGrid);
}

TEST(VisualBackend, TheSelectorSaysWhatThePrunerRequires) {
  at::manual_seed(2);
  const at::Tensor embeds = at::randn({12, 8}), features = at::randn({12, 4});
  const at::Tensor text = at::randn({2, 8});
  const std::vector<VisualImage> without_embeds{{at::Tensor(), features}};
  const std::vector<VisualImage> with_embeds{{embeds, features}};
  for (VisualMethod m : {VisualMethod::kDivPrune, VisualMethod::kRandom, VisualMethod::kUniform}) {
    auto pruner = VisualPruner::Create(Options(m, false));
    ASSERT_TRUE(pruner.ok());
    auto kept = (*pruner)->Select(without_embeds, at::Tensor());
    ASSERT_TRUE(kept.ok()) << SelectorFor(m).name << ": " << kept.status();
    EXPECT_EQ((*kept)[0].size(), 3u);
    // Text that is given is checked even where the method does not read it.
    auto bad_text = (*pruner)->Select(without_embeds, at::randn({0, 8}));
    ASSERT_FALSE(bad_text.ok());
    EXPECT_NE(bad_text.status().message().find("text_embeds: expected shape [M, C]"),
              std::string::npos)
        << bad_text.status();
  }
  auto cdp = VisualPruner::Create(Options(VisualMethod::kCDPruner, false));
  ASSERT_TRUE(cdp.ok());
  auto no_embeds = (*cdp)->Select(without_embeds, text);
  ASSERT_FALSE(no_embeds.ok());
  EXPECT_EQ(no_embeds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(no_embeds.status().message().find("images[0].embeds: CDPRUNER needs the image "
                                              "embeddings (expected shape [12, C])"),
            std::string::npos)
      << no_embeds.status();
  auto no_text = (*cdp)->Select(with_embeds, at::Tensor());
  ASSERT_FALSE(no_text.ok());
  EXPECT_NE(no_text.status().message().find(
                "text_embeds: CDPRUNER needs the text embeddings (expected shape [M, 8])"),
            std::string::npos)
      << no_text.status();
  EXPECT_TRUE((*cdp)->Select(with_embeds, text).ok());
}

TEST(VisualBackend, BaselinesGiveTheSamePicksOnBothBackends) {
  at::manual_seed(4);
  const std::vector<VisualImage> images{{at::Tensor(), at::randn({30, 6})},
                                        {at::Tensor(), at::randn({17, 6})}};
  for (VisualMethod m : {VisualMethod::kRandom, VisualMethod::kUniform}) {
    VisualOptions o = Options(m, false);
    o.seed = 11;
    auto pruner = VisualPruner::Create(o);
    ASSERT_TRUE(pruner.ok());
    auto host = (*pruner)->Select(images, at::Tensor());
    auto ops = SelectOnDeviceForTesting(**pruner, images, at::Tensor());
    ASSERT_TRUE(host.ok()) << host.status();
    ASSERT_TRUE(ops.ok()) << ops.status();
    EXPECT_EQ(*host, *ops) << SelectorFor(m).name;
  }
}

}  // namespace
}  // namespace attnkit::visual
