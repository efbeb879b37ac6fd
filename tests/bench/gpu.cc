// attnkit-bench gpu: the CUDA kernels on the GPU (issue 10). 32 query heads, 8 kv heads, head dim
// 128, bf16, lengths 32K/64K/128K by default (--lengths 32768,65536). Per length: PyTorch SDPA
// dense causal with its flash backend (K/V expanded to 32 heads) as the baseline, attnkit's
// block-sparse kernel with the full causal mask, with the Tri-shape mask (sink 128, recent 4096,
// last 100), the XAttention estimate alone (stride 8, block 128) and XAttention end to end on
// structured Q/K (StructuredQK; threshold 0.9, head-summed and per-head masks). Decode: one step
// over a 32K-token paged cache: ATen dense decode (matmul, softmax, matmul; it yields the
// probabilities the eviction scorers need), SDPA (GQA) where available, attnkit's fused decode with
// score accumulation over the full 32K cache and over a 2K-token cache (the SnapKV 2K budget). GPU
// times are medians of CUDA event timings after warm-up; decode steps are timed 20 back to back
// (per-step figure) and the fused decode also alone; its K/V bandwidth is set against the spec peak
// (memory clock x bus width) and a measured device-to-device copy. Ends with RESULT {json}. Built
// as a message when CUDA is off.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench.h"

#ifdef ATTNKIT_WITH_CUDA
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "attnkit/config_parser.h"
#include "cuda/kernels.h"
#include "attnkit/session/session.h"
#include "attnkit/sparse/masks.h"
#include "attnkit/sparse/sparse_attention.h"
#endif

