// XAttention block estimate on the GPU: see launch.h and docs/algorithms.md section 2. The strided
// reshape is only addressing: chunk t of reshaped query i is query row i*S + S-1-t and chunk t of
// reshaped key j is key row j*S + t, so a reshaped score is a GEMM over S chunks of D. One CTA per
// (head, 128 reshaped query rows), 8 warps x 16 rows, 128 reshaped keys per tile; each (tile,
// chunk) step loads a 128 x D query slab and a 128 x D key slab (double-buffered cp.async). One
// pass (cells of B/S reshaped keys dividing the 128-key tile, the usual case): each tile's scores
// are exponentiated against the tile's row max; per (row, cell) the log2 of the cell's sum (tile
// max added back) goes to a scratch buffer [H, rows, k_blocks] and the row's online max/sum are
// kept in registers. At the end each warp turns its 16 rows' scratch entries into probabilities
// with the rows' final log-sum-exp and adds them into the cells (one atomicAdd per warp, cell and
// block row). Two passes (other cell widths): pass 1 keeps the online max/sum per row; pass 2
// recomputes the scores, normalizes them and sums them into cells.
#include "common.cuh"
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kBM = 128;
constexpr int kBN = 128;  // 128 reshaped keys per tile: half the query-slab reloads of 64
constexpr int kThreads = 256;

bool OnePass(const EstimateArgs& a) {
  const int cell = a.block_size / a.stride;
  return cell > 0 && kBN % cell == 0;
}
int RowTiles(const EstimateArgs& a) {
  const int rows = a.q_blocks * (a.block_size / a.stride);
  return (rows + kBM - 1) / kBM;
}

