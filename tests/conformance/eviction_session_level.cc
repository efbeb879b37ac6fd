// Session level of the eviction cases: the session computes attention itself from q/k/v.
#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit.h"
#include "dlpack_util.h"
#include "conformance.h"
#include "eviction_config.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {

absl::Status SessionLevel(const SafetensorsFile& file, const std::string& eviction_textproto,
                          int num_steps, int num_heads, int num_kv_heads, int head_dim) {
  const std::string config = absl::StrCat(
      SessionDeviceText(), "num_layers: 1 num_heads: ", num_heads, " num_kv_heads: ", num_kv_heads,
      " head_dim: ", head_dim, " eviction { ", eviction_textproto, " }");
  auto created = CreateSession(config);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  std::vector<std::string> differing;
  for (int step = -1; step < num_steps; ++step) {
    const std::string prefix = step < 0 ? "prefill" : absl::StrCat("step.", step);
    auto q = LoadTensor(file, prefix + ".q");
    auto k = LoadTensor(file, prefix + ".k");
    auto v = LoadTensor(file, prefix + ".v");
    auto expected = LoadTensor(file, step < 0 ? "kept.prefill" : absl::StrCat("kept.step.", step));
    for (const auto* t : {&q, &k, &v, &expected})
      if (!t->ok()) return t->status();
    const at::Tensor qd = OnCaseDevice(*q), kd = OnCaseDevice(*k), vd = OnCaseDevice(*v);
    at::Tensor out = at::empty_like(qd);
    testing::DLView qv(qd), kv(kd), vv(vd), ov(out);
    if (absl::Status s = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov),
                               "session level, " + prefix);
        !s.ok()) {
      return s;
    }
    for (int h = 0; h < num_kv_heads; ++h) {
      auto positions = SessionPositions(session.get(), 0, 0, h);
      if (!positions.ok()) return positions.status();
      const std::vector<int64_t>& got = *positions;
      at::Tensor e = expected->to(at::kLong).contiguous();
      std::vector<int64_t> want(e.data_ptr<int64_t>(), e.data_ptr<int64_t>() + e.numel());
      if (got != want) {
        differing.push_back(absl::StrCat(prefix, " (kv head ", h, ": kept [",
                                         absl::StrJoin(got, ","), "], expected [",
                                         absl::StrJoin(want, ","), "])"));
        break;
      }
    }
  }
  if (!differing.empty()) {
    return absl::InternalError(absl::StrCat("session level: ", differing.size(),
                                            " steps differ, first: ", differing.front()));
  }
  return absl::OkStatus();
}

}  // namespace attnkit::conformance
