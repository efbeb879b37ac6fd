#include "eviction_config.h"

#include <map>

#include "absl/strings/str_cat.h"

namespace attnkit::conformance {
namespace {

absl::StatusOr<std::string> Enum(const JsonValue& config, const char* key,
                                 const std::map<std::string, std::string>& values,
                                 bool null_allowed) {
  const JsonValue* v = config.Find(key);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat("config: missing ", key));
  if (v->is_null() && null_allowed) return std::string();
  if (!v->is_string() || values.count(v->string()) == 0) {
    return absl::InvalidArgumentError(absl::StrCat("config: unknown ", key, " value"));
  }
  return values.at(v->string());
}

absl::StatusOr<int64_t> Int(const JsonValue& config, const char* key, bool null_allowed) {
  const JsonValue* v = config.Find(key);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat("config: missing ", key));
  if (v->is_null() && null_allowed) return 0;
  return JsonInt(*v, key);
}

}  // namespace

absl::StatusOr<std::string> EvictionTextproto(const JsonValue& config) {
  static const char* kKnown[] = {"algorithm",         "granularity",    "group_size",
                                 "start_tokens",      "recent_tokens",  "intermediate_tokens",
                                 "refined_algorithm", "refined_tokens", "kvcrush_anchor",
                                 "normalize_scores",  "window_size"};
  for (const auto& [key, value] : config.object()) {
    bool known = false;
    for (const char* k : kKnown) known |= key == k;
    if (!known) return absl::InvalidArgumentError(absl::StrCat("config: unknown key ", key));
  }
  auto algorithm =
      Enum(config, "algorithm", {{"h2o", "H2O"}, {"snapkv", "SNAPKV"}, {"rkv", "RKV"}}, false);
  auto granularity =
      Enum(config, "granularity", {{"per_token", "PER_TOKEN"}, {"per_group", "PER_GROUP"}}, false);
  auto refined =
      Enum(config, "refined_algorithm", {{"kvcrush", "KVCRUSH"}, {"diversekv", "DIVERSEKV"}}, true);
  auto anchor = Enum(config, "kvcrush_anchor",
                     {{"alternate", "ALTERNATE"},
                      {"zeros", "ZEROS"},
                      {"ones", "ONES"},
                      {"mean", "MEAN"},
                      {"random", "RANDOM"}},
                     false);
  for (const auto* s : {&algorithm, &granularity, &refined, &anchor})
    if (!s->ok()) return s->status();
  std::string out =
      absl::StrCat("enabled: true\nalgorithm: ", *algorithm, "\ngranularity: ", *granularity, "\n");
  for (const char* key : {"group_size", "start_tokens", "recent_tokens", "intermediate_tokens"}) {
    auto v = Int(config, key, false);
    if (!v.ok()) return v.status();
    absl::StrAppend(&out, key, ": ", *v, "\n");
  }
  auto window = Int(config, "window_size", true);
  if (!window.ok()) return window.status();
  if (*window != 0) absl::StrAppend(&out, "window_size: ", *window, "\n");
  const JsonValue* normalize = config.Find("normalize_scores");
  if (normalize == nullptr || !normalize->is_bool()) {
    return absl::InvalidArgumentError("config: normalize_scores must be a bool");
  }
  absl::StrAppend(&out, "normalize_scores: ", normalize->bool_value() ? "true" : "false", "\n");
  auto refined_tokens = Int(config, "refined_tokens", false);
  if (!refined_tokens.ok()) return refined_tokens.status();
  if (!refined->empty()) {
    absl::StrAppend(&out, "refined { algorithm: ", *refined, " refined_tokens: ", *refined_tokens,
                    " kvcrush_anchor: ", *anchor, " }\n");
  }
  return out;
}

}  // namespace attnkit::conformance
