// kvpress cases (kind "kvpress", written by cases/generate_kvpress.py): what kvpress's presses keep
// when they compress a prompt, per kv head. The press's parameters (the case's `config`) map onto
// an EvictionConfig as docs/kvpress.md says; the case passes when
// 1. policy level: the policy fed the prompt's attention weights keeps exactly those positions
//    (EXPECTED_ATTENTION, which scores from queries and RoPE rather than attention weights, must
//    refuse this path with FAILED_PRECONDITION), and
// 2. session level: a session (with the case's RoPE) fed q/k/v keeps them in every kv head.
// DMSPress cases (threshold eviction over KnormPress) add decode steps and give the kept set of
// every step as a mask over the positions (keep_mask.*), the kept sets differing per kv head.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/numbers.h"
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

struct KvpressCase {
  std::string press;
  std::string textproto;  // the EvictionConfig
  bool per_head = true;
  int prefill_len = 0, num_heads = 0, num_kv_heads = 0, head_dim = 0;
  double rope_theta = 10000;
  bool rope_interleaved = false;
};

absl::StatusOr<bool> Bool(const JsonValue& config, const char* key) {
  const JsonValue* v = config.Find(key);
  if (v == nullptr || !v->is_bool()) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", key, " must be a bool"));
  }
  return v->bool_value();
}

absl::Status OnlyKeys(const JsonValue& config, const std::vector<std::string>& known) {
  for (const auto& [key, value] : config.object()) {
    bool found = false;
    for (const auto& k : known) found |= key == k;
    if (!found) return absl::InvalidArgumentError(absl::StrCat("config: unknown key ", key));
  }
  return absl::OkStatus();
}

// The press's parameters as an attnkit EvictionConfig (docs/kvpress.md). kvpress keeps
// int(k_len * (1 - compression_ratio)) tokens of each kv head, the forced ones included.
absl::Status MapPress(const JsonValue& config, KvpressCase& c) {
  const JsonValue* press = config.Find("press");
  if (press == nullptr || !press->is_string()) {
    return absl::InvalidArgumentError("config: press must be a string");
  }
  c.press = press->string();
  auto ratio = ConfigNumber(config, "compression_ratio");
  if (!ratio.ok()) return ratio.status();
  const int64_t kept = static_cast<int64_t>(c.prefill_len * (1.0 - *ratio));
  std::string t = "enabled: true granularity: PER_TOKEN ";
  if (c.press == "snapkv") {
    // SnapKVPress: the last window_size queries' attention to the keys before them, averaged
    // over the window, average-pooled (zero padding counted), averaged over each kv head's query
    // heads; the window itself always kept.
    if (absl::Status s =
            OnlyKeys(config, {"press", "compression_ratio", "window_size", "kernel_size"});
        !s.ok()) {
      return s;
    }
    auto window = ConfigNumber(config, "window_size");
    auto kernel = ConfigNumber(config, "kernel_size");
    if (!window.ok()) return window.status();
    if (!kernel.ok()) return kernel.status();
    const int64_t w = static_cast<int64_t>(*window);
    absl::StrAppend(&t, "algorithm: SNAPKV per_head: true start_tokens: 0 recent_tokens: ", w,
                    " intermediate_tokens: ", kept - w, " window_size: ", w,
                    " pooling { kernel_size: ", static_cast<int64_t>(*kernel),
                    " kind: AVERAGE before_window_only: true }");
  } else if (c.press == "tova") {
    // TOVAPress: the last query's attention averaged over all query heads, the same set for every
    // kv head, the last token always kept.
    if (absl::Status s = OnlyKeys(config, {"press", "compression_ratio"}); !s.ok()) return s;
    c.per_head = false;
    absl::StrAppend(
        &t, "algorithm: TOVA start_tokens: 0 recent_tokens: 1 intermediate_tokens: ", kept - 1);
  } else if (c.press == "expected_attention") {
    if (absl::Status s = OnlyKeys(config, {"press", "compression_ratio", "n_future_positions",
                                           "n_sink", "use_covariance", "use_vnorm", "epsilon"});
        !s.ok()) {
      return s;
    }
    auto future = ConfigNumber(config, "n_future_positions");
    auto sink = ConfigNumber(config, "n_sink");
    auto epsilon = ConfigNumber(config, "epsilon");
    auto covariance = Bool(config, "use_covariance");
    auto vnorm = Bool(config, "use_vnorm");
    for (const auto* s : {&future, &sink, &epsilon})
      if (!s->ok()) return s->status();
    for (const auto* s : {&covariance, &vnorm})
      if (!s->ok()) return s->status();
    const int64_t n_sink = static_cast<int64_t>(*sink);
    absl::StrAppend(&t, "algorithm: EXPECTED_ATTENTION per_head: true start_tokens: ", n_sink,
                    " recent_tokens: 0 intermediate_tokens: ", kept - n_sink,
                    " expected_attention { n_future_positions: ", static_cast<int64_t>(*future),
                    " use_covariance: ", *covariance ? "true" : "false",
                    " use_vnorm: ", *vnorm ? "true" : "false", " epsilon: ", *epsilon, " }");
  } else {
    return absl::InvalidArgumentError(absl::StrCat("config: unknown press ", c.press));
  }
  c.textproto = t;
  return absl::OkStatus();
}

