// Exact-rounding norm, dot-product GEMM and row sum for CDPruner (see visual_linalg.h). The vector
// and scalar paths round identically; the pragmas keep the compiler from contracting a*b+c.
#include "cpu/visual_linalg.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <functional>
#include <thread>
#include <type_traits>
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

float RowNorm(const float* x, int64_t d) {
  int64_t i = 0;
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#ifdef ATTNKIT_VISUAL_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= d; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    acc = _mm256_fmadd_ps(v, v, acc);
  }
  _mm256_storeu_ps(lanes, acc);
#else
  for (; i + 8 <= d; i += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] = std::fma(x[i + l], x[i + l], lanes[l]);
  }
#endif
  float s = lanes[0];
  for (int l = 1; l < 8; ++l) s = s + lanes[l];
  for (; i < d; ++i) s = std::fma(x[i], x[i], s);
  return std::sqrt(s);
}

constexpr int64_t kPanel = 16;     // columns per packed panel of B
constexpr int64_t kRows = 4;       // rows per micro tile
constexpr int64_t kRowBlock = 64;  // rows per work item
constexpr int64_t kDepth = 512;    // k per pass over a tile (the tile is re-loaded from C after)

// C tile rows [0, R) x 16 columns (row stride ldc) += A rows x packed panel over k in [k0, k1):
// acc starts at 0 (first pass) or the tile's stored partial sums, and adds each rounded product in
// k order, so splitting k into passes does not change a bit.
template <int R>
void MicroTile(const float* a, int64_t lda, const float* panel, int64_t k0, int64_t k1, float* c,
               int64_t ldc, bool first) {
#ifdef ATTNKIT_VISUAL_AVX2
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < 2; ++v) {
      acc[r][v] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8 * v);
    }
  }
  for (int64_t kk = k0; kk < k1; ++kk) {
    const __m256 b0 = _mm256_loadu_ps(panel + kk * kPanel);
    const __m256 b1 = _mm256_loadu_ps(panel + kk * kPanel + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 w = _mm256_broadcast_ss(a + r * lda + kk);
      acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_mul_ps(w, b0));
      acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_mul_ps(w, b1));
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < 2; ++v) _mm256_storeu_ps(c + r * ldc + 8 * v, acc[r][v]);
  }
#else
  for (int r = 0; r < R; ++r) {
    for (int64_t col = 0; col < kPanel; ++col) {
      float s = first ? 0.0f : c[r * ldc + col];
      for (int64_t kk = k0; kk < k1; ++kk) {
        const float p = a[r * lda + kk] * panel[kk * kPanel + col];
        s = s + p;
      }
      c[r * ldc + col] = s;
    }
  }
#endif
}

void Tile(int64_t rows, const float* a, int64_t lda, const float* panel, int64_t k0, int64_t k1,
          float* c, int64_t ldc, bool first) {
  switch (rows) {
    case 4:
      MicroTile<4>(a, lda, panel, k0, k1, c, ldc, first);
      break;
    case 3:
      MicroTile<3>(a, lda, panel, k0, k1, c, ldc, first);
      break;
    case 2:
      MicroTile<2>(a, lda, panel, k0, k1, c, ldc, first);
      break;
    default:
      MicroTile<1>(a, lda, panel, k0, k1, c, ldc, first);
      break;
  }
}

}  // namespace

int VisualThreads() {
  const int aten = at::get_num_threads();
  if (aten > 1) return aten;
  const unsigned hw = std::thread::hardware_concurrency();
  return static_cast<int>(std::clamp<unsigned>(hw, 1, 64));
}

void RunOnThreads(int num_threads, const std::function<void(int)>& body) {
  std::vector<std::thread> workers;
  int started = 1;
  for (int t = 1; t < num_threads; ++t) {
    try {
      workers.emplace_back(body, t);
      ++started;
    } catch (...) {
      break;  // no more threads: the calling thread takes the remaining shares
    }
  }
  for (int t = started; t < num_threads; ++t) body(t);
  body(0);
  for (std::thread& w : workers) w.join();
}

