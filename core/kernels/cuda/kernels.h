// attnkit's CUDA kernels behind ATen tensors (C++ API, not ABI-stable): block-sparse causal
// attention over per-(head, query block) lists of key blocks, the fused XAttention block estimate,
// A-shape/Tri-shape block lists built on the device, and fused decode attention over a paged cache
// that accumulates the eviction scores. Every tensor argument must be on one CUDA device; results
// stay there and are computed on the device's current stream. Inputs: bfloat16 or float16, head dim
// 64 or 128, GQA (query head h reads kv head h / (H / Hkv)); accumulation is float32.
//
// Private to core (core/kernels is not installed). A build with CUDA compiles the definitions in
// core/kernels/cuda/; a build without compiles core/kernels/no_cuda/kernels.cc instead, where
// Compiled() and Available() are false and every kernel returns UNIMPLEMENTED. Callers ask
// Available() (or a backend's capability check) at run time; no caller needs an #ifdef.
// Shapes follow attnkit/sparse/sparse_attention.h: per sequence, q [H, Lq, d], k [Hkv, Lk, d],
// v [Hkv, Lk, d], queries are the last Lq of the Lk positions, blocks counted from query 0 and key
// 0. Thread safety: pure functions; concurrent calls are fine (each launches on the current
// stream).
#ifndef ATTNKIT_KERNELS_CUDA_KERNELS_H_
#define ATTNKIT_KERNELS_CUDA_KERNELS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnkit::cuda {

// True when this build has the CUDA kernels (CMake option ATTNKIT_CUDA).
bool Compiled();

// True when the kernels are compiled in and a CUDA device is visible to this process.
bool Available();

// A block mask as lists: indices int32 [mask_heads, q_blocks, max_list] (ascending key blocks,
// entries past counts[h, r] unused), counts int32 [mask_heads, q_blocks]; mask_heads is 1 (shared
// by all heads) or H. On the CUDA device of the attention inputs.
struct BlockLists {
  at::Tensor indices;
  at::Tensor counts;
};

// bool or uint8 mask [mask_heads, q_blocks, k_blocks] (any device) -> lists on `device` (CUDA).
absl::StatusOr<BlockLists> MaskToBlockLists(const at::Tensor& mask, at::Device device);

// A-shape (tri_shape = false) or Tri-shape lists built on `device` from the lengths alone, with the
// rules of attnkit/sparse/masks.h (sink blocks ceil(sink_size / block), at least one; the recent
// window of recent_size / block blocks ending at the diagonal; the dense tail of last_query_size
// queries for Tri-shape; dense when q_len <= recent_size). When `mask` is not null it receives the
// same mask as bool [1, q_blocks, k_blocks] on `device`.
absl::StatusOr<BlockLists> ShapeBlockLists(int64_t q_len, int64_t k_len, int64_t block_size,
                                           int64_t sink_size, int64_t recent_size,
                                           int64_t last_query_size, bool tri_shape,
                                           at::Device device, at::Tensor* mask = nullptr);

// Block-sparse causal attention restricted to `lists` (block_size a multiple of 128; `scale` > 0
// multiplies q.k). Token-level causal inside the selected blocks (bottom-right aligned); a query
// that sees no key gets zeros. Returns [H, Lq, d] in q's dtype. Any strides with a unit inner
// stride are read in place; other layouts are copied first.
absl::StatusOr<at::Tensor> BlockSparseAttention(const at::Tensor& q, const at::Tensor& k,
                                                const at::Tensor& v, const BlockLists& lists,
                                                int64_t block_size, double scale);

// Plain ATen reference of BlockSparseAttention on any device: expands the bool block mask
// [1 or H, q_blocks, k_blocks] to tokens, materializes the scores in float32 and applies softmax.
// Returns float32 [H, Lq, d]. For tests.
absl::StatusOr<at::Tensor> BlockSparseAttentionReference(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask, int64_t block_size,
                                                         double scale);

// The XAttention block estimate (docs/algorithms.md section 2 steps 1-4, per head): float32
// [H, ceil(Lq/B), ceil(Lk/B)] with the semantics of core/kernels/cpu/xattention_estimate.h.
// block_size / stride must be a multiple of 8.
absl::StatusOr<at::Tensor> XAttentionEstimate(const at::Tensor& q, const at::Tensor& k,
                                              int64_t block_size, int64_t stride);

