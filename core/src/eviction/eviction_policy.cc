#include "attnkit/eviction/eviction_policy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "config/algorithms.h"
#include "eviction/budgets.h"
#include "eviction/cache_merging.h"
#include "eviction/scorers.h"
#include "eviction/selection.h"
#include "util/archive.h"
#include "util/status_macros.h"

namespace attnkit {
namespace {

using eviction::IntermediateBudgets;

using eviction::Areas;
using eviction::HeadLayout;
using eviction::LayerScores;

class EvictionPolicyImpl : public EvictionPolicy {
 public:
  EvictionPolicyImpl(const EvictionOptions& options, int num_layers, const HeadLayout& layout)
      : options_(options),
        algorithm_(*FindEvictionAlgorithm(options.algorithm)),
        refinement_(*FindRefinement(options.refined_algorithm)),
        allocator_(*FindAllocator(options.allocator)),
        layout_(layout),
        scorer_(eviction::MakeScorer(options, layout)),
        layers_(num_layers),
        intermediate_(IntermediateBudgets(options, num_layers)),
        tokens_seen_(num_layers, 0),
        rng_(options.seed),
        cake_budget_(options.allocator == BudgetAllocator::kCake ? num_layers : 0, -1) {}

  const EvictionOptions& options() const override { return options_; }
  int num_layers() const override { return static_cast<int>(layers_.size()); }
  ObservationNeeds needs() const override {
    ObservationNeeds n = scorer_->needs();
    if (refinement_.Has(kRefinementNeedsKeys)) n.keys = true;
    if (options_.cache_merging) {
      n.values = true;
      n.decode_column_sums = true;
    }
    return n;
  }
  bool per_head() const override { return layout_.per_head; }
  int64_t LayerBudget(int layer) const override {
    if (options_.threshold_eviction && options_.intermediate_tokens == 0) {
      return std::numeric_limits<int64_t>::max();  // no cap: scores decide
    }
    return options_.start_tokens + Intermediate(layer) + options_.recent_tokens;
  }

  void SetTokensSeen(int layer, int64_t tokens_seen) override {
    if (layer < 0 || layer >= static_cast<int>(layers_.size())) return;
    tokens_seen_[layer] = tokens_seen;
    host_counts_ = true;
  }

  absl::Status Observe(int layer, const Observation& obs) override {
    if (absl::Status s = CheckLayer(layer); !s.ok()) return s;
    if (options_.cache_merging) ATTNKIT_RETURN_IF_ERROR(ObserveMerge(layers_[layer], obs));
    if (obs.merge_only) return absl::OkStatus();
    const at::Tensor& any = obs.window_rows.defined() ? obs.window_rows : obs.all_queries_sum;
    const ObservationNeeds n = scorer_->needs();
    if (n.queries) return scorer_->Observe(layers_[layer], obs, {});  // no attention read
    if (n.window_rows == 0 && !n.all_queries_sum && !any.defined()) {
      return absl::OkStatus();  // position- or key-based scorers learn nothing from attention
    }
    std::vector<int64_t> lengths = obs.lengths;
    if (lengths.empty() && any.defined()) lengths.assign(1, any.size(-1));
    for (size_t i = 0; any.defined() && i < lengths.size(); ++i) {
      if (lengths[i] > any.size(-1)) {
        return absl::InvalidArgumentError(absl::StrCat("lengths[", i, "]: ", lengths[i],
                                                       " is larger than the observation's ",
                                                       any.size(-1), " cache tokens"));
      }
    }
    auto rows = RowLengths(lengths);
    if (!rows.ok()) return rows.status();
    const bool had_preference = layers_[layer].has_preference;
    ATTNKIT_RETURN_IF_ERROR(scorer_->Observe(layers_[layer], obs, *rows));
    if (!cake_budget_.empty() && !had_preference && layers_[layer].has_preference) {
      AllocateCake(layer, obs.window_rows.size(-1));
    }
    if (!cake_budget_.empty() && cake_budget_[layer] < 0 && obs.call_queries == 1) {
      // Decoding with no share decided (a prompt of at most cache size + window tokens):
      // CAKE's decoding cache keeps the configured key size.
      cake_budget_[layer] = options_.intermediate_tokens;
    }
    return absl::OkStatus();
  }