absl::StatusOr<KvpressCase> ReadCase(const SafetensorsFile& file, const JsonValue& config) {
  KvpressCase c;
  for (auto [key, field] : {std::pair<const char*, int*>{"prefill_len", &c.prefill_len},
                            {"num_heads", &c.num_heads},
                            {"num_kv_heads", &c.num_kv_heads},
                            {"head_dim", &c.head_dim}}) {
    auto v = MetadataInt(file, key);
    if (!v.ok()) return v.status();
    *field = static_cast<int>(*v);
  }
  auto theta = file.Metadata("rope_theta");
  auto interleaved = file.Metadata("rope_interleaved");
  if (!theta.ok()) return theta.status();
  if (!interleaved.ok()) return interleaved.status();
  if (!absl::SimpleAtod(*theta, &c.rope_theta)) {
    return absl::InvalidArgumentError("rope_theta: expected a number, got \"" + *theta + "\"");
  }
  c.rope_interleaved = *interleaved == "true";
  if (absl::Status s = MapPress(config, c); !s.ok()) return s;
  return c;
}

std::vector<std::vector<int64_t>> ExpectedRows(const at::Tensor& kept) {
  const at::Tensor e = kept.to(at::kLong).contiguous();
  std::vector<std::vector<int64_t>> rows(e.size(0));
  for (int64_t h = 0; h < e.size(0); ++h) {
    const int64_t* p = e.data_ptr<int64_t>() + h * e.size(1);
    rows[h].assign(p, p + e.size(1));
  }
  return rows;
}

absl::Status CompareRow(const std::vector<int64_t>& got, const std::vector<int64_t>& want,
                        const std::string& where) {
  if (got == want) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(where, ": kept [", absl::StrJoin(got, ","),
                                          "], expected [", absl::StrJoin(want, ","), "]"));
}

