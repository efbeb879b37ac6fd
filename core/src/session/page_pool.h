// Fixed-size pages of keys and values for one layer, and the bookkeeping of one (sequence, kv head)
// cache over them. A page holds page_size tokens of one (sequence, kv head): page_size key rows and
// page_size value rows, head_dim elements each. Released pages are reused first, so the bytes in
// use follow the cache's budget while the reserve stays at its peak.
//
// Two layouts, one per KV store (kv_store.h):
// - ChunkedPagePool (host store): keys and values in separate ~2 MiB chunks, so the key rows of
// pages
//   allocated in a row are contiguous and the attention kernel's key and value passes each stream
//   through memory. Chunks are never returned.
// - ArenaPagePool (device store): one tensor holds all pages, page p at byte p * page_bytes() with
//   its key rows then its value rows (the layout of attnkit::cuda::PagedCache), so tensor
//   operations address rows by index (Rows(), KeyRowIndex, ValueRowIndex). The arena doubles when
//   it runs out of pages; page ids stay valid, addresses do not (take them again after Allocate()).
#ifndef ATTNKIT_CORE_SESSION_PAGE_POOL_H_
#define ATTNKIT_CORE_SESSION_PAGE_POOL_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

namespace attnkit::session {

// `values` as an int64 tensor on `device`: on the CPU a plain tensor; on a GPU one non-blocking
// copy from pinned staging memory (the caching host allocator keeps the staging buffer until the
// copy has run), so the host goes on enqueueing work instead of waiting for the transfer.
at::Tensor IndexTensor(const std::vector<int64_t>& values, at::Device device);

// Page ids, their reuse and the byte counts; the layouts below own the memory.
class PagePool {
 public:
  virtual ~PagePool() = default;

  int32_t Allocate();
  void Release(int32_t page);

  int page_size() const { return page_size_; }
  int head_dim() const { return head_dim_; }
  at::ScalarType dtype() const { return dtype_; }
  // Bytes of one key or value row in dtype() (pools of one dtype).
  int64_t row_bytes() const { return row_bytes_; }
  // Bytes of a page's keys, of its values (they differ when keys and values have their own
  // formats), and of both.
  int64_t key_page_bytes() const { return key_half_bytes_; }
  int64_t value_page_bytes() const { return value_half_bytes_; }
  int64_t page_bytes() const { return key_half_bytes_ + value_half_bytes_; }
  int64_t pages_in_use() const { return in_use_; }
  virtual int64_t pages_reserved() const = 0;
  // The bytes of `pages`, each its keys (key_page_bytes()) then its values (value_page_bytes()),
  // copied to / from host memory at `out` / `in`: what a saved session holds of its pages.
  virtual void ReadPages(const std::vector<int32_t>& pages, char* out) const = 0;
  virtual void WritePages(const std::vector<int32_t>& pages, const char* in) = 0;
  // Copy-on-write (ChunkedPagePool::ShareFrozen): whether `page` is shared with another session's
  // pool and so must not be written; CopyPage copies a page's keys and values into another page.
  virtual bool Frozen(int32_t page) const { return false; }
  virtual void CopyPage(int32_t from, int32_t to) = 0;

  // Quest's page summaries (sparse decode): per page, the channel-wise minimum and maximum of its
  // first summarized_rows(page) key rows, kept by the layout ([2, head_dim] floats: host memory in
  // ChunkedPagePool::key_summary, a device tensor in ArenaPagePool::summaries). Off until
  // EnableKeySummaries(). Whoever writes a key row calls TouchRow: a row the summary covers drops
  // it whole (a minimum cannot forget a row), a later row leaves it to be extended. WritePages
  // drops the pages' summaries, CopyPage copies one, a fork's pool starts with copies of them (its
  // frozen pages hold the same rows). A page cut short (eviction) has a summary of more rows than
  // it holds: readers rebuild such a summary from row 0.
  void EnableKeySummaries() {
    summaries_on_ = true;
    ResizeSummaries();
  }
  bool key_summaries() const { return summaries_on_; }
  int32_t& summarized_rows(int32_t page) { return summary_rows_[page]; }
  void TouchRow(int32_t page, int64_t row) {
    if (summaries_on_ && summary_rows_[page] > row) summary_rows_[page] = 0;
  }

