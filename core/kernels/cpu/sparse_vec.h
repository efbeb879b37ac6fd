// Small vectorized helpers shared by the sparse-attention CPU kernels (block-sparse attention and
// the XAttention estimate): row max, exp-and-sum, scaling. AVX2+FMA when the translation unit is
// built for it (core/kernels/cpu/*.cc are, with -march=x86-64-v3), scalar otherwise. Header-only
// and internal: include only from core/kernels/cpu/*.cc.
#ifndef ATTNKIT_CORE_KERNELS_CPU_SPARSE_VEC_H_
#define ATTNKIT_CORE_KERNELS_CPU_SPARSE_VEC_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ATTNKIT_SPARSE_AVX2 1
#endif

namespace attnkit::kernels::sparse_vec {

#ifdef ATTNKIT_SPARSE_AVX2
// exp(x) for 8 floats, relative error about 2e-7 on [-87, 88]; inputs below -87 give 0 (their true
// value is below 1.7e-38 and below what a softmax of float32 scores can resolve).
inline __m256 Exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(x, hi);
  x = _mm256_max_ps(x, lo);
  // exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n ln2 (ln2 split in two for accuracy).
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, y);
}

inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

// max(x[0..n)); -inf for n == 0.
inline float RowMax(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
#ifdef ATTNKIT_SPARSE_AVX2
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(x);
    for (j = 8; j + 8 <= n; j += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + j));
    m = HorizontalMax(vm);
  }
#endif
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = exp(x[j] - m) in place; returns the sum of the new values.
inline float ExpSubSum(float* x, int64_t n, float m) {
  float sum = 0.0f;
  int64_t j = 0;
#ifdef ATTNKIT_SPARSE_AVX2
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vs = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) {
    __m256 e = Exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
    _mm256_storeu_ps(x + j, e);
    vs = _mm256_add_ps(vs, e);
  }
  sum = HorizontalSum(vs);
#endif
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    sum += x[j];
  }
  return sum;
}

// sum(x[0..n)).
inline float RowSum(const float* x, int64_t n) {
  float sum = 0.0f;
  int64_t j = 0;
#ifdef ATTNKIT_SPARSE_AVX2
  __m256 vs = _mm256_setzero_ps();
  for (; j + 8 <= n; j += 8) vs = _mm256_add_ps(vs, _mm256_loadu_ps(x + j));
  sum = HorizontalSum(vs);
#endif
  for (; j < n; ++j) sum += x[j];
  return sum;
}

// x[j] *= a.
inline void Scale(float* x, int64_t n, float a) {
  int64_t j = 0;
#ifdef ATTNKIT_SPARSE_AVX2
  const __m256 va = _mm256_set1_ps(a);
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), va));
#endif
  for (; j < n; ++j) x[j] *= a;
}

// x[j] = value.
inline void Fill(float* x, int64_t n, float value) { std::fill(x, x + n, value); }

}  // namespace attnkit::kernels::sparse_vec

#endif  // ATTNKIT_CORE_KERNELS_CPU_SPARSE_VEC_H_
