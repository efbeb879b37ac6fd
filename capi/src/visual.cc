#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "absl/strings/string_view.h"
#include "attnkit/attnkit_visual.h"
#include "attnkit/config_parser.h"
#include "attnkit/visual/visual_pruner.h"
#include "capi_internal.h"

struct attnkit_visual_pruner {
  std::unique_ptr<attnkit::VisualPruner> pruner;
};

struct attnkit_visual_selection {
  std::vector<int64_t> image_sizes;
  std::vector<std::vector<int64_t>> kept;
};

using attnkit::capi::Guard;
using attnkit::capi::GuardValue;
using attnkit::capi::GuardVoid;

namespace {

absl::Status Create(absl::string_view data, bool text, attnkit_visual_pruner** out) {
  auto options = attnkit::ParseVisualPruningConfig(data, text);
  if (!options.ok()) return options.status();
  auto pruner = attnkit::VisualPruner::Create(*options);
  if (!pruner.ok()) return pruner.status();
  *out = attnkit::capi::Adopt(new attnkit_visual_pruner{std::move(*pruner)},
                              attnkit::capi::HandleKind::kVisualPruner);
  return absl::OkStatus();
}

bool Live(const attnkit_visual_selection* selection) {
  return attnkit::capi::IsLiveHandle(selection, attnkit::capi::HandleKind::kVisualSelection);
}

std::string Dims(const at::Tensor& t) { return attnkit::capi::ShapeString(t.sizes()); }

// Checks the three tensors (C-level names in every message) and splits them into images:
// `sizes` empty means the batched form ([N, .] or [num_images, N, .]).
absl::Status Select(const attnkit_visual_pruner* pruner, const DLTensor* image_embeds,
                    const DLTensor* image_features, const DLTensor* text_embeds,
                    const absl::Span<const int64_t>* ragged_sizes, attnkit_visual_selection** out) {
  ATTNKIT_CHECK_ARG(out);
  *out = nullptr;
  ATTNKIT_CHECK_HANDLE(pruner, kVisualPruner);
  const bool ragged = ragged_sizes != nullptr;
  const char* feature_shape = ragged ? "[sum N_i, Dv]" : "[N, Dv] or [num_images, N, Dv]";
  const char* embed_shape = ragged ? "[sum N_i, C]" : "[N, C] or [num_images, N, C]";

  auto features =
      attnkit::capi::FromDLPack(image_features, attnkit::capi::TensorSpec{"image_features"});
  if (!features.ok()) return features.status();
  const int64_t rank = features->dim();
  if ((ragged && rank != 2) || (!ragged && rank != 2 && rank != 3)) {
    return absl::InvalidArgumentError(
        absl::StrCat("image_features: expected shape ", feature_shape, ", got ", Dims(*features)));
  }
  // NULL embeddings or text become undefined tensors: which methods need them, and the shape the
  // text must have, are the pruner's rules (VisualPruner::Select). The leading sizes of the
  // embeddings are checked here, since they split into images as the features do.
  at::Tensor embeds;
  if (image_embeds != nullptr) {
    auto e = attnkit::capi::FromDLPack(image_embeds, attnkit::capi::TensorSpec{"image_embeds"});
    if (!e.ok()) return e.status();
    embeds = *e;
    bool ok = embeds.dim() == rank && embeds.size(-1) >= 1;
    for (int64_t d = 0; ok && d + 1 < rank; ++d) ok = embeds.size(d) == features->size(d);
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat("image_embeds: expected shape ", embed_shape,
                                                     " with the leading sizes of image_features ",
                                                     Dims(*features), ", got ", Dims(embeds)));
    }
  }
  at::Tensor text;
  if (text_embeds != nullptr) {
    auto t = attnkit::capi::FromDLPack(text_embeds, attnkit::capi::TensorSpec{"text_embeds"});
    if (!t.ok()) return t.status();
    text = *t;
  }
  if (features->size(-1) < 1 || features->size(-2) < 1 || (rank == 3 && features->size(0) < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("image_features: expected shape ", feature_shape,
                                                   " with every size >= 1, got ", Dims(*features)));
  }

  // The C names of what the method needs (the pruner's own messages name its C++ arguments).
  if (pruner->pruner->options().method == attnkit::VisualMethod::kCDPruner) {
    if (!embeds.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("image_embeds: CDPRUNER needs the image embeddings (expected shape ",
                       embed_shape, "), got NULL"));
    }
    if (!text.defined()) {
      return absl::InvalidArgumentError(
          "text_embeds: CDPRUNER needs the text embeddings (expected shape [M, C]), got NULL");
    }
  }

  std::vector<attnkit::VisualImage> images;
  std::vector<int64_t> sizes;
  if (ragged) {
    // Each image holds at least one row: a count beyond the rows is refused before any size is
    // read (a count larger than the caller's array would read past it).
    if (ragged_sizes->size() > static_cast<size_t>(features->size(0))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "num_images: ", ragged_sizes->size(), " images cannot split the ", features->size(0),
          " rows of image_features (each image holds at least one row)"));
    }
    int64_t offset = 0;
    for (size_t i = 0; i < ragged_sizes->size(); ++i) {
      const int64_t n = (*ragged_sizes)[i];
      if (n < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("image_sizes[", i, "]: must be >= 1, got ", n));
      }
      if (n > features->size(0) - offset) {  // also keeps the running sum from overflowing
        return absl::InvalidArgumentError(absl::StrCat(
            "image_sizes: the first ", i + 1, " sizes sum past the ", features->size(0),
            " rows of image_features (expected shape [sum N_i, Dv])"));
      }
      offset += n;
    }
    if (offset != features->size(0)) {
      return absl::InvalidArgumentError(absl::StrCat("image_sizes: sum to ", offset,
                                                     ", but image_features has ", features->size(0),
                                                     " rows (expected shape [sum N_i, Dv])"));
    }
    offset = 0;
    for (int64_t n : *ragged_sizes) {
      attnkit::VisualImage im;
      im.features = features->narrow(0, offset, n);
      if (embeds.defined()) im.embeds = embeds.narrow(0, offset, n);
      images.push_back(std::move(im));
      sizes.push_back(n);
      offset += n;
    }
  } else if (rank == 2) {
    images.push_back(attnkit::VisualImage{embeds, *features});
    sizes.push_back(features->size(0));
  } else {
    for (int64_t i = 0; i < features->size(0); ++i) {
      attnkit::VisualImage im;
      im.features = features->select(0, i);
      if (embeds.defined()) im.embeds = embeds.select(0, i);
      images.push_back(std::move(im));
      sizes.push_back(features->size(1));
    }
  }
  auto kept = pruner->pruner->Select(images, text);
  if (!kept.ok()) return kept.status();
  *out = attnkit::capi::Adopt(new attnkit_visual_selection{std::move(sizes), std::move(*kept)},
                              attnkit::capi::HandleKind::kVisualSelection);
  return absl::OkStatus();
}

}  // namespace

