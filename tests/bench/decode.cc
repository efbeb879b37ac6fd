// attnkit-bench decode: one Llama-3-8B-like layer (32 query heads, 8 kv heads, head dim 128, fp32)
// after an 8192-token prompt, 64 decode steps. In one run: (a) libtorch dense attention over the
// full cache written the efficient way (queries grouped per kv head, no repeated keys), (b) the
// session without eviction, (c) the session with SnapKV at a 1024-token budget, (d) a large memory
// copy, (e) the session without eviction on bfloat16, int8, KIVI int4 and int2 pages (kv_format),
// and SnapKV 1024 on int4 pages, (f) SnapKV at 1024 on kvpress DecodingPress's schedule, evicting
// on every 64th decode step only; (i) Quest sparse decode (sparse_decode, token budget 1024) on the
// full cache, over structured data (a few dominant keys per kv head, which the queries look for),
// with its recall: the share of exact attention that falls on the pages it reads; (h) the 8K prompt
// given in 1K chunks to a session with SnapKV at 1024, evicting between chunks, against the same
// prompt in one call: the most bytes held within the calls (SessionStats.peak_bytes_within_calls)
// and the prefill time; with --background-load, (g) (b) and (c) again while a busy process competes
// for the cores.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "bench.h"
#include "cpu/quest.h"

