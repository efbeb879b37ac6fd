// FlexPrefill's block selection (Lai et al., ICLR 2025), with the semantics of the authors'
// get_active_blocks (bytedance/FlexPrefill, flex_prefill/ops/flex_prefill_attention.py; the
// quirks kept are listed in docs/algorithms.md section 2.3). Plain ATen operations on q's device:
// the same code builds the mask on the CPU and on a CUDA device.
#ifndef ATTNKIT_CORE_SPARSE_FLEXPREFILL_H_
#define ATTNKIT_CORE_SPARSE_FLEXPREFILL_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "attnkit/config.h"

namespace attnkit::sparse {

// Whether a prompt of q_len queries over k_len keys attends densely under FLEXPREFILL: queries
// shorter than the keys (the reference takes q_len == k_len only), or q_len <= max(2 * block_size,
// ceil(min_budget / block_size) * block_size) as flex_prefill_attention decides.
bool FlexPrefillDense(int64_t q_len, int64_t k_len, const SparseOptions& options);

// The active blocks of every query head: bool [H, nb, nb], nb = ceil(L / block_size), for q
// [H, L, d] and k [Hkv, L, d] (query head h reads kv head h / (H / Hkv)), on q's device. Computed
// in float32 whatever the input dtype. Not for prompts FlexPrefillDense() sends to dense attention.
at::Tensor FlexPrefillBlocks(const at::Tensor& q, const at::Tensor& k,
                             const SparseOptions& options);

}  // namespace attnkit::sparse

#endif  // ATTNKIT_CORE_SPARSE_FLEXPREFILL_H_
