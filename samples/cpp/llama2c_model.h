// A llama2.c-format Llama (stories260k) in ATen whose attention goes through an attnkit::Session:
// the C++ counterpart of samples/c/generate.c, shared by samples/cpp/generate.cc and the real-model
// test. Header-only so each user compiles it with its own flags.
#ifndef ATTNKIT_SAMPLES_CPP_LLAMA2C_MODEL_H_
#define ATTNKIT_SAMPLES_CPP_LLAMA2C_MODEL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "attnkit/session/session.h"

namespace attnkit::samples {

struct Llama2c {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  at::Tensor embedding, rms_final;  // [V, D], [D]
  std::vector<at::Tensor> rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3;
  std::vector<std::string> pieces;

  int head_dim() const { return dim / n_heads; }

  static absl::StatusOr<Llama2c> Load(const std::string& dir) {
    Llama2c m;
    std::ifstream in(dir + "/stories260K.bin", std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", dir, "/stories260K.bin"));
    int32_t h[7];
    in.read(reinterpret_cast<char*>(h), sizeof(h));
    m.dim = h[0], m.hidden_dim = h[1], m.n_layers = h[2], m.n_heads = h[3], m.n_kv_heads = h[4];
    m.vocab_size = std::abs(h[5]), m.seq_len = h[6];
    const int64_t D = m.dim, H = m.hidden_dim, kv = D * m.n_kv_heads / m.n_heads, L = m.n_layers;
    bool ok = true;
    auto read = [&](std::vector<int64_t> shape) {
      at::Tensor t = at::empty(shape, at::kFloat);
      in.read(static_cast<char*>(t.data_ptr()), t.numel() * 4);
      ok = ok && static_cast<bool>(in);
      return t;
    };
    auto per_layer = [&](std::vector<at::Tensor>& out, std::vector<int64_t> shape) {
      for (int64_t l = 0; l < L; ++l) out.push_back(read(shape));
    };
    m.embedding = read({m.vocab_size, D});
    per_layer(m.rms_att, {D});
    per_layer(m.wq, {D, D});
    per_layer(m.wk, {kv, D});
    per_layer(m.wv, {kv, D});
    per_layer(m.wo, {D, D});
    per_layer(m.rms_ffn, {D});
    per_layer(m.w1, {H, D});
    per_layer(m.w2, {D, H});
    per_layer(m.w3, {H, D});
    m.rms_final = read({D});
    if (!ok) return absl::DataLossError("stories260K.bin is truncated");
    std::ifstream tok(dir + "/tok512.bin", std::ios::binary);
    if (!tok) return absl::NotFoundError(absl::StrCat("cannot open ", dir, "/tok512.bin"));
    int32_t max_len;
    tok.read(reinterpret_cast<char*>(&max_len), 4);
    for (int i = 0; i < m.vocab_size; ++i) {
      float score;
      int32_t len;
      tok.read(reinterpret_cast<char*>(&score), 4);
      tok.read(reinterpret_cast<char*>(&len), 4);
      if (!tok || len < 0 || len > 4096) return absl::DataLossError("tok512.bin is malformed");
      std::string piece(len, '\0');
      tok.read(piece.data(), len);
      m.pieces.push_back(BytePiece(piece));
    }
    return m;
  }

  static at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w) {
    return x.mul(at::rsqrt(x.pow(2).mean(-1, true).add(1e-5))).mul(w);
  }

  // RoPE on interleaved pairs of [T, heads, hd] at positions first.. .
  static at::Tensor Rope(const at::Tensor& x, int64_t first) {
    const int64_t T = x.size(0), hd = x.size(2);
    at::Tensor i = at::arange(0, hd, 2, at::kFloat);
    at::Tensor freq = at::pow(10000.0, i.div(static_cast<double>(hd))).reciprocal();  // [hd/2]
    at::Tensor angle =
        at::arange(first, first + T, at::kFloat).unsqueeze(1).mul(freq);  // [T, hd/2]
    at::Tensor c = angle.cos().unsqueeze(1), s = angle.sin().unsqueeze(1);
    at::Tensor pairs = x.reshape({T, x.size(1), hd / 2, 2});
    at::Tensor a = pairs.select(3, 0), b = pairs.select(3, 1);
    return at::stack({a.mul(c).sub(b.mul(s)), a.mul(s).add(b.mul(c))}, -1).reshape(x.sizes());
  }

