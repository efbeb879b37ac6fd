// ThinK (kv_format.key_channel_ratio) on the host store: the channels each kv head keeps against
// ThinKPress's criterion computed here with plain ATen, the keys it holds (the kept channels of the
// tokens outside the residual window, every channel inside it) and attention over them on each
// paged-kernel path, the bytes it holds, sessions evicting on ThinK pages, and the configs
// validation refuses. Exactness against kvpress's own ThinKPress: conformance/think_cases.cc.
// Save / Load / Fork of ThinK sessions: state_test.cc.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorIndexing.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "cpu/paged_attention.h"
#include "session/kv_store.h"
#include "store_testing.h"

namespace attnkit::session {
namespace {

using testing::Dense;
using testing::Host;

SessionOptions Shape(double ratio, int residual, DType dtype,
                     KvDataType keys = KvDataType::kDefault,
                     KvDataType values = KvDataType::kDefault) {
  SessionOptions o;
  o.num_layers = 1;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 64;
  o.page_size = 4;
  o.dtype = dtype;
  o.scale = 1.0 / 8.0;
  o.kv_format.keys = keys;
  o.kv_format.values = values;
  o.kv_format.group_size = values == KvDataType::kInt8 ? 16 : 0;
  o.kv_format.residual_tokens = residual;
  o.kv_format.key_channel_ratio = ratio;
  return o;
}

// ThinKPress's choice for one kv head: q [G, T, d] of the choosing call, keys [L, d] as stored:
// score = mean over the last `window` queries (and the G heads) of q^2 times mean over the keys of
// k^2; the floor(d * (1 - ratio)) lowest are dropped. Returns the kept channels, ascending.
std::vector<int64_t> ReferenceChannels(const at::Tensor& q, const at::Tensor& k, int64_t window,
                                       double ratio) {
  const int64_t T = q.size(1), d = q.size(2), W = std::min(T, window);
  const at::Tensor qn = q.narrow(1, T - W, W).to(at::kDouble).pow(2).mean(at::IntArrayRef{0, 1});
  const at::Tensor kn = k.to(at::kDouble).pow(2).mean(0);
  const at::Tensor order = std::get<1>((qn * kn).sort(/*stable=*/true, 0, false));
  const int64_t dropped = static_cast<int64_t>(d * (1.0 - ratio));
  const at::Tensor kept = std::get<0>(order.narrow(0, dropped, d - dropped).sort());
  return std::vector<int64_t>(kept.data_ptr<int64_t>(), kept.data_ptr<int64_t>() + kept.numel());
}

// Rows [n, d] rounded to the session dtype, then to `type` (a float format).
at::Tensor Rounded(const at::Tensor& x, const SessionOptions& o, KvDataType type) {
  const at::Tensor s = x.to(StorageType(o.dtype)).to(at::kFloat);
  if (type == KvDataType::kFloat16) return s.to(at::kHalf).to(at::kFloat);
  if (type == KvDataType::kBFloat16) return s.to(at::kBFloat16).to(at::kFloat);
  return s;
}

struct ThinkCase {
  double ratio;
  int residual;
  DType dtype;
  KvDataType keys;
  int isa;  // SetPagedMaxIsaForTesting
};

TEST(ThinkStore, KeepsTheChosenChannelsAndAttendsOverThem) {
  // Kept channels: 39 (stored as 40, padded to whole AVX2 vectors: the AVX2 key loop even where
  // AVX-512 runs the rest), 48 (AVX-512 and AVX2), 26 (stored as 32) and 32; isa 0 forces the
  // plain loops.
  const ThinkCase cases[] = {
      {0.6, 0, DType::kFloat32, KvDataType::kDefault, 2},
      {0.75, 5, DType::kFloat32, KvDataType::kDefault, 2},
      {0.75, 5, DType::kFloat32, KvDataType::kDefault, 1},
      {0.75, 3, DType::kFloat32, KvDataType::kFloat16, 0},
      {0.4, 3, DType::kBFloat16, KvDataType::kDefault, 2},
      {0.5, 6, DType::kFloat16, KvDataType::kBFloat16, 1},
  };
  for (const ThinkCase& c : cases) {
    const SessionOptions o = Shape(c.ratio, c.residual, c.dtype, c.keys);
    SCOPED_TRACE("ratio " + std::to_string(c.ratio) + " residual " + std::to_string(c.residual) +
                 " keys " + KvDataTypeName(o.key_type()) + " isa " + std::to_string(c.isa));
    kernels::SetPagedMaxIsaForTesting(c.isa);
    at::manual_seed(31);
    auto store = Host(o);
    // Channels of unequal size, as real keys have.
    const at::Tensor channel_scale = 0.25 + 2.0 * at::rand({1, 2, 1, 64});
    at::Tensor k = at::randn({1, 2, 20, 64}) * channel_scale, v = at::randn({1, 2, 20, 64});
    store->Append(0, k, v, {0});
    // Before the choosing call every token waits in the window, every channel kept.
    EXPECT_TRUE(store->head(0, 0).channels.empty());
    EXPECT_EQ(store->head(0, 0).residual, 20);
    std::vector<std::vector<int64_t>> kept(2);
    for (int step = 0; step <= 9; ++step) {
      const int64_t T = step == 0 ? 20 : (step == 5 ? 3 : 1);  // a prefill, then decode calls
      if (step > 0) {
        const at::Tensor k1 = at::randn({1, 2, T, 64}) * channel_scale;
        const at::Tensor v1 = at::randn({1, 2, T, 64});
        store->Append(0, k1, v1, {k.size(2)});
        k = at::cat({k, k1}, 2);
        v = at::cat({v, v1}, 2);
      }
      const at::Tensor q = at::randn({1, 4, T, 64});
      auto r = store->Attend(0, q, 0, false);
      ASSERT_TRUE(r.ok()) << r.status();
      const int64_t L = k.size(2);
      const at::Tensor keys = store->SequenceKeys(0, 0);
      for (int64_t h = 0; h < 2; ++h) {
        const at::Tensor kh = Rounded(k[0][h], o, o.key_type());  // as the window holds them
        if (step == 0) {
          kept[h] = ReferenceChannels(q[0].narrow(0, 2 * h, 2), kh, 32, c.ratio);
          ASSERT_EQ(static_cast<int64_t>(kept[h].size()), o.kv_format.KeptKeyChannels(64));
        }
        const HeadCache& cache = store->head(0, h);
        ASSERT_EQ(std::vector<int64_t>(cache.channels.begin(), cache.channels.end()), kept[h])
            << "head " << h;
        EXPECT_EQ(cache.residual, std::min<int64_t>(c.residual, L));
        // Held: the kept channels outside the window (the dropped ones read as 0), all inside.
        at::Tensor mask = at::zeros({64});
        mask.index_put_({at::tensor(kept[h])}, 1.0f);
        const int64_t window = std::min<int64_t>(c.residual, L);
        const at::Tensor held = at::cat(
            {kh.narrow(0, 0, L - window) * mask,
             k[0][h].narrow(0, L - window, window).to(StorageType(o.dtype)).to(at::kFloat)});
        ASSERT_TRUE(at::equal(keys[h], held)) << "step " << step << " head " << h;
        // A prefill attends to its own tokens as given (ThinK chooses after it); decode calls
        // read what is held.
        const at::Tensor attended = T > 16 ? k[0][h].to(StorageType(o.dtype)).to(at::kFloat) : held;
        const at::Tensor vh = v[0][h].to(StorageType(o.dtype)).to(at::kFloat);
        const at::Tensor expect = Dense(q[0].narrow(0, 2 * h, 2), attended, vh, o.scale);
        EXPECT_TRUE(at::allclose(r->out[0].narrow(0, 2 * h, 2), expect, 1e-4, 1e-5))
            << "step " << step << " head " << h << " max diff "
            << (r->out[0].narrow(0, 2 * h, 2) - expect).abs().max().item<float>();
      }
    }
  }
  kernels::SetPagedMaxIsaForTesting(2);
}

// The choosing call is the first with more tokens than the window: short calls before it leave
// every token in the window; its last key_channel_window queries score the channels.
TEST(ThinkStore, ChoosesAtTheFirstCallBeyondTheWindowFromItsLastQueries) {
  SessionOptions o = Shape(0.5, 6, DType::kFloat32);
  o.kv_format.key_channel_window = 4;
  at::manual_seed(8);
  auto store = Host(o);
  at::Tensor k = at::randn({1, 2, 0, 64}), v = at::randn({1, 2, 0, 64});
  for (int64_t T : {3, 2, 1, 9}) {  // 3, 5 and 6 tokens fit the window of 6; 15 do not
    const at::Tensor k1 = at::randn({1, 2, T, 64}) * (0.2 + at::rand({1, 2, 1, 64}));
    store->Append(0, k1, at::randn({1, 2, T, 64}), {k.size(2)});
    k = at::cat({k, k1}, 2);
    const at::Tensor q = at::randn({1, 4, T, 64});
    ASSERT_TRUE(store->Attend(0, q, 0, false).ok());
    if (k.size(2) <= 6) {
      EXPECT_TRUE(store->head(0, 1).channels.empty()) << k.size(2) << " tokens";
      continue;
    }
    for (int64_t h = 0; h < 2; ++h) {
      const std::vector<int64_t> want =
          ReferenceChannels(q[0].narrow(0, 2 * h, 2), k[0][h], 4, 0.5);
      const HeadCache& cache = store->head(0, h);
      EXPECT_EQ(std::vector<int64_t>(cache.channels.begin(), cache.channels.end()), want);
      EXPECT_EQ(cache.residual, 6);
      EXPECT_EQ(cache.length, 15);
    }
  }
}

// Keys outside the window take their kept channels (padded with zeros to a multiple of 8, whole
// vectors for the decode kernel) of float32 bytes; values and the window are untouched.
TEST(ThinkStore, HoldsOnlyTheKeptChannels) {
  const SessionOptions think = Shape(0.6, 0, DType::kFloat32);
  const SessionOptions full = Shape(0.0, 0, DType::kFloat32);
  at::manual_seed(2);
  const at::Tensor k = at::randn({1, 2, 64, 64}), v = at::randn({1, 2, 64, 64});
  const at::Tensor q = at::randn({1, 4, 64, 64});
  int64_t bytes[2];
  for (int i = 0; i < 2; ++i) {
    auto store = Host(i == 0 ? think : full);
    store->Append(0, k, v, {0});
    ASSERT_TRUE(store->Attend(0, q, 0, false).ok());
    bytes[i] = store->BytesHeld();
  }
  const int kept = think.kv_format.KeptKeyChannels(64);
  EXPECT_EQ(kept, 39);  // 64 less int(64 * 0.4) = 25 dropped
  // 2 kv heads x 64 tokens: keys of 40 floats (39 and one of padding), values of 64.
  EXPECT_EQ(bytes[0], 2 * 64 * (40 + 64) * 4);
  EXPECT_EQ(bytes[1], 2 * 64 * (64 + 64) * 4);
}

// Sessions evicting on ThinK pages (SnapKV at the prompt, H2O while decoding, AdaKV's per-head
// budgets, KNorm reading the keys as held): the budget holds, decode goes on, every kept token is
// one the session was given, and the cache takes fewer bytes than the same session's without
// ThinK (keys outside the window hold 16 of 32 channels).
TEST(ThinkSession, EvictionPoliciesWorkOnThinkPages) {
  const std::string shape = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 32 page_size: 4 ";
  const std::string think =
      "kv_format { key_channel_ratio: 0.5 residual_tokens: 4 key_channel_window: 8 } ";
  const std::string policies[] = {
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 56 recent_tokens: 4 }",
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 56 recent_tokens: 4 }",
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 56 recent_tokens: 4 per_head: true budget { allocator: ADAKV } }",
      "eviction { enabled: true algorithm: KNORM granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 56 recent_tokens: 4 }",
  };
  for (const std::string& policy : policies) {
    SCOPED_TRACE(policy);
    int64_t bytes[2];
    for (int with_think = 1; with_think >= 0; --with_think) {
      std::unique_ptr<Session> session;
      ASSERT_NO_FATAL_FAILURE(testing::RunRandomCalls(shape + (with_think ? think : "") + policy,
                                                      100, 11, 12, 3.0, &session));
      const SessionStatsView stats = session->Stats();
      EXPECT_GT(stats.evictions, 0);
      EXPECT_EQ(stats.tokens_held, 2 * 2 * 62);
      bytes[with_think] = stats.bytes_held;
      for (int layer = 0; layer < 2; ++layer) {
        for (int h = 0; h < 2; ++h) {
          auto positions = session->Positions(layer, 0, h);
          ASSERT_TRUE(positions.ok());
          EXPECT_TRUE(std::is_sorted(positions->begin(), positions->end()));
          EXPECT_EQ(positions->back(), 110);  // the newest token is always kept (recent area)
        }
      }
    }
    EXPECT_LT(bytes[1], bytes[0]);
  }
}

