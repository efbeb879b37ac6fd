#include "attnkit/attnkit_eviction.h"

#include <algorithm>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "capi_internal.h"

struct attnkit_eviction_policy {
  std::unique_ptr<attnkit::EvictionPolicy> policy;
  int32_t num_heads;
  int32_t num_kv_heads;
};

struct attnkit_kept_positions {
  attnkit::KeptPositions rows;
};

using attnkit::capi::FromDLPack;
using attnkit::capi::Guard;
using attnkit::capi::GuardValue;
using attnkit::capi::GuardVoid;
using attnkit::capi::TensorSpec;

namespace {

absl::Status Create(absl::string_view data, bool text, int32_t num_layers, int32_t num_heads,
                    int32_t num_kv_heads, attnkit_eviction_policy** out) {
  ATTNKIT_CHECK_ARG(out);
  *out = nullptr;
  auto options = attnkit::ParseEvictionConfig(data, text);
  if (!options.ok()) return options.status();
  if (options->cache_merging) {
    return absl::InvalidArgumentError(
        "cache_merging: CaM writes merged values into the cache, which a policy object does not "
        "hold; configure it on a session (attnkit_session_create)");
  }
  auto policy = attnkit::EvictionPolicy::Create(*options, num_layers, num_heads, num_kv_heads);
  if (!policy.ok()) return policy.status();
  *out =
      attnkit::capi::Adopt(new attnkit_eviction_policy{std::move(*policy), num_heads, num_kv_heads},
                           attnkit::capi::HandleKind::kEvictionPolicy);
  return absl::OkStatus();
}

// The caller's lengths, after their count (checked before anything is read or allocated: 0, 1 or
// num_kv_heads; the policy says which it takes).
absl::StatusOr<std::vector<int64_t>> Lengths(const int64_t* lengths, size_t num_lengths,
                                             int32_t num_kv_heads) {
  if (lengths == nullptr && num_lengths > 0) {
    return absl::InvalidArgumentError("lengths: must not be NULL when num_lengths > 0");
  }
  if (num_lengths > 1 && num_lengths != static_cast<size_t>(num_kv_heads)) {
    return absl::InvalidArgumentError(absl::StrCat("lengths: expected 1 or num_kv_heads (",
                                                   num_kv_heads, ") entries, got ", num_lengths));
  }
  return std::vector<int64_t>(lengths, lengths + num_lengths);
}

}  // namespace

extern "C" {

attnkit_status* attnkit_eviction_policy_create(const void* config, size_t size, int32_t num_layers,
                                               int32_t num_heads, int32_t num_kv_heads,
                                               attnkit_eviction_policy** out) {
  return Guard(__func__, [&]() -> absl::Status {
    if (config == nullptr && size > 0)
      return absl::InvalidArgumentError("config: must not be NULL");
    return Create(attnkit::capi::ByteView(config, size), false, num_layers, num_heads, num_kv_heads,
                  out);
  });
}

attnkit_status* attnkit_eviction_policy_create_from_text(const char* text, size_t size,
                                                         int32_t num_layers, int32_t num_heads,
                                                         int32_t num_kv_heads,
                                                         attnkit_eviction_policy** out) {
  return Guard(__func__, [&]() -> absl::Status {
    if (text == nullptr && size > 0) return absl::InvalidArgumentError("text: must not be NULL");
    return Create(attnkit::capi::ByteView(text, size), true, num_layers, num_heads, num_kv_heads,
                  out);
  });
}

void attnkit_eviction_policy_free(attnkit_eviction_policy* policy) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(policy, attnkit::capi::HandleKind::kEvictionPolicy))
      delete policy;
  });
}

attnkit_status* attnkit_eviction_policy_observe(attnkit_eviction_policy* policy, int32_t layer,
                                                const DLTensor* attention, const int64_t* lengths,
                                                size_t num_lengths) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(policy, kEvictionPolicy);
    TensorSpec spec{"attention"};
    spec.rank = 4;
    auto weights = FromDLPack(attention, spec);
    if (!weights.ok()) return weights.status();
    if (weights->size(1) != policy->num_heads || weights->size(0) < 1 || weights->size(2) < 1 ||
        weights->size(3) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention: expected [batch >= 1, num_heads=", policy->num_heads,
                       ", queries >= 1, cache tokens >= 1], got shape ",
                       attnkit::capi::ShapeString(weights->sizes())));
    }
    auto lens = Lengths(lengths, num_lengths, policy->num_kv_heads);
    if (!lens.ok()) return lens.status();
    return policy->policy->ObserveWeights(layer, *weights, *lens);
  });
}