namespace attnkit::bench {
namespace {

#ifdef ATTNKIT_WITH_CUDA
constexpr int64_t kHeads = 32, kKvHeads = 8, kDim = 128, kBlock = 128;

double GpuMs(const std::function<void()>& fn, int reps, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaDeviceSynchronize();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a, stream);
    fn();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float t = 0;
    cudaEventElapsedTime(&t, a, b);
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Per-call time of `batch` back-to-back calls between one pair of events (the host enqueues ahead
// of the GPU, as in a decode loop), median over `reps`.
double GpuMsBatched(const std::function<void()>& fn, int reps, int batch) {
  return GpuMs(
             [&] {
               for (int i = 0; i < batch; ++i) fn();
             },
             reps, 1) /
         batch;
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "gpu bench: %s failed: %s\n", what,
                 std::string(v.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(v);
}

double RelErr(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kFloat), y = b.to(at::kFloat);
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

// Q/K with the structure of real attention (what the conformance generators and captured model
// activations show: a recency band, a sink, heads from broad to local): per kv head a content
// direction of norm 9..15 (broad to local) plus unit-variance noise per token, rotated by RoPE
// (theta 10000) at each position, so q_t.k_s falls off with |t - s|; token 0's key carries a sink
// direction every query shares (about +6 on its logit). q [32, L, d], k [8, L, d], bf16. Checked
// with exact attention at 8K: heads at norm 9 need ~60 % of the causal blocks for 0.9 of the mass,
// heads at 15 ~5 %.
void StructuredQK(int64_t L, at::Device dev, at::Tensor* q, at::Tensor* k) {
  const auto f = at::TensorOptions().device(dev).dtype(at::kFloat);
  const at::Tensor inv =
      at::pow(10000.0, at::arange(0, kDim, 2, f).div(-static_cast<double>(kDim)));
  const at::Tensor angle = at::arange(L, f).unsqueeze(1) * inv;  // [L, d/2]
  const at::Tensor cos = angle.cos(), sin = angle.sin();
  auto rope = [&](const at::Tensor& x) {  // [heads, L, d]
    const at::Tensor x1 = x.narrow(-1, 0, kDim / 2), x2 = x.narrow(-1, kDim / 2, kDim / 2);
    return at::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
  };
  at::Tensor content = at::randn({kKvHeads, 1, kDim}, f);
  content = content / content.norm(2, -1, true) *
            at::linspace(9.0, 15.0, kKvHeads, f).view({kKvHeads, 1, 1});
  at::Tensor sink = at::randn({kDim}, f);
  sink = sink / sink.norm();
  at::Tensor kf = rope(content + at::randn({kKvHeads, L, kDim}, f));
  kf.select(1, 0).add_(sink * (6.0 * std::sqrt(static_cast<double>(kDim))));
  *k = kf.to(at::kBFloat16);
  kf.reset();
  at::Tensor qf =
      rope(content.repeat_interleave(kHeads / kKvHeads, 0) + at::randn({kHeads, L, kDim}, f))
          .add_(sink);
  *q = qf.to(at::kBFloat16);
}

int Run(const std::vector<std::string>& args) {
  std::vector<int64_t> lengths = {32768, 65536, 131072};
  int reps = 5;
  for (size_t i = 0; i + 1 < args.size(); i += 2) {
    if (args[i] == "--lengths") {
      lengths.clear();
      for (absl::string_view s : absl::StrSplit(args[i + 1], ',')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(s, &v) || v <= 0) return 2;
        lengths.push_back(v);
      }
    } else if (args[i] == "--reps") {
      if (!absl::SimpleAtoi(args[i + 1], &reps) || reps < 1) return 2;
    }
  }
  if (!cuda::Available()) {
    std::printf("gpu bench: no CUDA device present\nRESULT {\"error\": \"no CUDA device\"}\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs, %.0f GB\n", prop.name, prop.multiProcessorCount,
              prop.totalGlobalMem / 1e9);
  ResultJson result;
  result.Add("device", std::string(prop.name));
  const auto dev = at::Device(at::kCUDA, 0);
  auto opts = at::TensorOptions().device(dev).dtype(at::kBFloat16);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));

  for (int64_t L : lengths) {
    const std::string p = absl::StrCat("L", L, "_");
    at::manual_seed(L);
    // [L, H, d] storage like a model's projections, viewed as [H, L, d].
    at::Tensor q = at::randn({L, kHeads, kDim}, opts).transpose(0, 1);
    at::Tensor k = at::randn({L, kKvHeads, kDim}, opts).transpose(0, 1);
    at::Tensor v = at::randn({L, kKvHeads, kDim}, opts).transpose(0, 1);
    const int r = L >= 131072 ? std::max(3, reps / 2) : reps;

    // SDPA dense causal, flash backend only; K/V expanded to the query heads.
    double sdpa_ms = -1;
    at::Tensor sdpa_out;
    {
      at::Tensor q4 = q.unsqueeze(0), k4 = k.repeat_interleave(kHeads / kKvHeads, 0).unsqueeze(0),
                 v4 = v.repeat_interleave(kHeads / kKvHeads, 0).unsqueeze(0);
      auto& ctx = at::globalContext();
      ctx.setSDPUseFlash(true);
      ctx.setSDPUseMemEfficient(false);
      ctx.setSDPUseMath(false);
      ctx.setSDPUseCuDNN(false);
      try {
        sdpa_ms = GpuMs(
            [&] { sdpa_out = at::scaled_dot_product_attention(q4, k4, v4, {}, 0.0, true, scale); },
            r);
      } catch (const std::exception& e) {
        std::printf("SDPA flash failed: %s\n", e.what());
      }
      ctx.setSDPUseMemEfficient(true);
      ctx.setSDPUseMath(true);
      ctx.setSDPUseCuDNN(true);
    }
    const double causal_flops = 4.0 * kDim * kHeads * (static_cast<double>(L) * (L + 1) / 2);

    auto grid = Must(sparse::BlockGrid::Make(L, L, kBlock), "grid");
    auto full = Must(cuda::MaskToBlockLists(sparse::CausalBlockMask(grid), dev), "lists");
    at::Tensor full_out;
    const double full_ms = GpuMs(
        [&] {
          full_out = Must(cuda::BlockSparseAttention(q, k, v, full, kBlock, scale), "attention");
        },
        r);
    const double full_err = sdpa_out.defined() ? RelErr(full_out, sdpa_out.squeeze(0)) : -1;

    at::Tensor tri_mask;
    cuda::BlockLists tri;
    const double tri_build_ms = GpuMs(
        [&] {
          tri = Must(cuda::ShapeBlockLists(L, L, kBlock, 128, 4096, 100, true, dev, &tri_mask),
                     "tri lists");
        },
        r);
    const double tri_ms = GpuMs(
        [&] { Must(cuda::BlockSparseAttention(q, k, v, tri, kBlock, scale), "tri attention"); }, r);
    const double tri_blocks = tri_mask.sum().item<double>();
    const double tri_density = tri_blocks / static_cast<double>(grid.CausalBlocks());
    const double block_flops = 4.0 * kDim * kHeads * kBlock * kBlock;

    const double est_ms =
        GpuMs([&] { Must(cuda::XAttentionEstimate(q, k, kBlock, 8), "estimate"); }, r);

    // XAttention end to end through SparseAttention (estimate, threshold selection, block lists,
    // block-sparse attention; what a session's prefill runs) on structured Q/K, stride 8,
    // threshold 0.9, the last 100 queries dense; one mask for all heads (SUM, the reference) and
    // one per head (PER_HEAD). Accuracy against SDPA's dense output on the same inputs.
    const char* kAggregations[2] = {"sum", "per_head"};
    double xattn_ms[2] = {-1, -1}, xattn_density[2] = {0, 0}, xattn_err[2] = {-1, -1};
    {
      at::Tensor sq, sk;
      StructuredQK(L, dev, &sq, &sk);
      at::Tensor dense_ref;
      {
        const int64_t G = kHeads / kKvHeads;
        at::Tensor k4 = sk.repeat_interleave(G, 0).unsqueeze(0);
        at::Tensor v4 = v.repeat_interleave(G, 0).unsqueeze(0);
        dense_ref = at::scaled_dot_product_attention(sq.unsqueeze(0), k4, v4, {}, 0.0, true, scale)
                        .squeeze(0);
      }
      for (int a = 0; a < 2; ++a) {
        SparseOptions so;
        so.mode = SparseMode::kXAttention;
        so.block_size = kBlock;
        so.stride = 8;
        so.threshold = 0.9;
        so.last_query_size = 100;
        so.head_aggregation = a == 0 ? HeadAggregation::kSum : HeadAggregation::kPerHead;
        auto engine = Must(sparse::SparseAttention::Create(so), "xattention engine");
        at::Tensor o;
        xattn_ms[a] = GpuMs(
            [&] { o = Must(engine->Prefill(sq, sk, v, scale, &xattn_density[a]), "xattention"); },
            r);
        xattn_err[a] = RelErr(o, dense_ref);
      }
    }

    std::printf(
        "L=%-7lld sdpa flash %9.2f ms (%5.1f TFLOP/s) | attnkit full %9.2f ms (%5.1f TFLOP/s, "
        "%.2fx sdpa speed, rel err %.1e)\n"
        "          tri-shape %9.2f ms (density %.4f, %5.1f TFLOP/s on blocks, %.2fx faster than "
        "sdpa; lists built in %.3f ms) | xattn estimate s8 %8.2f ms (%.1f%% of sdpa)\n",
        static_cast<long long>(L), sdpa_ms, causal_flops / sdpa_ms / 1e9, full_ms,
        causal_flops / full_ms / 1e9, sdpa_ms / full_ms, full_err, tri_ms, tri_density,
        block_flops * tri_blocks / tri_ms / 1e9, sdpa_ms / tri_ms, tri_build_ms, est_ms,
        100 * est_ms / sdpa_ms);
    for (int a = 0; a < 2; ++a) {
      std::printf(
          "          xattention s8 t0.9 %-8s (structured q/k) %9.2f ms (density %.4f, %.2fx faster "
          "than sdpa, rel err vs dense %.1e)\n",
          kAggregations[a], xattn_ms[a], xattn_density[a], sdpa_ms / xattn_ms[a], xattn_err[a]);
      const std::string x = absl::StrCat(p, "xattn_", kAggregations[a], "_");
      result.Add(x + "ms", xattn_ms[a]);
      result.Add(x + "density", xattn_density[a]);
      result.Add(x + "speedup_vs_sdpa", sdpa_ms / xattn_ms[a]);
      result.Add(x + "rel_err_vs_dense", xattn_err[a]);
    }
    std::fflush(stdout);
    result.Add(p + "sdpa_flash_ms", sdpa_ms);
    result.Add(p + "full_ms", full_ms);
    result.Add(p + "full_speed_vs_sdpa", sdpa_ms / full_ms);
    result.Add(p + "full_tflops", causal_flops / full_ms / 1e9);
    result.Add(p + "sdpa_tflops", causal_flops / sdpa_ms / 1e9);
    result.Add(p + "full_rel_err_vs_sdpa", full_err);
    result.Add(p + "tri_ms", tri_ms);
    result.Add(p + "tri_density", tri_density);
    result.Add(p + "tri_speedup_vs_sdpa", sdpa_ms / tri_ms);
    result.Add(p + "tri_tflops_on_blocks", block_flops * tri_blocks / tri_ms / 1e9);
    result.Add(p + "tri_lists_ms", tri_build_ms);
    result.Add(p + "xattn_estimate_s8_ms", est_ms);
    result.Add(p + "xattn_estimate_frac_of_sdpa", est_ms / sdpa_ms);
  }

  // Decode: one step, 32 query heads over 8 kv heads, bf16.
  {
    const int64_t L = 32768, budget = 2048, page = 64;
    at::manual_seed(7);
    at::Tensor q = at::randn({kHeads, kDim}, opts);
    auto make_cache = [&](int64_t len, at::Tensor& pool, at::Tensor& k, at::Tensor& v) {
      const int64_t pages = (len + page - 1) / page;
      pool = at::randn({kKvHeads, pages, 2, page, kDim}, opts);
      k = pool.select(2, 0).reshape({kKvHeads, pages * page, kDim}).narrow(1, 0, len);
      v = pool.select(2, 1).reshape({kKvHeads, pages * page, kDim}).narrow(1, 0, len);
      at::Tensor ptrs = at::arange(kKvHeads * pages, at::TensorOptions().dtype(at::kLong))
                            .mul_(2 * page * kDim * 2)
                            .add_(reinterpret_cast<int64_t>(pool.data_ptr()))
                            .view({kKvHeads, pages});
      cuda::PagedCache c;
      c.page_ptrs = ptrs.to(dev);
      c.lengths = at::full({kKvHeads}, len, at::TensorOptions().dtype(at::kInt)).to(dev);
      c.max_length = len;
      c.page_size = page;
      c.head_dim = kDim;
      c.dtype = at::kBFloat16;
      return c;
    };
    at::Tensor pool_full, k_full, v_full, pool_b, k_b, v_b;
    cuda::PagedCache full = make_cache(L, pool_full, k_full, v_full);
    cuda::PagedCache small = make_cache(budget, pool_b, k_b, v_b);
    at::Tensor kc = k_full.contiguous(), vc = v_full.contiguous();
    at::Tensor scores = at::zeros({kKvHeads, L}, opts.dtype(at::kFloat));
    constexpr int kBatch = 20;
    const double dense_ms = GpuMsBatched(
        [&] {
          at::Tensor s = at::matmul(q.view({kKvHeads, kHeads / kKvHeads, 1, kDim}),
                                    kc.unsqueeze(1).transpose(-1, -2))
                             .mul_(scale);
          at::Tensor pr = at::softmax(s, -1, at::kFloat);
          at::Tensor o = at::matmul(pr.to(at::kBFloat16), vc.unsqueeze(1));
          scores.add_(pr.sum({1, 2}));
        },
        11, kBatch);
    double sdpa_ms = -1;
    try {
      at::Tensor q4 = q.view({1, kHeads, 1, kDim}), k4 = kc.unsqueeze(0), v4 = vc.unsqueeze(0);
      sdpa_ms = GpuMsBatched(
          [&] {
            at::scaled_dot_product_attention(q4, k4, v4, {}, 0.0, false, scale,
                                             /*enable_gqa=*/true);
          },
          11, kBatch);
    } catch (const std::exception& e) {
      std::printf("SDPA decode (GQA) unavailable: %s\n", e.what());
    }
    at::Tensor fused_out;
    const double fused_full_ms = GpuMsBatched(
        [&] { fused_out = Must(cuda::PagedDecodeAttention(q, full, scale, &scores), "decode"); },
        11, kBatch);
    const double fused_full_latency_ms =
        GpuMs([&] { Must(cuda::PagedDecodeAttention(q, full, scale, &scores), "decode"); }, 50, 5);
    std::string sweep;
    for (int64_t split : {128, 256, 512, 1024}) {
      const double ms = GpuMsBatched(
          [&] { Must(cuda::PagedDecodeAttention(q, full, scale, &scores, split), "decode split"); },
          11, kBatch);
      absl::StrAppend(&sweep, sweep.empty() ? "" : ", ", split, ": ", ms * 1000, " us");
      result.Add(absl::StrCat("decode_fused_full_split", split, "_ms"), ms);
    }
    at::Tensor scores_b = at::zeros({kKvHeads, budget}, opts.dtype(at::kFloat));
    const double fused_b_ms = GpuMsBatched(
        [&] { Must(cuda::PagedDecodeAttention(q, small, scale, &scores_b), "decode 2k"); }, 11,
        kBatch);
    auto ref = Must(cuda::DenseDecodeReference(q, kc, vc, scale), "decode reference");
    const double err = RelErr(fused_out, ref.first);
    const double bytes = 2.0 * kKvHeads * L * kDim * 2;
    const double bw = bytes / fused_full_ms / 1e6;  // GB/s
    const double sdpa_bw = sdpa_ms > 0 ? bytes / sdpa_ms / 1e6 : -1;

    // Reference bandwidths: the spec peak (memory clock x bus width x 2, double data rate) and a
    // measured device-to-device copy of 2 GiB (bytes read + bytes written per second).
    int mem_khz = 0;
    cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
    const double peak_gbps = 2.0 * mem_khz * 1e3 * (prop.memoryBusWidth / 8.0) / 1e9;
    double copy_gbps = -1;
    {
      const int64_t n = int64_t{2} << 30;
      at::Tensor src = at::empty({n}, at::TensorOptions().device(dev).dtype(at::kByte)).fill_(1);
      at::Tensor dst = at::empty_like(src);
      cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
      const double copy_ms = GpuMs(
          [&] {
            cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), n, cudaMemcpyDeviceToDevice, stream);
          },
          11, 2);
      copy_gbps = 2.0 * n / copy_ms / 1e6;
    }
    std::printf(
        "decode L=%lld (per step, %d steps back to back): ATen dense %.3f ms | SDPA %.3f ms (%.0f "
        "GB/s) | attnkit fused (+scores) full %.4f ms = %.0f GB/s of K/V, %.1f%% of the %.0f GB/s "
        "peak (memory clock %d kHz x %d bits x 2), %.1f%% of the %.0f GB/s measured D2D copy; "
        "rel err %.1e; one isolated call %.4f ms\n"
        "          fused by split size: %s | fused %lld-token budget %.4f ms (%.1fx faster than "
        "ATen dense, %.1fx than fused full)\n",
        static_cast<long long>(L), kBatch, dense_ms, sdpa_ms, sdpa_bw, fused_full_ms, bw,
        100 * bw / peak_gbps, peak_gbps, mem_khz, prop.memoryBusWidth, 100 * bw / copy_gbps,
        copy_gbps, err, fused_full_latency_ms, sweep.c_str(), static_cast<long long>(budget),
        fused_b_ms, dense_ms / fused_b_ms, fused_full_ms / fused_b_ms);
    result.Add("decode_dense_aten_ms", dense_ms);
    result.Add("decode_sdpa_ms", sdpa_ms);
    result.Add("decode_sdpa_gbps", sdpa_bw);
    result.Add("decode_fused_full_ms", fused_full_ms);
    result.Add("decode_fused_full_latency_ms", fused_full_latency_ms);
    result.Add("decode_fused_full_gbps", bw);
    result.Add("decode_peak_gbps", peak_gbps);
    result.Add("decode_copy_gbps", copy_gbps);
    result.Add("decode_fused_frac_of_peak", bw / peak_gbps);
    result.Add("decode_fused_frac_of_copy", bw / copy_gbps);
    result.Add("decode_fused_full_rel_err", err);
    result.Add("decode_fused_2k_ms", fused_b_ms);
    result.Add("decode_speedup_2k_vs_dense", dense_ms / fused_b_ms);
    result.Add("decode_kv_bytes_full", bytes);

