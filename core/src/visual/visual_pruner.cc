#include "attnkit/visual/visual_pruner.h"

#include <ATen/Functions.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/config_parser.h"
#include "util/status_macros.h"
#include "visual/visual_backend.h"
#include "visual/visual_device.h"

namespace attnkit {
namespace {

std::string Shape(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

// Sorted indices of `order`'s first `count` entries; an error when an index repeats (a numerical
// breakdown of the greedy, e.g. a gain that overflowed).
absl::StatusOr<std::vector<int64_t>> Sorted(const int64_t* order, int64_t count, int64_t n) {
  std::vector<int64_t> out(order, order + count);
  std::sort(out.begin(), out.end());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] < 0 || out[i] >= n || (i > 0 && out[i] == out[i - 1])) {
      return absl::InvalidArgumentError(
          "visual selection broke down numerically (repeated pick): the kernel is degenerate");
    }
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VisualPruner>> VisualPruner::Create(const VisualOptions& options) {
  if (absl::Status s = ValidateVisualOptions(options); !s.ok()) return s;
  return std::unique_ptr<VisualPruner>(new VisualPruner(options));
}

absl::StatusOr<int64_t> VisualPruner::Budget(int64_t num_tokens) const {
  if (options_.num_keep_tokens > 0) {
    if (options_.num_keep_tokens > num_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("num_keep_tokens: ", options_.num_keep_tokens,
                                                     " exceeds the ", num_tokens,
                                                     " tokens to select from"));
    }
    return options_.num_keep_tokens;
  }
  const double k = std::nearbyint(options_.keep_ratio * static_cast<double>(num_tokens));
  return std::clamp<int64_t>(static_cast<int64_t>(k), 1, num_tokens);
}

namespace {

using visual::SelectionProblem;
using visual::VisualBackend;
using visual::VisualSelector;

std::string ShapeOrUndefined(const at::Tensor& t) {
  return t.defined() ? Shape(t) : std::string("an undefined tensor");
}

// The shape rules of Select(): returns the images' token counts. Every image's embeds (and the
// text) are required when the selector needs them, and checked wherever they are given.
absl::StatusOr<std::vector<int64_t>> CheckImages(absl::Span<const VisualImage> images,
                                                 const at::Tensor& text_embeds,
                                                 const VisualSelector& selector,
                                                 bool global_budget) {
  if (images.empty()) return absl::InvalidArgumentError("images: at least one image is required");
  std::vector<int64_t> sizes;
  int64_t c = -1, dv = -1;
  for (size_t i = 0; i < images.size(); ++i) {
    const VisualImage& im = images[i];
    const std::string name = absl::StrCat("images[", i, "]");
    if (!im.features.defined() || im.features.dim() != 2 || im.features.size(0) < 1 ||
        im.features.size(1) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ".features: expected shape [N, Dv] with N, Dv >= 1, got ",
                       ShapeOrUndefined(im.features)));
    }
    if (!c10::isFloatingType(im.features.scalar_type())) {
      return absl::InvalidArgumentError(name + ".features: expected a floating-point tensor");
    }
    const int64_t n = im.features.size(0);
    if (dv >= 0 && im.features.size(1) != dv && global_budget) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".features: expected shape [", n, ", ", dv,
          "] (Dv shared by all images for a global budget), got ", Shape(im.features)));
    }
    dv = im.features.size(1);
    if (selector.needs_embeds && !im.embeds.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".embeds: ", selector.name, " needs the image embeddings (expected shape [", n,
          ", C]), got an undefined tensor"));
    }
    if (im.embeds.defined()) {
      if (im.embeds.dim() != 2 || im.embeds.size(0) != n || im.embeds.size(1) < 1 ||
          (c >= 0 && im.embeds.size(1) != c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ".embeds: expected shape [", n, ", ", c >= 0 ? absl::StrCat(c) : "C",
            "] (N of its features, C shared by all images and the text), got ", Shape(im.embeds)));
      }
      if (!c10::isFloatingType(im.embeds.scalar_type())) {
        return absl::InvalidArgumentError(name + ".embeds: expected a floating-point tensor");
      }
      c = im.embeds.size(1);
    }
    sizes.push_back(n);
  }
  if (selector.needs_embeds && !text_embeds.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text_embeds: ", selector.name, " needs the text embeddings (expected shape [M, ", c,
        "]), got an undefined tensor"));
  }
  if (text_embeds.defined()) {
    const std::string cs = c >= 0 ? absl::StrCat(c) : std::string("C");
    if (text_embeds.dim() != 2 || text_embeds.size(0) < 1 || (c >= 0 && text_embeds.size(1) != c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("text_embeds: expected shape [M, ", cs, "] with M >= 1",
                       c >= 0 ? " (C of the image embeddings, image_embeds)" : "", ", got ",
                       Shape(text_embeds)));
    }
    if (!c10::isFloatingType(text_embeds.scalar_type())) {
      return absl::InvalidArgumentError("text_embeds: expected a floating-point tensor");
    }
  }
  return sizes;
}

