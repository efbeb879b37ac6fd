// Device helpers shared by the CUDA kernels: cp.async, ldmatrix, mma.sync m16n8k16 (bf16/fp16 in,
// fp32 accumulate), fast exp2 and a 16-byte-chunk XOR swizzle for shared-memory tiles. Needs
// sm_80+; the library is built for sm_90a. Internal to core/kernels/cuda.
#ifndef ATTNKIT_CORE_KERNELS_CUDA_COMMON_CUH_
#define ATTNKIT_CORE_KERNELS_CUDA_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace attnkit::cuda_kernels {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "attnkit's CUDA kernels need sm_80 or newer (mma.sync bf16, cp.async)"
#endif

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; zero-fills the destination when !valid (src must still be a
// mapped address).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename T>
struct MmaOp;
template <>
struct MmaOp<__nv_bfloat16> {
  static __device__ __forceinline__ void Run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float x, float y) {
    __nv_bfloat162 v = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 Unpack(uint32_t u) {
    __nv_bfloat162 v = *reinterpret_cast<__nv_bfloat162*>(&u);
    return __bfloat1622float2(v);
  }
};
template <>
struct MmaOp<__half> {
  static __device__ __forceinline__ void Run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                             uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t Pack(float x, float y) {
    __half2 v = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ float2 Unpack(uint32_t u) {
    __half2 v = *reinterpret_cast<__half2*>(&u);
    return __half22float2(v);
  }
};

__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of `kChunks` chunks per row, XOR
// swizzled so that the 8 rows an ldmatrix reads hit 8 different bank groups.
template <int kChunks>
__device__ __forceinline__ int SwizzledOffset(int row, int chunk) {
  return (row * kChunks + (chunk ^ (row & 7))) * 16;
}

// Loads rows [row0, row0 + kRows) of a [rows, kDim] matrix (row stride `row_stride` elements,
// inner stride 1) into a swizzled shared tile with cp.async; rows >= row_limit are zero-filled.
// `kThreads` threads take part. Returns nothing; the caller commits.
template <typename T, int kRows, int kDim, int kThreads>
__device__ __forceinline__ void LoadTile(char* smem, const T* g, int64_t row_stride, int row0,
                                         int row_limit, int tid) {
  constexpr int kChunks = kDim / 8;
  constexpr int kTotal = kRows * kChunks;
  static_assert(kTotal % kThreads == 0, "tile chunks must divide among threads");
#pragma unroll
  for (int i = 0; i < kTotal / kThreads; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / kChunks, ch = c % kChunks;
    const int gr = row0 + r;
    const bool ok = gr < row_limit && gr >= 0;
    const T* src = g + static_cast<int64_t>(ok ? gr : 0) * row_stride + ch * 8;
    CpAsync16(SmemAddr(smem + SwizzledOffset<kChunks>(r, ch)), src, ok);
  }
}

constexpr float kNegInf = -__builtin_huge_valf();

}  // namespace attnkit::cuda_kernels

#endif  // ATTNKIT_CORE_KERNELS_CUDA_COMMON_CUH_
