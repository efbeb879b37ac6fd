// attnkit-bench visual: CDPruner on LLaVA shapes (C = 4096 projector output, Dv = 1024 vision
// features, M = 32 text tokens, fp32, CPU). Per scenario: kernel build (relevance + similarity),
// greedy selection, end-to-end VisualPruner::Select, and the floor: the bare matrix products the
// kernel needs (relevance and similarity GEMMs, at::matmul on normalized inputs) timed in the same
// run. Targets: total <= 1.5x floor; greedy < 0.5 ms (N = 576, k = 64) and < 10 ms (N = 2880,
// k = 320).
#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include <cstdio>
#include <string>
#include <vector>

#include "attnkit/visual/visual_pruner.h"
#include "bench.h"
#include "cpu/visual_greedy.h"
#include "cpu/visual_linalg.h"
#include "visual/cdpruner_kernel.h"
#include "visual/visual_math.h"

namespace attnkit::bench {
namespace {

constexpr int64_t kC = 4096, kDv = 1024, kM = 32;

struct Scenario {
  std::string name;
  int num_images;
  int64_t n;  // tokens per image
  int64_t k;  // per image, or in all for a global budget
  bool global;
};

int VisualBench(const std::vector<std::string>& args) {
  int reps = 15;
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--reps") reps = std::max(3, std::stoi(args[i + 1]));
  }
  const int threads = kernels::VisualThreads();
  std::printf("visual: CDPruner, C=%lld Dv=%lld M=%lld fp32 CPU; %s; selection threads %d\n",
              static_cast<long long>(kC), static_cast<long long>(kDv), static_cast<long long>(kM),
              MachineDescription().c_str(), threads);
  const std::vector<Scenario> scenarios = {
      {"n576_k64", 1, 576, 64, false},
      {"n576_k128", 1, 576, 128, false},
      {"5x576_k64_each", 5, 576, 64, false},
      {"global_n2880_k320", 5, 576, 320, true},
  };
  ResultJson result;
  bool all_ok = true, fast_all_ok = true;
  for (const Scenario& sc : scenarios) {
    at::manual_seed(1);
    std::vector<at::Tensor> embeds, features;
    std::vector<VisualImage> images;
    for (int i = 0; i < sc.num_images; ++i) {
      embeds.push_back(at::randn({sc.n, kC}));
      features.push_back(at::randn({sc.n, kDv}));
      images.push_back({embeds.back(), features.back()});
    }
    at::Tensor text = at::randn({kM, kC});
    // Problems as the pruner sees them: per image, or all images pooled.
    std::vector<at::Tensor> prob_embeds = embeds, prob_features = features;
    if (sc.global) {
      prob_embeds = {at::cat(embeds, 0)};
      prob_features = {at::cat(features, 0)};
    }
    const int64_t reps_here = sc.global ? std::max(3, reps / 3) : reps;

    // Floor: the bare GEMMs on normalized inputs.
    std::vector<at::Tensor> ne, nf;
    for (size_t p = 0; p < prob_embeds.size(); ++p) {
      ne.push_back(visual::NormalizeRows(prob_embeds[p]));
      nf.push_back(visual::NormalizeRows(prob_features[p]));
    }
    at::Tensor nt = visual::NormalizeRows(text);
    const double floor_ms = MedianMs(
        [&] {
          for (size_t p = 0; p < ne.size(); ++p) {
            at::Tensor rel = at::matmul(ne[p], nt.t());
            at::Tensor sim = at::matmul(nf[p], nf[p].t());
          }
        },
        reps_here);

    // Kernel build: exact relevance, theta, exact similarity.
    std::vector<at::Tensor> sims(prob_embeds.size()), rels(prob_embeds.size());
    const double build_ms = MedianMs(
        [&] {
          for (size_t p = 0; p < prob_embeds.size(); ++p) {
            rels[p] = visual::ApplyTheta(
                visual::ExactRelevance(prob_embeds[p], text, false, threads), 0.5);
            sims[p] = visual::ExactSimilarity(prob_features[p], threads);
          }
        },
        reps_here);

    // Greedy selection alone (per image in parallel, as Select does).
    const int64_t k = sc.k;
    const double greedy_ms = MedianMs(
        [&] {
          auto one = [&](int64_t p, int t) {
            const int64_t n = sims[p].size(0);
            std::vector<float> work(kernels::DppGreedyMapWorkSize(n, k));
            std::vector<int64_t> order(k);
            kernels::DppGreedyMap(sims[p].data_ptr<float>(), rels[p].data_ptr<float>(), n, n, k,
                                  false, work.data(), order.data(), t);
          };
          if (sims.size() == 1) {
            one(0, threads);
          } else {
            const int64_t count = static_cast<int64_t>(sims.size());
            const int team = static_cast<int>(std::min<int64_t>(threads, count));
            kernels::RunOnThreads(team, [&](int t) {
              for (int64_t p = t; p < count; p += team) one(p, 1);
            });
          }
        },
        reps_here);

    // End to end.
    VisualOptions options;
    options.num_keep_tokens = static_cast<int>(sc.k);
    options.global_budget = sc.global;
    auto pruner = VisualPruner::Create(options);
    if (!pruner.ok()) {
      std::printf("error: %s\n", std::string(pruner.status().message()).c_str());
      return 1;
    }
    size_t kept = 0;
    const double total_ms = MedianMs(
        [&] {
          auto r = (*pruner)->Select(images, text);
          kept = 0;
          if (r.ok()) {
            for (const auto& v : *r) kept += v.size();
          }
        },
        reps_here);

    // The same selection with fast_kernel (BLAS GEMMs instead of the reference's rounding).
    options.fast_kernel = true;
    auto fast_pruner = VisualPruner::Create(options);
    if (!fast_pruner.ok()) return 1;
    const double fast_total_ms =
        MedianMs([&] { (void)(*fast_pruner)->Select(images, text); }, reps_here);
    const double fast_ratio = fast_total_ms / floor_ms;

    const double ratio = total_ms / floor_ms;
    const int64_t n_sel = sc.global ? sc.n * sc.num_images : sc.n;
    double greedy_target = 0;
    if (n_sel == 576 && sc.k == 64 && sc.num_images == 1) greedy_target = 0.5;
    if (n_sel == 2880 && sc.k == 320) greedy_target = 10.0;
    const bool ratio_ok = ratio <= 1.5;
    const bool fast_ratio_ok = fast_ratio <= 1.5;
    const bool greedy_ok = greedy_target == 0 || greedy_ms < greedy_target;
    all_ok = all_ok && ratio_ok && greedy_ok;
    std::printf(
        "%-18s images=%d N=%lld k=%lld kept=%zu | kernel build %8.3f ms | greedy %7.3f ms%s | "
        "total %8.3f ms | bare GEMMs %8.3f ms | total/floor %.2fx (target <= 1.5x %s)\n",
        sc.name.c_str(), sc.num_images, static_cast<long long>(n_sel), static_cast<long long>(sc.k),
        kept, build_ms, greedy_ms,
        greedy_target > 0
            ? (std::string(" (target < ") + std::to_string(greedy_target).substr(0, 4) + " ms " +
               (greedy_ok ? "ok" : "MISSED") + ")")
                  .c_str()
            : "",
        total_ms, floor_ms, ratio, ratio_ok ? "ok" : "MISSED");
    result.Add(sc.name + "_build_ms", build_ms);
    result.Add(sc.name + "_greedy_ms", greedy_ms);
    result.Add(sc.name + "_total_ms", total_ms);
    result.Add(sc.name + "_floor_ms", floor_ms);
    result.Add(sc.name + "_total_over_floor", ratio);
    result.Add(sc.name + "_fast_total_ms", fast_total_ms);
    result.Add(sc.name + "_fast_total_over_floor", fast_ratio);
    std::printf("%-18s fast_kernel: total %8.3f ms | total/floor %.2fx (target <= 1.5x %s)\n",
                sc.name.c_str(), fast_total_ms, fast_ratio, fast_ratio_ok ? "ok" : "MISSED");
    fast_all_ok = fast_all_ok && fast_ratio_ok && greedy_ok;
  }
  result.Add("threads", static_cast<double>(threads));
  result.Add("targets_met", all_ok ? "yes" : "no");
  result.Add("targets_met_fast_kernel", fast_all_ok ? "yes" : "no");
  result.Print();
  return 0;
}

}  // namespace

ATTNKIT_BENCH("visual", "CDPruner kernel build, greedy MAP and end-to-end selection vs bare GEMMs",
              VisualBench);

}  // namespace attnkit::bench
