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

// Asks for the first `limit` bytes of the next page, whose address the hardware prefetcher
// cannot guess.
inline void Prefetch(const char* page, int64_t bytes, int64_t limit = 1024) {
  if (page == nullptr) return;
  for (int64_t off = 0; off < std::min<int64_t>(bytes, limit); off += 64)
    __builtin_prefetch(page + off);
}
// KIVI pages are small (a few KiB) and read from their end first (the scales and minimums):
// the whole next page is asked for.
constexpr int64_t kKiviPrefetchBytes = 8192;

inline float RoundHalfScalar(float x) { return static_cast<float>(c10::Half(x)); }

inline int SegmentPageSize(const PagedSegment& s, const PagedGroupArgs& a) {
  return s.page_size > 0 ? s.page_size : a.page_size;
}

// A segment's key row width and the query rows its keys are dotted with (ThinK's kept channels).
inline int KeyDim(const PagedSegment& s, const PagedGroupArgs& a) {
  return s.key_dim > 0 ? s.key_dim : a.head_dim;
}
inline const float* KeyQ(const PagedSegment& s, const PagedGroupArgs& a) {
  return s.q != nullptr ? s.q : a.q;
}

// The plain path (any head dim and group): each row converted to floats, then scalar loops.
void RowToFloat(const PagedSegment& s, bool values, int64_t i, const PagedGroupArgs& a,
                float* buffer) {
  const int P = SegmentPageSize(s, a);
  const int64_t pos = s.first + i;
  ReadPageRow(values ? s.value_format : s.key_format, (values ? s.values : s.keys)[pos / P], P,
              values ? a.head_dim : KeyDim(s, a), a.group_size, pos % P, buffer);
}

void ScalarKeys(const PagedSegment& s, int64_t t_base, const PagedGroupArgs& a, int rows,
                float* scores) {
  const int d = KeyDim(s, a);
  const float* q = KeyQ(s, a);
  std::vector<float> k(d);
  for (int64_t i = 0; i < s.length; ++i) {
    RowToFloat(s, false, i, a, k.data());
    for (int r = 0; r < rows; ++r) {
      const float* qr = q + static_cast<int64_t>(r) * d;
      float acc = 0.0f;
      for (int j = 0; j < d; ++j) acc += qr[j] * k[j];
      scores[static_cast<int64_t>(r) * a.length + t_base + i] = acc * a.scale;
    }
  }
}

void ScalarValues(const PagedSegment& s, int64_t t_base, const PagedGroupArgs& a, int rows,
                  const float* probs) {
  const int d = a.head_dim;
  std::vector<float> v(d);
  for (int64_t i = 0; i < s.length; ++i) {
    RowToFloat(s, true, i, a, v.data());
    for (int r = 0; r < rows; ++r) {
      const float p = probs[static_cast<int64_t>(r) * a.length + t_base + i];
      float* o = a.out + static_cast<int64_t>(r) * d;
      for (int j = 0; j < d; ++j) o[j] += p * v[j];
    }
  }
}

#ifdef ATTNKIT_AVX2
namespace avx2 {
#define V __m256
#define W 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOADU(p) _mm256_loadu_ps(p)
#define VSTOREU(p, v) _mm256_storeu_ps(p, v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VHALF(v) (v)
#define VLOAD_F16(p) _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))
#define VLOAD_BF16(p)                    \
  _mm256_castsi256_ps(_mm256_slli_epi32( \
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16))
#define VLOAD_I8(p) \
  _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))))
