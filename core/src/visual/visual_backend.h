// Where a visual selection runs, and which selector runs it: the one place that answers "who
// computes this?" for core/src/visual (the counterpart of core/src/sparse/sparse_backend.h).
// VisualPruner::Select checks the images, picks the method's selector (SelectorFor) and the backend
// (ChooseVisualBackend), converts the inputs for that backend and runs selector.On(backend).
// Internal to core.
//
// The backends:
//  - kCpu: the exact host kernels (core/kernels/cpu/visual_greedy.h, visual_host.h) over float32
//    copies on the CPU, with the reference's rounding: picks equal the reference's bit for bit.
//  - kTensorOps: ATen operations on the device of the first image's features (visual_device.h):
//    the kernel by GEMMs and the greedy loops as k steps of tensor ops, one copy of the picks back.
// The random and uniform baselines read only the token counts and give the same picks on both.
#ifndef ATTNKIT_CORE_VISUAL_VISUAL_BACKEND_H_
#define ATTNKIT_CORE_VISUAL_VISUAL_BACKEND_H_

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnkit/config.h"

namespace attnkit::visual {

// One selection problem: the tokens of one image, or of all images pooled for a global budget.
struct SelectionProblem {
  at::Tensor embeds;    // [N, C] float32 (undefined for methods that do not use it)
  at::Tensor features;  // [N, Dv] float32
  int64_t k = 0;
};

// Per problem, the picked token indices (in pick order for the greedy methods).
using Picks = std::vector<std::vector<int64_t>>;

// The error for a tensor (`what`) with non-finite values, shared by every backend.
absl::Status NonFiniteError(const std::string& what);

enum class VisualBackend { kCpu, kTensorOps };

// "cpu" or "tensor_ops".
const char* VisualBackendName(VisualBackend backend);

// The backend for a selection whose first image's features are on `features_device`: kTensorOps
// (on that device) for CUDA features with options.fast_kernel; kCpu otherwise. The exact mode
// (fast_kernel false) reproduces the reference's rounding only on the host, so it runs there
// whatever the device (inputs elsewhere are copied over).
VisualBackend ChooseVisualBackend(at::Device features_device, const VisualOptions& options);

// A selection over prepared problems (float32, contiguous, all on the backend's device; `text`
// [M, C] likewise, undefined unless the selector needs embeddings).
using SelectFn = absl::StatusOr<Picks> (*)(absl::Span<const SelectionProblem> problems,
                                           const at::Tensor& text, const VisualOptions& options);

// What a method needs and how each backend runs it.
struct VisualSelector {
  VisualMethod method;
  const char* name;     // the proto enum name, e.g. "CDPRUNER"
  bool needs_embeds;    // relevance to the text: every image's embeds and text_embeds required
  SelectFn cpu;         // kCpu
  SelectFn tensor_ops;  // kTensorOps
  SelectFn On(VisualBackend backend) const {
    return backend == VisualBackend::kCpu ? cpu : tensor_ops;
  }
};

// The selector of `method` (every VisualMethod has one).
const VisualSelector& SelectorFor(VisualMethod method);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_VISUAL_BACKEND_H_