absl::Status PolicyLevel(const SafetensorsFile& file, const KvpressCase& c,
                         const std::vector<std::vector<int64_t>>& want) {
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
  auto attn = LoadTensor(file, "prefill.attn");
  auto keys = LoadTensor(file, "prefill.k");
  if (!attn.ok()) return attn.status();
  if (!keys.ok()) return keys.status();
  const at::Tensor attn_on_device = OnCaseDevice(*attn);
  DLView attn_view(attn_on_device);
  absl::Status observed =
      FromC(attnkit_eviction_policy_observe(policy.get(), 0, attn_view, nullptr, 0));
  if (c.press == "expected_attention") {
    if (observed.code() != absl::StatusCode::kFailedPrecondition ||
        observed.message().find("rope") == std::string::npos) {
      return absl::InternalError(absl::StrCat(
          "policy level: observing attention weights should fail with FAILED_PRECONDITION naming "
          "rope, got ",
          observed.ToString()));
    }
    return absl::OkStatus();
  }
  if (!observed.ok())
    return absl::InternalError(absl::StrCat("policy level, observe: ", observed.ToString()));
  const int64_t length = c.prefill_len;
  const at::Tensor keys_on_device = OnCaseDevice(*keys);
  DLView key_view(keys_on_device);
  attnkit_kept_positions* kept = nullptr;
  if (absl::Status s =
          FromC(attnkit_eviction_policy_select(policy.get(), 0, key_view, &length, 1, &kept),
                "policy level, select");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<attnkit_kept_positions, decltype(&attnkit_kept_positions_free)> owned(
      kept, attnkit_kept_positions_free);
  const size_t rows = attnkit_kept_positions_num_rows(kept);
  if (rows != (c.per_head ? want.size() : 1)) {
    return absl::InternalError(absl::StrCat("policy level: ", rows, " kept rows"));
  }
  for (size_t h = 0; h < want.size(); ++h) {
    size_t n = 0;
    const int64_t* row = attnkit_kept_positions_row(kept, c.per_head ? h : 0, &n);
    if (absl::Status s = CompareRow(std::vector<int64_t>(row, row + n), want[h],
                                    absl::StrCat("policy level, kv head ", h));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status SessionLevel(const SafetensorsFile& file, const KvpressCase& c,
                          const std::vector<std::vector<int64_t>>& want) {
  const std::string config = absl::StrCat(
      SessionDeviceText(), "num_layers: 1 num_heads: ", c.num_heads,
      " num_kv_heads: ", c.num_kv_heads, " head_dim: ", c.head_dim, " rope { theta: ", c.rope_theta,
      " interleaved: ", c.rope_interleaved ? "true" : "false", " } eviction { ", c.textproto, " }");
  auto created = CreateSession(config);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  auto q = LoadTensor(file, "prefill.q");
  auto k = LoadTensor(file, "prefill.k");
  auto v = LoadTensor(file, "prefill.v");
  for (const auto* t : {&q, &k, &v})
    if (!t->ok()) return t->status();
  const at::Tensor qd = OnCaseDevice(*q), kd = OnCaseDevice(*k), vd = OnCaseDevice(*v);
  at::Tensor out = at::empty_like(qd);
  DLView qv(qd), kv(kd), vv(vd), ov(out);
  if (absl::Status s =
          FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov), "session level");
      !s.ok()) {
    return s;
  }
  for (int h = 0; h < c.num_kv_heads; ++h) {
    auto positions = SessionPositions(session.get(), 0, 0, h);
    if (!positions.ok()) return positions.status();
    const std::vector<int64_t>& got = *positions;
    if (absl::Status s = CompareRow(got, want[h], absl::StrCat("session level, kv head ", h));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

// ---- DMSPress (threshold eviction) over KnormPress, prompt and decode steps
// ----------------------

// kvpress's DMSPress(KnormPress(), threshold, sliding_window_size, decoding=True): every token that
// leaves the sliding window is masked when its score is below the threshold.
absl::StatusOr<std::string> DmsTextproto(const JsonValue& config) {
  if (absl::Status s =
          OnlyKeys(config, {"press", "scorer", "threshold", "sliding_window_size", "decoding"});
      !s.ok()) {
    return s;
  }
  const JsonValue* scorer = config.Find("scorer");
  if (scorer == nullptr || !scorer->is_string() || scorer->string() != "knorm") {
    return absl::InvalidArgumentError("config: scorer must be \"knorm\"");
  }
  auto threshold = ConfigNumber(config, "threshold");
  auto window = ConfigNumber(config, "sliding_window_size");
  auto decoding = Bool(config, "decoding");
  if (!threshold.ok()) return threshold.status();
  if (!window.ok()) return window.status();
  if (!decoding.ok()) return decoding.status();
  if (!*decoding) {
    return absl::InvalidArgumentError(
        "config: decoding false (prompt-only thresholds) has no attnkit counterpart");
  }
  return absl::StrCat(
      "enabled: true granularity: PER_TOKEN algorithm: KNORM per_head: true start_tokens: 0 "
      "intermediate_tokens: 0 recent_tokens: ",
      static_cast<int64_t>(*window), " score_threshold: ", absl::StrFormat("%.17g", *threshold));
}

// Per kv head, the positions whose keep_mask entry is 1.
absl::StatusOr<std::vector<std::vector<int64_t>>> MaskRows(const SafetensorsFile& file,
                                                           const std::string& name) {
  auto mask = LoadTensor(file, name);
  if (!mask.ok()) return mask.status();
  const at::Tensor m = mask->to(at::kLong).contiguous();
  std::vector<std::vector<int64_t>> rows(m.size(0));
  for (int64_t h = 0; h < m.size(0); ++h)
    for (int64_t t = 0; t < m.size(1); ++t)
      if (m[h][t].item<int64_t>() != 0) rows[h].push_back(t);
  return rows;
}

absl::Status DmsPolicyLevel(const SafetensorsFile& file, const std::string& textproto, int steps,
                            int heads, int kv_heads) {
  attnkit_eviction_policy* raw = nullptr;
  if (absl::Status s = FromC(attnkit_eviction_policy_create_from_text(
                                 textproto.data(), textproto.size(), 1, heads, kv_heads, &raw),
                             "create");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<attnkit_eviction_policy, decltype(&attnkit_eviction_policy_free)> policy(
      raw, attnkit_eviction_policy_free);
  at::Tensor all_keys;                               // [Hkv, tokens so far, d]
  std::vector<std::vector<int64_t>> held(kv_heads);  // original positions per kv head
  for (int step = -1; step < steps; ++step) {
    const std::string prefix = step < 0 ? "prefill" : absl::StrCat("step.", step);
    auto k = LoadTensor(file, prefix + ".k");
    auto want = MaskRows(file, "keep_mask." + prefix);
    if (!k.ok()) return k.status();
    if (!want.ok()) return want.status();
    const int64_t first = all_keys.defined() ? all_keys.size(1) : 0;
    all_keys = all_keys.defined() ? at::cat({all_keys, (*k)[0]}, 1) : (*k)[0];
    for (auto& row : held)
      for (int64_t t = first; t < all_keys.size(1); ++t) row.push_back(t);
    int64_t longest = 0;
    std::vector<int64_t> lengths;
    for (const auto& row : held) {
      lengths.push_back(static_cast<int64_t>(row.size()));
      longest = std::max<int64_t>(longest, row.size());
    }
    // The cache as the policy left it: each head's kept keys, zero-padded to the longest.
    at::Tensor keys = at::zeros({1, kv_heads, longest, all_keys.size(2)});
    for (int h = 0; h < kv_heads; ++h) {
      keys[0][h]
          .narrow(0, 0, lengths[h])
          .copy_(all_keys[h].index_select(0, at::tensor(held[h], at::kLong)));
    }
    const at::Tensor keys_on_device = OnCaseDevice(keys);
    DLView key_view(keys_on_device);
    attnkit_kept_positions* kept = nullptr;
    if (absl::Status s =
            FromC(attnkit_eviction_policy_select(policy.get(), 0, key_view, lengths.data(),
                                                 lengths.size(), &kept),
                  "policy level, " + prefix + " select");
        !s.ok()) {
      return s;
    }
    std::unique_ptr<attnkit_kept_positions, decltype(&attnkit_kept_positions_free)> owned(
        kept, attnkit_kept_positions_free);
    for (int h = 0; h < kv_heads; ++h) {
      size_t n = 0;
      const int64_t* row = attnkit_kept_positions_row(kept, h, &n);
      std::vector<int64_t> origin;
      for (size_t i = 0; i < n; ++i) origin.push_back(held[h][row[i]]);
      if (absl::Status s = CompareRow(origin, (*want)[h],
                                      absl::StrCat("policy level, ", prefix, ", kv head ", h));
          !s.ok()) {
        return s;
      }
      held[h] = origin;
    }
  }
  return absl::OkStatus();
}

absl::Status DmsSessionLevel(const SafetensorsFile& file, const std::string& textproto, int steps,
                             int heads, int kv_heads, int head_dim) {
  const std::string config = absl::StrCat(SessionDeviceText(), "num_layers: 1 num_heads: ", heads,
                                          " num_kv_heads: ", kv_heads, " head_dim: ", head_dim,
                                          " eviction { ", textproto, " }");
  auto created = CreateSession(config);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  for (int step = -1; step < steps; ++step) {
    const std::string prefix = step < 0 ? "prefill" : absl::StrCat("step.", step);
    auto q = LoadTensor(file, prefix + ".q");
    auto k = LoadTensor(file, prefix + ".k");
    auto v = LoadTensor(file, prefix + ".v");
    auto want = MaskRows(file, "keep_mask." + prefix);
    for (const auto* t : {&q, &k, &v})
      if (!t->ok()) return t->status();
    if (!want.ok()) return want.status();
    const at::Tensor qd = OnCaseDevice(*q), kd = OnCaseDevice(*k), vd = OnCaseDevice(*v);
    at::Tensor out = at::empty_like(qd);
    DLView qv(qd), kv(kd), vv(vd), ov(out);
    if (absl::Status s = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov),
                               "session level, " + prefix);
        !s.ok()) {
      return s;
    }
    for (int h = 0; h < kv_heads; ++h) {
      auto positions = SessionPositions(session.get(), 0, 0, h);
      if (!positions.ok()) return positions.status();
      const std::vector<int64_t>& got = *positions;
      if (absl::Status s =
              CompareRow(got, (*want)[h], absl::StrCat("session level, ", prefix, ", kv head ", h));
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status RunDmsCase(const SafetensorsFile& file, const JsonValue& config) {
  auto textproto = DmsTextproto(config);
  if (!textproto.ok()) return textproto.status();
  int steps = 0, heads = 0, kv_heads = 0, head_dim = 0;
  for (auto [key, field] : {std::pair<const char*, int*>{"num_steps", &steps},
                            {"num_heads", &heads},
                            {"num_kv_heads", &kv_heads},
                            {"head_dim", &head_dim}}) {
    auto v = MetadataInt(file, key);
    if (!v.ok()) return v.status();
    *field = static_cast<int>(*v);
  }
  if (absl::Status s = DmsPolicyLevel(file, *textproto, steps, heads, kv_heads); !s.ok()) return s;
  return DmsSessionLevel(file, *textproto, steps, heads, kv_heads, head_dim);
}

absl::Status RunKvpressCase(const SafetensorsFile& file, const JsonValue& config) {
  const JsonValue* press = config.Find("press");
  if (press != nullptr && press->is_string() && press->string() == "dms") {
    return RunDmsCase(file, config);
  }
  auto c = ReadCase(file, config);
  if (!c.ok()) return c.status();
  auto expected = LoadTensor(file, "kept.prefill");
  if (!expected.ok()) return expected.status();
  if (expected->dim() != 2 || expected->size(0) != c->num_kv_heads) {
    return absl::InvalidArgumentError("kept.prefill: expected [num_kv_heads, kept]");
  }
  const auto want = ExpectedRows(*expected);
  if (absl::Status s = PolicyLevel(file, *c, want); !s.ok()) return s;
  return SessionLevel(file, *c, want);
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("kvpress", RunKvpressCase);

}  // namespace attnkit::conformance
