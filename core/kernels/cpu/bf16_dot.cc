#include "cpu/bf16_dot.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#define ATTNKIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

namespace attnkit::kernels::bf16_dot {
namespace {

constexpr int64_t kLanes = 16;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The bfloat16 nearest a float (round to nearest even), as c10::BFloat16 rounds.
uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

template <int R>
ATTNKIT_BF16_TARGET void ScoresRows(int64_t pairs, const uint16_t* q, int64_t ldq, int64_t d,
                                    const uint32_t* panel, int64_t cols, float scale, float* s,
                                    int64_t lds) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t c = 0; c < pairs; ++c) {
    const __m512bh kv = (__m512bh)_mm512_loadu_si512(panel + c * kLanes);
    for (int r = 0; r < R; ++r) {
      uint32_t pair;
      const uint16_t* row = q + r * ldq + 2 * c;
      if (2 * c + 1 < d) {
        std::memcpy(&pair, row, 4);
      } else {
        pair = row[0];  // odd d: the padding channel is zero
      }
      acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32(static_cast<int>(pair)), kv);
    }
  }
  const __mmask16 mask = cols >= kLanes ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  const __m512 sv = _mm512_set1_ps(scale);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(s + r * lds, mask, _mm512_mul_ps(acc[r], sv));
}

template <int R>
ATTNKIT_BF16_TARGET void PVRows(int64_t pairs, const uint32_t* p_pairs, int64_t ldpp,
                                const uint32_t* panel, int64_t cols, float* acc, int64_t lda) {
  const __mmask16 mask = cols >= kLanes ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  __m512 a[R];
  for (int r = 0; r < R; ++r) a[r] = _mm512_maskz_loadu_ps(mask, acc + r * lda);
  for (int64_t c = 0; c < pairs; ++c) {
    const __m512bh vv = (__m512bh)_mm512_loadu_si512(panel + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m512i pp = _mm512_set1_epi32(static_cast<int>(p_pairs[r * ldpp + c]));
      a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)pp, vv);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(acc + r * lda, mask, a[r]);
}

}  // namespace

bool Bf16DotAvailable() {
  static const bool available =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return available;
}

int64_t PackedKeysWords(int64_t n, int64_t d) {
  return CeilDiv(n, kLanes) * CeilDiv(d, 2) * kLanes;
}

int64_t PackedValuesWords(int64_t n, int64_t dv) {
  return CeilDiv(dv, kLanes) * CeilDiv(n, 2) * kLanes;
}

void PackKeysBf16(const uint16_t* k, int64_t ldk, int64_t n, int64_t d, int64_t offset,
                  int64_t total, uint32_t* packed) {
  const int64_t pairs = CeilDiv(d, 2);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t key = offset + j, p = key / kLanes, lane = key % kLanes;
    uint32_t* dst = packed + p * pairs * kLanes + lane;
    const uint16_t* row = k + j * ldk;
    for (int64_t c = 0; c < pairs; ++c) {
      const uint32_t lo = row[2 * c], hi = 2 * c + 1 < d ? row[2 * c + 1] : 0;
      dst[c * kLanes] = lo | (hi << 16);
    }
  }
  // Lanes past the last key of the last panel: zero.
  const int64_t end = offset + n;
  if (end == total && end % kLanes != 0) {
    const int64_t p = end / kLanes;
    for (int64_t c = 0; c < pairs; ++c) {
      for (int64_t lane = end % kLanes; lane < kLanes; ++lane)
        packed[(p * pairs + c) * kLanes + lane] = 0;
    }
  }
}

void PackValuesBf16(const uint16_t* v, int64_t ldv, int64_t n, int64_t dv, uint32_t* packed) {
  const int64_t pairs = CeilDiv(n, 2), panels = CeilDiv(dv, kLanes);
  for (int64_t p = 0; p < panels; ++p) {
    for (int64_t c = 0; c < pairs; ++c) {
      uint32_t* dst = packed + (p * pairs + c) * kLanes;
      const uint16_t* r0 = v + (2 * c) * ldv;
      const uint16_t* r1 = 2 * c + 1 < n ? v + (2 * c + 1) * ldv : nullptr;
      for (int64_t lane = 0; lane < kLanes; ++lane) {
        const int64_t col = p * kLanes + lane;
        if (col >= dv) {
          dst[lane] = 0;
          continue;
        }
        const uint32_t lo = r0[col], hi = r1 != nullptr ? r1[col] : 0;
        dst[lane] = lo | (hi << 16);
      }
    }
  }
}

void ScoresBf16(int64_t m, int64_t n, int64_t d, const uint16_t* q, int64_t ldq,
                const uint32_t* kpacked, float scale, float* scores, int64_t lds) {
  const int64_t pairs = CeilDiv(d, 2);
  for (int64_t p = 0; p * kLanes < n; ++p) {
    const uint32_t* panel = kpacked + p * pairs * kLanes;
    const int64_t cols = std::min(kLanes, n - p * kLanes);
    float* s = scores + p * kLanes;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8)
      ScoresRows<8>(pairs, q + i * ldq, ldq, d, panel, cols, scale, s + i * lds, lds);
    for (; i < m; ++i)
      ScoresRows<1>(pairs, q + i * ldq, ldq, d, panel, cols, scale, s + i * lds, lds);
  }
}

void AccumulatePVBf16(int64_t m, int64_t n, int64_t dv, const float* p, int64_t ldp,
                      const uint32_t* vpacked, float* acc, int64_t lda) {
  const int64_t pairs = CeilDiv(n, 2);
  // The probabilities as bfloat16 pairs of consecutive keys, one row per query.
  thread_local std::vector<uint32_t> p_pairs;
  p_pairs.resize(static_cast<size_t>(m * pairs));
  for (int64_t i = 0; i < m; ++i) {
    const float* row = p + i * ldp;
    for (int64_t c = 0; c < pairs; ++c) {
      const uint32_t lo = ToBf16(row[2 * c]);
      const uint32_t hi = 2 * c + 1 < n ? ToBf16(row[2 * c + 1]) : 0;
      p_pairs[i * pairs + c] = lo | (hi << 16);
    }
  }
  for (int64_t panel_index = 0; panel_index * kLanes < dv; ++panel_index) {
    const uint32_t* panel = vpacked + panel_index * pairs * kLanes;
    const int64_t cols = std::min(kLanes, dv - panel_index * kLanes);
    float* a = acc + panel_index * kLanes;
    int64_t i = 0;
    for (; i + 8 <= m; i += 8)
      PVRows<8>(pairs, p_pairs.data() + i * pairs, pairs, panel, cols, a + i * lda, lda);
    for (; i < m; ++i)
      PVRows<1>(pairs, p_pairs.data() + i * pairs, pairs, panel, cols, a + i * lda, lda);
  }
}

}  // namespace attnkit::kernels::bf16_dot
