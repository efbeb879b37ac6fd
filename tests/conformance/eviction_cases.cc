// Eviction cases (kind "eviction"), checked at two levels through the C ABI:
// 1. policy: the reference's attention weights go to attnkit_eviction_policy_observe/select;
// 2. session: q/k/v go to attnkit_session_attend, which computes attention itself.
// Both must keep exactly the reference's positions at every step.
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "eviction_config.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

std::string Positions(const std::vector<int64_t>& v) { return absl::StrJoin(v, ","); }

absl::Status Compare(const std::vector<int64_t>& got, const at::Tensor& expected,
                     const std::string& where) {
  at::Tensor e = expected.to(at::kLong).contiguous();
  std::vector<int64_t> want(e.data_ptr<int64_t>(), e.data_ptr<int64_t>() + e.numel());
  if (got != want) {
    return absl::InternalError(
        absl::StrCat(where, ": kept [", Positions(got), "], expected [", Positions(want), "]"));
  }
  return absl::OkStatus();
}

struct CaseData {
  int num_steps, num_heads, num_kv_heads, head_dim;
  std::string textproto;
};

absl::StatusOr<CaseData> ReadCase(const SafetensorsFile& file, const JsonValue& config) {
  CaseData c;
  auto text = EvictionTextproto(config);
  if (!text.ok()) return text.status();
  c.textproto = *text;
  for (auto [key, field] : {std::pair<const char*, int*>{"num_steps", &c.num_steps},
                            {"num_heads", &c.num_heads},
                            {"num_kv_heads", &c.num_kv_heads},
                            {"head_dim", &c.head_dim}}) {
    auto v = MetadataInt(file, key);
    if (!v.ok()) return v.status();
    *field = static_cast<int>(*v);
  }
  return c;
}

absl::Status PolicyLevel(const SafetensorsFile& file, const CaseData& c) {
  attnkit_eviction_policy* raw = nullptr;
  if (absl::Status s =
          FromC(attnkit_eviction_policy_create_from_text(c.textproto.data(), c.textproto.size(), 1,
                                                         c.num_heads, c.num_kv_heads, &raw),
                "create");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<attnkit_eviction_policy, decltype(&attnkit_eviction_policy_free)> policy(
      raw, attnkit_eviction_policy_free);

  at::Tensor keys;              // [1, Hkv, L, d], the cache as the policy left it
  std::vector<int64_t> origin;  // original position of each cached token
  for (int step = -1; step < c.num_steps; ++step) {
    const std::string prefix = step < 0 ? "prefill" : absl::StrCat("step.", step);
    auto k = LoadTensor(file, prefix + ".k");
    auto attn = LoadTensor(file, prefix + ".attn");
    auto expected = LoadTensor(file, step < 0 ? "kept.prefill" : absl::StrCat("kept.step.", step));
    if (!k.ok()) return k.status();
    if (!attn.ok()) return attn.status();
    if (!expected.ok()) return expected.status();
    const int64_t first_new = origin.empty() ? 0 : origin.back() + 1;
    for (int64_t i = 0; i < k->size(2); ++i) origin.push_back(first_new + i);
    keys = keys.defined() ? at::cat({keys, *k}, 2) : *k;
    const at::Tensor attn_on_device = OnCaseDevice(*attn);
    DLView attn_view(attn_on_device);
    if (absl::Status s =
            FromC(attnkit_eviction_policy_observe(policy.get(), 0, attn_view, nullptr, 0),
                  prefix + " observe");
        !s.ok()) {
      return s;
    }
    const int64_t length = keys.size(2);
    const at::Tensor keys_on_device = OnCaseDevice(keys);
    DLView key_view(keys_on_device);
    attnkit_kept_positions* kept = nullptr;
    if (absl::Status s =
            FromC(attnkit_eviction_policy_select(policy.get(), 0, key_view, &length, 1, &kept),
                  prefix + " select");
        !s.ok()) {
      return s;
    }
    size_t n = 0;
    const int64_t* row = attnkit_kept_positions_row(kept, 0, &n);
    std::vector<int64_t> kept_positions(row, row + n);
    attnkit_kept_positions_free(kept);
    std::vector<int64_t> kept_origin;
    for (int64_t p : kept_positions) kept_origin.push_back(origin[p]);
    if (absl::Status s = Compare(kept_origin, *expected, "policy level, " + prefix); !s.ok()) {
      return s;
    }
    origin = kept_origin;
    at::Tensor index = at::tensor(kept_positions, at::kLong);
    keys = keys.index_select(2, index);
  }
  return absl::OkStatus();
}

absl::Status RunEvictionCase(const SafetensorsFile& file, const JsonValue& config) {
  auto c = ReadCase(file, config);
  if (!c.ok()) return c.status();
  if (absl::Status s = PolicyLevel(file, *c); !s.ok()) return s;
  return SessionLevel(file, c->textproto, c->num_steps, c->num_heads, c->num_kv_heads, c->head_dim);
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("eviction", RunEvictionCase);

}  // namespace attnkit::conformance