attnkit_status* attnkit_eviction_policy_select(attnkit_eviction_policy* policy, int32_t layer,
                                               const DLTensor* keys, const int64_t* lengths,
                                               size_t num_lengths, attnkit_kept_positions** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(policy, kEvictionPolicy);
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto lens = Lengths(lengths, num_lengths, policy->num_kv_heads);
    if (!lens.ok()) return lens.status();
    at::Tensor key_tensor;
    if (keys != nullptr) {
      TensorSpec spec{"keys"};
      auto k = FromDLPack(keys, spec);
      if (!k.ok()) return k.status();
      key_tensor = *k;
      if (key_tensor.dim() == 4) {
        if (key_tensor.size(0) != 1) {
          return absl::InvalidArgumentError(
              absl::StrCat("keys: a rank-4 tensor must have batch 1, got shape ",
                           attnkit::capi::ShapeString(key_tensor.sizes())));
        }
        key_tensor = key_tensor.select(0, 0);
      } else if (key_tensor.dim() != 3) {
        return absl::InvalidArgumentError(
            absl::StrCat("keys: expected [num_kv_heads, cache_tokens, head_dim], got shape ",
                         attnkit::capi::ShapeString(key_tensor.sizes())));
      }
      // The shape before anything is read: the kv heads, a head_dim, and (a buffer with room
      // for more tokens is fine) only the tokens the lengths cover are read.
      if (key_tensor.size(0) != policy->num_kv_heads || key_tensor.size(2) < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("keys: expected [num_kv_heads=", policy->num_kv_heads,
                         ", cache_tokens, head_dim >= 1], got shape ",
                         attnkit::capi::ShapeString(key_tensor.sizes())));
      }
      int64_t longest = 0;
      for (int64_t len : *lens) longest = std::max(longest, len);
      if (longest >= 0 && key_tensor.size(1) > longest) {
        key_tensor = key_tensor.narrow(1, 0, longest);
      }
      // The session checks its inputs before they reach the cache; keys handed in here are
      // checked the same way (EvictionPolicy::Select trusts them).
      if (key_tensor.numel() > 0 && !at::isfinite(key_tensor).all().item<bool>()) {
        return absl::InvalidArgumentError("keys: contains NaN or infinity");
      }
    }
    auto kept = policy->policy->Select(layer, *lens, key_tensor);
    if (!kept.ok()) return kept.status();
    *out = attnkit::capi::Adopt(new attnkit_kept_positions{std::move(*kept)},
                                attnkit::capi::HandleKind::kKeptPositions);
    return absl::OkStatus();
  });
}

int32_t attnkit_eviction_policy_needs_keys(const attnkit_eviction_policy* policy) {
  return GuardValue<int32_t>(0, [&] {
    return attnkit::capi::IsLiveHandle(policy, attnkit::capi::HandleKind::kEvictionPolicy) &&
                   policy->policy->needs().keys
               ? 1
               : 0;
  });
}

int32_t attnkit_eviction_policy_per_head(const attnkit_eviction_policy* policy) {
  return GuardValue<int32_t>(0, [&] {
    return attnkit::capi::IsLiveHandle(policy, attnkit::capi::HandleKind::kEvictionPolicy) &&
                   policy->policy->per_head()
               ? 1
               : 0;
  });
}

attnkit_status* attnkit_eviction_policy_layer_budget(const attnkit_eviction_policy* policy,
                                                     int32_t layer, int64_t* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(policy, kEvictionPolicy);
    ATTNKIT_CHECK_ARG(out);
    if (layer < 0 || layer >= policy->policy->num_layers()) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer: must be in [0, ", policy->policy->num_layers(), "), got ", layer));
    }
    *out = policy->policy->LayerBudget(layer);
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_eviction_policy_reset(attnkit_eviction_policy* policy) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(policy, kEvictionPolicy);
    policy->policy->Reset();
    return absl::OkStatus();
  });
}

size_t attnkit_kept_positions_num_rows(const attnkit_kept_positions* kept) {
  return GuardValue<size_t>(0, [&] {
    return !attnkit::capi::IsLiveHandle(kept, attnkit::capi::HandleKind::kKeptPositions)
               ? 0
               : kept->rows.size();
  });
}

const int64_t* attnkit_kept_positions_row(const attnkit_kept_positions* kept, size_t row,
                                          size_t* size) {
  return GuardValue<const int64_t*>(nullptr, [&]() -> const int64_t* {
    if (size != nullptr) *size = 0;
    if (!attnkit::capi::IsLiveHandle(kept, attnkit::capi::HandleKind::kKeptPositions) ||
        row >= kept->rows.size()) {
      return nullptr;
    }
    if (size != nullptr) *size = kept->rows[row].size();
    return kept->rows[row].data();
  });
}

void attnkit_kept_positions_free(attnkit_kept_positions* kept) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(kept, attnkit::capi::HandleKind::kKeptPositions)) delete kept;
  });
}

}  // extern "C"