TEST(ThinkConfig, BadRatiosWindowsAndCombinationsAreRefusedWithTheFieldPath) {
  const std::string shape = "num_layers: 1 num_heads: 2 num_kv_heads: 1 head_dim: 16 ";
  const std::pair<std::string, std::string> bad[] = {
      {"kv_format { key_channel_ratio: -0.5 }", "kv_format.key_channel_ratio"},
      {"kv_format { key_channel_ratio: 1.5 }", "kv_format.key_channel_ratio"},
      {"kv_format { key_channel_ratio: nan }", "kv_format.key_channel_ratio"},
      {"kv_format { key_channel_ratio: 0.5 key_channel_window: -1 }",
       "kv_format.key_channel_window"},
      {"kv_format { key_channel_window: 8 }", "kv_format.key_channel_window"},
      {"kv_format { key_channel_ratio: 0.5 keys: INT8 }", "kv_format.key_channel_ratio"},
      {"kv_format { key_channel_ratio: 0.5 keys: INT4 }", "kv_format.key_channel_ratio"},
      {"rope { theta: 10000 } kv_format { key_channel_ratio: 0.5 } eviction { enabled: true "
       "algorithm: H2O granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 8 "
       "recent_tokens: 4 rerotate_keys: true }",
       "kv_format.key_channel_ratio"},
      {"kv_format { key_channel_ratio: 0.5 residual_tokens: 20 } eviction { enabled: true "
       "algorithm: H2O granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 8 "
       "recent_tokens: 4 }",
       "kv_format.residual_tokens"},
  };
  for (const auto& [text, field] : bad) {
    auto options = ParseSessionConfig(shape + text, true);
    ASSERT_FALSE(options.ok()) << text;
    EXPECT_EQ(options.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(options.status().message().find(field), std::string::npos)
        << text << ": " << options.status();
  }
  // A window with ThinK, INT8 values beside ThinK keys, and a ratio of 1 (every channel) are fine.
  for (const std::string text :
       {"kv_format { key_channel_ratio: 0.5 key_channel_window: 8 residual_tokens: 4 }",
        "kv_format { key_channel_ratio: 0.5 values: INT8 }",
        "kv_format { key_channel_ratio: 1 }"}) {
    auto options = ParseSessionConfig(shape + text, true);
    EXPECT_TRUE(options.ok()) << text << ": " << options.status();
  }
  // The device store holds no ThinK pages: refused at creation.
  const SessionOptions o = Shape(0.5, 0, DType::kFloat32);
  auto device = MakeDeviceStore(StoreContext{&o, nullptr}, at::Device(at::kCPU));
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(device.status().message().find("key_channel_ratio"), std::string::npos);
}

}  // namespace
}  // namespace attnkit::session
