#include "cpu/quest.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include <immintrin.h>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace attnkit::kernels {
namespace {

template <typename T>
void Extend(const T* rows, int d, int64_t from, int64_t to, float* lo, float* hi) {
  for (int64_t i = from; i < to; ++i) {
    const T* row = rows + i * d;
    for (int c = 0; c < d; ++c) {
      const float x = static_cast<float>(row[c]);
      lo[c] = std::min(lo[c], x);
      hi[c] = std::max(hi[c], x);
    }
  }
}

}  // namespace

void ExtendKeySummary(RowFormat format, const char* keys, int head_dim, int64_t from, int64_t to,
                      float* summary) {
  float* lo = summary;
  float* hi = summary + head_dim;
  if (from == 0) {
    std::fill(lo, lo + head_dim, std::numeric_limits<float>::infinity());
    std::fill(hi, hi + head_dim, -std::numeric_limits<float>::infinity());
  }
  switch (format) {
    case RowFormat::kFloat16:
      return Extend(reinterpret_cast<const c10::Half*>(keys), head_dim, from, to, lo, hi);
    case RowFormat::kBFloat16:
      return Extend(reinterpret_cast<const c10::BFloat16*>(keys), head_dim, from, to, lo, hi);
    default:
      return Extend(reinterpret_cast<const float*>(keys), head_dim, from, to, lo, hi);
  }
}

namespace {

int quest_max_isa = 2;  // SetQuestMaxIsaForTesting

// One page's bound for `rows` query rows split by sign (pos = max(q, 0), neg = min(q, 0)):
// the largest over the rows of sum_c pos_c * hi_c + neg_c * lo_c.
float PageBoundScalar(const float* pos, const float* neg, int rows, int d, const float* lo,
                      const float* hi) {
  float best = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    const float* p = pos + static_cast<int64_t>(r) * d;
    const float* n = neg + static_cast<int64_t>(r) * d;
    float acc = 0.0f;
    for (int c = 0; c < d; ++c) acc += p[c] * hi[c] + n[c] * lo[c];
    best = std::max(best, acc);
  }
  return best;
}

__attribute__((target("avx2,fma"))) float PageBoundAvx2(const float* pos, const float* neg,
                                                        int rows, int d, const float* lo,
                                                        const float* hi) {
  float best = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    const float* p = pos + static_cast<int64_t>(r) * d;
    const float* n = neg + static_cast<int64_t>(r) * d;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int c = 0;
    for (; c + 16 <= d; c += 16) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(p + c), _mm256_loadu_ps(hi + c), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(p + c + 8), _mm256_loadu_ps(hi + c + 8), a1);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(n + c), _mm256_loadu_ps(lo + c), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(n + c + 8), _mm256_loadu_ps(lo + c + 8), a1);
    }
    const __m256 sum8 = _mm256_add_ps(a0, a1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float acc = _mm_cvtss_f32(s4);
    for (; c < d; ++c) acc += p[c] * hi[c] + n[c] * lo[c];
    best = std::max(best, acc);
  }
  return best;
}

__attribute__((target("avx512f"))) float PageBoundAvx512(const float* pos, const float* neg,
                                                         int rows, int d, const float* lo,
                                                         const float* hi) {
  float best = -std::numeric_limits<float>::infinity();
  for (int r = 0; r < rows; ++r) {
    const float* p = pos + static_cast<int64_t>(r) * d;
    const float* n = neg + static_cast<int64_t>(r) * d;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 32 <= d; c += 32) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(p + c), _mm512_loadu_ps(hi + c), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(p + c + 16), _mm512_loadu_ps(hi + c + 16), a1);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(n + c), _mm512_loadu_ps(lo + c), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(n + c + 16), _mm512_loadu_ps(lo + c + 16), a1);
    }
    // Lanes summed through memory: GCC 12's _mm512_reduce_add_ps trips -Wmaybe-uninitialized.
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, _mm512_add_ps(a0, a1));
    float acc = 0.0f;
    for (float x : lanes) acc += x;
    for (; c < d; ++c) acc += p[c] * hi[c] + n[c] * lo[c];
    best = std::max(best, acc);
  }
  return best;
}

using PageBoundFn = float (*)(const float*, const float*, int, int, const float*, const float*);

PageBoundFn PickPageBound() {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (quest_max_isa >= 2 && avx512) return PageBoundAvx512;
  if (quest_max_isa >= 1 && avx2) return PageBoundAvx2;
  return PageBoundScalar;
}

}  // namespace

void SetQuestMaxIsaForTesting(int level) { quest_max_isa = level; }

const char* QuestBoundPath() {
  const PageBoundFn f = PickPageBound();
  return f == PageBoundAvx512 ? "avx512" : f == PageBoundAvx2 ? "avx2" : "scalar";
}