extern "C" {

attnkit_status* attnkit_visual_pruner_create(const void* data, size_t size,
                                             attnkit_visual_pruner** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    if (data == nullptr && size > 0) return absl::InvalidArgumentError("data: must not be NULL");
    return Create(attnkit::capi::ByteView(data, size), /*text=*/false, out);
  });
}

attnkit_status* attnkit_visual_pruner_create_from_text(const char* text, size_t size,
                                                       attnkit_visual_pruner** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    if (text == nullptr && size > 0) return absl::InvalidArgumentError("text: must not be NULL");
    return Create(attnkit::capi::ByteView(text, size), /*text=*/true, out);
  });
}

void attnkit_visual_pruner_free(attnkit_visual_pruner* pruner) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(pruner, attnkit::capi::HandleKind::kVisualPruner))
      delete pruner;
  });
}

attnkit_status* attnkit_visual_pruner_select(const attnkit_visual_pruner* pruner,
                                             const DLTensor* image_embeds,
                                             const DLTensor* image_features,
                                             const DLTensor* text_embeds,
                                             attnkit_visual_selection** out) {
  return Guard(__func__, [&]() -> absl::Status {
    return Select(pruner, image_embeds, image_features, text_embeds, nullptr, out);
  });
}

attnkit_status* attnkit_visual_pruner_select_ragged(const attnkit_visual_pruner* pruner,
                                                    const DLTensor* image_embeds,
                                                    const DLTensor* image_features,
                                                    const int64_t* image_sizes, size_t num_images,
                                                    const DLTensor* text_embeds,
                                                    attnkit_visual_selection** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    ATTNKIT_CHECK_ARG(image_sizes);
    if (num_images == 0) return absl::InvalidArgumentError("num_images: must be >= 1");
    const absl::Span<const int64_t> sizes(image_sizes, num_images);
    return Select(pruner, image_embeds, image_features, text_embeds, &sizes, out);
  });
}

