// Attention of the query heads of one kv head over that kv head's paged cache, computing the
// eviction observation (attention rows or their column sums) in the same pass. Built for decode and
// short query chunks: each cached key and value row is read once for all query rows.
#ifndef ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
#define ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace attnkit::kernels {

struct PagedGroupArgs {
  // Pages of the cache and how to reach them.
  const int32_t* pages = nullptr;
  int64_t length = 0;  // cached tokens, the new ones included (they are the last `queries`)
  int page_size = 16;
  char* const* chunk_ptrs = nullptr;  // unused when `row_ptr` is set
  // Returns the address of key (value=false) or value row `token`.
  const void* (*row_ptr)(const void* ctx, int64_t token, bool value) = nullptr;
  const void* ctx = nullptr;
  at::ScalarType dtype = at::kFloat;  // storage dtype of the rows

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

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_PAGED_ATTENTION_H_