template <typename T, int D>
__device__ __forceinline__ void LoadStep(char* sq, char* sk, const T* q, const T* k,
                                         const EstimateArgs& p, int i0, int n0, int t, int tid) {
  constexpr int kChunks = D / 8;
  const int S = p.stride;
  // Query slab: reshaped rows i0 .. i0 + kBM - 1, chunk t -> query row i*S + S-1-t.
#pragma unroll
  for (int it = 0; it < kBM * kChunks / kThreads; ++it) {
    const int c = tid + it * kThreads;
    const int r = c / kChunks, ch = c % kChunks;
    const int qr = (i0 + r) * S + S - 1 - t;
    const bool ok = qr < p.q_len;
    const T* src = q + static_cast<int64_t>(ok ? qr : 0) * p.q_row_stride + ch * 8;
    CpAsync16(SmemAddr(sq + SwizzledOffset<kChunks>(r, ch)), src, ok);
  }
#pragma unroll
  for (int it = 0; it < kBN * kChunks / kThreads; ++it) {
    const int c = tid + it * kThreads;
    const int r = c / kChunks, ch = c % kChunks;
    const int kr = (n0 + r) * S + t;
    const bool ok = kr < p.k_len;
    const T* src = k + static_cast<int64_t>(ok ? kr : 0) * p.k_row_stride + ch * 8;
    CpAsync16(SmemAddr(sk + SwizzledOffset<kChunks>(r, ch)), src, ok);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) XAttentionEstimateTwoPassKernel(EstimateArgs p) {
  using Op = MmaOp<T>;
  constexpr int kChunks = D / 8;
  constexpr int kQBytes = kBM * D * 2;
  constexpr int kKBytes = kBN * D * 2;
  extern __shared__ __align__(128) char smem[];
  char* s_q = smem;                // 2 stages
  char* s_k = smem + 2 * kQBytes;  // 2 stages

  const int h = blockIdx.x;
  const int i0 = (gridDim.y - 1 - blockIdx.y) * kBM;
  const int S = p.stride;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int rows_valid = (p.q_len + S - 1) / S;  // reshaped rows holding a real query
  if (i0 >= rows_valid) return;
  const int keys_valid = (p.k_len + S - 1) / S;
  const int off = (p.k_len - p.q_len) / S;
  const int i_last = min(i0 + kBM, rows_valid) - 1;
  const int j_max = min(i_last + off, keys_valid - 1);
  if (j_max < 0) return;
  const int ntiles = j_max / kBN + 1;
  const int steps = ntiles * S;  // per pass
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(h) * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + static_cast<int64_t>(h / p.group) * p.k_head_stride;
  const float sl2 = 1.4426950408889634f / (sqrtf(static_cast<float>(p.head_dim)) * S);
  const int cell = p.block_size / S;
  const int row_g = i0 + warp * 16 + (lane >> 2);

  float row_max[2] = {kNegInf, kNegInf};
  float row_sum[2] = {0.f, 0.f};
  float inv[2] = {0.f, 0.f};

  LoadStep<T, D>(s_q, s_k, q, k, p, i0, 0, 0, tid);
  CpAsyncCommit();
  int stage = 0;
  float s[kBN / 8][4];
  for (int it = 0; it < 2 * steps; ++it) {
    const int pass = it / steps;
    const int step = it % steps;
    const int tile = step / S, t = step % S;
    if (it + 1 < 2 * steps) {
      const int nstep = (it + 1) % steps;
      LoadStep<T, D>(s_q + (stage ^ 1) * kQBytes, s_k + (stage ^ 1) * kKBytes, q, k, p, i0,
                     (nstep / S) * kBN, nstep % S, tid);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    }
    const char* qs = s_q + stage * kQBytes;
    const char* ks = s_k + stage * kKBytes;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      LdMatrixX4(
          a, SmemAddr(qs + SwizzledOffset<kChunks>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int ch = kk * 2 + ((lane >> 3) & 1);
        uint32_t b[4];
        LdMatrixX4(b, SmemAddr(ks + SwizzledOffset<kChunks>(row, ch)));
        Op::Run(s[2 * np], a, b[0], b[1]);
        Op::Run(s[2 * np + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();
    stage ^= 1;
    if (t != S - 1) continue;

    // A full tile of reshaped scores: mask, then pass 1 (stats) or pass 2 (cells).
    const int n0 = tile * kBN;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + j * 8 + 2 * (lane & 3) + (e & 1);
        const int row = row_g + (e >= 2 ? 8 : 0);
        s[j][e] = (col > row + off || col >= keys_valid) ? kNegInf : s[j][e] * sl2;
      }
    }
    if (pass == 0) {
      float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
        const float base = mx[i] == kNegInf ? 0.f : mx[i];
        float rs = 0.f;
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
          rs += FastExp2(s[j][2 * i] - base) + FastExp2(s[j][2 * i + 1] - base);
        row_sum[i] = row_sum[i] * FastExp2(row_max[i] - base) + rs;
        row_max[i] = mx[i];
      }
      if (tile == ntiles - 1) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
          row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
          const int row = row_g + 8 * i;
          inv[i] = (row_sum[i] > 0.f && row < rows_valid) ? 1.f / row_sum[i] : 0.f;
          if (row_max[i] == kNegInf) row_max[i] = 0.f;
        }
      }
      continue;
    }
    // Pass 2: probabilities, summed over 8 columns (lanes sharing lane >> 2) and 8 rows (lanes
    // sharing lane & 3); cells are at least 8 wide and aligned, so each sum lies in one cell.
    float acc = 0.f;
    int acc_cell = -1;
    float* out_row0 =
        p.out + (static_cast<int64_t>(h) * p.q_blocks + (i0 + warp * 16) / cell) * p.k_blocks;
    float* out_row1 =
        p.out + (static_cast<int64_t>(h) * p.q_blocks + (i0 + warp * 16 + 8) / cell) * p.k_blocks;
    const bool one_row_cell = out_row0 == out_row1;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      float v0 = (FastExp2(s[j][0] - row_max[0]) + FastExp2(s[j][1] - row_max[0])) * inv[0];
      float v1 = (FastExp2(s[j][2] - row_max[1]) + FastExp2(s[j][3] - row_max[1])) * inv[1];
#pragma unroll
      for (int m = 1; m < 32; m <<= 1) {
        v0 += __shfl_xor_sync(0xffffffffu, v0, m);
        v1 += __shfl_xor_sync(0xffffffffu, v1, m);
      }
      const int c = (n0 + j * 8) / cell;
      if (one_row_cell) {
        if (c != acc_cell) {
          if (acc_cell >= 0 && lane == 0 && acc != 0.f) atomicAdd(out_row0 + acc_cell, acc);
          acc_cell = c;
          acc = 0.f;
        }
        acc += v0 + v1;
      } else if (lane == 0) {
        if (v0 != 0.f) atomicAdd(out_row0 + c, v0);
        if (v1 != 0.f) atomicAdd(out_row1 + c, v1);
      }
    }
    if (one_row_cell && acc_cell >= 0 && lane == 0 && acc != 0.f)
      atomicAdd(out_row0 + acc_cell, acc);
  }
  CpAsyncWait<0>();
}

