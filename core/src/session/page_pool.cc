#include "session/page_pool.h"

#include <algorithm>
#include <cstring>

#include <ATen/Functions.h>

namespace attnkit::session {
namespace {

// About 2 MiB per chunk (or per arena growth step), at least one page.
int32_t PagesPerChunk(int64_t page_bytes) {
  return static_cast<int32_t>(std::max<int64_t>(1, (int64_t{2} << 20) / page_bytes));
}

}  // namespace

at::Tensor IndexTensor(const std::vector<int64_t>& values, at::Device device) {
  const auto longs = at::TensorOptions().dtype(at::kLong);
  if (device.is_cpu()) return at::tensor(values, longs);
  at::Tensor staging = at::empty({static_cast<int64_t>(values.size())}, longs.pinned_memory(true));
  std::memcpy(staging.data_ptr<int64_t>(), values.data(), values.size() * sizeof(int64_t));
  return staging.to(device, /*non_blocking=*/true);
}

PagePool::PagePool(int page_size, int head_dim, at::ScalarType dtype)
    : page_size_(page_size), head_dim_(head_dim), dtype_(dtype) {
  row_bytes_ = static_cast<int64_t>(head_dim) * c10::elementSize(dtype);
  key_half_bytes_ = value_half_bytes_ = row_bytes_ * page_size;
}

PagePool::PagePool(int page_size, int head_dim, int64_t key_page_bytes, int64_t value_page_bytes)
    : page_size_(page_size),
      head_dim_(head_dim),
      dtype_(at::kByte),
      row_bytes_(0),
      key_half_bytes_(key_page_bytes),
      value_half_bytes_(value_page_bytes) {}

int32_t PagePool::Allocate() {
  if (free_.empty()) AddPages();
  const int32_t page = free_.back();
  free_.pop_back();
  ++in_use_;
  return page;
}

void PagePool::Release(int32_t page) {
  if (!Frozen(page)) free_.push_back(page);  // a frozen page is shared: never reused
  --in_use_;
}

ChunkedPagePool::ChunkedPagePool(int page_size, int head_dim, at::ScalarType dtype)
    : PagePool(page_size, head_dim, dtype), pages_per_chunk_(PagesPerChunk(page_bytes())) {}

ChunkedPagePool::ChunkedPagePool(int page_size, int head_dim, int64_t key_page_bytes,
                                 int64_t value_page_bytes)
    : PagePool(page_size, head_dim, key_page_bytes, value_page_bytes),
      pages_per_chunk_(PagesPerChunk(page_bytes())) {}

void ChunkedPagePool::AddPages() {
  const int32_t first = frozen_pages_ + static_cast<int32_t>(key_chunks_.size()) * pages_per_chunk_;
  for (auto [chunks, bytes] :
       {std::pair<std::vector<char*>*, int64_t>{&key_chunks_, key_half_bytes_},
        {&value_chunks_, value_half_bytes_}}) {
    at::Tensor chunk = at::empty({pages_per_chunk_ * bytes}, at::kByte);
    chunks_.push_back(chunk);
    chunks->push_back(static_cast<char*>(chunk.data_ptr()));
  }
  for (int32_t p = first + pages_per_chunk_ - 1; p >= first; --p) free_.push_back(p);
  if (summaries_on_) ResizeSummaries();
}

void ChunkedPagePool::ResizeSummaries() {
  const int64_t pages = frozen_pages_ + static_cast<int64_t>(key_chunks_.size()) * pages_per_chunk_;
  summary_rows_.resize(pages, 0);
  summaries_.resize(pages * 2 * head_dim_);
}

void ChunkedPagePool::ReadPages(const std::vector<int32_t>& pages, char* out) const {
  for (int32_t page : pages) {
    std::memcpy(out, Keys(page), key_half_bytes_);
    std::memcpy(out + key_half_bytes_, Values(page), value_half_bytes_);
    out += page_bytes();
  }
}

void ChunkedPagePool::WritePages(const std::vector<int32_t>& pages, const char* in) {
  for (int32_t page : pages) {
    std::memcpy(Keys(page), in, key_half_bytes_);
    std::memcpy(Values(page), in + key_half_bytes_, value_half_bytes_);
    in += page_bytes();
    TouchRow(page, 0);
  }
}

void ChunkedPagePool::CopyPage(int32_t from, int32_t to) {
  std::memcpy(Keys(to), Keys(from), key_half_bytes_);
  std::memcpy(Values(to), Values(from), value_half_bytes_);
  if (summaries_on_) {
    summary_rows_[to] = summary_rows_[from];
    std::memcpy(key_summary(to), key_summary(from), 2 * head_dim_ * sizeof(float));
  }
}

std::unique_ptr<ChunkedPagePool> ChunkedPagePool::ShareFrozen() {
  auto frozen = std::make_shared<FrozenChunks>();
  if (frozen_ != nullptr) *frozen = *frozen_;
  frozen->owners.insert(frozen->owners.end(), chunks_.begin(), chunks_.end());
  frozen->key_chunks.insert(frozen->key_chunks.end(), key_chunks_.begin(), key_chunks_.end());
  frozen->value_chunks.insert(frozen->value_chunks.end(), value_chunks_.begin(),
                              value_chunks_.end());
  frozen_pages_ += static_cast<int32_t>(key_chunks_.size()) * pages_per_chunk_;
  frozen_ = std::move(frozen);
  chunks_.clear();
  key_chunks_.clear();
  value_chunks_.clear();
  free_.clear();  // every free page was frozen with the rest
  auto shared = std::unique_ptr<ChunkedPagePool>(new ChunkedPagePool(*this));
  return shared;
}

ArenaPagePool::ArenaPagePool(int page_size, int head_dim, at::ScalarType dtype, at::Device device)
    : PagePool(page_size, head_dim, dtype),
      device_(device),
      min_grow_pages_(PagesPerChunk(page_bytes())) {}

void ArenaPagePool::Grow(int64_t min_pages) {
  const int64_t pages = std::max<int64_t>({min_pages, 2 * arena_pages_, min_grow_pages_});
  at::Tensor next =
      at::empty({pages * page_bytes()}, at::TensorOptions().dtype(at::kByte).device(device_));
  if (arena_pages_ > 0) next.narrow(0, 0, arena_tensor_.numel()).copy_(arena_tensor_);
  arena_tensor_ = next;
  for (int64_t p = pages - 1; p >= arena_pages_; --p) free_.push_back(static_cast<int32_t>(p));
  // Lowest ids first: the free list pops from the back, the new pages were pushed descending
  // after the released ones, so reuse still comes first.
  std::rotate(free_.begin(), free_.end() - (pages - arena_pages_), free_.end());
  arena_pages_ = pages;
  if (summaries_on_) ResizeSummaries();
}

void ArenaPagePool::ResizeSummaries() {
  summary_rows_.resize(arena_pages_, 0);
  const int64_t have = summary_tensor_.defined() ? summary_tensor_.size(0) : 0;
  if (have == arena_pages_) return;
  at::Tensor next = at::empty({arena_pages_, 2, head_dim_},
                              at::TensorOptions().dtype(at::kFloat).device(device_));
  if (have > 0) next.narrow(0, 0, have).copy_(summary_tensor_);
  summary_tensor_ = next;
}

void ArenaPagePool::EnsureFree(int64_t pages) {
  if (static_cast<int64_t>(free_.size()) < pages) {
    Grow(arena_pages_ + pages - static_cast<int64_t>(free_.size()));
  }
}

namespace {

std::vector<int64_t> Widen(const std::vector<int32_t>& pages) {
  return std::vector<int64_t>(pages.begin(), pages.end());
}

}  // namespace

void ArenaPagePool::ReadPages(const std::vector<int32_t>& pages, char* out) const {
  if (pages.empty()) return;
  const int64_t n = static_cast<int64_t>(pages.size());
  const at::Tensor host = arena_tensor_.view({arena_pages_, page_bytes()})
                              .index_select(0, IndexTensor(Widen(pages), device_))
                              .to(at::kCPU)
                              .contiguous();
  std::memcpy(out, host.data_ptr(), static_cast<size_t>(n * page_bytes()));
}

void ArenaPagePool::WritePages(const std::vector<int32_t>& pages, const char* in) {
  if (pages.empty()) return;
  const int64_t n = static_cast<int64_t>(pages.size());
  at::Tensor host = at::empty({n, page_bytes()}, at::kByte);
  std::memcpy(host.data_ptr(), in, static_cast<size_t>(n * page_bytes()));
  arena_tensor_.view({arena_pages_, page_bytes()})
      .index_copy_(0, IndexTensor(Widen(pages), device_), host.to(device_));
  for (int32_t page : pages) TouchRow(page, 0);
}

void ArenaPagePool::CopyPage(int32_t from, int32_t to) {
  at::Tensor pages = arena_tensor_.view({arena_pages_, page_bytes()});
  pages[to].copy_(pages[from]);
  if (summaries_on_) {
    summary_rows_[to] = summary_rows_[from];
    summary_tensor_[to].copy_(summary_tensor_[from]);
  }
}

at::Tensor ArenaPagePool::Rows() const {
  if (arena_pages_ == 0)
    return at::empty({0, head_dim_}, at::TensorOptions().dtype(dtype_).device(device_));
  return arena_tensor_.view(dtype_).view({arena_pages_ * 2 * page_size_, head_dim_});
}

void ArenaPagePool::FlushMoves() {
  if (pending_from_.empty()) return;
  // All sources are gathered before any destination is written, so a row that is both (a kept
  // token moving into the place of one that moves further forward) is read first. One host-to-
  // device copy for both index lists.
  const int64_t n = static_cast<int64_t>(pending_from_.size());
  pending_from_.insert(pending_from_.end(), pending_to_.begin(), pending_to_.end());
  const at::Tensor index = IndexTensor(pending_from_, device_);
  at::Tensor rows = Rows();
  rows.index_copy_(0, index.narrow(0, n, n), rows.index_select(0, index.narrow(0, 0, n)));
  pending_from_.clear();
  pending_to_.clear();
}

void HeadCache::Reserve(PagePool& pool, int64_t extra) {
  const int64_t needed = (length - residual + extra + pool.page_size() - 1) / pool.page_size();
  while (static_cast<int64_t>(pages.size()) < needed) pages.push_back(pool.Allocate());
}

void HeadCache::UnshareFrom(PagePool& pool, int64_t first) {
  for (size_t p = static_cast<size_t>(std::max<int64_t>(first, 0)); p < pages.size(); ++p) {
    if (!pool.Frozen(pages[p])) continue;
    const int32_t own = pool.Allocate();
    pool.CopyPage(pages[p], own);
    pool.Release(pages[p]);
    pages[p] = own;
  }
}

void HeadCache::UnshareResidual(PagePool& residual_pool) {
  for (int32_t& page : residual_pages) {
    if (!residual_pool.Frozen(page)) continue;
    const int32_t own = residual_pool.Allocate();
    residual_pool.CopyPage(page, own);
    residual_pool.Release(page);
    page = own;
  }
}

void HeadCache::Truncate(PagePool& pool, int64_t new_length) {
  length = new_length;
  origin.resize(length);
  rotated.resize(length);
  const size_t needed = (length - residual + pool.page_size() - 1) / pool.page_size();
  while (pages.size() > needed) {
    pool.Release(pages.back());
    pages.pop_back();
  }
}

}  // namespace attnkit::session

namespace attnkit::session {

void HeadCache::ClearResidual(PagePool& residual_pool) {
  for (int32_t page : residual_pages) residual_pool.Release(page);
  residual_pages.clear();
  residual = 0;
  residual_first = 0;
}

}  // namespace attnkit::session
