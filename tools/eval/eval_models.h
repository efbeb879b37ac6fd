// The two real models of attnkit-eval behind one interface (shape, session config text and a
// forward through a session), and the session wrappers the evaluation needs: one recording the
// full-cache run's queries and keys (for attention recall), one keeping random tokens (to check
// that the quality bars catch a bad policy).
#ifndef ATTNKIT_TOOLS_EVAL_EVAL_MODELS_H_
#define ATTNKIT_TOOLS_EVAL_EVAL_MODELS_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attnkit/session/session.h"
#include "hf_llama.h"
#include "llama2c_model.h"

namespace attnkit::tools {

struct EvalModel {
  std::string name;  // the folder under the models directory
  int n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab_size = 0, seq_len = 0;
  int64_t bos = 1;
  // Appended to every configuration: the model's shape and RoPE (not allowed in the files).
  std::string shape_text;
  std::function<absl::StatusOr<at::Tensor>(Session&, const std::vector<int64_t>&)> forward;
};

// The models attnkit-eval knows, by folder name.
inline std::vector<std::string> KnownModels() { return {"stories260k", "tinystories-656k"}; }

// Loads `name` from `dir` (the model's own folder).
inline absl::StatusOr<EvalModel> LoadEvalModel(const std::string& name, const std::string& dir) {
  EvalModel m;
  m.name = name;
  if (name == "stories260k") {
    auto model = samples::Llama2c::Load(dir);
    if (!model.ok()) return model.status();
    auto shared = std::make_shared<samples::Llama2c>(std::move(*model));
    m.n_layers = shared->n_layers, m.n_heads = shared->n_heads, m.n_kv_heads = shared->n_kv_heads;
    m.head_dim = shared->head_dim(), m.vocab_size = shared->vocab_size, m.seq_len = shared->seq_len;
    m.shape_text = " rope { theta: 10000 interleaved: true }";
    m.forward = [shared](Session& s, const std::vector<int64_t>& ids) {
      return shared->Forward(s, ids);
    };
  } else if (name == "tinystories-656k") {
    auto model = HfLlama::Load(dir);
    if (!model.ok()) return model.status();
    auto shared = std::make_shared<HfLlama>(std::move(*model));
    m.n_layers = shared->n_layers, m.n_heads = shared->n_heads, m.n_kv_heads = shared->n_kv_heads;
    m.head_dim = shared->head_dim(), m.vocab_size = shared->vocab_size, m.seq_len = shared->seq_len;
    m.shape_text = absl::StrCat(" rope { theta: ", shared->rope_theta, " interleaved: false }");
    m.forward = [shared](Session& s, const std::vector<int64_t>& ids) {
      return shared->Forward(s, ids);
    };
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown model ", name));
  }
  m.shape_text =
      absl::StrCat("\nnum_layers: ", m.n_layers, " num_heads: ", m.n_heads,
                   " num_kv_heads: ", m.n_kv_heads, " head_dim: ", m.head_dim, m.shape_text, "\n");
  return m;
}

// Forwards every call to a session and keeps a copy of each layer's queries [T, H, d] and keys
// [T, Hkv, d], in call order (the full-cache run, whose attention the recall metric recomputes).
class RecordingSession : public Session {
 public:
  explicit RecordingSession(std::unique_ptr<Session> inner)
      : inner_(std::move(inner)), q_(inner_->options().num_layers), k_(q_.size()) {}
  const SessionOptions& options() const override { return inner_->options(); }
  absl::Status Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& out) override {
    q_[layer].push_back(q[0].permute({1, 0, 2}).contiguous());
    k_[layer].push_back(k[0].permute({1, 0, 2}).contiguous());
    return inner_->Attend(layer, q, k, v, out);
  }
  absl::Status Observe(int layer, const at::Tensor& q, const at::Tensor& out) override {
    return inner_->Observe(layer, q, out);
  }
  absl::StatusOr<std::vector<int64_t>> Positions(int layer, int sequence,
                                                 int kv_head) const override {
    return inner_->Positions(layer, sequence, kv_head);
  }
  absl::StatusOr<int64_t> NextPosition(int sequence) const override {
    return inner_->NextPosition(sequence);
  }
  SessionStatsView Stats() const override { return inner_->Stats(); }
  int64_t BytesHeld() const override { return inner_->BytesHeld(); }
  void Reset() override {
    inner_->Reset();
    for (auto& l : q_) l.clear();
    for (auto& l : k_) l.clear();
  }
  at::Tensor Queries(int layer) const { return at::cat(q_[layer], 0); }
  at::Tensor Keys(int layer) const { return at::cat(k_[layer], 0); }

 private:
  std::unique_ptr<Session> inner_;
  std::vector<std::vector<at::Tensor>> q_, k_;
};

// A cache that keeps the start and recent areas of `options.eviction` and a uniformly random
// choice of the other tokens (one choice per layer, shared by its kv heads), with exact attention
// over what it holds. Bytes are counted as float32 pages of options.page_size tokens per kv head.
// Not a policy of the library: attnkit-eval --substitute-random runs it in place of a configured
// policy to show that the quality bars fail for a policy that keeps random tokens.
class RandomKeepSession : public Session {
 public:
  RandomKeepSession(const SessionOptions& options, uint64_t seed)
      : options_(options), rng_(seed), layers_(options.num_layers) {}
  const SessionOptions& options() const override { return options_; }

