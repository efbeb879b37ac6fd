// Conformance kind "visual_pruning": CDPruner through the C ABI (attnkit_visual_pruner). The case
// config (reference parameter names) maps onto a VisualPruningConfig textproto; keep_indices must
// be equal exactly.
#include <ATen/Functions.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit_visual.h"
#include "conformance.h"
#include "dlpack_util.h"

namespace attnkit::conformance {
namespace {

absl::StatusOr<at::Tensor> Load(const SafetensorsFile& file, const std::string& name,
                                SafetensorsDType dtype, at::ScalarType scalar) {
  auto entry = file.Get(name);
  if (!entry.ok()) return entry.status();
  if ((*entry)->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected ", SafetensorsDTypeName(dtype),
                                                   ", got ",
                                                   SafetensorsDTypeName((*entry)->dtype)));
  }
  at::Tensor t = at::empty((*entry)->shape, at::TensorOptions().dtype(scalar));
  if ((*entry)->data.size() != static_cast<size_t>(t.nbytes())) {
    return absl::InvalidArgumentError(name + ": size does not match its shape");
  }
  if (t.nbytes() > 0) std::memcpy(t.data_ptr(), (*entry)->data.data(), t.nbytes());
  return t;
}

// The case config as a VisualPruningConfig textproto; any key or value it cannot map is an error.
absl::StatusOr<std::string> ToTextproto(const JsonValue& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("config: not a JSON object");
  std::string text;
  for (const auto& [key, value] : config.object()) {
    if (key == "method") {
      if (!value.is_string()) return absl::InvalidArgumentError("config.method: not a string");
      const std::string& m = value.string();
      if (m == "cdpruner") {
        absl::StrAppend(&text, "method: CDPRUNER\n");
      } else if (m == "divprune") {
        absl::StrAppend(&text, "method: DIVPRUNE\n");
      } else {
        return absl::InvalidArgumentError("config.method: unknown value \"" + m + "\"");
      }
    } else if (key == "num_keep_tokens") {
      auto k = JsonInt(value, "config.num_keep_tokens");
      if (!k.ok()) return k.status();
      absl::StrAppend(&text, "num_keep_tokens: ", *k, "\n");
    } else if (key == "keep_ratio" || key == "theta") {
      if (!value.is_number()) {
        return absl::InvalidArgumentError("config." + key + ": not a number");
      }
      absl::StrAppend(&text, key, ": ", value.number_text(), "\n");
    } else {
      return absl::InvalidArgumentError("config: unknown key \"" + key + "\"");
    }
  }
  return text;
}

struct PrunerDeleter {
  void operator()(attnkit_visual_pruner* p) const { attnkit_visual_pruner_free(p); }
};
struct SelectionDeleter {
  void operator()(attnkit_visual_selection* s) const { attnkit_visual_selection_free(s); }
};

absl::Status RunVisualCase(const SafetensorsFile& file, const JsonValue& config) {
  auto text = ToTextproto(config);
  if (!text.ok()) return text.status();
  auto embeds = Load(file, "image_embeds", SafetensorsDType::kF32, at::kFloat);
  if (!embeds.ok()) return embeds.status();
  auto features = Load(file, "image_features", SafetensorsDType::kF32, at::kFloat);
  if (!features.ok()) return features.status();
  auto text_embeds = Load(file, "text_embeds", SafetensorsDType::kF32, at::kFloat);
  if (!text_embeds.ok()) return text_embeds.status();
  auto expected = Load(file, "keep_indices", SafetensorsDType::kI64, at::kLong);
  if (!expected.ok()) return expected.status();

  attnkit_visual_pruner* raw_pruner = nullptr;
  if (absl::Status s =
          FromC(attnkit_visual_pruner_create_from_text(text->data(), text->size(), &raw_pruner),
                "attnkit_visual_pruner_create_from_text");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<attnkit_visual_pruner, PrunerDeleter> pruner(raw_pruner);
  const at::Tensor embeds_d = OnCaseDevice(*embeds), features_d = OnCaseDevice(*features),
                   text_d = OnCaseDevice(*text_embeds);
  testing::DLView e(embeds_d), f(features_d), t(text_d);
  attnkit_visual_selection* raw_selection = nullptr;
  if (absl::Status s = FromC(attnkit_visual_pruner_select(pruner.get(), e, f, t, &raw_selection),
                             "attnkit_visual_pruner_select");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<attnkit_visual_selection, SelectionDeleter> selection(raw_selection);
  if (attnkit_visual_selection_num_images(selection.get()) != 1) {
    return absl::InternalError("expected one image in the selection");
  }
  const size_t count = attnkit_visual_selection_num_kept(selection.get(), 0);
  const int64_t* got = attnkit_visual_selection_indices(selection.get(), 0);
  const int64_t* want = expected->data_ptr<int64_t>();
  const size_t want_count = static_cast<size_t>(expected->numel());
  std::vector<int64_t> missing, extra;
  {
    std::vector<int64_t> g(got, got + count), w(want, want + want_count);
    for (int64_t v : w) {
      if (!std::binary_search(g.begin(), g.end(), v)) missing.push_back(v);
    }
    for (int64_t v : g) {
      if (!std::binary_search(w.begin(), w.end(), v)) extra.push_back(v);
    }
  }
  if (count != want_count || !std::equal(got, got + count, want)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "keep_indices differ: got ", count, " indices, expected ", want_count, "; missing [",
        absl::StrJoin(missing, ", "), "], unexpected [", absl::StrJoin(extra, ", "), "]"));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("visual_pruning", RunVisualCase);

}  // namespace attnkit::conformance
