// Where a session's keys and values live and where its attention runs. Session (session.cc) only
// orchestrates: it checks the call, asks the store to append and attend, hands the step's
// observation to the eviction policy and tells the store which tokens to keep. A store never calls
// back into the session.
//
// Two stores:
// - the host store (host_store.cc): pages in host memory (ChunkedPagePool), the AVX2 paged decode
//   kernel for short calls, BLAS block products or the sparse engine for prefill;
// - the device store (device_store.cc): one arena of pages on the session's device
//   (ArenaPagePool), every step as tensor operations there, decode through the fused CUDA kernel
//   and prefill through the block-sparse engine where they apply. On the CPU it runs for tests
//   (session_testing.h), so its code is checked on machines without a GPU.
// The page format is the store's business: the session sees token counts, positions and bytes.
#ifndef ATTNKIT_CORE_SESSION_KV_STORE_H_
#define ATTNKIT_CORE_SESSION_KV_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attnkit/config.h"
#include "attnkit/config_parser.h"
#include "attnkit/sparse/sparse_attention.h"
#include "session/page_pool.h"

namespace attnkit::util {
class ArchiveReader;
class ArchiveWriter;
}  // namespace attnkit::util

namespace attnkit::session {

// The element type of a session's pages.
inline at::ScalarType StorageType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    default:
      return at::kFloat;
  }
}

// One attention call's result on the store's device: `out` float32 [B, H, T, d]; the observation
// the policy asked for: `window_rows` float32 [B, H, window, max_len] (the probabilities of the
// last `window` queries), `column_sums` float32 [B, H, max_len] (summed over every query); max_len
// is the longest kv head's length after the append, shorter heads are zero-padded.
struct StepResult {
  at::Tensor out;
  at::Tensor window_rows;
  at::Tensor column_sums;
};

// What a store needs besides the session's options: the configured sparse engine (null for dense
// prefill), owned by the session and outliving the store.
struct StoreContext {
  const SessionOptions* options = nullptr;
  const sparse::SparseAttention* sparse = nullptr;
};

class KvStore {
 public:
  virtual ~KvStore() = default;

  // Appends the T new tokens of `layer`: k, v [S, Hkv, T, d] (any device, dtype and strides),
  // where tensor row i holds the tokens of sequence sequences[i] (an empty `sequences`: every
  // sequence of the batch, S = batch_size). `first_rotated[i]` is the RoPE position the host
  // gave sequence sequences[i]'s first new token.
  void Append(int layer, const at::Tensor& k, const at::Tensor& v,
              const std::vector<int64_t>& first_rotated, absl::Span<const int64_t> sequences = {}) {
    AppendTo(layer, k, v, first_rotated, Resolve(sequences));
  }
  // Causal attention of q [S, H, T, d] (the T tokens just appended are the last of each cache;
  // row i of q, and of the result, is sequence sequences[i] as in Append) with the observation
  // of the last `window` queries (0: none) and, when `column_sums`, every query's probabilities
  // summed.
  absl::StatusOr<StepResult> Attend(int layer, const at::Tensor& q, int64_t window,
                                    bool column_sums, absl::Span<const int64_t> sequences = {}) {
    return AttendTo(layer, q, window, column_sums, Resolve(sequences));
  }
  // Keeps the tokens `kept` (ascending) of head `index` (= sequence * Hkv + kv head) of `layer`.
  virtual void Keep(int layer, int64_t index, const std::vector<int64_t>& kept) = 0;
  // Ends a round of Keep calls on `layer` (a store that batches its moves runs them here).
  virtual void FinishKeep(int layer) {}
  // Overwrites the values of head `index`'s cache rows `rows` with `values` (float32 [rows, d],
  // any device), stored in the store's format (rounded to 16 bits, or quantized again row by
  // row): CaM's merged values.
  virtual void WriteValueRows(int layer, int64_t index, const std::vector<int64_t>& rows,
                              const at::Tensor& values) = 0;
  // Re-rotates head `index`'s keys so that each carries its cache index as its RoPE position.
  virtual void Rerotate(int layer, int64_t index, const RopeOptions& rope) = 0;
  // The longest call (queries) its paged decode kernel takes; longer calls run as prefill.
  virtual int64_t max_decode_queries() const = 0;
  // Attention of q [S, H, T, d] over `layer`'s cache as it is, with no causal mask (every query
  // sees every cached token) and nothing appended: an observe-only call (Session::Observe). Row i
  // of q and of the result is sequence sequences[i] (empty: every sequence, S = batch_size). The
  // result has the layout of Attend's; dense on every store (plain ATen on device()), whatever
  // the sparse mode.
  absl::StatusOr<StepResult> AttendCache(int layer, const at::Tensor& q, int64_t window,
                                         bool column_sums,
                                         absl::Span<const int64_t> sequences = {}) const;

