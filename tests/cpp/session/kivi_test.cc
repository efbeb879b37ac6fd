// KIVI's 4-bit and 2-bit pages (kv_format INT4 / INT2): the quantization against the cases written
// by tests/conformance/cases/generate_kivi.py from KIVI's own functions (bit for bit) and against a
// plain ATen reference (edge cases: constant groups, saturation); the host store holding keys per
// channel over groups of tokens and values per token, with its window rule (a group moves at a
// time), compaction (pages from the first moved token quantized again), re-rotation, attention
// over what it holds, and sessions evicting on INT4/INT2 pages.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "cpu/paged_attention.h"
#include "session/kv_store.h"
#include "store_testing.h"
#include "session/rope.h"
#include "support/safetensors.h"
#include "support/tensor_io.h"

namespace attnkit::session {
namespace {

using testing::Dense;
using testing::Host;

using kernels::DequantizeKivi;
using kernels::KiviCode;
using kernels::QuantizeKivi;

at::Tensor ToHalfAndBack(const at::Tensor& t) { return t.to(at::kHalf).to(at::kFloat); }

// The ATen reference of KIVI's quantization of each row of x [m, n] as one group, in float16
// arithmetic (each operation rounded to float16): codes, scale and min per row, the rows
// dequantized as half(half(code * scale) + min) (the fake quantization), and the rows as
// attention reads them, fma(code, scale, min) in float32 (KIVI's decode kernels; computed in
// double, exact here, and rounded once). Constant rows (scale 0) get code 0.
struct KiviRef {
  at::Tensor codes, scale, mn, dequant, read;
};
KiviRef ReferenceKivi(const at::Tensor& x, int bits) {
  const double max_int = (1 << bits) - 1;
  const at::Tensor xs = ToHalfAndBack(x.clamp(-32752, 32752));
  const at::Tensor mn = std::get<0>(xs.min(1, true));
  const at::Tensor mx = std::get<0>(xs.max(1, true));
  const at::Tensor scale = ToHalfAndBack(ToHalfAndBack(mx - mn) / max_int);
  const at::Tensor safe = at::where(scale > 0, scale, at::ones_like(scale));
  const at::Tensor u = ToHalfAndBack(ToHalfAndBack(xs - mn) / safe);
  const at::Tensor codes = at::where(scale > 0, u.clamp(0, max_int).round(), at::zeros_like(u));
  return {codes, scale, mn, ToHalfAndBack(ToHalfAndBack(codes * scale) + mn),
          (codes.to(at::kDouble) * scale.to(at::kDouble) + mn.to(at::kDouble)).to(at::kFloat)};
}

// Keys [L, d] as attention reads them from KIVI pages: per channel over groups of `group` tokens
// (the last group may be shorter).
at::Tensor KeysHeld(const at::Tensor& k, int group, int bits) {
  std::vector<at::Tensor> parts;
  for (int64_t t0 = 0; t0 < k.size(0); t0 += group) {
    const at::Tensor g = k.narrow(0, t0, std::min<int64_t>(group, k.size(0) - t0));
    parts.push_back(ReferenceKivi(g.t().contiguous(), bits).read.t());
  }
  return parts.empty() ? k.narrow(0, 0, 0) : at::cat(parts);
}

// Values [L, d]: per token over groups of `group` channels.
at::Tensor ValuesHeld(const at::Tensor& v, int group, int bits) {
  const int64_t L = v.size(0), d = v.size(1);
  return ReferenceKivi(v.reshape({L * d / group, group}), bits).read.reshape({L, d});
}

TEST(KiviQuantize, MatchesKivisOwnFunctions) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(ATTNKIT_SOURCE_DIR) / "tests/conformance/cases/kivi";
  int files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    ++files;
    SCOPED_TRACE(entry.path().filename().string());
    auto file = SafetensorsFile::Read(entry.path().string());
    ASSERT_TRUE(file.ok()) << file.status();
    const int bits = std::stoi(*file->Metadata("bits"));
    const int group = std::stoi(*file->Metadata("group"));
    auto load = [&](const char* name) {
      auto t = LoadTensor(*file, name);
      EXPECT_TRUE(t.ok()) << t.status();
      return t.ok() ? t->contiguous() : at::Tensor();
    };
    const at::Tensor x = load("x");
    const at::Tensor key_codes = load("key_codes"), key_scale = load("key_scale"),
                     key_mn = load("key_mn"), key_deq = load("key_dequant");
    const at::Tensor value_codes = load("value_codes"), value_scale = load("value_scale"),
                     value_mn = load("value_mn"), value_deq = load("value_dequant");
    const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
    std::vector<uint8_t> codes(static_cast<size_t>(std::max(T, D)));
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const at::Tensor xh = x[b][h].contiguous();
        const float* xp = xh.data_ptr<float>();
        // Keys: channel c of tokens [g * group, (g + 1) * group).
        for (int64_t g = 0; g < T / group; ++g) {
          for (int64_t c = 0; c < D; ++c) {
            c10::Half s, m;
            QuantizeKivi(xp + g * group * D + c, group, D, bits, codes.data(), 0, &s, &m);
            ASSERT_EQ(static_cast<float>(s), key_scale[b][h][g][c].item<float>()) << g << "," << c;
            ASSERT_EQ(static_cast<float>(m), key_mn[b][h][g][c].item<float>()) << g << "," << c;
            for (int64_t i = 0; i < group; ++i) {
              const int code = KiviCode(codes.data(), i, bits);
              const int64_t t = g * group + i;
              ASSERT_EQ(code, key_codes[b][h][t][c].item<float>()) << t << "," << c;
              ASSERT_EQ(DequantizeKivi(code, s, m), key_deq[b][h][t][c].item<float>());
            }
          }
        }
        // Values: token t, channels [g * group, (g + 1) * group).
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t g = 0; g < D / group; ++g) {
            c10::Half s, m;
            QuantizeKivi(xp + t * D + g * group, group, 1, bits, codes.data(), 0, &s, &m);
            ASSERT_EQ(static_cast<float>(s), value_scale[b][h][t][g].item<float>());
            ASSERT_EQ(static_cast<float>(m), value_mn[b][h][t][g].item<float>());
            for (int64_t i = 0; i < group; ++i) {
              const int code = KiviCode(codes.data(), i, bits);
              ASSERT_EQ(code, value_codes[b][h][t][g * group + i].item<float>());
              ASSERT_EQ(DequantizeKivi(code, s, m),
                        value_deq[b][h][t][g * group + i].item<float>());
            }
          }
        }
      }
    }
  }
  EXPECT_GE(files, 6) << "KIVI cases missing in " << dir;
}

