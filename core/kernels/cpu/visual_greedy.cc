// Greedy DPP MAP and max-min diversity over float32 buffers. The arithmetic is written out so that
// the vector and scalar paths round identically, and as the reference: the projection adds the
// rounded products c_t[j] * c_t in pick order, e*e is rounded before it is subtracted (no
// contraction, see the pragmas).
#include "cpu/visual_greedy.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <thread>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ATTNKIT_VISUAL_AVX2 1
#endif

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace attnkit::kernels {
namespace {

constexpr float kEps = 1e-5f;
constexpr float kGuard = 1e-10f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// torch.argmax semantics over x[0, n): the first NaN if any, else the first maximum; 0 when every
// entry is -inf.
int64_t ArgMax(const float* x, int64_t n) {
  int64_t i = 0;
  float best = kNegInf;
  int64_t best_index = -1;
#ifdef ATTNKIT_VISUAL_AVX2
  if (n >= 8) {
    __m256 vbest = _mm256_set1_ps(kNegInf);
    __m256i vidx = _mm256_set1_epi32(-1);
    __m256i cur = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    __m256 nan_seen = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_loadu_ps(x + i);
      __m256 gt = _mm256_cmp_ps(v, vbest, _CMP_GT_OQ);
      nan_seen = _mm256_or_ps(nan_seen, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      vbest = _mm256_blendv_ps(vbest, v, gt);
      vidx = _mm256_castps_si256(
          _mm256_blendv_ps(_mm256_castsi256_ps(vidx), _mm256_castsi256_ps(cur), gt));
      cur = _mm256_add_epi32(cur, step);
    }
    if (_mm256_movemask_ps(nan_seen) != 0) {
      for (int64_t t = 0; t < n; ++t) {
        if (std::isnan(x[t])) return t;
      }
    }
    alignas(32) float lane_best[8];
    alignas(32) int32_t lane_idx[8];
    _mm256_store_ps(lane_best, vbest);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lane_idx), vidx);
    for (int l = 0; l < 8; ++l) {
      if (lane_idx[l] < 0) continue;
      if (lane_best[l] > best || (lane_best[l] == best && lane_idx[l] < best_index)) {
        best = lane_best[l];
        best_index = lane_idx[l];
      }
    }
  }
#endif
  for (; i < n; ++i) {
    const float v = x[i];
    if (std::isnan(v)) {
      // A NaN in the vector part was found above; this is the first one overall.
      return i;
    }
    if (v > best) {
      best = v;
      best_index = i;
    }
  }
  return best_index < 0 ? 0 : best_index;
}

// One greedy step over items [begin, end): c_i = (L[j] - sum_t coef[t] c_t) / denom and
// d2 -= c_i * c_i. `coef` holds c_t[j] for t < i. L[j] is `kj` (the kernel's row j), scaled as
// (sj * kj[p]) * scale[p] when `scale` is not NULL.
template <bool kScaled>
void UpdateRange(const float* kj, const float* scale, float sj, const float* c, int64_t n,
                 int64_t i, const float* coef, float denom, float* ci, float* d2, int64_t begin,
                 int64_t end) {
  int64_t p = begin;
#ifdef ATTNKIT_VISUAL_AVX2
  const __m256 vden = _mm256_set1_ps(denom);
  const __m256 vsj = _mm256_set1_ps(sj);
  auto row = [&](int64_t o) {
    const __m256 v = _mm256_loadu_ps(kj + o);
    if constexpr (kScaled) return _mm256_mul_ps(_mm256_mul_ps(vsj, v), _mm256_loadu_ps(scale + o));
    return v;
  };
  for (; p + 32 <= end; p += 32) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    const float* ct = c + p;
    for (int64_t t = 0; t < i; ++t, ct += n) {
      const __m256 w = _mm256_broadcast_ss(coef + t);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(w, _mm256_loadu_ps(ct)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(w, _mm256_loadu_ps(ct + 8)));
      a2 = _mm256_add_ps(a2, _mm256_mul_ps(w, _mm256_loadu_ps(ct + 16)));
      a3 = _mm256_add_ps(a3, _mm256_mul_ps(w, _mm256_loadu_ps(ct + 24)));
    }
    const __m256 acc[4] = {a0, a1, a2, a3};
    for (int q = 0; q < 4; ++q) {
      const int64_t o = p + 8 * q;
      const __m256 e = _mm256_div_ps(_mm256_sub_ps(row(o), acc[q]), vden);
      _mm256_storeu_ps(ci + o, e);
      const __m256 sq = _mm256_mul_ps(e, e);
      _mm256_storeu_ps(d2 + o, _mm256_sub_ps(_mm256_loadu_ps(d2 + o), sq));
    }
  }
  for (; p + 8 <= end; p += 8) {
    __m256 a0 = _mm256_setzero_ps();
    const float* ct = c + p;
    for (int64_t t = 0; t < i; ++t, ct += n) {
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_broadcast_ss(coef + t), _mm256_loadu_ps(ct)));
    }
    const __m256 e = _mm256_div_ps(_mm256_sub_ps(row(p), a0), vden);
    _mm256_storeu_ps(ci + p, e);
    _mm256_storeu_ps(d2 + p, _mm256_sub_ps(_mm256_loadu_ps(d2 + p), _mm256_mul_ps(e, e)));
  }
