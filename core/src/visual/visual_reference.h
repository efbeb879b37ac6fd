// Plain ATen reference implementations of visual token selection, written op for op after the
// reference Python (genai_optimizations visual_token_pruning.py, DivPrune's divprune()). Slow and
// simple on purpose: tests compare the fast paths (core/kernels/cpu/visual_greedy.h,
// VisualPruner) against them. Internal to core.
#ifndef ATTNKIT_CORE_VISUAL_VISUAL_REFERENCE_H_
#define ATTNKIT_CORE_VISUAL_VISUAL_REFERENCE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace attnkit::visual {

// The conditional kernel [N, N]: relevance, theta, cosine similarity, and the broadcast products
// relevance.unsqueeze(1) * similarity * relevance.unsqueeze(0), as the reference.
at::Tensor ReferenceKernel(const at::Tensor& embeds, const at::Tensor& features,
                           const at::Tensor& text, double theta, bool positive);

// Greedy MAP over `kernel` [N, N] (the reference's conditional_dpp_map loop with einsum), in pick
// order; with `guard`, stops before step i >= 1 when the best d2 < 1e-10.
std::vector<int64_t> ReferenceGreedyMap(const at::Tensor& kernel, int64_t k, bool guard);

// DivPrune (the original's loop over 1 - cosine similarity, picked items masked), in pick order.
std::vector<int64_t> ReferenceDivPrune(const at::Tensor& features, int64_t k);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_VISUAL_REFERENCE_H_
