// attnkit-bench prefill: sparse prefill attention on CPU against libtorch dense causal attention.
// 8 heads, head_dim 128, fp32, lengths 4K/8K/16K by default (--lengths 4096,8192). Per length:
// libtorch dense (matmul, mask, softmax, matmul; head by head), attnkit's block-sparse kernel with
// the full causal mask, the Tri-shape mask (recent 1024, last 100), a random block-causal mask of
// 10% density, and the XAttention estimate alone (stride 8 and 16). Block size 128. The kernels use
// BLAS block GEMMs (their default); the full-mask kernel and the stride-8 estimate are also timed
// with the AVX2 micro-kernel path for comparison. FlexPrefill (gamma 0.9, tau 0.1, the paper's)
// runs on structured q / k / v (StructuredQKV: rotary relative-position structure and a few heavy
// keys, as the FlexPrefill conformance cases; on uniform noise every distribution is flat and it
// keeps almost every block): its mask and attention timed together, its density and its output's
// error against libtorch dense on the same inputs (keys flexprefill_*). --background-load measures
// libtorch dense, the full mask and Tri-shape again while a busy process competes for the cores
// (keys *_loaded_*).
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <ATen/Context.h>
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "attnkit/sparse/masks.h"
#include "attnkit/sparse/sparse_attention.h"
#include "bench.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"