namespace attnkit::bench {
namespace {

struct Shape {
  int heads = 32, kv_heads = 8, dim = 128;
  int64_t prompt = 8192;
  int steps = 64;
};

// Page formats of the compressed-cache sessions (the session dtype stays float32).
const char* kBf16Format = " kv_format { keys: BF16 values: BF16 }";
const char* kInt8Format =
    " kv_format { keys: INT8 values: INT8 group_size: 32 residual_tokens: 128 }";
const char* kInt4Format =
    " kv_format { keys: INT4 values: INT4 group_size: 32 residual_tokens: 128 }";
const char* kInt2Format =
    " kv_format { keys: INT2 values: INT2 group_size: 32 residual_tokens: 128 }";
const int64_t kQuestBudget = 1024;
const char* kQuestConfig = " sparse_decode { token_budget: 1024 }";

// Structured decode data for Quest: per kv head, 16 dominant keys at random positions of the prompt
// carry a head direction u_h (norm 12) over unit noise; every decode query of the kv head's group
// looks for u_h (12 u_h + noise of 0.5 a channel), so exact attention puts most of its mass on the
// dominant keys while the other keys' logits stay noise. Replaces prompt_k and the steps' queries.
void StructuredDecodeData(const Shape& s, at::Tensor* prompt_k, std::vector<at::Tensor>* steps) {
  const int G = s.heads / s.kv_heads;
  at::Tensor u = at::randn({s.kv_heads, s.dim});
  u = u / u.norm(2, -1, true) * 12.0;
  at::Tensor k = at::randn({1, s.kv_heads, s.prompt, s.dim});
  for (int h = 0; h < s.kv_heads; ++h) {
    const at::Tensor where = at::randperm(s.prompt).narrow(0, 0, 16);
    k[0][h].index_add_(0, where, u[h].unsqueeze(0).expand({16, s.dim}));
  }
  *prompt_k = k;
  for (int i = 0; i < s.steps; ++i) {
    (*steps)[3 * i] = (u.repeat_interleave(G, 0) + at::randn({s.heads, s.dim}) * 0.5)
                          .view({1, s.heads, 1, s.dim});
  }
}

// Quest's recall over the structured steps: per step, kv head and query head, the share of exact
// attention over the full cache (the prompt and the steps so far) on the pages Quest reads
// (kernels::QuestReferencePages, the plain reference the session's selection is tested against),
// averaged.
double QuestRecall(const Shape& s, const at::Tensor& prompt_k,
                   const std::vector<at::Tensor>& steps) {
  const int G = s.heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
  at::Tensor keys = at::empty({s.kv_heads, s.prompt + s.steps, s.dim});
  keys.narrow(1, 0, s.prompt).copy_(prompt_k[0]);
  double total = 0;
  int64_t count = 0;
  for (int i = 0; i < s.steps; ++i) {
    const int64_t L = s.prompt + i + 1;
    keys.narrow(1, L - 1, 1).copy_(steps[3 * i + 1][0]);
    const at::Tensor q = steps[3 * i][0].select(1, 0);  // [H, d]
    for (int h = 0; h < s.kv_heads; ++h) {
      const at::Tensor k = keys[h].narrow(0, 0, L), qg = q.narrow(0, h * G, G);
      const at::Tensor pages = kernels::QuestReferencePages(qg, k, 16, kQuestBudget, 0, 0);
      const at::Tensor mask = pages.repeat_interleave(16).narrow(0, 0, L).to(at::kFloat);
      const at::Tensor p = at::softmax(at::matmul(qg, k.transpose(0, 1)).mul_(scale), -1);
      total += at::matmul(p, mask).sum().item<double>();
      count += G;
    }
  }
  return total / static_cast<double>(count);
}

std::unique_ptr<Session> MakeSession(const Shape& s, bool evict, const std::string& format,
                                     int interval_steps) {
  std::string text = "num_layers: 1 num_heads: " + std::to_string(s.heads) +
                     " num_kv_heads: " + std::to_string(s.kv_heads) +
                     " head_dim: " + std::to_string(s.dim) + " page_size: 16" + format;
  if (evict) {
    text +=
        " eviction { enabled: true algorithm: SNAPKV granularity: PER_GROUP group_size: 32 "
        "start_tokens: 32 intermediate_tokens: 864 recent_tokens: 128 window_size: 8 "
        "schedule { interval_steps: " +
        std::to_string(interval_steps) + " } }";
  }
  auto options = ParseSessionConfig(text, true);
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(options.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*Session::Create(*options));
}

struct SessionRun {
  double step_ms = 0, mean_step_ms = 0, policy_share = 0;
  int64_t bytes_held = 0, tokens_held = 0;
  double gb_per_s = 0;
  double prefill_ms = 0;            // the prompt's one call
  int64_t peak_bytes_in_calls = 0;  // SessionStats.peak_bytes_within_calls (the prompt's call)
};

// `row_bytes`: bytes of one key (or value) row as the session's pages hold it, for the bandwidth.
SessionRun RunSession(const Shape& s, bool evict, const at::Tensor& prompt_q,
                      const at::Tensor& prompt_k, const at::Tensor& prompt_v,
                      const std::vector<at::Tensor>& step_qkv, const std::string& format = "",
                      double row_bytes = 0, int interval_steps = 1) {
  if (row_bytes == 0) row_bytes = s.dim * 4.0;
  auto session = MakeSession(s, evict, format, interval_steps);
  at::Tensor out = at::empty_like(prompt_q);
  const auto prefill_start = std::chrono::steady_clock::now();
  if (absl::Status st = session->Attend(0, prompt_q, prompt_k, prompt_v, out); !st.ok()) {
    std::fprintf(stderr, "prefill: %s\n", std::string(st.message()).c_str());
    std::exit(1);
  }
  const double prefill_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - prefill_start)
          .count();
  const SessionStatsView before = session->Stats();
  at::Tensor step_out = at::empty({1, s.heads, 1, s.dim}, at::kFloat);
  std::vector<double> times;
  double bytes_read = 0;
  // A schedule's policy work comes in bursts (observations near the end of each interval, then an
  // eviction), so its run covers 4 intervals (the step inputs reused in turn): one interval's
  // share is one eviction's, and that moves with what else the machine does at that moment.
  const int total = interval_steps > 1 ? std::max(s.steps, 4 * interval_steps) : s.steps;
  PhaseBar bar("decode steps", total);
  for (int n = 0; n < total; ++n) {
    bar.Update(n);
    const int i = n % s.steps;
    const int64_t held = session->Stats().tokens_held;  // tokens over kv heads before the step
    auto t0 = std::chrono::steady_clock::now();
    absl::Status st =
        session->Attend(0, step_qkv[3 * i], step_qkv[3 * i + 1], step_qkv[3 * i + 2], step_out);
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (!st.ok()) {
      std::fprintf(stderr, "decode: %s\n", std::string(st.message()).c_str());
      std::exit(1);
    }
    bytes_read += (held + s.kv_heads) * row_bytes * 2;  // keys and values read once
  }
  const SessionStatsView after = session->Stats();
  SessionRun r;
  r.prefill_ms = prefill_ms;
  r.peak_bytes_in_calls = before.peak_bytes_within_calls;
  std::sort(times.begin(), times.end());
  r.step_ms = times[times.size() / 2];
  for (double t : times) r.mean_step_ms += t / static_cast<double>(times.size());
  const double policy = after.policy_seconds - before.policy_seconds;
  const double attention = after.attention_seconds - before.attention_seconds;
  r.policy_share = policy / (policy + attention);
  r.bytes_held = after.bytes_held;
  r.tokens_held = after.tokens_held;
  // Bandwidth of the median step (the same step the time reports), keys and values read once.
  r.gb_per_s = (bytes_read / total) / (r.step_ms * 1e-3) / 1e9;
  return r;
}

struct PrefillRun {
  int64_t peak_bytes = 0;  // SessionStats.peak_bytes_within_calls
  int64_t bytes_held = 0;
  double ms = 0;
};

// The prompt in calls of `chunk` tokens to a session with SnapKV at 1024 (eviction after every
// call). The prompt in one call is run (c)'s prefill.
PrefillRun ChunkedPrefill(const Shape& s, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, int64_t chunk) {
  auto session = MakeSession(s, true, "", 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < s.prompt; first += chunk) {
    const int64_t n = std::min(chunk, s.prompt - first);
    const at::Tensor qc = q.narrow(2, first, n);
    absl::Status st =
        session->Attend(0, qc, k.narrow(2, first, n), v.narrow(2, first, n), at::empty_like(qc));
    if (!st.ok()) {
      std::fprintf(stderr, "chunked prefill: %s\n", std::string(st.message()).c_str());
      std::exit(1);
    }
  }
  PrefillRun r;
  r.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const SessionStatsView stats = session->Stats();
  r.peak_bytes = stats.peak_bytes_within_calls;
  r.bytes_held = stats.bytes_held;
  return r;
}

int DecodeBench(const std::vector<std::string>& args) {
  Shape s;
  bool background_load = false;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--background-load") {
      background_load = true;
    } else if (args[i] == "--prompt" && i + 1 < args.size()) {
      s.prompt = std::stoll(args[++i]);
    } else if (args[i] == "--steps" && i + 1 < args.size()) {
      s.steps = std::stoi(args[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: attnkit-bench decode [--prompt 8192] [--steps 64] "
                   "[--background-load]\n");
      return 2;
    }
  }
  at::manual_seed(0);
  std::printf("decode: %d query heads, %d kv heads, head dim %d, fp32, prompt %lld, %d steps\n",
              s.heads, s.kv_heads, s.dim, static_cast<long long>(s.prompt), s.steps);
  const at::Tensor prompt_q = at::randn({1, s.heads, s.prompt, s.dim});
  const at::Tensor prompt_k = at::randn({1, s.kv_heads, s.prompt, s.dim});
  const at::Tensor prompt_v = at::randn({1, s.kv_heads, s.prompt, s.dim});
  std::vector<at::Tensor> steps;
  for (int i = 0; i < s.steps; ++i) {
    steps.push_back(at::randn({1, s.heads, 1, s.dim}));
    steps.push_back(at::randn({1, s.kv_heads, 1, s.dim}));
    steps.push_back(at::randn({1, s.kv_heads, 1, s.dim}));
  }