namespace {
// ATen's multi_row_sum cascade for one accumulator stream: `Acc` is float or an 8-lane array.
template <typename Acc, typename Load>
std::array<Acc, 4> MultiRowSum(int64_t size, Load load, Acc zero) {
  constexpr int kLevels = 4;
  int64_t ceil_log2 = 0;
  while ((int64_t{1} << ceil_log2) < size) ++ceil_log2;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2 / kLevels);
  const int64_t level_step = int64_t{1} << level_power;
  const int64_t level_mask = level_step - 1;
  Acc acc[kLevels][4];
  for (auto& level : acc) {
    for (auto& a : level) a = zero;
  }
  auto add = [](Acc& x, const Acc& y) {
    if constexpr (std::is_same_v<Acc, float>) {
      x = x + y;
    } else {
      for (size_t l = 0; l < x.size(); ++l) x[l] = x[l] + y[l];
    }
  };
  int64_t i = 0;
  for (; i + level_step <= size;) {
    for (int64_t j = 0; j < level_step; ++j, ++i) {
      for (int r = 0; r < 4; ++r) add(acc[0][r], load(i, r));
    }
    for (int j = 1; j < kLevels; ++j) {
      for (int r = 0; r < 4; ++r) {
        add(acc[j][r], acc[j - 1][r]);
        acc[j - 1][r] = zero;
      }
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size; ++i) {
    for (int r = 0; r < 4; ++r) add(acc[0][r], load(i, r));
  }
  for (int j = 1; j < kLevels; ++j) {
    for (int r = 0; r < 4; ++r) add(acc[0][r], acc[j][r]);
  }
  return {acc[0][0], acc[0][1], acc[0][2], acc[0][3]};
}

}  // namespace

void NormalizeRowsExact(const float* x, int64_t n, int64_t d, int64_t ldx, float* out,
                        float* out_t) {
  at::parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i) {
                       const float* row = x + i * ldx;
                       const float norm = RowNorm(row, d);
                       // A zero row divided by 1 stays zero (the reference would produce 0/0).
                       const float div = norm == 0.0f ? 1.0f : norm;
                       float* o = out + i * d;
                       for (int64_t j = 0; j < d; ++j) o[j] = row[j] / div;
                       if (out_t != nullptr) {
                         for (int64_t j = 0; j < d; ++j) out_t[j * n + i] = o[j];
                       }
                     }
                   });
}

void SequentialDotGemm(const float* a, int64_t lda, const float* bt, int64_t ldbt, int64_t m,
                       int64_t n, int64_t k, float* c, int64_t ldc, bool symmetric,
                       int num_threads) {
  if (m <= 0 || n <= 0) return;
  // B packed into panels of 16 columns, [panel][k][16], zero-padded past column n.
  const int64_t panels = (n + kPanel - 1) / kPanel;
  std::vector<float> packed(static_cast<size_t>(panels * std::max<int64_t>(k, 1) * kPanel), 0.0f);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t cols = std::min(kPanel, n - p * kPanel);
    float* dst = packed.data() + p * k * kPanel;
    for (int64_t kk = 0; kk < k; ++kk) {
      const float* src = bt + kk * ldbt + p * kPanel;
      for (int64_t col = 0; col < cols; ++col) dst[kk * kPanel + col] = src[col];
    }
  }
  const int64_t items = (m + kRowBlock - 1) / kRowBlock;
  auto item = [&](int64_t it) {
    const int64_t r0 = it * kRowBlock, r1 = std::min(m, r0 + kRowBlock);
    float scratch[kRows * kPanel];
    for (int64_t k0 = 0; k0 < std::max<int64_t>(k, 1); k0 += kDepth) {
      const int64_t k1 = std::min(k, k0 + kDepth);
      const bool first = k0 == 0;
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t col0 = p * kPanel, cols = std::min(kPanel, n - col0);
        const float* panel = packed.data() + p * k * kPanel;
        for (int64_t r = r0; r < r1; r += kRows) {
          // Symmetric: only panels reaching the micro tile's first row (the rest is mirrored).
          if (symmetric && col0 + kPanel <= r) continue;
          const int64_t rows = std::min(kRows, r1 - r);
          float* ct = c + r * ldc + col0;
          if (cols == kPanel) {
            Tile(rows, a + r * lda, lda, panel, k0, k1, ct, ldc, first);
          } else {
            for (int64_t i = 0; i < rows && !first; ++i) {
              for (int64_t j = 0; j < cols; ++j) scratch[i * kPanel + j] = ct[i * ldc + j];
            }
            Tile(rows, a + r * lda, lda, panel, k0, k1, scratch, kPanel, first);
            for (int64_t i = 0; i < rows; ++i) {
              for (int64_t j = 0; j < cols; ++j) ct[i * ldc + j] = scratch[i * kPanel + j];
            }
          }
        }
      }
    }
  };
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, items)));
  RunOnThreads(threads, [&](int t) {
    for (int64_t q = t; q < items; q += threads) {
      // Symmetric items have triangular cost: pair heavy (top) and light (bottom) items.
      item(symmetric ? ((q % 2 == 0) ? q / 2 : items - 1 - q / 2) : q);
    }
  });
  if (symmetric) {
    for (int64_t r = 0; r < m; ++r) {
      const int64_t computed_from = ((r / kRows) * kRows / kPanel) * kPanel;
      for (int64_t col = 0; col < computed_from; ++col) c[r * ldc + col] = c[col * ldc + r];
    }
  }
}

