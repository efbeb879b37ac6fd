// Fixed-size pages of keys and values for one layer. A page holds page_size tokens of one
// (sequence, kv head): page_size key rows and page_size value rows, head_dim elements each. Keys
// and values live in separate chunks, so the key rows of pages allocated in a row are contiguous
// and the attention kernel's key pass and value pass each stream through memory.
// Pages come from chunks that are never returned; released pages are reused first, so the bytes in
// use follow the cache's budget while the reserve stays at its peak.
//
// Arena layout (`arena` = true; every pool on a device other than the CPU): one tensor holds all
// pages, page p at byte p * page_bytes() with its key rows then its value rows (the layout of
// attnkit::cuda::PagedCache), so tensor operations can address rows by index (Rows(), KeyRowIndex,
// ValueRowIndex). The arena doubles when it runs out of pages; page ids stay valid, addresses
// do not (take them again after Allocate()).
#ifndef ATTNKIT_CORE_SESSION_PAGE_POOL_H_
#define ATTNKIT_CORE_SESSION_PAGE_POOL_H_

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace attnkit::session {

// `values` as an int64 tensor on `device`: on the CPU a plain tensor; on a GPU one non-blocking
// copy from pinned staging memory (the caching host allocator keeps the staging buffer until the
// copy has run), so the host goes on enqueueing work instead of waiting for the transfer.
at::Tensor IndexTensor(const std::vector<int64_t>& values, at::Device device);

class PagePool {
 public:
  PagePool(int page_size, int head_dim, at::ScalarType dtype, at::Device device,
           bool arena = false);

  int32_t Allocate();
  void Release(int32_t page);

  char* Keys(int32_t page) const {
    return arena_ ? ArenaBase() + page * page_bytes() : Base(key_chunks_, page);
  }
  char* Values(int32_t page) const {
    return arena_ ? ArenaBase() + page * page_bytes() + half_bytes_ : Base(value_chunks_, page);
  }
  // Makes sure `pages` more pages can be allocated without growing the arena more than once.
  void EnsureFree(int64_t pages);
  // Arena pools: row moves queued by HeadCache::Compact, run as one gather and one scatter on the
  // device (sources are read before any destination is written). A no-op for other pools.
  void QueueMove(int64_t from_row, int64_t to_row) {
    pending_from_.push_back(from_row);
    pending_to_.push_back(to_row);
  }
  void FlushMoves();
  // Row `row` (< page_size) of a page's keys or values.
  char* KeyRow(int32_t page, int64_t row) const { return Keys(page) + row * row_bytes_; }
  char* ValueRow(int32_t page, int64_t row) const { return Values(page) + row * row_bytes_; }

  int page_size() const { return page_size_; }
  int head_dim() const { return head_dim_; }
  at::ScalarType dtype() const { return dtype_; }
  int64_t row_bytes() const { return row_bytes_; }
  int64_t page_bytes() const { return 2 * half_bytes_; }
  int64_t pages_in_use() const { return in_use_; }
  int64_t pages_reserved() const {
    return arena_ ? arena_pages_ : static_cast<int64_t>(key_chunks_.size()) * pages_per_chunk_;
  }
  bool arena() const { return arena_; }
  at::Device device() const { return device_; }
  // Arena pools: every row of every page as a [pages_reserved() * 2 * page_size, head_dim] tensor
  // of dtype() (a view of the arena), and the index of a page's key or value row in it.
  at::Tensor Rows() const;
  int64_t KeyRowIndex(int32_t page, int64_t row) const {
    return static_cast<int64_t>(page) * 2 * page_size_ + row;
  }
  int64_t ValueRowIndex(int32_t page, int64_t row) const {
    return (static_cast<int64_t>(page) * 2 + 1) * page_size_ + row;
  }

 private:
  char* Base(const std::vector<char*>& chunks, int32_t page) const {
    return chunks[page / pages_per_chunk_] + (page % pages_per_chunk_) * half_bytes_;
  }

  char* ArenaBase() const { return static_cast<char*>(arena_tensor_.data_ptr()); }
  void Grow(int64_t min_pages);

  int page_size_, head_dim_;
  at::ScalarType dtype_;
  at::Device device_;
  int64_t row_bytes_, half_bytes_;
  int32_t pages_per_chunk_;
  std::vector<at::Tensor> chunks_;  // owners of the memory below
  std::vector<char*> key_chunks_, value_chunks_;
  std::vector<int32_t> free_;
  bool arena_ = false;
  std::vector<int64_t> pending_from_, pending_to_;
  at::Tensor arena_tensor_;  // arena pools: [arena_pages_ * page_bytes()] bytes
  int64_t arena_pages_ = 0;
  int64_t in_use_ = 0;
};

// The cache of one (sequence, kv head) of one layer.
struct HeadCache {
  std::vector<int32_t> pages;
  int64_t length = 0;
  std::vector<int64_t> origin;   // original token index of each cached token
  std::vector<int64_t> rotated;  // RoPE position each cached key currently carries

  char* KeyRow(const PagePool& pool, int64_t i) const {
    return pool.KeyRow(pages[i / pool.page_size()], i % pool.page_size());
  }
  char* ValueRow(const PagePool& pool, int64_t i) const {
    return pool.ValueRow(pages[i / pool.page_size()], i % pool.page_size());
  }
  // Makes room for `extra` more tokens.
  void Reserve(PagePool& pool, int64_t extra);
  // Keeps the tokens at `kept` (ascending indices), compacting them to the front and releasing the
  // pages no longer needed. Arena pools queue the row moves (PagePool::FlushMoves runs them): the
  // released pages must not be reused before the flush.
  void Compact(PagePool& pool, const std::vector<int64_t>& kept);
  // Arena pools: the row indices (PagePool::Rows) of tokens [0, length) of the keys or values.
  std::vector<int64_t> RowIndices(const PagePool& pool, bool values) const;
  void Clear(PagePool& pool);
};

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_PAGE_POOL_H_