// A paged KV cache on the device, in the session's page layout (core/src/session/page_pool.h):
// page p of kv head g starts at the device address page_ptrs[g, p] and holds page_size key rows,
// then page_size value rows, of head_dim elements each. Instead of addresses the table may hold
// page ids into an arena (ArenaPagePool::Rows()): page_ids[g, p] = i names the rows
// [2 * i * page_size, 2 * (i + 1) * page_size) of `arena`; such a table stays valid when the
// arena moves.
struct PagedCache {
  at::Tensor page_ptrs;    // int64 [Hkv, max_pages] on the CUDA device, or undefined with:
  at::Tensor page_ids;     // int32 [Hkv, max_pages] on the CUDA device, unit inner stride
  at::Tensor arena;        // [pages * 2 * page_size, head_dim] in `dtype`, contiguous
  at::Tensor lengths;      // int32 [Hkv] on the CUDA device: cached tokens per kv head
  int64_t max_length = 0;  // >= every entry of lengths (host-side bound; sizes the launch)
  // 0: the kv rows are one sequence, split by max_length. n > 0: each run of n rows is a sequence
  // (a batched call) whose split size follows its own lengths, so its result is the one a call
  // holding it alone gives (split_tokens 0).
  int64_t rows_per_sequence = 0;
  int64_t page_size = 0;
  int64_t head_dim = 0;
  at::ScalarType dtype = at::kBFloat16;
};

// One decode step: q [H, d] (one token per query head) against the cache. Returns [H, d] in q's
// dtype. When `scores` is not null (float32 [Hkv, >= max_length], CUDA, unit inner stride), adds to
// scores[g, j] the attention probability of token j summed over kv head g's query heads (the
// per-step observation of H2O-style scorers); a `scores` of H rows (H > Hkv) takes each query
// head's own probabilities instead (scores[h, j], what the eviction policy's observation holds). At
// most 8 query heads per kv head. `split_tokens` sets the tokens per split-K work item (a multiple
// of 64, at most 1024); 0 picks it from the device's size (about two waves of work items). When
// `out` is given (float32 or q's dtype, [H, d], contiguous, on q's device) the output is written
// there and `out` is returned.
absl::StatusOr<at::Tensor> PagedDecodeAttention(const at::Tensor& q, const PagedCache& cache,
                                                double scale, at::Tensor* scores = nullptr,
                                                int64_t split_tokens = 0,
                                                const at::Tensor* out = nullptr);

// Appends T tokens to each of R paged caches held as page ids into `arena` (the PagedCache
// layout): row r's tokens k[r / Hkv, r % Hkv], v[...] ([S, Hkv, T, d] with S * Hkv = R, the
// arena's dtype, unit inner stride) go to positions lengths[r] .. lengths[r] + T - 1, in the
// pages page_ids[r, position / page_size], and lengths[r] grows by T; all on the device, with no
// transfer (the session's decode append). page_ids int32 [R, max_pages] must already name every
// page the new positions fall in; lengths int32 [R] contiguous.
absl::Status AppendPagedRows(const at::Tensor& arena, const at::Tensor& page_ids,
                             const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                             const at::Tensor& v);

// Plain ATen reference of one decode step over contiguous k, v [Hkv, L, d]: returns the float32
// output [H, d] and the float32 scores [Hkv, L] (probabilities summed over each group).
absl::StatusOr<std::pair<at::Tensor, at::Tensor>> DenseDecodeReference(const at::Tensor& q,
                                                                       const at::Tensor& k,
                                                                       const at::Tensor& v,
                                                                       double scale);

// H2O/SnapKV scores accumulated where the attention is (the eviction scorers' decode observation
// on a CUDA session, docs/algorithms.md 1.1): for each row r of `scores` (float64 [rows,
// capacity], unit inner stride) and i < fresh[r], scores[r, i] becomes the sum in order over
// j < sources_per_row of double(attention[r * sources_per_row + j, start + i]), plus the old
// scores[r, i] where i < prev[r]. Those are the additions of the host's eviction::AddRowsInto
// followed by `+ previous`, so the bits equal the host's. attention: float32 [rows *
// sources_per_row, K] on the same CUDA device, unit inner stride, K >= start + fresh[r];
// 0 <= prev[r] <= fresh[r] <= capacity.
absl::Status AccumulateScoreRows(const at::Tensor& scores, const at::Tensor& attention,
                                 int64_t sources_per_row, int64_t start,
                                 const std::vector<int64_t>& fresh,
                                 const std::vector<int64_t>& prev);
}  // namespace attnkit::cuda

#endif  // ATTNKIT_KERNELS_CUDA_KERNELS_H_