// One pass; needs kBN % cell == 0 and p.scratch of EstimateScratchFloats floats.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 1) XAttentionEstimateOnePassKernel(EstimateArgs p) {
  using Op = MmaOp<T>;
  constexpr int kChunks = D / 8;
  constexpr int kQBytes = kBM * D * 2;
  constexpr int kKBytes = kBN * D * 2;
  extern __shared__ __align__(128) char smem[];
  char* s_q = smem;                // 2 stages
  char* s_k = smem + 2 * kQBytes;  // 2 stages

  const int h = blockIdx.x;
  const int i0 = (gridDim.y - 1 - blockIdx.y) * kBM;
  const int S = p.stride;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int rows_valid = (p.q_len + S - 1) / S;
  if (i0 >= rows_valid) return;
  const int keys_valid = (p.k_len + S - 1) / S;
  const int off = (p.k_len - p.q_len) / S;
  const int i_last = min(i0 + kBM, rows_valid) - 1;
  const int j_max = min(i_last + off, keys_valid - 1);
  if (j_max < 0) return;
  const int ntiles = j_max / kBN + 1;
  const int steps = ntiles * S;
  const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(h) * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + static_cast<int64_t>(h / p.group) * p.k_head_stride;
  const float sl2 = 1.4426950408889634f / (sqrtf(static_cast<float>(p.head_dim)) * S);
  const int cell = p.block_size / S;
  const int kb = p.k_blocks;
  const int row_w = i0 + warp * 16;
  const int row_g = row_w + (lane >> 2);
  float* scr = p.scratch + static_cast<int64_t>(h) * p.scratch_rows * kb;

  float row_max[2] = {kNegInf, kNegInf};
  float row_sum[2] = {0.f, 0.f};  // per thread, relative to row_max (shared by the quad)

  LoadStep<T, D>(s_q, s_k, q, k, p, i0, 0, 0, tid);
  CpAsyncCommit();
  int stage = 0;
  float s[kBN / 8][4];
  for (int it = 0; it < steps; ++it) {
    const int tile = it / S, t = it % S;
    if (it + 1 < steps) {
      LoadStep<T, D>(s_q + (stage ^ 1) * kQBytes, s_k + (stage ^ 1) * kKBytes, q, k, p, i0,
                     ((it + 1) / S) * kBN, (it + 1) % S, tid);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    }
    const char* qs = s_q + stage * kQBytes;
    const char* ks = s_k + stage * kKBytes;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[4];
      LdMatrixX4(
          a, SmemAddr(qs + SwizzledOffset<kChunks>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4))));
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        const int row = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int ch = kk * 2 + ((lane >> 3) & 1);
        uint32_t b[4];
        LdMatrixX4(b, SmemAddr(ks + SwizzledOffset<kChunks>(row, ch)));
        Op::Run(s[2 * np], a, b[0], b[1]);
        Op::Run(s[2 * np + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();
    stage ^= 1;
    if (t != S - 1) continue;

    const int n0 = tile * kBN;
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n0 + j * 8 + 2 * (lane & 3) + (e & 1);
        const int row = row_g + (e >= 2 ? 8 : 0);
        s[j][e] = (col > row + off || col >= keys_valid) ? kNegInf : s[j][e] * sl2;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
      }
    }
    float base[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      base[i] = mx[i] == kNegInf ? 0.f : mx[i];
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = FastExp2(s[j][e] - base[e >> 1]);
        rs[e >> 1] += s[j][e];
      }
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      if (mx[i] != kNegInf) {
        const float nm = fmaxf(row_max[i], mx[i]);
        row_sum[i] = row_sum[i] * FastExp2(row_max[i] - nm) + rs[i] * FastExp2(mx[i] - nm);
        row_max[i] = nm;
      }
    }
    // Cell sums of this tile: 8-column groups accumulated until a cell boundary, then reduced
    // over the quad; lane (lane & 3) == 0 stores rows row_g and row_g + 8.
    float acc0 = 0.f, acc1 = 0.f;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      acc0 += s[j][0] + s[j][1];
      acc1 += s[j][2] + s[j][3];
      if (((j + 1) * 8) % cell == 0) {
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
        acc0 += __shfl_xor_sync(0xffffffffu, acc0, 2);
        acc1 += __shfl_xor_sync(0xffffffffu, acc1, 2);
        const int c = (n0 + j * 8) / cell;
        if ((lane & 3) == 0 && c < kb) {
          scr[static_cast<int64_t>(row_g) * kb + c] =
              acc0 > 0.f ? base[0] + __log2f(acc0) : kNegInf;
          scr[static_cast<int64_t>(row_g + 8) * kb + c] =
              acc1 > 0.f ? base[1] + __log2f(acc1) : kNegInf;
        }
        acc0 = acc1 = 0.f;
      }
    }
  }
  CpAsyncWait<0>();

  // Final log2-sum-exp of the rows; +inf for rows without a real query (they add nothing).
  float lse[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float rsum = row_sum[i];
    rsum += __shfl_xor_sync(0xffffffffu, rsum, 1);
    rsum += __shfl_xor_sync(0xffffffffu, rsum, 2);
    const int row = row_g + 8 * i;
    lse[i] = (row < rows_valid && rsum > 0.f) ? row_max[i] + __log2f(rsum) : __builtin_huge_valf();
  }
  __syncwarp();  // orders the scratch stores of the quad leaders before the reads below
  float lse_all[16];
