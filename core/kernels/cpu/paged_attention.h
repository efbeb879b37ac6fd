// Attention of the query heads of one kv head over that kv head's paged cache, computing the
// eviction observation (attention rows or their column sums) in the same pass. Built for decode and
// short query chunks: each cached key and value row is read once for all query rows, page by page.
//
// The cache is one or two segments of pages: the main pages (float32, float16, bfloat16 or int8
// rows, keys and values each in their own format) and an optional residual segment (the most
// recent tokens, float rows of the session dtype). Quantized rows are read as stored (converted in
// registers), never dequantized into a copy of the cache. AVX-512 is used when the CPU has it
// (chosen at run time), AVX2 otherwise, plain loops where the head dim or group does not fit.
#ifndef ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
#define ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_

#include <cmath>
#include <cstdint>

#include <ATen/core/Tensor.h>

#include "session/page_format.h"  // RowFormat, KiviBits, IsPerChannel, PageBytes

namespace attnkit::kernels {

RowFormat RowFormatOf(at::ScalarType dtype);  // kFloat32/kFloat16/kBFloat16 (kChar: kInt8)
// Row `row` of a page in `format` as head_dim floats (any format).
void ReadPageRow(RowFormat format, const char* page, int page_size, int head_dim, int group_size,
                 int64_t row, float* x);

// Rows split into pages: token i of the segment is row (first + i) % page_size of page
// (first + i) / page_size.
struct PagedSegment {
  const char* const* keys = nullptr;  // per page
  const char* const* values = nullptr;
  int64_t first = 0;
  int64_t length = 0;
  RowFormat key_format = RowFormat::kFloat32;
  RowFormat value_format = RowFormat::kFloat32;
  int page_size = 0;  // tokens per page of this segment; 0: PagedGroupArgs::page_size
  // ThinK: key rows of key_dim channels (a float format), dotted with `q` [G, T, key_dim] (the
  // query rows on the channels the keys kept); 0 / null: head_dim and PagedGroupArgs::q. A width
  // AVX-512 does not divide takes the AVX2 key loop where 8 divides it, else the plain loop.
  int key_dim = 0;
  const float* q = nullptr;
};

struct PagedGroupArgs {
  // The cache: `length` tokens; the first length - residual.length in `main` (first = 0), the
  // rest in `residual`; pages of `page_size` rows.
  PagedSegment main;
  PagedSegment residual;
  int64_t length = 0;  // cached tokens, the new ones included (they are the last `queries`)
  int page_size = 16;
  int group_size = 32;  // channels per int8 scale or KIVI value group

  int rows_per_query = 1;  // query heads sharing this kv head (G)
  int64_t queries = 1;     // T
  int head_dim = 0;
  float scale = 1.0f;
  const float* q = nullptr;  // [G, T, d] contiguous
  float* out = nullptr;      // [G, T, d] contiguous
  // Optional observation: probabilities of the last `window` query rows, [G, window, length]
  // (window <= T), and column sums over all T rows, [G, length].
  float* window_rows = nullptr;
  int64_t window = 0;
  float* column_sums = nullptr;
  float* scratch = nullptr;  // [G * T, length] floats
};

// Exact causal softmax attention: query t sees tokens [0, length - T + t].
void PagedGroupAttention(const PagedGroupArgs& args);

// Which vector path PagedGroupAttention takes for these args ("avx512", "avx2" or "scalar").
const char* PagedGroupPath(const PagedGroupArgs& args);
// Tests: 0 forces the scalar path, 1 at most AVX2, 2 (default) the best the CPU has.
void SetPagedMaxIsaForTesting(int level);

// Symmetric int8 quantization of one row of `head_dim` floats: per group of `group_size`
// channels, scale = max |x| / 127 rounded to float16, q = round(x / scale) clamped to [-127, 127]
// (all zero with scale 0). Writes head_dim int8 values and head_dim / group_size float16 scales.
void QuantizeRowInt8(const float* x, int head_dim, int group_size, int8_t* q, c10::Half* scales);
void DequantizeRowInt8(const int8_t* q, const c10::Half* scales, int head_dim, int group_size,
                       float* x);

// KIVI's asymmetric quantization of n values x[0], x[stride], ... as one group, in float16
// arithmetic as the reference runs it (quant_and_pack_kcache / _vcache): each x rounded to float16
// (saturated to +-32752), mn = min, scale = half(half(max - mn) / (2^bits - 1)),
// code = round-half-even(clamp(half(half(x - mn) / scale), 0, 2^bits - 1)); all codes 0 when
// scale is 0. Codes are packed from bit `first_code * bits` of `codes` on (bits 2 or 4).
void QuantizeKivi(const float* x, int64_t n, int64_t stride, int bits, uint8_t* codes,
                  int64_t first_code, c10::Half* scale, c10::Half* mn);
// Code i of a packed KIVI row.
inline int KiviCode(const uint8_t* codes, int64_t i, int bits) {
  const int64_t bit = i * bits;
  return (codes[bit / 8] >> (bit % 8)) & ((1 << bits) - 1);
}
// The fake quantization's dequantized value, half(half(code * scale) + mn), in float16
// arithmetic as KIVI's unpack_and_dequant_* (the conformance cases check it bit for bit).
float DequantizeKivi(int code, c10::Half scale, c10::Half mn);
// The value attention reads from a KIVI page: fma(code, scale, mn) in float32, as KIVI's decode
// kernels (quant/csrc/gemv_cuda.cu: scale * code + zero in float) read their packed cache. The
// kernels, ReadPageRow and so every reader of a KIVI page use this one.
inline float KiviValue(int code, float scale, float mn) {
  return std::fma(static_cast<float>(code), scale, mn);
}

// exp(x) for 8 floats at a time where the CPU allows (used by softmax loops); exact to ~1 ulp of
// float for x in [-87, 88], 0 below, and exp(-inf) = 0.
void ExpInPlace(float* values, int64_t n);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