  std::vector<int> TakeCascade() override { return std::move(cascade_); }

  bool OverBudget(int layer, const std::vector<int64_t>& lengths) const override {
    if (layer < 0 || layer >= static_cast<int>(layers_.size())) return false;
    // Threshold eviction looks at every token between the areas after every call; ratio mode
    // compares with the budget for the tokens seen.
    const int64_t limit =
        options_.threshold_eviction ? int64_t{options_.start_tokens} + options_.recent_tokens
        : options_.ratio_mode()
            ? options_.start_tokens + Intermediate(layer, TokensSeen(layer, lengths)) +
                  options_.recent_tokens
            : LayerBudget(layer);
    for (size_t r = 0; r < lengths.size(); ++r) {
      const bool streams = lengths.size() > 1 && Streams(layer, static_cast<int>(r));
      if (lengths[r] > (streams ? StreamedTokens() : limit)) return true;
    }
    return false;
  }

  using EvictionPolicy::Select;
  absl::StatusOr<KeptPositions> Select(int layer, const std::vector<int64_t>& lengths,
                                       const at::Tensor& keys, const at::Tensor& values) override {
    if (absl::Status s = CheckLayer(layer); !s.ok()) return s;
    auto rows_or = RowLengths(lengths);
    if (!rows_or.ok()) return rows_or.status();
    const std::vector<int64_t>& rows = *rows_or;
    tokens_seen_[layer] = TokensSeen(layer, rows);  // what LayerBudget() reports from now on
    merged_.clear();
    KeptPositions kept(rows.size());
    if (!OverBudget(layer, rows)) {
      for (size_t r = 0; r < rows.size(); ++r) {
        kept[r].resize(rows[r]);
        for (int64_t p = 0; p < rows[r]; ++p) kept[r][p] = p;
      }
      return kept;
    }
    if (needs().keys) {
      if (!keys.defined() || keys.dim() != 3 || keys.size(0) != layout_.num_kv_heads ||
          keys.size(1) < *std::max_element(rows.begin(), rows.end())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "keys: ", algorithm_.name,
            refinement_.Has(kRefinementNeedsKeys) ? absl::StrCat(" with ", refinement_.name) : "",
            " needs the cached keys [num_kv_heads=", layout_.num_kv_heads,
            ", cache tokens, head_dim]"));
      }
    }
    if (needs().values) {
      if (!values.defined() || values.dim() != 3 || values.size(0) != layout_.num_kv_heads ||
          values.size(1) < *std::max_element(rows.begin(), rows.end())) {
        return absl::InvalidArgumentError(
            absl::StrCat("values: ", algorithm_.name, " needs the cached values [num_kv_heads=",
                         layout_.num_kv_heads, ", cache tokens, head_dim]"));
      }
    }
    const Areas areas{options_.start_tokens, Intermediate(layer), options_.recent_tokens};
    LayerScores& state = layers_[layer];
    if (algorithm_.selection == EvictionSelection::kStartAndNewest) {
      for (size_t r = 0; r < rows.size(); ++r) kept[r] = eviction::SelectStreaming(rows[r], areas);
      return kept;
    }
    auto scores = scorer_->Scores(state, rows, keys, values);
    if (!scores.ok()) return scores.status();
    if (options_.threshold_eviction) {
      for (size_t r = 0; r < rows.size(); ++r) {
        kept[r] = eviction::SelectThreshold((*scores)[r], rows[r], areas, options_.score_threshold);
      }
    } else if (allocator_.Has(kAllocatorPerHead)) {
      kept = eviction::SelectAdaKV(*scores, rows, areas, options_);
    } else {
      for (size_t r = 0; r < rows.size(); ++r) {
        if (rows[r] <= LayerBudget(layer)) {
          kept[r].resize(rows[r]);
          for (int64_t p = 0; p < rows[r]; ++p) kept[r][p] = p;
          continue;
        }
        at::Tensor row_keys = keys;
        kept[r] = eviction::SelectRow((*scores)[r], rows[r], areas, options_, row_keys, rng_);
      }
    }
    for (size_t r = 0; r < rows.size(); ++r) {
      if (!Streams(layer, static_cast<int>(r))) continue;
      // A streaming head keeps its first and last tokens, whatever its scores.
      kept[r].clear();
      const int64_t n = rows[r], sink = options_.streaming_sink;
      for (int64_t p = 0; p < n; ++p) {
        if (n <= StreamedTokens() || p < sink || p >= n - options_.streaming_recent) {
          kept[r].push_back(p);
        }
      }
    }
    if (options_.cache_merging) Merge(layer, *scores, rows, kept, values);
    scorer_->Compact(state, kept);
    return kept;
  }

