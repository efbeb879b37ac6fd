#include "cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ATTNKIT_AVX2 1
#endif

namespace attnkit::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#ifdef ATTNKIT_AVX2
inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// Cephes-style expf: range reduction by ln 2, degree-5 polynomial, exponent by integer add.
inline __m256 Exp8(__m256 x) {
  const __m256 max_x = _mm256_set1_ps(88.3762626647949f), min_x = _mm256_set1_ps(-87.3365447504f);
  const __m256 below = _mm256_cmp_ps(x, min_x, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, min_x), max_x);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(below, y);
}
#endif

// Rows of storage type converted to float (float rows are used in place).
template <typename Storage>
inline const float* AsFloat(const char* row, int n, float* buffer) {
  if constexpr (std::is_same_v<Storage, float>) {
    return reinterpret_cast<const float*>(row);
  } else {
    const Storage* src = reinterpret_cast<const Storage*>(row);
    for (int i = 0; i < n; ++i) buffer[i] = static_cast<float>(src[i]);
    return buffer;
  }
}

// scores[r] = q[r] . k for `rows` query rows.
inline void DotRows(const float* q, int rows, const float* k, int d, float* scores) {
#ifdef ATTNKIT_AVX2
  if (d % 8 == 0) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float *q0 = q + r * d, *q1 = q0 + d, *q2 = q1 + d, *q3 = q2 + d;
      for (int j = 0; j < d; j += 8) {
        const __m256 kv = _mm256_loadu_ps(k + j);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + j), kv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + j), kv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + j), kv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + j), kv, a3);
      }
      scores[r] = HorizontalSum(a0);
      scores[r + 1] = HorizontalSum(a1);
      scores[r + 2] = HorizontalSum(a2);
      scores[r + 3] = HorizontalSum(a3);
    }
    for (; r < rows; ++r) {
      __m256 a = _mm256_setzero_ps();
      for (int j = 0; j < d; j += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * d + j), _mm256_loadu_ps(k + j), a);
      scores[r] = HorizontalSum(a);
    }
    return;
  }
#endif
  for (int r = 0; r < rows; ++r) {
    float acc = 0.0f;
    const float* qr = q + r * d;
#pragma omp simd reduction(+ : acc)
    for (int j = 0; j < d; ++j) acc += qr[j] * k[j];
    scores[r] = acc;
  }
}

// Asks for the first lines of the next page, whose address the hardware prefetcher cannot guess.
inline void Prefetch(const char* page, int64_t bytes) {
  if (page == nullptr) return;
  for (int64_t off = 0; off < std::min<int64_t>(bytes, 1024); off += 64)
    __builtin_prefetch(page + off);
}

inline void Axpy(float alpha, const float* x, float* y, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename Storage>
void Run(const PagedGroupArgs& a) {
  const int d = a.head_dim, P = a.page_size;
  const int64_t L = a.length, T = a.queries;
  const int rows = a.rows_per_query * static_cast<int>(T);
  float* scores = a.scratch;  // [rows, L]
  std::vector<float> convert(d), dots(rows);
  // Pass 1: every key row once, dotted with every query row.
  for (int64_t t0 = 0, page = 0; t0 < L; t0 += P, ++page) {
    const int64_t n = std::min<int64_t>(P, L - t0);
    const char* keys = a.page_keys[page];
    Prefetch(t0 + P < L ? a.page_keys[page + 1] : nullptr, P * d * sizeof(Storage));
    for (int64_t i = 0; i < n; ++i) {
      const float* k = AsFloat<Storage>(keys + i * d * sizeof(Storage), d, convert.data());
      DotRows(a.q, rows, k, d, dots.data());
      for (int r = 0; r < rows; ++r) scores[r * L + t0 + i] = dots[r] * a.scale;
    }
  }
  // Causal mask, softmax per row.
  for (int r = 0; r < rows; ++r) {
    const int64_t qi = r % T;
    const int64_t visible = L - T + qi + 1;
    float* s = scores + static_cast<int64_t>(r) * L;
    std::fill(s + visible, s + L, kNegInf);
    float m = kNegInf;
    for (int64_t t = 0; t < visible; ++t) m = std::max(m, s[t]);
    for (int64_t t = 0; t < visible; ++t) s[t] -= m;
    ExpInPlace(s, L);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < visible; ++t) sum += s[t];
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) s[t] *= inv;
  }
  // Pass 2: every value row once.
  std::fill(a.out, a.out + static_cast<int64_t>(rows) * d, 0.0f);
  for (int64_t t0 = 0, page = 0; t0 < L; t0 += P, ++page) {
    const int64_t n = std::min<int64_t>(P, L - t0);
    const char* values = a.page_values[page];
    Prefetch(t0 + P < L ? a.page_values[page + 1] : nullptr, P * d * sizeof(Storage));
    for (int64_t i = 0; i < n; ++i) {
      const float* v = AsFloat<Storage>(values + i * d * sizeof(Storage), d, convert.data());
      for (int r = 0; r < rows; ++r) {
        const float p = scores[static_cast<int64_t>(r) * L + t0 + i];
        if (p != 0.0f) Axpy(p, v, a.out + static_cast<int64_t>(r) * d, d);
      }
    }
  }
  // Observation.
  if (a.window_rows != nullptr) {
    for (int g = 0; g < a.rows_per_query; ++g) {
      for (int64_t w = 0; w < a.window; ++w) {
        const int64_t row = g * T + (T - a.window + w);
        std::memcpy(a.window_rows + (g * a.window + w) * L, scores + row * L, L * sizeof(float));
      }
    }
  }
  if (a.column_sums != nullptr) {
    for (int g = 0; g < a.rows_per_query; ++g) {
      float* dst = a.column_sums + static_cast<int64_t>(g) * L;
      std::fill(dst, dst + L, 0.0f);
      for (int64_t qi = 0; qi < T; ++qi) {
        const float* s = scores + (static_cast<int64_t>(g) * T + qi) * L;
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) dst[t] += s[t];
      }
    }
  }
}

}  // namespace

void ExpInPlace(float* values, int64_t n) {
  int64_t i = 0;
#ifdef ATTNKIT_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(values + i, Exp8(_mm256_loadu_ps(values + i)));
#endif
  for (; i < n; ++i) values[i] = std::exp(values[i]);
}

void PagedGroupAttention(const PagedGroupArgs& args) {
  switch (args.dtype) {
    case at::kHalf:
      return Run<c10::Half>(args);
    case at::kBFloat16:
      return Run<c10::BFloat16>(args);
    default:
      return Run<float>(args);
  }
}

}  // namespace attnkit::kernels