 protected:
  PagePool(int page_size, int head_dim, at::ScalarType dtype);
  // Keys and values in their own formats: a page's keys take key_page_bytes, its values
  // value_page_bytes (row_bytes() is then 0: rows are the store's business).
  PagePool(int page_size, int head_dim, int64_t key_page_bytes, int64_t value_page_bytes);
  // Adds at least one page id to free_ (called when it is empty).
  virtual void AddPages() = 0;
  // Sizes the summaries (and summary_rows_) to the page ids there are, keeping the existing ones.
  virtual void ResizeSummaries() = 0;

  bool summaries_on_ = false;
  std::vector<int32_t> summary_rows_;  // per page id

  int page_size_, head_dim_;
  at::ScalarType dtype_;
  int64_t row_bytes_, key_half_bytes_, value_half_bytes_;
  std::vector<int32_t> free_;
  int64_t in_use_ = 0;
};

class ChunkedPagePool final : public PagePool {
 public:
  ChunkedPagePool(int page_size, int head_dim, at::ScalarType dtype);
  ChunkedPagePool(int page_size, int head_dim, int64_t key_page_bytes, int64_t value_page_bytes);

  char* Keys(int32_t page) const {
    return page < frozen_pages_ ? Base(frozen_->key_chunks, page, key_half_bytes_)
                                : Base(key_chunks_, page - frozen_pages_, key_half_bytes_);
  }
  char* Values(int32_t page) const {
    return page < frozen_pages_ ? Base(frozen_->value_chunks, page, value_half_bytes_)
                                : Base(value_chunks_, page - frozen_pages_, value_half_bytes_);
  }
  // Row `row` (< page_size) of a page's keys or values.
  char* KeyRow(int32_t page, int64_t row) const { return Keys(page) + row * row_bytes_; }
  char* ValueRow(int32_t page, int64_t row) const { return Values(page) + row * row_bytes_; }
  int64_t pages_reserved() const override {
    return static_cast<int64_t>(key_chunks_.size()) * pages_per_chunk_;
  }
  void ReadPages(const std::vector<int32_t>& pages, char* out) const override;
  void WritePages(const std::vector<int32_t>& pages, const char* in) override;
  bool Frozen(int32_t page) const override { return page < frozen_pages_; }
  void CopyPage(int32_t from, int32_t to) override;

  // Quest's page summary, [2, head_dim] floats (see PagePool::EnableKeySummaries).
  float* key_summary(int32_t page) {
    return summaries_.data() + static_cast<int64_t>(page) * 2 * head_dim_;
  }

  // Copy-on-write sharing for Session::Fork: every page this pool has (in use or free) becomes
  // frozen, read-only memory shared with the returned pool, which starts with this pool's pages
  // in use (the same ids, so the caches' page lists carry over). Neither pool writes a frozen
  // page: a cache about to write one copies it into a page of its own (HeadCache::UnshareFrom).
  // A frozen page released is not reused; the memory goes when the last pool sharing it does.
  // The pools share no mutable state: each may be used from its own thread.
  std::unique_ptr<ChunkedPagePool> ShareFrozen();

 private:
  // Immutable once made: the chunks of the frozen pages [0, frozen_pages_).
  struct FrozenChunks {
    std::vector<at::Tensor> owners;
    std::vector<char*> key_chunks, value_chunks;
  };

  void AddPages() override;
  char* Base(const std::vector<char*>& chunks, int32_t page, int64_t bytes) const {
    return chunks[page / pages_per_chunk_] + (page % pages_per_chunk_) * bytes;
  }

  void ResizeSummaries() override;

  int32_t pages_per_chunk_;
  std::vector<at::Tensor> chunks_;  // owners of the memory below
  std::vector<char*> key_chunks_, value_chunks_;
  std::shared_ptr<const FrozenChunks> frozen_;
  int32_t frozen_pages_ = 0;      // a multiple of pages_per_chunk_
  std::vector<float> summaries_;  // per page id: [2, head_dim]
};

class ArenaPagePool final : public PagePool {
 public:
  ArenaPagePool(int page_size, int head_dim, at::ScalarType dtype, at::Device device);