  absl::Status Attend(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const at::Tensor& out) override {
    Layer& c = layers_[layer];
    const int64_t T = q.size(2), H = q.size(1), Hkv = k.size(1), before = c.pos.size();
    const int64_t first = layer == 0 ? seen_ : seen_ - T;
    at::Tensor kn = k[0].to(at::kFloat), vn = v[0].to(at::kFloat);  // [Hkv, T, d]
    c.k = c.k.defined() ? at::cat({c.k, kn}, 1) : kn.contiguous();
    c.v = c.v.defined() ? at::cat({c.v, vn}, 1) : vn.contiguous();
    for (int64_t t = 0; t < T; ++t) c.pos.push_back(first + t);
    if (layer == 0) seen_ += T;
    const int64_t n = c.pos.size();
    at::Tensor group = at::arange(H, at::kLong).div(H / Hkv, "floor");
    at::Tensor keys = c.k.index_select(0, group), values = c.v.index_select(0, group);
    const double scale = options_.scale > 0 ? options_.scale : 1.0 / std::sqrt(q.size(3));
    at::Tensor scores = at::matmul(q[0].to(at::kFloat), keys.transpose(1, 2)).mul(scale);
    // Query t sees the cache before this call and the new tokens up to itself.
    at::Tensor allowed = at::arange(n, at::kLong)
                             .unsqueeze(0)
                             .le(at::arange(T, at::kLong).add(before).unsqueeze(1));  // [T, n]
    scores = scores.masked_fill(allowed.logical_not().unsqueeze(0), -INFINITY);
    out[0].copy_(at::matmul(at::softmax(scores, -1), values));
    const EvictionOptions& e = options_.eviction;
    const int64_t budget = e.max_cache_tokens();
    if (e.enabled && n > budget) {
      const int64_t middle = n - e.start_tokens - e.recent_tokens;
      std::vector<int64_t> pick(middle);
      for (int64_t i = 0; i < middle; ++i) pick[i] = e.start_tokens + i;
      std::shuffle(pick.begin(), pick.end(), rng_);
      pick.resize(e.intermediate_tokens);
      std::vector<int64_t> keep;
      for (int64_t i = 0; i < e.start_tokens; ++i) keep.push_back(i);
      std::sort(pick.begin(), pick.end());
      keep.insert(keep.end(), pick.begin(), pick.end());
      for (int64_t i = n - e.recent_tokens; i < n; ++i) keep.push_back(i);
      at::Tensor index = at::tensor(keep, at::kLong);
      c.k = c.k.index_select(1, index).contiguous();
      c.v = c.v.index_select(1, index).contiguous();
      std::vector<int64_t> pos;
      for (int64_t i : keep) pos.push_back(c.pos[i]);
      c.pos = std::move(pos);
    }
    peak_ = std::max(peak_, BytesHeld());
    return absl::OkStatus();
  }
  // Random choices read no scores: observed queries only give the output (every query over the
  // whole cache).
  absl::Status Observe(int layer, const at::Tensor& q, const at::Tensor& out) override {
    const Layer& c = layers_[layer];
    if (!out.defined() || !c.k.defined()) return absl::OkStatus();
    const int64_t H = q.size(1), Hkv = c.k.size(0);
    at::Tensor group = at::arange(H, at::kLong).div(H / Hkv, "floor");
    const double scale = options_.scale > 0 ? options_.scale : 1.0 / std::sqrt(q.size(3));
    at::Tensor scores =
        at::matmul(q[0].to(at::kFloat), c.k.index_select(0, group).transpose(1, 2)).mul(scale);
    out[0].copy_(at::matmul(at::softmax(scores, -1), c.v.index_select(0, group)));
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<int64_t>> Positions(int layer, int, int) const override {
    return layers_[layer].pos;
  }
  absl::StatusOr<int64_t> NextPosition(int) const override { return seen_; }
  SessionStatsView Stats() const override {
    SessionStatsView s;
    s.tokens_seen = seen_;
    s.bytes_held = BytesHeld();
    s.peak_bytes_held = peak_;
    s.page_size = options_.page_size;
    return s;
  }
  int64_t BytesHeld() const override {
    int64_t bytes = 0;
    const int64_t page = options_.page_size;
    for (const Layer& c : layers_) {
      const int64_t pages = (static_cast<int64_t>(c.pos.size()) + page - 1) / page;
      bytes += pages * page * options_.num_kv_heads * options_.head_dim * 2 * 4;
    }
    return bytes;
  }
  void Reset() override {
    for (Layer& c : layers_) c = Layer();
    seen_ = 0;
    peak_ = 0;
  }

 private:
  struct Layer {
    at::Tensor k, v;  // [Hkv, n, d]
    std::vector<int64_t> pos;
  };
  SessionOptions options_;
  std::mt19937_64 rng_;
  std::vector<Layer> layers_;
  int64_t seen_ = 0, peak_ = 0;
};

}  // namespace attnkit::tools

#endif  // ATTNKIT_TOOLS_EVAL_EVAL_MODELS_H_
