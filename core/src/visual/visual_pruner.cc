#include "attnkit/visual/visual_pruner.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <c10/core/ScalarType.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/config_parser.h"
#include "cpu/visual_greedy.h"
#include "cpu/visual_linalg.h"
#include "util/status_macros.h"
#include "visual/cdpruner_kernel.h"
#include "visual/visual_device.h"
#include "visual/visual_math.h"

namespace attnkit {
namespace {

std::string Shape(const at::Tensor& t) {
  return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]");
}

absl::Status CheckFinite(const at::Tensor& t, const std::string& what) {
  if (!at::isfinite(t).all().item<bool>()) return visual::NonFiniteError(what);
  return absl::OkStatus();
}

using Problem = visual::SelectionProblem;

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

// Unbiased integer in [0, bound) from a 64-bit engine (std::uniform_int_distribution is
// implementation-defined; this is the same on every platform).
uint64_t Bounded(std::mt19937_64& gen, uint64_t bound) {
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
  uint64_t x;
  do {
    x = gen();
  } while (x >= limit);
  return x % bound;
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

// VisualPruner::Select. CPU inputs are selected on the host (the exact kernels over float32
// copies); inputs on a CUDA device, or any device with `force_device`, with ATen ops on the device
// of the first image's features (visual_device.h).
absl::StatusOr<std::vector<std::vector<int64_t>>> SelectImpl(const VisualPruner& pruner,
                                                             absl::Span<const VisualImage> images,
                                                             const at::Tensor& text_embeds,
                                                             bool force_device) {
  const VisualOptions& options = pruner.options();
  const bool cdpruner = options.method == VisualMethod::kCDPruner;
  if (images.empty()) return absl::InvalidArgumentError("images: at least one image is required");
  // Shapes.
  std::vector<int64_t> sizes;
  int64_t c = -1, dv = -1;
  for (size_t i = 0; i < images.size(); ++i) {
    const VisualImage& im = images[i];
    const std::string name = absl::StrCat("images[", i, "]");
    if (!im.features.defined() || im.features.dim() != 2 || im.features.size(0) < 1 ||
        im.features.size(1) < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".features: expected shape [N, Dv] with N, Dv >= 1, got ",
          im.features.defined() ? Shape(im.features) : std::string("an undefined tensor")));
    }
    if (!c10::isFloatingType(im.features.scalar_type())) {
      return absl::InvalidArgumentError(name + ".features: expected a floating-point tensor");
    }
    const int64_t n = im.features.size(0);
    if (dv >= 0 && im.features.size(1) != dv && options.global_budget) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ".features: expected shape [", n, ", ", dv,
          "] (Dv shared by all images for a global budget), got ", Shape(im.features)));
    }
    dv = im.features.size(1);
    if (cdpruner || im.embeds.defined()) {
      if (!im.embeds.defined() || im.embeds.dim() != 2 || im.embeds.size(0) != n ||
          im.embeds.size(1) < 1 || (c >= 0 && im.embeds.size(1) != c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            name, ".embeds: expected shape [", n, ", ", c >= 0 ? absl::StrCat(c) : "C",
            "] (N of its features, C shared by all images and the text), got ",
            im.embeds.defined() ? Shape(im.embeds) : std::string("an undefined tensor")));
      }
      if (!c10::isFloatingType(im.embeds.scalar_type())) {
        return absl::InvalidArgumentError(name + ".embeds: expected a floating-point tensor");
      }
      c = im.embeds.size(1);
    }
    sizes.push_back(n);
  }
  if (cdpruner) {
    if (!text_embeds.defined() || text_embeds.dim() != 2 || text_embeds.size(0) < 1 ||
        text_embeds.size(1) != c) {
      return absl::InvalidArgumentError(absl::StrCat(
          "text_embeds: expected shape [M, ", c, "] with M >= 1, got ",
          text_embeds.defined() ? Shape(text_embeds) : std::string("an undefined tensor")));
    }
    if (!c10::isFloatingType(text_embeds.scalar_type())) {
      return absl::InvalidArgumentError("text_embeds: expected a floating-point tensor");
    }
  }
  // Problems: one per image, or one over all images.
  const int64_t total = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  std::vector<Problem> problems;
  // Selection runs in float32: on the host when the first image's features are on the CPU (the
  // exact kernels; inputs on other devices are copied over), else on their CUDA device (the other
  // inputs are moved there, and only the picks come back).
  // The exact mode (fast_kernel false) reproduces the reference's rounding only on the host, so it
  // runs there whatever the device; fast_kernel on CUDA inputs selects on their device.
  const bool on_device = force_device || (images[0].features.is_cuda() && options.fast_kernel);
  const at::Device device = on_device ? images[0].features.device() : at::Device(at::kCPU);
  auto prepare = [&](const at::Tensor& t) {
    return t.to(at::TensorOptions().device(device).dtype(at::kFloat)).contiguous();
  };
  const int threads = kernels::VisualThreads();
  if (options.global_budget) {
    Problem p;
    ATTNKIT_ASSIGN_OR_RETURN(p.k, pruner.Budget(total));
    // Each image is converted before the concatenation, so the images may differ in device and
    // dtype (the values are the same as converting the concatenation).
    std::vector<at::Tensor> feats, embs;
    for (const VisualImage& im : images) {
      feats.push_back(prepare(im.features));
      if (cdpruner) embs.push_back(prepare(im.embeds));
    }
    p.features = images.size() == 1 ? feats[0] : at::cat(feats, 0);
    if (cdpruner) p.embeds = images.size() == 1 ? embs[0] : at::cat(embs, 0);
    problems.push_back(std::move(p));
  } else {
    for (size_t i = 0; i < images.size(); ++i) {
      Problem p;
      auto k = pruner.Budget(sizes[i]);
      if (!k.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(k.status().message(), " (image ", i, ")"));
      }
      p.k = *k;
      p.features = prepare(images[i].features);
      if (cdpruner) p.embeds = prepare(images[i].embeds);
      problems.push_back(std::move(p));
    }
  }

  // Selection per problem; the picks of problem p land in picks[p].
  std::vector<std::vector<int64_t>> picks(problems.size());
  switch (options.method) {
    case VisualMethod::kCDPruner: {
      at::Tensor text = prepare(text_embeds);
      if (on_device) {
        ATTNKIT_ASSIGN_OR_RETURN(picks, visual::SelectCdprunerOnDevice(problems, text, options));
        break;
      }
      ATTNKIT_RETURN_IF_ERROR(CheckFinite(text, "text_embeds"));
      // Kernels (GEMMs, multithreaded inside) one problem at a time; greedy loops in parallel.
      std::vector<at::Tensor> sims(problems.size()), rels(problems.size());
      for (size_t p = 0; p < problems.size(); ++p) {
        at::Tensor rel = options.fast_kernel
                             ? visual::ApplyTheta(visual::RelevanceFast(problems[p].embeds, text,
                                                                        options.positive_relevance),
                                                  options.theta)
                             : visual::ExactApplyTheta(
                                   visual::ExactRelevance(problems[p].embeds, text,
                                                          options.positive_relevance, threads),
                                   options.theta);
        ATTNKIT_RETURN_IF_ERROR(CheckFinite(rel, "relevance (image_embeds)"));
        at::Tensor sim = options.fast_kernel
                             ? visual::CosineSimilarity(problems[p].features).contiguous()
                             : visual::ExactSimilarity(problems[p].features, threads);
        ATTNKIT_RETURN_IF_ERROR(CheckFinite(at::diagonal(sim), "similarity (image_features)"));
        // L's diagonal overflows iff some (r_a * S_aa) * r_a does.
        ATTNKIT_RETURN_IF_ERROR(CheckFinite(rel * at::diagonal(sim) * rel, "kernel"));
        sims[p] = sim;
        rels[p] = rel.contiguous();
      }
      std::vector<int64_t> counts(problems.size());
      auto greedy = [&](int64_t p, int threads) {
        const int64_t n = sims[p].size(0), k = problems[p].k;
        std::vector<float> work(kernels::DppGreedyMapWorkSize(n, k));
        picks[p].resize(k);
        counts[p] =
            kernels::DppGreedyMap(sims[p].data_ptr<float>(), rels[p].data_ptr<float>(), n, n, k,
                                  options.gain_guard, work.data(), picks[p].data(), threads);
      };
      if (problems.size() == 1) {
        // One selection: its steps are split over the threads (for large N).
        greedy(0, threads);
      } else {
        // Several images: one greedy loop per thread.
        const int64_t count = static_cast<int64_t>(problems.size());
        const int team = static_cast<int>(std::min<int64_t>(threads, count));
        kernels::RunOnThreads(team, [&](int t) {
          for (int64_t p = t; p < count; p += team) greedy(p, 1);
        });
      }
      for (size_t p = 0; p < problems.size(); ++p) picks[p].resize(counts[p]);
      break;
    }
    case VisualMethod::kDivPrune: {
      if (on_device) {
        ATTNKIT_ASSIGN_OR_RETURN(picks, visual::SelectDivPruneOnDevice(problems));
        break;
      }
      for (size_t p = 0; p < problems.size(); ++p) {
        at::Tensor sim = visual::ExactSimilarity(problems[p].features, threads);
        ATTNKIT_RETURN_IF_ERROR(CheckFinite(at::diagonal(sim), "similarity (image_features)"));
        const int64_t n = sim.size(0), k = problems[p].k;
        std::vector<float> work(2 * n);
        picks[p].resize(k);
        kernels::MaxMinDiversity(sim.data_ptr<float>(), n, n, k, work.data(), picks[p].data());
      }
      break;
    }
    case VisualMethod::kRandom: {
      // One generator, consumed problem by problem: a partial Fisher-Yates shuffle. A host RNG:
      // the same picks whatever the device.
      std::mt19937_64 gen(options.seed);
      for (size_t p = 0; p < problems.size(); ++p) {
        const int64_t n = problems[p].features.size(0), k = problems[p].k;
        std::vector<int64_t> perm(n);
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t i = 0; i < k; ++i) {
          const int64_t r = i + static_cast<int64_t>(Bounded(gen, static_cast<uint64_t>(n - i)));
          std::swap(perm[i], perm[r]);
        }
        picks[p].assign(perm.begin(), perm.begin() + k);
      }
      break;
    }
    case VisualMethod::kUniform: {
      // Token floor((i + 1/2) N / k) for i < k: the centres of k equal segments.
      for (size_t p = 0; p < problems.size(); ++p) {
        const int64_t n = problems[p].features.size(0), k = problems[p].k;
        for (int64_t i = 0; i < k; ++i) picks[p].push_back(((2 * i + 1) * n) / (2 * k));
      }
      break;
    }
  }

  // Back to per-image local indices.
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
  return SelectImpl(*this, images, text_embeds, /*force_device=*/false);
}

absl::StatusOr<std::vector<std::vector<int64_t>>> visual::SelectOnDeviceForTesting(
    const VisualPruner& pruner, absl::Span<const VisualImage> images,
    const at::Tensor& text_embeds) {
  return SelectImpl(pruner, images, text_embeds, /*force_device=*/true);
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
