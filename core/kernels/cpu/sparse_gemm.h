// A small single-threaded GEMM for the sparse-attention CPU kernels: C[m, n] (=|+=) A[m, k] * B
// with A row-major and B packed in panels of 16 columns (panel p holds B[:, 16p .. 16p+15] as k
// rows of 16 floats, zero-padded past n). Register-blocked 6 x 16 AVX2/FMA micro-kernel (scalar
// fallback when the translation unit is not built for AVX2). Called from inside at::parallel_for,
// so it never spawns threads (unlike a multi-threaded BLAS called from several workers at once).
// Header-only and internal: include only from core/kernels/cpu/*.cc.
#ifndef ATTNKIT_CORE_KERNELS_CPU_SPARSE_GEMM_H_
#define ATTNKIT_CORE_KERNELS_CPU_SPARSE_GEMM_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/sparse_vec.h"

namespace attnkit::kernels::sparse_gemm {

constexpr int64_t kPanel = 16;
constexpr int64_t kRows = 6;

inline int64_t Panels(int64_t n) { return (n + kPanel - 1) / kPanel; }

// Floats needed to pack a B with `k` rows and `n` columns.
inline int64_t PackedSize(int64_t k, int64_t n) { return Panels(n) * k * kPanel; }

// Packs B = X^T where X is [n, k] row-major (leading dimension ldx): B[kk, j] = X[j, kk].
inline void PackTransposed(const float* x, int64_t ldx, int64_t n, int64_t k, float* packed) {
  for (int64_t p = 0; p < Panels(n); ++p) {
    float* dst = packed + p * k * kPanel;
    const int64_t cols = std::min(kPanel, n - p * kPanel);
    if (cols < kPanel) std::memset(dst, 0, k * kPanel * sizeof(float));
    for (int64_t j = 0; j < cols; ++j) {
      const float* src = x + (p * kPanel + j) * ldx;
      for (int64_t kk = 0; kk < k; ++kk) dst[kk * kPanel + j] = src[kk];
    }
  }
}

// Packs B = X where X is [k, n] row-major (leading dimension ldx).
inline void PackRows(const float* x, int64_t ldx, int64_t k, int64_t n, float* packed) {
  for (int64_t p = 0; p < Panels(n); ++p) {
    float* dst = packed + p * k * kPanel;
    const int64_t cols = std::min(kPanel, n - p * kPanel);
    for (int64_t kk = 0; kk < k; ++kk) {
      const float* src = x + kk * ldx + p * kPanel;
      float* d = dst + kk * kPanel;
      std::memcpy(d, src, cols * sizeof(float));
      if (cols < kPanel) std::memset(d + cols, 0, (kPanel - cols) * sizeof(float));
    }
  }
}

#ifdef ATTNKIT_SPARSE_AVX2
// R rows of A times one packed panel; writes (or adds) `cols` <= 16 columns of C.
template <int R>
inline void MicroKernel(int64_t k, const float* a, int64_t lda, const float* b, float* c,
                        int64_t ldc, int64_t cols, bool accumulate) {
  __m256 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) {
    acc0[r] = _mm256_setzero_ps();
    acc1[r] = _mm256_setzero_ps();
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_loadu_ps(b + kk * kPanel);
    const __m256 b1 = _mm256_loadu_ps(b + kk * kPanel + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + kk);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
  }
  if (cols == kPanel) {
    for (int r = 0; r < R; ++r) {
      float* cr = c + r * ldc;
      if (accumulate) {
        acc0[r] = _mm256_add_ps(acc0[r], _mm256_loadu_ps(cr));
        acc1[r] = _mm256_add_ps(acc1[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, acc0[r]);
      _mm256_storeu_ps(cr + 8, acc1[r]);
    }
  } else {
    alignas(32) float tmp[kPanel];
    for (int r = 0; r < R; ++r) {
      _mm256_store_ps(tmp, acc0[r]);
      _mm256_store_ps(tmp + 8, acc1[r]);
      float* cr = c + r * ldc;
      for (int64_t j = 0; j < cols; ++j) cr[j] = accumulate ? cr[j] + tmp[j] : tmp[j];
    }
  }
}
#endif

// C[m, n] = A[m, k] * B (accumulate: C += ...), B packed by PackTransposed / PackRows.
inline void GemmPacked(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                       const float* packed, float* c, int64_t ldc, bool accumulate) {
#ifdef ATTNKIT_SPARSE_AVX2
  for (int64_t p = 0; p < Panels(n); ++p) {
    const float* b = packed + p * k * kPanel;
    const int64_t cols = std::min(kPanel, n - p * kPanel);
    float* cp = c + p * kPanel;
    int64_t i = 0;
    for (; i + kRows <= m; i += kRows) {
      MicroKernel<kRows>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
    }
    switch (m - i) {
      case 5:
        MicroKernel<5>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
        break;
      case 4:
        MicroKernel<4>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
        break;
      case 3:
        MicroKernel<3>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
        break;
      case 2:
        MicroKernel<2>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
        break;
      case 1:
        MicroKernel<1>(k, a + i * lda, lda, b, cp + i * ldc, ldc, cols, accumulate);
        break;
      default:
        break;
    }
  }
#else
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float* b = packed + (j / kPanel) * k * kPanel + j % kPanel;
      float sum = 0.0f;
      for (int64_t kk = 0; kk < k; ++kk) sum += a[i * lda + kk] * b[kk * kPanel];
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
    }
  }
#endif
}

}  // namespace attnkit::kernels::sparse_gemm

#endif  // ATTNKIT_CORE_KERNELS_CPU_SPARSE_GEMM_H_
