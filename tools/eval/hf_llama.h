// A Hugging Face LlamaForCausalLM (tinystories-656k) in ATen whose attention goes through an
// attnkit::Session: RMSNorm, RoPE in the rotate_half layout, grouped-query attention, SwiGLU MLP
// and an lm_head tied with the embedding. Header-only like samples/cpp/llama2c_model.h, so each
// user compiles it with its own flags.
//
// The only file of tools/ that reads safetensors (support/safetensors.h and support/tensor_io.h,
// from tests/support): when that reader moves, this include block and the target's link line are
// what change.
#ifndef ATTNKIT_TOOLS_EVAL_HF_LLAMA_H_
#define ATTNKIT_TOOLS_EVAL_HF_LLAMA_H_

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attnkit/session/session.h"
#include "support/safetensors.h"
#include "support/tensor_io.h"

namespace attnkit::tools {

struct HfLlama {
  int hidden = 0, intermediate = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  double rope_theta = 10000.0, rms_eps = 1e-6;
  at::Tensor embedding, norm;  // [V, D] (also the lm_head), [D]
  std::vector<at::Tensor> input_norm, post_norm, wq, wk, wv, wo, gate, up, down;

  int head_dim() const { return hidden / n_heads; }

  // The number after "key": in a flat JSON object such as config.json; `fallback` when absent.
  static double JsonNumber(const std::string& text, const std::string& key, double fallback) {
    size_t at = text.find("\"" + key + "\"");
    if (at == std::string::npos || (at = text.find(':', at)) == std::string::npos) return fallback;
    try {
      return std::stod(text.substr(at + 1, 40));
    } catch (...) {
      return fallback;
    }
  }

