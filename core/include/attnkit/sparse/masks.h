// Block masks of sparse prefill attention (docs/algorithms.md section 2): dense, A-shape, Tri-shape
// and the XAttention block selection. A mask is a bool tensor [heads or 1, q_blocks, k_blocks] on
// CPU; entry (h, r, c) says whether query block r of head h attends to key block c. Queries are the
// last q_len positions of k_len keys; blocks are counted from query 0 and key 0. The A-/Tri-shape
// and XAttention masks are block-causal as the reference builds them: nothing right of the diagonal
// block r + offset (offset = k_blocks - q_blocks). The dense masks (CausalBlockMask) hold every
// block with a causal (query, key) pair, which is one block further right in all rows but the last
// when 0 < (k_len - q_len) % block <= q_blocks * block - q_len (a "short" offset: the queries of a
// row then reach past its diagonal block; the reference's block masks leave those keys out).
// Thread-safe: these are pure functions.
#ifndef ATTNKIT_SPARSE_MASKS_H_
#define ATTNKIT_SPARSE_MASKS_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace attnkit::sparse {

// The block grid of q_len queries over k_len keys.
struct BlockGrid {
  int64_t q_len = 0;
  int64_t k_len = 0;
  int64_t block = 0;
  int64_t q_blocks = 0;  // ceil(q_len / block)
  int64_t k_blocks = 0;  // ceil(k_len / block)
  int64_t offset = 0;    // k_blocks - q_blocks
  int64_t reach = 0;     // ceil((k_len - q_len) / block): see LastCausalBlock

  // InvalidArgumentError unless block >= 1 and 0 <= q_len <= k_len.
  static absl::StatusOr<BlockGrid> Make(int64_t q_len, int64_t k_len, int64_t block);
  // The diagonal key block of query block `row` (the reference's block-causal limit).
  int64_t Diagonal(int64_t row) const { return row + offset; }
  // The last key block that a query of block `row` may see (token-level causal): the key block of
  // position min((row + 1) * block, q_len) - 1 + k_len - q_len, which is row + reach for every row
  // but the last and row + offset (= k_blocks - 1) for the last. reach is offset or offset + 1.
  int64_t LastCausalBlock(int64_t row) const {
    return row + 1 == q_blocks ? row + offset : row + reach;
  }
  // Number of (row, col) pairs with col <= LastCausalBlock(row): the blocks of a dense mask.
  int64_t CausalBlocks() const;
};

// The dense mask: every block with a causal (query, key) pair, col <= LastCausalBlock(row):
// [1, q_blocks, k_blocks]. Attention restricted to it is dense causal attention.
at::Tensor CausalBlockMask(const BlockGrid& grid);

// The number of last query-block rows made dense by `last_query_size` (the dense tail):
// ceil((min(last_query_size, q_len) + q_blocks * block - q_len) / block), at most q_blocks; 0 when
// last_query_size <= 0 (the reference then adds no tail, not even the padded last block).
int64_t DenseTailRows(const BlockGrid& grid, int64_t last_query_size);

// Sets every block-causal block (col <= Diagonal(row), as the reference's tail) of the dense-tail
// rows of `mask` ([h, q_blocks, k_blocks] bool, compact) to true.
void ApplyDenseTail(at::Tensor& mask, const BlockGrid& grid, int64_t last_query_size);

// A-shape: every row keeps the sink blocks (ceil(sink_size / block), at least one) and the blocks
// c with r + offset - recent_size / block < c <= r + offset. Dense (CausalBlockMask, as the
// reference then runs dense attention) when q_len <= recent_size. [1, q_blocks, k_blocks].
at::Tensor AShapeMask(const BlockGrid& grid, int64_t sink_size, int64_t recent_size);

// Tri-shape: A-shape plus the dense tail of the last `last_query_size` queries (none when
// last_query_size is 0: then it is A-shape).
at::Tensor TriShapeMask(const BlockGrid& grid, int64_t sink_size, int64_t recent_size,
                        int64_t last_query_size);

// XAttention selection from block scores [h, q_blocks, k_blocks] (float32, any h >= 1): per row,
// in float64, keep block 0 and the diagonal block, then the other blocks by descending score (ties:
// lower index first) while the mass already kept (without the candidate) is below
// threshold * row total; then clear everything right of the diagonal and apply the dense tail when
// last_query_size > 0. As in the reference (and its conformance cases), block 0's mass counts as
// kept up front only when the reference's diagonal window of the row's chunk starts right of block
// 0 (offset > 0, or a later chunk of max(2048, next_pow2(k_len)) tokens, at most 2^28 / that);
// otherwise block 0 is a plain candidate (still always kept) and each candidate is compared with
// the mass kept before the previous candidate (the reference's cumulative sum lags by one
// position), so the best other block is always taken. `thresholds` has one entry (all heads) or h
// entries, each in (0, 1]. Returns bool [h, qb, kb] on the scores' device.
absl::StatusOr<at::Tensor> SelectXAttentionBlocks(const at::Tensor& block_scores,
                                                  const BlockGrid& grid,
                                                  const std::vector<double>& thresholds,
                                                  int64_t last_query_size);

// The same selection written as tensor operations (a stable descending sort, a float64 cumulative
// sum and a scatter per row), for scores on any device; the result is on the scores' device.
// SelectXAttentionBlocks uses it for scores that are not on the CPU (the CPU loop stays the
// reference). The sums are accumulated in another order than the loop's, so a candidate whose
// lagged mass equals the required mass to the last bits of a double may be decided differently.
absl::StatusOr<at::Tensor> SelectXAttentionBlocksTensorOps(const at::Tensor& block_scores,
                                                           const BlockGrid& grid,
                                                           const std::vector<double>& thresholds,
                                                           int64_t last_query_size);

// Selected blocks / CausalBlocks(), averaged over the mask's heads (1 for a dense mask; 1 when
// there is no causal block at all). Counts only entries with col <= LastCausalBlock(row) (on any
// device; a device mask is reduced there and only the count comes back).
double MaskDensity(const at::Tensor& mask, const BlockGrid& grid);

}  // namespace attnkit::sparse

#endif  // ATTNKIT_SPARSE_MASKS_H_
