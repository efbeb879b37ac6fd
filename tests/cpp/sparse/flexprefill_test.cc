// FLEXPREFILL (core/src/sparse/flexprefill.cc): where it stays dense (the reference's range,
// continued prompts, min_sparse_length), what every head always keeps, the budgets' clamps, inputs
// of any dtype, its config checks, and a session's prefill through it. Exactness against the
// authors' get_active_blocks: conformance/flexprefill_cases.cc (cases/generate_flexprefill.py).
#include <cmath>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "attnkit/sparse/sparse_attention.h"

namespace attnkit::sparse {
namespace {

SparseOptions Flex(int block, double gamma, double tau, int min_budget = 1, int max_budget = 0) {
  SparseOptions o;
  o.mode = SparseMode::kFlexPrefill;
  o.block_size = block;
  o.flex_gamma = gamma;
  o.flex_tau = tau;
  o.flex_min_budget = min_budget;
  o.flex_max_budget = max_budget;
  return o;
}

std::unique_ptr<SparseAttention> Make(const SparseOptions& o) {
  auto s = SparseAttention::Create(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Queries and keys with a per-head direction and a few heavy keys: attention with vertical lines
// and a recency diagonal, as in the generator's cases.
void Structured(int64_t heads, int64_t kv_heads, int64_t n, int64_t d, at::Tensor* q,
                at::Tensor* k) {
  *q = at::randn({heads, 1, d}) * 1.5 + at::randn({heads, n, d});
  *k = at::randn({kv_heads, 1, d}) * 1.5 + at::randn({kv_heads, n, d});
  const at::Tensor heavy = at::randperm(n).narrow(0, 0, n / 40);
  k->index_copy_(1, heavy, k->index_select(1, heavy) * 3.0);
}

TEST(FlexPrefill, DenseWhereTheReferenceIsAndForContinuedPrompts) {
  auto flex = Make(Flex(16, 0.9, 0.1, 1, 0));
  EXPECT_EQ(flex->MaskHeads(4), 4);
  EXPECT_EQ(flex->BuildStaticMask(100, 100).status().code(), absl::StatusCode::kFailedPrecondition);
  at::manual_seed(3);
  // 32 tokens = 2 blocks: within max(2 * 16, 16), dense; 33 are sparse-eligible.
  for (int64_t n : {20, 32}) {
    auto mask = flex->BuildMask(at::randn({4, n, 16}), at::randn({2, n, 16}));
    ASSERT_TRUE(mask.ok()) << mask.status();
    const BlockGrid grid = *BlockGrid::Make(n, n, 16);
    EXPECT_TRUE(mask->equal(CausalBlockMask(grid).expand({4, grid.q_blocks, grid.k_blocks})));
  }
  // min_budget rounded up to blocks widens the dense range: 100 tokens -> 7 blocks of 16.
  auto wide = Make(Flex(16, 0.9, 0.1, 100, 0));
  auto mask = wide->BuildMask(at::randn({2, 112, 16}), at::randn({2, 112, 16}));
  ASSERT_TRUE(mask.ok());
  EXPECT_EQ(mask->sum().item<int64_t>(), 2 * 7 * 8 / 2);
  // Queries shorter than the keys (the reference takes q_len == k_len only): dense.
  const BlockGrid grid = *BlockGrid::Make(200, 300, 16);
  auto continued = flex->BuildMask(at::randn({4, 200, 16}), at::randn({2, 300, 16}));
  ASSERT_TRUE(continued.ok());
  EXPECT_TRUE(continued->equal(CausalBlockMask(grid).expand({4, grid.q_blocks, grid.k_blocks})));
  // min_sparse_length.
  SparseOptions o = Flex(16, 0.5, 0.0);
  o.min_sparse_length = 500;
  at::Tensor q, k;
  Structured(4, 2, 400, 16, &q, &k);
  auto short_prompt = Make(o)->BuildMask(q, k);
  ASSERT_TRUE(short_prompt.ok());
  EXPECT_EQ(short_prompt->sum().item<int64_t>(), 4 * 25 * 26 / 2);
  // kv heads must divide the query heads.
  EXPECT_EQ(flex->BuildMask(at::randn({3, 100, 16}), at::randn({2, 100, 16})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(FlexPrefill, EveryHeadKeepsTheFirstColumnAndTheDiagonalWithinTheCausalBlocks) {
  at::manual_seed(4);
  at::Tensor q, k;
  Structured(4, 2, 700, 32, &q, &k);
  for (double tau : {0.0, 0.2, 1.0}) {
    auto mask = Make(Flex(32, 0.8, tau))->BuildMask(q, k);
    ASSERT_TRUE(mask.ok()) << mask.status();
    const int64_t nb = 22;
    ASSERT_EQ(mask->sizes(), at::IntArrayRef({4, nb, nb}));
    const at::Tensor causal = at::ones({nb, nb}, at::kBool).tril();
    const at::Tensor rows = at::arange(nb);
    for (int64_t h = 0; h < 4; ++h) {
      EXPECT_TRUE((*mask)[h].select(1, 0).all().item<bool>()) << "tau " << tau;
      EXPECT_TRUE((*mask)[h].diagonal().all().item<bool>()) << "tau " << tau;
      EXPECT_FALSE((*mask)[h].logical_and(causal.logical_not()).any().item<bool>());
    }
    const double density = MaskDensity(*mask, *BlockGrid::Make(700, 700, 32));
    EXPECT_GT(density, 0.0);
    EXPECT_LT(density, 1.0) << "tau " << tau;
  }
}

// A budget of one block and no query-aware head leave only what is always kept: the first column
// block and the diagonal.
TEST(FlexPrefill, OneBlockBudgetsKeepOnlyTheFirstColumnAndTheDiagonal) {
  at::manual_seed(5);
  at::Tensor q, k;
  Structured(2, 1, 300, 16, &q, &k);
  auto mask = Make(Flex(16, 0.99, 0.0, 1, 16))->BuildMask(q, k);
  ASSERT_TRUE(mask.ok()) << mask.status();
  const int64_t nb = 19;
  const at::Tensor r = at::arange(nb).view({nb, 1}), c = at::arange(nb).view({1, nb});
  const at::Tensor want = c.eq(0).logical_or(r.eq(c)).logical_and(c.le(r));
  for (int64_t h = 0; h < 2; ++h) EXPECT_TRUE((*mask)[h].equal(want)) << "head " << h;
}

// Half-precision inputs are chosen over in float32: the same mask as their float32 values.
TEST(FlexPrefill, HalfPrecisionInputsChooseAsTheirFloatValues) {
  at::manual_seed(6);
  at::Tensor q, k;
  Structured(4, 2, 500, 32, &q, &k);
  auto flex = Make(Flex(32, 0.9, 0.1));
  const at::Tensor qb = q.to(at::kBFloat16), kb = k.to(at::kBFloat16);
  auto a = flex->BuildMask(qb, kb);
  auto b = flex->BuildMask(qb.to(at::kFloat), kb.to(at::kFloat));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->equal(*b));
}

TEST(FlexPrefill, ConfigChecksNameTheField) {
  const std::pair<std::string, std::string> bad[] = {
      {"mode: FLEXPREFILL flexprefill { gamma: 1.5 }", "flexprefill.gamma"},
      {"mode: FLEXPREFILL flexprefill { gamma: -0.5 }", "flexprefill.gamma"},
      {"mode: FLEXPREFILL flexprefill { tau: -0.1 }", "flexprefill.tau"},
      {"mode: FLEXPREFILL flexprefill { tau: 2 }", "flexprefill.tau"},
      {"mode: FLEXPREFILL flexprefill { min_budget: -1 }", "flexprefill.min_budget"},
      {"mode: FLEXPREFILL flexprefill { max_budget: -1 }", "flexprefill.max_budget"},
  };
  for (const auto& [text, field] : bad) {
    auto o = ParseSparseAttentionConfig(text, true);
    ASSERT_FALSE(o.ok()) << text;
    EXPECT_NE(o.status().message().find(field), std::string::npos) << o.status();
  }
  auto o = ParseSparseAttentionConfig("mode: FLEXPREFILL", true);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mode, SparseMode::kFlexPrefill);
  EXPECT_DOUBLE_EQ(o->flex_gamma, 0.9);  // the paper's
  EXPECT_DOUBLE_EQ(o->flex_tau, 0.0);    // the reference function's default
  EXPECT_EQ(o->flex_min_budget, 1);
  EXPECT_EQ(o->flex_max_budget, 0);
}

// A session's prefill goes through the mode like the others: the output of SparseAttention's
// Prefill over the same tokens.
TEST(FlexPrefill, SessionPrefillIsTheEnginesPrefill) {
  const std::string text =
      "num_layers: 1 num_heads: 4 num_kv_heads: 2 head_dim: 32 sparse_attention { mode: "
      "FLEXPREFILL block_size: 32 flexprefill { gamma: 0.8 tau: 0.2 } }";
  auto options = ParseSessionConfig(text, true);
  ASSERT_TRUE(options.ok()) << options.status();
  auto session = Session::Create(*options);
  ASSERT_TRUE(session.ok()) << session.status();
  at::manual_seed(7);
  at::Tensor q, k;
  Structured(4, 2, 600, 32, &q, &k);
  const at::Tensor v = at::randn({2, 600, 32});
  at::Tensor out = at::empty({1, 4, 600, 32});
  ASSERT_TRUE((*session)->Attend(0, q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), out).ok());
  auto engine = Make(options->sparse);
  double density = 0;
  auto want = engine->Prefill(q, k, v, 1.0 / std::sqrt(32.0), &density);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_LE((out[0] - *want).abs().max().item<double>(), 1e-5);
  EXPECT_LT(density, 1.0);
  EXPECT_DOUBLE_EQ((*session)->Stats().sparse_density, density);
}

}  // namespace
}  // namespace attnkit::sparse
