#include "attnkit/sparse/masks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "sparse/sparse_backend.h"
#include "util/status_macros.h"

namespace attnkit::sparse {
namespace {

// Without a + b - 1, which overflows for lengths near 2^63.
int64_t CeilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

at::Tensor EmptyMask(int64_t heads, const BlockGrid& grid) {
  return at::zeros({heads, grid.q_blocks, grid.k_blocks}, at::TensorOptions().dtype(at::kBool));
}

// Sets columns [begin, end) of row `row` of a compact [qb, kb] slice, clipped to the causal part.
void SetCausalRange(bool* slice, const BlockGrid& grid, int64_t row, int64_t begin, int64_t end) {
  begin = std::max<int64_t>(begin, 0);
  end = std::min(end, grid.Diagonal(row) + 1);
  for (int64_t c = begin; c < end; ++c) slice[row * grid.k_blocks + c] = true;
}

// Query-block rows per chunk of the reference estimate: it works in chunks of
// max(min(max(2048, p), 2^28 / p), 2048) tokens, p the next power of two >= k_len.
int64_t ReferenceChunkRows(const BlockGrid& grid) {
  int64_t p = 1;
  while (p < grid.k_len) p <<= 1;
  const int64_t chunk = std::max<int64_t>(
      std::min<int64_t>(std::max<int64_t>(2048, p), (int64_t{1} << 28) / p), 2048);
  return std::max<int64_t>(1, chunk / grid.block);
}

// Whether the reference counts block 0 among the blocks kept before the selection for row `row`:
// its initial mask sets column 0 and then overwrites the chunk's diagonal window (columns
// offset + first row of the chunk onward) with an identity, so column 0 survives only when that
// window starts right of it.
bool SinkCounted(const BlockGrid& grid, int64_t row, int64_t rows_per_chunk) {
  return grid.offset + (row / rows_per_chunk) * rows_per_chunk > 0;
}

// The argument checks shared by both selections.
absl::Status CheckSelectionArgs(const at::Tensor& block_scores, const BlockGrid& grid,
                                const std::vector<double>& thresholds) {
  if (!block_scores.defined() || block_scores.dim() != 3 || block_scores.size(0) < 1 ||
      block_scores.size(1) != grid.q_blocks || block_scores.size(2) != grid.k_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_scores: expected shape [heads, ", grid.q_blocks, ", ", grid.k_blocks, "], got ",
        block_scores.defined() ? absl::StrCat("[", absl::StrJoin(block_scores.sizes(), ", "), "]")
                               : "an undefined tensor"));
  }
  const int64_t heads = block_scores.size(0);
  if (thresholds.size() != 1 && static_cast<int64_t>(thresholds.size()) != heads) {
    return absl::InvalidArgumentError(
        absl::StrCat("thresholds: expected 1 or ", heads, " entries, got ", thresholds.size()));
  }
  for (double t : thresholds) {
    if (!(t > 0 && t <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("threshold: must be in (0, 1], got ", t));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BlockGrid> BlockGrid::Make(int64_t q_len, int64_t k_len, int64_t block) {
  if (block < 1)
    return absl::InvalidArgumentError(absl::StrCat("block_size: must be >= 1, got ", block));
  if (q_len < 0 || k_len < 0 || q_len > k_len) {
    return absl::InvalidArgumentError(
        absl::StrCat("q_len (", q_len, ") must be in [0, k_len (", k_len,
                     ")]: the queries are the last positions of the keys"));
  }
  BlockGrid g;
  g.q_len = q_len;
  g.k_len = k_len;
  g.block = block;
  g.q_blocks = CeilDiv(q_len, block);
  g.k_blocks = CeilDiv(k_len, block);
  g.offset = g.k_blocks - g.q_blocks;
  g.reach = CeilDiv(k_len - q_len, block);
  int64_t cells = 0;
  if (__builtin_mul_overflow(g.q_blocks, g.k_blocks, &cells)) {
    return absl::InvalidArgumentError(absl::StrCat("mask: q_blocks (", g.q_blocks, ") x k_blocks (",
                                                   g.k_blocks, ") is more than 2^63 blocks (q_len ",
                                                   q_len, ", k_len ", k_len, ", block_size ", block,
                                                   ")"));
  }
  return g;
}

int64_t BlockGrid::CausalBlocks() const {
  if (q_blocks == 0) return 0;
  // Row r holds LastCausalBlock(r) + 1 blocks: r + offset + 1, and one more in every row but the
  // last when reach = offset + 1.
  return q_blocks * (offset + 1) + q_blocks * (q_blocks - 1) / 2 +
         (reach - offset) * (q_blocks - 1);
}

at::Tensor CausalBlockMask(const BlockGrid& grid) {
  at::Tensor mask = EmptyMask(1, grid);
  bool* m = mask.data_ptr<bool>();
  for (int64_t r = 0; r < grid.q_blocks; ++r) {
    for (int64_t c = 0; c <= grid.LastCausalBlock(r); ++c) m[r * grid.k_blocks + c] = true;
  }
  return mask;
}

int64_t DenseTailRows(const BlockGrid& grid, int64_t last_query_size) {
  if (grid.q_blocks == 0 || last_query_size <= 0) return 0;
  const int64_t pad = grid.q_blocks * grid.block - grid.q_len;
  const int64_t last = std::min(last_query_size, grid.q_len);
  return std::min(grid.q_blocks, CeilDiv(last + pad, grid.block));
}

void ApplyDenseTail(at::Tensor& mask, const BlockGrid& grid, int64_t last_query_size) {
  const int64_t tail = DenseTailRows(grid, last_query_size);
  bool* m = mask.data_ptr<bool>();
  for (int64_t h = 0; h < mask.size(0); ++h) {
    bool* slice = m + h * grid.q_blocks * grid.k_blocks;
    for (int64_t r = grid.q_blocks - tail; r < grid.q_blocks; ++r) {
      SetCausalRange(slice, grid, r, 0, grid.k_blocks);
    }
  }
}

at::Tensor AShapeMask(const BlockGrid& grid, int64_t sink_size, int64_t recent_size) {
  if (grid.q_len <= recent_size) return CausalBlockMask(grid);
  const int64_t sink_blocks = std::max<int64_t>(1, CeilDiv(sink_size, grid.block));
  const int64_t local_blocks = recent_size / grid.block;
  at::Tensor mask = EmptyMask(1, grid);
  bool* m = mask.data_ptr<bool>();
  for (int64_t r = 0; r < grid.q_blocks; ++r) {
    SetCausalRange(m, grid, r, 0, sink_blocks);
    SetCausalRange(m, grid, r, grid.Diagonal(r) - local_blocks + 1, grid.Diagonal(r) + 1);
  }
  return mask;
}

at::Tensor TriShapeMask(const BlockGrid& grid, int64_t sink_size, int64_t recent_size,
                        int64_t last_query_size) {
  at::Tensor mask = AShapeMask(grid, sink_size, recent_size);
  ApplyDenseTail(mask, grid, last_query_size);
  return mask;
}

absl::StatusOr<at::Tensor> SelectXAttentionBlocks(const at::Tensor& block_scores,
                                                  const BlockGrid& grid,
                                                  const std::vector<double>& thresholds,
                                                  int64_t last_query_size) {
  ATTNKIT_RETURN_IF_ERROR(CheckSelectionArgs(block_scores, grid, thresholds));
  if (ChooseSelectionBackend(block_scores.device()) == SparseBackend::kTensorOps) {
    return SelectXAttentionBlocksTensorOps(block_scores, grid, thresholds, last_query_size);
  }
  const int64_t heads = block_scores.size(0);
  const at::Tensor scores = block_scores.to(at::kFloat).contiguous();
  const float* sp = scores.data_ptr<float>();
  at::Tensor mask = EmptyMask(heads, grid);
  bool* mp = mask.data_ptr<bool>();
  const int64_t kb = grid.k_blocks;
  std::vector<double> row(kb);
  std::vector<int64_t> order;
  order.reserve(kb);
  const int64_t rows_per_chunk = ReferenceChunkRows(grid);
  for (int64_t h = 0; h < heads; ++h) {
    const double threshold = thresholds.size() == 1 ? thresholds[0] : thresholds[h];
    for (int64_t r = 0; r < grid.q_blocks; ++r) {
      const float* s = sp + (h * grid.q_blocks + r) * kb;
      bool* m = mp + (h * grid.q_blocks + r) * kb;
      double total = 0;
      for (int64_t c = 0; c < kb; ++c) {
        row[c] = static_cast<double>(s[c]);
        total += row[c];
      }
      const double required = total * threshold;
      const int64_t diag = grid.Diagonal(r);
      // Block 0 counts as kept up front only outside the reference's first diagonal window.
      const bool sink_counted = diag != 0 && SinkCounted(grid, r, rows_per_chunk);
      m[0] = true;
      m[diag] = true;
      double kept = row[diag] + (sink_counted ? row[0] : 0.0);
      order.clear();
      for (int64_t c = 0; c < kb; ++c) {
        if (c != diag && !(c == 0 && sink_counted)) order.push_back(c);
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return row[a] > row[b]; });
      // Mass compared with the candidate's: with block 0 counted, everything kept so far; otherwise
      // (the reference's cumulative sum is one position behind) everything kept before the previous
      // candidate, so the first candidate is always taken.
      double lagged = sink_counted ? kept : 0.0;
      for (int64_t c : order) {
        if (!(lagged < required)) break;
        m[c] = true;
        lagged = sink_counted ? kept + row[c] : kept;
        kept += row[c];
      }
      for (int64_t c = diag + 1; c < kb; ++c) m[c] = false;
    }
  }
  if (last_query_size > 0) ApplyDenseTail(mask, grid, last_query_size);
  return mask;
}

absl::StatusOr<at::Tensor> SelectXAttentionBlocksTensorOps(const at::Tensor& block_scores,
                                                           const BlockGrid& grid,
                                                           const std::vector<double>& thresholds,
                                                           int64_t last_query_size) {
  ATTNKIT_RETURN_IF_ERROR(CheckSelectionArgs(block_scores, grid, thresholds));
  const int64_t heads = block_scores.size(0), R = grid.q_blocks, K = grid.k_blocks;
  const at::Device device = block_scores.device();
  const auto longs = at::TensorOptions().dtype(at::kLong);
  if (R == 0 || K == 0) return EmptyMask(heads, grid).to(device);
  // Per-row facts from the grid, built on the host ([R] entries) and moved over once.
  const int64_t rows_per_chunk = ReferenceChunkRows(grid);
  at::Tensor diag_host = at::empty({R}, longs), sink_host = at::empty({R}, at::kBool);
  for (int64_t r = 0; r < R; ++r) {
    diag_host.data_ptr<int64_t>()[r] = grid.Diagonal(r);
    sink_host.data_ptr<bool>()[r] = grid.Diagonal(r) != 0 && SinkCounted(grid, r, rows_per_chunk);
  }
  std::vector<double> per_head(heads);
  for (int64_t h = 0; h < heads; ++h)
    per_head[h] = thresholds.size() == 1 ? thresholds[0] : thresholds[h];
  const at::Tensor threshold =
      at::tensor(per_head, at::TensorOptions().dtype(at::kDouble)).to(device).view({heads, 1});
  const at::Tensor diag = diag_host.to(device), sink = sink_host.to(device);

  const at::Tensor s = block_scores.to(at::kDouble);  // [h, R, K]
  const at::Tensor required = s.sum(-1) * threshold;  // [h, R]
  const at::Tensor col = at::arange(K, longs.device(device)).view({1, K});
  const at::Tensor is_diag = col.eq(diag.view({R, 1}));  // [R, K]
  const at::Tensor excluded = is_diag.logical_or(col.eq(0).logical_and(sink.view({R, 1})));
  const at::Tensor at_diag = s.gather(2, diag.view({1, R, 1}).expand({heads, R, 1})).squeeze(2);
  const at::Tensor kept0 =
      at_diag + at::where(sink.view({1, R}), s.select(2, 0), at::zeros_like(at_diag));  // [h, R]
  // Candidates in descending order, ties by ascending column (a stable sort); the excluded
  // columns (the diagonal, and block 0 when counted) sort last as -inf and are never taken.
  const at::Tensor candidates =
      s.masked_fill(excluded.unsqueeze(0), -std::numeric_limits<double>::infinity());
  auto [values, order] = at::sort(candidates, /*stable=*/true, /*dim=*/2, /*descending=*/true);
  const at::Tensor valid = values.isfinite();
  values = values.masked_fill(valid.logical_not(), 0.0);
  const at::Tensor before = values.cumsum(2) - values;  // mass of the candidates before this one
  // With block 0 counted, candidate i is compared with everything kept so far; otherwise with the
  // mass kept before the previous candidate, and the first candidate is always compared with 0.
  const at::Tensor counted = kept0.unsqueeze(2) + before;
  at::Tensor lagged = at::cat(
      {at::zeros_like(before.narrow(2, 0, 1)), kept0.unsqueeze(2) + before.narrow(2, 0, K - 1)}, 2);
  lagged = at::where(sink.view({1, R, 1}), counted, lagged);
  // Taken while the lagged mass stays below the requirement (a prefix of the order).
  const at::Tensor take =
      lagged.lt(required.unsqueeze(2)).logical_and(valid).to(at::kInt).cumprod(2).to(at::kBool);
  at::Tensor mask = at::zeros({heads, R, K}, at::TensorOptions().dtype(at::kBool).device(device));
  mask.scatter_(2, order, take);
  mask.select(2, 0).fill_(true);
  mask.logical_or_(is_diag.unsqueeze(0));
  mask.logical_and_(col.le(diag.view({R, 1})).unsqueeze(0));  // nothing right of the diagonal
  if (last_query_size > 0 && DenseTailRows(grid, last_query_size) > 0) {
    at::Tensor tail = EmptyMask(1, grid);
    ApplyDenseTail(tail, grid, last_query_size);
    mask.logical_or_(tail.to(device));
  }
  return mask;
}

double MaskDensity(const at::Tensor& mask, const BlockGrid& grid) {
  const int64_t causal = grid.CausalBlocks();
  if (causal == 0 || !mask.defined() || mask.dim() != 3 || mask.size(0) < 1) return 1.0;
  if (!mask.is_cpu()) {
    // Reduced where the mask lives: only the count crosses over.
    const at::Device device = mask.device();
    const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
    // LastCausalBlock per row: row + reach, and row + offset for the last row.
    at::Tensor last = at::arange(grid.q_blocks, longs) + grid.reach;
    last.narrow(0, grid.q_blocks - 1, 1).sub_(grid.reach - grid.offset);
    const at::Tensor causal_mask =
        at::arange(grid.k_blocks, longs).view({1, grid.k_blocks}).le(last.view({grid.q_blocks, 1}));
    const int64_t kept =
        mask.to(at::kBool).logical_and(causal_mask.unsqueeze(0)).sum().item<int64_t>();
    return static_cast<double>(kept) / static_cast<double>(causal * mask.size(0));
  }
  const at::Tensor m = mask.to(at::kBool).contiguous();
  const bool* p = m.data_ptr<bool>();
  int64_t kept = 0;
  for (int64_t h = 0; h < m.size(0); ++h) {
    for (int64_t r = 0; r < grid.q_blocks; ++r) {
      const bool* row = p + (h * grid.q_blocks + r) * grid.k_blocks;
      for (int64_t c = 0; c <= grid.LastCausalBlock(r); ++c) kept += row[c] ? 1 : 0;
    }
  }
  return static_cast<double>(kept) / static_cast<double>(causal * m.size(0));
}

}  // namespace attnkit::sparse