  std::vector<MergedValues> TakeMergedValues() override { return std::move(merged_); }

  void Reset() override {
    for (auto& layer : layers_) layer = LayerScores();
    merged_.clear();
    std::fill(cake_budget_.begin(), cake_budget_.end(), -1);
    cascade_.clear();
    std::fill(tokens_seen_.begin(), tokens_seen_.end(), 0);
    rng_.seed(options_.seed);
  }

  std::string SaveState() const override {
    util::ArchiveWriter w;
    w.I64(static_cast<int64_t>(layers_.size()));
    w.I64(layout_.rows());
    for (const LayerScores& state : layers_) {
      w.Bool(state.observed);
      const std::vector<std::vector<double>> scores = scorer_->HostScores(state);
      for (const auto* rows : {&scores, &state.counters}) {
        w.I64(static_cast<int64_t>(rows->size()));
        for (const std::vector<double>& row : *rows) w.Doubles(row);
      }
      w.Tensor(state.window);
      w.Tensor(state.query_sum);
      w.Tensor(state.query_outer);
      w.I64(state.query_count);
      w.I64(state.next_position);
    }
    w.Int64s(tokens_seen_);
    w.Bool(host_counts_);
    std::ostringstream rng;
    rng << rng_;
    w.Bytes(rng.str());
    if (options_.cache_merging) {  // only then: the bytes of other policies stay as they were
      for (const LayerScores& state : layers_) {
        w.Tensor(state.merge_attention);
        w.I64(state.merge_steps);
      }
    }
    if (options_.algorithm == EvictionAlgorithm::kCake) {  // likewise
      for (const LayerScores& state : layers_) {
        w.Bool(state.has_preference);
        w.F64(state.preference);
      }
      w.Int64s(cake_budget_);
    }
    return std::move(w.data());
  }