  // (a) libtorch dense over a growing full cache, queries grouped per kv head. libtorch's small
  // decode products can be faster on one thread than on all of them: measure both, keep the best.
  const int64_t capacity = s.prompt + s.steps;
  at::Tensor K = at::empty({s.kv_heads, capacity, s.dim}),
             V = at::empty({s.kv_heads, capacity, s.dim});
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
  auto dense_run = [&]() {
    K.narrow(1, 0, s.prompt).copy_(prompt_k[0]);
    V.narrow(1, 0, s.prompt).copy_(prompt_v[0]);
    std::vector<double> times;
    for (int i = 0; i < s.steps; ++i) {
      const int64_t len = s.prompt + i + 1;
      auto t0 = std::chrono::steady_clock::now();
      K.narrow(1, len - 1, 1).copy_(steps[3 * i + 1][0]);
      V.narrow(1, len - 1, 1).copy_(steps[3 * i + 2][0]);
      at::Tensor q = steps[3 * i][0].reshape({s.kv_heads, s.heads / s.kv_heads, s.dim});
      at::Tensor scores = at::matmul(q, K.narrow(1, 0, len).transpose(1, 2)).mul_(scale);
      at::Tensor out = at::matmul(at::softmax(scores, -1), V.narrow(1, 0, len));
      (void)out;
      times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  const int threads = at::get_num_threads();
  const double dense_all_threads = dense_run();
  at::set_num_threads(1);
  const double dense_one_thread = dense_run();
  at::set_num_threads(threads);
  const double dense_ms = std::min(dense_all_threads, dense_one_thread);
  std::printf(
      "(a) libtorch dense, full cache:       %8.3f ms/step (%d threads %.3f, 1 thread %.3f)\n",
      dense_ms, threads, dense_all_threads, dense_one_thread);

  // (d) memory bandwidth: copying 256 MiB (read + write counted, as STREAM does). This VM's figure
  // varies from run to run, so it is taken before, between and after the sessions and the best is
  // kept: the ratios below are against the machine's best, not its average.
  const int64_t n = int64_t{64} << 20;
  at::Tensor src = at::rand({n}), dst = at::empty({n});
  double copy_ms = 1e30;
  auto measure_copy = [&] { copy_ms = std::min(copy_ms, MedianMs([&] { dst.copy_(src); }, 5)); };
  measure_copy();
  const SessionRun full = RunSession(s, false, prompt_q, prompt_k, prompt_v, steps);
  std::printf("(b) session, no eviction:            %8.3f ms/step, %lld KV bytes held, %.2f GB/s\n",
              full.step_ms, static_cast<long long>(full.bytes_held), full.gb_per_s);
  measure_copy();
  const SessionRun snap = RunSession(s, true, prompt_q, prompt_k, prompt_v, steps);
  measure_copy();
  // (e) the full cache in compressed pages: bfloat16 rows, and int8 rows (groups of 32 channels,
  // one float16 scale each) with a 128-token float32 window (read at 4 bytes a channel; the rest
  // at 1 + 2/32).
  const SessionRun bf16 =
      RunSession(s, false, prompt_q, prompt_k, prompt_v, steps, kBf16Format, s.dim * 2.0);
  const double int8_row = s.dim * (1.0 + 2.0 / 32) +
                          128.0 / static_cast<double>(s.prompt) * s.dim * (4.0 - 1.0 - 2.0 / 32);
  const SessionRun int8 =
      RunSession(s, false, prompt_q, prompt_k, prompt_v, steps, kInt8Format, int8_row);
  // KIVI rows: bits / 8 bytes a channel plus a float16 scale and minimum per group of 32 (keys:
  // per channel over 32 tokens; values: per token over 32 channels), the window in float32.
  auto kivi_row = [&](int bits) {
    const double quantized = s.dim * (bits / 8.0 + 4.0 / 32);
    return quantized + 128.0 / static_cast<double>(s.prompt) * (s.dim * 4.0 - quantized);
  };
  const SessionRun int4 =
      RunSession(s, false, prompt_q, prompt_k, prompt_v, steps, kInt4Format, kivi_row(4));
  const SessionRun int2 =
      RunSession(s, false, prompt_q, prompt_k, prompt_v, steps, kInt2Format, kivi_row(2));
  const SessionRun snap_int4 =
      RunSession(s, true, prompt_q, prompt_k, prompt_v, steps, kInt4Format, kivi_row(4));
  measure_copy();
  const SessionRun interval = RunSession(s, true, prompt_q, prompt_k, prompt_v, steps, "", 0, 64);
  // (i) Quest over the structured data (its own keys and queries; the time of a step does not
  // depend on the values, the pages it reads do).
  at::Tensor quest_k;
  std::vector<at::Tensor> quest_steps = steps;
  StructuredDecodeData(s, &quest_k, &quest_steps);
  const SessionRun quest =
      RunSession(s, false, prompt_q, quest_k, prompt_v, quest_steps, kQuestConfig);
  const double quest_recall = QuestRecall(s, quest_k, quest_steps);
  // Quest over int8 pages (the same data): the bounds of the dequantized keys, the window read.
  const SessionRun quest_int8 = RunSession(s, false, prompt_q, quest_k, prompt_v, quest_steps,
                                           std::string(kQuestConfig) + kInt8Format, int8_row);
  measure_copy();
  const int64_t chunk = 1024;
  const PrefillRun chunked = ChunkedPrefill(s, prompt_q, prompt_k, prompt_v, chunk);
  PrefillRun unchunked;  // (c)'s prompt, the same session config in one call
  unchunked.peak_bytes = snap.peak_bytes_in_calls;
  unchunked.ms = snap.prefill_ms;
  std::printf(
      "(c) session, SnapKV 1024 budget:     %8.3f ms/step, %lld KV bytes held, %.2f GB/s, "
      "policy %.1f %% of the step\n",
      snap.step_ms, static_cast<long long>(snap.bytes_held), snap.gb_per_s,
      100.0 * snap.policy_share);
  std::printf(
      "(e) session, bf16 pages:             %8.3f ms/step (%.2fx), %lld KV bytes held (%.3fx), "
      "%.2f GB/s\n",
      bf16.step_ms, bf16.step_ms / full.step_ms, static_cast<long long>(bf16.bytes_held),
      static_cast<double>(bf16.bytes_held) / full.bytes_held, bf16.gb_per_s);
  std::printf(
      "    session, int8 pages (window 128): %8.3f ms/step (%.2fx), %lld KV bytes held (%.3fx), "
      "%.2f GB/s\n",
      int8.step_ms, int8.step_ms / full.step_ms, static_cast<long long>(int8.bytes_held),
      static_cast<double>(int8.bytes_held) / full.bytes_held, int8.gb_per_s);
  for (const auto& [name, run] :
       {std::pair<const char*, const SessionRun*>{"int4", &int4}, {"int2", &int2}}) {
    std::printf(
        "    session, %s pages (window 128): %8.3f ms/step (%.2fx), %lld KV bytes held (%.3fx), "
        "%.2f GB/s\n",
        name, run->step_ms, run->step_ms / full.step_ms, static_cast<long long>(run->bytes_held),
        static_cast<double>(run->bytes_held) / full.bytes_held, run->gb_per_s);
  }
  std::printf(
      "    session, SnapKV 1024 on int4:     %8.3f ms/step (%.2fx SnapKV on float32), %lld KV "
      "bytes held (%.3fx SnapKV on float32), policy %.1f %% of the step\n",
      snap_int4.step_ms, snap_int4.step_ms / snap.step_ms,
      static_cast<long long>(snap_int4.bytes_held),
      static_cast<double>(snap_int4.bytes_held) / snap.bytes_held, 100.0 * snap_int4.policy_share);

  std::printf(
      "(f) session, SnapKV 1024 every 64:   %8.3f ms/step (mean %.3f; every step: median %.3f, "
      "mean %.3f), policy %.2f %% of the steps (4 intervals)\n",
      interval.step_ms, interval.mean_step_ms, snap.step_ms, snap.mean_step_ms,
      100.0 * interval.policy_share);

  std::printf(
      "(i) session, Quest (budget 1024):     %8.3f ms/step (%.2fx no eviction), recall %.4f on "
      "structured data, %lld KV bytes held\n",
      quest.step_ms, quest.step_ms / full.step_ms, quest_recall,
      static_cast<long long>(quest.bytes_held));
  std::printf(
      "(i) session, Quest on int8 pages:     %8.3f ms/step (%.2fx no eviction, %.2fx int8 pages "
      "read whole), %lld KV bytes held\n",
      quest_int8.step_ms, quest_int8.step_ms / full.step_ms, quest_int8.step_ms / int8.step_ms,
      static_cast<long long>(quest_int8.bytes_held));

  const int64_t chunk_bytes = chunk * s.dim * 4 * 2 * s.kv_heads;
  const int64_t snapkv_budget_bytes = int64_t{1024} * s.dim * 4 * 2 * s.kv_heads;
  std::printf(
      "(h) prefill of %lld tokens, SnapKV 1024: in chunks of %lld, peak %lld bytes (budget %lld + "
      "one chunk %lld), %.1f ms; in one call, peak %lld bytes, %.1f ms\n",
      static_cast<long long>(s.prompt), static_cast<long long>(chunk),
      static_cast<long long>(chunked.peak_bytes), static_cast<long long>(snapkv_budget_bytes),
      static_cast<long long>(chunk_bytes), chunked.ms, static_cast<long long>(unchunked.peak_bytes),
      unchunked.ms);

  const double copy_gbs = 2.0 * n * 4 / (copy_ms * 1e-3) / 1e9;
  std::printf("(d) memory copy (256 MiB), best of 3: %8.3f ms, %.2f GB/s (read + write)\n", copy_ms,
              copy_gbs);

  const int64_t page_bytes = 16 * s.dim * 4 * 2;
  const int64_t budget_bytes = int64_t{1024} * s.dim * 4 * 2 * s.kv_heads;
  std::printf(
      "ratio (a)/(c): %.2f; (c) holds %lld bytes vs budget %lld + one page per kv head %lld\n",
      dense_ms / snap.step_ms, static_cast<long long>(snap.bytes_held),
      static_cast<long long>(budget_bytes), static_cast<long long>(page_bytes * s.kv_heads));
  std::printf("bandwidth vs copy: (b) %.0f %%, (c) %.0f %%\n", 100.0 * full.gb_per_s / copy_gbs,
              100.0 * snap.gb_per_s / copy_gbs);
  ResultJson json;
  json.Add("dense_ms", dense_ms);
  json.Add("session_full_ms", full.step_ms);
  json.Add("session_snapkv_ms", snap.step_ms);
  json.Add("ratio_dense_over_snapkv", dense_ms / snap.step_ms);
  json.Add("snapkv_policy_share", snap.policy_share);
  json.Add("session_snapkv_interval64_ms", interval.step_ms);
  json.Add("session_snapkv_interval64_mean_ms", interval.mean_step_ms);
  json.Add("snapkv_interval64_policy_share", interval.policy_share);
  json.Add("full_bytes_held", static_cast<double>(full.bytes_held));
  json.Add("snapkv_bytes_held", static_cast<double>(snap.bytes_held));
  json.Add("snapkv_budget_bytes", static_cast<double>(budget_bytes));
  json.Add("snapkv_budget_plus_page_bytes",
           static_cast<double>(budget_bytes + page_bytes * s.kv_heads));
  json.Add("copy_gb_per_s", copy_gbs);
  json.Add("full_gb_per_s", full.gb_per_s);
  json.Add("snapkv_gb_per_s", snap.gb_per_s);
  json.Add("full_bandwidth_share", full.gb_per_s / copy_gbs);
  json.Add("snapkv_bandwidth_share", snap.gb_per_s / copy_gbs);
  json.Add("session_bf16_ms", bf16.step_ms);
  json.Add("session_int8_ms", int8.step_ms);
  json.Add("session_bf16_bytes_held", static_cast<double>(bf16.bytes_held));
  json.Add("session_int8_bytes_held", static_cast<double>(int8.bytes_held));
  json.Add("bf16_over_full_ms", bf16.step_ms / full.step_ms);
  json.Add("int8_over_full_ms", int8.step_ms / full.step_ms);
  json.Add("int8_over_full_bytes", static_cast<double>(int8.bytes_held) / full.bytes_held);
  json.Add("bf16_gb_per_s", bf16.gb_per_s);
  json.Add("int8_gb_per_s", int8.gb_per_s);
  json.Add("session_int4_ms", int4.step_ms);
  json.Add("session_int2_ms", int2.step_ms);
  json.Add("session_int4_bytes_held", static_cast<double>(int4.bytes_held));
  json.Add("session_int2_bytes_held", static_cast<double>(int2.bytes_held));
  json.Add("int4_over_full_ms", int4.step_ms / full.step_ms);
  json.Add("int2_over_full_ms", int2.step_ms / full.step_ms);
  json.Add("int4_over_full_bytes", static_cast<double>(int4.bytes_held) / full.bytes_held);
  json.Add("int2_over_full_bytes", static_cast<double>(int2.bytes_held) / full.bytes_held);
  json.Add("int4_gb_per_s", int4.gb_per_s);
  json.Add("int2_gb_per_s", int2.gb_per_s);
  json.Add("session_snapkv_int4_ms", snap_int4.step_ms);
  json.Add("session_snapkv_int4_bytes_held", static_cast<double>(snap_int4.bytes_held));
  json.Add("snapkv_int4_policy_share", snap_int4.policy_share);
  json.Add("chunked_prefill_peak_bytes", static_cast<double>(chunked.peak_bytes));
  json.Add("unchunked_prefill_peak_bytes", static_cast<double>(unchunked.peak_bytes));
  json.Add("chunked_prefill_budget_plus_chunk_bytes",
           static_cast<double>(snapkv_budget_bytes + chunk_bytes));
  json.Add("chunked_prefill_bytes_held", static_cast<double>(chunked.bytes_held));
  json.Add("chunked_prefill_ms", chunked.ms);
  json.Add("session_quest_ms", quest.step_ms);
  json.Add("quest_recall", quest_recall);
  json.Add("quest_over_full_ms", quest.step_ms / full.step_ms);
  json.Add("session_quest_int8_ms", quest_int8.step_ms);
  json.Add("quest_int8_over_int8_ms", quest_int8.step_ms / int8.step_ms);
  json.Add("unchunked_prefill_ms", unchunked.ms);
  if (background_load) {
    // (g) the sessions without eviction and with SnapKV again while a busy process competes for
    // the cores.
    SessionRun full_loaded, snap_loaded;
    {
      BackgroundLoad load;
      full_loaded = RunSession(s, false, prompt_q, prompt_k, prompt_v, steps);
      snap_loaded = RunSession(s, true, prompt_q, prompt_k, prompt_v, steps);
    }
    std::printf(
        "(g) under background load: no eviction %8.3f ms/step (%.2fx quiet), SnapKV 1024 %8.3f "
        "ms/step (%.2fx quiet)\n",
        full_loaded.step_ms, full_loaded.step_ms / full.step_ms, snap_loaded.step_ms,
        snap_loaded.step_ms / snap.step_ms);
    json.Add("session_full_loaded_ms", full_loaded.step_ms);
    json.Add("session_snapkv_loaded_ms", snap_loaded.step_ms);
    json.Add("full_loaded_over_quiet", full_loaded.step_ms / full.step_ms);
    json.Add("snapkv_loaded_over_quiet", snap_loaded.step_ms / snap.step_ms);
  }
  json.Print();
  return 0;
}

}  // namespace

ATTNKIT_BENCH("decode", "session decode vs libtorch dense (Llama-3-8B-like layer, 8K prompt)",
              DecodeBench);

}  // namespace attnkit::bench