TEST(KiviQuantize, MatchesTheAtenReferenceWithEdgeCases) {
  at::manual_seed(3);
  for (int bits : {4, 2}) {
    for (int n : {4, 8, 32, 33}) {
      at::Tensor x = at::randn({40, n}) * 2.0;
      x[0].fill_(0.75);                                // constant: scale 0, codes 0
      x[1] = x[1] * 1e5;                               // saturates to +-32752
      x[2] = x[2] * 1e-6;                              // below float16's normal range
      x[3].narrow(0, 0, 1).fill_(-std::pow(2.0, 20));  // one huge outlier
      const KiviRef ref = ReferenceKivi(x, bits);
      std::vector<uint8_t> codes(static_cast<size_t>(n));
      for (int64_t r = 0; r < x.size(0); ++r) {
        const at::Tensor row = x[r].contiguous();
        c10::Half s, m;
        std::fill(codes.begin(), codes.end(), 0xff);
        QuantizeKivi(row.data_ptr<float>(), n, 1, bits, codes.data(), 0, &s, &m);
        ASSERT_EQ(static_cast<float>(s), ref.scale[r][0].item<float>()) << "row " << r;
        ASSERT_EQ(static_cast<float>(m), ref.mn[r][0].item<float>()) << "row " << r;
        for (int i = 0; i < n; ++i) {
          const int code = KiviCode(codes.data(), i, bits);
          ASSERT_EQ(code, ref.codes[r][i].item<float>()) << "row " << r << " value " << i;
          ASSERT_EQ(DequantizeKivi(code, s, m), ref.dequant[r][i].item<float>());
        }
      }
    }
  }
  // Packing from an offset leaves the neighbouring codes alone.
  std::vector<uint8_t> codes(4, 0);
  const float ones[4] = {0.f, 1.f, 2.f, 3.f};
  c10::Half s, m;
  QuantizeKivi(ones, 4, 1, 2, codes.data(), 6, &s, &m);
  EXPECT_EQ(codes[0], 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(KiviCode(codes.data(), 6 + i, 2), i);
}

SessionOptions KiviShape(KvDataType keys, KvDataType values, int group, int residual) {
  SessionOptions o;
  o.num_layers = 1;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 32;
  o.page_size = 4;
  o.scale = 1.0 / std::sqrt(32.0);
  o.kv_format.keys = keys;
  o.kv_format.values = values;
  o.kv_format.group_size = group;
  o.kv_format.residual_tokens = residual;
  return o;
}

int Bits(KvDataType t) { return t == KvDataType::kInt4 ? 4 : t == KvDataType::kInt2 ? 2 : 0; }

// The rows a store holds: `quantized` tokens in pages, the rest float.
at::Tensor Held(const at::Tensor& x, int64_t quantized, KvDataType type, int group, bool keys) {
  const at::Tensor q = x.narrow(0, 0, quantized);
  at::Tensor held_q = q;
  if (Bits(type) > 0) {
    held_q = keys ? KeysHeld(q, group, Bits(type)) : ValuesHeld(q, group, Bits(type));
  }
  return at::cat({held_q, x.narrow(0, quantized, x.size(0) - quantized)});
}

TEST(KiviStore, KeysMoveAGroupAtATimeAndEverythingMatchesTheReference) {
  struct C {
    KvDataType keys, values;
    int group, residual;
  };
  const C cases[] = {{KvDataType::kInt4, KvDataType::kInt4, 8, 6},
                     {KvDataType::kInt2, KvDataType::kInt2, 16, 0},
                     {KvDataType::kInt4, KvDataType::kFloat16, 8, 3},
                     {KvDataType::kFloat32, KvDataType::kInt2, 8, 5},
                     {KvDataType::kInt2, KvDataType::kInt8, 32, 8}};
  for (const C& c : cases) {
    const SessionOptions o = KiviShape(c.keys, c.values, c.group, c.residual);
    SCOPED_TRACE(std::string("keys ") + KvDataTypeName(c.keys) + " values " +
                 KvDataTypeName(c.values) + " group " + std::to_string(c.group) + " residual " +
                 std::to_string(c.residual));
    at::manual_seed(4);
    auto store = Host(o);
    ASSERT_NE(store, nullptr);
    const bool channel_keys = Bits(c.keys) > 0;
    at::Tensor k = at::randn({1, 2, 0, 32}), v = at::randn({1, 2, 0, 32});
    int64_t quantized = 0;
    const int64_t chunks[] = {21, 1, 1, 1, 5, 1, 1, 1, 1, 1, 1, 17, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int64_t T : chunks) {
      const at::Tensor k1 = at::randn({1, 2, T, 32}), v1 = at::randn({1, 2, T, 32});
      store->Append(0, k1, v1, {k.size(2)});
      k = at::cat({k, k1}, 2);
      v = at::cat({v, v1}, 2);
      const int64_t L = k.size(2);
      // The window rule: tokens beyond `residual` move, with KIVI keys only whole groups.
      int64_t beyond = L - c.residual - quantized;
      if (channel_keys) beyond = beyond / c.group * c.group;
      quantized += std::max<int64_t>(0, beyond);
      for (int64_t h = 0; h < 2; ++h) {
        ASSERT_EQ(store->head(0, h).length, L);
        ASSERT_EQ(store->head(0, h).residual, L - quantized) << "L " << L;
      }
      const at::Tensor q = at::randn({1, 4, T, 32});
      auto r = store->Attend(0, q, 0, false);
      ASSERT_TRUE(r.ok()) << r.status();
      const at::Tensor keys = store->SequenceKeys(0, 0), values = store->SequenceValues(0, 0);
      for (int64_t h = 0; h < 2; ++h) {
        const KvDataType vt = c.values;
        at::Tensor kh = Held(k[0][h], quantized, c.keys, c.group, true);
        at::Tensor vh = vt == KvDataType::kFloat16 || vt == KvDataType::kInt8
                            ? values[h]  // other formats are checked elsewhere
                            : Held(v[0][h], quantized, vt, c.group, false);
        ASSERT_TRUE(at::equal(keys[h], kh)) << "L " << L << " head " << h;
        ASSERT_TRUE(at::equal(values[h], vh)) << "L " << L << " head " << h;
        // A prefill (more than the paged kernel's 16 queries) attends to its own tokens as
        // given; every later call reads them as stored.
        const at::Tensor ka = T > 16 ? at::cat({kh.narrow(0, 0, L - T), k1[0][h]}) : kh;
        const at::Tensor va = T > 16 ? at::cat({vh.narrow(0, 0, L - T), v1[0][h]}) : vh;
        const at::Tensor expect = Dense(q[0].narrow(0, 2 * h, 2), ka, va, o.scale);
        EXPECT_TRUE(at::allclose(r->out[0].narrow(0, 2 * h, 2), expect, 1e-4, 1e-5))
            << "L " << L << " max diff "
            << (r->out[0].narrow(0, 2 * h, 2) - expect).abs().max().item<float>();
      }
    }
  }
}

TEST(KiviStore, BytesFollowTheFormat) {
  // head_dim 32, group 8: an INT4 key page (8 tokens) holds 32 channels x 4 bytes of codes and a
  // float16 scale and min per channel (256 bytes); its values 8 tokens x (16 bytes of codes + 4
  // groups x 4 bytes) = 256 bytes.
  const SessionOptions o = KiviShape(KvDataType::kInt4, KvDataType::kInt4, 8, 4);
  auto store = Host(o);
  store->Append(0, at::randn({1, 2, 20, 32}), at::randn({1, 2, 20, 32}), {0});
  // 16 tokens in two pages, 4 in the float32 window (one page of 4 tokens x 256 bytes).
  EXPECT_EQ(store->head(0, 0).residual, 4);
  EXPECT_EQ(store->HeadBytes(0, 0), 2 * (256 + 256) + 4 * 256);
}

TEST(KiviStore, KeepQuantizesAgainFromTheFirstMovedTokenAndDecodingGoesOn) {
  const SessionOptions o = KiviShape(KvDataType::kInt4, KvDataType::kInt2, 8, 4);
  at::manual_seed(12);
  auto store = Host(o);
  const at::Tensor k = at::randn({1, 2, 36, 32}), v = at::randn({1, 2, 36, 32});
  store->Append(0, k, v, {0});
  ASSERT_EQ(store->head(0, 1).residual, 4);  // 32 tokens in 4 key groups
  const at::Tensor keys_before = store->SequenceKeys(0, 0)[1].clone();
  const at::Tensor values_before = store->SequenceValues(0, 0)[1].clone();
  // Tokens 0..9 stay in place; 10 is the first moved; 33 and 35 are in the window.
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < 10; ++i) kept.push_back(i);
  for (int64_t i : {12, 13, 17, 20, 21, 22, 25, 30, 31, 33, 35}) kept.push_back(i);
  store->Keep(0, 1, kept);
  store->FinishKeep(0);
  const HeadCache& head = store->head(0, 1);
  ASSERT_EQ(head.length, 21);
  ASSERT_EQ(head.residual, 2);
  EXPECT_EQ(head.origin, kept);
  const at::Tensor index = at::tensor(kept);
  const at::Tensor moved_keys = keys_before.index_select(0, index);
  // The first group (tokens 0..7) keeps its codes; from group 1 on (kept 8..18 in cache order),
  // the held keys are quantized again over their new groups, the last one partial (3 tokens).
  at::Tensor expect = moved_keys.clone();
  expect.narrow(0, 8, 11).copy_(KeysHeld(moved_keys.narrow(0, 8, 11), 8, 4));
  const at::Tensor keys_after = store->SequenceKeys(0, 0)[1].narrow(0, 0, 21);
  EXPECT_TRUE(at::equal(keys_after, expect));
  // Values are per token: moved as they are.
  EXPECT_TRUE(at::equal(store->SequenceValues(0, 0)[1].narrow(0, 0, 21),
                        values_before.index_select(0, index)));
  // Decoding refills the partial group (its 3 held tokens read back and quantized with the 5
  // that complete it) once the window is 5 beyond its 4 tokens.
  at::Tensor kh = expect;
  for (int step = 0; step < 7; ++step) {
    const at::Tensor k1 = at::randn({1, 2, 1, 32}), v1 = at::randn({1, 2, 1, 32});
    store->Append(0, k1, v1, {36 + step});
    kh = at::cat({kh, k1[0][1]});
    auto r = store->Attend(0, at::randn({1, 4, 1, 32}), 0, false);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // 21 + 7 = 28 tokens: the window had 2 + 7 = 9, 5 of them completed group 2 (tokens 16..23).
  EXPECT_EQ(head.residual, 4);
  at::Tensor refill = kh.clone();
  refill.narrow(0, 16, 8).copy_(KeysHeld(kh.narrow(0, 16, 8), 8, 4));
  EXPECT_TRUE(at::equal(store->SequenceKeys(0, 0)[1].narrow(0, 0, 28), refill));
}

TEST(KiviStore, RerotateQuantizesTurnedGroupsAgain) {
  SessionOptions o = KiviShape(KvDataType::kInt4, KvDataType::kInt4, 8, 2);
  o.rope.theta = 10000;
  at::manual_seed(9);
  auto store = Host(o);
  const at::Tensor k = at::randn({1, 2, 18, 32});
  store->Append(0, k, k, {5});  // positions 5..22; 16 tokens in two groups, 2 in the window
  const at::Tensor held = store->SequenceKeys(0, 0)[0].clone();
  const std::vector<int64_t> kept{0, 1, 2, 3, 4, 5, 6, 7, 9, 16, 17};
  store->Keep(0, 0, kept);
  store->FinishKeep(0);
  store->Rerotate(0, 0, o.rope);
  std::vector<int64_t> cache_index(kept.size());
  for (size_t i = 0; i < kept.size(); ++i) cache_index[i] = static_cast<int64_t>(i);
  EXPECT_EQ(store->head(0, 0).rotated, cache_index);
  // Cache token i carried position 5 + kept[i]: it turns by i - 5 - kept[i].
  at::Tensor expect = held.index_select(0, at::tensor(kept)).clone();
  // Token 8 (kept 9) was quantized again in Keep (a one-token group): its held value first.
  expect.narrow(0, 8, 1).copy_(KeysHeld(expect.narrow(0, 8, 1), 8, 4));
  for (size_t i = 0; i < kept.size(); ++i) {
    RotateRow(expect[i].data_ptr(), at::kFloat, 32, static_cast<int64_t>(i) - 5 - kept[i], o.rope);
  }
  // Both main groups turned: quantized again; the window's two keys stay float32.
  expect.narrow(0, 0, 8).copy_(KeysHeld(expect.narrow(0, 0, 8), 8, 4));
  expect.narrow(0, 8, 1).copy_(KeysHeld(expect.narrow(0, 8, 1), 8, 4));
  EXPECT_TRUE(at::allclose(store->SequenceKeys(0, 0)[0].narrow(0, 0, 11), expect, 1e-6, 1e-6))
      << (store->SequenceKeys(0, 0)[0].narrow(0, 0, 11) - expect).abs().max().item<float>();
}

// Sessions evicting on KIVI pages: the budget holds, decode keeps working and every kept token
// is one the session was given.
TEST(KiviSession, EvictionPoliciesWorkOnInt4AndInt2Pages) {
  const std::string policies[] = {
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 10 recent_tokens: 8 window_size: 4 }",
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 10 recent_tokens: 8 }",
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 10 recent_tokens: 8 per_head: true budget { allocator: ADAKV } }",
      "eviction { enabled: true algorithm: KNORM granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 10 recent_tokens: 8 }",
  };
  for (const char* format : {"keys: INT4 values: INT4", "keys: INT2 values: INT2"}) {
    for (const std::string& policy : policies) {
      SCOPED_TRACE(std::string(format) + " " + policy);
      const std::string text =
          "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 32 page_size: 4 "
          "kv_format { " +
          std::string(format) + " group_size: 8 residual_tokens: 4 } " + policy;
      std::unique_ptr<Session> session;
      ASSERT_NO_FATAL_FAILURE(testing::RunRandomCalls(text, 37, 39, 2, 1.0, &session));
      const SessionStatsView stats = session->Stats();
      EXPECT_GT(stats.evictions, 0);
      // 20 tokens per kv head on average (AdaKV moves budget between heads).
      EXPECT_EQ(stats.tokens_held, 2 * 2 * 20);
      EXPECT_LT(stats.bytes_held, stats.tokens_held * 32 * 4 * 2);
      // Bytes by format: KIVI key and value pages and the float32 window, summing to bytes_held.
      int64_t sum = 0, kivi_keys = 0, kivi_values = 0, window = 0;
      const KvDataType kivi = std::string(format).find("INT4") != std::string::npos
                                  ? KvDataType::kInt4
                                  : KvDataType::kInt2;
      for (const FormatBytesView& f : stats.format_bytes) {
        sum += f.bytes;
        if (f.data_type == kivi) (f.values ? kivi_values : kivi_keys) += f.bytes;
        if (f.data_type == KvDataType::kFloat32) window += f.bytes;
      }
      EXPECT_EQ(sum, stats.bytes_held);
      EXPECT_GT(kivi_keys, 0);
      EXPECT_GT(kivi_values, 0);
      EXPECT_GT(window, 0);
      EXPECT_EQ(stats.format_bytes.size(), 4u);
      for (int layer = 0; layer < 2; ++layer) {
        for (int h = 0; h < 2; ++h) {
          auto positions = session->Positions(layer, 0, h);
          ASSERT_TRUE(positions.ok());
          EXPECT_TRUE(std::is_sorted(positions->begin(), positions->end()));
          EXPECT_EQ(positions->back(), 75);  // the newest token is always kept
        }
      }
    }
  }
}

}  // namespace
}  // namespace attnkit::session