  absl::Status LoadState(absl::string_view bytes) override {
    util::ArchiveReader r(bytes);
    const int64_t num_layers = r.I64("policy layers"), rows = r.I64("policy rows");
    if (r.ok() && (num_layers != static_cast<int64_t>(layers_.size()) || rows != layout_.rows())) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob: the saved policy has ", num_layers, " layers of ", rows,
                       " score rows; this one has ", layers_.size(), " of ", layout_.rows()));
    }
    std::vector<LayerScores> layers(layers_.size());
    for (size_t l = 0; l < layers.size() && r.ok(); ++l) {
      LayerScores& state = layers[l];
      state.observed = r.Bool("observed");
      for (auto* out : {&state.scores, &state.counters}) {
        const int64_t n = r.Count("score rows", 8);
        if (n != 0 && n != rows) {
          r.Fail(absl::InvalidArgumentError(
              absl::StrCat("blob: layer ", l, " has ", n, " score rows, expected ", rows)));
        }
        for (int64_t i = 0; i < n && r.ok(); ++i) out->push_back(r.Doubles("scores"));
      }
      state.window = r.Tensor("attention window");
      state.query_sum = r.Tensor("query sums");
      state.query_outer = r.Tensor("query outer products");
      state.query_count = r.I64("query count");
      state.next_position = r.I64("next position");
      if (r.ok()) r.Fail(CheckLayerState(state, static_cast<int>(l)));
    }
    std::vector<int64_t> tokens_seen = r.Int64s("tokens seen");
    const bool host_counts = r.Bool("host counts");
    const std::string rng_text = r.Bytes("random state");
    for (size_t l = 0; options_.cache_merging && l < layers.size() && r.ok(); ++l) {
      layers[l].merge_attention = r.Tensor("merge attention");
      layers[l].merge_steps = r.I64("merge steps");
      const at::Tensor& a = layers[l].merge_attention;
      if (r.ok() && (layers[l].merge_steps < 0 ||
                     (a.defined() && (a.dim() != 2 || a.size(0) != layout_.num_kv_heads ||
                                      a.scalar_type() != at::kFloat)))) {
        r.Fail(absl::InvalidArgumentError(absl::StrCat(
            "blob: layer ", l,
            "'s merge state is not float32 [num_kv_heads, tokens] with a non-negative count")));
      }
    }
    std::vector<int64_t> cake_budget = cake_budget_;
    if (options_.algorithm == EvictionAlgorithm::kCake) {
      for (size_t l = 0; l < layers.size() && r.ok(); ++l) {
        layers[l].has_preference = r.Bool("cake preference present");
        layers[l].preference = static_cast<float>(r.F64("cake preference"));
      }
      cake_budget = r.Int64s("cake budgets");
      if (r.ok() && cake_budget.size() != cake_budget_.size()) {
        r.Fail(absl::InvalidArgumentError(absl::StrCat(
            "blob: ", cake_budget.size(), " CAKE layer budgets, expected ", cake_budget_.size())));
      }
    }
    if (!r.ok()) return r.status();
    if (tokens_seen.size() != layers_.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob: ", tokens_seen.size(), " tokens-seen counts for ", layers_.size(), " layers"));
    }
    std::mt19937_64 rng;
    std::istringstream rng_in(rng_text);
    rng_in >> rng;
    if (rng_in.fail())
      return absl::InvalidArgumentError("blob: the policy's random state is unreadable");
    if (r.remaining() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob: ", r.remaining(), " bytes after the policy's state"));
    }
    layers_ = std::move(layers);
    cake_budget_ = std::move(cake_budget);
    tokens_seen_ = std::move(tokens_seen);
    host_counts_ = host_counts;
    rng_ = rng;
    return absl::OkStatus();
  }

 private:
  // What the scorers assume of a layer's state (a loaded one is checked before it is used).
  absl::Status CheckLayerState(const LayerScores& state, int layer) const {
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob: layer ", layer, "'s policy state: ", what));
    };
    if (options_.normalize_scores && !state.scores.empty()) {
      if (state.counters.size() != state.scores.size()) return bad("scores without counters");
      for (size_t i = 0; i < state.scores.size(); ++i) {
        if (state.counters[i].size() != state.scores[i].size()) {
          return bad(absl::StrCat("row ", i, " has ", state.scores[i].size(), " scores but ",
                                  state.counters[i].size(), " counters"));
        }
      }
    }
    if (state.window.defined() &&
        (state.window.dim() != 3 || state.window.size(0) != layout_.num_heads ||
         state.window.scalar_type() != at::kFloat)) {
      return bad("the attention window is not float32 [num_heads, rows, keys]");
    }
    if (state.query_sum.defined() != state.query_outer.defined()) {
      return bad("query sums without outer products");
    }
    if (state.query_sum.defined()) {
      const at::Tensor& s = state.query_sum;
      const at::Tensor& o = state.query_outer;
      if (s.dim() != 2 || s.size(0) != layout_.num_heads || s.scalar_type() != at::kDouble ||
          o.dim() != 3 || o.size(0) != layout_.num_heads || o.size(1) != s.size(1) ||
          o.size(2) != s.size(1) || o.scalar_type() != at::kDouble) {
        return bad("query statistics are not float64 [num_heads, d] and [num_heads, d, d]");
      }
    }
    if (state.query_count < 0 || state.next_position < 0) return bad("negative counts");
    return absl::OkStatus();
  }

  // CaM's running attention: a decode call adds its probabilities averaged over each kv head's
  // query heads (kvpress's CAMPress accumulates output attentions the same way); a call of
  // several queries (a prompt) starts over. Observe-only passes are not steps.
  absl::Status ObserveMerge(LayerScores& state, const Observation& obs) {
    if (obs.observed_queries > 0 || obs.call_queries == 0) return absl::OkStatus();
    if (obs.call_queries > 1) {
      state.merge_attention = at::Tensor();
      state.merge_steps = 0;
      return absl::OkStatus();
    }
    const at::Tensor& sums = obs.all_queries_sum;
    if (!sums.defined() || sums.dim() != 2 || sums.size(0) != layout_.num_heads) {
      return absl::InvalidArgumentError(
          "all_queries_sum: cache_merging needs the decode call's attention [num_heads, cache "
          "tokens]");
    }
    const int64_t K = sums.size(1), G = layout_.num_heads / layout_.num_kv_heads;
    at::Tensor step = sums.to(at::kCPU, at::kFloat).reshape({layout_.num_kv_heads, G, K}).mean(1);
    at::Tensor& a = state.merge_attention;
    if (a.defined()) {
      if (a.size(1) > K) a = a.narrow(1, 0, K);
      if (a.size(1) < K) a = at::constant_pad_nd(a, {0, K - a.size(1)});
      step = at::add(a, step);
    }
    a = step.contiguous();
    ++state.merge_steps;
    return absl::OkStatus();
  }

  // CaM at an eviction of `layer`: each score row's merge (MergeRow) from the decode calls since
  // the last eviction, kept for TakeMergedValues(); then the running attention keeps the kept
  // tokens' entries and the count starts over.
  void Merge(int layer, const std::vector<std::vector<double>>& scores,
             const std::vector<int64_t>& rows, const KeptPositions& kept,
             const at::Tensor& values) {
    LayerScores& state = layers_[layer];
    const int Hkv = layout_.num_kv_heads;
    merged_.assign(Hkv, MergedValues());
    if (state.merge_steps > 0 && state.merge_attention.defined()) {
      const at::Tensor v = values.to(at::kCPU, at::kFloat).contiguous();
      at::Tensor a = state.merge_attention;
      const int64_t width = *std::max_element(rows.begin(), rows.end());
      if (a.size(1) < width) a = at::constant_pad_nd(a, {0, width - a.size(1)}).contiguous();
      for (size_t r = 0; r < rows.size(); ++r) {
        if (Streams(layer, static_cast<int>(r))) continue;  // streaming heads only drop tokens
        at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(eviction::MergeSeed(
            options_.merge_seed, layer, tokens_seen_[layer], static_cast<int>(r)));
        std::vector<int64_t> heads;
        if (layout_.per_head) {
          heads.push_back(static_cast<int64_t>(r));
        } else {
          for (int h = 0; h < Hkv; ++h) heads.push_back(h);
        }
        eviction::RowMerge m =
            eviction::MergeRow(v, a, heads, scores[r], options_.start_tokens, kept[r], rows[r],
                               state.merge_steps, options_.merge_budget, generator);
        if (m.targets.empty()) continue;
        for (size_t i = 0; i < heads.size(); ++i) {
          merged_[heads[i]] = MergedValues{m.targets, m.values[static_cast<int64_t>(i)]};
        }
      }
    }
    state.merge_steps = 0;
    if (!state.merge_attention.defined()) return;
    // The kept tokens' running attention, at their new indices (zeros past a head's length).
    const at::Tensor& a = state.merge_attention;
    int64_t width = 0;
    for (const auto& k : kept) width = std::max<int64_t>(width, static_cast<int64_t>(k.size()));
    at::Tensor compact = at::zeros({Hkv, width}, at::kFloat);
    for (int h = 0; h < Hkv; ++h) {
      const std::vector<int64_t>& k = kept[layout_.per_head ? h : 0];
      const float* src = a.data_ptr<float>() + h * a.stride(0);
      float* dst = compact.data_ptr<float>() + h * width;
      for (size_t i = 0; i < k.size(); ++i) dst[i] = k[i] < a.size(1) ? src[k[i]] : 0.0f;
    }
    state.merge_attention = compact;
  }

  // CAKE's budgets (CakeprefillKVCache.__call__ and adjust_budgets): called once per layer, at
  // its prompt, whose cache holds `tokens`. A prompt of at most cache size + window tokens (cache
  // size = intermediate + window) evicts nothing then, and the layer keeps the configured
  // intermediate area from its first decode step on (Observe). Else the layers with a preference so
  // far (cascading: 0..layer; otherwise all, once the last layer's prompt came) share num_layers *
  // intermediate_tokens in proportion to their preferences, adjusted as adjust_budgets does and
  // capped at the prompt less the window; the earlier of them evict again (TakeCascade).
  void AllocateCake(int layer, int64_t tokens) {
    const int64_t w = options_.window_size, mean = options_.intermediate_tokens;
    const int L = num_layers();
    if (tokens <= mean + 2 * w) return;  // no eviction at the prompt; decoding keeps `mean`
    std::vector<int> known;
    for (int j = 0; j < L; ++j) {
      if (layers_[j].has_preference) known.push_back(j);
    }
    if (!options_.cake_cascading && static_cast<int>(known.size()) < L) return;
    std::vector<float> preferences;
    for (int j : known) preferences.push_back(layers_[j].preference);
    const std::vector<int64_t> budgets = eviction::CakeBudgets(preferences, mean * L, tokens - w);
    for (size_t i = 0; i < known.size(); ++i) {
      cake_budget_[known[i]] = std::min(budgets[i], tokens - w);
      if (known[i] != layer) cascade_.push_back(known[i]);
    }
  }

  // Whether kv head `row` of `layer` streams (a session's head split; per-head policies only).
  bool Streams(int layer, int row) const {
    return layout_.per_head && !options_.streaming_heads.empty() &&
           options_.streaming_heads[static_cast<size_t>(layer) * layout_.num_kv_heads + row];
  }
  int64_t StreamedTokens() const {
    return int64_t{options_.streaming_sink} + options_.streaming_recent;
  }

  absl::Status CheckLayer(int layer) const {
    if (layer < 0 || layer >= static_cast<int>(layers_.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer: must be in [0, ", layers_.size(), "), got ", layer));
    }
    return absl::OkStatus();
  }

  // Ratio mode: the tokens `layer` has seen, as the host last said, or else the longest of
  // `lengths` (the cache the host gives is what it has seen).
  int64_t TokensSeen(int layer, const std::vector<int64_t>& lengths) const {
    if (host_counts_) return tokens_seen_[layer];
    int64_t seen = 0;
    for (int64_t len : lengths) seen = std::max(seen, len);
    return seen;
  }

  // The intermediate area of `layer` (per kv head): the configured one, or in ratio mode what the
  // start and recent areas leave of the ratio's target for `seen` tokens, in whole groups and
  // spread over the layers as the allocator does.
  int64_t Intermediate(int layer, int64_t seen) const {
    if (!cake_budget_.empty()) {
      // CAKE: the layer's share once decided; none before (the prompt's layers wait for it).
      return cake_budget_[layer] >= 0 ? cake_budget_[layer] : kUndecidedBudget;
    }
    if (!options_.ratio_mode()) return intermediate_[layer];
    return eviction::RatioIntermediate(options_, seen, layer, num_layers());
  }
  int64_t Intermediate(int layer) const { return Intermediate(layer, tokens_seen_[layer]); }

  // Lengths per score row: one for layer-wide policies (all heads equal), one per kv head.
  absl::StatusOr<std::vector<int64_t>> RowLengths(const std::vector<int64_t>& lengths) const {
    if (lengths.empty()) return absl::InvalidArgumentError("lengths: at least one cache length");
    for (int64_t len : lengths)
      if (len < 0) return absl::InvalidArgumentError("lengths: must be non-negative");
    if (lengths.size() != 1 && static_cast<int>(lengths.size()) != layout_.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat("lengths: expected 1 or num_kv_heads (",
                                                     layout_.num_kv_heads, ") entries, got ",
                                                     lengths.size()));
    }
    if (!layout_.per_head) {
      for (int64_t len : lengths) {
        if (len != lengths[0]) {
          return absl::InvalidArgumentError(
              "lengths: a layer-wide policy needs every kv head to hold the same tokens");
        }
      }
      return std::vector<int64_t>{lengths[0]};
    }
    if (lengths.size() == 1) return std::vector<int64_t>(layout_.num_kv_heads, lengths[0]);
    return lengths;
  }

  EvictionOptions options_;
  const EvictionAlgorithmDescriptor& algorithm_;
  const RefinementDescriptor& refinement_;
  const AllocatorDescriptor& allocator_;
  HeadLayout layout_;
  std::unique_ptr<eviction::Scorer> scorer_;
  std::vector<LayerScores> layers_;
  std::vector<int64_t> intermediate_;
  // Ratio mode: tokens seen per layer (SetTokensSeen, or the last Select's longest row).
  std::vector<int64_t> tokens_seen_;
  bool host_counts_ = false;  // SetTokensSeen() was called: the host counts the tokens seen
  std::mt19937_64 rng_;
  std::vector<MergedValues> merged_;  // CaM: the last Select's merges (TakeMergedValues)
  // CAKE allocator: each layer's intermediate budget once decided (-1: not yet), and the earlier
  // layers a prompt's allocation shrank (TakeCascade).
  std::vector<int64_t> cake_budget_;
  std::vector<int> cascade_;
  static constexpr int64_t kUndecidedBudget = int64_t{1} << 40;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EvictionPolicy>> EvictionPolicy::Create(
    const EvictionOptions& options, int num_layers, int num_heads, int num_kv_heads) {
  if (num_layers <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers: must be positive, got ", num_layers));
  }
  if (num_layers > kMaxLayers) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_layers: must be at most ", kMaxLayers, ", got ", num_layers));
  }
  if (num_heads > kMaxHeads) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_heads: must be at most ", kMaxHeads, ", got ", num_heads));
  }
  if (num_heads <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_kv_heads: must be positive and divide num_heads (", num_heads, "), got ",
                     num_kv_heads));
  }
  if (absl::Status s = ValidateEvictionOptions(options); !s.ok()) return s;
  if (!options.streaming_heads.empty() &&
      (!options.per_head || static_cast<int64_t>(options.streaming_heads.size()) !=
                                int64_t{num_layers} * num_kv_heads)) {
    return absl::InvalidArgumentError(absl::StrCat("head_split: ", options.streaming_heads.size(),
                                                   " streaming labels for a per-head policy of ",
                                                   num_layers, " layers of ", num_kv_heads,
                                                   " kv heads"));
  }
  HeadLayout layout{num_heads, num_kv_heads, options.per_head};
  return std::unique_ptr<EvictionPolicy>(new EvictionPolicyImpl(options, num_layers, layout));
}

