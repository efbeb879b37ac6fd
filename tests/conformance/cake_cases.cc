// CAKE cases (kind "cake", written by cases/generate_cake.py from antgroup/cakekv's own patched
// Llama attention over its CakeCache): a prompt and decode steps through every layer, and after
// each call the positions every (layer, kv head) kept. The case passes when an attnkit session
// with algorithm CAKE (per_head, PER_TOKEN, window_size = recent_tokens = the window,
// intermediate_tokens = cache_size - window, cake { gamma }) and budget { allocator: CAKE
// cake_tau1 cake_tau2 cake_cascading } keeps exactly those positions after every call: the
// prompt's layer budgets (cascading or at the last layer) and each decode step's eviction.
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

absl::Status RunCakeCase(const SafetensorsFile& file, const JsonValue& config) {
  auto cache_size = ConfigNumber(config, "cache_size");
  auto window = ConfigNumber(config, "window_size");
  auto tau1 = ConfigNumber(config, "tau1");
  auto tau2 = ConfigNumber(config, "tau2");
  auto gamma = ConfigNumber(config, "gamma");
  for (const auto* n : {&cache_size, &window, &tau1, &tau2, &gamma}) {
    if (!n->ok()) return n->status();
  }
  const JsonValue* cascading = config.Find("cascading");
  if (cascading == nullptr || !cascading->is_bool()) {
    return absl::InvalidArgumentError("config: cascading must be a bool");
  }
  int64_t layers = 0, heads = 0, kv_heads = 0, dim = 0, prompt = 0, steps = 0;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"num_layers", &layers},
                            {"num_heads", &heads},
                            {"num_kv_heads", &kv_heads},
                            {"head_dim", &dim},
                            {"prefill_len", &prompt},
                            {"num_steps", &steps}}) {
    auto value = MetadataInt(file, key);
    if (!value.ok()) return value.status();
    *field = *value;
  }
  auto q = LoadTensor(file, "q");
  auto k = LoadTensor(file, "k");
  auto v = LoadTensor(file, "v");
  for (const auto* t : {&q, &k, &v}) {
    if (!t->ok()) return t->status();
  }
  const int64_t total = prompt + steps;
  if (q->sizes() != at::IntArrayRef{layers, heads, total, dim} ||
      k->sizes() != at::IntArrayRef{layers, kv_heads, total, dim} || v->sizes() != k->sizes()) {
    return absl::InvalidArgumentError("q / k / v: shapes disagree with the metadata");
  }
  const int64_t w = static_cast<int64_t>(*window);
  const std::string text = absl::StrCat(
      "num_layers: ", layers, " num_heads: ", heads, " num_kv_heads: ", kv_heads,
      " head_dim: ", dim,
      " eviction { enabled: true algorithm: CAKE granularity: PER_TOKEN per_head: true "
      "window_size: ",
      w, " recent_tokens: ", w, " intermediate_tokens: ", static_cast<int64_t>(*cache_size) - w,
      " cake { gamma: ", *gamma, " } budget { allocator: CAKE cake_tau1: ", *tau1,
      " cake_tau2: ", *tau2, " cake_cascading: ", cascading->bool_value() ? "true" : "false",
      " } }");
  auto created = CreateSession(text);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  for (int64_t step = -1; step < steps; ++step) {
    const int64_t first = step < 0 ? 0 : prompt + step, n = step < 0 ? prompt : 1;
    for (int64_t layer = 0; layer < layers; ++layer) {
      const at::Tensor qs = (*q)[layer].narrow(1, first, n).unsqueeze(0).contiguous();
      const at::Tensor ks = (*k)[layer].narrow(1, first, n).unsqueeze(0).contiguous();
      const at::Tensor vs = (*v)[layer].narrow(1, first, n).unsqueeze(0).contiguous();
      at::Tensor out = at::empty_like(qs);
      DLView qv(qs), kv(ks), vv(vs), ov(out);
      if (absl::Status s = FromC(
              attnkit_session_attend(session.get(), static_cast<int32_t>(layer), qv, kv, vv, ov),
              absl::StrCat("attend layer ", layer));
          !s.ok()) {
        return s;
      }
    }
    const std::string name = step < 0 ? "prefill" : absl::StrCat("step.", step);
    auto kept = LoadTensor(file, "kept." + name);
    if (!kept.ok()) return kept.status();
    for (int64_t layer = 0; layer < layers; ++layer) {
      for (int64_t h = 0; h < kv_heads; ++h) {
        auto positions =
            SessionPositions(session.get(), static_cast<int>(layer), 0, static_cast<int>(h));
        if (!positions.ok()) return positions.status();
        const std::vector<int64_t>& got = *positions;
        std::vector<int64_t> want;
        for (int64_t i = 0; i < first + n; ++i) {
          if ((*kept)[layer][h][i].item<int64_t>() != 0) want.push_back(i);
        }
        if (got != want) {
          return absl::InternalError(
              absl::StrCat(name, ", layer ", layer, ", kv head ", h, ": kept ", got.size(), " [",
                           absl::StrJoin(got, ", "), "], CAKE keeps ", want.size(), " [",
                           absl::StrJoin(want, ", "), "]"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("cake", RunCakeCase);

}  // namespace attnkit::conformance
