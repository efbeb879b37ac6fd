// VisualPruner (core/include/attnkit/visual/visual_pruner.h): budgets, batches, baselines, edge
// cases, and the fast CDPruner path against the plain ATen reference.
#include "attnkit/visual/visual_pruner.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

#include "visual/cdpruner_kernel.h"
#include "visual/visual_math.h"
#include "visual/visual_reference.h"
#include "visual_selection_util.h"

namespace attnkit {
namespace {

using Indices = std::vector<int64_t>;

std::unique_ptr<VisualPruner> Make(VisualOptions o) {
  auto p = VisualPruner::Create(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

using testing::Cdp;
using testing::Inputs;
using testing::Random;

Indices Reference(const Inputs& in, int64_t k, double theta, bool guard = false) {
  at::Tensor kernel = visual::ReferenceKernel(in.embeds, in.features, in.text, theta, false);
  Indices order = visual::ReferenceGreedyMap(kernel, k, guard);
  std::sort(order.begin(), order.end());
  return order;
}

Indices SelectOne(const VisualPruner& p, const Inputs& in) {
  std::vector<VisualImage> images{{in.embeds, in.features}};
  auto r = p.Select(images, in.text);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return {};
  EXPECT_EQ(r->size(), 1u);
  return r->at(0);
}

TEST(VisualPruner, CdprunerMatchesReference) {
  for (double theta : {0.2, 0.5, 0.8, 1.0}) {
    for (int64_t k : {1, 10, 40}) {
      Inputs in = Random(60, 24, 80, 5, 17);  // Dv > N: full rank, well-separated gains
      EXPECT_EQ(SelectOne(*Make(Cdp(k, theta)), in), Reference(in, k, theta))
          << "theta=" << theta << " k=" << k;
    }
  }
}

TEST(VisualPruner, CdprunerThetaZeroIsTheGreedyMapOfTheSimilarity) {
  // theta 0 makes every relevance factor exp(0) = 1, so the kernel is the cosine similarity,
  // whose diagonal is 1 up to rounding: the first picks are decided by the last bit of S_ii, which
  // the plain ATen reference leaves to the BLAS (it differs between machines). So the reference
  // here is the greedy MAP over the exact similarity, the matrix the pruner itself builds
  // (ExactPiecesMatchATenPieces checks it against ATen's).
  Inputs in = Random(60, 24, 80, 5, 17);
  const at::Tensor sim = visual::ExactSimilarity(in.features, 2);
  EXPECT_TRUE(
      at::equal(visual::ExactApplyTheta(visual::ExactRelevance(in.embeds, in.text, false, 2), 0.0),
                at::ones({60})));
  for (int64_t k : {1, 10, 40}) {
    Indices want = visual::ReferenceGreedyMap(sim, k, false);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(SelectOne(*Make(Cdp(k, 0.0)), in), want) << "k=" << k;
  }
}

TEST(VisualPruner, ExactPiecesMatchATenPieces) {
  // The exact-rounding relevance and similarity (cdpruner_kernel.h) equal the plain ATen ones up
  // to rounding; their bits are pinned by the conformance cases.
  Inputs in = Random(70, 24, 40, 6, 23);
  for (bool positive : {false, true}) {
    EXPECT_TRUE(at::allclose(visual::ExactRelevance(in.embeds, in.text, positive, 2),
                             visual::Relevance(in.embeds, in.text, positive), 1e-5, 1e-5));
  }
  EXPECT_TRUE(at::allclose(visual::ExactSimilarity(in.features, 2),
                           visual::CosineSimilarity(in.features), 1e-5, 1e-5));
}

TEST(VisualPruner, KernelPiecesMatchReference) {
  Inputs in = Random(30, 12, 20, 3, 29);
  at::Tensor rel = visual::ApplyTheta(visual::Relevance(in.embeds, in.text, false), 0.5);
  at::Tensor sim = visual::CosineSimilarity(in.features);
  at::Tensor ref = visual::ReferenceKernel(in.embeds, in.features, in.text, 0.5, false);
  EXPECT_TRUE(at::equal(rel.unsqueeze(1) * sim * rel.unsqueeze(0), ref));
  // Relevance is min-max normalized before the exp: the raw values span [0, 1).
  at::Tensor raw = visual::Relevance(in.embeds, in.text, false);
  EXPECT_EQ(raw.min().item<float>(), 0.0f);
  EXPECT_LT(raw.max().item<float>(), 1.0f);
  EXPECT_GT(raw.max().item<float>(), 0.999f);
}

TEST(VisualPruner, KEqualsNKeepsEverything) {
  Inputs in = Random(20, 8, 30, 2, 31);
  Indices all(20);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(SelectOne(*Make(Cdp(20)), in), all);
}

TEST(VisualPruner, KOneKeepsTheMostRelevantToken) {
  Inputs in = Random(50, 8, 64, 3, 37);
  const int64_t best = visual::Relevance(in.embeds, in.text, false).argmax().item<int64_t>();
  for (double theta : {0.3, 1.0}) EXPECT_EQ(SelectOne(*Make(Cdp(1, theta)), in), Indices{best});
}

TEST(VisualPruner, KAboveNIsRejected) {
  Inputs in = Random(10, 8, 8, 2, 41);
  std::vector<VisualImage> images{{in.embeds, in.features}};
  auto r = Make(Cdp(11))->Select(images, in.text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("num_keep_tokens"), std::string::npos) << r.status();
  // A global budget may exceed one image as long as all images together hold enough.
  VisualOptions g = Cdp(15);
  g.global_budget = true;
  std::vector<VisualImage> two{{in.embeds, in.features}, {in.embeds, in.features}};
  auto ok = Make(g)->Select(two, in.text);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)[0].size() + (*ok)[1].size(), 15u);
  g.num_keep_tokens = 21;
  EXPECT_FALSE(Make(g)->Select(two, in.text).ok());
}

TEST(VisualPruner, ThetaOneUsesRelevanceAsIs) {
  Inputs in = Random(40, 8, 50, 2, 43);
  // theta = 1: L = r S r with the min-max relevance, whose minimum token has gain 0.
  const int64_t worst = visual::Relevance(in.embeds, in.text, false).argmin().item<int64_t>();
  Indices got = SelectOne(*Make(Cdp(39, 1.0)), in);
  EXPECT_EQ(got, Reference(in, 39, 1.0));
  EXPECT_FALSE(std::binary_search(got.begin(), got.end(), worst));
}

TEST(VisualPruner, PerImageBudgetsAreIndependentSelections) {
  // Images of different sizes in one call: each equals selecting it alone.
  at::manual_seed(47);
  at::Tensor text = at::randn({3, 16});
  std::vector<VisualImage> images;
  for (int64_t n : {30, 45, 12}) images.push_back({at::randn({n, 16}), at::randn({n, 40})});
  auto p = Make(Cdp(8));
  auto batch = p->Select(images, text);
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ(batch->size(), 3u);
  for (size_t i = 0; i < images.size(); ++i) {
    auto alone = p->Select({images[i]}, text);
    ASSERT_TRUE(alone.ok());
    EXPECT_EQ((*batch)[i], (*alone)[0]);
    EXPECT_EQ((*batch)[i].size(), 8u);
    EXPECT_EQ((*batch)[i], Reference({images[i].embeds, images[i].features, text}, 8, 0.5));
  }
}

TEST(VisualPruner, GlobalBudgetIsOneSelectionOverAllTokens) {
  at::manual_seed(53);
  at::Tensor text = at::randn({3, 16});
  std::vector<VisualImage> images;
  for (int64_t n : {20, 35, 9}) images.push_back({at::randn({n, 16}), at::randn({n, 80})});
  VisualOptions o = Cdp(24);
  o.global_budget = true;
  auto r = Make(o)->Select(images, text);
  ASSERT_TRUE(r.ok()) << r.status();
  // The same as one image made of all tokens, split back into local indices.
  Inputs pooled{at::cat({images[0].embeds, images[1].embeds, images[2].embeds}),
                at::cat({images[0].features, images[1].features, images[2].features}), text};
  Indices flat;
  int64_t offset = 0;
  const int64_t sizes[] = {20, 35, 9};
  for (int i = 0; i < 3; ++i) {
    for (int64_t idx : (*r)[i]) {
      EXPECT_LT(idx, sizes[i]);
      flat.push_back(idx + offset);
    }
    offset += sizes[i];
  }
  EXPECT_EQ(flat, Reference(pooled, 24, 0.5));
}

TEST(VisualPruner, KeepRatioRoundsHalfEven) {
  VisualOptions o;
  o.keep_ratio = 0.25;
  auto p = Make(o);
  EXPECT_EQ(*p->Budget(576), 144);
  EXPECT_EQ(*p->Budget(10), 2);  // 2.5 -> 2
  EXPECT_EQ(*p->Budget(14), 4);  // 3.5 -> 4
  EXPECT_EQ(*p->Budget(1), 1);   // at least one
  Inputs in = Random(40, 8, 50, 2, 59);
  EXPECT_EQ(SelectOne(*p, in).size(), 10u);
}

TEST(VisualPruner, ZeroNormRowsAreOrthogonalNotNaN) {
  Inputs in = Random(30, 8, 40, 3, 61);
  in.features[4].zero_();
  in.embeds[7].zero_();
  in.text[1].zero_();
  Indices got = SelectOne(*Make(Cdp(12)), in);
  ASSERT_EQ(got.size(), 12u);
  EXPECT_EQ(got, Reference(in, 12, 0.5));
  // A zero feature row has gain 0 (S_ii = 0): never kept while any other token has gain.
  EXPECT_FALSE(std::binary_search(got.begin(), got.end(), 4));
  // All-zero text: relevance is flat 0, selection by diversity alone; still valid indices.
  in.text.zero_();
  got = SelectOne(*Make(Cdp(12)), in);
  ASSERT_EQ(got.size(), 12u);
  EXPECT_TRUE(std::is_sorted(got.begin(), got.end()));
  EXPECT_GE(got.front(), 0);
  EXPECT_LT(got.back(), 30);
}

TEST(VisualPruner, NonFiniteInputsAreRejected) {
  Inputs in = Random(10, 8, 8, 2, 67);
  in.features[3][2] = std::numeric_limits<float>::quiet_NaN();
  std::vector<VisualImage> images{{in.embeds, in.features}};
  auto r = Make(Cdp(3))->Select(images, in.text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("non-finite"), std::string::npos) << r.status();
  in = Random(10, 8, 8, 2, 67);
  in.embeds[0][0] = std::numeric_limits<float>::infinity();
  images = {{in.embeds, in.features}};
  EXPECT_FALSE(Make(Cdp(3))->Select(images, in.text).ok());
  // theta close to 1: exp(alpha) overflows float32.
  in = Random(10, 8, 8, 2, 67);
  images = {{in.embeds, in.features}};
  r = Make(Cdp(3, 0.999))->Select(images, in.text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("theta"), std::string::npos) << r.status();
}

TEST(VisualPruner, GainGuardStopsAtZeroRelevance) {
  // Three tokens anti-aligned with the text (relevant), the rest identical and least relevant:
  // with theta = 1 their relevance is exactly 0, so their gain is 0.
  at::manual_seed(71);
  at::Tensor text = at::randn({1, 8});
  at::Tensor embeds = text.repeat({12, 1});  // cos = 1: -cos minimal
  for (int i = 0; i < 3; ++i) embeds[i] = -text[0] + 0.1 * at::randn({8});
  Inputs in{embeds, at::randn({12, 32}), text};
  VisualOptions o = Cdp(8, 1.0);
  o.gain_guard = true;
  Indices guarded = SelectOne(*Make(o), in);
  EXPECT_EQ(guarded, (Indices{0, 1, 2}));
  EXPECT_EQ(guarded, Reference(in, 8, 1.0, /*guard=*/true));
  o.gain_guard = false;
  EXPECT_EQ(SelectOne(*Make(o), in).size(), 8u);
}

TEST(VisualPruner, DivPruneMatchesReference) {
  at::manual_seed(73);
  std::vector<VisualImage> images{{at::Tensor(), at::randn({50, 20})},
                                  {at::Tensor(), at::randn({31, 20})}};
  VisualOptions o;
  o.method = VisualMethod::kDivPrune;
  o.num_keep_tokens = 9;
  auto r = Make(o)->Select(images, at::Tensor());
  ASSERT_TRUE(r.ok()) << r.status();
  for (int i = 0; i < 2; ++i) {
    Indices ref = visual::ReferenceDivPrune(images[i].features, 9);
    std::sort(ref.begin(), ref.end());
    EXPECT_EQ((*r)[i], ref);
  }
}

TEST(VisualPruner, RandomIsSeededDistinctAndSorted) {
  at::Tensor f = at::randn({100, 4});
  VisualOptions o;
  o.method = VisualMethod::kRandom;
  o.num_keep_tokens = 30;
  o.seed = 5;
  std::vector<VisualImage> images{{at::Tensor(), f}, {at::Tensor(), f}};
  auto a = Make(o)->Select(images, at::Tensor());
  auto b = Make(o)->Select(images, at::Tensor());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE((*a)[0], (*a)[1]);  // one generator consumed image by image
  for (const Indices& idx : *a) {
    EXPECT_EQ(idx.size(), 30u);
    EXPECT_TRUE(std::is_sorted(idx.begin(), idx.end()));
    EXPECT_EQ(std::set<int64_t>(idx.begin(), idx.end()).size(), 30u);
    EXPECT_GE(idx.front(), 0);
    EXPECT_LT(idx.back(), 100);
  }
  o.seed = 6;
  auto c = Make(o)->Select(images, at::Tensor());
  EXPECT_NE((*c)[0], (*a)[0]);
  // k = N: everything.
  o.num_keep_tokens = 100;
  auto all = Make(o)->Select({images[0]}, at::Tensor());
  EXPECT_EQ((*all)[0].size(), 100u);
}

TEST(VisualPruner, UniformGridIsEvenlySpaced) {
  VisualOptions o;
  o.method = VisualMethod::kUniform;
  o.num_keep_tokens = 4;
  auto r = Make(o)->Select({VisualImage{at::Tensor(), at::zeros({16, 2})}}, at::Tensor());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0], (Indices{2, 6, 10, 14}));
  o.num_keep_tokens = 3;
  r = Make(o)->Select({VisualImage{at::Tensor(), at::zeros({10, 2})}}, at::Tensor());
  EXPECT_EQ((*r)[0], (Indices{1, 5, 8}));
  o.num_keep_tokens = 7;
  r = Make(o)->Select({VisualImage{at::Tensor(), at::zeros({7, 2})}}, at::Tensor());
  EXPECT_EQ((*r)[0], (Indices{0, 1, 2, 3, 4, 5, 6}));
}