absl::Status EvictionPolicy::ObserveWeights(int layer, const at::Tensor& attention,
                                            const std::vector<int64_t>& lengths) {
  if (!attention.defined() || attention.dim() != 4) {
    return absl::InvalidArgumentError(
        "attention: expected [batch, num_heads, queries, cache tokens] weights");
  }
  if (!c10::isFloatingType(attention.scalar_type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention: expected a floating-point tensor, got ",
                     c10::toString(attention.scalar_type())));
  }
  // Every length within the tensor, checked before any work (the scorers would clamp silently).
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] > attention.size(3)) {
      return absl::InvalidArgumentError(
          absl::StrCat("lengths[", i, "]: ", lengths[i], " is larger than the ", attention.size(3),
                       " cache tokens of attention [batch, num_heads, queries, cache tokens]"));
    }
  }
  // Like the session's inputs: non-finite weights would poison the scores for good.
  if (attention.numel() > 0 && !at::isfinite(attention).all().item<bool>()) {
    return absl::InvalidArgumentError("attention: contains NaN or infinity");
  }
  const ObservationNeeds n = needs();
  Observation obs;
  obs.lengths = lengths;
  const at::Tensor summed = attention.to(at::kFloat).sum(0);  // [H, q, K]
  obs.call_queries = summed.size(1);
  if (n.window_rows > 0) {
    const int64_t r = std::min<int64_t>(n.window_rows, summed.size(1));
    obs.window_rows = summed.narrow(1, summed.size(1) - r, r);
  }
  if (n.all_queries_sum || (n.decode_column_sums && summed.size(1) == 1)) {
    obs.all_queries_sum = summed.sum(1);
  }
  if (!obs.window_rows.defined() && !obs.all_queries_sum.defined()) {
    obs.all_queries_sum = summed.sum(1);  // shape carrier for scorers that ignore attention
  }
  return Observe(layer, obs);
}

}  // namespace attnkit
