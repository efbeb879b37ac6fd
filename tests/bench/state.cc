// attnkit-bench state: fork, save and load of a session holding an 8K-token cache (4 Llama-3-8B-
// like layers: 32 query heads, 8 kv heads, head dim 128, bfloat16 pages: 128 MiB). In one run:
// (a) Fork: wall time and the heap bytes it allocates (copy-on-write:
// no page is copied) against the bytes of pages the cache holds; (b) the fork's first decode step
// (it copies only the partial page it appends into) against the source's next step; (c) Save and
// Load (a full copy through a blob) for comparison; (d) a fork of a SnapKV session after its first
// eviction-bearing step (compaction unshares pages from the first evicted token on).
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/Functions.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "bench.h"

namespace attnkit::bench {
namespace {

constexpr int kLayers = 4, kHeads = 32, kKvHeads = 8, kDim = 128;
constexpr int64_t kPrompt = 8192;

size_t HeapBytesInUse() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

std::unique_ptr<Session> Make(const std::string& policy) {
  auto options = ParseSessionConfig(
      "num_layers: " + std::to_string(kLayers) + " num_heads: " + std::to_string(kHeads) +
          " num_kv_heads: " + std::to_string(kKvHeads) + " head_dim: " + std::to_string(kDim) +
          " dtype: BFLOAT16 page_size: 16 " + policy,
      true);
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(options.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*Session::Create(*options));
}

// One call of `tokens` new tokens through every layer (random inputs from `seed`).
double Step(Session& s, int64_t tokens, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = at::TensorOptions(at::kFloat);
  const at::Tensor q = at::randn({1, kHeads, tokens, kDim}, gen, f32);
  const at::Tensor k = at::randn({1, kKvHeads, tokens, kDim}, gen, f32);
  const at::Tensor v = at::randn({1, kKvHeads, tokens, kDim}, gen, f32);
  at::Tensor out = at::empty_like(q);
  const auto t0 = std::chrono::steady_clock::now();
  for (int l = 0; l < kLayers; ++l) Check(s.Attend(l, q, k, v, out), "attend");
  return MsSince(t0);
}

struct ForkRun {
  double fork_ms = 0;
  int64_t allocated = 0, cache_bytes = 0;
  double fork_step_ms = 0, source_step_ms = 0;
  int64_t fork_step_allocated = 0;
};

// Median of `reps` forks of `source`, each followed by one step of the fork and of the source.
ForkRun MeasureFork(Session& source, int reps, uint64_t seed) {
  std::vector<double> fork_ms, fork_step, source_step;
  ForkRun r;
  r.cache_bytes = source.BytesHeld();
  for (int i = 0; i < reps; ++i) {
    const size_t before = HeapBytesInUse();
    const auto t0 = std::chrono::steady_clock::now();
    auto fork = source.Fork();
    fork_ms.push_back(MsSince(t0));
    Check(fork.status(), "fork");
    r.allocated = static_cast<int64_t>(HeapBytesInUse()) - static_cast<int64_t>(before);
    const size_t before_step = HeapBytesInUse();
    fork_step.push_back(Step(**fork, 1, seed + i));
    r.fork_step_allocated =
        static_cast<int64_t>(HeapBytesInUse()) - static_cast<int64_t>(before_step);
    source_step.push_back(Step(source, 1, seed + 100 + i));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  r.fork_ms = median(fork_ms);
  r.fork_step_ms = median(fork_step);
  r.source_step_ms = median(source_step);
  return r;
}

int StateBench(const std::vector<std::string>& args) {
  const int reps = 5;
  auto full = Make("");
  Step(*full, kPrompt, 1);
  Step(*full, 1, 2);
  const ForkRun a = MeasureFork(*full, reps, 10);
  std::printf(
      "(a) fork of an 8K-token cache (%d layers, %lld bytes of pages): %.3f ms, %lld heap bytes "
      "allocated (%.4f of the pages)\n",
      kLayers, static_cast<long long>(a.cache_bytes), a.fork_ms,
      static_cast<long long>(a.allocated), static_cast<double>(a.allocated) / a.cache_bytes);
  std::printf(
      "(b) the fork's first decode step: %.3f ms, %lld heap bytes allocated; the source's next "
      "step: %.3f ms\n",
      a.fork_step_ms, static_cast<long long>(a.fork_step_allocated), a.source_step_ms);

  std::vector<double> save_ms, load_ms;
  size_t blob_bytes = 0;
  PhaseBar bar("save and load", reps);
  for (int i = 0; i < reps; ++i) {
    bar.Update(i);
    auto t0 = std::chrono::steady_clock::now();
    auto blob = full->Save();
    save_ms.push_back(MsSince(t0));
    Check(blob.status(), "save");
    blob_bytes = blob->size();
    auto target = Make("");
    t0 = std::chrono::steady_clock::now();
    Check(target->Load(*blob), "load");
    load_ms.push_back(MsSince(t0));
  }
  std::sort(save_ms.begin(), save_ms.end());
  std::sort(load_ms.begin(), load_ms.end());
  std::printf("(c) save: %.1f ms (a %zu-byte blob), load: %.1f ms\n", save_ms[reps / 2], blob_bytes,
              load_ms[reps / 2]);

  auto snap = Make(
      "eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP group_size: 32 "
      "start_tokens: 32 intermediate_tokens: 864 recent_tokens: 128 window_size: 8 }");
  Step(*snap, kPrompt, 3);
  Step(*snap, 1, 4);
  const ForkRun d = MeasureFork(*snap, reps, 20);
  std::printf(
      "(d) SnapKV 1024: fork %.3f ms, %lld heap bytes for %lld bytes of pages; its first step "
      "(evicting) %.3f ms, %lld heap bytes; the source's %.3f ms\n",
      d.fork_ms, static_cast<long long>(d.allocated), static_cast<long long>(d.cache_bytes),
      d.fork_step_ms, static_cast<long long>(d.fork_step_allocated), d.source_step_ms);

  ResultJson json;
  json.Add("fork_8k_ms", a.fork_ms);
  json.Add("fork_8k_allocated_bytes", static_cast<double>(a.allocated));
  json.Add("fork_8k_cache_bytes", static_cast<double>(a.cache_bytes));
  json.Add("fork_8k_first_step_ms", a.fork_step_ms);
  json.Add("fork_8k_first_step_allocated_bytes", static_cast<double>(a.fork_step_allocated));
  json.Add("source_8k_step_ms", a.source_step_ms);
  json.Add("save_8k_ms", save_ms[reps / 2]);
  json.Add("load_8k_ms", load_ms[reps / 2]);
  json.Add("save_8k_blob_bytes", static_cast<double>(blob_bytes));
  json.Add("fork_snapkv_ms", d.fork_ms);
  json.Add("fork_snapkv_allocated_bytes", static_cast<double>(d.allocated));
  json.Add("fork_snapkv_first_step_ms", d.fork_step_ms);
  json.Add("fork_snapkv_first_step_allocated_bytes", static_cast<double>(d.fork_step_allocated));
  json.Print();
  return 0;
}

}  // namespace

ATTNKIT_BENCH("state", "fork (copy-on-write), save and load of a session with an 8K-token cache",
              StateBench);

}  // namespace attnkit::bench