  // Device address of a page (its key rows; the value rows follow).
  char* Keys(int32_t page) const { return ArenaBase() + page * page_bytes(); }
  // Makes sure `pages` more pages can be allocated without growing the arena more than once.
  void EnsureFree(int64_t pages);
  // Every row of every page as a [pages_reserved() * 2 * page_size, head_dim] tensor of dtype()
  // (a view of the arena), and the index of a page's key or value row in it.
  at::Tensor Rows() const;
  int64_t KeyRowIndex(int32_t page, int64_t row) const {
    return static_cast<int64_t>(page) * 2 * page_size_ + row;
  }
  int64_t ValueRowIndex(int32_t page, int64_t row) const {
    return (static_cast<int64_t>(page) * 2 + 1) * page_size_ + row;
  }
  // Row moves queued by compaction, run as one gather and one scatter on the device (sources are
  // read before any destination is written).
  void QueueMove(int64_t from_row, int64_t to_row) {
    pending_from_.push_back(from_row);
    pending_to_.push_back(to_row);
  }
  void FlushMoves();
  at::Device device() const { return device_; }
  int64_t pages_reserved() const override { return arena_pages_; }
  // One gather (or scatter) on the device and one transfer for all the pages.
  void ReadPages(const std::vector<int32_t>& pages, char* out) const override;
  void WritePages(const std::vector<int32_t>& pages, const char* in) override;
  void CopyPage(int32_t from, int32_t to) override;
  // Quest's page summaries: float32 [pages_reserved(), 2, head_dim] on device().
  at::Tensor& summaries() { return summary_tensor_; }

 private:
  void AddPages() override { Grow(arena_pages_ + 1); }
  void ResizeSummaries() override;
  void Grow(int64_t min_pages);
  char* ArenaBase() const { return static_cast<char*>(arena_tensor_.data_ptr()); }

  at::Device device_;
  int32_t min_grow_pages_;
  at::Tensor arena_tensor_;  // [arena_pages_ * page_bytes()] bytes
  int64_t arena_pages_ = 0;
  at::Tensor summary_tensor_;
  std::vector<int64_t> pending_from_, pending_to_;
};

// The cache of one (sequence, kv head) of one layer: which pages, how many tokens, and each token's
// original index and RoPE position. The rows themselves are the store's.
struct HeadCache {
  std::vector<int32_t> pages;
  int64_t length = 0;
  // A store with a residual window (host store, quantized formats) keeps the last `residual`
  // tokens outside `pages`: in residual_pages (another pool), from row residual_first of the
  // first one. `pages` then hold the first length - residual tokens.
  int64_t residual = 0;
  int64_t residual_first = 0;
  std::vector<int32_t> residual_pages;
  std::vector<int64_t> origin;   // original token index of each cached token
  std::vector<int64_t> rotated;  // RoPE position each cached key currently carries
  // ThinK (host store): the key channels `pages` hold, ascending; empty until the head has chosen
  // them (its tokens then all wait in the residual window).
  std::vector<int32_t> channels;