#endif
  for (; p < end; ++p) {
    float acc = 0.0f;
    const float* ct = c + p;
    for (int64_t t = 0; t < i; ++t, ct += n) {
      const float prod = coef[t] * *ct;
      acc = acc + prod;
    }
    float l = kj[p];
    if constexpr (kScaled) l = (sj * l) * scale[p];
    const float e = (l - acc) / denom;
    ci[p] = e;
    const float sq = e * e;
    d2[p] = d2[p] - sq;
  }
}

// Spins (politely) until `flag` satisfies `pred`.
template <typename T, typename Pred>
void SpinUntil(const std::atomic<T>& flag, Pred pred) {
  for (int spins = 0; !pred(flag.load(std::memory_order_acquire)); ++spins) {
#ifdef ATTNKIT_VISUAL_AVX2
    _mm_pause();
#endif
    if (spins > 2000) std::this_thread::yield();
  }
}

}  // namespace

int64_t DppGreedyMap(const float* kernel, const float* scale, int64_t n, int64_t ld, int64_t k,
                     bool guard, float* work, int64_t* order, int num_threads) {
  float* c = work;           // k x n
  float* d2 = work + k * n;  // n
  for (int64_t p = 0; p < n; ++p) {
    d2[p] = scale == nullptr ? kernel[p * ld + p] : (scale[p] * kernel[p * ld + p]) * scale[p];
  }
  // c_t[j] of the current pick, gathered so the inner loop reads one contiguous array.
  std::vector<float> coef(static_cast<size_t>(k));
  // The step's parameters, published to the helper threads through `step`.
  int64_t cur_i = 0;
  float cur_denom = 1.0f, cur_sj = 1.0f;
  const float* cur_kj = kernel;
  auto update = [&](int64_t begin, int64_t end) {
    float* ci = c + cur_i * n;
    if (scale != nullptr) {
      UpdateRange<true>(cur_kj, scale, cur_sj, c, n, cur_i, coef.data(), cur_denom, ci, d2, begin,
                        end);
    } else {
      UpdateRange<false>(cur_kj, scale, cur_sj, c, n, cur_i, coef.data(), cur_denom, ci, d2, begin,
                         end);
    }
  };
  // Large n: a team of threads splits every step's items (32-aligned ranges); they wait for the
  // next step by spinning, as a step takes microseconds.
  const int team = (num_threads > 1 && n >= 1024) ? std::min<int>(num_threads, 8) : 1;
  auto range = [&](int t) {
    const int64_t chunk = ((n + team - 1) / team + 31) / 32 * 32;
    return std::pair<int64_t, int64_t>(std::min(n, t * chunk), std::min(n, (t + 1) * chunk));
  };
  std::atomic<int64_t> step{-1};
  std::atomic<int> done{0};
  std::vector<std::thread> helpers;
  for (int t = 1; t < team; ++t) {
    try {
      helpers.emplace_back([&, t] {
        int64_t seen = -1;
        while (true) {
          SpinUntil(step, [&](int64_t s) { return s != seen; });
          seen = step.load(std::memory_order_acquire);
          if (seen == -2) return;
          const auto [b, e] = range(t);
          update(b, e);
          done.fetch_add(1, std::memory_order_acq_rel);
        }
      });
    } catch (...) {
      break;
    }
  }
  const int helpers_started = static_cast<int>(helpers.size());
  int64_t picked = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = ArgMax(d2, n);
    if (guard && i > 0 && !(d2[j] >= kGuard)) break;
    order[picked++] = j;
    for (int64_t t = 0; t < i; ++t) coef[t] = c[t * n + j];
    cur_i = i;
    cur_denom = std::sqrt(d2[j] + kEps);
    cur_kj = kernel + j * ld;
    cur_sj = scale == nullptr ? 1.0f : scale[j];
    if (helpers_started > 0) {
      done.store(0, std::memory_order_relaxed);
      step.store(i, std::memory_order_release);
      // Shares of helpers that could not be started are done here.
      const auto [b0, e0] = range(0);
      update(b0, e0);
      for (int t = helpers_started + 1; t < team; ++t) {
        const auto [b, e] = range(t);
        update(b, e);
      }
      SpinUntil(done, [&](int v) { return v == helpers_started; });
    } else {
      update(0, n);
    }
    d2[j] = kNegInf;
  }
  step.store(-2, std::memory_order_release);
  for (std::thread& h : helpers) h.join();
  return picked;
}