  // Float32 keys of every kv head of sequence b, [Hkv, max_len, d] zero-padded, on device() (what
  // the scorers that read keys take).
  at::Tensor SequenceKeys(int layer, int64_t b) const;
  // The same for the values (what EXPECTED_ATTENTION's value norms read).
  at::Tensor SequenceValues(int layer, int64_t b) const;
  // A layer holds no per-head state until its first Append (creation allocates nothing per
  // layer beyond an empty pool): before that its heads read as empty.
  const HeadCache& head(int layer, int64_t index) const {
    const Layer& l = layers_[layer];
    return l.heads.empty() ? EmptyHead() : l.heads[index];
  }
  // Tokens appended so far to sequence b of `layer` (evicted ones included).
  int64_t appended(int layer, int64_t b) const {
    const Layer& l = layers_[layer];
    return l.seen.empty() ? 0 : l.seen[b];
  }
  int64_t heads_per_layer() const;
  int64_t LayerBytes(int layer) const;
  int64_t HeadBytes(int layer, int64_t index) const;
  int64_t BytesHeld() const;
  int64_t BytesReserved() const;
  // BytesHeld by page format, keys and values apart (formats holding no page left out).
  std::vector<FormatBytesView> FormatBytesHeld() const;
  // MaskDensity of the configured sparse engine's last prefill (1.0 before any).
  double sparse_density() const { return sparse_density_; }
  // Quest sparse decode: tokens read by the kv heads' decode attentions that chose pages, and the
  // tokens those heads held (SessionStats' sparse_decode_tokens_read / _held).
  int64_t sparse_decode_tokens_read() const { return quest_read_; }
  int64_t sparse_decode_tokens_held() const { return quest_held_; }
  at::Device device() const { return device_; }
  // Drops every token; pages stay reserved for reuse.
  void Clear();
  // Drops every token of sequence b in every layer (its pages go back to the pools for the
  // other sequences); the other sequences are untouched.
  void ClearSequence(int64_t b);

  // The store's contents for Session::Save() and Fork() (kv_store_state.cc): per layer the tokens
  // appended per sequence and every (sequence, kv head)'s cache: length, positions, residual
  // window and the bytes of its pages in the store's format.
  void SaveState(util::ArchiveWriter& w) const;
  // About how many bytes SaveState writes (the pages and positions), to size the blob once.
  int64_t SavedBytesHint() const;
  // Fills this store (new and empty, made from the same options) from SaveState()'s bytes: the
  // same tokens at the same cache indices, so attention over them is what it was. Contents that
  // do not fit this store's shape are INVALID_ARGUMENT (the store is then to be discarded).
  absl::Status LoadState(util::ArchiveReader& r);
  // A store for a fork (Session::Fork) made with `context` (the fork's options): the same tokens
  // with the pages shared copy-on-write, so nothing is copied until one side writes a page; or
  // nullptr when the store cannot share its pages (the fork then copies SaveState's bytes).
  virtual std::unique_ptr<KvStore> ShareForFork(const StoreContext& context) { return nullptr; }

 protected:
  KvStore(const StoreContext& context, at::Device device);
  // Append and Attend with `sequences` resolved (never empty).
  virtual void AppendTo(int layer, const at::Tensor& k, const at::Tensor& v,
                        const std::vector<int64_t>& first_rotated,
                        absl::Span<const int64_t> sequences) = 0;
  virtual absl::StatusOr<StepResult> AttendTo(int layer, const at::Tensor& q, int64_t window,
                                              bool column_sums,
                                              absl::Span<const int64_t> sequences) = 0;
  absl::Span<const int64_t> Resolve(absl::Span<const int64_t> sequences) const {
    return sequences.empty() ? absl::Span<const int64_t>(all_sequences_) : sequences;
  }
  at::Tensor SequenceRows(int layer, int64_t b, bool values) const;

  struct Layer {
    std::unique_ptr<PagePool> pool;
    // The residual window's pages (the session dtype), when the store keeps one (HeadCache).
    std::unique_ptr<PagePool> residual_pool;
    std::vector<HeadCache> heads;  // [batch * num_kv_heads]
    std::vector<int64_t> seen;     // tokens appended per sequence
  };
  // Whether a call of T queries on `layer` runs Quest (sparse_decode): one query per sequence,
  // past the dense layers, on pages that keep their summaries.
  bool QuestStep(int layer, int64_t T) const {
    return T == 1 && layers_[layer].pool->key_summaries() &&
           layer >= context_.options->sparse_decode.dense_layers;
  }
  // `layer`'s per-head state, created on its first use (every Append starts with this).
  Layer& Materialize(int layer);
  static const HeadCache& EmptyHead();