#pragma unroll
  for (int r = 0; r < 16; ++r) lse_all[r] = __shfl_sync(0xffffffffu, lse[r >> 3], (r & 7) * 4);
  const int ncells = min(kb, ntiles * kBN / cell);
  for (int c = lane; c < ncells; c += 32) {
    float v = 0.f;
    int qb = row_w / cell;
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int row = row_w + r;
      if (r > 0 && row % cell == 0) {
        if (v != 0.f && qb < p.q_blocks)
          atomicAdd(p.out + (static_cast<int64_t>(h) * p.q_blocks + qb) * kb + c, v);
        v = 0.f;
        qb = row / cell;
      }
      v += FastExp2(scr[static_cast<int64_t>(row) * kb + c] - lse_all[r]);
    }
    if (v != 0.f && qb < p.q_blocks)
      atomicAdd(p.out + (static_cast<int64_t>(h) * p.q_blocks + qb) * kb + c, v);
  }
}

template <typename T, int D>
cudaError_t Launch(const EstimateArgs& a, cudaStream_t stream) {
  constexpr int smem = 2 * kBM * D * 2 + 2 * kBN * D * 2;
  const bool one_pass = OnePass(a) && a.scratch != nullptr;
  auto kernel =
      one_pass ? XAttentionEstimateOnePassKernel<T, D> : XAttentionEstimateTwoPassKernel<T, D>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  const int tiles = RowTiles(a);
  if (tiles == 0 || a.num_heads == 0) return cudaSuccess;
  if (one_pass && a.scratch_rows < static_cast<int64_t>(tiles) * kBM) return cudaErrorInvalidValue;
  kernel<<<dim3(a.num_heads, tiles), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

int64_t EstimateScratchRows(const EstimateArgs& args) {
  if (args.stride < 1 || args.block_size % args.stride != 0 || !OnePass(args)) return 0;
  return static_cast<int64_t>(RowTiles(args)) * kBM;
}

cudaError_t LaunchXAttentionEstimate(const EstimateArgs& args, DType dtype, cudaStream_t stream) {
  if (args.stride < 1 || args.block_size % args.stride != 0 ||
      (args.block_size / args.stride) % 8 != 0)
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
