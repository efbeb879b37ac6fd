// Quest's page selection for sparse decode (Tang et al., "Quest: Query-Aware Sparsity for Efficient
// Long-Context LLM Inference", ICML 2024; the reference is mit-han-lab/Quest's
// evaluation/quest_attention.py). Each page of a kv head's cache keeps the channel-wise minimum
// and maximum of its keys; a decode query bounds q.k over the page by
//   sum_c q_c * (q_c > 0 ? max_c : min_c)
// and the step reads only the pages with the highest bounds, attending exactly over them.
//
// The session's pages are Quest's chunks (chunk_size = page_size, aligned at cache index 0, the
// last one possibly partial). The reference reads min(max(3, min(L, token_budget) / P), pages)
// chunks per query head; attnkit extends it in two ways, both off by default:
// - grouped queries: a page's bound is the largest over the kv head's query heads, and they all
//   read the chosen pages (the reference model is multi-head: one query head per kv head);
// - start and recent pages always read, the budget's other pages chosen among the rest.
#ifndef ATTNKIT_CORE_KERNELS_CPU_QUEST_H_
#define ATTNKIT_CORE_KERNELS_CPU_QUEST_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "session/page_format.h"

namespace attnkit::kernels {

// Extends `summary` ([2, head_dim]: minimum, then maximum of each channel) over key rows
// [from, to) of a page whose rows are in `format` (float32, float16 or bfloat16); from == 0
// starts it afresh.
void ExtendKeySummary(RowFormat format, const char* keys, int head_dim, int64_t from, int64_t to,
                      float* summary);

// The bound of each of `pages` summaries for the query rows q [rows, head_dim]: the largest over
// the rows of sum_c q_c * (q_c > 0 ? max_c : min_c).
void QuestPageBounds(const float* q, int rows, int head_dim, const float* const* summaries,
                     int64_t pages, float* bounds);

// Which vector path QuestPageBounds takes ("avx512", "avx2" or "scalar"), and for tests: 0 forces
// the scalar path, 1 at most AVX2, 2 (default) the best the CPU has.
const char* QuestBoundPath();
void SetQuestMaxIsaForTesting(int level);

// How many pages a step reads of a cache of `length` tokens in `pages` pages of `page_size`
// (the start and recent pages included): the reference's min(max(3, min(length, token_budget) /
// page_size), pages), raised to start_pages + recent_pages (clipped to pages) when those are more.
int64_t QuestPagesToRead(int64_t length, int64_t pages, int page_size, int64_t token_budget,
                         int64_t start_pages, int64_t recent_pages);

// The pages a step reads (ascending): the first start_pages and the last recent_pages, then the
// best of the others by bound until `to_read` (QuestPagesToRead) are chosen; ties go to the lower
// page.
std::vector<int64_t> QuestSelectPages(const float* bounds, int64_t pages, int64_t to_read,
                                      int64_t start_pages, int64_t recent_pages);

// Tokens in the pages at `slots` of a cache of `length` tokens in pages of `page_size` (the last
// page may be partial).
int64_t TokensInPages(const std::vector<int64_t>& slots, int64_t length, int page_size);

// Plain ATen reference of the whole selection: q [rows, d] (the query heads of one kv head, after
// RoPE), keys [L, d] (that kv head's cache, the step's own key included): a bool [pages] tensor
// marking the pages read. Follows the reference's arithmetic (per-chunk amax of keys times the
// sign of q, then a product with |q|), so tests and the benchmark's recall check the fast path
// against it.
at::Tensor QuestReferencePages(const at::Tensor& q, const at::Tensor& keys, int64_t page_size,
                               int64_t token_budget, int64_t start_pages, int64_t recent_pages);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_QUEST_H_
