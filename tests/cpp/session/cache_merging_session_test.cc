// CaM in a session (cache_merging, docs/algorithms.md 1.9): the merged values reach the cache in
// every page format, so the outputs after the first eviction differ from the same session
// without merging while the kept positions stay the same; before any eviction nothing differs.
// kvpress's own CAMPress is checked in the conformance cases (tests/conformance/cases/cam); the
// host and tensor-path stores against each other in session_tensor_path_test.cc.
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"

namespace attnkit {
namespace {

struct SessionRun {
  std::vector<at::Tensor> outputs;  // per decode step, layer 0
  std::vector<int64_t> positions;   // layer 0, sequence 0, kv head 0 at the end
  int64_t evictions_seen_at = -1;   // the first decode step after which a token was evicted
};

SessionRun RunSession(const std::string& text) {
  auto options = ParseSessionConfig(text, true);
  EXPECT_TRUE(options.ok()) << options.status();
  SessionRun run;
  if (!options.ok()) return run;
  auto session = Session::Create(*options);
  EXPECT_TRUE(session.ok()) << session.status();
  if (!session.ok()) return run;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  const auto f = at::TensorOptions(at::kFloat);
  auto call = [&](int64_t t) {
    at::Tensor out0;
    for (int l = 0; l < 2; ++l) {
      const at::Tensor q = at::randn({1, 4, t, 16}, gen, f), k = at::randn({1, 2, t, 16}, gen, f);
      const at::Tensor v = at::randn({1, 2, t, 16}, gen, f);
      at::Tensor out = at::empty_like(q);
      const absl::Status s = (*session)->Attend(l, q, k, v, out);
      EXPECT_TRUE(s.ok()) << s;
      if (l == 0) out0 = out;
    }
    return out0;
  };
  call(40);
  for (int step = 0; step < 24; ++step) {
    run.outputs.push_back(call(1));
    if (run.evictions_seen_at < 0 && (*session)->Stats().evicted_tokens > 0) {
      run.evictions_seen_at = step;
    }
  }
  run.positions = *(*session)->Positions(0, 0, 0);
  return run;
}

TEST(CacheMergingSessionTest, MergedValuesReachEveryPageFormat) {
  const std::string shape = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 page_size: 8 ";
  const std::string eviction =
      "eviction { enabled: true algorithm: H2O granularity: PER_TOKEN start_tokens: 2 "
      "intermediate_tokens: 30 recent_tokens: 8 defer_eviction_to_decode: true ";
  for (const std::string format :
       {"", "dtype: BFLOAT16 ", "kv_format { values: INT8 residual_tokens: 4 } ",
        "kv_format { keys: INT4 values: INT4 group_size: 8 residual_tokens: 8 } "}) {
    SCOPED_TRACE(format);
    const SessionRun plain = RunSession(shape + format + eviction + "}");
    const SessionRun merged =
        RunSession(shape + format + eviction + "cache_merging { merge_budget: 4 seed: 3 } }");
    ASSERT_EQ(plain.outputs.size(), merged.outputs.size());
    ASSERT_EQ(plain.evictions_seen_at, 0);  // the first decode step evicts the prompt's excess
    EXPECT_EQ(plain.positions, merged.positions);
    // The first decode step attends before it evicts: equal. Later steps read merged values.
    EXPECT_TRUE(at::equal(plain.outputs[0], merged.outputs[0]));
    double moved = 0;
    for (size_t s = 1; s < plain.outputs.size(); ++s) {
      moved = std::max(moved, (plain.outputs[s] - merged.outputs[s]).abs().max().item<double>());
    }
    EXPECT_GT(moved, 1e-3);
  }
}

}  // namespace
}  // namespace attnkit
