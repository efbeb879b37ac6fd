// The session orchestrates one generation's attention: it checks each call, has its KV store
// (kv_store.h) append the new tokens and attend, hands the step's observation to the eviction
// policy, tells the store which tokens to keep when a layer is over budget, and keeps the step
// counters, positions and statistics. Where the cache lives and where attention runs is the
// store's business: the host store for CPU sessions, the device store for CUDA sessions.
#include "attnkit/session/session.h"

#include <algorithm>
#include <vector>
#include <chrono>
#include <cstring>

#include <ATen/Functions.h>
#include <ATen/record_function.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/config_parser.h"
#include "attnkit/device.h"
#include "attnkit/eviction/eviction_policy.h"
#include "attnkit/sparse/sparse_attention.h"
#include "session/kv_store.h"
#include "session/session_testing.h"
#include "util/archive.h"
#include "util/status_macros.h"

namespace attnkit {
namespace {

using session::HeadCache;
using session::KvStore;
using Clock = std::chrono::steady_clock;

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// Per-layer step and eviction counters (the cache itself is the store's).
struct LayerCounters {
  int64_t steps = 0;
  int64_t evictions = 0;
  int64_t evicted_tokens = 0;
  // Decode calls since the schedule last let this layer evict, per sequence.
  std::vector<int64_t> decode_steps;
  // Observe-only passes (Session::Observe) this layer has run.
  int64_t observe_passes = 0;
};

enum class StoreKind { kHost, kDevice };

// A saved session: this header, then `payload_bytes` of payload whose CRC-32C is `crc`
// (docs/algorithms.md 1.7).
constexpr char kBlobMagic[16] = "attnkit-session";  // 15 characters and the NUL
constexpr uint32_t kBlobVersion = 1;
constexpr int64_t kBlobHeaderBytes = 16 + 4 + 8 + 4;

class SessionImpl : public Session {
 public:
  explicit SessionImpl(const SessionOptions& o) : options_(o) {
    if (o.head_split.enabled() && o.eviction.enabled) {
      // The policy keeps the streaming heads' tokens when their layer evicts (HeadSplit).
      options_.eviction.streaming_heads = o.head_split.streaming;
      options_.eviction.streaming_sink = o.head_split.sink_tokens;
      options_.eviction.streaming_recent = o.head_split.recent_tokens;
    }
  }

  absl::Status Init(StoreKind kind) {
    const SessionOptions& o = options_;
    at::Device device(at::kCPU);
    if (o.device == DeviceKind::kCUDA) {
      if (!BuiltWithCuda()) {
        return absl::UnimplementedError(
            "device: CUDA sessions need a build with CUDA (ATTNKIT_CUDA=ON); this one has none");
      }
      if (!CudaDeviceAvailable()) {
        return absl::FailedPreconditionError(
            "device: CUDA was requested, but no CUDA device is visible to this process");
      }
      device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.device_index));
      kind = StoreKind::kDevice;
    }
    // After the device's choice: ReadState (Load, Fork) makes its store of this kind.
    kind_ = kind;
    if (o.sparse.mode != SparseMode::kDense) {
      ATTNKIT_ASSIGN_OR_RETURN(sparse_, sparse::SparseAttention::Create(o.sparse));
    }
    if (o.eviction.enabled) {
      // Sequence 0's policy now (it validates the config); the others on their first step, so
      // creation allocates no per-sequence, per-layer scores it does not yet need.
      policies_.resize(o.batch_size);
      ATTNKIT_ASSIGN_OR_RETURN(policies_[0], EvictionPolicy::Create(o.eviction, o.num_layers,
                                                                    o.num_heads, o.num_kv_heads));
    }
    const session::StoreContext context{&options_, sparse_.get()};
    if (kind == StoreKind::kDevice) {
      ATTNKIT_ASSIGN_OR_RETURN(store_, session::MakeDeviceStore(context, device));
    } else {
      ATTNKIT_ASSIGN_OR_RETURN(store_, session::MakeHostStore(context));
    }
    layers_.resize(o.num_layers);  // decode_steps: on the layer's first step
    seen_.assign(o.batch_size, 0);
    all_sequences_.resize(o.batch_size);
    for (int64_t b = 0; b < o.batch_size; ++b) all_sequences_[b] = b;
    return absl::OkStatus();
  }

  const SessionOptions& options() const override { return options_; }

