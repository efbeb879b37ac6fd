#include "config/kv_plan.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "config/algorithms.h"
#include "eviction/budgets.h"
#include "session/page_format.h"

namespace attnkit {
namespace {

using kernels::RowFormat;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The host store's layout (kernels::HostLayoutOf, which the store builds its pools from): main
// pages of main_page tokens in the key and value formats; with a residual window (or KIVI keys,
// which collect a group's tokens there first) a second pool of page_size-token pages in the
// session dtype.
struct Layout {
  bool plain = true;
  bool channel_keys = false;
  int64_t page = 16, main_page = 16, residual_tokens = 0;
  int64_t main_page_bytes = 0, residual_page_bytes = 0;  // keys and values together
};

Layout LayoutOf(const SessionOptions& o) {
  const kernels::HostPageLayout h = kernels::HostLayoutOf(o);
  Layout l;
  l.page = h.page_size;
  l.residual_tokens = h.residual_tokens;
  l.channel_keys = h.channel_keys;
  l.plain = h.plain;
  l.main_page = h.main_page;
  const int64_t session_page = kernels::PageBytes(h.session, o.page_size, o.head_dim, o.head_dim);
  if (l.plain) {
    l.main_page_bytes = 2 * session_page;
  } else {
    l.main_page_bytes = kernels::PageBytes(h.keys, l.main_page, h.key_dim, h.group) +
                        kernels::PageBytes(h.values, l.main_page, o.head_dim, h.group);
    if (h.residual_pool()) l.residual_page_bytes = 2 * session_page;
  }
  return l;
}

// One (sequence, kv head) cache: tokens in the main pages and in the residual window. Where the
// plan is not exact these are upper bounds of each.
struct Head {
  int64_t main = 0, residual = 0;
  int64_t length() const { return main + residual; }
};

// After appending n tokens to an empty cache (HostStore::Append).
Head Append(const Layout& l, int64_t n) {
  if (l.plain) return {n, 0};
  const int64_t beyond = std::max<int64_t>(0, n - l.residual_tokens);
  const int64_t overflow = l.channel_keys ? beyond / l.main_page * l.main_page : beyond;
  return {overflow, n - overflow};
}

int64_t Bytes(const Layout& l, const Head& h) {
  return CeilDiv(h.main, l.main_page) * l.main_page_bytes +
         CeilDiv(h.residual, l.page) * l.residual_page_bytes;
}

// Keeps the first `first` and the last `last` tokens (cache order).
Head KeepEnds(const Head& h, int64_t first, int64_t last) {
  if (first + last >= h.length()) return h;
  Head out;
  out.residual = std::min(last, h.residual) + std::max<int64_t>(0, first - h.main);
  out.main = first + last - out.residual;
  return out;
}

// Upper bounds after keeping at most `kept` tokens, wherever they lie.
Head KeepAtMost(const Head& h, int64_t kept) {
  return {std::min(kept, h.main), std::min(kept, h.residual)};
}

// What SelectRow keeps of a cache of `len` tokens (eviction/selection.cc): the start units, the
// intermediate units chosen by score among the evictable ones, and the last `recent` units of the
// tokens after the start area (the last of them partial when the group does not divide them).
// Returns the kept count and the first position of the recent area.
struct TopScoresKeep {
  int64_t kept = 0, recent_from = 0;
};
TopScoresKeep TopScores(const EvictionOptions& o, int64_t len, int64_t start, int64_t intermediate,
                        int64_t recent) {
  const int64_t g = o.group_size;
  const bool per_group = o.per_group && g > 1;
  const int64_t unit = per_group ? g : 1;
  const int64_t s = start / g, i = intermediate / g, r = recent / g;
  const int64_t scores = std::max<int64_t>(0, len - start);
  const int64_t total = per_group ? CeilDiv(scores, g) : scores;
  const int64_t evictable = std::max<int64_t>(total - r, 0);
  TopScoresKeep k;
  k.recent_from = (s + evictable) * unit;
  k.kept = std::min(len, s * unit) + (i > 0 ? std::min(i, evictable) : 0) * unit +
           std::max<int64_t>(0, len - k.recent_from);
  return k;
}

std::string FormatName(KvDataType t) { return KvDataTypeName(t); }

}  // namespace

int64_t KvPageBytes(const SessionOptions& o, KvDataType type, bool keys) {
  const int group = o.kv_format.quantized() ? o.kv_group_size() : o.head_dim;
  if (type == KvDataType::kDefault) type = keys ? o.key_type() : o.value_type();
  const RowFormat f = kernels::FormatOf(type, keys);
  const int page = kernels::IsPerChannel(f) ? group : o.page_size;
  return kernels::PageBytes(f, page, o.head_dim, group);
}

absl::StatusOr<KvPlan> PlanKvBytes(const SessionOptions& o, int64_t tokens) {
  if (auto status = ValidateSessionOptions(o); !status.ok()) return status;
  if (tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("tokens: must be at least 1, got ", tokens));
  }
  const Layout layout = LayoutOf(o);
  const EvictionOptions& e = o.eviction;
  const int H = o.num_kv_heads;
  KvPlan plan;
  plan.tokens = tokens;
  plan.batch = o.batch_size;
  plan.notes.push_back(absl::StrCat(
      "pages: ", o.page_size, " tokens; keys ", FormatName(o.key_type()), ", values ",
      FormatName(o.value_type()),
      o.kv_format.quantized() ? absl::StrCat(" (quantization group ", o.kv_group_size(), ")") : "",
      layout.plain ? absl::StrCat("; ", layout.main_page_bytes, " bytes a page (keys and values)")
                   : absl::StrCat("; main pages of ", layout.main_page, " tokens, ",
                                  layout.main_page_bytes, " bytes (keys and values)"),
      layout.residual_page_bytes > 0
          ? absl::StrCat("; residual window ", layout.residual_tokens,
                         " tokens in the session dtype",
                         layout.channel_keys ? " (plus a key group's tokens being collected)" : "",
                         ", pages of ", layout.residual_page_bytes, " bytes")
          : ""));

