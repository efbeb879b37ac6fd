#include "session/paged_append.h"

#include <vector>

#include <ATen/Functions.h>

#include "cuda/kernels.h"
#include "session/page_pool.h"

namespace attnkit::session {

absl::Status AppendPagedRows(const at::Tensor& arena, const at::Tensor& page_ids,
                             const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                             const at::Tensor& v) {
  if (arena.is_cuda() && arena.element_size() == 2) {
    return cuda::AppendPagedRows(arena, page_ids, lengths, page_size, k, v);
  }
  AppendPagedRowsReference(arena, page_ids, lengths, page_size, k, v);
  return absl::OkStatus();
}

void AppendPagedRowsReference(const at::Tensor& arena, const at::Tensor& page_ids,
                              const at::Tensor& lengths, int64_t page_size, const at::Tensor& k,
                              const at::Tensor& v) {
  const int64_t R = k.size(0) * k.size(1), T = k.size(2), d = k.size(3), P = page_size;
  const at::Tensor ids = page_ids.to(at::kCPU).to(at::kLong).contiguous();
  const at::Tensor lens = lengths.to(at::kCPU).to(at::kLong).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  const int64_t* len = lens.data_ptr<int64_t>();
  std::vector<int64_t> rows(2 * R * T);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = len[r] + t;
      const int64_t key_row = id[r * ids.size(1) + i / P] * 2 * P + i % P;
      rows[r * T + t] = key_row;
      rows[R * T + r * T + t] = key_row + P;
    }
  }
  const at::Tensor index = IndexTensor(rows, arena.device());
  at::Tensor out = arena;
  out.index_copy_(0, index.narrow(0, 0, R * T), k.to(arena.options()).reshape({R * T, d}));
  out.index_copy_(0, index.narrow(0, R * T, R * T), v.to(arena.options()).reshape({R * T, d}));
  at::Tensor grown = lengths;
  grown.add_(T);
}

}  // namespace attnkit::session
