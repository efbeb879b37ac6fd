// Fused decode attention over the paged KV cache (split-K, "flash decoding") that also produces the
// eviction scores: see launch.h. Two launches:
//   1. per (kv head, split of the tokens), 4 warps on the tensor cores: the group's query heads are
//      the rows of one 16-row mma.sync tile (rows past the group are zero); the split's tokens
//      stream through shared memory in 64-token tiles, kStages deep with cp.async (each key and
//      value row read once, from wherever its page lives; the next tile's copies are in flight
//      while one is computed); each warp takes 16 tokens of a tile: S = Q.K^T
//      (m16n8k16), logits to the workspace for the scores, online softmax in base 2, O += P.V
//      with P straight from the accumulator registers; the warps merge through shared memory into
//      the split's max, sum and unnormalized output;
//   2. per (kv head, 1024 tokens): the group's head max/sum from the split statistics; the first
//      CTAs combine the splits into the output, every CTA adds its tokens' probabilities (summed
//      over the group) to the scores.
// Bytes: each cached key and value is read once; the logits (4 bytes per head and token) twice.
// Splits: the tokens over the device's CTA slots, rounded up to a power of two from 64 to 1024
// tokens (ChunkFor), unless the caller fixes the split size; with seq_rows each sequence's CTAs
// pick its own size from its lengths on the device (SequenceChunk), the grid covering the most
// splits any sequence can need, and a CTA past its sequence's splits writes an empty split (-inf
// max, zero sum and output), which the combine adds exactly (x + 0), so the result's bits are
// those of the sequence alone in a call.
#include <algorithm>
#include <utility>

#include "common.cuh"
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kMaxGroup = 8;
constexpr int kMinChunk = 64;
constexpr int kMaxChunk = 1024;
constexpr int kThreads = 128;  // split kernel: 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kTileTokens = kWarps * 16;  // 16 tokens per warp per tile
// Tiles in shared memory: one loading while one is used. Measured on the H200 at 32K tokens with
// 1024-token splits: 2 stages (three CTAs per SM) 52.6 us, 3 stages (two per SM) 54.7 us, 4 (one
// per SM) 59.9 us; one TMA bulk copy per row instead of 16-byte cp.async copies changed nothing.
constexpr int kStages = 2;
constexpr int kFinishThreads = 256;
constexpr int kFinishTokens = 1024;  // tokens per CTA of the finishing kernel

int SplitsFor(int max_length, int chunk) { return (max_length + chunk - 1) / chunk; }

// The split size for `tokens` cached tokens over `slots` CTA slots: a power of two from kMinChunk
// to kMaxChunk covering the tokens in one wave when it can.
__host__ __device__ inline int ChunkOf(int64_t tokens, int slots) {
  int chunk = kMinChunk;
  while (chunk < kMaxChunk && static_cast<int64_t>(chunk) * slots < tokens) chunk *= 2;
  return chunk;
}

// The split size of kv row `kvh`'s sequence (rows seq_rows apart): ChunkOf its longest row's
// length times its rows, as a call holding that sequence alone picks it.
__device__ inline int SequenceChunk(const DecodeArgs& p, int kvh, int slots) {
  const int first = kvh - kvh % p.seq_rows;
  int longest = 0;
  for (int i = 0; i < p.seq_rows; ++i) longest = max(longest, p.lengths[first + i]);
  return ChunkOf(static_cast<int64_t>(longest) * p.seq_rows, slots);
}

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