// KIVI codes as table indices (only the low 4 bits of a lane count) and the 16-entry table of
// a group's dequantized values: lanes below 8 in `lo`, the rest in `hi`.
#define VI __m256i
inline __m256i CodesToIndices(__m128i bytes, __m128i spread, __m256i shifts) {
  return _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_shuffle_epi8(bytes, spread)), shifts);
}
inline __m256i LoadIndices4(const uint8_t* p) {
  int32_t word;
  std::memcpy(&word, p, 4);
  return CodesToIndices(_mm_cvtsi32_si128(word),
                        _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0),
                        _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
}
inline __m256i LoadIndices2(const uint8_t* p) {
  int16_t word;
  std::memcpy(&word, p, 2);
  return CodesToIndices(_mm_cvtsi32_si128(static_cast<uint16_t>(word)),
                        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                        _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
}
// W bytes from p, one per lane.
inline __m256i LoadBytes(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
inline __m256i ShiftRight(__m256i x, int n) { return _mm256_srli_epi32(x, n); }
struct KiviTable {
  __m256 lo, hi;
};
// Entry i is KiviValue(i % 2^BITS, scale, mn).
template <int BITS>
inline KiviTable MakeKiviTable(float scale, float mn) {
  const __m256 s = _mm256_set1_ps(scale), m = _mm256_set1_ps(mn);
  auto entries = [&](__m256 codes) { return _mm256_fmadd_ps(codes, s, m); };
  if constexpr (BITS == 4) {
    return {entries(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)),
            entries(_mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15))};
  } else {
    const __m256 t = entries(_mm256_setr_ps(0, 1, 2, 3, 0, 1, 2, 3));
    return {t, t};
  }
}
inline __m256 KiviLookup(const KiviTable& t, __m256i idx) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, idx), _mm256_permutevar8x32_ps(t.hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}
// Lanes [a0 b0 a1 b1 ...]: the first W (ZipLo) and the last W (ZipHi) of a and b interleaved.
inline __m256 ZipLo(__m256 a, __m256 b) {
  return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x20);
}
inline __m256 ZipHi(__m256 a, __m256 b) {
  return _mm256_permute2f128_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b), 0x31);
}
// 2W bfloat16 values from p: the even-indexed ones (as floats) in *even, the odd ones in *odd.
inline void LoadBf16Pairs(const uint16_t* p, __m256* even, __m256* odd) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *even = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
  *odd = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(-65536)));
}
#include "cpu/paged_attention_isa.inc"  // NOLINT(build/include)
#undef V
#undef W
#undef VZERO
#undef VSET1
#undef VLOADU
#undef VSTOREU
#undef VFMA
#undef VMUL
#undef VADD
#undef VHALF
#undef VLOAD_F16
#undef VLOAD_BF16
#undef VLOAD_I8
#undef VI
}  // namespace avx2

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12's _mm512_undefined_* (x = x) trips -Wmaybe-uninitialized: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define ATTNKIT_AVX512 1
#elif defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"))), \
                             apply_to = function)
#define ATTNKIT_AVX512 1
#endif
#ifdef ATTNKIT_AVX512
namespace avx512 {
#define V __m512
#define W 16
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOADU(p) _mm512_loadu_ps(p)
#define VSTOREU(p, v) _mm512_storeu_ps(p, v)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VHALF(v) _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1))
#define VLOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))
#define VLOAD_BF16(p)                    \
  _mm512_castsi512_ps(_mm512_slli_epi32( \
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16))
#define VLOAD_I8(p) \
  _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))
#define VI __m512i
inline __m512i CodesToIndices(__m128i bytes, __m128i spread, __m512i shifts) {
  return _mm512_srlv_epi32(_mm512_cvtepu8_epi32(_mm_shuffle_epi8(bytes, spread)), shifts);
}
inline __m512i LoadIndices4(const uint8_t* p) {
  int64_t word;
  std::memcpy(&word, p, 8);
  return CodesToIndices(_mm_cvtsi64_si128(word),
                        _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7),
                        _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4));
}
inline __m512i LoadIndices2(const uint8_t* p) {
  int32_t word;
  std::memcpy(&word, p, 4);
  return CodesToIndices(_mm_cvtsi32_si128(word),
                        _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                        _mm512_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6, 0, 2, 4, 6));
}
inline __m512i LoadBytes(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline __m512i ShiftRight(__m512i x, int n) { return _mm512_srli_epi32(x, n); }
struct KiviTable {
  __m512 t;
};
template <int BITS>
inline KiviTable MakeKiviTable(float scale, float mn) {
  const __m512 codes = BITS == 4
                           ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
                           : _mm512_setr_ps(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
  return {_mm512_fmadd_ps(codes, _mm512_set1_ps(scale), _mm512_set1_ps(mn))};
}
inline __m512 KiviLookup(const KiviTable& t, __m512i idx) {
  return _mm512_permutexvar_ps(idx, t.t);
}
inline __m512 ZipLo(__m512 a, __m512 b) {
  return _mm512_permutex2var_ps(
      a, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), b);
}
inline __m512 ZipHi(__m512 a, __m512 b) {
  return _mm512_permutex2var_ps(
      a, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), b);
}
inline void LoadBf16Pairs(const uint16_t* p, __m512* even, __m512* odd) {
  const __m512i x = _mm512_loadu_si512(p);
  *even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
  *odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(-65536)));
}
#include "cpu/paged_attention_isa.inc"  // NOLINT(build/include)
#undef V
#undef W
#undef VZERO
#undef VSET1
#undef VLOADU
#undef VSTOREU
#undef VFMA
#undef VMUL
#undef VADD
#undef VHALF
#undef VLOAD_F16
#undef VLOAD_BF16
#undef VLOAD_I8
#undef VI
}  // namespace avx512
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#pragma GCC pop_options
#elif defined(__clang__)
#pragma clang attribute pop
#endif
#endif  // ATTNKIT_AVX2

int max_isa_for_testing = 2;

