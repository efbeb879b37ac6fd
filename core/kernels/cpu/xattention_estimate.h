// The XAttention block-importance estimate on CPU (docs/algorithms.md section 2, steps 1-4) and its
// plain ATen reference. Internal to core: the public entry is attnkit/sparse/sparse_attention.h.
//
// q [H, Lq, d], k [Hkv, Lk, d] (float32, float16 or bfloat16, any strides; Hkv divides H; Lq <= Lk,
// the queries being the last Lq positions). With stride S and block B (a multiple of S), queries
// and keys are zero-padded to whole blocks and reshaped: q~_i = concat_t q[i*S + S-1-t], k~_j =
// concat_t k[j*S + t]; a_ij = q~_i . k~_j / sqrt(d) / S, masked where j > i + floor((Lk - Lq) / S)
// or where k~_j holds only padding, softmax over j in float32, rows made only of padded queries are
// zero. The result is float32 [H, ceil(Lq/B), ceil(Lk/B)]: the sum of the probabilities over each
// (B/S) x (B/S) cell (per head; a row block sums to at most B/S).
#ifndef ATTNKIT_CORE_KERNELS_CPU_XATTENTION_ESTIMATE_H_
#define ATTNKIT_CORE_KERNELS_CPU_XATTENTION_ESTIMATE_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cpu/block_sparse_attention.h"  // SparseGemm

namespace attnkit::kernels {

// InvalidArgumentError naming the argument when the inputs above do not hold.
absl::Status CheckXAttentionInputs(const at::Tensor& q, const at::Tensor& k, int64_t block_size,
                                   int64_t stride);

// The fused kernel: per (head, group of query blocks) one strip of reshaped scores at a time
// (at most 64 reshaped rows x the causal keys), softmax and block sums in place; the full score
// matrix is never built. Tasks (head, query-block group) costliest first, threaded as described
// for SparseGemm in block_sparse_attention.h.
absl::StatusOr<at::Tensor> XAttentionEstimateCpu(const at::Tensor& q, const at::Tensor& k,
                                                 int64_t block_size, int64_t stride,
                                                 SparseGemm gemm = SparseGemm::kBlas);

// The reference: builds the whole reshaped score matrix per head. For tests.
absl::StatusOr<at::Tensor> XAttentionEstimateReference(const at::Tensor& q, const at::Tensor& k,
                                                       int64_t block_size, int64_t stride);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_XATTENTION_ESTIMATE_H_
