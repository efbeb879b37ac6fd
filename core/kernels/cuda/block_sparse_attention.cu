// Block-sparse causal attention on the GPU: see launch.h. One CTA per (query head, 128-row query
// tile); the tile's query block selects its list of key blocks; each key block is visited in 64-key
// tiles that are double-buffered in shared memory with cp.async. Scores stay in registers (mma.sync
// accumulators), the softmax is online in base 2, and P is fed back to the tensor cores straight
// from the accumulator registers (the m16n8 C layout is the m16n8k16 A layout).
#include "common.cuh"
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kBM = 128;  // query rows per CTA (8 warps x 16)
constexpr int kBN = 64;   // keys per tile
constexpr int kThreads = 256;

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) BlockSparseAttentionKernel(AttentionArgs p) {
  using Op = MmaOp<T>;
  constexpr int kChunks = D / 8;
  constexpr int kTileBytes = kBN * D * 2;
  extern __shared__ __align__(128) char smem[];
  char* s_q = smem;
  char* s_k = smem + kBM * D * 2;
  char* s_v = s_k + 2 * kTileBytes;

  const int h = blockIdx.x;
  const int tile = gridDim.y - 1 - blockIdx.y;  // longest (last) query tiles first
  const int m0 = tile * kBM;
  const int kvh = h / p.group;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(h) * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + static_cast<int64_t>(kvh) * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + static_cast<int64_t>(kvh) * p.v_head_stride;
  const int off = p.k_len - p.q_len;
  const int m_last = min(m0 + kBM, p.q_len) - 1;
  const int max_key = min(m_last + off, p.k_len - 1);
  const int qblock = m0 / p.block_size;
  const int mh = p.mask_heads == 1 ? 0 : h;
  const int32_t* list = p.indices + (static_cast<int64_t>(mh) * p.q_blocks + qblock) * p.max_list;
  const int n_list = p.counts[mh * p.q_blocks + qblock];
  const int sub = p.block_size / kBN;
  const int total = n_list * sub;
  auto tile_start = [&](int t) { return list[t / sub] * p.block_size + (t % sub) * kBN; };
  auto next_valid = [&](int t) {
    while (t < total) {
      const int n0 = tile_start(t);
      if (n0 >= 0 && n0 <= max_key) break;
      ++t;
    }
    return t;
  };

  LoadTile<T, kBM, D, kThreads>(s_q, q, p.q_row_stride, m0, p.q_len, tid);
  int t = next_valid(0);
  int stage = 0;
  if (t < total) {
    const int n0 = tile_start(t);
    LoadTile<T, kBN, D, kThreads>(s_k, k, p.k_row_stride, n0, p.k_len, tid);
    LoadTile<T, kBN, D, kThreads>(s_v, v, p.v_row_stride, n0, p.k_len, tid);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  __syncthreads();

  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int row = warp * 16 + (lane & 15);
    const int ch = kk * 2 + (lane >> 4);
    LdMatrixX4(qf[kk], SmemAddr(s_q + SwizzledOffset<kChunks>(row, ch)));
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float row_max[2] = {kNegInf, kNegInf};
  float row_sum[2] = {0.f, 0.f};
  const float sl2 = p.scale * 1.4426950408889634f;
  const int row_g = m0 + warp * 16 + (lane >> 2);

  while (t < total) {
    const int tn = next_valid(t + 1);
    if (tn < total) {
      const int n0n = tile_start(tn);
      LoadTile<T, kBN, D, kThreads>(s_k + (stage ^ 1) * kTileBytes, k, p.k_row_stride, n0n, p.k_len,
                                    tid);
      LoadTile<T, kBN, D, kThreads>(s_v + (stage ^ 1) * kTileBytes, v, p.v_row_stride, n0n, p.k_len,
                                    tid);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const char* ks = s_k + stage * kTileBytes;
    const char* vs = s_v + stage * kTileBytes;

    float s[kBN / 8][4];
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int ch = kk * 2 + ((lane >> 3) & 1);
        uint32_t b[4];
        LdMatrixX4(b, SmemAddr(ks + SwizzledOffset<kChunks>(row, ch)));
        Op::Run(s[2 * np], qf[kk], b[0], b[1]);
        Op::Run(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    const int n0 = tile_start(t);
    if (n0 + kBN - 1 > m0 + off || n0 + kBN > p.k_len) {
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n0 + j * 8 + 2 * (lane & 3) + (e & 1);
          const int row = row_g + (e >= 2 ? 8 : 0);
          if (col > row + off || col >= p.k_len) s[j][e] = kNegInf;
        }
      }
    }

    float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]) * sl2);
      mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]) * sl2);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    }
    float base[2], alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      base[i] = mx[i] == kNegInf ? 0.f : mx[i];
      alpha[i] = FastExp2(row_max[i] - base[i]);
      row_max[i] = mx[i];
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      s[j][0] = FastExp2(fmaf(s[j][0], sl2, -base[0]));
      s[j][1] = FastExp2(fmaf(s[j][1], sl2, -base[0]));
      s[j][2] = FastExp2(fmaf(s[j][2], sl2, -base[1]));
      s[j][3] = FastExp2(fmaf(s[j][3], sl2, -base[1]));
      rs[0] += s[j][0] + s[j][1];
      rs[1] += s[j][2] + s[j][3];
    }
    row_sum[0] = row_sum[0] * alpha[0] + rs[0];
    row_sum[1] = row_sum[1] * alpha[1] + rs[1];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t a[4] = {Op::Pack(s[2 * kk][0], s[2 * kk][1]),
                             Op::Pack(s[2 * kk][2], s[2 * kk][3]),
                             Op::Pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             Op::Pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int ch = dp * 2 + (lane >> 4);
        uint32_t b[4];
        LdMatrixX4Trans(b, SmemAddr(vs + SwizzledOffset<kChunks>(row, ch)));
        Op::Run(o[2 * dp], a, b[0], b[1]);
        Op::Run(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();
    stage ^= 1;
    t = tn;
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
  const float inv0 = row_sum[0] > 0.f ? 1.f / row_sum[0] : 0.f;
  const float inv1 = row_sum[1] > 0.f ? 1.f / row_sum[1] : 0.f;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(h) * p.o_head_stride;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    const int col = n * 8 + 2 * (lane & 3);
    if (row_g < p.q_len) {
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_g) * p.o_row_stride + col) =
          Op::Pack(o[n][0] * inv0, o[n][1] * inv0);
    }
    if (row_g + 8 < p.q_len) {
      *reinterpret_cast<uint32_t*>(out + static_cast<int64_t>(row_g + 8) * p.o_row_stride + col) =
          Op::Pack(o[n][2] * inv1, o[n][3] * inv1);
    }
  }
}

template <typename T, int D>
cudaError_t Launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr int smem = kBM * D * 2 + 4 * kBN * D * 2;
  auto kernel = BlockSparseAttentionKernel<T, D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const int tiles = (a.q_len + kBM - 1) / kBM;
  if (tiles == 0 || a.num_heads == 0) return cudaSuccess;
  dim3 grid(a.num_heads, tiles);
  kernel<<<grid, kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchBlockSparseAttention(const AttentionArgs& args, DType dtype,
                                       cudaStream_t stream) {
  if (args.block_size % kBM != 0) return cudaErrorInvalidValue;
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