// Shared memory of the split kernel: kStages tiles of keys and values in XOR-swizzled rows
// (16-byte cp.async copies), then the split's page pointers: 72 KB at D 128, three CTAs per SM.
template <int D>
struct TileLayout {
  static constexpr int kChunks = D / 8;                   // 16-byte chunks per row
  static constexpr int kTileBytes = kTileTokens * D * 2;  // the keys (or values) of one tile
  static constexpr int kSmemBytes = kStages * 2 * kTileBytes + (kMaxChunk + 1) * 8;
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    DecodeSplitKernel(DecodeArgs p, Workspace w, int uniform_chunk, int slots, int splits) {
  using Op = MmaOp<T>;
  using L = TileLayout<D>;
  constexpr int kChunks = L::kChunks;
  constexpr int kRowsPerPass = kThreads / kChunks;  // tile rows one pass of cp.async covers
  extern __shared__ __align__(128) char smem[];
  char* s_kv = smem;
  int64_t* s_pages = reinterpret_cast<int64_t*>(s_kv + kStages * 2 * L::kTileBytes);

  const int kvh = blockIdx.x, split = blockIdx.y;
  const int G = p.group;  // <= 8: rows 8..15 of the tile stay zero
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int length = p.lengths[kvh];
  const int chunk = uniform_chunk > 0 ? uniform_chunk : SequenceChunk(p, kvh, slots);
  const int j0 = split * chunk;
  const int n = max(0, min(chunk, length - j0));
  const int h0 = kvh * G;
  const int ps = p.page_size;
  const float sl2 = p.scale * 1.4426950408889634f;
  const int first_page = j0 / ps;
  const int npages = n > 0 ? (j0 + n - 1) / ps - first_page + 1 : 0;
  if (p.page_ids != nullptr) {
    const int32_t* ids = p.page_ids + static_cast<int64_t>(kvh) * p.max_pages + first_page;
    for (int i = tid; i < npages; i += kThreads)
      s_pages[i] = reinterpret_cast<int64_t>(p.page_base + ids[i] * p.page_bytes);
  } else {
    const int64_t* pages = p.page_ptrs + static_cast<int64_t>(kvh) * p.max_pages + first_page;
    for (int i = tid; i < npages; i += kThreads) s_pages[i] = pages[i];
  }
  __syncthreads();

  // The address of the key (or value) row of split-relative token jj (clamped to the split's first
  // token past its end: such rows are zero-filled).
  const int ntiles = (n + kTileTokens - 1) / kTileTokens;
  auto row_src = [&](int jj, bool values) {
    const int j = j0 + (jj < n ? jj : 0);
    const int pg = j / ps;
    const int o = j - pg * ps;
    return reinterpret_cast<const T*>(s_pages[pg - first_page]) +
           static_cast<int64_t>(values ? ps + o : o) * D;
  };
  auto load_tile = [&](int t, int stage) {
    char* ks = s_kv + stage * 2 * L::kTileBytes;
    const int ld_ch = tid % kChunks, ld_row = tid / kChunks;
#pragma unroll
    for (int i = 0; i < kTileTokens / kRowsPerPass; ++i) {
      const int r = ld_row + i * kRowsPerPass;
      const int jj = t * kTileTokens + r;
      const int off = SwizzledOffset<kChunks>(r, ld_ch);
      CpAsync16(SmemAddr(ks + off), row_src(jj, false) + ld_ch * 8, jj < n);
      CpAsync16(SmemAddr(ks + L::kTileBytes + off), row_src(jj, true) + ld_ch * 8, jj < n);
    }
  };
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < ntiles) load_tile(st, st);
    CpAsyncCommit();
  }

  // The group's queries as the A operand, straight from global memory: this thread's rows are
  // lane / 4 (head g_row of the group; zero past the group) and lane / 4 + 8 (padding, zero).
  const int g_row = lane >> 2;
  const bool row_ok = g_row < G;
  uint32_t qf[D / 16][4];
  {
    const T* qrow =
        static_cast<const T*>(p.q) + static_cast<int64_t>(h0 + (row_ok ? g_row : 0)) * p.q_stride;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int c = kk * 16 + 2 * (lane & 3);
      qf[kk][0] = row_ok ? *reinterpret_cast<const uint32_t*>(qrow + c) : 0u;
      qf[kk][1] = 0u;
      qf[kk][2] = row_ok ? *reinterpret_cast<const uint32_t*>(qrow + c + 8) : 0u;
      qf[kk][3] = 0u;
    }
  }

  // Rows 8..15 of the m16n8 accumulators are padding and never read; this thread's columns are
  // 2 * (lane & 3) + {0, 1} of each 8-token half of the warp's 16 tokens.
  float o[D / 8][4];