bool CpuHasAvx512() {
#if defined(ATTNKIT_AVX512)
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
#else
  return false;
#endif
}

// 2: AVX-512, 1: AVX2, 0: plain loops.
int PathFor(const PagedGroupArgs& a) {
  // Grouped value rows (int8, KIVI) take one scale per vector: the group must be whole vectors.
  const RowFormat vf = a.main.value_format, kf = a.main.key_format;
  const bool grouped = kf == RowFormat::kInt8 || vf == RowFormat::kInt8 || vf == RowFormat::kInt4 ||
                       vf == RowFormat::kInt2 || kf == RowFormat::kInt4 || kf == RowFormat::kInt2;
  // KIVI keys are read per channel, values per token: the other layouts take the plain path.
  if (kf == RowFormat::kInt4 || kf == RowFormat::kInt2 || IsPerChannel(vf)) return 0;
  if (a.head_dim > 1024) return 0;
  auto fits = [&](int w) { return a.head_dim % w == 0 && (!grouped || a.group_size % w == 0); };
#ifdef ATTNKIT_AVX2
  if (max_isa_for_testing >= 2 && CpuHasAvx512() && fits(16)) return 2;
  if (max_isa_for_testing >= 1 && fits(8)) return 1;
#endif
  return 0;
}

void Run(const PagedGroupArgs& a) {
  const int64_t L = a.length, T = a.queries;
  const int rows = a.rows_per_query * static_cast<int>(T);
  float* scores = a.scratch;  // [rows, L]
  const int path = PathFor(a);
  PagedSegment main = a.main;
  main.first = 0;
  main.length = L - a.residual.length;
  const PagedSegment* segments[2] = {&main, &a.residual};
  const int64_t bases[2] = {0, main.length};
  // Pass 1: every key row once, dotted with every query row. ThinK's key rows (padded to a
  // multiple of 8 channels) that AVX-512's vectors do not divide take the AVX2 key loop, rows no
  // vector divides the plain one (the value pass keeps its path).
  for (int si = 0; si < 2; ++si) {
    if (segments[si]->length == 0) continue;
    const int key_dim = KeyDim(*segments[si], a);
    if (key_dim % (path == 2 ? 16 : 8) != 0) {
#ifdef ATTNKIT_AVX2
      if (path == 2 && key_dim % 8 == 0) {
        avx2::KeyPass(*segments[si], bases[si], a, rows, scores);
        continue;
      }
#endif
      ScalarKeys(*segments[si], bases[si], a, rows, scores);
      continue;
    }
#ifdef ATTNKIT_AVX2
#ifdef ATTNKIT_AVX512
    if (path == 2) {
      avx512::KeyPass(*segments[si], bases[si], a, rows, scores);
      continue;
    }
#endif
    if (path >= 1) {
      avx2::KeyPass(*segments[si], bases[si], a, rows, scores);
      continue;
    }
#endif
    ScalarKeys(*segments[si], bases[si], a, rows, scores);
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
  std::fill(a.out, a.out + static_cast<int64_t>(rows) * a.head_dim, 0.0f);
  for (int si = 0; si < 2; ++si) {
    if (segments[si]->length == 0) continue;
#ifdef ATTNKIT_AVX2
#ifdef ATTNKIT_AVX512
    if (path == 2) {
      avx512::ValuePass(*segments[si], bases[si], a, rows, scores);
      continue;
    }
#endif
    if (path >= 1) {
      avx2::ValuePass(*segments[si], bases[si], a, rows, scores);
      continue;
    }
#endif
    ScalarValues(*segments[si], bases[si], a, rows, scores);
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

RowFormat RowFormatOf(at::ScalarType dtype) {
  switch (dtype) {
    case at::kHalf:
      return RowFormat::kFloat16;
    case at::kBFloat16:
      return RowFormat::kBFloat16;
    case at::kChar:
      return RowFormat::kInt8;
    default:
      return RowFormat::kFloat32;
  }
}

void ReadPageRow(RowFormat format, const char* page, int page_size, int head_dim, int group_size,
                 int64_t row, float* x) {
  const int d = head_dim, P = page_size;
  switch (format) {
    case RowFormat::kFloat16: {
      const auto* src = reinterpret_cast<const c10::Half*>(page) + row * d;
      for (int j = 0; j < d; ++j) x[j] = static_cast<float>(src[j]);
      return;
    }
    case RowFormat::kBFloat16: {
      const auto* src = reinterpret_cast<const c10::BFloat16*>(page) + row * d;
      for (int j = 0; j < d; ++j) x[j] = static_cast<float>(src[j]);
      return;
    }
    case RowFormat::kInt8: {
      const auto* scales = reinterpret_cast<const c10::Half*>(page + static_cast<int64_t>(P) * d) +
                           row * (d / group_size);
      DequantizeRowInt8(reinterpret_cast<const int8_t*>(page) + row * d, scales, d, group_size, x);
      return;
    }
    case RowFormat::kInt4:
    case RowFormat::kInt2: {
      const int bits = KiviBits(format), ng = d / group_size;
      const int64_t row_bytes = static_cast<int64_t>(d) * bits / 8;
      const auto* codes = reinterpret_cast<const uint8_t*>(page) + row * row_bytes;
      const auto* scales = reinterpret_cast<const c10::Half*>(page + P * row_bytes);
      const c10::Half* mins = scales + static_cast<int64_t>(P) * ng;
      for (int j = 0; j < d; ++j) {
        const int64_t g = row * ng + j / group_size;
        x[j] = KiviValue(KiviCode(codes, j, bits), static_cast<float>(scales[g]),
                         static_cast<float>(mins[g]));
      }
      return;
    }
    case RowFormat::kInt4Channel:
    case RowFormat::kInt2Channel: {
      const int bits = KiviBits(format);
      const int64_t channel_bytes = static_cast<int64_t>(P) * bits / 8;
      const auto* scales = reinterpret_cast<const c10::Half*>(page + d * channel_bytes);
      const c10::Half* mins = scales + d;
      for (int c = 0; c < d; ++c) {
        const auto* codes = reinterpret_cast<const uint8_t*>(page) + c * channel_bytes;
        x[c] = KiviValue(KiviCode(codes, row, bits), static_cast<float>(scales[c]),
                         static_cast<float>(mins[c]));
      }
      return;
    }
    default:
      std::memcpy(x, reinterpret_cast<const float*>(page) + row * d, d * sizeof(float));
  }
}

void QuantizeKivi(const float* x, int64_t n, int64_t stride, int bits, uint8_t* codes,
                  int64_t first_code, c10::Half* scale, c10::Half* mn) {
  constexpr float kSaturate = 32752.0f;  // half of float16's range: max - min stays finite
  const int max_int = (1 << bits) - 1;
  auto value = [&](int64_t i) {
    return RoundHalfScalar(std::min(kSaturate, std::max(-kSaturate, x[i * stride])));
  };
  float lo = value(0), hi = lo;
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, value(i));
    hi = std::max(hi, value(i));
  }
  const float s = RoundHalfScalar(RoundHalfScalar(hi - lo) / static_cast<float>(max_int));
  *scale = c10::Half(s);
  *mn = c10::Half(lo);
  for (int64_t i = 0; i < n; ++i) {
    int code = 0;
    if (s > 0.0f) {
      const float u = RoundHalfScalar(RoundHalfScalar(value(i) - lo) / s);
      code = static_cast<int>(
          std::nearbyint(std::min(static_cast<float>(max_int), std::max(0.0f, u))));
    }
    const int64_t bit = (first_code + i) * bits;
    uint8_t& byte = codes[bit / 8];
    const int shift = static_cast<int>(bit % 8);
    byte = static_cast<uint8_t>((byte & ~(max_int << shift)) | (code << shift));
  }
}

float DequantizeKivi(int code, c10::Half scale, c10::Half mn) {
  return RoundHalfScalar(RoundHalfScalar(static_cast<float>(code) * static_cast<float>(scale)) +
                         static_cast<float>(mn));
}

void QuantizeRowInt8(const float* x, int head_dim, int group_size, int8_t* q, c10::Half* scales) {
  for (int g0 = 0; g0 < head_dim; g0 += group_size) {
    float m = 0.0f;
    for (int j = g0; j < g0 + group_size; ++j) m = std::max(m, std::fabs(x[j]));
    const c10::Half scale_h(std::min(m / 127.0f, 65504.0f));
    const float scale = static_cast<float>(scale_h);
    scales[g0 / group_size] = scale_h;
    for (int j = g0; j < g0 + group_size; ++j) {
      const float r = scale > 0.0f ? std::nearbyint(x[j] / scale) : 0.0f;
      q[j] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, r)));
    }
  }
}

void DequantizeRowInt8(const int8_t* q, const c10::Half* scales, int head_dim, int group_size,
                       float* x) {
  for (int j = 0; j < head_dim; ++j) {
    x[j] = static_cast<float>(scales[j / group_size]) * static_cast<float>(q[j]);
  }
}

void PagedGroupAttention(const PagedGroupArgs& args) { Run(args); }

const char* PagedGroupPath(const PagedGroupArgs& args) {
  switch (PathFor(args)) {
    case 2:
      return "avx512";
    case 1:
      return "avx2";
    default:
      return "scalar";
  }
}

void SetPagedMaxIsaForTesting(int level) { max_isa_for_testing = level; }

}  // namespace attnkit::kernels