// The inputs as float32 contiguous tensors on `device`.
at::Tensor Prepare(const at::Tensor& t, at::Device device) {
  return t.to(at::TensorOptions().device(device).dtype(at::kFloat)).contiguous();
}

// The selection problems: one per image, or one over all images for a global budget.
absl::StatusOr<std::vector<SelectionProblem>> MakeProblems(const VisualPruner& pruner,
                                                           absl::Span<const VisualImage> images,
                                                           const std::vector<int64_t>& sizes,
                                                           bool with_embeds, at::Device device) {
  std::vector<SelectionProblem> problems;
  if (pruner.options().global_budget) {
    SelectionProblem p;
    ATTNKIT_ASSIGN_OR_RETURN(
        p.k, pruner.Budget(std::accumulate(sizes.begin(), sizes.end(), int64_t{0})));
    // Each image is converted before the concatenation, so the images may differ in device and
    // dtype (the values are the same as converting the concatenation).
    std::vector<at::Tensor> feats, embs;
    for (const VisualImage& im : images) {
      feats.push_back(Prepare(im.features, device));
      if (with_embeds) embs.push_back(Prepare(im.embeds, device));
    }
    p.features = images.size() == 1 ? feats[0] : at::cat(feats, 0);
    if (with_embeds) p.embeds = images.size() == 1 ? embs[0] : at::cat(embs, 0);
    problems.push_back(std::move(p));
    return problems;
  }
  for (size_t i = 0; i < images.size(); ++i) {
    SelectionProblem p;
    auto k = pruner.Budget(sizes[i]);
    if (!k.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(k.status().message(), " (image ", i, ")"));
    }
    p.k = *k;
    p.features = Prepare(images[i].features, device);
    if (with_embeds) p.embeds = Prepare(images[i].embeds, device);
    problems.push_back(std::move(p));
  }
  return problems;
}

