// DuoAttention head-split cases (kind "head_split", written by cases/generate_duo_attention.py from
// kvpress's DuoAttentionPress): the press's head scores, head_compression_ratio, sink and recent
// sizes, and the keys it keeps per (layer, kv head) after a prompt. The case passes when a session
// with the matching HeadSplit (streaming_ratio = head_compression_ratio), fed random q/k/v for the
// prompt through every layer, holds exactly those positions in every (layer, kv head).
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

absl::Status RunHeadSplitCase(const SafetensorsFile& file, const JsonValue& config) {
  int64_t layers = 0, kv_heads = 0, heads = 0, head_dim = 0, sink = 0, recent = 0, prompt = 0;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"num_layers", &layers},
                            {"num_kv_heads", &kv_heads},
                            {"num_heads", &heads},
                            {"head_dim", &head_dim},
                            {"sink_tokens", &sink},
                            {"recent_tokens", &recent},
                            {"prompt_len", &prompt}}) {
    auto v = ConfigNumber(config, key);
    if (!v.ok()) return v.status();
    *field = static_cast<int64_t>(*v);
  }
  auto ratio = ConfigNumber(config, "streaming_ratio");
  if (!ratio.ok()) return ratio.status();
  auto scores = LoadTensor(file, "head_scores");
  auto keep = LoadTensor(file, "keep_mask");
  if (!scores.ok()) return scores.status();
  if (!keep.ok()) return keep.status();
  if (scores->numel() != layers * kv_heads || keep->dim() != 3 || keep->size(0) != layers ||
      keep->size(1) != kv_heads || keep->size(2) != prompt) {
    return absl::InvalidArgumentError("head_scores / keep_mask: shapes disagree with the config");
  }
  // The float32 scores as doubles, printed exactly (the press read the same float64 values).
  const at::Tensor flat = scores->to(at::kDouble).reshape({-1});
  std::vector<std::string> texts;
  for (int64_t i = 0; i < flat.numel(); ++i) {
    texts.push_back(absl::StrFormat("%.17g", flat[i].item<double>()));
  }
  const std::string text = absl::StrCat(
      SessionDeviceText(), "num_layers: ", layers, " num_heads: ", heads,
      " num_kv_heads: ", kv_heads, " head_dim: ", head_dim, " head_split { head_scores: [",
      absl::StrJoin(texts, ", "), "] streaming_ratio: ", absl::StrFormat("%.17g", *ratio),
      " sink_tokens: ", sink, " recent_tokens: ", recent, " }");
  auto created = CreateSession(text);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  at::manual_seed(7);
  for (int64_t layer = 0; layer < layers; ++layer) {
    const at::Tensor q = OnCaseDevice(at::randn({1, heads, prompt, head_dim}));
    const at::Tensor k = OnCaseDevice(at::randn({1, kv_heads, prompt, head_dim}));
    const at::Tensor v = OnCaseDevice(at::randn({1, kv_heads, prompt, head_dim}));
    at::Tensor out = at::empty_like(q);
    DLView qv(q), kv(k), vv(v), ov(out);
    if (absl::Status s = FromC(
            attnkit_session_attend(session.get(), static_cast<int32_t>(layer), qv, kv, vv, ov),
            absl::StrCat("attend layer ", layer));
        !s.ok()) {
      return s;
    }
  }
  const at::Tensor mask = keep->to(at::kBool);
  for (int64_t layer = 0; layer < layers; ++layer) {
    for (int64_t h = 0; h < kv_heads; ++h) {
      auto positions =
          SessionPositions(session.get(), static_cast<int>(layer), 0, static_cast<int>(h));
      if (!positions.ok()) return positions.status();
      const std::vector<int64_t>& got = *positions;
      std::vector<int64_t> want;
      for (int64_t i = 0; i < prompt; ++i) {
        if (mask[layer][h][i].item<bool>()) want.push_back(i);
      }
      if (got != want) {
        return absl::InternalError(absl::StrCat("layer ", layer, ", kv head ", h, ": kept [",
                                                absl::StrJoin(got, ", "), "], kvpress keeps [",
                                                absl::StrJoin(want, ", "), "]"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("head_split", RunHeadSplitCase);

}  // namespace attnkit::conformance