#pragma unroll
  for (int nn = 0; nn < D / 8; ++nn) o[nn][0] = o[nn][1] = o[nn][2] = o[nn][3] = 0.f;
  float row_max = kNegInf, row_sum = 0.f;
  float* logits = w.logits + static_cast<int64_t>(h0 + g_row) * p.max_length + j0;
  const bool want_logits = p.scores != nullptr && row_ok;

  for (int t = 0; t < ntiles; ++t) {
    const int tn = t + kStages - 1;
    if (tn < ntiles) load_tile(tn, tn % kStages);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncthreads();
    const char* ks = s_kv + (t % kStages) * 2 * L::kTileBytes;
    const char* vs = ks + L::kTileBytes;

    float s[2][4];
#pragma unroll
    for (int j = 0; j < 2; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int row = warp * 16 + (lane & 7) + ((lane >> 4) << 3);
      const int ch = kk * 2 + ((lane >> 3) & 1);
      uint32_t b[4];
      LdMatrixX4(b, SmemAddr(ks + SwizzledOffset<kChunks>(row, ch)));
      Op::Run(s[0], qf[kk], b[0], b[1]);
      Op::Run(s[1], qf[kk], b[2], b[3]);
    }

    const int tok0 = t * kTileTokens + warp * 16 + 2 * (lane & 3);  // split-relative
    float mx = row_max;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int jj = tok0 + j * 8 + e;
        const float v = jj < n ? s[j][e] * sl2 : kNegInf;
        s[j][e] = v;
        mx = fmaxf(mx, v);
        if (want_logits && jj < n) logits[jj] = v;
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float base = mx == kNegInf ? 0.f : mx;
    const float alpha = FastExp2(row_max - base);
    row_max = mx;
    float rs = 0.f;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      s[j][0] = FastExp2(s[j][0] - base);
      s[j][1] = FastExp2(s[j][1] - base);
      rs += s[j][0] + s[j][1];
    }
    row_sum = row_sum * alpha + rs;
#pragma unroll
    for (int nn = 0; nn < D / 8; ++nn) {
      o[nn][0] *= alpha;
      o[nn][1] *= alpha;
    }
    // P [16 rows, 16 tokens] as the A operand (rows 8..15 zero), V's 16 rows as B.
    const uint32_t a[4] = {Op::Pack(s[0][0], s[0][1]), 0u, Op::Pack(s[1][0], s[1][1]), 0u};
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      const int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int ch = dp * 2 + (lane >> 4);
      uint32_t b[4];
      LdMatrixX4Trans(b, SmemAddr(vs + SwizzledOffset<kChunks>(row, ch)));
      Op::Run(o[2 * dp], a, b[0], b[1]);
      Op::Run(o[2 * dp + 1], a, b[2], b[3]);
    }
    __syncthreads();  // the stage is free for the load issued at the top of the next iteration
  }
  CpAsyncWait<0>();
  __syncthreads();

  // Merge the warps (the tile area is free now): the split's max, sum and output relative to it.
  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 1);
  row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 2);
  float* s_o = reinterpret_cast<float*>(s_kv);  // [warps][8][D]
  float* s_m = s_o + kWarps * 8 * D;            // [warps][8]
  float* s_l = s_m + kWarps * 8;                // [warps][8]
#pragma unroll
  for (int nn = 0; nn < D / 8; ++nn) {
    float* dst = s_o + (warp * 8 + g_row) * D + nn * 8 + 2 * (lane & 3);
    dst[0] = o[nn][0];
    dst[1] = o[nn][1];
  }
  if ((lane & 3) == 0) {
    s_m[warp * 8 + g_row] = row_max;
    s_l[warp * 8 + g_row] = row_sum;
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += kThreads) {
    const int g = i / D, d = i % D;
    float mx = kNegInf;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) mx = fmaxf(mx, s_m[wi * 8 + g]);
    const float base = mx == kNegInf ? 0.f : mx;
    float out = 0.f, sum = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) {
      const float wgt = FastExp2(s_m[wi * 8 + g] - base);
      out = fmaf(wgt, s_o[(wi * 8 + g) * D + d], out);
      sum = fmaf(wgt, s_l[wi * 8 + g], sum);
    }
    const int64_t hs = static_cast<int64_t>(h0 + g) * splits + split;
    w.split_out[hs * D + d] = out;
    if (d == 0) {
      w.split_max[hs] = mx;
      w.split_sum[hs] = sum;
    }
  }
}