  // Logits [T, V] of `ids` appended to what `session` holds; positions continue from
  // session.NextPosition(0). Attention goes through the session, in [T, heads, hd] buffers viewed
  // as [1, heads, T, hd] (no copies).
  absl::StatusOr<at::Tensor> Forward(Session& session, const std::vector<int64_t>& ids) const {
    const int64_t T = ids.size(), hd = head_dim();
    auto first = session.NextPosition(0);
    if (!first.ok()) return first.status();
    at::Tensor x = embedding.index_select(0, at::tensor(ids, at::kLong));  // [T, D]
    for (int l = 0; l < n_layers; ++l) {
      at::Tensor xb = RmsNorm(x, rms_att[l]);
      at::Tensor q = Rope(at::matmul(xb, wq[l].t()).reshape({T, n_heads, hd}), *first);
      at::Tensor k = Rope(at::matmul(xb, wk[l].t()).reshape({T, n_kv_heads, hd}), *first);
      at::Tensor v = at::matmul(xb, wv[l].t()).reshape({T, n_kv_heads, hd});
      at::Tensor out = at::empty({T, n_heads, hd});
      absl::Status s =
          session.Attend(l, q.permute({1, 0, 2}).unsqueeze(0), k.permute({1, 0, 2}).unsqueeze(0),
                         v.permute({1, 0, 2}).unsqueeze(0), out.permute({1, 0, 2}).unsqueeze(0));
      if (!s.ok()) return s;
      x = x.add(at::matmul(out.reshape({T, dim}), wo[l].t()));
      at::Tensor h = RmsNorm(x, rms_ffn[l]);
      at::Tensor gate = at::matmul(h, w1[l].t());
      x = x.add(at::matmul(gate.mul(at::sigmoid(gate)).mul(at::matmul(h, w3[l].t())), w2[l].t()));
    }
    return at::matmul(RmsNorm(x, rms_final), embedding.t());
  }

  // Greedy generation of `steps` tokens after `prompt`.
  absl::StatusOr<std::vector<int64_t>> Generate(Session& session,
                                                const std::vector<int64_t>& prompt,
                                                int steps) const {
    std::vector<int64_t> out;
    auto logits = Forward(session, prompt);
    for (int s = 0; s < steps; ++s) {
      if (!logits.ok()) return logits.status();
      out.push_back(logits->select(0, logits->size(0) - 1).argmax().item<int64_t>());
      if (s + 1 < steps) logits = Forward(session, {out.back()});
    }
    return out;
  }

  // A byte-fallback piece "<0xHH>" stands for the byte 0xHH (a newline is <0x0A>), as in llama2.c's
  // decode; a NUL byte prints nothing. Other pieces are returned unchanged.
  static std::string BytePiece(const std::string& piece) {
    unsigned value = 0;
    if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return piece;
    for (int i = 3; i < 5; ++i) {
      const char c = piece[i];
      const int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                               : -1;
      if (digit < 0) return piece;
      value = value * 16 + static_cast<unsigned>(digit);
    }
    return value == 0 ? std::string() : std::string(1, static_cast<char>(value));
  }

  std::string Decode(const std::vector<int64_t>& ids) const {
    std::string text;
    for (int64_t id : ids) {
      if (id != 1) text += pieces[id];  // BOS prints nothing
    }
    return text;
  }
};

// Integer array `key` of a small JSON file such as reference.json.
inline std::vector<int64_t> ReadJsonIds(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<int64_t> ids;
  size_t at = text.find("\"" + key + "\"");
  if (at == std::string::npos || (at = text.find('[', at)) == std::string::npos) return ids;
  const size_t end = text.find(']', at);
  std::stringstream list(text.substr(at + 1, end - at - 1));
  std::string item;
  while (std::getline(list, item, ',')) ids.push_back(std::stoll(item));
  return ids;
}

}  // namespace attnkit::samples

#endif  // ATTNKIT_SAMPLES_CPP_LLAMA2C_MODEL_H_
