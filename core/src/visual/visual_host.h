// Visual token selection on the host (VisualBackend::kCpu): CDPruner and DivPrune with the exact
// kernels of core/kernels/cpu (the reference's rounding, or BLAS GEMMs with options.fast_kernel for
// CDPruner), and the random and uniform baselines, which only read the token counts and so serve
// every backend. Problems and text as visual_backend.h's SelectFn: float32, contiguous, on the CPU
// for CDPruner and DivPrune. Internal to core.
#ifndef ATTNKIT_CORE_VISUAL_VISUAL_HOST_H_
#define ATTNKIT_CORE_VISUAL_VISUAL_HOST_H_

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnkit/config.h"
#include "visual/visual_backend.h"

namespace attnkit::visual {

// CDPruner: relevance and theta, the cosine similarity, checks for non-finite values, then the
// greedy MAP (kernels::DppGreedyMap; one problem's steps split over the threads, or one problem
// per thread). Picks in pick order (fewer than k with options.gain_guard).
absl::StatusOr<Picks> SelectCdprunerOnHost(absl::Span<const SelectionProblem> problems,
                                           const at::Tensor& text, const VisualOptions& options);

// DivPrune: the exact similarity, then kernels::MaxMinDiversity. Picks in pick order.
absl::StatusOr<Picks> SelectDivPruneOnHost(absl::Span<const SelectionProblem> problems,
                                           const at::Tensor& text, const VisualOptions& options);

// Random subset: one std::mt19937_64 seeded with options.seed, consumed problem by problem (a
// partial Fisher-Yates shuffle). Any device: only the problems' sizes are read.
absl::StatusOr<Picks> SelectRandomSubset(absl::Span<const SelectionProblem> problems,
                                         const at::Tensor& text, const VisualOptions& options);

// Uniform grid: token floor((i + 1/2) N / k) for i < k. Any device: only the sizes are read.
absl::StatusOr<Picks> SelectUniformGrid(absl::Span<const SelectionProblem> problems,
                                        const at::Tensor& text, const VisualOptions& options);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_VISUAL_HOST_H_