// VisualPruner::Select: check the images, pick the method's selector and the backend
// (visual_backend.h; `force_tensor_ops` forces kTensorOps whatever the device, for tests), move
// the inputs where that backend computes, select, and map the picks back to per-image indices.
absl::StatusOr<std::vector<std::vector<int64_t>>> SelectImpl(const VisualPruner& pruner,
                                                             absl::Span<const VisualImage> images,
                                                             const at::Tensor& text_embeds,
                                                             bool force_tensor_ops) {
  const VisualOptions& options = pruner.options();
  const VisualSelector& selector = visual::SelectorFor(options.method);
  ATTNKIT_ASSIGN_OR_RETURN(std::vector<int64_t> sizes,
                           CheckImages(images, text_embeds, selector, options.global_budget));
  const at::Device features_device = images[0].features.device();
  const VisualBackend backend = force_tensor_ops
                                    ? VisualBackend::kTensorOps
                                    : visual::ChooseVisualBackend(features_device, options);
  const at::Device device =
      backend == VisualBackend::kTensorOps ? features_device : at::Device(at::kCPU);
  ATTNKIT_ASSIGN_OR_RETURN(std::vector<SelectionProblem> problems,
                           MakeProblems(pruner, images, sizes, selector.needs_embeds, device));
  const at::Tensor text = selector.needs_embeds ? Prepare(text_embeds, device) : at::Tensor();
  ATTNKIT_ASSIGN_OR_RETURN(visual::Picks picks, selector.On(backend)(problems, text, options));

  // Back to per-image local indices.
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::vector<std::vector<int64_t>> result(images.size());
  if (options.global_budget) {
    ATTNKIT_ASSIGN_OR_RETURN(std::vector<int64_t> all,
                             Sorted(picks[0].data(), static_cast<int64_t>(picks[0].size()), total));
    size_t image = 0;
    int64_t offset = 0;
    for (int64_t idx : all) {
      while (idx >= offset + sizes[image]) offset += sizes[image++];
      result[image].push_back(idx - offset);
    }
  } else {
    for (size_t i = 0; i < images.size(); ++i) {
      ATTNKIT_ASSIGN_OR_RETURN(
          result[i], Sorted(picks[i].data(), static_cast<int64_t>(picks[i].size()), sizes[i]));
    }
  }
  return result;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<int64_t>>> VisualPruner::Select(
    absl::Span<const VisualImage> images, const at::Tensor& text_embeds) const {
  return SelectImpl(*this, images, text_embeds, /*force_tensor_ops=*/false);
}

absl::StatusOr<std::vector<std::vector<int64_t>>> visual::SelectOnDeviceForTesting(
    const VisualPruner& pruner, absl::Span<const VisualImage> images,
    const at::Tensor& text_embeds) {
  return SelectImpl(pruner, images, text_embeds, /*force_tensor_ops=*/true);
}

absl::StatusOr<std::vector<int64_t>> KeptPromptPositions(
    absl::Span<const uint8_t> image_token_mask, absl::Span<const int64_t> image_sizes,
    const std::vector<std::vector<int64_t>>& kept) {
  if (kept.size() != image_sizes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept: ", kept.size(), " images, but image_sizes has ", image_sizes.size()));
  }
  int64_t total = 0;
  for (size_t i = 0; i < image_sizes.size(); ++i) {
    if (image_sizes[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("image_sizes[", i, "]: must not be negative, got ", image_sizes[i]));
    }
    total += image_sizes[i];
  }
  std::vector<int64_t> image_positions;
  for (size_t p = 0; p < image_token_mask.size(); ++p) {
    if (image_token_mask[p] != 0) image_positions.push_back(static_cast<int64_t>(p));
  }
  if (static_cast<int64_t>(image_positions.size()) != total) {
    return absl::InvalidArgumentError(absl::StrCat("image_token_mask: marks ",
                                                   image_positions.size(),
                                                   " image tokens, but the images hold ", total));
  }
  std::vector<uint8_t> keep(image_token_mask.size());
  for (size_t p = 0; p < keep.size(); ++p) keep[p] = image_token_mask[p] == 0;
  int64_t offset = 0;
  for (size_t i = 0; i < kept.size(); ++i) {
    for (int64_t idx : kept[i]) {
      if (idx < 0 || idx >= image_sizes[i]) {
        return absl::InvalidArgumentError(
            absl::StrCat("kept[", i, "]: index ", idx, " is outside [0, ", image_sizes[i], ")"));
      }
      keep[image_positions[offset + idx]] = 1;
    }
    offset += image_sizes[i];
  }
  std::vector<int64_t> out;
  for (size_t p = 0; p < keep.size(); ++p) {
    if (keep[p]) out.push_back(static_cast<int64_t>(p));
  }
  return out;
}

}  // namespace attnkit
