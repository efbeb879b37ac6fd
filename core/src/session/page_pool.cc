#include "session/page_pool.h"

#include <algorithm>
#include <cstring>

#include <ATen/Functions.h>

namespace attnkit::session {

PagePool::PagePool(int page_size, int head_dim, at::ScalarType dtype, at::Device device)
    : page_size_(page_size), head_dim_(head_dim), dtype_(dtype), device_(device) {
  row_bytes_ = static_cast<int64_t>(head_dim) * c10::elementSize(dtype);
  half_bytes_ = row_bytes_ * page_size;
  // About 2 MiB per chunk, at least one page.
  pages_per_chunk_ = static_cast<int32_t>(std::max<int64_t>(1, (int64_t{2} << 20) / page_bytes()));
}

int32_t PagePool::Allocate() {
  if (free_.empty()) {
    const int32_t first = static_cast<int32_t>(key_chunks_.size()) * pages_per_chunk_;
    for (auto* chunks : {&key_chunks_, &value_chunks_}) {
      at::Tensor chunk = at::empty({pages_per_chunk_ * half_bytes_},
                                   at::TensorOptions().dtype(at::kByte).device(device_));
      chunks_.push_back(chunk);
      chunks->push_back(static_cast<char*>(chunk.data_ptr()));
    }
    for (int32_t p = first + pages_per_chunk_ - 1; p >= first; --p) free_.push_back(p);
  }
  const int32_t page = free_.back();
  free_.pop_back();
  ++in_use_;
  return page;
}

void PagePool::Release(int32_t page) {
  free_.push_back(page);
  --in_use_;
}

void HeadCache::Reserve(PagePool& pool, int64_t extra) {
  const int64_t needed = (length + extra + pool.page_size() - 1) / pool.page_size();
  while (static_cast<int64_t>(pages.size()) < needed) pages.push_back(pool.Allocate());
}

void HeadCache::Compact(PagePool& pool, const std::vector<int64_t>& kept) {
  const int64_t row = pool.row_bytes();
  for (size_t i = 0; i < kept.size(); ++i) {
    const int64_t from = kept[i];
    if (from == static_cast<int64_t>(i)) continue;
    std::memcpy(KeyRow(pool, i), KeyRow(pool, from), row);
    std::memcpy(ValueRow(pool, i), ValueRow(pool, from), row);
    origin[i] = origin[from];
    rotated[i] = rotated[from];
  }
  length = static_cast<int64_t>(kept.size());
  origin.resize(length);
  rotated.resize(length);
  const size_t needed = (length + pool.page_size() - 1) / pool.page_size();
  while (pages.size() > needed) {
    pool.Release(pages.back());
    pages.pop_back();
  }
}

void HeadCache::Clear(PagePool& pool) {
  for (int32_t p : pages) pool.Release(p);
  pages.clear();
  origin.clear();
  rotated.clear();
  length = 0;
}

}  // namespace attnkit::session