TEST(VisualPruner, CreateRejectsBadOptions) {
  VisualOptions o;
  EXPECT_FALSE(VisualPruner::Create(o).ok());  // no budget
  o.num_keep_tokens = 4;
  o.keep_ratio = 0.5;
  EXPECT_FALSE(VisualPruner::Create(o).ok());  // both
  o.keep_ratio = 0;
  o.theta = 1.5;
  auto r = VisualPruner::Create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("theta"), std::string::npos);
}

TEST(VisualPruner, BadShapesNameTheArgument) {
  auto p = Make(Cdp(2));
  at::Tensor text = at::randn({2, 8});
  auto expect_error = [&](std::vector<VisualImage> images, const at::Tensor& t,
                          const std::string& what) {
    auto r = p->Select(images, t);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(what), std::string::npos) << r.status();
  };
  expect_error({}, text, "images");
  expect_error({{at::randn({5, 8}), at::randn({5, 3, 2})}}, text, "images[0].features");
  expect_error({{at::randn({4, 8}), at::randn({5, 3})}}, text, "images[0].embeds");
  expect_error({{at::randn({5, 8}), at::randn({5, 3})}, {at::randn({5, 7}), at::randn({5, 3})}},
               text, "images[1].embeds");
  expect_error({{at::randn({5, 8}), at::randn({5, 3})}}, at::randn({2, 9}), "text_embeds");
  expect_error({{at::randn({5, 8}), at::randn({5, 3})}}, at::Tensor(), "text_embeds");
  expect_error({{at::randn({5, 8}), at::randn({5, 3}).to(at::kLong)}}, text, "images[0].features");
  expect_error({{at::randn({5, 8}), at::randn({0, 3})}}, text, "images[0].features");
}

