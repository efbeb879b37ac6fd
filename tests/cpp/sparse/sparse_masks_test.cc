// Block masks (docs/algorithms.md section 2): grid, dense tail, A-/Tri-shape against a
// tensor-formula transcription of the rules, and the XAttention selection on hand-made scores.
#include <tuple>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/sparse/masks.h"

namespace attnkit::sparse {
namespace {

BlockGrid Grid(int64_t q_len, int64_t k_len, int64_t block) {
  auto grid = BlockGrid::Make(q_len, k_len, block);
  EXPECT_TRUE(grid.ok()) << grid.status();
  return *grid;
}

// Every block holding a causal pair, from token positions: row r's last query
// min((r + 1) * b, q_len) - 1 sees keys up to that position + k_len - q_len.
at::Tensor FormulaDense(int64_t q_len, int64_t k_len, int64_t b) {
  const int64_t qb = (q_len + b - 1) / b, kb = (k_len + b - 1) / b;
  auto lopt = at::TensorOptions().dtype(at::kLong);
  at::Tensor last_query = at::arange(qb, lopt).add(1).mul(b).clamp_max(q_len).sub(1);
  at::Tensor last_block = last_query.add(k_len - q_len).div(b, "floor").unsqueeze(1);
  return at::arange(kb, lopt).unsqueeze(0).le(last_block).unsqueeze(0);
}

// Tri-shape written with whole-tensor comparisons, as the reference builds it.
at::Tensor FormulaTriShape(int64_t q_len, int64_t k_len, int64_t b, int64_t recent, int64_t last,
                           int64_t sink_blocks, bool tail) {
  const int64_t qb = (q_len + b - 1) / b, kb = (k_len + b - 1) / b, off = kb - qb;
  auto lopt = at::TensorOptions().dtype(at::kLong);
  at::Tensor diag = at::arange(qb, lopt).unsqueeze(1).add(off);
  at::Tensor col = at::arange(kb, lopt).unsqueeze(0);
  at::Tensor causal = col.le(diag);
  if (q_len <= recent) return FormulaDense(q_len, k_len, b);
  at::Tensor m = col.lt(sink_blocks).logical_or(col.gt(diag.sub(recent / b))).logical_and(causal);
  if (tail && last > 0) {
    const int64_t pad = qb * b - q_len;
    const int64_t rows = std::min(qb, (std::min(last, q_len) + pad + b - 1) / b);
    at::Tensor dense_rows = at::arange(qb, lopt).ge(qb - rows).unsqueeze(1);
    m = m.logical_or(causal.logical_and(dense_rows));
  }
  return m.unsqueeze(0);
}

TEST(SparseMasks, GridRejectsBadLengths) {
  EXPECT_EQ(BlockGrid::Make(10, 5, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockGrid::Make(1, 5, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockGrid::Make(-1, 5, 4).status().code(), absl::StatusCode::kInvalidArgument);
  const BlockGrid g = Grid(300, 500, 128);
  EXPECT_EQ(g.q_blocks, 3);
  EXPECT_EQ(g.k_blocks, 4);
  EXPECT_EQ(g.offset, 1);
  // 200 more keys than queries: query 127 (block 0) is at position 327, in key block 2.
  EXPECT_EQ(g.reach, 2);
  EXPECT_EQ(g.LastCausalBlock(0), 2);
  EXPECT_EQ(g.LastCausalBlock(1), 3);
  EXPECT_EQ(g.LastCausalBlock(2), 3);
  EXPECT_EQ(g.CausalBlocks(), 3 + 4 + 4);
}

TEST(SparseMasks, DenseMaskHoldsEveryCausalPair) {
  // 300 queries over 500 keys: offset 1, but the queries of rows 0 and 1 reach one block further
  // (0 < 200 % 128 <= the 84 padded queries): the dense mask covers it, the block-causal one not.
  const BlockGrid g = Grid(300, 500, 128);
  at::Tensor m = CausalBlockMask(g);
  ASSERT_EQ(m.sizes(), at::IntArrayRef({1, 3, 4}));
  const std::vector<std::vector<int>> want = {{1, 1, 1, 0}, {1, 1, 1, 1}, {1, 1, 1, 1}};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 4; ++c) EXPECT_EQ(m[0][r][c].item<bool>(), want[r][c] == 1) << r << c;
  }
  EXPECT_DOUBLE_EQ(MaskDensity(m, g), 1.0);
  // Aligned (offset = reach): the block-causal mask.
  const BlockGrid aligned = Grid(300, 556, 128);
  EXPECT_EQ(aligned.offset, 2);
  EXPECT_EQ(aligned.reach, 2);
  EXPECT_EQ(aligned.CausalBlocks(), 3 + 4 + 5);
  for (const auto& [q, k, b] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{300, 500, 128},
                                                          {300, 556, 128},
                                                          {200, 630, 128},
                                                          {1000, 1010, 128},
                                                          {20, 63, 16},
                                                          {64, 64, 16},
                                                          {1, 9, 4},
                                                          {17, 17, 4},
                                                          {129, 1000, 128}}) {
    const BlockGrid grid = Grid(q, k, b);
    SCOPED_TRACE(testing::Message() << "q " << q << " k " << k << " b " << b);
    EXPECT_TRUE(CausalBlockMask(grid).equal(FormulaDense(q, k, b)));
    EXPECT_EQ(grid.CausalBlocks(), FormulaDense(q, k, b).sum().item<int64_t>());
  }
}

TEST(SparseMasks, DenseTailRows) {
  EXPECT_EQ(DenseTailRows(Grid(777, 777, 128), 300), 4);    // pad 119: ceil(419 / 128)
  EXPECT_EQ(DenseTailRows(Grid(1000, 1000, 128), 100), 1);  // pad 24: ceil(124 / 128)
  EXPECT_EQ(DenseTailRows(Grid(2048, 2048, 128), 0), 0);
  // No tail for last_query_size 0, not even the partial last block (the reference's
  // `if self.last_query_size:`).
  EXPECT_EQ(DenseTailRows(Grid(1000, 1000, 128), 0), 0);
  EXPECT_EQ(DenseTailRows(Grid(1000, 1000, 128), 1), 1);
  EXPECT_EQ(DenseTailRows(Grid(50, 50, 128), 1000), 1);
  EXPECT_EQ(DenseTailRows(Grid(0, 0, 128), 100), 0);
}

TEST(SparseMasks, TriShapeAndAShapeMatchTheFormula) {
  struct Case {
    int64_t q, k, b, recent, last;
  };
  const Case cases[] = {
      {1000, 1000, 128, 256, 100}, {1500, 2500, 128, 256, 100}, {2048, 2048, 128, 512, 0},
      {777, 777, 128, 128, 300},   {777, 900, 64, 128, 1},      {100, 1000, 32, 64, 10},
      {129, 130, 128, 128, 0},     {64, 64, 16, 64, 5},         {1000, 1500, 128, 256, 0},
      {200, 630, 128, 256, 100},   {650, 1200, 128, 256, 28},   {1000, 1010, 128, 256, 100}};
  for (const Case& c : cases) {
    const BlockGrid g = Grid(c.q, c.k, c.b);
    SCOPED_TRACE(testing::Message() << "q " << c.q << " k " << c.k << " b " << c.b);
    EXPECT_TRUE(TriShapeMask(g, 0, c.recent, c.last)
                    .equal(FormulaTriShape(c.q, c.k, c.b, c.recent, c.last, 1, true)));
    EXPECT_TRUE(AShapeMask(g, 0, c.recent)
                    .equal(FormulaTriShape(c.q, c.k, c.b, c.recent, c.last, 1, false)));
    // A sink of 2.5 blocks keeps 3 block columns.
    EXPECT_TRUE(TriShapeMask(g, c.b * 5 / 2, c.recent, c.last)
                    .equal(FormulaTriShape(c.q, c.k, c.b, c.recent, c.last, 3, true)));
  }
}

TEST(SparseMasks, TriShapeIsSparseForLongPrompts) {
  const BlockGrid g = Grid(4096, 4096, 128);
  at::Tensor m = TriShapeMask(g, 0, 1024, 100);
  // Row 10: sink + 8 recent blocks (3..10); the last row is dense.
  EXPECT_EQ(m[0][10].sum().item<int64_t>(), 9);
  EXPECT_EQ(m[0][31].sum().item<int64_t>(), 32);
  const double density = MaskDensity(m, g);
  EXPECT_GT(density, 0.2);
  EXPECT_LT(density, 0.6);
}

// One row over 4 key blocks: the diagonal is block 3, block 0 always kept.
at::Tensor RowScores(std::vector<float> values) {
  return at::tensor(values).view({1, 1, static_cast<int64_t>(values.size())});
}

TEST(SparseMasks, XAttentionSelectionKeepsTheThresholdMass) {
  const BlockGrid g = Grid(128, 512, 128);
  const at::Tensor s = RowScores({0.125f, 0.5f, 0.25f, 0.125f});
  auto pick = [&](double t) {
    auto m = SelectXAttentionBlocks(s, g, {t}, 0);
    EXPECT_TRUE(m.ok()) << m.status();
    return std::vector<bool>{(*m)[0][0][0].item<bool>(), (*m)[0][0][1].item<bool>(),
                             (*m)[0][0][2].item<bool>(), (*m)[0][0][3].item<bool>()};
  };
  EXPECT_EQ(pick(0.25), (std::vector<bool>{true, false, false, true}));  // 0.25 is not < 0.25
  EXPECT_EQ(pick(0.5), (std::vector<bool>{true, true, false, true}));
  EXPECT_EQ(pick(0.8), (std::vector<bool>{true, true, true, true}));
  EXPECT_EQ(pick(1.0), (std::vector<bool>{true, true, true, true}));
}

// With q_len == k_len the reference does not count block 0 up front (its diagonal window covers
// column 0) and its cumulative sum lags one candidate behind.
TEST(SparseMasks, XAttentionAlignedRowsFollowTheReference) {
  const BlockGrid g = Grid(512, 512, 128);
  at::Tensor s = at::zeros({1, 4, 4});
  s[0][3].copy_(at::tensor(std::vector<float>{0.125f, 0.5f, 0.25f, 0.125f}));
  auto row3 = [&](double t) {
    auto m = SelectXAttentionBlocks(s, g, {t}, 0);
    EXPECT_TRUE(m.ok()) << m.status();
    return (*m)[0][3].to(at::kLong);
  };
  auto bits = [](std::vector<int64_t> v) { return at::tensor(v); };
  // Diagonal 0.125 kept; block 1 compared with 0, block 2 with 0.125, block 0 with 0.625.
  EXPECT_TRUE(row3(0.5).equal(bits({1, 1, 1, 1})));
  EXPECT_TRUE(row3(0.1).equal(bits({1, 1, 0, 1})));  // block 0 is kept regardless
  // The same row with block 0 counted up front (keys before the queries: offset 1).
  const BlockGrid shifted = Grid(384, 512, 128);
  at::Tensor s2 = s.narrow(1, 1, 3).contiguous();
  auto m2 = SelectXAttentionBlocks(s2, shifted, {0.5}, 0);
  ASSERT_TRUE(m2.ok());
  EXPECT_TRUE((*m2)[0][2].to(at::kLong).equal(bits({1, 1, 0, 1})));
}

TEST(SparseMasks, XAttentionTiesPreferTheLowerBlock) {
  const BlockGrid g = Grid(128, 512, 128);
  auto m = SelectXAttentionBlocks(RowScores({0.25f, 0.25f, 0.25f, 0.25f}), g, {0.6}, 0);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE((*m)[0][0].equal(at::tensor(std::vector<int64_t>{1, 1, 0, 1}).to(at::kBool)));
}

TEST(SparseMasks, XAttentionClearsAboveTheDiagonalAndAppliesTheTail) {
  const BlockGrid g = Grid(256, 256, 128);
  at::Tensor s = at::tensor(std::vector<float>{0.5f, 0.5f, 0.25f, 0.75f}).view({1, 2, 2});
  auto m = SelectXAttentionBlocks(s, g, {1.0}, 0);
  ASSERT_TRUE(m.ok());
  EXPECT_FALSE((*m)[0][0][1].item<bool>());
  EXPECT_TRUE((*m)[0][1][0].item<bool>());
  EXPECT_TRUE((*m)[0][1][1].item<bool>());
  // A sparse row made dense by the tail.
  const BlockGrid g3 = Grid(300, 300, 100);
  at::Tensor s3 = at::zeros({1, 3, 3});
  s3[0][2][2].fill_(1.0);
  auto sparse = SelectXAttentionBlocks(s3, g3, {0.5}, 0);
  auto dense_tail = SelectXAttentionBlocks(s3, g3, {0.5}, 150);
  ASSERT_TRUE(sparse.ok() && dense_tail.ok());
  EXPECT_FALSE((*sparse)[0][2][1].item<bool>());
  EXPECT_TRUE((*dense_tail)[0][2][1].item<bool>());
  EXPECT_TRUE((*dense_tail)[0][1][1].item<bool>());  // 150 queries reach block 1
  EXPECT_FALSE((*dense_tail)[0][1][2].item<bool>());
}

TEST(SparseMasks, XAttentionPerHeadThresholds) {
  const BlockGrid g = Grid(128, 512, 128);
  at::Tensor s = RowScores({0.125f, 0.5f, 0.25f, 0.125f}).expand({2, 1, 4}).contiguous();
  auto m = SelectXAttentionBlocks(s, g, {0.25, 0.8}, 0);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)[0].sum().item<int64_t>(), 2);
  EXPECT_EQ((*m)[1].sum().item<int64_t>(), 4);
  EXPECT_EQ(SelectXAttentionBlocks(s, g, {0.5, 0.5, 0.5}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SelectXAttentionBlocks(s, g, {0.0}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SelectXAttentionBlocks(at::zeros({1, 2, 4}), g, {0.5}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnkit::sparse

// The tensor-operation selection (used for scores on a CUDA device) agrees with the CPU loop on
// random scores, with ties, every offset/chunk case, per-head thresholds and the dense tail.
TEST(SparseMasks, XAttentionTensorOpsSelectionMatchesTheLoop) {
  at::manual_seed(7);
  struct Case {
    int64_t q_len, k_len, block, last;
    std::vector<double> thresholds;
  };
  const std::vector<Case> cases = {
      {1024, 1024, 64, 100, {0.9}}, {1536, 2500, 64, 50, {0.7}},
      {3000, 3000, 128, 0, {0.95}}, {100, 100, 16, 0, {1.0}},
      {64, 64, 64, 10, {0.5}},      {4096, 4096, 16, 100, {0.8, 0.6, 0.99}},
      {8192, 8192, 16, 0, {0.9}},  // several reference chunks: block 0 counted in later ones
  };
  for (const Case& c : cases) {
    auto grid = attnkit::sparse::BlockGrid::Make(c.q_len, c.k_len, c.block);
    ASSERT_TRUE(grid.ok());
    const int64_t heads = static_cast<int64_t>(c.thresholds.size() == 1 ? 2 : c.thresholds.size());
    for (int variant = 0; variant < 3; ++variant) {
      at::Tensor scores = at::rand({heads, grid->q_blocks, grid->k_blocks});
      if (variant == 1) scores = (scores * 4).floor() / 4;  // many exact ties
      if (variant == 2) scores = scores.pow(8);             // a few heavy blocks per row
      auto loop = attnkit::sparse::SelectXAttentionBlocks(scores, *grid, c.thresholds, c.last);
      auto ops =
          attnkit::sparse::SelectXAttentionBlocksTensorOps(scores, *grid, c.thresholds, c.last);
      ASSERT_TRUE(loop.ok()) << loop.status();
      ASSERT_TRUE(ops.ok()) << ops.status();
      EXPECT_TRUE(loop->equal(*ops))
          << "q_len " << c.q_len << " k_len " << c.k_len << " block " << c.block << " variant "
          << variant << ": " << loop->ne(*ops).sum().item<int64_t>() << " blocks differ";
      EXPECT_DOUBLE_EQ(attnkit::sparse::MaskDensity(*loop, *grid),
                       attnkit::sparse::MaskDensity(*ops, *grid));
    }
  }
  auto grid = attnkit::sparse::BlockGrid::Make(128, 128, 64);
  EXPECT_FALSE(
      attnkit::sparse::SelectXAttentionBlocksTensorOps(at::rand({1, 3, 2}), *grid, {0.9}, 0).ok());
  EXPECT_FALSE(
      attnkit::sparse::SelectXAttentionBlocksTensorOps(at::rand({1, 2, 2}), *grid, {1.5}, 0).ok());
}