    // Batched decode: 64 sequences of 2K to 32K tokens (evenly spread) in one
    // PagedDecodeAttention call (what a CUDA session's decode step over a batch launches): kv
    // head rows are (sequence, kv head) pairs, query rows (sequence, query head) pairs.
    {
      constexpr int64_t kSequences = 64;
      std::vector<int64_t> seq_len(kSequences), first_page(kSequences);
      int64_t total_pages = 0, total_tokens = 0, longest = 0;
      for (int64_t s = 0; s < kSequences; ++s) {
        seq_len[s] = 2048 + (32768 - 2048) * s / (kSequences - 1);
        first_page[s] = total_pages;
        total_pages += kKvHeads * ((seq_len[s] + page - 1) / page);
        total_tokens += seq_len[s];
        longest = std::max(longest, seq_len[s]);
      }
      at::Tensor pool = at::empty({total_pages, 2, page, kDim}, opts);
      pool.normal_();
      const int64_t max_pages = (longest + page - 1) / page;
      at::Tensor ptrs = at::zeros({kSequences * kKvHeads, max_pages}, at::kLong);
      at::Tensor lens = at::zeros({kSequences * kKvHeads}, at::kInt);
      const int64_t page_bytes = 2 * page * kDim * 2;
      const auto base = reinterpret_cast<int64_t>(pool.data_ptr());
      for (int64_t s = 0; s < kSequences; ++s) {
        const int64_t pages = (seq_len[s] + page - 1) / page;
        for (int64_t h = 0; h < kKvHeads; ++h) {
          const int64_t row = s * kKvHeads + h;
          lens[row] = static_cast<int>(seq_len[s]);
          ptrs[row]
              .narrow(0, 0, pages)
              .copy_(at::arange(pages, at::TensorOptions().dtype(at::kLong))
                         .add_(first_page[s] + h * pages)
                         .mul_(page_bytes)
                         .add_(base));
        }
      }
      cuda::PagedCache batch;
      batch.page_ptrs = ptrs.to(dev);
      batch.lengths = lens.to(dev);
      batch.max_length = longest;
      batch.page_size = page;
      batch.head_dim = kDim;
      batch.dtype = at::kBFloat16;
      const at::Tensor qb = at::randn({kSequences * kHeads, kDim}, opts);
      const double batch_ms = GpuMsBatched(
          [&] { Must(cuda::PagedDecodeAttention(qb, batch, scale), "batched decode"); }, 11, 10);
      const double batch_bytes = static_cast<double>(total_tokens) * kKvHeads * kDim * 2 * 2;
      const double batch_gbps = batch_bytes / (batch_ms * 1e-3) / 1e9;
      // The same call with each sequence choosing its own split size (what a session's batched
      // step does, so that a sequence's bits do not depend on the others).
      cuda::PagedCache invariant = batch;
      invariant.rows_per_sequence = kKvHeads;
      const double invariant_ms = GpuMsBatched(
          [&] { Must(cuda::PagedDecodeAttention(qb, invariant, scale), "batched decode"); }, 11,
          10);
      result.Add("batched_decode_invariant_ms", invariant_ms);
      result.Add("batched_decode_invariant_frac_of_peak",
                 batch_bytes / (invariant_ms * 1e-3) / 1e9 / peak_gbps);
      // The same step as one call per sequence (what a loop over sequences would launch).
      std::vector<cuda::PagedCache> one(kSequences);
      for (int64_t s = 0; s < kSequences; ++s) {
        one[s] = batch;
        one[s].page_ptrs = batch.page_ptrs.narrow(0, s * kKvHeads, kKvHeads);
        one[s].lengths = batch.lengths.narrow(0, s * kKvHeads, kKvHeads);
        one[s].max_length = seq_len[s];
      }
      const double per_seq_ms = GpuMsBatched(
          [&] {
            for (int64_t s = 0; s < kSequences; ++s) {
              Must(cuda::PagedDecodeAttention(qb.narrow(0, s * kHeads, kHeads), one[s], scale),
                   "per-sequence decode");
            }
          },
          5, 4);
      std::printf(
          "batched decode, %lld sequences of 2K-32K tokens (%lld tokens, %.2f GB of K/V): one "
          "call %.3f ms = %.0f GB/s = %.1f %% of peak; one call per sequence %.3f ms\n",
          static_cast<long long>(kSequences), static_cast<long long>(total_tokens),
          batch_bytes / 1e9, batch_ms, batch_gbps, 100 * batch_gbps / peak_gbps, per_seq_ms);
      result.Add("batched_decode_sequences", static_cast<double>(kSequences));
      result.Add("batched_decode_ms", batch_ms);
      result.Add("batched_decode_gbps", batch_gbps);
      result.Add("batched_decode_frac_of_peak", batch_gbps / peak_gbps);
      result.Add("batched_decode_per_sequence_calls_ms", per_seq_ms);
    }

