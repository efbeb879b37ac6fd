// Drives an eviction policy through a prompt and decode steps with attention-like observations on
// a chosen device (the score-placement tests: tests/cpp/eviction/device_scores_test.cc on the CPU,
// tests/cpp/cuda/scores_test.cc on a GPU).
#ifndef ATTNKIT_TESTS_CPP_EVICTION_SCORE_DRIVER_H_
#define ATTNKIT_TESTS_CPP_EVICTION_SCORE_DRIVER_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include "attnkit/config_parser.h"
#include "attnkit/eviction/eviction_policy.h"
#include "eviction/scorers.h"

namespace attnkit::score_driver {

inline EvictionOptions Options(const std::string& text) {
  auto o = ParseEvictionConfig("enabled: true " + text, true);
  EXPECT_TRUE(o.ok()) << o.status();
  return *o;
}

inline std::unique_ptr<EvictionPolicy> Make(const std::string& text, int heads, int kv_heads) {
  auto p = EvictionPolicy::Create(Options(text), 2, heads, kv_heads);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

// Restores the host path when a test ends, whatever happens in it.
struct FollowGuard {
  explicit FollowGuard(bool on) { eviction::testing::SetScoresFollowObservation(on); }
  ~FollowGuard() { eviction::testing::SetScoresFollowObservation(false); }
};

// Attention-like rows [H, T, K]: positive, rows of probabilities, with values on a coarse grid for
// a share of the entries so that tied scores (which decide by index order) occur.
inline at::Tensor Rows(int heads, int64_t T, int64_t K, int seed) {
  at::manual_seed(seed);
  at::Tensor s = at::softmax(at::randn({heads, T, K}).mul(2.0), -1);
  at::Tensor grid = s.mul(64).round().div(64);
  return at::where(at::rand({heads, T, K}).lt(0.3), grid, s).contiguous();
}

// One sequence through `steps` decode steps after a prompt of `prompt` tokens, on layers 0 and 1:
// each call's observation (window rows or column sums, as the policy asks) from Rows() on
// `device`, selection every `interval`-th call (the prompt always), per-head lengths when the
// policy selects per head. Returns every selection's kept sets and the final SaveState bytes.
struct Outcome {
  std::vector<KeptPositions> kept;
  std::string state;
};
inline Outcome Drive(EvictionPolicy& p, int heads, int kv_heads, int64_t prompt, int steps,
                     int interval, at::Device device, std::string* mid_state = nullptr,
                     int save_at = -1) {
  Outcome run;
  const int rows = p.per_head() ? kv_heads : 1;
  std::vector<std::vector<int64_t>> lengths(2, std::vector<int64_t>(rows, 0));
  const ObservationNeeds needs = p.needs();
  for (int step = -1; step < steps; ++step) {
    const int64_t T = step < 0 ? prompt : 1;
    for (int layer = 0; layer < 2; ++layer) {
      std::vector<int64_t>& len = lengths[layer];
      for (int64_t& l : len) l += T;
      const int64_t K = *std::max_element(len.begin(), len.end());
      const at::Tensor a = Rows(heads, T, K, 1000 * layer + step + 7).to(device);
      Observation obs;
      obs.call_queries = T;
      if (p.per_head()) obs.lengths = len;
      if (needs.window_rows > 0) {
        const int64_t r = std::min<int64_t>(needs.window_rows, T);
        obs.window_rows = a.narrow(1, T - r, r);
      } else {
        obs.all_queries_sum = a.select(1, T - 1);  // one query's row: no float sum involved
      }
      EXPECT_TRUE(p.Observe(layer, obs).ok());
      if (step >= 0 && (step + 1) % interval != 0) continue;
      auto kept = p.Select(layer, len, at::Tensor());
      EXPECT_TRUE(kept.ok()) << kept.status();
      if (!kept.ok()) return run;
      for (size_t r = 0; r < len.size(); ++r) len[r] = static_cast<int64_t>((*kept)[r].size());
      run.kept.push_back(*kept);
    }
    if (step == save_at && mid_state != nullptr) *mid_state = p.SaveState();
  }
  run.state = p.SaveState();
  return run;
}

inline const char* const kConfigs[] = {
    "algorithm: H2O granularity: PER_TOKEN start_tokens: 3 intermediate_tokens: 20 "
    "recent_tokens: 5",
    "algorithm: H2O granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 16 "
    "recent_tokens: 4 normalize_scores: true per_head: true",
    "algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 24 "
    "recent_tokens: 6 window_size: 4",
    "algorithm: SNAPKV granularity: PER_GROUP group_size: 4 start_tokens: 4 "
    "intermediate_tokens: 24 recent_tokens: 8 window_size: 3 per_head: true",
    "algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 0 intermediate_tokens: 18 "
    "recent_tokens: 2 window_size: 5 pooling { kernel_size: 1 } normalize_scores: true",
};

// Scorers that keep attention rows, not sums, beside the observation (TOVA's newest row, R-KV's
// window, CAKE's decode window).
inline const char* const kRowConfigs[] = {
    "algorithm: TOVA granularity: PER_TOKEN start_tokens: 3 intermediate_tokens: 20 "
    "recent_tokens: 5",
    "algorithm: TOVA granularity: PER_TOKEN start_tokens: 2 intermediate_tokens: 16 "
    "recent_tokens: 4 per_head: true",
    "algorithm: RKV granularity: PER_TOKEN start_tokens: 4 intermediate_tokens: 24 "
    "recent_tokens: 6 window_size: 4",
    "algorithm: CAKE granularity: PER_TOKEN per_head: true window_size: 4 recent_tokens: 4 "
    "intermediate_tokens: 8 budget { allocator: CAKE }",
};

}  // namespace attnkit::score_driver

#endif  // ATTNKIT_TESTS_CPP_EVICTION_SCORE_DRIVER_H_
