// Fused decode attention over the paged KV cache (split-K, "flash decoding") that also produces the
// eviction scores: see launch.h. Two launches:
//   1. per (kv head, split of the tokens), 256 threads: the split's page pointers are staged in
//      shared memory; each token's key and value rows are read once with 16-byte loads (D/8 lanes
//      per token, kUnroll tokens per lane with all their key and value loads in flight together);
//      the group's query heads get their logits (written to the workspace for the scores) and an
//      online softmax with the P.V accumulation in registers; warps merge through shared memory
//      into the split's max, sum and unnormalized output;
//   2. per (kv head, 1024 tokens): the group's head max/sum from the split statistics; the first
//      CTAs combine the splits into the output, every CTA adds its tokens' probabilities (summed
//      over the group) to the scores.
// Bytes: each cached key and value is read once; the logits (4 bytes per head and token) twice.
// Splits: about two waves of CTAs over the device (occupancy queried), 64..1024 tokens each, unless
// the caller fixes the split size. With up to 4 heads per kv head the token loop is software
// pipelined (the next batch's loads in flight while this one is used).
#include "common.cuh"
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kMaxGroup = 8;
constexpr int kMinChunk = 64;
constexpr int kMaxChunk = 1024;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;  // tokens per lane whose key and value loads are in flight together
constexpr int kFinishThreads = 256;
constexpr int kFinishTokens = 1024;  // tokens per CTA of the finishing kernel

int SplitsFor(int max_length, int chunk) { return (max_length + chunk - 1) / chunk; }

struct Workspace {
  float* logits;     // [H, max_length]
  float* split_max;  // [H, splits]
  float* split_sum;  // [H, splits]
  float* split_out;  // [H, splits, D], relative to split_max
};
Workspace Carve(const DecodeArgs& a, int splits) {
  Workspace w;
  w.logits = a.workspace;
  w.split_max = w.logits + static_cast<int64_t>(a.num_heads) * a.max_length;
  w.split_sum = w.split_max + static_cast<int64_t>(a.num_heads) * splits;
  w.split_out = w.split_sum + static_cast<int64_t>(a.num_heads) * splits;
  return w;
}