size_t attnkit_visual_selection_num_images(const attnkit_visual_selection* selection) {
  return GuardValue<size_t>(0, [&] { return !Live(selection) ? 0 : selection->kept.size(); });
}

size_t attnkit_visual_selection_image_size(const attnkit_visual_selection* selection,
                                           size_t image) {
  return GuardValue<size_t>(0, [&]() -> size_t {
    if (!Live(selection) || image >= selection->image_sizes.size()) return 0;
    return static_cast<size_t>(selection->image_sizes[image]);
  });
}

size_t attnkit_visual_selection_num_kept(const attnkit_visual_selection* selection, size_t image) {
  return GuardValue<size_t>(0, [&]() -> size_t {
    if (!Live(selection) || image >= selection->kept.size()) return 0;
    return selection->kept[image].size();
  });
}

const int64_t* attnkit_visual_selection_indices(const attnkit_visual_selection* selection,
                                                size_t image) {
  return GuardValue<const int64_t*>(nullptr, [&]() -> const int64_t* {
    if (!Live(selection) || image >= selection->kept.size() || selection->kept[image].empty()) {
      return nullptr;
    }
    return selection->kept[image].data();
  });
}

attnkit_status* attnkit_visual_selection_flat_indices(const attnkit_visual_selection* selection,
                                                      attnkit_int64_array** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    ATTNKIT_CHECK_HANDLE(selection, kVisualSelection);
    std::vector<int64_t> flat;
    int64_t offset = 0;
    for (size_t i = 0; i < selection->kept.size(); ++i) {
      for (int64_t idx : selection->kept[i]) flat.push_back(offset + idx);
      offset += selection->image_sizes[i];
    }
    *out = attnkit::capi::NewInt64Array(flat);
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_visual_selection_kept_positions(const attnkit_visual_selection* selection,
                                                        const uint8_t* image_token_mask,
                                                        size_t prompt_length,
                                                        attnkit_int64_array** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    ATTNKIT_CHECK_HANDLE(selection, kVisualSelection);
    if (image_token_mask == nullptr && prompt_length > 0) {
      return absl::InvalidArgumentError("image_token_mask: must not be NULL");
    }
    auto positions =
        attnkit::KeptPromptPositions(absl::Span<const uint8_t>(image_token_mask, prompt_length),
                                     selection->image_sizes, selection->kept);
    if (!positions.ok()) return positions.status();
    *out = attnkit::capi::NewInt64Array(*positions);
    return absl::OkStatus();
  });
}

void attnkit_visual_selection_free(attnkit_visual_selection* selection) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(selection, attnkit::capi::HandleKind::kVisualSelection))
      delete selection;
  });
}

}  // extern "C"