  // Keys or values [length, d] of one head in the storage dtype, on device().
  virtual at::Tensor GatherStored(const Layer& layer, const HeadCache& cache,
                                  bool values) const = 0;
  at::Tensor Gather(const Layer& layer, const HeadCache& cache, bool values) const {
    return GatherStored(layer, cache, values).to(at::kFloat);
  }

  // The bookkeeping of appending T tokens to every kv head of `sequences`: pages reserved, then
  // write(i, h, cache) stores the rows of tensor row i (sequence sequences[i]) at
  // [cache.length, cache.length + T), then the tokens' original and RoPE positions are recorded
  // and the lengths advance.
  template <typename Write>
  void AppendEach(Layer& layer, int64_t T, const std::vector<int64_t>& first_rotated,
                  absl::Span<const int64_t> sequences, Write write) {
    const SessionOptions& o = *context_.options;
    for (size_t i = 0; i < sequences.size(); ++i) {
      const int64_t b = sequences[i];
      for (int64_t h = 0; h < o.num_kv_heads; ++h) {
        HeadCache& cache = layer.heads[b * o.num_kv_heads + h];
        cache.UnshareFrom(*layer.pool, (cache.length - cache.residual) / layer.pool->page_size());
        cache.Reserve(*layer.pool, T);
        write(static_cast<int64_t>(i), h, cache);
        for (int64_t t = 0; t < T; ++t) {
          cache.origin.push_back(layer.seen[b] + t);
          cache.rotated.push_back(first_rotated[i] + t);
        }
        cache.length += T;
      }
      layer.seen[b] += T;
    }
  }

  // The result and observation buffers of a call of T queries of `sequences` over `layer`
  // (floats on device(), batch dimension sequences.size()).
  StepResult MakeResult(const Layer& layer, int64_t T, int64_t window, bool column_sums,
                        absl::Span<const int64_t> sequences) const;
  // Whether every kv head of `sequences` holds the same number of tokens.
  bool EqualLengths(const Layer& layer, absl::Span<const int64_t> sequences) const;
  // Dense prefill of every kv head of `sequences` (PrefillGroup); q float32 [S, H, T, d].
  void DenseGroups(const Layer& layer, const at::Tensor& q, int64_t window, StepResult& r,
                   absl::Span<const int64_t> sequences) const;
  // Causal attention of a long query chunk, block by block of queries with BLAS products over the
  // keys each block can see; only the observation the policy needs is kept. Rows before
  // `first_row` are skipped, and `out` may be undefined (observation only, after sparse prefill).
  // With `causal` false every query sees the whole cache (the queries are not in it: AttendCache).
  void PrefillGroup(const Layer& layer, int64_t head_index, const at::Tensor& q,
                    const at::Tensor& out, int64_t window, const at::Tensor& window_rows,
                    const at::Tensor& column_sums, int64_t first_row = 0, bool causal = true) const;
  // Prefill of sequence b (every kv head holding the same tokens; row i of q and of the result)
  // through `engine`, which computes the output; the observation is then computed densely for
  // the rows it needs. With `storage_dtype`, q, keys and values reach the engine in the storage
  // dtype (what the CUDA kernels read), else in float32.
  absl::Status SparsePrefill(const Layer& layer, int64_t b, int64_t i,
                             const sparse::SparseAttention& engine, bool storage_dtype,
                             const at::Tensor& q_b, int64_t window, StepResult& r);

  StoreContext context_;
  at::Device device_;
  std::vector<Layer> layers_;
  double sparse_density_ = 1.0;
  // Added to by the decode workers (sparse_decode_tokens_read / _held).
  mutable std::atomic<int64_t> quest_read_{0}, quest_held_{0};
  std::vector<int64_t> all_sequences_;  // 0, 1, ..., batch_size - 1
};

// The host store; tensors on other devices are copied to the host. Holds keys and values in
// FP32, FP16, BF16, INT8 or KIVI INT4/INT2 pages (kv_format).
absl::StatusOr<std::unique_ptr<KvStore>> MakeHostStore(const StoreContext& context);
// The device store on `device` (a CUDA device, or the CPU for tests); keys and values in the
// session dtype only (another kv_format is UNIMPLEMENTED).
absl::StatusOr<std::unique_ptr<KvStore>> MakeDeviceStore(const StoreContext& context,
                                                         at::Device device);

}  // namespace attnkit::session

#endif  // ATTNKIT_CORE_SESSION_KV_STORE_H_
