// RoPE re-rotation of cached keys (StreamingLLM-style unbounded generation): after an eviction,
// each kept key is rotated from the position it carries to its new index, so positions stay
// contiguous. The stores decide which rows move; these functions rotate them.
#ifndef ATTNKIT_CORE_SESSION_ROPE_H_
#define ATTNKIT_CORE_SESSION_ROPE_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "attnkit/config.h"

namespace attnkit::session {

// Rotates `row` (head_dim values of `dtype`, host memory) by `delta` positions.
void RotateRow(void* row, at::ScalarType dtype, int head_dim, int64_t delta,
               const RopeOptions& rope);

// Rotates rows `rows` of `all` ([N, head_dim], any device, storage dtype) by `deltas` positions,
// as tensor operations on all's device with RotateRow's arithmetic (angles, cos and sin in double,
// each result rounded to float, then to the storage dtype).
void RotateRows(at::Tensor all, const std::vector<int64_t>& rows, const std::vector<double>& deltas,
                const RopeOptions& rope, int head_dim);

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_ROPE_H_