namespace attnkit::bench {
namespace {

constexpr int64_t kHeads = 8, kDim = 128, kBlock = 128;

at::Tensor DenseCausal(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& future, double scale) {
  at::Tensor out = at::empty_like(q);
  for (int64_t h = 0; h < q.size(0); ++h) {
    at::Tensor s = at::matmul(q[h], k[h].t()).mul_(scale);
    s.masked_fill_(future, -INFINITY);
    out[h].copy_(at::matmul(at::softmax(s, -1), v[h]));
  }
  return out;
}

// A random block-causal mask of about `density`: the diagonal always (every query sees a key), the
// other causal blocks with the probability that makes up the rest.
at::Tensor RandomCausalMask(const sparse::BlockGrid& grid, double density) {
  at::Tensor causal = sparse::CausalBlockMask(grid);
  const double total = static_cast<double>(grid.CausalBlocks());
  const double p = std::max(0.0, (density * total - grid.q_blocks) / (total - grid.q_blocks));
  at::Tensor keep = at::rand(causal.sizes()).lt(p).logical_and(causal);
  for (int64_t r = 0; r < grid.q_blocks; ++r) keep[0][r][grid.Diagonal(r)].fill_(true);
  return keep;
}

// q, k, v [kHeads, len, kDim] with the structure real attention has: per head a fixed direction
// plus noise, turned by a rotary embedding (base 500) so that q.k depends on the distance (slash
// lines), and keys at len / 60 random positions made heavy (vertical lines).
void StructuredQKV(int64_t len, at::Tensor* q, at::Tensor* k, at::Tensor* v) {
  const at::Tensor freq =
      at::pow(500.0, at::arange(0, kDim / 2, at::kDouble).mul(-2.0 / kDim)).to(at::kFloat);
  const at::Tensor angle = at::arange(len, at::kFloat).view({len, 1}) * freq.view({1, kDim / 2});
  const at::Tensor cos = angle.cos(), sin = angle.sin();
  auto rotate = [&](const at::Tensor& x) {
    const at::Tensor a = x.narrow(2, 0, kDim / 2), b = x.narrow(2, kDim / 2, kDim / 2);
    return at::cat({a * cos - b * sin, a * sin + b * cos}, 2);
  };
  *q = rotate(at::randn({kHeads, 1, kDim}) * 1.5 + at::randn({kHeads, len, kDim}));
  *k = rotate(at::randn({kHeads, 1, kDim}) * 1.5 + at::randn({kHeads, len, kDim}));
  const at::Tensor heavy = at::randperm(len).narrow(0, 0, std::max<int64_t>(2, len / 60));
  k->index_copy_(1, heavy,
                 k->index_select(1, heavy) + 3.0 * at::randn({kHeads, heavy.size(0), kDim}));
  *v = at::randn({kHeads, len, kDim});
}

// Wall and process CPU time of one call, in milliseconds.
struct Times {
  double wall_ms = 0;
  double cpu_ms = 0;
};

double CpuNowMs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Median wall time (as MedianMs) and median CPU time over `reps` runs after `warmup`. The CPU time
// (all threads) stays meaningful when other processes load the machine, the wall time does not.
Times Measure(const std::function<void()>& fn, int reps, int warmup, const std::string& phase) {
  PhaseBar bar(phase, warmup + reps);
  for (int i = 0; i < warmup; ++i) {
    fn();
    bar.Update(i + 1);
  }
  std::vector<double> wall, cpu;
  for (int i = 0; i < reps; ++i) {
    bar.Update(warmup + i);
    const double c0 = CpuNowMs();
    const auto w0 = std::chrono::steady_clock::now();
    fn();
    wall.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count());
    cpu.push_back(CpuNowMs() - c0);
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

template <typename T>
T Must(absl::StatusOr<T> v) {
  if (!v.ok()) {
    std::fprintf(stderr, "prefill: %s\n", std::string(v.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*v);
}

int PrefillMain(const std::vector<std::string>& args) {
  std::vector<int64_t> lengths = {4096, 8192, 16384};
  int reps = 1, warmup = 1;
  bool background_load = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--lengths" && has_value) {
      lengths.clear();
      for (absl::string_view part : absl::StrSplit(args[++i], ',')) {
        int64_t n = 0;
        if (!absl::SimpleAtoi(part, &n) || n < 1) {
          std::fprintf(stderr, "prefill: bad length \"%s\"\n", std::string(part).c_str());
          return 2;
        }
        lengths.push_back(n);
      }
    } else if (a == "--reps" && has_value && absl::SimpleAtoi(args[i + 1], &reps) && reps >= 1) {
      ++i;
    } else if (a == "--warmup" && has_value && absl::SimpleAtoi(args[i + 1], &warmup) &&
               warmup >= 0) {
      ++i;
    } else if (a == "--background-load") {
      background_load = true;
    } else {
      std::fprintf(stderr,
                   "usage: attnkit-bench prefill [--lengths 4096,8192,16384] [--reps 1] "
                   "[--warmup 1] [--background-load]\n");
      return 2;
    }
  }
  at::manual_seed(0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  SparseOptions options;
  options.block_size = kBlock;
  auto sparse = Must(sparse::SparseAttention::Create(options));
  SparseOptions flex_options = options;
  flex_options.mode = SparseMode::kFlexPrefill;
  flex_options.flex_gamma = 0.9;
  flex_options.flex_tau = 0.1;
  auto flex = Must(sparse::SparseAttention::Create(flex_options));
  ResultJson result;
  result.Add("benchmark", "prefill");
  result.Add("machine", MachineDescription());
  result.Add("heads", static_cast<double>(kHeads));
  result.Add("head_dim", static_cast<double>(kDim));
  result.Add("block_size", static_cast<double>(kBlock));
  std::printf("prefill: %ld heads, head_dim %ld, fp32, block %ld, median of %d after %d warm-up\n",
              static_cast<long>(kHeads), static_cast<long>(kDim), static_cast<long>(kBlock), reps,
              warmup);
  // The machine's sgemm rate (libtorch's BLAS, all threads): a 2048^3 float32 product, the
  // reference for the full-mask kernel's GFLOP/s below.
  double sgemm_gflops = 0;
  {
    const int64_t n = 2048;
    const at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
    at::Tensor c = at::empty({n, n});
    const Times t = Measure([&] { at::mm_out(c, a, b); }, 5, 2, "sgemm 2048");
    sgemm_gflops = 2.0 * n * n * n / (t.wall_ms * 1e-3) / 1e9;
    std::printf("sgemm 2048^3: %.1f ms, %.1f GFLOP/s\n", t.wall_ms, sgemm_gflops);
    result.Add("sgemm_gflops", sgemm_gflops);
  }
  for (int64_t len : lengths) {
    at::Tensor q = at::randn({kHeads, len, kDim}), k = at::randn({kHeads, len, kDim});
    at::Tensor v = at::randn({kHeads, len, kDim});
    const sparse::BlockGrid grid = Must(sparse::BlockGrid::Make(len, len, kBlock));
    const at::Tensor full = sparse::CausalBlockMask(grid);
    const at::Tensor tri = sparse::TriShapeMask(grid, 0, 1024, 100);
    const at::Tensor random = RandomCausalMask(grid, 0.1);
    const at::Tensor future = at::ones({len, len}, at::kBool).triu(1);

    at::Tensor dense_out, full_out, scratch;
    const std::string at_len = " " + std::to_string(len);
    auto attend = [&](const at::Tensor& mask, at::Tensor* out, const char* name) {
      return Measure([&] { *out = Must(sparse->Attention(q, k, v, mask, scale)); }, reps, warmup,
                     name + at_len);
    };
    const Times dense = Measure([&] { dense_out = DenseCausal(q, k, v, future, scale); }, reps,
                                warmup, "libtorch dense" + at_len);
    const Times full_t = attend(full, &full_out, "full mask");
    const Times full_avx2 = Measure(
        [&] {
          scratch = Must(kernels::BlockSparseAttentionCpu(q, k, v, full, kBlock, scale,
                                                          kernels::SparseGemm::kVectorized));
        },
        reps, warmup, "full mask, AVX2" + at_len);
    // The bfloat16 path (AVX512-BF16 dot products) on the same values rounded to bfloat16.
    const bool bf16_path = kernels::Bf16PathTaken(at::kBFloat16, at::kBFloat16, at::kBFloat16);
    Times full_bf16{};
    double bf16_err = 0;
    if (bf16_path) {
      const at::Tensor qb = q.to(at::kBFloat16), kb = k.to(at::kBFloat16), vb = v.to(at::kBFloat16);
      at::Tensor bf16_out;
      full_bf16 = Measure(
          [&] {
            bf16_out = Must(kernels::BlockSparseAttentionCpu(qb, kb, vb, full, kBlock, scale,
                                                             kernels::SparseGemm::kBf16Dot));
          },
          reps, warmup, "full mask, bf16" + at_len);
      bf16_err = (bf16_out - full_out).abs().max().item<double>();
    }
    const Times tri_t = attend(tri, &scratch, "tri-shape");
    const Times random_t = attend(random, &scratch, "random 10%");
    const Times x8 =
        Measure([&] { scratch = Must(kernels::XAttentionEstimateCpu(q, k, kBlock, 8)); }, reps,
                warmup, "xattention stride 8" + at_len);
    const Times x8_avx2 = Measure(
        [&] {
          scratch = Must(
              kernels::XAttentionEstimateCpu(q, k, kBlock, 8, kernels::SparseGemm::kVectorized));
        },
        reps, warmup, "xattention stride 8, AVX2" + at_len);
    const Times x16 =
        Measure([&] { scratch = Must(kernels::XAttentionEstimateCpu(q, k, kBlock, 16)); }, reps,
                warmup, "xattention stride 16" + at_len);
    const double err = (full_out - dense_out).abs().max().item<double>();
    // FlexPrefill on structured inputs: mask and attention, against dense on the same inputs.
    at::Tensor sq, sk, sv, flex_out;
    StructuredQKV(len, &sq, &sk, &sv);
    double flex_density = 1.0;
    const Times flex_t =
        Measure([&] { flex_out = Must(flex->Prefill(sq, sk, sv, scale, &flex_density)); }, reps,
                warmup, "flexprefill" + at_len);
    const at::Tensor structured_dense = DenseCausal(sq, sk, sv, future, scale);
    const double flex_err = (flex_out - structured_dense).abs().max().item<double>();
    const double flex_rel = (flex_out - structured_dense).norm().item<double>() /
                            structured_dense.norm().item<double>();
    const double tri_density = sparse::MaskDensity(tri, grid);
    const double random_density = sparse::MaskDensity(random, grid);

    std::printf("L=%ld  (wall ms, CPU ms of all threads; ratios wall / CPU)\n",
                static_cast<long>(len));
    auto line = [&](const char* name, const Times& t, const Times& base, const char* what) {
      std::printf("  %-34s %9.1f %9.1f   %6.3f / %6.3f %s\n", name, t.wall_ms, t.cpu_ms,
                  t.wall_ms / base.wall_ms, t.cpu_ms / base.cpu_ms, what);
    };
    line("libtorch dense causal", dense, dense, "x dense");
    line("attnkit, full causal mask", full_t, dense, "x dense");
    line("  same, AVX2 micro-kernel GEMMs", full_avx2, dense, "x dense");
    line("attnkit, tri-shape (1024, 100)", tri_t, dense, "x dense");
    line("attnkit, random 10% block-causal", random_t, full_t, "x full mask");
    line("xattention estimate, stride 8", x8, dense, "x dense");
    line("  same, AVX2 micro-kernel GEMMs", x8_avx2, dense, "x dense");
    line("xattention estimate, stride 16", x16, dense, "x dense");
    line("flexprefill (0.9, 0.1), structured", flex_t, dense, "x dense");
    std::printf("  tri-shape density %.3f, random density %.3f, full vs dense max |diff| %.2e\n",
                tri_density, random_density, err);
    std::printf("  tri-shape speedup vs dense: %.2fx wall, %.2fx CPU\n",
                dense.wall_ms / tri_t.wall_ms, dense.cpu_ms / tri_t.cpu_ms);
    std::printf(
        "  flexprefill: density %.3f, speedup vs dense %.2fx wall, output vs dense max |diff| "
        "%.2e, relative L2 %.2e\n",
        flex_density, dense.wall_ms / flex_t.wall_ms, flex_err, flex_rel);
    // Causal attention's useful FLOPs: q.k and p.v over the L (L + 1) / 2 causal pairs per head.
    const double causal_flops = 4.0 * kDim * (len * (len + 1) / 2.0) * kHeads;
    const double full_gflops = causal_flops / (full_t.wall_ms * 1e-3) / 1e9;
    std::printf("  full mask: %.1f GFLOP/s (%.0f %% of sgemm)\n", full_gflops,
                100.0 * full_gflops / sgemm_gflops);
    if (bf16_path) {
      const double bf16_gflops = causal_flops / (full_bf16.wall_ms * 1e-3) / 1e9;
      std::printf(
          "  full mask, bf16 (AVX512-BF16): %.1f ms, %.1f GFLOP/s, %.2fx the float32 "
          "time, max |diff| vs float32 %.2e\n",
          full_bf16.wall_ms, bf16_gflops, full_bf16.wall_ms / full_t.wall_ms, bf16_err);
      const std::string s2 = "_" + std::to_string(len);
      result.Add("full_bf16_ms" + s2, full_bf16.wall_ms);
      result.Add("full_bf16_gflops" + s2, bf16_gflops);
      result.Add("full_bf16_over_fp32_time" + s2, full_bf16.wall_ms / full_t.wall_ms);
      result.Add("full_bf16_max_abs_diff" + s2, bf16_err);
    } else {
      std::printf("  full mask, bf16: this CPU has no AVX512-BF16 (bfloat16 runs as float32)\n");
    }
    std::fflush(stdout);
    const std::string sfx = "_" + std::to_string(len);
    auto add = [&](const std::string& key, const Times& t) {
      result.Add(key + "_ms" + sfx, t.wall_ms);
      result.Add(key + "_cpu_ms" + sfx, t.cpu_ms);
    };
    add("dense", dense);
    add("full", full_t);
    add("full_avx2", full_avx2);
    add("trishape", tri_t);
    add("random10", random_t);
    add("xattn_s8", x8);
    add("xattn_s8_avx2", x8_avx2);
    add("xattn_s16", x16);
    add("flexprefill", flex_t);
    result.Add("flexprefill_density" + sfx, flex_density);
    result.Add("flexprefill_max_abs_err" + sfx, flex_err);
    result.Add("flexprefill_rel_l2_err" + sfx, flex_rel);
    result.Add("flexprefill_speedup_vs_dense" + sfx, dense.wall_ms / flex_t.wall_ms);
    result.Add("trishape_density" + sfx, tri_density);
    result.Add("random10_density" + sfx, random_density);
    result.Add("full_vs_dense_time" + sfx, full_t.wall_ms / dense.wall_ms);
    result.Add("trishape_speedup_vs_dense" + sfx, dense.wall_ms / tri_t.wall_ms);
    result.Add("random10_vs_full_time" + sfx, random_t.wall_ms / full_t.wall_ms);
    result.Add("xattn_s8_vs_dense_time" + sfx, x8.wall_ms / dense.wall_ms);
    result.Add("xattn_s16_vs_dense_time" + sfx, x16.wall_ms / dense.wall_ms);
    result.Add("full_vs_dense_cpu" + sfx, full_t.cpu_ms / dense.cpu_ms);
    result.Add("trishape_speedup_vs_dense_cpu" + sfx, dense.cpu_ms / tri_t.cpu_ms);
    result.Add("random10_vs_full_cpu" + sfx, random_t.cpu_ms / full_t.cpu_ms);
    result.Add("xattn_s8_vs_dense_cpu" + sfx, x8.cpu_ms / dense.cpu_ms);
    result.Add("full_max_abs_diff" + sfx, err);
    result.Add("full_gflops" + sfx, full_gflops);
    result.Add("full_over_sgemm" + sfx, full_gflops / sgemm_gflops);
    if (background_load) {
      // The same contenders again while a busy process competes for the cores.
      Times dense_loaded, full_loaded, tri_loaded;
      {
        BackgroundLoad load;
        dense_loaded = Measure([&] { dense_out = DenseCausal(q, k, v, future, scale); }, reps, 0,
                               "libtorch dense, loaded" + at_len);
        full_loaded = attend(full, &full_out, "full mask, loaded");
        tri_loaded = attend(tri, &scratch, "tri-shape, loaded");
      }
      std::printf("  under background load (wall ms, CPU ms; x its quiet wall time):\n");
      line("libtorch dense causal", dense_loaded, dense, "x quiet");
      line("attnkit, full causal mask", full_loaded, full_t, "x quiet");
      line("attnkit, tri-shape (1024, 100)", tri_loaded, tri_t, "x quiet");
      std::printf("  tri-shape speedup vs dense under load: %.2fx wall\n",
                  dense_loaded.wall_ms / tri_loaded.wall_ms);
      std::fflush(stdout);
      add("dense_loaded", dense_loaded);
      add("full_loaded", full_loaded);
      add("trishape_loaded", tri_loaded);
      result.Add("trishape_speedup_vs_dense_loaded" + sfx,
                 dense_loaded.wall_ms / tri_loaded.wall_ms);
      result.Add("trishape_loaded_over_quiet" + sfx, tri_loaded.wall_ms / tri_t.wall_ms);
      result.Add("full_loaded_over_quiet" + sfx, full_loaded.wall_ms / full_t.wall_ms);
    }
  }
  result.Print();
  return 0;
}

}  // namespace

ATTNKIT_BENCH("prefill", "sparse prefill attention vs libtorch dense (8 heads, d 128, fp32)",
              PrefillMain);

}  // namespace attnkit::bench
