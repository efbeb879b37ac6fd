// CaM cases (kind "cam", written by cases/generate_cam.py from kvpress's CAMPress over
// KnormPress): a prompt, then decode steps through the press's forward hook, which every
// compression_interval steps evicts down to target_size tokens and merges evicted values into
// the kept tokens after them; each decode step's attention output over the cache as the press
// left it. The case passes when an attnkit session with the matching EvictionConfig (KNORM,
// PER_TOKEN, intermediate_tokens = target_size, defer_eviction_to_decode, schedule.interval_steps
// = compression_interval, cache_merging { merge_budget seed }) gives every step's output within
// 1e-5 (the reference's matmul and the paged kernel add in different orders). The same session
// without cache_merging must differ by more than 1e-4 at some step: the case sees the merges.
#include <algorithm>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

struct CamShape {
  int64_t heads = 0, kv_heads = 0, dim = 0, prefill = 0, steps = 0;
};

// Every decode step's output [steps, H, d] of a session made from `text`.
absl::StatusOr<at::Tensor> RunSession(const std::string& text, const CamShape& s,
                                      const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v) {
  auto created = CreateSession(text);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  at::Tensor outs = at::empty({s.steps, s.heads, s.dim});
  for (int64_t step = -1; step < s.steps; ++step) {
    const int64_t first = step < 0 ? 0 : s.prefill + step, n = step < 0 ? s.prefill : 1;
    const at::Tensor qs = q.narrow(1, first, n).unsqueeze(0).contiguous();
    const at::Tensor ks = k.narrow(1, first, n).unsqueeze(0).contiguous();
    const at::Tensor vs = v.narrow(1, first, n).unsqueeze(0).contiguous();
    at::Tensor out = at::empty_like(qs);
    DLView qv(qs), kv(ks), vv(vs), ov(out);
    if (absl::Status st = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov),
                                absl::StrCat("attend (step ", step, ")"));
        !st.ok()) {
      return st;
    }
    if (step >= 0) outs[step].copy_(out.view({s.heads, s.dim}));
  }
  return outs;
}

absl::Status RunCamCase(const SafetensorsFile& file, const JsonValue& config) {
  int64_t target = 0, interval = 0, budget = 0, seed = 0;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"target_size", &target},
                            {"compression_interval", &interval},
                            {"merge_budget", &budget},
                            {"seed", &seed}}) {
    auto value = ConfigNumber(config, key);
    if (!value.ok()) return value.status();
    *field = static_cast<int64_t>(*value);
  }
  CamShape s;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"num_heads", &s.heads},
                            {"num_kv_heads", &s.kv_heads},
                            {"head_dim", &s.dim},
                            {"prefill_len", &s.prefill},
                            {"num_steps", &s.steps}}) {
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
  const int64_t total = s.prefill + s.steps;
  if (q->sizes() != at::IntArrayRef{s.heads, total, s.dim} ||
      k->sizes() != at::IntArrayRef{s.kv_heads, total, s.dim} || v->sizes() != k->sizes()) {
    return absl::InvalidArgumentError("q / k / v: shapes disagree with the metadata");
  }
  const std::string model = absl::StrCat("num_layers: 1 num_heads: ", s.heads,
                                         " num_kv_heads: ", s.kv_heads, " head_dim: ", s.dim);
  const std::string eviction = absl::StrCat(
      "enabled: true algorithm: KNORM granularity: PER_TOKEN intermediate_tokens: ", target,
      " defer_eviction_to_decode: true schedule { interval_steps: ", interval, " }");
  auto merged =
      RunSession(absl::StrCat(model, " eviction { ", eviction,
                              " cache_merging { merge_budget: ", budget, " seed: ", seed, " } }"),
                 s, *q, *k, *v);
  if (!merged.ok()) return merged.status();
  auto plain = RunSession(absl::StrCat(model, " eviction { ", eviction, " }"), s, *q, *k, *v);
  if (!plain.ok()) return plain.status();
  double sensitivity = 0;
  for (int64_t step = 0; step < s.steps; ++step) {
    auto want = LoadTensor(file, absl::StrCat("out.step.", step));
    if (!want.ok()) return want.status();
    const double diff = ((*merged)[step] - *want).abs().max().item<double>();
    if (!(diff <= 1e-5)) {
      return absl::InternalError(absl::StrCat("decode step ", step, ": output differs from the ",
                                              "reference's by up to ", diff));
    }
    sensitivity = std::max(sensitivity, ((*plain)[step] - *want).abs().max().item<double>());
  }
  if (!(sensitivity > 1e-4)) {
    return absl::InternalError(
        absl::StrCat("without cache_merging the outputs differ from the reference's by at most ",
                     sensitivity, ": the case does not exercise the merge"));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("cam", RunCamCase);

}  // namespace attnkit::conformance