TEST(VisualPruner, HalfPrecisionInputsAreComputedInFloat32) {
  Inputs in = Random(40, 16, 64, 2, 79);
  Inputs half{in.embeds.to(at::kHalf), in.features.to(at::kHalf), in.text.to(at::kHalf)};
  Inputs widened{half.embeds.to(at::kFloat), half.features.to(at::kFloat),
                 half.text.to(at::kFloat)};
  EXPECT_EQ(SelectOne(*Make(Cdp(10)), half), SelectOne(*Make(Cdp(10)), widened));
}

TEST(KeptPromptPositions, KeepsTextAndSelectedImageTokens) {
  // prompt: t I I I t I I t  (image 0: positions 1-3, image 1: positions 5-6)
  const std::vector<uint8_t> mask{0, 1, 1, 1, 0, 1, 1, 0};
  auto r = KeptPromptPositions(mask, std::vector<int64_t>{3, 2}, {{0, 2}, {1}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, (Indices{0, 1, 3, 4, 6, 7}));
  EXPECT_FALSE(KeptPromptPositions(mask, std::vector<int64_t>{3, 3}, {{0}, {1}}).ok());
  EXPECT_FALSE(KeptPromptPositions(mask, std::vector<int64_t>{3, 2}, {{3}, {1}}).ok());
  EXPECT_FALSE(KeptPromptPositions(mask, std::vector<int64_t>{3, 2}, {{0}}).ok());
}

}  // namespace
}  // namespace attnkit