  const Head full = Append(layout, tokens);
  const int64_t full_head_bytes = Bytes(layout, full);

  // Whether the prompt call evicts at all (Session::ObserveAndEvict).
  bool evicts = e.enabled;
  if (evicts && e.defer_eviction_to_decode && tokens > 1) {
    evicts = false;
    plan.notes.push_back("eviction deferred to decode: the prompt is kept whole");
  }
  if (evicts && tokens == 1 && e.interval_steps > 1) {
    evicts = false;
    plan.notes.push_back(absl::StrCat("a one-token call is a decode step: eviction every ",
                                      e.interval_steps, " of them"));
  }
  const auto* algorithm = FindEvictionAlgorithm(e.algorithm);
  const bool adakv = e.enabled && FindAllocator(e.allocator)->Has(kAllocatorPerHead);
  const bool streaming_selection =
      algorithm != nullptr && algorithm->selection == EvictionSelection::kStartAndNewest;
  const HeadSplitOptions& split = o.head_split;
  if (e.enabled) {
    plan.notes.push_back(absl::StrCat(
        "eviction: ", EvictionAlgorithmName(e.algorithm), ", start ", e.start_tokens,
        " + intermediate ",
        e.ratio_mode() ? absl::StrCat("(ratio ", e.compression_ratio, ")")
                       : absl::StrCat(e.intermediate_tokens),
        " + recent ", e.recent_tokens, " tokens per kv head",
        e.allocator == BudgetAllocator::kPyramidKV ? ", PyramidKV budgets per layer" : "",
        adakv ? ", AdaKV: per-head split decided at run time" : "",
        e.threshold_eviction ? ", threshold eviction: kept tokens decided at run time" : "",
        e.allocator == BudgetAllocator::kCake
            ? ", CAKE: layer budgets decided at run time (their sum is the uniform one's)"
            : ""));
  }
  if (split.enabled()) {
    plan.notes.push_back(absl::StrCat("head split: streaming heads keep ", split.sink_tokens,
                                      " sink + ", split.recent_tokens, " recent tokens"));
  }