  absl::Status Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& out) override {
    return AttendSequences(layer, q, k, v, out, {});
  }

  absl::Status AttendRagged(int layer, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, const at::Tensor& out,
                            absl::Span<const int64_t> new_tokens) override {
    if (static_cast<int64_t>(new_tokens.size()) != options_.batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("new_tokens: expected one count per sequence (", options_.batch_size,
                       "), got ", new_tokens.size()));
    }
    return AttendSequences(layer, q, k, v, out, new_tokens);
  }

  absl::Status ResetSequence(int sequence) override {
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("sequence", sequence, options_.batch_size));
    if (layers_.front().steps != layers_.back().steps ||
        layers_.front().observe_passes != layers_.back().observe_passes) {
      return absl::FailedPreconditionError(absl::StrCat(
          "sequence: reset of sequence ", sequence, " while step ", layers_.back().steps,
          " or an observe pass is partway through its layers; reset between steps"));
    }
    store_->ClearSequence(sequence);
    for (LayerCounters& layer : layers_) {
      if (!layer.decode_steps.empty()) layer.decode_steps[sequence] = 0;
    }
    if (!policies_.empty() && policies_[sequence] != nullptr) policies_[sequence]->Reset();
    seen_[sequence] = 0;
    return absl::OkStatus();
  }

  absl::Status Observe(int layer, const at::Tensor& q, const at::Tensor& out) override {
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("layer", layer, options_.num_layers));
    ATTNKIT_RETURN_IF_ERROR(CheckQueries(q, out));
    ATTNKIT_RETURN_IF_ERROR(CheckObserveOrder(layer));
    // The sequences that hold tokens take part; an empty slot (never started, or retired with
    // ResetSequence) sits the pass out: its rows of q are never read (they may hold NaN), its
    // rows of `out` get zeros, its policy is untouched.
    std::vector<int64_t> active;
    for (int64_t b = 0; b < options_.batch_size; ++b) {
      int empty_heads = 0;
      for (int h = 0; h < options_.num_kv_heads; ++h) {
        if (store_->head(layer, HeadIndex(b, h)).length == 0) ++empty_heads;
      }
      if (empty_heads == 0) {
        active.push_back(b);
      } else if (empty_heads < options_.num_kv_heads) {
        return absl::FailedPreconditionError(
            absl::StrCat("layer: layer ", layer, " holds no token in ", empty_heads, " of the ",
                         options_.num_kv_heads, " kv heads of sequence ", b,
                         ": observed queries attend to every kv head's cache"));
      }
    }
    if (active.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer: layer ", layer,
                       " holds no token of any sequence: observed queries attend to the cache, "
                       "so attend a prompt first"));
    }
    const bool everyone = static_cast<int64_t>(active.size()) == options_.batch_size;
    const at::Tensor index = everyone ? at::Tensor() : at::tensor(active, at::kLong);
    const at::Tensor q_active = everyone ? q : q.index_select(0, index.to(q.device()));
    if (!options_.skip_finite_check && !at::isfinite(q_active).all().item<bool>()) {
      return absl::InvalidArgumentError("q: contains NaN or infinity");
    }
    const int64_t T = q.size(2);
    const auto t0 = Clock::now();
    for (const int64_t b : active) {
      if (!policies_.empty()) ATTNKIT_RETURN_IF_ERROR(EnsurePolicy(b));
    }
    const ObservationNeeds needs =
        policies_.empty() ? ObservationNeeds{} : policies_[active[0]]->needs();
    ATTNKIT_ASSIGN_OR_RETURN(
        session::StepResult step,
        store_->AttendCache(layer, q_active, std::min<int64_t>(needs.window_rows, T),
                            needs.all_queries_sum, active));
    if (out.defined()) {
      if (everyone) {
        out.copy_(step.out);
      } else {
        out.zero_();
        out.index_copy_(0, index.to(out.device()), step.out.to(out.device(), out.scalar_type()));
      }
    }
    attention_seconds_ += Seconds(t0);
    const auto t1 = Clock::now();
    for (int64_t i = 0; i < static_cast<int64_t>(active.size()) && !policies_.empty(); ++i) {
      const int64_t b = active[i];
      EvictionPolicy& policy = *policies_[b];
      Observation obs = MakeObservation(layer, b, i, policy, step, q_active, NextRotated(layer, b));
      obs.observed_queries = T;
      ATTNKIT_RETURN_IF_ERROR(policy.Observe(layer, obs));
    }
    policy_seconds_ += Seconds(t1);
    ++layers_[layer].observe_passes;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int64_t>> Positions(int layer, int sequence,
                                                 int kv_head) const override {
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("layer", layer, options_.num_layers));
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("sequence", sequence, options_.batch_size));
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("kv_head", kv_head, options_.num_kv_heads));
    return store_->head(layer, HeadIndex(sequence, kv_head)).origin;
  }

  absl::StatusOr<int64_t> NextPosition(int sequence) const override {
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("sequence", sequence, options_.batch_size));
    if (Rerotates()) return store_->head(0, HeadIndex(sequence, 0)).length;
    return seen_[sequence];
  }

  int64_t BytesHeld() const override { return store_->BytesHeld(); }

  SessionStatsView Stats() const override {
    SessionStatsView s;
    s.steps = steps_;
    s.tokens_seen = seen_.empty() ? 0 : *std::max_element(seen_.begin(), seen_.end());
    s.page_size = options_.page_size;
    s.attention_seconds = attention_seconds_;
    s.policy_seconds = policy_seconds_;
    s.peak_bytes_held = peak_bytes_;
    s.peak_bytes_within_calls = std::max(peak_within_calls_, peak_bytes_);
    s.sparse_density = store_->sparse_density();
    s.sparse_decode_tokens_read = store_->sparse_decode_tokens_read();
    s.sparse_decode_tokens_held = store_->sparse_decode_tokens_held();
    s.bytes_reserved = store_->BytesReserved();
    s.format_bytes = store_->FormatBytesHeld();
    for (int l = 0; l < options_.num_layers; ++l) {
      const LayerCounters& counters = layers_[l];
      LayerStatsView ls{l, 0, store_->LayerBytes(l), counters.evicted_tokens, counters.evictions};
      for (int64_t i = 0; i < store_->heads_per_layer(); ++i) {
        const int64_t length = store_->head(l, i).length;
        ls.tokens += length;
        s.heads.push_back(HeadStatsView{l, static_cast<int>(i / options_.num_kv_heads),
                                        static_cast<int>(i % options_.num_kv_heads), length,
                                        store_->HeadBytes(l, i)});
      }
      s.tokens_held += ls.tokens;
      s.bytes_held += ls.bytes;
      s.evictions += counters.evictions;
      s.evicted_tokens += counters.evicted_tokens;
      s.layers.push_back(ls);
    }
    return s;
  }

  void Reset() override {
    store_->Clear();
    for (LayerCounters& layer : layers_) {
      layer.steps = 0;
      layer.observe_passes = 0;
      std::fill(layer.decode_steps.begin(), layer.decode_steps.end(), 0);
    }
    for (auto& p : policies_) {
      if (p != nullptr) p->Reset();
    }
    std::fill(seen_.begin(), seen_.end(), 0);
  }

  absl::StatusOr<std::string> Save() const override {
    if (options_.config_binary.empty()) {
      return absl::FailedPreconditionError(
          "session: made from SessionOptions built in code, so it has no config to save; create "
          "it from a SessionConfig (ParseSessionConfig, attnkit_session_create)");
    }
    util::ArchiveWriter w;
    w.Reserve(static_cast<size_t>(store_->SavedBytesHint()) + options_.config_binary.size() + 4096);
    w.Raw(kBlobMagic, sizeof kBlobMagic);
    w.U32(kBlobVersion);
    w.I64(0);  // payload bytes and CRC, filled in below
    w.U32(0);
    w.Bytes(options_.config_binary);
    WriteState(w);
    std::string& blob = w.data();
    const int64_t payload = static_cast<int64_t>(blob.size()) - kBlobHeaderBytes;
    const uint32_t crc =
        util::Crc32c(absl::string_view(blob).substr(static_cast<size_t>(kBlobHeaderBytes)));
    std::memcpy(&blob[20], &payload, sizeof payload);
    std::memcpy(&blob[28], &crc, sizeof crc);
    return std::move(blob);
  }

  absl::Status Load(absl::string_view blob) override {
    if (options_.config_binary.empty()) {
      return absl::FailedPreconditionError(
          "session: made from SessionOptions built in code, so a blob's config cannot be checked "
          "against it; create it from a SessionConfig");
    }
    ATTNKIT_ASSIGN_OR_RETURN(const absl::string_view payload, CheckBlob(blob));
    util::ArchiveReader r(payload);
    const std::string config = r.Bytes("config");
    if (!r.ok()) return r.status();
    ATTNKIT_RETURN_IF_ERROR(CheckSavedSessionConfig(config, options_.config_binary));
    return ReadState(r);
  }

  absl::StatusOr<std::unique_ptr<Session>> Fork() const override {
    auto fork = std::make_unique<SessionImpl>(options_);
    ATTNKIT_RETURN_IF_ERROR(fork->Init(kind_));
    // The host store shares its pages copy-on-write; another store's pages are copied.
    std::unique_ptr<KvStore> shared =
        store_->ShareForFork(session::StoreContext{&fork->options_, fork->sparse_.get()});
    util::ArchiveWriter w;
    WriteState(w, /*with_store=*/shared == nullptr);
    util::ArchiveReader r(w.data());
    ATTNKIT_RETURN_IF_ERROR(fork->ReadState(r, std::move(shared)));
    return std::unique_ptr<Session>(std::move(fork));
  }

 private:
  // An Attend call whose sequence b brings new_tokens[b] of the call's T tokens (empty: all T):
  // the sequences are attended in groups of equal counts, each group as one store call (a step
  // where every sequence brings T tokens is one call on the tensors as given).
  absl::Status AttendSequences(int layer, const at::Tensor& q, const at::Tensor& k,
                               const at::Tensor& v, const at::Tensor& out,
                               absl::Span<const int64_t> new_tokens) {
    const SessionOptions& o = options_;
    ATTNKIT_RETURN_IF_ERROR(CheckIndex("layer", layer, o.num_layers));
    ATTNKIT_RETURN_IF_ERROR(CheckShapes(q, k, v, out));
    ATTNKIT_RETURN_IF_ERROR(CheckOrder(layer));
    const int64_t T = q.size(2);
    std::vector<int64_t> counts(o.batch_size, T);
    if (!new_tokens.empty()) {
      bool any = false;
      for (int64_t b = 0; b < o.batch_size; ++b) {
        if (new_tokens[b] < 0 || new_tokens[b] > T) {
          return absl::InvalidArgumentError(absl::StrCat("new_tokens: sequence ", b, " brings ",
                                                         new_tokens[b], " tokens; expected 0 to ",
                                                         T, " (the tokens dimension of q)"));
        }
        counts[b] = new_tokens[b];
        any = any || counts[b] > 0;
      }
      if (!any) {
        return absl::InvalidArgumentError("new_tokens: every sequence brings 0 tokens");
      }
    }
    ATTNKIT_RETURN_IF_ERROR(CheckStepTokens(layer, counts));
    const bool full = std::all_of(counts.begin(), counts.end(), [&](int64_t n) { return n == T; });
    if (o.skip_finite_check) {
      // The caller vouches for its inputs (SessionConfig.skip_finite_check).
    } else if (full) {
      ATTNKIT_RETURN_IF_ERROR(CheckFinite(q, k, v));
    } else {
      for (int64_t b = 0; b < o.batch_size; ++b) {
        if (counts[b] == 0) continue;
        ATTNKIT_RETURN_IF_ERROR(CheckFinite(q[b].narrow(1, 0, counts[b]),
                                            k[b].narrow(1, 0, counts[b]),
                                            v[b].narrow(1, 0, counts[b])));
      }
    }
    // Groups of sequences bringing the same count, by ascending count.
    std::vector<std::pair<int64_t, std::vector<int64_t>>> groups;
    if (full) {
      groups.push_back({T, {}});
    } else {
      for (int64_t b = 0; b < o.batch_size; ++b) {
        if (counts[b] == 0) continue;
        auto it = std::find_if(groups.begin(), groups.end(),
                               [&](const auto& g) { return g.first == counts[b]; });
        if (it == groups.end()) {
          groups.push_back({counts[b], {b}});
        } else {
          it->second.push_back(b);
        }
      }
      std::sort(groups.begin(), groups.end());
    }
    for (const auto& [n, members] : groups) {
      ATTNKIT_RETURN_IF_ERROR(AttendGroup(layer, q, k, v, out, n, members));
    }
    if (!full) {
      for (int64_t b = 0; b < o.batch_size; ++b) {
        if (counts[b] < T) out[b].narrow(1, counts[b], T - counts[b]).zero_();
      }
    }
    // With eviction the policy trims the streaming heads when their layer evicts.
    if (o.head_split.enabled() && !o.eviction.enabled) StreamHeads(layer);
    ++layers_[layer].steps;
    if (layer == 0) {
      for (int64_t b = 0; b < o.batch_size; ++b) seen_[b] += counts[b];
      ++steps_;
    }
    peak_bytes_ = std::max(peak_bytes_, BytesHeld());
    return absl::OkStatus();
  }

  // One store call for the sequences `members` (ascending; empty: every sequence, the tensors as
  // given), each bringing the first n of the call's tokens.
  absl::Status AttendGroup(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& out, int64_t n, const std::vector<int64_t>& members) {
    const auto t0 = Clock::now();
    const bool all = members.empty();
    const std::vector<int64_t>& sequences = all ? all_sequences_ : members;
    at::Tensor qg = q, kg = k, vg = v;
    if (!all) {
      const at::Tensor index =
          at::tensor(members, at::TensorOptions().dtype(at::kLong)).to(q.device());
      qg = q.narrow(2, 0, n).index_select(0, index);
      kg = k.narrow(2, 0, n).index_select(0, index.to(k.device()));
      vg = v.narrow(2, 0, n).index_select(0, index.to(v.device()));
    }
    std::vector<int64_t> first_rotated(sequences.size());
    for (size_t i = 0; i < sequences.size(); ++i) {
      first_rotated[i] = NextRotated(layer, sequences[i]);
    }
    store_->Append(layer, kg, vg, first_rotated, sequences);
    // The call's tokens are held until the layer evicts below: the moment of the most bytes.
    peak_within_calls_ = std::max(peak_within_calls_, BytesHeld());
    const ObservationNeeds needs = policies_.empty() ? ObservationNeeds{} : policies_[0]->needs();
    ATTNKIT_ASSIGN_OR_RETURN(
        session::StepResult step,
        store_->Attend(layer, qg, std::min<int64_t>(needs.window_rows, n),
                       needs.all_queries_sum || (needs.decode_column_sums && n == 1), sequences));
    if (all) {
      out.copy_(step.out);
    } else {
      for (size_t i = 0; i < members.size(); ++i) {
        out[members[i]].narrow(1, 0, n).copy_(step.out[i]);
      }
    }
    attention_seconds_ += Seconds(t0);
    const auto t1 = Clock::now();
    for (size_t i = 0; i < sequences.size() && !policies_.empty(); ++i) {
      ATTNKIT_RETURN_IF_ERROR(ObserveAndEvict(layer, sequences[i], static_cast<int64_t>(i), step,
                                              qg, first_rotated[i], n));
    }
    policy_seconds_ += Seconds(t1);
    return absl::OkStatus();
  }

  // Every layer of a step takes the tokens its layer 0 took, per sequence: a layer past 0 must
  // bring what the layer before it appended beyond it in this step.
  absl::Status CheckStepTokens(int layer, const std::vector<int64_t>& counts) const {
    if (layer == 0) return absl::OkStatus();
    for (int64_t b = 0; b < options_.batch_size; ++b) {
      const int64_t expected = store_->appended(layer - 1, b) - store_->appended(layer, b);
      if (counts[b] != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            "new_tokens: layer ", layer, " of step ", layers_[layer].steps, " got ", counts[b],
            " new tokens of sequence ", b, ", layer ", layer - 1, " got ", expected,
            " (every layer of a step takes the same tokens of each sequence)"));
      }
    }
    return absl::OkStatus();
  }

  // The payload of a saved blob after checking its header, length and checksum.
  static absl::StatusOr<absl::string_view> CheckBlob(absl::string_view blob) {
    if (static_cast<int64_t>(blob.size()) < kBlobHeaderBytes) {
      return absl::InvalidArgumentError(absl::StrCat("blob: ", blob.size(),
                                                     " bytes, shorter than the ", kBlobHeaderBytes,
                                                     "-byte header of a saved session"));
    }
    if (std::memcmp(blob.data(), kBlobMagic, sizeof kBlobMagic) != 0) {
      return absl::InvalidArgumentError(
          "blob: not a saved attnkit session (it does not start with \"attnkit-session\")");
    }
    uint32_t version, crc;
    int64_t payload;
    std::memcpy(&version, blob.data() + 16, sizeof version);
    std::memcpy(&payload, blob.data() + 20, sizeof payload);
    std::memcpy(&crc, blob.data() + 28, sizeof crc);
    if (version != kBlobVersion) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob: format version ", version, "; this attnkit reads version ", kBlobVersion));
    }
    const int64_t present = static_cast<int64_t>(blob.size()) - kBlobHeaderBytes;
    if (payload != present) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob: ", payload > present ? "truncated" : "has extra bytes", ": the header says ",
          payload, " bytes of state, ", present, " are present"));
    }
    const absl::string_view body = blob.substr(static_cast<size_t>(kBlobHeaderBytes));
    if (util::Crc32c(body) != crc) {
      return absl::InvalidArgumentError(
          "blob: checksum mismatch: the saved state was altered or damaged");
    }
    return body;
  }

  // Everything but the config: counters, policies and (`with_store`) the store.
  void WriteState(util::ArchiveWriter& w, bool with_store = true) const {
    w.I64(steps_);
    w.Int64s(seen_);
    w.I64(peak_bytes_);
    w.I64(peak_within_calls_);
    w.F64(attention_seconds_);
    w.F64(policy_seconds_);
    w.I64(static_cast<int64_t>(layers_.size()));
    for (const LayerCounters& c : layers_) {
      w.I64(c.steps);
      w.I64(c.evictions);
      w.I64(c.evicted_tokens);
      w.Int64s(c.decode_steps);
      w.I64(c.observe_passes);
    }
    w.I64(static_cast<int64_t>(policies_.size()));
    for (const auto& policy : policies_) {
      w.Bool(policy != nullptr);
      if (policy != nullptr) w.Bytes(policy->SaveState());
    }
    if (with_store) store_->SaveState(w);
  }

  // Reads WriteState()'s bytes into new counters, policies and store, and takes them only when
  // everything was read and checked: on any error the session is as it was. With `store` given
  // (a fork's shared store), the bytes hold no store.
  absl::Status ReadState(util::ArchiveReader& r, std::unique_ptr<KvStore> store = nullptr) {
    const SessionOptions& o = options_;
    const int64_t steps = r.I64("steps");
    std::vector<int64_t> seen = r.Int64s("tokens seen");
    const int64_t peak = r.I64("peak bytes"), peak_within = r.I64("peak bytes within calls");
    const double attention_seconds = r.F64("attention seconds");
    const double policy_seconds = r.F64("policy seconds");
    const int64_t num_layers = r.I64("layers");
    if (!r.ok()) return r.status();
    if (num_layers != o.num_layers || seen.size() != static_cast<size_t>(o.batch_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob: saved with ", num_layers, " layers and ", seen.size(),
                       " sequences; this session has ", o.num_layers, " and ", o.batch_size));
    }
    std::vector<LayerCounters> layers(o.num_layers);
    for (LayerCounters& c : layers) {
      c.steps = r.I64("layer steps");
      c.evictions = r.I64("layer evictions");
      c.evicted_tokens = r.I64("evicted tokens");
      c.decode_steps = r.Int64s("decode steps");
      c.observe_passes = r.I64("observe passes");
      if (r.ok() && !c.decode_steps.empty() &&
          c.decode_steps.size() != static_cast<size_t>(o.batch_size)) {
        r.Fail(absl::InvalidArgumentError(absl::StrCat(
            "blob: ", c.decode_steps.size(), " decode counters for ", o.batch_size, " sequences")));
      }
    }
    if (r.ok()) ATTNKIT_RETURN_IF_ERROR(CheckCounters(steps, seen, peak, peak_within, layers));
    const int64_t num_policies = r.Count("policies", 4);
    if (r.ok() && num_policies != static_cast<int64_t>(policies_.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blob: ", num_policies, " eviction policies; this session has ", policies_.size()));
    }
    std::vector<std::unique_ptr<EvictionPolicy>> policies(policies_.size());
    for (auto& policy : policies) {
      if (!r.Bool("policy present")) continue;
      const std::string state = r.Bytes("policy state");
      if (!r.ok()) break;
      ATTNKIT_ASSIGN_OR_RETURN(
          policy, EvictionPolicy::Create(o.eviction, o.num_layers, o.num_heads, o.num_kv_heads));
      ATTNKIT_RETURN_IF_ERROR(policy->LoadState(state));
    }
    if (!r.ok()) return r.status();
    if (!policies.empty() && policies[0] == nullptr) {
      return absl::InvalidArgumentError("blob: sequence 0's eviction policy is missing");
    }
    const session::StoreContext context{&options_, sparse_.get()};
    if (store == nullptr) {
      if (kind_ == StoreKind::kDevice) {
        const at::Device device =
            o.device == DeviceKind::kCUDA
                ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.device_index))
                : at::Device(at::kCPU);
        ATTNKIT_ASSIGN_OR_RETURN(store, session::MakeDeviceStore(context, device));
      } else {
        ATTNKIT_ASSIGN_OR_RETURN(store, session::MakeHostStore(context));
      }
      ATTNKIT_RETURN_IF_ERROR(store->LoadState(r));
      ATTNKIT_RETURN_IF_ERROR(CheckAppended(*store, layers));
    }
    if (r.remaining() != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("blob: ", r.remaining(), " bytes after the session's state"));
    }
    steps_ = steps;
    seen_ = std::move(seen);
    peak_bytes_ = peak;
    peak_within_calls_ = peak_within;
    attention_seconds_ = attention_seconds;
    policy_seconds_ = policy_seconds;
    layers_ = std::move(layers);
    policies_ = std::move(policies);
    store_ = std::move(store);
    return absl::OkStatus();
  }

  // The counters of a loaded blob must be ones a session can reach (found by the load fuzzer: a
  // blob whose layers' observe passes disagreed loaded, then refused every attend): none negative;
  // the layers' steps, and their observe passes, run in order (a prefix of the layers one ahead of
  // the rest, as a save between two layers' calls leaves them); never a step and an observe pass
  // partway at once (each runs only when the other is complete).
  static absl::Status CheckCounters(int64_t steps, const std::vector<int64_t>& seen, int64_t peak,
                                    int64_t peak_within, const std::vector<LayerCounters>& layers) {
    auto negative = [](const std::vector<int64_t>& v) {
      return std::any_of(v.begin(), v.end(), [](int64_t x) { return x < 0; });
    };
    bool bad = steps < 0 || peak < 0 || peak_within < 0 || negative(seen);
    for (const LayerCounters& c : layers) {
      bad = bad || c.steps < 0 || c.evictions < 0 || c.evicted_tokens < 0 || c.observe_passes < 0 ||
            negative(c.decode_steps);
    }
    if (bad) return absl::InvalidArgumentError("blob: altered: a negative counter");
    auto in_order = [&](int64_t LayerCounters::*counter) {
      for (size_t l = 1; l < layers.size(); ++l) {
        if (layers[l].*counter > layers[l - 1].*counter) return false;
      }
      return layers.front().*counter - layers.back().*counter <= 1;
    };
    if (!in_order(&LayerCounters::steps) || !in_order(&LayerCounters::observe_passes)) {
      return absl::InvalidArgumentError(
          "blob: altered: the layers' step or observe-pass counters are not in layer order");
    }
    if (layers.front().steps != layers.back().steps &&
        layers.front().observe_passes != layers.back().observe_passes) {
      return absl::InvalidArgumentError(
          "blob: altered: a step and an observe pass both partway through the layers");
    }
    return absl::OkStatus();
  }

  // Every layer of a step takes the same tokens of each sequence, so a layer has appended what the
  // layer before it has, or less while a step is partway through the layers (found by the load
  // fuzzer: a blob whose layer 0 claimed another count was accepted, and the next step refused).
  absl::Status CheckAppended(const KvStore& store, const std::vector<LayerCounters>& layers) const {
    for (int l = 0; l < options_.num_layers; ++l) {
      for (int64_t b = 0; b < options_.batch_size; ++b) {
        const int64_t here = store.appended(l, b);
        if (here < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "blob: altered: layer ", l, " of sequence ", b, " has appended ", here, " tokens"));
        }
        if (l == 0) continue;
        const int64_t before = store.appended(l - 1, b);
        if (here > before || (layers[l].steps == layers[l - 1].steps && here != before)) {
          return absl::InvalidArgumentError(
              absl::StrCat("blob: altered: layer ", l, " of sequence ", b, " has appended ", here,
                           " tokens, layer ", l - 1, " ", before, " (after ", layers[l].steps,
                           " and ", layers[l - 1].steps, " steps)"));
        }
      }
    }
    return absl::OkStatus();
  }

  static absl::Status CheckIndex(const char* name, int value, int limit) {
    if (value >= 0 && value < limit) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": must be in [0, ", limit, "), got ", value));
  }

  int64_t HeadIndex(int64_t sequence, int64_t kv_head) const {
    return sequence * options_.num_kv_heads + kv_head;
  }

  bool Rerotates() const { return options_.eviction.enabled && options_.eviction.rerotate_keys; }

  // The RoPE position the host gave the first new token of sequence b (taken before any kv head's
  // cache grows: every kv head's new tokens carry the same positions).
  int64_t NextRotated(int layer, int64_t b) const {
    if (Rerotates()) return store_->head(layer, HeadIndex(b, 0)).length;
    return store_->appended(layer, b);
  }

  // q [B, H, T >= 1, d], and `out` of q's shape when defined.
  absl::Status CheckQueries(const at::Tensor& q, const at::Tensor& out) const {
    const SessionOptions& o = options_;
    if (q.dim() != 4)
      return absl::InvalidArgumentError(absl::StrCat(
          "q: expected rank 4 [batch, heads, tokens, head_dim], got ", Shape(q.sizes())));
    const std::vector<int64_t> q_shape{o.batch_size, o.num_heads, q.size(2), o.head_dim};
    if (q.sizes() != at::IntArrayRef(q_shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("q: expected [batch_size=", o.batch_size, ", num_heads=", o.num_heads,
                       ", tokens, head_dim=", o.head_dim, "], got ", Shape(q.sizes())));
    }
    if (q.size(2) == 0) return absl::InvalidArgumentError("q: needs at least one token");
    if (out.defined() && out.sizes() != at::IntArrayRef(q_shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "out: expected ", Shape(q_shape), " (the shape of q), got ", Shape(out.sizes())));
    }
    return absl::OkStatus();
  }

  absl::Status CheckShapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& out) const {
    const SessionOptions& o = options_;
    ATTNKIT_RETURN_IF_ERROR(CheckQueries(q, at::Tensor()));  // out after k and v
    const int64_t T = q.size(2);
    const std::vector<int64_t> q_shape{o.batch_size, o.num_heads, T, o.head_dim};
    const std::vector<int64_t> kv_shape{o.batch_size, o.num_kv_heads, T, o.head_dim};
    if (k.sizes() != at::IntArrayRef(kv_shape)) {
      return absl::InvalidArgumentError(absl::StrCat("k: expected ", Shape(kv_shape),
                                                     " (num_kv_heads and the tokens of q), got ",
                                                     Shape(k.sizes())));
    }
    if (v.sizes() != at::IntArrayRef(kv_shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("v: expected ", Shape(kv_shape), ", got ", Shape(v.sizes())));
    }
    if (out.sizes() != at::IntArrayRef(q_shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "out: expected ", Shape(q_shape), " (the shape of q), got ", Shape(out.sizes())));
    }
    return absl::OkStatus();
  }

  // Layers run in order within a step: layer l follows layer l-1 of the same step. Steps are
  // numbered from 0 in every message: a layer that has run s steps is called for step s.
  absl::Status CheckOrder(int layer) const {
    const int64_t step = layers_[layer].steps;
    if (layer > 0 && layers_[layer - 1].steps != step + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer: layer ", layer, " called for step ", step, " before layer ", layer - 1,
          " ran step ", step, " (layers run in order within a step, starting at layer 0; steps ",
          "count from 0)"));
    }
    if (layer == 0 && layers_.back().steps != step && options_.num_layers > 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer: layer 0 called for step ", step, " before layer ", options_.num_layers - 1,
          " finished step ", step - 1, " (steps count from 0)"));
    }
    if (layer == 0 && layers_.back().observe_passes != layers_.front().observe_passes) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer: layer 0 called for step ", step, " while observe pass ",
          layers_.back().observe_passes, " is partway through its layers (layer ",
          options_.num_layers - 1, " has not observed it; observe passes run every layer)"));
    }
    return absl::OkStatus();
  }

  // Observe passes run the layers in order like steps (passes numbered from 0), and only between
  // steps: a step partway through its layers would leave the layers' caches at different tokens.
  absl::Status CheckObserveOrder(int layer) const {
    const int last = options_.num_layers - 1;
    if (layers_.front().steps != layers_.back().steps) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer: observe of layer ", layer, " while step ", layers_.back().steps,
                       " is partway through its layers (layer 0 ran it, layer ", last,
                       " not yet); observe between steps"));
    }
    const int64_t pass = layers_[layer].observe_passes;
    if (layer > 0 && layers_[layer - 1].observe_passes != pass + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          "layer: observe of layer ", layer, " for observe pass ", pass, " before layer ",
          layer - 1, " observed pass ", pass,
          " (observe passes run the layers in order, starting at layer 0; passes count from 0)"));
    }
    if (layer == 0 && last > 0 && layers_.back().observe_passes != pass) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer: observe of layer 0 for observe pass ", pass, " before layer ", last,
                       " finished observe pass ", pass - 1, " (passes count from 0)"));
    }
    return absl::OkStatus();
  }

  // Every input finite. Small device inputs (decode steps): one reduction over the three and one
  // round trip (each launch and each wait costs a GPU caller tens of microseconds per layer); they
  // are told apart only when something is not finite. Prompts are checked one by one, without
  // the copy.
  static absl::Status CheckFinite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    if (!q.is_cpu() && q.numel() + k.numel() + v.numel() <= (int64_t{1} << 20)) {
      const at::Tensor all =
          at::cat({q.reshape(-1), k.to(q.device()).reshape(-1), v.to(q.device()).reshape(-1)});
      if (at::isfinite(all).all().item<bool>()) return absl::OkStatus();
    }
    for (const auto& [t, name] :
         {std::pair<const at::Tensor*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
      if (!at::isfinite(*t).all().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": contains NaN or infinity"));
      }
    }
    return absl::OkStatus();
  }

  // Under a schedule, a scorer that reads only its window's queries (SnapKV, R-KV) observes the
  // last window_rows decode calls before each scheduled eviction, as DecodingPress scores with the
  // newest queries when it compresses; earlier calls of the interval are not observed. Scorers that
  // sum every query (H2O) or keep query statistics observe every call.
  bool SkipsObservation(const ObservationNeeds& needs, int64_t decode_steps, int64_t T) const {
    const int interval = options_.eviction.interval_steps;
    if (T != 1 || interval <= 1 || needs.window_rows == 0 || needs.all_queries_sum ||
        needs.queries) {
      return false;
    }
    return decode_steps + 1 <= interval - needs.window_rows;  // this call's count in the interval
  }

  // DuoAttention's streaming heads of `layer` keep their first sink_tokens and last recent_tokens
  // (cache order, which is position order without eviction); retrieval heads keep everything.
  void StreamHeads(int layer) {
    const HeadSplitOptions& split = options_.head_split;
    const int64_t sink = split.sink_tokens, recent = split.recent_tokens;
    LayerCounters& counters = layers_[layer];
    bool evicted = false;
    std::vector<int64_t> kept;
    for (int64_t b = 0; b < options_.batch_size; ++b) {
      for (int h = 0; h < options_.num_kv_heads; ++h) {
        if (!split.Streams(layer, h, options_.num_kv_heads)) continue;
        const int64_t index = HeadIndex(b, h), length = store_->head(layer, index).length;
        if (length <= sink + recent) continue;
        kept.clear();
        for (int64_t i = 0; i < sink; ++i) kept.push_back(i);
        for (int64_t i = length - recent; i < length; ++i) kept.push_back(i);
        store_->Keep(layer, index, kept);
        counters.evicted_tokens += length - static_cast<int64_t>(kept.size());
        evicted = true;
      }
    }
    if (!evicted) return;
    store_->FinishKeep(layer);
    ++counters.evictions;
  }

  // The cache length of each kv head of sequence b in `layer`.
  std::vector<int64_t> HeadLengths(int layer, int64_t b) const {
    std::vector<int64_t> lengths(options_.num_kv_heads);
    for (int h = 0; h < options_.num_kv_heads; ++h) {
      lengths[h] = store_->head(layer, HeadIndex(b, h)).length;
    }
    return lengths;
  }

  // Sequence b's part (row i) of a call's result as the policy's observation; `queries` is the
  // call's q, `first_rotated` the RoPE position of its first query.
  Observation MakeObservation(int layer, int64_t b, int64_t i, const EvictionPolicy& policy,
                              const session::StepResult& step, const at::Tensor& queries,
                              int64_t first_rotated) const {
    const std::vector<int64_t> lengths = HeadLengths(layer, b);
    const int64_t max_len = *std::max_element(lengths.begin(), lengths.end());
    Observation obs;
    // Views of row i up to the longest head (no narrowing view when the rows end there, as a
    // decode step's do: each ATen view costs about a microsecond, paid every observed step).
    if (step.window_rows.defined()) {
      obs.window_rows = step.window_rows[i];
      if (obs.window_rows.size(2) != max_len)
        obs.window_rows = obs.window_rows.narrow(2, 0, max_len);
    }
    if (step.column_sums.defined()) {
      obs.all_queries_sum = step.column_sums[i];
      if (obs.all_queries_sum.size(1) != max_len) {
        obs.all_queries_sum = obs.all_queries_sum.narrow(1, 0, max_len);
      }
    }
    if (policy.per_head()) obs.lengths = lengths;
    if (policy.needs().queries) {
      obs.queries = queries[i];
      obs.first_position = first_rotated;
      obs.rope = options_.has_rope ? &options_.rope : nullptr;
    }
    return obs;
  }

  // Sequence b's eviction policy, made on its first use (a slot's policy is created lazily).
  absl::Status EnsurePolicy(int64_t b) {
    if (policies_[b] != nullptr) return absl::OkStatus();
    ATTNKIT_ASSIGN_OR_RETURN(policies_[b],
                             EvictionPolicy::Create(options_.eviction, options_.num_layers,
                                                    options_.num_heads, options_.num_kv_heads));
    return absl::OkStatus();
  }

  // The policy's part of a step for sequence b (row i of `step` and of `step_queries`, the call's
  // queries), which brought T tokens: observe, and evict when over budget. `first_rotated`: the
  // RoPE position of its first new token.
  absl::Status ObserveAndEvict(int layer, int64_t b, int64_t i, const session::StepResult& step,
                               const at::Tensor& step_queries, int64_t first_rotated, int64_t T) {
    const SessionOptions& o = options_;
    ATTNKIT_RETURN_IF_ERROR(EnsurePolicy(b));
    EvictionPolicy& policy = *policies_[b];
    std::vector<int64_t>& decode_steps = layers_[layer].decode_steps;
    if (decode_steps.empty()) decode_steps.assign(o.batch_size, 0);
    const bool skip = SkipsObservation(policy.needs(), decode_steps[b], T);
    if (!skip || policy.needs().decode_column_sums) {
      RECORD_USER_SCOPE("attnkit::observe");  // profiler traces; attnkit-bench host_ops
      // A skipped call still feeds CaM's running attention (merge_only).
      Observation obs = MakeObservation(layer, b, i, policy, step, step_queries, first_rotated);
      obs.call_queries = T;
      obs.merge_only = skip;
      ATTNKIT_RETURN_IF_ERROR(policy.Observe(layer, obs));
    }
    if (o.eviction.defer_eviction_to_decode && T > 1) return absl::OkStatus();
    return EvictAfterObserve(layer, b, T, policy);
  }

  // The eviction part of ObserveAndEvict (its own profiler scope).
  absl::Status EvictAfterObserve(int layer, int64_t b, int64_t T, EvictionPolicy& policy) {
    RECORD_USER_SCOPE("attnkit::evict");
    const SessionOptions& o = options_;
    std::vector<int64_t>& decode_steps = layers_[layer].decode_steps;
    // CAKE's cascading budgets: the earlier layers this prompt's allocation shrank evict again.
    for (int earlier : policy.TakeCascade()) {
      ATTNKIT_RETURN_IF_ERROR(EvictIfOver(earlier, b, policy));
    }
    if (T == 1 && o.eviction.interval_steps > 1) {
      // DecodingPress's schedule: every interval_steps-th decode call may evict; the count restarts
      // whether or not the layer was over budget then.
      int64_t& since = decode_steps[b];
      if (++since < o.eviction.interval_steps) return absl::OkStatus();
      since = 0;
    }
    return EvictIfOver(layer, b, policy);
  }

  // Sequence b's eviction in `layer` when the policy finds it over budget: select, write CaM's
  // merged values, keep, re-rotate.
  absl::Status EvictIfOver(int layer, int64_t b, EvictionPolicy& policy) {
    const SessionOptions& o = options_;
    const std::vector<int64_t> lengths = HeadLengths(layer, b);
    const std::vector<int64_t> select_lengths =
        policy.per_head() ? lengths : std::vector<int64_t>{lengths[0]};
    policy.SetTokensSeen(layer, store_->appended(layer, b));  // the budget of ratio mode
    if (!policy.OverBudget(layer, select_lengths)) return absl::OkStatus();
    const at::Tensor keys = policy.needs().keys ? store_->SequenceKeys(layer, b) : at::Tensor();
    const at::Tensor values =
        policy.needs().values ? store_->SequenceValues(layer, b) : at::Tensor();
    ATTNKIT_ASSIGN_OR_RETURN(auto kept, policy.Select(layer, select_lengths, keys, values));
    // CaM: the evicted values merged into kept tokens are written before the tokens move.
    std::vector<MergedValues> merged = policy.TakeMergedValues();
    for (size_t h = 0; h < merged.size(); ++h) {
      if (merged[h].rows.empty()) continue;
      store_->WriteValueRows(layer, HeadIndex(b, static_cast<int>(h)), merged[h].rows,
                             merged[h].values);
    }
    LayerCounters& counters = layers_[layer];
    for (int h = 0; h < o.num_kv_heads; ++h) {
      const int64_t index = HeadIndex(b, h);
      const int64_t before = store_->head(layer, index).length;
      store_->Keep(layer, index, kept[policy.per_head() ? h : 0]);
      counters.evicted_tokens += before - store_->head(layer, index).length;
    }
    store_->FinishKeep(layer);
    for (int h = 0; Rerotates() && h < o.num_kv_heads; ++h) {
      store_->Rerotate(layer, HeadIndex(b, h), o.rope);
    }
    ++counters.evictions;
    return absl::OkStatus();
  }

  SessionOptions options_;
  StoreKind kind_ = StoreKind::kHost;
  std::unique_ptr<sparse::SparseAttention> sparse_;  // the configured sparse mode, if any
  std::unique_ptr<KvStore> store_;
  std::vector<LayerCounters> layers_;
  std::vector<std::unique_ptr<EvictionPolicy>> policies_;
  std::vector<int64_t> seen_;
  std::vector<int64_t> all_sequences_;  // 0, 1, ..., batch_size - 1
  int64_t steps_ = 0;
  int64_t peak_bytes_ = 0;
  int64_t peak_within_calls_ = 0;  // Stats().peak_bytes_within_calls
  double attention_seconds_ = 0, policy_seconds_ = 0;
};