void QuestPageBounds(const float* q, int rows, int head_dim, const float* const* summaries,
                     int64_t pages, float* bounds) {
  const int d = head_dim;
  // q split by sign once: q_c * max_c where q_c > 0, q_c * min_c otherwise (q_c = 0 adds 0).
  std::vector<float> positive(static_cast<size_t>(rows) * d), negative(positive.size());
  for (int64_t i = 0; i < static_cast<int64_t>(rows) * d; ++i) {
    positive[i] = q[i] > 0.0f ? q[i] : 0.0f;
    negative[i] = q[i] > 0.0f ? 0.0f : q[i];
  }
  const PageBoundFn bound = PickPageBound();
  for (int64_t p = 0; p < pages; ++p) {
    bounds[p] = bound(positive.data(), negative.data(), rows, d, summaries[p], summaries[p] + d);
  }
}

int64_t QuestPagesToRead(int64_t length, int64_t pages, int page_size, int64_t token_budget,
                         int64_t start_pages, int64_t recent_pages) {
  const int64_t budget = std::min(length, token_budget);
  int64_t n = std::min(std::max<int64_t>(3, budget / page_size), pages);
  return std::max(n, std::min(pages, start_pages + recent_pages));
}

std::vector<int64_t> QuestSelectPages(const float* bounds, int64_t pages, int64_t to_read,
                                      int64_t start_pages, int64_t recent_pages) {
  std::vector<char> chosen(static_cast<size_t>(pages), 0);
  int64_t count = 0;
  for (int64_t p = 0; p < pages; ++p) {
    if (p < start_pages || p >= pages - recent_pages) {
      chosen[p] = 1;
      ++count;
    }
  }
  if (count < to_read) {
    std::vector<int64_t> rest;
    rest.reserve(static_cast<size_t>(pages - count));
    for (int64_t p = 0; p < pages; ++p) {
      if (!chosen[p]) rest.push_back(p);
    }
    const int64_t k = std::min<int64_t>(to_read - count, static_cast<int64_t>(rest.size()));
    auto better = [&](int64_t a, int64_t b) {
      return bounds[a] > bounds[b] || (bounds[a] == bounds[b] && a < b);
    };
    std::nth_element(rest.begin(), rest.begin() + (k - 1), rest.end(), better);
    for (int64_t i = 0; i < k; ++i) chosen[rest[i]] = 1;
  }
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(to_read));
  for (int64_t p = 0; p < pages; ++p) {
    if (chosen[p]) out.push_back(p);
  }
  return out;
}

int64_t TokensInPages(const std::vector<int64_t>& slots, int64_t length, int page_size) {
  int64_t n = 0;
  for (const int64_t p : slots) n += std::min<int64_t>(page_size, length - p * page_size);
  return n;
}

at::Tensor QuestReferencePages(const at::Tensor& q_in, const at::Tensor& keys_in, int64_t page_size,
                               int64_t token_budget, int64_t start_pages, int64_t recent_pages) {
  const at::Tensor q = q_in.to(at::kFloat), keys = keys_in.to(at::kFloat);
  const int64_t L = keys.size(0), d = keys.size(1), P = page_size;
  const int64_t pages = (L + P - 1) / P, pad = pages * P - L;
  // The reference: keys times sign(q) (-1 where q <= 0), padded with the lowest float, the
  // chunk's amax per channel, then |q| times that, summed over the channels.
  const at::Tensor sign = at::where(q > 0, at::ones_like(q), -at::ones_like(q));  // [rows, d]
  const at::Tensor signed_keys = keys.unsqueeze(0) * sign.unsqueeze(1);           // [rows, L, d]
  const at::Tensor padded = at::cat(
      {signed_keys, at::full({q.size(0), pad, d}, std::numeric_limits<float>::lowest())}, 1);
  const at::Tensor chunk_max = padded.view({q.size(0), pages, P, d}).amax(2);  // [rows, pages, d]
  const at::Tensor bound =
      at::matmul(chunk_max, (q * sign).unsqueeze(2)).squeeze(2);  // [rows, pages]
  const at::Tensor score = bound.amax(0);                         // grouped queries: the largest
  at::Tensor chosen = at::zeros({pages}, at::kBool);
  const int64_t to_read =
      QuestPagesToRead(L, pages, static_cast<int>(P), token_budget, start_pages, recent_pages);
  int64_t forced = 0;
  for (int64_t p = 0; p < pages; ++p) {
    if (p < start_pages || p >= pages - recent_pages) {
      chosen[p] = true;
      ++forced;
    }
  }
  if (to_read > forced) {
    const at::Tensor free_score = at::where(chosen, at::full_like(score, -INFINITY), score);
    const at::Tensor top = std::get<1>(free_score.topk(to_read - forced));
    chosen.index_fill_(0, top, true);
  }
  return chosen;
}

}  // namespace attnkit::kernels
