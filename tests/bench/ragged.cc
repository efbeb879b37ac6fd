// attnkit-bench ragged: continuous batching. 16 sequences of 512 to 8192 tokens (512 apart) on one
// Llama-3-8B-like layer (32 query heads, 8 kv heads, head dim 128, float32 pages). In one run:
// (a) one session holding all 16 (batch_size 16), each decode step one AttendRagged call for all of
// them; (b) 16 single-sequence sessions holding the same prompts, each decode step one Attend call
// per session in turn. Both see the same tokens; the step time is the median over the steps. Also
// (c) a mixed step: one sequence retired and its slot given a new 1024-token prompt in the same
// call in which the other 15 decode (prefill and decode together), against the same work done as
// one prefill session and 15 decode calls.
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

constexpr int kHeads = 32, kKvHeads = 8, kDim = 128, kSequences = 16;

std::unique_ptr<Session> Make(int batch) {
  auto options = ParseSessionConfig("num_layers: 1 num_heads: " + std::to_string(kHeads) +
                                        " num_kv_heads: " + std::to_string(kKvHeads) +
                                        " head_dim: " + std::to_string(kDim) +
                                        " page_size: 16 batch_size: " + std::to_string(batch),
                                    true);
  if (!options.ok()) {
    std::fprintf(stderr, "%s\n", std::string(options.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*Session::Create(*options));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Tokens {
  at::Tensor q, k, v;  // [1, H, n, d], [1, Hkv, n, d]
};

Tokens Random(int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = at::TensorOptions(at::kFloat);
  return {at::randn({1, kHeads, n, kDim}, gen, f32), at::randn({1, kKvHeads, n, kDim}, gen, f32),
          at::randn({1, kKvHeads, n, kDim}, gen, f32)};
}

int RaggedBench(const std::vector<std::string>& args) {
  int steps = 32;
  int64_t longest = 8192;  // --longest: the lengths are longest/16, 2*longest/16, ..., longest
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--steps") steps = std::max(3, std::stoi(args[i + 1]));
    if (args[i] == "--longest") longest = std::max(256, std::stoi(args[i + 1])) / 16 * 16;
  }
  std::vector<int64_t> lengths(kSequences);
  for (int b = 0; b < kSequences; ++b) lengths[b] = longest / kSequences * (b + 1);

  auto ragged = Make(kSequences);
  std::vector<std::unique_ptr<Session>> separate;
  for (int b = 0; b < kSequences; ++b) separate.push_back(Make(1));

  // The prompts: one call per sequence on its own session; on the ragged session, one call per
  // prompt with the others sitting the step out (new_tokens 0), longest first.
  std::fprintf(stderr, "prefilling 16 prompts of 512..8192 tokens twice...\n");
  const auto prefill_start = std::chrono::steady_clock::now();
  for (int b = 0; b < kSequences; ++b) {
    const Tokens t = Random(lengths[b], 100 + b);
    at::Tensor out = at::empty_like(t.q);
    Check(separate[b]->Attend(0, t.q, t.k, t.v, out), "separate prefill");
    // Batch stride 0: every row is this prompt, and only row b is counted (the rest is padding,
    // never read), so no 16-row copy of an 8K prompt is made.
    const at::Tensor q = t.q.expand({kSequences, kHeads, lengths[b], kDim});
    const at::Tensor k = t.k.expand({kSequences, kKvHeads, lengths[b], kDim});
    const at::Tensor v = t.v.expand({kSequences, kKvHeads, lengths[b], kDim});
    std::vector<int64_t> counts(kSequences, 0);
    counts[b] = lengths[b];
    at::Tensor ragged_out = at::empty({kSequences, kHeads, lengths[b], kDim});
    Check(ragged->AttendRagged(0, q, k, v, ragged_out, counts), "ragged prefill");
    if (!at::equal(ragged_out[b], out[0])) {
      std::fprintf(stderr, "ragged prefill of sequence %d differs from its own session's\n", b);
      return 1;
    }
  }
  std::fprintf(stderr, "prefill done in %.1f s\n", MsSince(prefill_start) / 1000);
  if (ragged->BytesHeld() == 0) return 1;

  // Decode steps: the same tokens to both sides.
  std::vector<double> ragged_ms, separate_ms;
  const std::vector<int64_t> ones(kSequences, 1);
  PhaseBar bar("decode steps, ragged and separate", steps);
  for (int s = 0; s < steps; ++s) {
    bar.Update(s);
    const Tokens t = Random(kSequences, 1000 + s);  // [1, H, 16, d]: token b is sequence b's
    const at::Tensor q = t.q[0].transpose(0, 1).unsqueeze(2).contiguous();  // [16, H, 1, d]
    const at::Tensor k = t.k[0].transpose(0, 1).unsqueeze(2).contiguous();
    const at::Tensor v = t.v[0].transpose(0, 1).unsqueeze(2).contiguous();
    at::Tensor out = at::empty_like(q);
    auto t0 = std::chrono::steady_clock::now();
    Check(ragged->AttendRagged(0, q, k, v, out, ones), "ragged step");
    ragged_ms.push_back(MsSince(t0));
    std::vector<at::Tensor> qs, ks, vs, outs;
    for (int b = 0; b < kSequences; ++b) {
      qs.push_back(q.narrow(0, b, 1).contiguous());
      ks.push_back(k.narrow(0, b, 1).contiguous());
      vs.push_back(v.narrow(0, b, 1).contiguous());
      outs.push_back(at::empty_like(qs.back()));
    }
    t0 = std::chrono::steady_clock::now();
    for (int b = 0; b < kSequences; ++b) {
      Check(separate[b]->Attend(0, qs[b], ks[b], vs[b], outs[b]), "separate step");
    }
    separate_ms.push_back(MsSince(t0));
    for (int b = 0; b < kSequences; ++b) {
      if (!at::equal(out.narrow(0, b, 1), outs[b])) {
        std::fprintf(stderr, "step %d: sequence %d differs from its own session's\n", s, b);
        return 1;
      }
    }
  }
  const double ragged16 = Median(ragged_ms), separate16 = Median(separate_ms);
  const int64_t ragged_bytes = ragged->BytesHeld();
  int64_t separate_bytes = 0;
  for (const auto& s : separate) separate_bytes += s->BytesHeld();
  std::printf(
      "(a) one session, 16 sequences (512..8192 tokens, %lld bytes of pages), one ragged call per "
      "step: %.3f ms\n(b) 16 single-sequence sessions (%lld bytes) stepped in turn: %.3f ms "
      "(%.2fx the ragged call)\n",
      static_cast<long long>(ragged_bytes), ragged16, static_cast<long long>(separate_bytes),
      separate16, separate16 / ragged16);

  // (c) Sequence 0 retires; a new 1024-token prompt takes its slot in the same call in which the
  // other 15 decode.
  Check(ragged->ResetSequence(0), "reset sequence");
  auto fresh = Make(1);
  const int64_t prompt = 1024;
  const Tokens p = Random(prompt, 5000);
  const Tokens d = Random(kSequences, 5001);
  at::Tensor q = at::zeros({kSequences, kHeads, prompt, kDim});
  at::Tensor k = at::zeros({kSequences, kKvHeads, prompt, kDim});
  at::Tensor v = at::zeros({kSequences, kKvHeads, prompt, kDim});
  q[0].copy_(p.q[0]);
  k[0].copy_(p.k[0]);
  v[0].copy_(p.v[0]);
  std::vector<int64_t> counts(kSequences, 1);
  counts[0] = prompt;
  for (int b = 1; b < kSequences; ++b) {
    q[b].select(1, 0).copy_(d.q[0].select(1, b));
    k[b].select(1, 0).copy_(d.k[0].select(1, b));
    v[b].select(1, 0).copy_(d.v[0].select(1, b));
  }
  at::Tensor out = at::zeros_like(q);  // touched before the call, as a host's reused buffer is
  auto t0 = std::chrono::steady_clock::now();
  Check(ragged->AttendRagged(0, q, k, v, out, counts), "mixed step");
  const double mixed_ms = MsSince(t0);
  std::vector<at::Tensor> qs, ks, vs;
  for (int b = 1; b < kSequences; ++b) {
    qs.push_back(q.narrow(0, b, 1).narrow(2, 0, 1).contiguous());
    ks.push_back(k.narrow(0, b, 1).narrow(2, 0, 1).contiguous());
    vs.push_back(v.narrow(0, b, 1).narrow(2, 0, 1).contiguous());
  }
  at::Tensor fresh_out = at::zeros_like(p.q);
  t0 = std::chrono::steady_clock::now();
  Check(fresh->Attend(0, p.q, p.k, p.v, fresh_out), "separate prompt");
  for (int b = 1; b < kSequences; ++b) {
    at::Tensor o = at::empty_like(qs[b - 1]);
    Check(separate[b]->Attend(0, qs[b - 1], ks[b - 1], vs[b - 1], o), "separate step");
  }
  const double mixed_separate_ms = MsSince(t0);
  if (!at::equal(out[0], fresh_out[0])) {
    std::fprintf(stderr, "the new prompt's output differs from its own session's\n");
    return 1;
  }
  std::printf(
      "(c) one retired, a new 1024-token prompt in its slot while 15 decode: one ragged call "
      "%.1f ms; a new session's prefill and 15 calls: %.1f ms\n",
      mixed_ms, mixed_separate_ms);

  ResultJson json;
  json.Add("ragged16_ms", ragged16);
  json.Add("separate16_ms", separate16);
  json.Add("separate16_over_ragged16", separate16 / ragged16);
  json.Add("ragged16_bytes_held", static_cast<double>(ragged_bytes));
  json.Add("separate16_bytes_held", static_cast<double>(separate_bytes));
  json.Add("ragged_mixed_step_ms", mixed_ms);
  json.Add("separate_mixed_step_ms", mixed_separate_ms);
  json.Print();
  return 0;
}

}  // namespace

ATTNKIT_BENCH("ragged",
              "continuous batching: 16 sequences (512-8K tokens) in one session vs 16 sessions",
              RaggedBench);

}  // namespace attnkit::bench