// Grid (x CTAs, kv heads), kFinishThreads threads.
template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    DecodeFinishKernel(DecodeArgs p, Workspace w, int splits) {
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
    if (p.out_float) {
      reinterpret_cast<float2*>(static_cast<float*>(p.out) + static_cast<int64_t>(h) * D)[d2] =
          make_float2(o0 * inv, o1 * inv);
    } else {
      reinterpret_cast<uint32_t*>(static_cast<T*>(p.out) + static_cast<int64_t>(h) * D)[d2] =
          Op::Pack(o0 * inv, o1 * inv);
    }
  }
  if (p.scores == nullptr) return;
  const int length = p.lengths[kvh];
  if (p.scores_per_head) {
    for (int g = 0; g < G; ++g) {
      float* scores = p.scores + static_cast<int64_t>(h0 + g) * p.scores_stride;
      const float* logits = w.logits + static_cast<int64_t>(h0 + g) * p.max_length;
      for (int j = blockIdx.x * kFinishThreads + tid; j < length; j += stride)
        scores[j] += FastExp2(logits[j] - s_hm[g]) * s_hinv[g];
    }
    return;
  }
  float* scores = p.scores + kvh * p.scores_stride;
  for (int j = blockIdx.x * kFinishThreads + tid; j < length; j += stride) {
    float a = 0.f;
    for (int g = 0; g < G; ++g)
      a +=
          FastExp2(w.logits[static_cast<int64_t>(h0 + g) * p.max_length + j] - s_hm[g]) * s_hinv[g];
    scores[j] += a;
  }
}

// The split kernel's dynamic shared memory, set once per instantiation; returns the bytes.
template <typename T, int D>
int PrepareSplitKernel() {
  static const int bytes = [] {
    constexpr int smem = TileLayout<D>::kSmemBytes;
    cudaFuncSetAttribute(DecodeSplitKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         smem);
    return smem;
  }();
  return bytes;
}

// Tokens per split CTA: the tokens over the device's CTA slots (occupancy queried), rounded up to
// a power of two from 64 to 1024, so that CTAs are few and long: each pays a pipeline fill and a
// merge. Measured on the H200 (32K tokens, 8 kv heads, 396 slots): 1024-token splits 52.6 us,
// 512 66.9 us, 256 85.9 us, 128 130.7 us.
template <typename T, int D>
int SlotsFor() {
  static const int slots = [] {
    int dev = 0, sms = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, DecodeSplitKernel<T, D>, kThreads,
                                                  PrepareSplitKernel<T, D>());
    return (sms > 0 ? sms : 132) * (per_sm > 0 ? per_sm : 1);
  }();
  return slots;
}

// The call's split size, or 0 when each sequence picks its own (seq_rows), and the grid's splits.
template <typename T, int D>
std::pair<int, int> ChunkFor(const DecodeArgs& a, int kv_heads) {
  if (a.split_tokens > 0) return {a.split_tokens, SplitsFor(a.max_length, a.split_tokens)};
  const int slots = SlotsFor<T, D>();
  if (a.seq_rows > 0) {
    // ChunkOf gives at most ceil(slots / seq_rows) splits below kMaxChunk, and
    // ceil(length / kMaxChunk) at it.
    const int most =
        std::max((slots + a.seq_rows - 1) / a.seq_rows, SplitsFor(a.max_length, kMaxChunk));
    return {0, std::min(most, SplitsFor(a.max_length, kMinChunk))};
  }
  const int chunk = ChunkOf(static_cast<int64_t>(a.max_length) * kv_heads, slots);
  return {chunk, SplitsFor(a.max_length, chunk)};
}

template <typename T, int D>
cudaError_t Launch(const DecodeArgs& a, cudaStream_t stream) {
  const int kv_heads = a.num_heads / a.group;
  const int smem = PrepareSplitKernel<T, D>();
  const auto [chunk, splits] = ChunkFor<T, D>(a, kv_heads);
  const Workspace w = Carve(a, splits);
  if (splits > 0) {
    DecodeSplitKernel<T, D>
        <<<dim3(kv_heads, splits), kThreads, smem, stream>>>(a, w, chunk, SlotsFor<T, D>(), splits);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  const int by_tokens = (a.max_length + kFinishTokens - 1) / kFinishTokens;
  const int ctas = by_tokens > 0 ? by_tokens : 1;
  DecodeFinishKernel<T><<<dim3(ctas, kv_heads), kFinishThreads, 0, stream>>>(a, w, splits);
  return cudaGetLastError();
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
  if (args.seq_rows < 0 || (args.seq_rows > 0 && (args.num_heads / args.group) % args.seq_rows))
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
