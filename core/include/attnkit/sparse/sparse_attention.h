// Sparse prefill attention (C++ API, not ABI-stable): block masks (dense, A-shape, Tri-shape,
// XAttention, FlexPrefill) and the block-sparse attention kernel, configured by SparseOptions
// (config.h, parsed from attnkit.v1.SparseAttentionConfig). The C ABI over it is
// attnkit/attnkit_sparse.h.
//
// Tensors are per sequence (no batch dimension): q [H, Lq, d], k [Hkv, Lk, d], v [Hkv, Lk, dv],
// float32, float16 or bfloat16 with any strides, Hkv dividing H (GQA), Lq <= Lk: the queries are
// the last Lq positions of the Lk keys (a prefill chunk over a cache that already holds Lk - Lq
// tokens). Masks are bool [1 or H, ceil(Lq / B), ceil(Lk / B)] with B = block_size (masks.h).
//
// Devices: CPU tensors run the CPU kernels. CUDA tensors (in a build with ATTNKIT_CUDA) stay on
// their device: bfloat16/float16 inputs with head dim 64 or 128 and block_size a multiple of 128
// run attnkit's CUDA kernels (masks, A-/Tri-shape block lists and the XAttention estimate built on
// the device, the block-sparse kernel reading the lists); other CUDA inputs (float32, other head
// dims or blocks) run the same semantics as ATen operations on the device
// (BlockSparseAttentionTensorOps, the estimate's ATen reference, SelectXAttentionBlocksTensorOps).
// Masks and results are returned on the inputs' device. Which of these takes a call is decided in
// one place, core/src/sparse/sparse_backend.h.
//
// Thread safety: a SparseAttention is immutable after Create(); its const methods may be called
// from several threads at once (each call parallelizes internally with at::parallel_for).
#ifndef ATTNKIT_SPARSE_SPARSE_ATTENTION_H_
#define ATTNKIT_SPARSE_SPARSE_ATTENTION_H_

#include <memory>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnkit/config.h"
#include "attnkit/sparse/masks.h"

namespace attnkit::sparse {

class SparseAttention {
 public:
  // Checks `options` (block_size >= 1, stride dividing block_size for XAttention, thresholds in
  // (0, 1], non-negative sizes; recent_size a multiple of block_size for A-/Tri-shape).
  static absl::StatusOr<std::unique_ptr<SparseAttention>> Create(const SparseOptions& options);

  const SparseOptions& options() const { return options_; }

  // The number of mask heads BuildMask returns for `num_heads` query heads: num_heads for
  // FlexPrefill and for XAttention with PER_HEAD aggregation, 1 otherwise.
  int64_t MaskHeads(int64_t num_heads) const;

  // The block mask for q [H, Lq, d] and k [Hkv, Lk, d]: bool [MaskHeads(H), ceil(Lq/B), ceil(Lk/B)]
  // on q's device. Dense (every block-causal block) when Lq < min_sparse_length or mode is DENSE;
  // Tri-shape and A-shape only read the lengths; XAttention estimates block scores from q and k;
  // FlexPrefill chooses per head from q and k (dense when Lq < Lk, or Lq is within the reference's
  // dense range: sparse/flexprefill.h).
  absl::StatusOr<at::Tensor> BuildMask(const at::Tensor& q, const at::Tensor& k) const;

  // The block mask from lengths only (DENSE, A_SHAPE, TRI_SHAPE; FailedPrecondition for XATTENTION,
  // which needs q and k). [1, ceil(q_len/B), ceil(k_len/B)].
  absl::StatusOr<at::Tensor> BuildStaticMask(int64_t q_len, int64_t k_len) const;

  // Block-sparse causal attention of q, k, v restricted to `mask` (bool or uint8, shape
  // [1 or H, ceil(Lq/B), ceil(Lk/B)]); `scale` multiplies q.k (pass 1/sqrt(d) for the usual
  // scaling; must be finite). Returns float32 [H, Lq, dv].
  absl::StatusOr<at::Tensor> Attention(const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const at::Tensor& mask,
                                       double scale) const;

  // BuildMask + Attention. When `density` is not null it receives MaskDensity of the mask used
  // (1.0 when attention stayed dense).
  absl::StatusOr<at::Tensor> Prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     double scale, double* density = nullptr) const;

 private:
  explicit SparseAttention(const SparseOptions& options) : options_(options) {}
  absl::StatusOr<at::Tensor> XAttentionMask(const at::Tensor& q, const at::Tensor& k,
                                            const BlockGrid& grid) const;
  absl::StatusOr<at::Tensor> FlexPrefillMask(const at::Tensor& q, const at::Tensor& k) const;

  SparseOptions options_;
};

// Block-sparse causal attention as plain ATen operations on q's device (chunks of query blocks,
// scores materialized per chunk, at most about 256 MiB at a time): the semantics of Attention()
// for inputs no kernel takes. Returns float32 [H, Lq, dv]. Also the reference tests use.
absl::StatusOr<at::Tensor> BlockSparseAttentionTensorOps(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask, int64_t block_size,
                                                         double scale);

}  // namespace attnkit::sparse

#endif  // ATTNKIT_SPARSE_SPARSE_ATTENTION_H_
