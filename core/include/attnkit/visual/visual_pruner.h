// Visual token pruning: which image tokens of a VLM prompt to keep (CDPruner and baselines).
//
// CDPruner (docs/algorithms.md section 3, the OpenVINO genai_optimizations reference): relevance of
// every image token to the text, a conditional DPP kernel L = diag(r) S diag(r) over the cosine
// similarity S of the image features, and greedy MAP inference. Beyond the reference: several
// images per call (a budget per image or one global budget), an optional gain guard, and the
// DivPrune, random and uniform-grid baselines.
//
// Thread safety: a VisualPruner is immutable after Create(); Select() may be called from several
// threads at once.
#ifndef ATTNKIT_VISUAL_VISUAL_PRUNER_H_
#define ATTNKIT_VISUAL_VISUAL_PRUNER_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnkit/config.h"

namespace attnkit {

// One image of a selection call. Tensors are borrowed for the call; any float dtype (computed in
// float32), CPU or CUDA, any strides. Select() runs where the first image's features are (below).
struct VisualImage {
  // [N, C]: projector output, the relevance side (compared with the text embeddings).
  at::Tensor embeds;
  // [N, Dv]: the similarity side (CDPruner's kernel, DivPrune's distances).
  at::Tensor features;
};

class VisualPruner {
 public:
  // Fails with InvalidArgumentError naming the field when `options` is not usable.
  static absl::StatusOr<std::unique_ptr<VisualPruner>> Create(const VisualOptions& options);

  // Selects the tokens to keep of every image. `text_embeds` [M, C] is shared by all images and
  // only used by CDPruner (M >= 1); the baselines accept an undefined tensor.
  //
  // Returns, per image, the kept token indices (local to that image, ascending). With a per-image
  // budget every image keeps k_i tokens; with a global budget the images are pooled into one
  // selection of K tokens (CDPruner: one kernel over all tokens, relevance min-max over all
  // tokens), and an image may keep none. k_i = num_keep_tokens, or max(1, round_half_even(
  // keep_ratio * N_i)) (N_i: tokens of the image, or of all images for a global budget).
  // num_keep_tokens > N is InvalidArgumentError. With gain_guard, CDPruner stops adding tokens
  // once the largest remaining gain d^2 falls below 1e-10 (after the first token), so fewer than k
  // may be returned.
  //
  // Zero-norm rows (embeddings, features or text) are handled as vectors orthogonal to everything
  // (cosine 0) instead of the reference's 0/0; non-finite inputs, or a kernel that overflows
  // float32 (theta close to 1), are InvalidArgumentError. Returned indices are never NaN-derived.
  //
  // Where it runs: without fast_kernel, on the CPU with the reference's rounding (inputs elsewhere
  // are copied over), so the picks equal the reference's bit for bit. With fast_kernel and the
  // first image's features on a CUDA device, on that device (the other inputs are moved there):
  // the kernel by GEMMs and the greedy loops as k steps of tensor ops, with one copy of the picks
  // back to the host and no synchronization per step; as with fast_kernel on the CPU, the picks
  // can differ from the reference's where the DPP gains are near-ties (e.g. k beyond the feature
  // rank). The random and uniform baselines give the same picks everywhere.
  absl::StatusOr<std::vector<std::vector<int64_t>>> Select(absl::Span<const VisualImage> images,
                                                           const at::Tensor& text_embeds) const;

  // The number of tokens kept out of `num_tokens` under this pruner's budget (num_keep_tokens or
  // keep_ratio), or InvalidArgumentError when num_keep_tokens > num_tokens.
  absl::StatusOr<int64_t> Budget(int64_t num_tokens) const;

  const VisualOptions& options() const { return options_; }

 private:
  explicit VisualPruner(const VisualOptions& options) : options_(options) {}
  VisualOptions options_;
};

// The positions to keep in a full prompt of `image_token_mask.size()` tokens, as the reference's
// get_cdpruner_mask: every non-image position, plus the image positions whose image-token ordinal
// (images in order, tokens in order) was kept by `kept` (per image, local indices as Select
// returns; the images' sizes are `image_sizes`). The mask must hold exactly sum(image_sizes) image
// tokens. Returns the kept positions ascending.
absl::StatusOr<std::vector<int64_t>> KeptPromptPositions(
    absl::Span<const uint8_t> image_token_mask, absl::Span<const int64_t> image_sizes,
    const std::vector<std::vector<int64_t>>& kept);

}  // namespace attnkit

#endif  // ATTNKIT_VISUAL_VISUAL_PRUNER_H_