template <typename T, int D, int kG>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeSplitKernel(DecodeArgs p, Workspace w, int chunk, int splits) {
  using Op = MmaOp<T>;
  constexpr int kLanes = D / 8;            // lanes per token, 8 elements (16 bytes) each
  constexpr int kTokWarp = 32 / kLanes;    // tokens per warp per step
  constexpr int kTokStep = kTokWarp * kWarps;
  __shared__ int64_t s_pages[kMaxChunk + 1];
  __shared__ float s_m[kWarps][kG];
  __shared__ float s_l[kWarps][kG];
  __shared__ float s_acc[kWarps][kG][D];

  const int kvh = blockIdx.x, split = blockIdx.y;
  const int G = p.group;  // <= kG
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int sub = lane % kLanes, tok = lane / kLanes;
  const int length = p.lengths[kvh];
  const int j0 = split * chunk;
  const int n = max(0, min(chunk, length - j0));
  const int h0 = kvh * G;
  const int ps = p.page_size;
  const float sl2 = p.scale * 1.4426950408889634f;
  const int64_t* pages = p.page_ptrs + static_cast<int64_t>(kvh) * p.max_pages;
  const int first_page = j0 / ps;
  const int npages = n > 0 ? (j0 + n - 1) / ps - first_page + 1 : 0;
  for (int i = tid; i < npages; i += kThreads) s_pages[i] = pages[first_page + i];

  float qv[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    const int hg = h0 + (g < G ? g : 0);
    const uint4 raw = *reinterpret_cast<const uint4*>(
        static_cast<const T*>(p.q) + static_cast<int64_t>(hg) * p.q_stride + sub * 8);
    const uint32_t* u = reinterpret_cast<const uint32_t*>(&raw);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = Op::Unpack(u[e]);
      qv[g][2 * e] = f.x * sl2;
      qv[g][2 * e + 1] = f.y * sl2;
    }
  }
  __syncthreads();

  float m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = kNegInf;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
  }
  float* logits = w.logits + static_cast<int64_t>(h0) * p.max_length + j0;
  const bool want_logits = p.scores != nullptr;

  // Loads of kUnroll tokens per lane (zeros past the split) and their processing: logits (to the
  // workspace), then the online softmax with one rescale per kUnroll tokens and the P.V update.
  auto load = [&](int jb, uint4 (&kr)[kUnroll], uint4 (&vr)[kUnroll]) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokStep + tok;
      kr[u] = make_uint4(0, 0, 0, 0);
      vr[u] = make_uint4(0, 0, 0, 0);
      if (jj < n) {
        const int j = j0 + jj;
        const int pg = j / ps;
        const int o = j - pg * ps;
        const T* base = reinterpret_cast<const T*>(s_pages[pg - first_page]);
        kr[u] = __ldcs(reinterpret_cast<const uint4*>(base + static_cast<int64_t>(o) * D + sub * 8));
        vr[u] = __ldcs(
            reinterpret_cast<const uint4*>(base + static_cast<int64_t>(ps + o) * D + sub * 8));
      }
    }
  };
  auto process = [&](int jb, const uint4 (&kr)[kUnroll], const uint4 (&vr)[kUnroll]) {
    float lg[kUnroll][kG];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokStep + tok;
      const uint32_t* w32 = reinterpret_cast<const uint32_t*>(&kr[u]);
      float kf[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = Op::Unpack(w32[e]);
        kf[2 * e] = f.x;
        kf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(qv[g][e], kf[e], d);
#pragma unroll
        for (int mm = 1; mm < kLanes; mm <<= 1) d += __shfl_xor_sync(0xffffffffu, d, mm);
        lg[u][g] = (jj < n && g < G) ? d : kNegInf;
        // Lane `sub == g` of the token stores head g's logit: one store instruction for all heads.
        if (want_logits && jj < n && g < G && sub == g)
          logits[static_cast<int64_t>(g) * p.max_length + jj] = d;
      }
    }
    float base[kG];
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) mx = fmaxf(mx, lg[u][g]);
      base[g] = mx == kNegInf ? 0.f : mx;
      const float a = FastExp2(m[g] - base[g]);
      l[g] *= a;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= a;
      m[g] = mx;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const uint32_t* w32 = reinterpret_cast<const uint32_t*>(&vr[u]);
      float vf[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = Op::Unpack(w32[e]);
        vf[2 * e] = f.x;
        vf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        const float pr = FastExp2(lg[u][g] - base[g]);
        l[g] += pr;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(pr, vf[e], acc[g][e]);
      }
    }
  };
  // Warp-uniform trip counts: the shuffles need every lane of the warp.
  constexpr int kStep = kUnroll * kTokStep;
  if constexpr (kG <= 4) {
    // Software pipelined: the next kUnroll tokens' loads are issued before this batch is used.
    uint4 kr[kUnroll], vr[kUnroll];
    int jb = warp * kTokWarp;
    if (jb < n) load(jb, kr, vr);
    for (; jb < n; jb += kStep) {
      uint4 kn[kUnroll], vn[kUnroll];
      load(jb + kStep, kn, vn);
      process(jb, kr, vr);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        kr[u] = kn[u];
        vr[u] = vn[u];
      }
    }
  } else {
    for (int jb = warp * kTokWarp; jb < n; jb += kStep) {
      uint4 kr[kUnroll], vr[kUnroll];
      load(jb, kr, vr);
      process(jb, kr, vr);
    }
  }

  // Merge the token slots of the warp (lanes sub, sub + kLanes, ...).
