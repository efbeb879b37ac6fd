// The decode step's append by page table: the new tokens' key and value rows written to the slots
// a device-resident page table and lengths give (cuda::AppendPagedRows on CUDA tensors), and its
// plain ATen reference, which runs on any device (the device store on the CPU in tests, and the
// CUDA kernel's test).
#ifndef ATTNKIT_CORE_SESSION_PAGED_APPEND_H_
#define ATTNKIT_CORE_SESSION_PAGED_APPEND_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"

namespace attnkit::session {

// Row r (= sequence * Hkv + kv head) of k, v [S, Hkv, T, d] goes to positions lengths[r] ..
// lengths[r] + T - 1 of the cache whose pages are page_ids[r, :] (int32 [S * Hkv, max_pages]):
// position i is row i % page_size of the key half (arena row 2 * page * page_size + i %
// page_size) and of the value half (page_size rows later) of page page_ids[r, i / page_size] of
// `arena` ([pages * 2 * page_size, d]); then lengths (int32 [S * Hkv]) grow by T. On CUDA tensors
// in a 16-bit arena this is one kernel launch; elsewhere AppendPagedRowsReference.
absl::Status AppendPagedRows(const at::Tensor& arena, const at::Tensor& page_ids,
                             const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                             const at::Tensor& v);

// The same with ATen operations (the table and lengths read on the host, one index_copy_ for the
// keys and one for the values, the lengths advanced in place); k and v in any dtype.
void AppendPagedRowsReference(const at::Tensor& arena, const at::Tensor& page_ids,
                              const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                              const at::Tensor& v);

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_PAGED_APPEND_H_