float AtenOrderSum(const float* x, int64_t n) {
  if (n < 8) {
    const int64_t size_ilp = n / 4;
    std::array<float, 4> p = MultiRowSum<float>(
        size_ilp, [&](int64_t i, int r) { return x[i * 4 + r]; }, 0.0f);
    for (int64_t i = size_ilp * 4; i < n; ++i) p[0] = p[0] + x[i];
    for (int r = 1; r < 4; ++r) p[0] = p[0] + p[r];
    return p[0];
  }
  using Vec = std::array<float, 8>;
  const int64_t vec_size = n / 8;
  const int64_t size_ilp = vec_size / 4;
  auto load = [&](int64_t v) {
    Vec out;
    for (int l = 0; l < 8; ++l) out[l] = x[v * 8 + l];
    return out;
  };
  std::array<Vec, 4> p = MultiRowSum<Vec>(
      size_ilp, [&](int64_t i, int r) { return load(i * 4 + r); }, Vec{});
  for (int64_t v = size_ilp * 4; v < vec_size; ++v) {
    const Vec lv = load(v);
    for (int l = 0; l < 8; ++l) p[0][l] = p[0][l] + lv[l];
  }
  for (int r = 1; r < 4; ++r) {
    for (int l = 0; l < 8; ++l) p[0][l] = p[0][l] + p[r][l];
  }
  float total = 0.0f;
  for (int64_t i = vec_size * 8; i < n; ++i) total = total + x[i];
  for (int l = 0; l < 8; ++l) total = total + p[0][l];
  return total;
}

namespace {

constexpr float kExpLog2e = 1.442695040888963407359924681001892137426645954152985934135449406931f;
constexpr float kExpLn2Hi = 0.693145751953125f;         // ln 2, upper bits (exact products)
constexpr float kExpLn2Lo = 1.428606765330187045e-06f;  // ln 2 - kExpLn2Hi
constexpr float kExpPoly[6] = {0.000198527617612853646278381f, 0.00139304355252534151077271f,
                               0.00833336077630519866943359f,  0.0416664853692054748535156f,
                               0.166666671633720397949219f,    0.5f};

// 2^q as a float, for -126 <= q <= 127.
inline float Pow2(int32_t q) {
  const uint32_t bits = static_cast<uint32_t>(q + 0x7f) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float ExpScalar(float x) {
  if (std::isnan(x)) return x;
  if (x < -104.0f) return 0.0f;
  if (100.0f < x) return std::numeric_limits<float>::infinity();
  const int32_t q = static_cast<int32_t>(std::nearbyint(x * kExpLog2e));
  const float qf = static_cast<float>(q);
  float s = std::fma(qf, -kExpLn2Hi, x);
  s = std::fma(qf, -kExpLn2Lo, s);
  float u = kExpPoly[0];
  for (int i = 1; i < 6; ++i) u = std::fma(u, s, kExpPoly[i]);
  u = 1.0f + std::fma(s * s, u, s);
  // 2^q in two factors: q reaches -150, below the smallest normal float's exponent.
  const int32_t h = q >> 1;
  return (u * Pow2(h)) * Pow2(q - h);
}

}  // namespace

void ExpU10(const float* x, int64_t n, float* out) {
  int64_t i = 0;
#ifdef ATTNKIT_VISUAL_AVX2
  const __m256 log2e = _mm256_set1_ps(kExpLog2e);
  const __m256 neg_hi = _mm256_set1_ps(-kExpLn2Hi), neg_lo = _mm256_set1_ps(-kExpLn2Lo);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256i bias = _mm256_set1_epi32(0x7f);
  for (; i + 8 <= n; i += 8) {
    const __m256 d = _mm256_loadu_ps(x + i);
    const __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(d, log2e));  // round to nearest even
    const __m256 qf = _mm256_cvtepi32_ps(q);
    __m256 s = _mm256_fmadd_ps(qf, neg_hi, d);
    s = _mm256_fmadd_ps(qf, neg_lo, s);
    __m256 u = _mm256_set1_ps(kExpPoly[0]);
    for (int p = 1; p < 6; ++p) u = _mm256_fmadd_ps(u, s, _mm256_set1_ps(kExpPoly[p]));
    u = _mm256_add_ps(one, _mm256_fmadd_ps(_mm256_mul_ps(s, s), u, s));
    const __m256i h = _mm256_srai_epi32(q, 1);
    const __m256 p0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    const __m256 p1 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(q, h), bias), 23));
    u = _mm256_mul_ps(_mm256_mul_ps(u, p0), p1);
    u = _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_set1_ps(-104.0f), _CMP_LT_OQ), u);
    u = _mm256_blendv_ps(u, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                         _mm256_cmp_ps(_mm256_set1_ps(100.0f), d, _CMP_LT_OQ));
    _mm256_storeu_ps(out + i, u);
  }
#endif
  for (; i < n; ++i) out[i] = ExpScalar(x[i]);
}

}  // namespace attnkit::kernels
