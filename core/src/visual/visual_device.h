// Visual token selection with ATen ops on the device that holds the tensors (VisualBackend::
// kTensorOps of visual_backend.h, the backend VisualPruner picks for fast_kernel inputs on a CUDA
// device): CDPruner's kernel by GEMMs and its greedy MAP, and DivPrune's
// max-min diversity, each a loop of k steps of tensor ops, so that nothing but the picks comes back
// to the host (one copy at the end, no synchronization per step). Device-generic: the tests run it
// on CPU tensors against the exact host path (core/kernels/cpu/visual_greedy.h), whose picks it
// equals wherever the gains are not near-tied (its GEMMs round differently). The float32 GEMMs
// follow ATen's settings: a process that allows TF32 matmuls on CUDA gets TF32 similarities, and
// picks that differ far more often. Each greedy step is about ten small ops (on CUDA, kernel
// launches), so the loop's cost is k times that. Internal to core.
#ifndef ATTNKIT_CORE_VISUAL_VISUAL_DEVICE_H_
#define ATTNKIT_CORE_VISUAL_VISUAL_DEVICE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnkit/config.h"
#include "attnkit/visual/visual_pruner.h"
#include "visual/visual_backend.h"

namespace attnkit::visual {

// The greedy MAP of the DPP with kernel `kernel` [N, N] (float32, any device), k steps of
// kernels::DppGreedyMap's algorithm without the guard: d2 = diag(L); per step j = argmax d2 (first
// on ties), c_i = (L[j] - sum_t c_t[j] c_t) / sqrt(d2[j] + 1e-5) (the sum as one matrix-vector
// product), d2 -= c_i * c_i, d2[j] = -inf. On the kernel's device:
struct GreedyTrace {
  at::Tensor order;  // [k] int64: the picks in pick order
  at::Tensor gains;  // [k] float32: gains[i] = d2[order[i]] when step i picked it
};
GreedyTrace DppGreedyMapSteps(const at::Tensor& kernel, int64_t k);

// How many of the steps of `gains` (GreedyTrace::gains) the gain guard keeps: kernels::DppGreedyMap
// stops before step i >= 1 when !(d2[j] >= 1e-10), so the count of leading steps that pass. 0-dim
// int64 on the gains' device.
at::Tensor GuardedCount(const at::Tensor& gains);

// DivPrune over the cosine similarity `similarity` [N, N] (float32, any device), as
// kernels::MaxMinDiversity: the first pick maximizes the second-smallest distance 1 - S of its
// column, every later one the min distance to the picks so far. [k] int64 picks in pick order.
at::Tensor MaxMinDiversitySteps(const at::Tensor& similarity, int64_t k);

// CDPruner over `problems` (float32 tensors, all on one device, with `text` [M, C]) on that device:
// relevance (options.fast_kernel: RelevanceFast, else Relevance) and theta; the similarity S by one
// GEMM, its upper triangle mirrored (symmetric as the host's); the conditional kernel
// L = (r_a * S_ab) * r_b in place; DppGreedyMapSteps, truncated by GuardedCount with
// options.gain_guard. Returns the picks of every problem in pick order, or the same
// InvalidArgumentError as the host path for non-finite text, relevance, similarity or kernel. The
// problems run one after another without synchronizing; their picks and checks come back to the
// host in one copy at the end.
absl::StatusOr<std::vector<std::vector<int64_t>>> SelectCdprunerOnDevice(
    absl::Span<const SelectionProblem> problems, const at::Tensor& text,
    const VisualOptions& options);

// DivPrune over `problems` (features only) on their device: the symmetric similarity as above,
// MaxMinDiversitySteps; one copy to the host at the end.
absl::StatusOr<std::vector<std::vector<int64_t>>> SelectDivPruneOnDevice(
    absl::Span<const SelectionProblem> problems);

// For tests: pruner.Select(images, text_embeds) with the device path forced whatever the device of
// the tensors (e.g. on CPU tensors). Defined in visual_pruner.cc beside Select.
absl::StatusOr<std::vector<std::vector<int64_t>>> SelectOnDeviceForTesting(
    const VisualPruner& pruner, absl::Span<const VisualImage> images,
    const at::Tensor& text_embeds);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_VISUAL_DEVICE_H_
