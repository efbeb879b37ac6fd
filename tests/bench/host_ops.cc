// attnkit-bench host_ops: the ATen operators the tensor path (the code CUDA sessions run)
// dispatches on the host per decode step, in the store's profiler scopes (RECORD_USER_SCOPE
// "attnkit::append", "attnkit::quest_choice"), counted on the CPU with a RecordFunction callback.
// On a GPU each such operator is host work of several microseconds (a dispatch, often an allocation
// or a launch), and a session step whose kernels are short is bound by them; the counts do not
// depend on the machine. Only operators called from attnkit's own code are counted (not those they
// call).
//
//   attnkit-bench host_ops [--steps N]
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/record_function.h>

#include "attnkit/config_parser.h"
#include "bench.h"
#include "eviction/scorers.h"
#include "session/session_testing.h"

namespace attnkit::bench {
namespace {

// Per thread: the attnkit scopes being run (innermost last), the operator nesting depth, and the
// count of outermost operators per innermost scope.
thread_local std::vector<const char*> t_scopes;
thread_local int t_depth = 0;
thread_local std::map<std::string, int64_t>* t_counts = nullptr;

bool Ours(const at::RecordFunction& fn) {
  return fn.scope() == at::RecordScope::USER_SCOPE && std::strncmp(fn.name(), "attnkit::", 9) == 0;
}

std::unique_ptr<at::ObserverContext> OnStart(const at::RecordFunction& fn) {
  if (Ours(fn)) {
    t_scopes.push_back(fn.name());
  } else if (fn.scope() != at::RecordScope::USER_SCOPE && t_depth++ == 0 && !t_scopes.empty() &&
             t_counts != nullptr) {
    ++(*t_counts)[t_scopes.back()];
  }
  return nullptr;
}

void OnEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (Ours(fn)) {
    if (!t_scopes.empty()) t_scopes.pop_back();
  } else if (fn.scope() != at::RecordScope::USER_SCOPE) {
    --t_depth;
  }
}

// Operators per decode step in each scope, over `steps` steps after a prompt of `prompt` tokens,
// for a tensor-path session of `config`.
std::map<std::string, int64_t> CountOps(const std::string& config, int64_t kv_heads, int64_t prompt,
                                        int steps) {
  auto options = ParseSessionConfig(config, true);
  Check(options.status(), "config");
  auto session = session::CreateTensorPathSessionForTesting(*options);
  Check(session.status(), "session");
  const int64_t H = options->num_heads, d = options->head_dim;
  at::manual_seed(1);
  const at::Tensor q = at::randn({1, H, prompt, d}), k = at::randn({1, kv_heads, prompt, d});
  at::Tensor out = at::empty_like(q);
  Check((*session)->Attend(0, q, k, at::randn_like(k), out), "prefill");
  std::map<std::string, int64_t> counts;
  const at::Tensor q1 = at::randn({1, H, 1, d}), k1 = at::randn({1, kv_heads, 1, d});
  at::Tensor out1 = at::empty_like(q1);
  auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(OnStart, OnEnd));
  t_counts = &counts;
  for (int i = 0; i < steps; ++i) Check((*session)->Attend(0, q1, k1, k1, out1), "decode");
  t_counts = nullptr;
  at::removeCallback(handle);
  for (auto& [scope, n] : counts) n /= steps;
  return counts;
}

// The operators counted in `scope` (0 when none ran there).
int64_t OpsIn(const std::map<std::string, int64_t>& counts, const char* scope) {
  const auto it = counts.find(scope);
  return it == counts.end() ? 0 : it->second;
}

int HostOpsMain(const std::vector<std::string>& args) {
  int steps = 4;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--steps") steps = std::max(1, std::atoi(args[i + 1].c_str()));
  }
  const int64_t prompt = 4096;
  ResultJson result;
  std::printf(
      "ATen operators per decode step on the tensor path (one layer, 32 query heads, d 128, "
      "page 16, %lld-token prompt; Quest reads 512 tokens per kv head):\n",
      static_cast<long long>(prompt));
  for (const int64_t kv_heads : {2, 8}) {
    const std::string shape =
        "num_layers: 1 num_heads: 32 num_kv_heads: " + std::to_string(kv_heads) +
        " head_dim: 128 page_size: 16 ";
    const auto quest =
        CountOps(shape + "sparse_decode { token_budget: 512 }", kv_heads, prompt, steps);
    const int64_t choice = OpsIn(quest, "attnkit::quest_choice");
    std::printf("  %lld kv heads: Quest's page choice %lld\n", static_cast<long long>(kv_heads),
                static_cast<long long>(choice));
    result.Add("host_ops_quest_choice_hkv" + std::to_string(kv_heads), static_cast<double>(choice));
  }
  // SnapKV at a 2K budget evicting every decode step, its scores kept beside the observation as
  // on CUDA (eviction::testing::SetScoresFollowObservation: the device path's bookkeeping with
  // host arithmetic): the policy's observation and its eviction.
  eviction::testing::SetScoresFollowObservation(true);
  const auto snapkv = CountOps(
      "num_layers: 1 num_heads: 32 num_kv_heads: 8 head_dim: 128 page_size: 16 "
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 64 "
      "intermediate_tokens: 1856 recent_tokens: 128 window_size: 32 }",
      8, prompt, steps);
  eviction::testing::SetScoresFollowObservation(false);
  for (const char* scope : {"attnkit::observe", "attnkit::evict"}) {
    const int64_t n = OpsIn(snapkv, scope);
    std::printf("  SnapKV 2K evicting every step, 8 kv heads: %s %lld\n", scope,
                static_cast<long long>(n));
    result.Add(std::string("host_ops_snapkv_") + (scope + 9), static_cast<double>(n));
  }
  result.Print();
  return 0;
}

ATTNKIT_BENCH("host_ops", "ATen operators per decode step in the tensor path's scopes",
              HostOpsMain);

}  // namespace
}  // namespace attnkit::bench