void MaxMinDiversity(const float* similarity, int64_t n, int64_t ld, int64_t k, float* work,
                     int64_t* order) {
  float* m1 = work;      // smallest distance per column, then the running min over picks
  float* m2 = work + n;  // second smallest distance per column
  const float inf = std::numeric_limits<float>::infinity();
  std::fill(m1, m1 + n, inf);
  std::fill(m2, m2 + n, inf);
  // First pick: the column whose second-smallest distance is largest (torch.topk(k=2) semantics:
  // equal values count twice).
  for (int64_t a = 0; a < n; ++a) {
    const float* row = similarity + a * ld;
    int64_t b = 0;
#ifdef ATTNKIT_VISUAL_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; b + 8 <= n; b += 8) {
      const __m256 v = _mm256_sub_ps(one, _mm256_loadu_ps(row + b));
      const __m256 v1 = _mm256_loadu_ps(m1 + b);
      const __m256 v2 = _mm256_loadu_ps(m2 + b);
      const __m256 lt1 = _mm256_cmp_ps(v, v1, _CMP_LT_OQ);
      // v < m1: (m1, m2) = (v, m1); else m2 = min(m2, v).
      _mm256_storeu_ps(m2 + b, _mm256_blendv_ps(_mm256_min_ps(v2, v), v1, lt1));
      _mm256_storeu_ps(m1 + b, _mm256_blendv_ps(v1, v, lt1));
    }
#endif
    for (; b < n; ++b) {
      const float v = 1.0f - row[b];
      if (v < m1[b]) {
        m2[b] = m1[b];
        m1[b] = v;
      } else if (v < m2[b]) {
        m2[b] = v;
      }
    }
  }
  int64_t j = ArgMax(m2, n);
  order[0] = j;
  // Running min over the picked rows of D; picked items are excluded with -inf.
  std::fill(m1, m1 + n, inf);
  for (int64_t i = 1; i <= k; ++i) {
    const float* row = similarity + j * ld;
    for (int64_t b = 0; b < n; ++b) {
      const float v = 1.0f - row[b];
      m1[b] = v < m1[b] ? v : m1[b];
    }
    m1[j] = kNegInf;  // earlier picks stay -inf: min(-inf, v) = -inf
    if (i == k) break;
    j = ArgMax(m1, n);
    order[i] = j;
  }
}

}  // namespace attnkit::kernels