absl::StatusOr<std::unique_ptr<Session>> MakeSession(const SessionOptions& options,
                                                     StoreKind kind) {
  ATTNKIT_RETURN_IF_ERROR(ValidateSessionOptions(options));
  auto session = std::make_unique<SessionImpl>(options);
  ATTNKIT_RETURN_IF_ERROR(session->Init(kind));
  return std::unique_ptr<Session>(std::move(session));
}

}  // namespace

absl::StatusOr<std::string> Session::Save() const {
  return absl::UnimplementedError("session: this Session implementation cannot save its state");
}

absl::Status Session::Load(absl::string_view) {
  return absl::UnimplementedError("session: this Session implementation cannot load a state");
}

absl::Status Session::AttendRagged(int, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, absl::Span<const int64_t>) {
  return absl::UnimplementedError("session: this Session implementation has no ragged calls");
}

absl::Status Session::ResetSequence(int) {
  return absl::UnimplementedError("session: this Session implementation cannot reset a sequence");
}

absl::StatusOr<std::unique_ptr<Session>> Session::Fork() const {
  return absl::UnimplementedError("session: this Session implementation cannot fork");
}

absl::StatusOr<std::unique_ptr<Session>> Session::Create(const SessionOptions& options) {
  return MakeSession(options, StoreKind::kHost);
}

namespace session {

absl::StatusOr<std::unique_ptr<Session>> CreateTensorPathSessionForTesting(
    const SessionOptions& options) {
  if (options.device != DeviceKind::kCPU) {
    return absl::InvalidArgumentError("device: the testing entry runs the tensor path on the CPU");
  }
  return MakeSession(options, StoreKind::kDevice);
}

}  // namespace session

}  // namespace attnkit
