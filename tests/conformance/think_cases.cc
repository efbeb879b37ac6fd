// ThinK cases (kind "think", written by cases/generate_think.py from kvpress's own ThinKPress): a
// prompt's rotated q / k / v, the keys the press returned (its dropped channels zeroed) and probe
// queries. A session with kv_format { key_channel_ratio, key_channel_window } and no residual
// window is prefilled with the prompt (the call that chooses the channels, from its last
// window_size queries); the probes' observe pass then reads the cache as stored (the kept channels,
// the dropped ones as 0). The case passes when that pass equals attention over the press's keys
// (within 1e-5: the two add in different orders); dropping any other channel moves it far more.
// Host store only (the device store refuses ThinK): these cases run on the CPU.
#include <cmath>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

absl::Status RunThinkCase(const SafetensorsFile& file, const JsonValue& config) {
  auto ratio = ConfigNumber(config, "key_channel_ratio");
  auto window = ConfigNumber(config, "window_size");
  if (!ratio.ok()) return ratio.status();
  if (!window.ok()) return window.status();
  int64_t heads = 0, kv_heads = 0, dim = 0;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"num_heads", &heads},
                            {"num_kv_heads", &kv_heads},
                            {"head_dim", &dim}}) {
    auto v = MetadataInt(file, key);
    if (!v.ok()) return v.status();
    *field = *v;
  }
  auto q = LoadTensor(file, "prefill.q");
  auto k = LoadTensor(file, "prefill.k");
  auto v = LoadTensor(file, "prefill.v");
  auto pressed = LoadTensor(file, "think.keys");
  auto probes = LoadTensor(file, "probe.q");
  for (const auto* t : {&q, &k, &v, &pressed, &probes}) {
    if (!t->ok()) return t->status();
  }
  if (q->dim() != 4 || q->size(1) != heads || q->size(3) != dim || k->size(1) != kv_heads ||
      v->sizes() != k->sizes() || pressed->sizes() != k->sizes() || probes->size(1) != heads) {
    return absl::InvalidArgumentError(
        "prefill.q / prefill.k / prefill.v / think.keys / probe.q: shapes disagree with the "
        "metadata");
  }
  const std::string text = absl::StrCat(
      "num_layers: 1 num_heads: ", heads, " num_kv_heads: ", kv_heads, " head_dim: ", dim,
      " kv_format { key_channel_ratio: ", absl::StrFormat("%.17g", *ratio),
      " key_channel_window: ", static_cast<int64_t>(*window), " }");
  auto created = CreateSession(text);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  at::Tensor out = at::empty_like(*q);
  {
    DLView qv(*q), kv(*k), vv(*v), ov(out);
    if (absl::Status s = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov), "prefill");
        !s.ok()) {
      return s;
    }
  }
  at::Tensor got = at::empty_like(*probes);
  {
    DLView qv(*probes), ov(got);
    if (absl::Status s = FromC(attnkit_session_observe(session.get(), 0, qv, ov), "observe");
        !s.ok()) {
      return s;
    }
  }
  // softmax(probe . K^T / sqrt(d)) V over the press's keys, the kv heads repeated to the queries.
  const int64_t group = heads / kv_heads;
  const at::Tensor keys = pressed->repeat_interleave(group, 1);
  const at::Tensor values = v->repeat_interleave(group, 1);
  const at::Tensor scores =
      at::matmul(*probes, keys.transpose(2, 3)) / std::sqrt(static_cast<double>(dim));
  const at::Tensor want = at::matmul(at::softmax(scores, -1), values);
  const double diff = (got - want).abs().max().item<double>();
  if (!(diff <= 1e-5)) {
    return absl::InternalError(absl::StrCat(
        "observe output over the session's ThinK cache differs from attention over the press's "
        "keys by up to ",
        diff));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("think", RunThinkCase);

}  // namespace attnkit::conformance
