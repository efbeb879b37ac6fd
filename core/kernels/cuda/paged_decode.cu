// Fused decode attention over the paged KV cache (split-K, "flash decoding") that also produces the
// eviction scores: see launch.h. Three launches:
//   1. per (kv head, split of the tokens): the group's query heads against the split's keys (16-byte
//      loads, one token per D/8 lanes), logits kept in shared memory and written to the workspace,
//      the split's max/sum and its unnormalized P.V;
//   2. per query head: the splits combined into the output, the head's max and sum kept;
//   3. per (kv head, tokens): scores[g, j] += sum over the group of exp2(logit - max) / sum.
// Bytes: each cached key and value is read once; the logits (4 bytes per head and token) twice.
#include "common.cuh"
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kMaxGroup = 8;
constexpr int kMaxChunk = 1024;
constexpr int kThreads = 128;
constexpr int kUnroll = 4;  // tokens per lane whose loads are in flight together

int ChunkFor(int max_length) {
  int chunk = (max_length / 64 + 63) / 64 * 64;
  return chunk < 64 ? 64 : (chunk > kMaxChunk ? kMaxChunk : chunk);
}
int SplitsFor(int max_length) {
  const int chunk = ChunkFor(max_length);
  return (max_length + chunk - 1) / chunk;
}

struct Workspace {
  float* logits;  // [H, max_length]
  float* split_max;  // [H, splits]
  float* split_sum;  // [H, splits]
  float* split_out;  // [H, splits, D]
  float* head_max;   // [H]
  float* head_sum;   // [H]
};
Workspace Carve(const DecodeArgs& a) {
  const int splits = SplitsFor(a.max_length);
  Workspace w;
  w.logits = a.workspace;
  w.split_max = w.logits + static_cast<int64_t>(a.num_heads) * a.max_length;
  w.split_sum = w.split_max + static_cast<int64_t>(a.num_heads) * splits;
  w.split_out = w.split_sum + static_cast<int64_t>(a.num_heads) * splits;
  w.head_max = w.split_out + static_cast<int64_t>(a.num_heads) * splits * a.head_dim;
  w.head_sum = w.head_max + a.num_heads;
  return w;
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) DecodeSplitKernel(DecodeArgs p, Workspace w,
                                                              int chunk, int splits) {
  using Op = MmaOp<T>;
  constexpr int kLanesPerToken = D / 8;
  constexpr int kTokensPerWarp = 32 / kLanesPerToken;
  constexpr int kTokensPerStep = kTokensPerWarp * (kThreads / 32);
  __shared__ float s_logit[kMaxGroup][kMaxChunk];
  __shared__ float s_red[kThreads / 32][kMaxGroup][D];

  const int kvh = blockIdx.x, split = blockIdx.y;
  const int G = p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int sub = lane % kLanesPerToken;            // which 8 elements of the row
  const int slot = warp * kTokensPerWarp + lane / kLanesPerToken;
  const int length = p.lengths[kvh];
  const int j0 = split * chunk;
  const int n = max(0, min(chunk, length - j0));
  const int h0 = kvh * G;
  const float sl2 = p.scale * 1.4426950408889634f;
  const int64_t* pages = p.page_ptrs + static_cast<int64_t>(kvh) * p.max_pages;

  float qv[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g < G) {
      const uint4 raw = *reinterpret_cast<const uint4*>(
          static_cast<const T*>(p.q) + static_cast<int64_t>(h0 + g) * p.q_stride + sub * 8);
      const uint32_t* u = reinterpret_cast<const uint32_t*>(&raw);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = Op::Unpack(u[e]);
        qv[g][2 * e] = f.x * sl2;
        qv[g][2 * e + 1] = f.y * sl2;
      }
    }
  }

  // Logits. kUnroll tokens per lane in flight before their first use; warp-uniform trip count,
  // since the shuffles need every lane of the warp.
  const int lane_token = lane / kLanesPerToken;
  for (int jb = warp * kTokensPerWarp; jb < n; jb += kUnroll * kTokensPerStep) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokensPerStep + lane_token;
      raw[u] = make_uint4(0, 0, 0, 0);
      if (jj < n) {
        const int j = j0 + jj;
        const T* base = reinterpret_cast<const T*>(pages[j / p.page_size]);
        raw[u] = __ldcs(reinterpret_cast<const uint4*>(
            base + static_cast<int64_t>(j % p.page_size) * D + sub * 8));
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokensPerStep + lane_token;
      const uint32_t* w32 = reinterpret_cast<const uint32_t*>(&raw[u]);
      float kf[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = Op::Unpack(w32[e]);
        kf[2 * e] = f.x;
        kf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < G) {
          float d = 0.f;
#pragma unroll
          for (int e = 0; e < 8; ++e) d = fmaf(qv[g][e], kf[e], d);
#pragma unroll
          for (int m = 1; m < kLanesPerToken; m <<= 1) d += __shfl_xor_sync(0xffffffffu, d, m);
          if (sub == 0 && jj < n) s_logit[g][jj] = d;
        }
      }
    }
  }
  __syncthreads();

  // Per head of the group: split max and sum; logits to the workspace, probabilities in place.
  for (int g = warp; g < G; g += kThreads / 32) {
    float mx = kNegInf;
    for (int jj = lane; jj < n; jj += 32) mx = fmaxf(mx, s_logit[g][jj]);
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
    const float base = mx == kNegInf ? 0.f : mx;
    float sum = 0.f;
    float* logits = w.logits + static_cast<int64_t>(h0 + g) * p.max_length + j0;
    for (int jj = lane; jj < n; jj += 32) {
      const float l = s_logit[g][jj];
      if (p.scores != nullptr) logits[jj] = l;
      const float e = FastExp2(l - base);
      s_logit[g][jj] = e;
      sum += e;
    }
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
    if (lane == 0) {
      w.split_max[(h0 + g) * splits + split] = mx;
      w.split_sum[(h0 + g) * splits + split] = sum;
    }
  }
  __syncthreads();

  // P.V for this split.
  float acc[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
  for (int jb = slot; jb < n; jb += kUnroll * kTokensPerStep) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokensPerStep;
      raw[u] = make_uint4(0, 0, 0, 0);
      if (jj < n) {
        const int j = j0 + jj;
        const T* base = reinterpret_cast<const T*>(pages[j / p.page_size]);
        raw[u] = __ldcs(reinterpret_cast<const uint4*>(
            base + static_cast<int64_t>(p.page_size + j % p.page_size) * D + sub * 8));
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int jj = jb + u * kTokensPerStep;
      if (jj >= n) break;
      const uint32_t* w32 = reinterpret_cast<const uint32_t*>(&raw[u]);
      float vf[8];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = Op::Unpack(w32[e]);
        vf[2 * e] = f.x;
        vf[2 * e + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g < G) {
          const float pr = s_logit[g][jj];
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(pr, vf[e], acc[g][e]);
        }
      }
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g < G) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        float v = acc[g][e];
#pragma unroll
        for (int m = kLanesPerToken; m < 32; m <<= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
        if (lane < kLanesPerToken) s_red[warp][g][sub * 8 + e] = v;
      }
    }
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float v = 0.f;
#pragma unroll
    for (int wi = 0; wi < kThreads / 32; ++wi) v += s_red[wi][g][d];
    w.split_out[(static_cast<int64_t>(h0 + g) * splits + split) * D + d] = v;
  }
}