    // The same step through a CUDA Session (what a generation loop calls): the 32K prompt's
    // prefill, then decode steps with the full cache and with SnapKV at a 2K budget (the
    // policy's counters and selection on the host, the cache and attention on the device).
    // Host-clock times around 20 steps, one layer, synchronized at the ends.
    const std::string shape = absl::StrCat(
        "device: CUDA device_index: ", static_cast<int>(dev.index()),
        " num_layers: 1 num_heads: ", kHeads, " num_kv_heads: ", kKvHeads, " head_dim: ", kDim,
        " dtype: BFLOAT16 page_size: ", page, " skip_finite_check: true ");
    const std::string snapkv =
        "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 64 "
        "intermediate_tokens: 1856 recent_tokens: 128 window_size: 32 }";
    const at::Tensor pq = at::randn({1, kHeads, L, kDim}, opts);
    const at::Tensor pk = at::randn({1, kKvHeads, L, kDim}, opts);
    const at::Tensor pv = at::randn({1, kKvHeads, L, kDim}, opts);
    const at::Tensor q1 = q.view({1, kHeads, 1, kDim});
    const at::Tensor k1 = at::randn({1, kKvHeads, 1, kDim}, opts);
    const at::Tensor v1 = at::randn({1, kKvHeads, 1, kDim}, opts);
    at::Tensor prefill_out = at::empty({1, kHeads, L, kDim}, opts);
    at::Tensor step_out = at::empty({1, kHeads, 1, kDim}, opts);
    auto since = [](std::chrono::steady_clock::time_point t) {
      return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    // [0] full cache, [1] SnapKV 2K, [2] Quest sparse decode reading 2K tokens per kv head (the
    // device store's tensor path: bounds on the device, the choice on the host, attention over
    // the gathered rows), [3] SnapKV 2K evicting a page's worth (64 tokens) every 64th step
    // (schedule.interval_steps), [4] the full cache with the input check (the default; [0]-[3]
    // skip it: skip_finite_check). 128 steps each, so [3] evicts twice in the timed steps.
    const std::string quest = "sparse_decode { token_budget: 2048 }";
    const std::string snapkv_paged =
        "eviction { enabled: true algorithm: SNAPKV granularity: PER_TOKEN start_tokens: 64 "
        "intermediate_tokens: 1856 recent_tokens: 128 window_size: 32 "
        "schedule { interval_steps: 64 } }";
    constexpr int kSteps = 128;
    double session_ms[5] = {}, prefill_ms[5] = {}, policy_ms[5] = {}, issue_ms[5] = {};
    int64_t held[5] = {};
    for (int with_policy = 0; with_policy < 5; ++with_policy) {
      const std::string extra = with_policy == 1   ? snapkv
                                : with_policy == 2 ? quest
                                : with_policy == 3 ? snapkv_paged
                                                   : "";
      auto options = Must(ParseSessionConfig(shape + extra, true), "config");
      if (with_policy == 4) options.skip_finite_check = false;
      auto session = Must(Session::Create(options), "session");
      cudaDeviceSynchronize();
      auto t0 = std::chrono::steady_clock::now();
      if (!session->Attend(0, pq, pk, pv, prefill_out).ok()) return 1;
      cudaDeviceSynchronize();
      prefill_ms[with_policy] = since(t0);
      for (int i = 0; i < 3; ++i) {
        if (!session->Attend(0, q1, k1, v1, step_out).ok()) return 1;
      }
      cudaDeviceSynchronize();
      const double policy_before = session->Stats().policy_seconds;
      auto t1 = std::chrono::steady_clock::now();
      for (int i = 0; i < kSteps; ++i) {
        if (!session->Attend(0, q1, k1, v1, step_out).ok()) return 1;
      }
      issue_ms[with_policy] = since(t1) / kSteps;  // the host's part: launched, not finished
      cudaDeviceSynchronize();
      session_ms[with_policy] = since(t1) / kSteps;
      policy_ms[with_policy] = 1e3 * (session->Stats().policy_seconds - policy_before) / kSteps;
      held[with_policy] = session->BytesHeld();
    }
    std::printf(
        "session decode (CUDA Session, one layer, host clock): full cache %.3f ms/step, SnapKV 2K "
        "%.3f ms/step (policy on the host %.3f ms; %.1fx faster than ATen dense decode) | prefill "
        "%lld tokens %.1f ms (full cache), %.1f ms (SnapKV: + the window's scores and the "
        "eviction) | KV bytes held %lld vs %lld\n",
        session_ms[0], session_ms[1], policy_ms[1], dense_ms / session_ms[1],
        static_cast<long long>(L), prefill_ms[0], prefill_ms[1], static_cast<long long>(held[0]),
        static_cast<long long>(held[1]));
    result.Add("session_decode_full_ms", session_ms[0]);
    // Host time to issue a step (before the closing synchronization): equal to the step when the
    // host bounds it, less when the device does.
    result.Add("session_decode_full_issue_ms", issue_ms[0]);
    result.Add("session_decode_snapkv2k_issue_ms", issue_ms[1]);
    result.Add("session_decode_snapkv2k_paged_issue_ms", issue_ms[3]);
    result.Add("session_decode_snapkv2k_ms", session_ms[1]);
    result.Add("session_decode_snapkv2k_policy_ms", policy_ms[1]);
    result.Add("session_decode_snapkv2k_policy_share", policy_ms[1] / session_ms[1]);
    result.Add("session_decode_snapkv2k_over_full", session_ms[1] / session_ms[0]);
    result.Add("session_decode_speedup_snapkv2k_vs_dense", dense_ms / session_ms[1]);
    result.Add("session_prefill_full_ms", prefill_ms[0]);
    result.Add("session_prefill_snapkv_ms", prefill_ms[1]);
    result.Add("session_bytes_held_full", static_cast<double>(held[0]));
    result.Add("session_bytes_held_snapkv2k", static_cast<double>(held[1]));
    std::printf(
        "session decode, Quest reading 2K tokens per kv head: %.3f ms/step (%.2fx the "
        "full cache's)\n",
        session_ms[2], session_ms[2] / session_ms[0]);
    result.Add("session_decode_quest2k_ms", session_ms[2]);
    result.Add("session_decode_quest2k_over_full", session_ms[2] / session_ms[0]);
    std::printf(
        "session decode, SnapKV 2K evicting 64 tokens every 64th step: %.3f ms/step (%.2fx the "
        "full cache's; policy %.3f ms/step)\n",
        session_ms[3], session_ms[3] / session_ms[0], policy_ms[3]);
    result.Add("session_decode_snapkv2k_paged_ms", session_ms[3]);
    result.Add("session_decode_snapkv2k_paged_policy_ms", policy_ms[3]);
    result.Add("session_decode_snapkv2k_paged_over_full", session_ms[3] / session_ms[0]);
    std::printf("session decode, full cache with the finite check of the inputs: %.3f ms/step\n",
                session_ms[4]);
    result.Add("session_decode_full_checked_ms", session_ms[4]);
  }
  result.Print();
  return 0;
}
#else
int Run(const std::vector<std::string>&) {
  std::printf(
      "gpu bench: attnkit was built without CUDA (configure with -DATTNKIT_CUDA=ON; see "
      "scripts/gpu_build.sh)\nRESULT {\"error\": \"built without CUDA\"}\n");
  return 1;
}
#endif

}  // namespace

ATTNKIT_BENCH("gpu", "CUDA kernels vs PyTorch SDPA on the GPU (needs a CUDA build)", Run);

}  // namespace attnkit::bench
