#include "cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace attnkit::kernels {
namespace {

inline float Dot(const float* a, const float* b, int n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline void Axpy(float alpha, const float* x, float* y, int n) {
#pragma omp simd
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// A storage row as float: a pointer into the cache for float32, else converted into `buffer`.
template <typename T>
inline const float* AsFloat(const void* row, int n, float* buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<const float*>(row);
  } else {
    const T* src = static_cast<const T*>(row);
    for (int i = 0; i < n; ++i) buffer[i] = static_cast<float>(src[i]);
    return buffer;
  }
}

template <typename Storage>
void Run(const PagedGroupArgs& a) {
  const int d = a.head_dim;
  const int64_t L = a.length, T = a.queries;
  const int rows = a.rows_per_query * static_cast<int>(T);
  float* scores = a.scratch;
  std::vector<float> convert(d);
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  // Pass 1: every key row once, dotted with every query row that sees it.
  for (int64_t t = 0; t < L; ++t) {
    const float* k = AsFloat<Storage>(a.row_ptr(a.ctx, t, false), d, convert.data());
    for (int g = 0; g < a.rows_per_query; ++g) {
      for (int64_t qi = 0; qi < T; ++qi) {
        const int row = g * static_cast<int>(T) + static_cast<int>(qi);
        const bool visible = t <= L - T + qi;
        scores[row * L + t] = visible ? Dot(a.q + static_cast<int64_t>(row) * d, k, d) * a.scale
                                      : kNegInf;
      }
    }
  }
  // Softmax per row.
  for (int row = 0; row < rows; ++row) {
    float* s = scores + static_cast<int64_t>(row) * L;
    float m = kNegInf;
    for (int64_t t = 0; t < L; ++t) m = std::max(m, s[t]);
    float sum = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
      const float e = s[t] == kNegInf ? 0.0f : std::exp(s[t] - m);
      s[t] = e;
      sum += e;
    }
    const float inv = 1.0f / sum;
    for (int64_t t = 0; t < L; ++t) s[t] *= inv;
  }
  // Pass 2: every value row once.
  std::fill(a.out, a.out + static_cast<int64_t>(rows) * d, 0.0f);
  for (int64_t t = 0; t < L; ++t) {
    const float* v = AsFloat<Storage>(a.row_ptr(a.ctx, t, true), d, convert.data());
    for (int row = 0; row < rows; ++row) {
      const float p = scores[static_cast<int64_t>(row) * L + t];
      if (p != 0.0f) Axpy(p, v, a.out + static_cast<int64_t>(row) * d, d);
    }
  }
  // Observation.
  if (a.window_rows != nullptr) {
    for (int g = 0; g < a.rows_per_query; ++g) {
      for (int64_t w = 0; w < a.window; ++w) {
        const int row = g * static_cast<int>(T) + static_cast<int>(T - a.window + w);
        std::memcpy(a.window_rows + (g * a.window + w) * L, scores + static_cast<int64_t>(row) * L,
                    L * sizeof(float));
      }
    }
  }
  if (a.column_sums != nullptr) {
    for (int g = 0; g < a.rows_per_query; ++g) {
      float* dst = a.column_sums + static_cast<int64_t>(g) * L;
      std::fill(dst, dst + L, 0.0f);
      for (int64_t qi = 0; qi < T; ++qi) {
        const float* s = scores + (static_cast<int64_t>(g) * T + qi) * L;
        for (int64_t t = 0; t < L; ++t) dst[t] += s[t];
      }
    }
  }
}

}  // namespace

void PagedGroupAttention(const PagedGroupArgs& args) {
  switch (args.dtype) {
    case at::kHalf: return Run<c10::Half>(args);
    case at::kBFloat16: return Run<c10::BFloat16>(args);
    default: return Run<float>(args);
  }
}

}  // namespace attnkit::kernels