  for (int layer = 0; layer < o.num_layers; ++layer) {
    KvPlanLayer out;
    out.full_head_bytes.assign(H, full_head_bytes);
    out.full_bytes = full_head_bytes * H * o.batch_size;
    std::vector<Head> heads(H, full);
    std::vector<bool> exact(H, true);
    bool layer_runtime = false;  // AdaKV: only the layer's total tokens are known
    int64_t layer_tokens = 0;    // AdaKV: the layer's budget over its kv heads
    if (evicts) {
      const int64_t intermediate =
          e.ratio_mode()
              ? eviction::RatioIntermediate(e, tokens, layer, o.num_layers)
              : eviction::IntermediateBudget(e, e.intermediate_tokens, layer, o.num_layers);
      const int64_t areas = e.start_tokens + e.recent_tokens;
      const int64_t limit = e.threshold_eviction ? areas : areas + intermediate;
      if (tokens > limit && e.allocator == BudgetAllocator::kCake) {
        // A layer's share follows its prompt's attention: at most the whole prompt.
        for (int h = 0; h < H; ++h) {
          heads[h] = KeepAtMost(full, tokens);
          exact[h] = false;
        }
      } else if (tokens > limit) {
        if (e.threshold_eviction) {
          const int64_t cap = intermediate > 0 ? limit + intermediate : tokens;
          for (int h = 0; h < H; ++h) {
            heads[h] = KeepAtMost(full, std::min(tokens, cap));
            exact[h] = false;
          }
        } else if (streaming_selection) {
          for (int h = 0; h < H; ++h) {
            heads[h] = KeepEnds(full, e.start_tokens, intermediate + e.recent_tokens);
          }
        } else if (adakv) {
          layer_runtime = true;
          layer_tokens = static_cast<int64_t>(H) * limit;
        } else {
          const TopScoresKeep k =
              TopScores(e, tokens, e.start_tokens, intermediate, e.recent_tokens);
          for (int h = 0; h < H; ++h) {
            if (k.recent_from <= full.main) {
              // The residual window lies in the recent area: all of it stays.
              heads[h] = {k.kept - full.residual, full.residual};
            } else {
              heads[h] = KeepAtMost(full, k.kept);
              exact[h] = false;
            }
          }
        }
      }
    }
    if (layer_runtime) {
      // Each kv head keeps at most its prompt, the layer at most its budget: bound the pages of
      // each pool by both.
      Head sum{std::min(layer_tokens, H * full.main), std::min(layer_tokens, H * full.residual)};
      int64_t main_pages =
          std::min<int64_t>(H * CeilDiv(full.main, layout.main_page),
                            (sum.main + H * (layout.main_page - 1)) / layout.main_page);
      int64_t residual_pages =
          std::min<int64_t>(H * CeilDiv(full.residual, layout.page),
                            (sum.residual + H * (layout.page - 1)) / layout.page);
      out.config_bytes =
          (main_pages * layout.main_page_bytes + residual_pages * layout.residual_page_bytes) *
          o.batch_size;
      out.exact = false;
      out.per_head_runtime = true;
    } else {
      for (int h = 0; h < H; ++h) {
        if (split.Streams(layer, h, H)) {
          heads[h] = exact[h] ? KeepEnds(heads[h], split.sink_tokens, split.recent_tokens)
                              : KeepAtMost(heads[h], split.sink_tokens + split.recent_tokens);
        }
        const int64_t bytes = Bytes(layout, heads[h]);
        out.config_head_bytes.push_back(bytes);
        out.config_head_tokens.push_back(exact[h] ? heads[h].length()
                                                  : std::min(tokens, heads[h].length()));
        out.config_bytes += bytes * o.batch_size;
        if (!exact[h]) out.exact = false;
      }
    }
    plan.full_bytes += out.full_bytes;
    plan.config_bytes += out.config_bytes;
    if (!out.exact) plan.exact = false;
    plan.layers.push_back(std::move(out));
  }
  return plan;
}

}  // namespace attnkit
