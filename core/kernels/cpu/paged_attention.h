// Attention of the query heads of one kv head over that kv head's paged cache, computing the
// eviction observation (attention rows or their column sums) in the same pass. Built for decode and
// short query chunks: each cached key and value row is read once for all query rows, page by page.
#ifndef ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
#define ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace attnkit::kernels {

struct PagedGroupArgs {
  // The cache: `length` tokens in pages of `page_size` rows; page i holds its key rows at
  // page_keys[i] and value rows at page_values[i] (row-major, head_dim elements of `dtype`).
  const char* const* page_keys = nullptr;
  const char* const* page_values = nullptr;
  int64_t length = 0;  // cached tokens, the new ones included (they are the last `queries`)
  int page_size = 16;
  at::ScalarType dtype = at::kFloat;

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

// exp(x) for 8 floats at a time where the CPU allows (used by softmax loops); exact to ~1 ulp of
// float for x in [-87, 88], 0 below, and exp(-inf) = 0.
void ExpInPlace(float* values, int64_t n);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