#pragma unroll
  for (int off = kLanes; off < 32; off <<= 1) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[g], off);
      const float lo = __shfl_xor_sync(0xffffffffu, l[g], off);
      const float nm = fmaxf(m[g], mo);
      const float base = nm == kNegInf ? 0.f : nm;
      const float a = FastExp2(m[g] - base), b = FastExp2(mo - base);
      l[g] = l[g] * a + lo * b;
#pragma unroll
      for (int e = 0; e < 8; ++e)
        acc[g][e] = acc[g][e] * a + __shfl_xor_sync(0xffffffffu, acc[g][e], off) * b;
      m[g] = nm;
    }
  }
  if (lane < kLanes) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
#pragma unroll
      for (int e = 0; e < 8; ++e) s_acc[warp][g][sub * 8 + e] = acc[g][e];
      if (lane == 0) {
        s_m[warp][g] = m[g];
        s_l[warp][g] = l[g];
      }
    }
  }
  __syncthreads();
  // Merge the warps: the split's max, sum and output (relative to the max).
  for (int i = tid; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float mx = kNegInf;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) mx = fmaxf(mx, s_m[wi][g]);
    const float base = mx == kNegInf ? 0.f : mx;
    float o = 0.f, sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) {
      const float wgt = FastExp2(s_m[wi][g] - base);
      o = fmaf(wgt, s_acc[wi][g][d], o);
      sum = fmaf(wgt, s_l[wi][g], sum);
    }
    const int64_t hs = static_cast<int64_t>(h0 + g) * splits + split;
    w.split_out[hs * D + d] = o;
    if (d == 0) {
      w.split_max[hs] = mx;
      w.split_sum[hs] = sum;
    }
  }
}

// Grid (x CTAs, kv heads), kFinishThreads threads.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads) DecodeFinishKernel(DecodeArgs p, Workspace w,
                                                                     int splits) {
  using Op = MmaOp<T>;
  __shared__ float s_hm[kMaxGroup], s_hinv[kMaxGroup];
  const int kvh = blockIdx.y;
  const int G = p.group, D = p.head_dim, h0 = kvh * G;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int g = warp; g < G; g += kFinishThreads / 32) {
    const float* sm = w.split_max + static_cast<int64_t>(h0 + g) * splits;
    const float* ss = w.split_sum + static_cast<int64_t>(h0 + g) * splits;
    float mx = kNegInf;
    for (int s = lane; s < splits; s += 32) mx = fmaxf(mx, sm[s]);
#pragma unroll
    for (int mm = 1; mm < 32; mm <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, mm));
    const float base = mx == kNegInf ? 0.f : mx;
    float sum = 0.f;
    for (int s = lane; s < splits; s += 32) sum += FastExp2(sm[s] - base) * ss[s];
#pragma unroll
    for (int mm = 1; mm < 32; mm <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, mm);
    if (lane == 0) {
      s_hm[g] = base;
      s_hinv[g] = sum > 0.f ? 1.f / sum : 0.f;
    }
  }
  __syncthreads();
  const int stride = gridDim.x * kFinishThreads;
  // The output: (head, column pair) items over the CTAs of this kv head.
  for (int i = blockIdx.x * kFinishThreads + tid; i < G * D / 2; i += stride) {
    const int g = i / (D / 2), d2 = i % (D / 2);
    const int h = h0 + g;
    const float base = s_hm[g];
    float o0 = 0.f, o1 = 0.f;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) {
      const int64_t hs = static_cast<int64_t>(h) * splits + s;
      const float wgt = FastExp2(w.split_max[hs] - base);
      const float2 so = reinterpret_cast<const float2*>(w.split_out + hs * D)[d2];
      o0 = fmaf(wgt, so.x, o0);
      o1 = fmaf(wgt, so.y, o1);
    }
    const float inv = s_hinv[g];
    reinterpret_cast<uint32_t*>(static_cast<T*>(p.out) + static_cast<int64_t>(h) * D)[d2] =
        Op::Pack(o0 * inv, o1 * inv);
  }
  if (p.scores == nullptr) return;
  const int length = p.lengths[kvh];
  float* scores = p.scores + kvh * p.scores_stride;
  for (int j = blockIdx.x * kFinishThreads + tid; j < length; j += stride) {
    float a = 0.f;
    for (int g = 0; g < G; ++g)
      a += FastExp2(w.logits[static_cast<int64_t>(h0 + g) * p.max_length + j] - s_hm[g]) *
           s_hinv[g];
    scores[j] += a;
  }
}