  static absl::StatusOr<HfLlama> Load(const std::string& dir) {
    std::ifstream in(dir + "/config.json");
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", dir, "/config.json"));
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string config = ss.str();
    HfLlama m;
    m.hidden = static_cast<int>(JsonNumber(config, "hidden_size", 0));
    m.intermediate = static_cast<int>(JsonNumber(config, "intermediate_size", 0));
    m.n_layers = static_cast<int>(JsonNumber(config, "num_hidden_layers", 0));
    m.n_heads = static_cast<int>(JsonNumber(config, "num_attention_heads", 0));
    m.n_kv_heads = static_cast<int>(JsonNumber(config, "num_key_value_heads", m.n_heads));
    m.vocab_size = static_cast<int>(JsonNumber(config, "vocab_size", 0));
    m.seq_len = static_cast<int>(JsonNumber(config, "max_position_embeddings", 0));
    m.rope_theta = JsonNumber(config, "rope_theta", 10000.0);
    m.rms_eps = JsonNumber(config, "rms_norm_eps", 1e-6);
    if (m.hidden <= 0 || m.n_layers <= 0 || m.n_heads <= 0 || m.n_kv_heads <= 0 ||
        m.hidden % m.n_heads != 0 || m.n_heads % m.n_kv_heads != 0 || m.vocab_size <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/config.json: not a Llama shape"));
    }
    auto file = SafetensorsFile::Read(dir + "/model.safetensors");
    if (!file.ok()) return file.status();
    absl::Status status;
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
      auto t = LoadTensor(*file, name);
      if (!t.ok()) {
        if (status.ok()) status = t.status();
        return at::Tensor();
      }
      if (t->sizes() != at::IntArrayRef(shape)) {
        if (status.ok()) status = absl::DataLossError(absl::StrCat(name, ": unexpected shape"));
        return at::Tensor();
      }
      return t->to(at::kFloat).contiguous();
    };
    const int64_t D = m.hidden, I = m.intermediate, kv = int64_t{m.head_dim()} * m.n_kv_heads;
    // Tied: the lm_head is the embedding (the file may hold either name).
    m.embedding = file->Has("lm_head.weight") ? get("lm_head.weight", {m.vocab_size, D})
                                              : get("model.embed_tokens.weight", {m.vocab_size, D});
    m.norm = get("model.norm.weight", {D});
    for (int l = 0; l < m.n_layers; ++l) {
      const std::string p = absl::StrCat("model.layers.", l, ".");
      m.input_norm.push_back(get(p + "input_layernorm.weight", {D}));
      m.post_norm.push_back(get(p + "post_attention_layernorm.weight", {D}));
      m.wq.push_back(get(p + "self_attn.q_proj.weight", {D, D}));
      m.wk.push_back(get(p + "self_attn.k_proj.weight", {kv, D}));
      m.wv.push_back(get(p + "self_attn.v_proj.weight", {kv, D}));
      m.wo.push_back(get(p + "self_attn.o_proj.weight", {D, D}));
      m.gate.push_back(get(p + "mlp.gate_proj.weight", {I, D}));
      m.up.push_back(get(p + "mlp.up_proj.weight", {I, D}));
      m.down.push_back(get(p + "mlp.down_proj.weight", {D, I}));
    }
    if (!status.ok()) return status;
    return m;
  }

  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w) const {
    return x.mul(at::rsqrt(x.pow(2).mean(-1, true).add(rms_eps))).mul(w);
  }

  // RoPE, rotate_half layout (pairs (x[i], x[i + hd/2])), of [T, heads, hd] at positions first.. .
  at::Tensor Rope(const at::Tensor& x, int64_t first) const {
    const int64_t T = x.size(0), hd = x.size(2);
    at::Tensor i = at::arange(0, hd, 2, at::kFloat);
    at::Tensor freq = at::pow(rope_theta, i.div(static_cast<double>(hd))).reciprocal();  // [hd/2]
    at::Tensor angle = at::arange(first, first + T, at::kFloat).unsqueeze(1).mul(freq);
    at::Tensor c = at::cat({angle, angle}, -1).cos().unsqueeze(1);  // [T, 1, hd]
    at::Tensor s = at::cat({angle, angle}, -1).sin().unsqueeze(1);
    at::Tensor rotated = at::cat({x.narrow(2, hd / 2, hd / 2).neg(), x.narrow(2, 0, hd / 2)}, -1);
    return x.mul(c).add(rotated.mul(s));
  }

  // Logits [T, V] of `ids` appended to what `session` holds (positions from
  // session.NextPosition(0)); attention through the session in [T, heads, hd] buffers viewed as
  // [1, heads, T, hd].
  absl::StatusOr<at::Tensor> Forward(Session& session, const std::vector<int64_t>& ids) const {
    const int64_t T = ids.size(), hd = head_dim();
    auto first = session.NextPosition(0);
    if (!first.ok()) return first.status();
    at::Tensor x = embedding.index_select(0, at::tensor(ids, at::kLong));  // [T, D]
    for (int l = 0; l < n_layers; ++l) {
      at::Tensor xb = RmsNorm(x, input_norm[l]);
      at::Tensor q = Rope(at::matmul(xb, wq[l].t()).reshape({T, n_heads, hd}), *first);
      at::Tensor k = Rope(at::matmul(xb, wk[l].t()).reshape({T, n_kv_heads, hd}), *first);
      at::Tensor v = at::matmul(xb, wv[l].t()).reshape({T, n_kv_heads, hd});
      at::Tensor out = at::empty({T, n_heads, hd});
      absl::Status s =
          session.Attend(l, q.permute({1, 0, 2}).unsqueeze(0), k.permute({1, 0, 2}).unsqueeze(0),
                         v.permute({1, 0, 2}).unsqueeze(0), out.permute({1, 0, 2}).unsqueeze(0));
      if (!s.ok()) return s;
      x = x.add(at::matmul(out.reshape({T, hidden}), wo[l].t()));
      at::Tensor h = RmsNorm(x, post_norm[l]);
      at::Tensor g = at::matmul(h, gate[l].t());
      x = x.add(at::matmul(g.mul(at::sigmoid(g)).mul(at::matmul(h, up[l].t())), down[l].t()));
    }
    return at::matmul(RmsNorm(x, norm), embedding.t());
  }
};

}  // namespace attnkit::tools

#endif  // ATTNKIT_TOOLS_EVAL_HF_LLAMA_H_