  int32_t page_of(int64_t i, int64_t page_size) const { return pages[i / page_size]; }
  // Makes room for `extra` more tokens.
  void Reserve(PagePool& pool, int64_t extra);
  // Copy-on-write: the pages from index `first` on that are frozen (shared with a fork) are
  // replaced by copies of their own, so they can be written. Stores call it before they write.
  void UnshareFrom(PagePool& pool, int64_t first);
  // The same for every residual page.
  void UnshareResidual(PagePool& residual_pool);
  // Keeps the tokens at `kept` (ascending indices), compacting them to the front: move(from, to)
  // moves the rows of token `from` to index `to` (the store's layout), then the positions follow
  // and the pages no longer needed are released. A store that queues its moves must run them
  // before the released pages are reused.
  template <typename Move>
  void Keep(PagePool& pool, const std::vector<int64_t>& kept, Move move) {
    for (size_t i = 0; i < kept.size(); ++i) {
      const int64_t from = kept[i];
      if (from == static_cast<int64_t>(i)) continue;
      move(from, static_cast<int64_t>(i));
      origin[i] = origin[from];
      rotated[i] = rotated[from];
    }
    Truncate(pool, static_cast<int64_t>(kept.size()));
  }
  // Keep() for stores whose pages hold plain rows (no residual window, no per-page quantization):
  // a destination page whose page_size tokens are one whole source page's, in order, takes that
  // page as it is (no row moves: evicting whole aligned pages or groups compacts by editing the
  // page list); the other destination pages get their rows by move_row(src_page, src_row,
  // dst_page, dst_row), written into their own old page when it is free and writable (not frozen,
  // not taken), else into a page whose rows are no longer needed, else a new one. Frozen pages are
  // never written (copy-on-write). A store that queues its moves must read every source before it
  // writes any destination (ArenaPagePool::FlushMoves does).
  template <typename MoveRow>
  void KeepPages(PagePool& pool, const std::vector<int64_t>& kept, MoveRow move_row) {
    const int64_t P = pool.page_size(), n = static_cast<int64_t>(kept.size());
    const std::vector<int32_t> old = pages;
    std::vector<char> taken(old.size(), 0);
    std::vector<int32_t> next((n + P - 1) / P);
    size_t dead = 0;  // scan position for pages below the sources still to be read
    // Page and row of a token without a 64-bit division per token where the page size is a power
    // of two (evicting a few tokens of a long cache walks every later token).
    const int shift = (P & (P - 1)) == 0 ? __builtin_ctzll(static_cast<uint64_t>(P)) : -1;
    auto page_of = [&](int64_t t) { return shift >= 0 ? t >> shift : t / P; };
    auto row_of = [&](int64_t t) { return shift >= 0 ? t & (P - 1) : t % P; };
    for (int64_t j = 0; j < static_cast<int64_t>(next.size()); ++j) {
      const int64_t first = j * P, last = std::min(n, first + P) - 1, source = kept[first];
      if (last - first + 1 == P && row_of(source) == 0 && kept[last] == source + P - 1) {
        next[j] = old[page_of(source)];
        taken[page_of(source)] = 1;
        if (source != first) {  // the page moves whole: only the positions follow
          std::copy(origin.begin() + source, origin.begin() + source + P, origin.begin() + first);
          std::copy(rotated.begin() + source, rotated.begin() + source + P,
                    rotated.begin() + first);
        }
        continue;
      }
      if (!taken[j] && !pool.Frozen(old[j])) {
        next[j] = old[j];
        taken[j] = 1;
      } else {
        // Pages before the first source page of this one hold no row still to be read.
        const size_t frontier = static_cast<size_t>(page_of(source));
        while (dead < frontier && (taken[dead] || pool.Frozen(old[dead]))) ++dead;
        if (dead < frontier) {
          next[j] = old[dead];
          taken[dead] = 1;
        } else {
          next[j] = pool.Allocate();
        }
      }
      for (int64_t i = first; i <= last; ++i) {
        const int64_t from = kept[i], from_row = row_of(from), to_row = i - first;
        const int32_t src = old[page_of(from)];
        if (src != next[j] || from_row != to_row) move_row(src, from_row, next[j], to_row);
        origin[i] = origin[from];
        rotated[i] = rotated[from];
      }
    }
    for (size_t p = 0; p < old.size(); ++p) {
      if (!taken[p]) pool.Release(old[p]);
    }
    pages = std::move(next);
    length = n;
    origin.resize(n);
    rotated.resize(n);
  }
  void Clear(PagePool& pool) {
    Truncate(pool, 0);
    channels.clear();  // a cleared head chooses again
  }
  // Releases the residual pages (the store clears the cache with Clear as well).
  void ClearResidual(PagePool& residual_pool);

 private:
  void Truncate(PagePool& pool, int64_t new_length);
};

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_PAGE_POOL_H_
