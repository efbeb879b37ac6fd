// RoPE re-rotation of cached keys (StreamingLLM-style unbounded generation): after an eviction,
// each kept key is rotated from the position it carries to its new index, so positions stay
// contiguous.
#ifndef ATTNKIT_CORE_SESSION_ROPE_H_
#define ATTNKIT_CORE_SESSION_ROPE_H_

#include "attnkit/config.h"
#include "session/page_pool.h"

namespace attnkit::session {

// Rotates `row` (head_dim values of `dtype`) by `delta` positions.
void RotateRow(void* row, at::ScalarType dtype, int head_dim, int64_t delta,
               const RopeOptions& rope);

// Rotates every key of `cache` whose carried position differs from its index to its index.
void RerotateKeys(const PagePool& pool, HeadCache& cache, const RopeOptions& rope, int head_dim);

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_ROPE_H_