template <typename T, int D, int kG>
int ChunkFor(const DecodeArgs& a, int kv_heads) {
  if (a.split_tokens > 0) return a.split_tokens;
  static const int slots = [] {
    int dev = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, DecodeSplitKernel<T, D, kG>, kThreads,
                                                  0);
    return (sms > 0 ? sms : 132) * (per_sm > 0 ? per_sm : 1);
  }();
  // About two waves of split CTAs.
  const int64_t target = 2 * static_cast<int64_t>(slots);
  int64_t chunk = (static_cast<int64_t>(a.max_length) * kv_heads + target - 1) / target;
  chunk = (chunk + kMinChunk - 1) / kMinChunk * kMinChunk;
  return static_cast<int>(chunk < kMinChunk ? kMinChunk : (chunk > kMaxChunk ? kMaxChunk : chunk));
}

template <typename T, int D, int kG>
cudaError_t Launch(const DecodeArgs& a, cudaStream_t stream) {
  const int kv_heads = a.num_heads / a.group;
  const int chunk = ChunkFor<T, D, kG>(a, kv_heads);
  const int splits = SplitsFor(a.max_length, chunk);
  const Workspace w = Carve(a, splits);
  if (splits > 0) {
    DecodeSplitKernel<T, D, kG><<<dim3(kv_heads, splits), kThreads, 0, stream>>>(a, w, chunk,
                                                                                splits);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int by_tokens = (a.max_length + kFinishTokens - 1) / kFinishTokens;
  const int ctas = by_tokens > 0 ? by_tokens : 1;
  DecodeFinishKernel<T><<<dim3(ctas, kv_heads), kFinishThreads, 0, stream>>>(a, w, splits);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t LaunchGroup(const DecodeArgs& a, cudaStream_t stream) {
  if (a.group == 1) return Launch<T, D, 1>(a, stream);
  if (a.group == 2) return Launch<T, D, 2>(a, stream);
  if (a.group <= 4) return Launch<T, D, 4>(a, stream);
  return Launch<T, D, 8>(a, stream);
}

}  // namespace

int64_t DecodeWorkspaceFloats(int num_heads, int head_dim, int max_length) {
  const int64_t splits = SplitsFor(max_length, kMinChunk);  // the most any split size gives
  return static_cast<int64_t>(num_heads) * max_length + 2 * num_heads * splits +
         num_heads * splits * head_dim;
}

cudaError_t LaunchPagedDecode(const DecodeArgs& args, DType dtype, cudaStream_t stream) {
  if (args.group < 1 || args.group > kMaxGroup || args.num_heads % args.group != 0)
    return cudaErrorInvalidValue;
  if (args.split_tokens != 0 && (args.split_tokens % kMinChunk != 0 ||
                                 args.split_tokens > kMaxChunk || args.split_tokens < 0))
    return cudaErrorInvalidValue;
  if (dtype == DType::kBFloat16) {
    if (args.head_dim == 128) return LaunchGroup<__nv_bfloat16, 128>(args, stream);
    if (args.head_dim == 64) return LaunchGroup<__nv_bfloat16, 64>(args, stream);
  } else {
    if (args.head_dim == 128) return LaunchGroup<__half, 128>(args, stream);
    if (args.head_dim == 64) return LaunchGroup<__half, 64>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnkit::cuda_kernels