template <typename T>
__global__ void DecodeCombineKernel(DecodeArgs p, Workspace w, int splits) {
  using Op = MmaOp<T>;
  const int h = blockIdx.x;
  const int d = threadIdx.x;  // blockDim.x == head_dim / 2, two columns each
  float mx = kNegInf;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, w.split_max[h * splits + s]);
  const float base = mx == kNegInf ? 0.f : mx;
  float sum = 0.f, o0 = 0.f, o1 = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float wgt = FastExp2(w.split_max[h * splits + s] - base);
    sum += wgt * w.split_sum[h * splits + s];
    const float* so = w.split_out + (static_cast<int64_t>(h) * splits + s) * p.head_dim;
    o0 = fmaf(wgt, so[2 * d], o0);
    o1 = fmaf(wgt, so[2 * d + 1], o1);
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  reinterpret_cast<uint32_t*>(static_cast<T*>(p.out) + static_cast<int64_t>(h) * p.head_dim)[d] =
      Op::Pack(o0 * inv, o1 * inv);
  if (d == 0) {
    w.head_max[h] = base;
    w.head_sum[h] = sum;
  }
}

__global__ void DecodeScoresKernel(DecodeArgs p, Workspace w) {
  const int kvh = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= p.lengths[kvh]) return;
  float acc = 0.f;
  for (int g = 0; g < p.group; ++g) {
    const int h = kvh * p.group + g;
    const float sum = w.head_sum[h];
    if (sum > 0.f)
      acc += FastExp2(w.logits[static_cast<int64_t>(h) * p.max_length + j] - w.head_max[h]) / sum;
  }
  p.scores[kvh * p.scores_stride + j] += acc;
}

template <typename T, int D>
cudaError_t Launch(const DecodeArgs& a, cudaStream_t stream) {
  const int chunk = ChunkFor(a.max_length);
  const int splits = SplitsFor(a.max_length);
  const int kv_heads = a.num_heads / a.group;
  const Workspace w = Carve(a);
  if (splits > 0) {
    DecodeSplitKernel<T, D><<<dim3(kv_heads, splits), kThreads, 0, stream>>>(a, w, chunk, splits);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  DecodeCombineKernel<T><<<a.num_heads, D / 2, 0, stream>>>(a, w, splits);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || a.scores == nullptr || a.max_length == 0) return err;
  DecodeScoresKernel<<<dim3((a.max_length + 255) / 256, kv_heads), 256, 0, stream>>>(a, w);
  return cudaGetLastError();
}

}  // namespace

int64_t DecodeWorkspaceFloats(int num_heads, int head_dim, int max_length) {
  const int64_t splits = SplitsFor(max_length);
  return static_cast<int64_t>(num_heads) * max_length + 2 * num_heads * splits +
         num_heads * splits * head_dim + 2 * num_heads;
}

cudaError_t LaunchPagedDecode(const DecodeArgs& args, DType dtype, cudaStream_t stream) {
  if (args.group < 1 || args.group > kMaxGroup || args.num_heads % args.group != 0)
    return cudaErrorInvalidValue;
  if (dtype == DType::kBFloat16) {
    if (args.head_dim == 128) return Launch<__nv_bfloat16, 128>(args, stream);
    if (args.head_dim == 64) return Launch<__nv_bfloat16, 64>(args, stream);
  } else {
    if (args.head_dim == 128) return Launch<__half, 128>(args, stream);
    if (args.head_dim == 64) return Launch<__half, 64>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace attnkit::cuda_kernels
