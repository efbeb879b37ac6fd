// The device store: every page of a layer in one arena on the session's device, every step as
// tensor operations there (rows appended, gathered and compacted by index), decode through the
// fused CUDA kernel and prefill through the block-sparse engine where they apply. The decode
// kernel writes each query head's probabilities into the observation rows on the device; H2O and
// SnapKV add them to scores kept there (eviction::ScoresFollowObservation) and bring them to the
// host only to select. On the CPU this store runs for tests only (session_testing.h).
#include <algorithm>
#include <cstring>
#include <utility>

#include <ATen/Functions.h>
#include <ATen/record_function.h>

#include "absl/strings/str_cat.h"
#include "cpu/quest.h"
#include "cuda/kernels.h"
#include "session/kv_store.h"
#include "session/paged_append.h"
#include "session/rope.h"
#include "util/status_macros.h"

namespace attnkit::session {
namespace {

// Calls longer than this many queries run as prefill on the block-sparse engine (CUDA).
constexpr int64_t kDenseEngineMinQueries = 17;
// Calls of every sequence bringing at most this many tokens append through the resident page
// table (AppendPagedRows); longer ones through index_copy_ with a host-built index.
constexpr int64_t kTableAppendMaxTokens = 64;

// Row indices (ArenaPagePool::Rows) of tokens [0, length) of a head's keys or values.
std::vector<int64_t> RowIndices(const ArenaPagePool& pool, const HeadCache& cache, bool values) {
  std::vector<int64_t> rows(cache.length);
  const int64_t P = pool.page_size();
  for (int64_t i = 0; i < cache.length; ++i) {
    const int32_t page = cache.page_of(i, P);
    rows[i] = values ? pool.ValueRowIndex(page, i % P) : pool.KeyRowIndex(page, i % P);
  }
  return rows;
}

class DeviceStore final : public KvStore {
 public:
  DeviceStore(const StoreContext& context, at::Device device) : KvStore(context, device) {
    const SessionOptions& o = *context.options;
    for (Layer& layer : layers_) {
      auto pool =
          std::make_unique<ArenaPagePool>(o.page_size, o.head_dim, StorageType(o.dtype), device);
      if (o.sparse_decode.enabled()) pool->EnableKeySummaries();
      pools_.push_back(pool.get());
      layer.pool = std::move(pool);
    }
  }

  // On a CUDA device, prefill without a sparse mode still runs on the block-sparse kernel (every
  // causal block).
  absl::Status Init() {
    if (!device_.is_cuda()) return absl::OkStatus();
    SparseOptions dense;
    dense.mode = SparseMode::kDense;
    dense.block_size = 128;
    ATTNKIT_ASSIGN_OR_RETURN(dense_, sparse::SparseAttention::Create(dense));
    return absl::OkStatus();
  }

  // The new tokens' keys and values written into their rows of the arena: for a short call of
  // every sequence by the resident page table (one AppendPagedRows, nothing transferred unless
  // the pages changed), else one index_copy_ for the keys and one for the values.
  void AppendTo(int layer_index, const at::Tensor& k, const at::Tensor& v,
                const std::vector<int64_t>& first_rotated,
                absl::Span<const int64_t> sequences) override {
    RECORD_USER_SCOPE("attnkit::append");  // profiler traces; attnkit-bench host_ops counts in it
    Materialize(layer_index);
    const SessionOptions& o = *context_.options;
    const int64_t T = k.size(2), P = o.page_size;
    Layer& layer = layers_[layer_index];
    ArenaPagePool& pool = *pools_[layer_index];
    int64_t new_pages = 0;
    for (const int64_t b : sequences) {
      for (int64_t kvh = 0; kvh < o.num_kv_heads; ++kvh) {
        const HeadCache& h = layer.heads[b * o.num_kv_heads + kvh];
        new_pages +=
            std::max<int64_t>(0, (h.length + T + P - 1) / P - static_cast<int64_t>(h.pages.size()));
      }
    }
    pool.EnsureFree(new_pages);
    if (TableAppends(sequences, T)) {
      AppendEach(layer, T, first_rotated, sequences, [&](int64_t, int64_t, HeadCache& cache) {
        for (int64_t t = 0; t < T; ++t) {
          const int64_t i = cache.length + t;
          pool.TouchRow(cache.page_of(i, P), i % P);
        }
      });
      const ResidentTable& table = SyncTable(layer_index, T);
      auto rows_of = [&](const at::Tensor& x) {  // the kernel reads rows with a unit inner stride
        const at::Tensor y = x.to(device_, pool.dtype());
        return y.stride(3) == 1 ? y : y.contiguous();
      };
      const absl::Status st =
          AppendPagedRows(pool.Rows(), table.page_ids, table.lengths, P, rows_of(k), rows_of(v));
      // The arguments were checked by the session and the table built here: a failure is a bug or
      // a device fault, which the next call on the device reports.
      if (!st.ok()) table_error_ = st;
      return;
    }
    // The keys' row indices, then the values': [S, Hkv, T] each, in AppendEach's order.
    const int64_t n = static_cast<int64_t>(sequences.size()) * o.num_kv_heads * T;
    std::vector<int64_t> rows_index(2 * n);
    int64_t next = 0;
    AppendEach(layer, T, first_rotated, sequences, [&](int64_t, int64_t, HeadCache& cache) {
      for (int64_t t = 0; t < T; ++t, ++next) {
        const int64_t i = cache.length + t;
        pool.TouchRow(cache.page_of(i, P), i % P);
        rows_index[next] = pool.KeyRowIndex(cache.page_of(i, P), i % P);
        rows_index[n + next] = pool.ValueRowIndex(cache.page_of(i, P), i % P);
      }
    });
    const at::Tensor index = IndexTensor(rows_index, device_);
    at::Tensor rows = pool.Rows();
    // [B, Hkv, T, d] in storage dtype, flattened in the order the row indices were listed.
    rows.index_copy_(0, index.narrow(0, 0, n),
                     k.to(device_, pool.dtype()).contiguous().view({-1, o.head_dim}));
    rows.index_copy_(0, index.narrow(0, n, n),
                     v.to(device_, pool.dtype()).contiguous().view({-1, o.head_dim}));
  }

  absl::StatusOr<StepResult> AttendTo(int layer_index, const at::Tensor& q_in, int64_t window,
                                      bool column_sums,
                                      absl::Span<const int64_t> sequences) override {
    if (!table_error_.ok()) return std::exchange(table_error_, absl::OkStatus());
    const int64_t T = q_in.size(2);
    const Layer& layer = layers_[layer_index];
    const at::Tensor q = q_in.to(device_);
    StepResult r = MakeResult(layer, T, window, column_sums, sequences);
    const sparse::SparseAttention* sparse = context_.sparse;
    const sparse::SparseAttention* engine =
        sparse != nullptr && T >= sparse->options().min_sparse_length ? sparse
        : T >= kDenseEngineMinQueries                                 ? dense_.get()
                                                                      : nullptr;
    if (QuestStep(layer_index, T)) {
      // Every sequence's pages chosen at once; without an observation the fused kernel reads them
      // in one launch (CUDA, 16-bit pages); otherwise tensor operations over the gathered rows
      // give the probabilities too.
      const bool observe = r.window_rows.defined() || r.column_sums.defined();
      const std::vector<std::vector<int64_t>> read = ChooseQuestPages(layer_index, sequences, q);
      if (!observe && FusedDecodeTakes()) {
        ATTNKIT_RETURN_IF_ERROR(FusedDecode(layer_index, sequences, 0, q, r, &read));
      } else {
        const absl::Span<const std::vector<int64_t>> rows(read);
        const int64_t Hkv = context_.options->num_kv_heads;
        for (size_t i = 0; i < sequences.size(); ++i) {
          QuestAttend(layer_index, sequences[i], static_cast<int64_t>(i), q[i], r,
                      rows.subspan(i * Hkv, Hkv));
        }
      }
    } else if (T <= max_decode_queries() && FusedDecodeTakes()) {
      ATTNKIT_RETURN_IF_ERROR(FusedDecode(layer_index, sequences, 0, q, r));
    } else if (engine != nullptr && EqualLengths(layer, sequences) && T > 1) {
      for (size_t i = 0; i < sequences.size(); ++i) {
        ATTNKIT_RETURN_IF_ERROR(
            SparsePrefill(layer, sequences[i], i, *engine, true, q[i], window, r));
      }
    } else {
      DenseGroups(layer, q.to(at::kFloat), window, r, sequences);
    }
    return r;
  }

  void Keep(int layer_index, int64_t index, const std::vector<int64_t>& kept) override {
    ArenaPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layers_[layer_index].heads[index];
    cache.KeepPages(pool, kept, [&](int32_t src, int64_t src_row, int32_t dst, int64_t dst_row) {
      pool.TouchRow(dst, dst_row);
      pool.QueueMove(pool.KeyRowIndex(src, src_row), pool.KeyRowIndex(dst, dst_row));
      pool.QueueMove(pool.ValueRowIndex(src, src_row), pool.ValueRowIndex(dst, dst_row));
    });
  }

  // Every head's moves in one gather and one scatter.
  void FinishKeep(int layer_index) override { pools_[layer_index]->FlushMoves(); }

  void Rerotate(int layer_index, int64_t index, const RopeOptions& rope) override {
    const ArenaPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layers_[layer_index].heads[index];
    std::vector<int64_t> rows;
    std::vector<double> deltas;
    const int64_t P = pool.page_size();
    for (int64_t i = 0; i < cache.length; ++i) {
      const int64_t delta = i - cache.rotated[i];
      if (delta == 0) continue;
      pools_[layer_index]->TouchRow(cache.page_of(i, P), i % P);
      rows.push_back(pool.KeyRowIndex(cache.page_of(i, P), i % P));
      deltas.push_back(static_cast<double>(delta));
      cache.rotated[i] = i;
    }
    RotateRows(pool.Rows(), rows, deltas, rope, pool.head_dim());
  }

  void WriteValueRows(int layer_index, int64_t index, const std::vector<int64_t>& rows,
                      const at::Tensor& values) override {
    if (rows.empty()) return;
    ArenaPagePool& pool = *pools_[layer_index];
    const HeadCache& cache = layers_[layer_index].heads[index];
    const int64_t P = pool.page_size();
    std::vector<int64_t> slots;
    slots.reserve(rows.size());
    for (int64_t i : rows) slots.push_back(pool.ValueRowIndex(cache.page_of(i, P), i % P));
    at::Tensor all = pool.Rows();
    all.index_copy_(0, IndexTensor(slots, device_), values.to(all.device(), all.scalar_type()));
  }

  // The fused CUDA decode kernel takes one query per call.
  int64_t max_decode_queries() const override { return 1; }

 private:
  at::Tensor GatherStored(const Layer& layer, const HeadCache& cache, bool values) const override {
    const auto& pool = static_cast<const ArenaPagePool&>(*layer.pool);
    return pool.Rows().index_select(0, IndexTensor(RowIndices(pool, cache, values), device_));
  }

  // Whether cuda::PagedDecodeAttention takes this session's steps: a CUDA device, bfloat16/float16
  // storage, head dim 64 or 128, at most 8 query heads per kv head.
  bool FusedDecodeTakes() const {
    const SessionOptions& o = *context_.options;
    const at::ScalarType dtype = StorageType(o.dtype);
    return device_.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf) &&
           (o.head_dim == 64 || o.head_dim == 128) && o.num_heads / o.num_kv_heads <= 8 &&
           o.scale > 0;
  }

  // One decode token of each of `sequences` (rows first_row.. of q [S, H, 1, d] and of the
  // result) through one cuda::PagedDecodeAttention call over the arena's pages: the kernel's kv
  // head rows are (sequence, kv head) pairs and its query rows (sequence, query head) pairs, so a
  // batch of ragged sequences is one launch.
  // With a policy observing, the kernel writes each query head's own probabilities (score rows
  // [H, max_len] per sequence) into the observation rows, what the policy reads.
  // With `read` (Quest, no observation): kv row j's table row holds only the pages at slots
  // read[j] (ascending, so a partial last page stays last) and its length is their tokens.
  absl::Status FusedDecode(int layer_index, absl::Span<const int64_t> sequences, int64_t first_row,
                           const at::Tensor& q, StepResult& r,
                           const std::vector<std::vector<int64_t>>* read = nullptr) {
    RECORD_USER_SCOPE("attnkit::fused_decode");
    const SessionOptions& o = *context_.options;
    const Layer& layer = layers_[layer_index];
    const ArenaPagePool& pool = *pools_[layer_index];
    const bool observe = r.window_rows.defined() || r.column_sums.defined();
    const int64_t S = static_cast<int64_t>(sequences.size()), Hkv = o.num_kv_heads;
    int64_t max_pages = 1, max_len = 0;
    for (const int64_t b : sequences) {
      for (int64_t h = 0; h < Hkv; ++h) {
        const HeadCache& cache = layer.heads[b * Hkv + h];
        max_pages = std::max<int64_t>(max_pages, cache.pages.size());
        max_len = std::max(max_len, cache.length);
      }
    }
    cuda::PagedCache cache;
    cache.max_length = max_len;
    cache.page_size = o.page_size;
    cache.head_dim = o.head_dim;
    cache.dtype = pool.dtype();
    cache.rows_per_sequence = Hkv;  // each sequence splits as it would alone: batch-invariant
    if (read == nullptr && TableAppends(sequences, 1)) {
      // Every sequence: the resident table, current unless the pages changed since the append.
      const ResidentTable& table = SyncTable(layer_index, 0);
      cache.page_ids = table.page_ids;
      cache.lengths = table.lengths;
      cache.arena = pool.Rows();
    } else {
      PageTable(layer, pool, sequences, read, observe, max_pages, &cache);
    }
    // The kernel adds the probabilities straight into the observation rows (zeros from
    // MakeResult): the window's one row, else the column sums; [S * H, longest cache].
    at::Tensor scores;
    if (observe) {
      const at::Tensor rows_of = r.window_rows.defined()
                                     ? r.window_rows.narrow(0, first_row, S).select(2, 0)
                                     : r.column_sums.narrow(0, first_row, S);
      scores = rows_of.view({S * o.num_heads, rows_of.size(2)});  // a view: the kernel writes it
      if (scores.size(1) != max_len) scores = scores.narrow(1, 0, max_len);
    }
    const at::Tensor q_rows =
        q.narrow(0, first_row, S).select(2, 0).reshape({S * o.num_heads, o.head_dim});
    // The kernel writes the float32 result rows in place ([S, H, 1, d] contiguous).
    const at::Tensor out_rows = r.out.narrow(0, first_row, S).view({S * o.num_heads, o.head_dim});
    ATTNKIT_RETURN_IF_ERROR(cuda::PagedDecodeAttention(q_rows.to(pool.dtype()), cache, o.scale,
                                                       observe ? &scores : nullptr,
                                                       /*split_tokens=*/0, &out_rows)
                                .status());
    if (r.window_rows.defined() && r.column_sums.defined()) {
      r.column_sums.narrow(0, first_row, S)
          .narrow(2, 0, max_len)
          .copy_(r.window_rows.narrow(0, first_row, S).select(2, 0).narrow(2, 0, max_len));
    }
    return absl::OkStatus();
  }

  // The page pointers [rows, max_pages], then the lengths [rows], built on the host for
  // `sequences` and sent in one transfer; with `read` (Quest, no observation) only the pages
  // read, and cache->max_length becomes the longest row read.
  void PageTable(const Layer& layer, const ArenaPagePool& pool, absl::Span<const int64_t> sequences,
                 const std::vector<std::vector<int64_t>>* read, bool observe, int64_t max_pages,
                 cuda::PagedCache* cache) const {
    const SessionOptions& o = *context_.options;
    const int64_t Hkv = o.num_kv_heads, rows = static_cast<int64_t>(sequences.size()) * Hkv;
    std::vector<int64_t> table(rows * (max_pages + 1), 0);
    for (int64_t row = 0; row < rows; ++row) {
      const HeadCache& head = layer.heads[sequences[row / Hkv] * Hkv + row % Hkv];
      if (read != nullptr && !observe) {
        const std::vector<int64_t>& slots = (*read)[row];
        for (size_t p = 0; p < slots.size(); ++p) {
          table[row * max_pages + p] = reinterpret_cast<int64_t>(pool.Keys(head.pages[slots[p]]));
        }
        table[rows * max_pages + row] = kernels::TokensInPages(slots, head.length, o.page_size);
        continue;
      }
      for (size_t p = 0; p < head.pages.size(); ++p) {
        table[row * max_pages + p] = reinterpret_cast<int64_t>(pool.Keys(head.pages[p]));
      }
      table[rows * max_pages + row] = head.length;
    }
    if (read != nullptr && !observe) {  // the longest row read, not the longest cache
      cache->max_length = 0;
      for (int64_t row = 0; row < rows; ++row) {
        cache->max_length = std::max(cache->max_length, table[rows * max_pages + row]);
      }
    }
    const at::Tensor device_table = IndexTensor(table, device_);
    cache->page_ptrs = device_table.narrow(0, 0, rows * max_pages).view({rows, max_pages});
    cache->lengths = device_table.narrow(0, rows * max_pages, rows).to(at::kInt);
  }

  // Whether a call of `sequences` bringing T tokens appends by the resident table: every
  // sequence, a short call, and pages the table can describe (16-bit on CUDA; any on the CPU,
  // where the reference runs for tests).
  bool TableAppends(absl::Span<const int64_t> sequences, int64_t T) const {
    const SessionOptions& o = *context_.options;
    const at::ScalarType dtype = StorageType(o.dtype);
    return static_cast<int64_t>(sequences.size()) == o.batch_size && T <= kTableAppendMaxTokens &&
           (device_.is_cpu() || dtype == at::kBFloat16 || dtype == at::kHalf);
  }

  // A layer's page table as the device holds it: every (sequence, kv head)'s page ids, int32
  // [rows, capacity], and its length, int32 [rows], both views of one device tensor, with the
  // host's copy of what was sent (and what the appends since did to the lengths).
  struct ResidentTable {
    int64_t capacity = 0;       // pages per row
    std::vector<int32_t> ids;   // [rows * capacity]
    std::vector<int32_t> lens;  // [rows]
    at::Tensor page_ids, lengths;
  };

  // Brings layer `layer_index`'s resident table up to the host's pages and lengths, where the
  // last `pending` tokens of each row are appended by the caller's kernel next (which advances
  // the device lengths): compares the host's page lists with the copy and sends the whole table
  // in one transfer only when a page list or a length differs (new pages, eviction, a call
  // taken by the other append path, a load). The lengths the caller's append leaves are recorded.
  const ResidentTable& SyncTable(int layer_index, int64_t pending) {
    const SessionOptions& o = *context_.options;
    const Layer& layer = layers_[layer_index];
    if (tables_.size() != layers_.size()) tables_.resize(layers_.size());
    ResidentTable& t = tables_[layer_index];
    const int64_t rows = o.batch_size * o.num_kv_heads;
    int64_t need = 1;
    for (int64_t row = 0; row < rows; ++row) {
      need = std::max<int64_t>(need, layer.heads[row].pages.size());
    }
    bool dirty = !t.page_ids.defined();
    if (need > t.capacity) {
      int64_t capacity = 16;
      while (capacity < need) capacity *= 2;
      t.capacity = capacity;
      t.ids.assign(rows * capacity, 0);
      t.lens.assign(rows, -1);
      dirty = true;
    }
    for (int64_t row = 0; row < rows; ++row) {
      const HeadCache& head = layer.heads[row];
      int32_t* ids = t.ids.data() + row * t.capacity;
      const size_t bytes = head.pages.size() * sizeof(int32_t);
      if (bytes > 0 && std::memcmp(ids, head.pages.data(), bytes) != 0) {
        std::memcpy(ids, head.pages.data(), bytes);
        dirty = true;
      }
      const auto before = static_cast<int32_t>(head.length - pending);
      if (t.lens[row] != before) {
        t.lens[row] = before;
        dirty = true;
      }
    }
    if (dirty) {
      const auto ints = at::TensorOptions().dtype(at::kInt);
      at::Tensor staging =
          at::empty({rows * (t.capacity + 1)}, device_.is_cuda() ? ints.pinned_memory(true) : ints);
      std::memcpy(staging.data_ptr<int32_t>(), t.ids.data(), t.ids.size() * sizeof(int32_t));
      std::memcpy(staging.data_ptr<int32_t>() + t.ids.size(), t.lens.data(),
                  t.lens.size() * sizeof(int32_t));
      const at::Tensor sent = staging.to(device_, /*non_blocking=*/true);
      t.page_ids = sent.narrow(0, 0, rows * t.capacity).view({rows, t.capacity});
      t.lengths = sent.narrow(0, rows * t.capacity, rows);
    }
    for (int64_t row = 0; row < rows; ++row) t.lens[row] += static_cast<int32_t>(pending);
    return t;
  }

  // Quest's choice (sparse_decode) for the decode queries q [S, H, 1, d] of `sequences`: per kv
  // row (sequence i's kv head h is row i * Hkv + h) the slots of its pages to read, ascending
  // (every slot when the budget covers the cache). The stale page summaries of every choosing row
  // are rebuilt in one pass, the bounds of all of them are one batched product on the device over
  // a page table padded to the longest row, they come to the host in one copy, and the pages are
  // chosen as the host store chooses them (kernels::QuestSelectPages). The op count grows with
  // neither the kv heads nor the sequences.
  std::vector<std::vector<int64_t>> ChooseQuestPages(int layer_index,
                                                     absl::Span<const int64_t> sequences,
                                                     const at::Tensor& q_all) {
    RECORD_USER_SCOPE("attnkit::quest_choice");
    const SessionOptions& o = *context_.options;
    const SparseDecodeOptions& sd = o.sparse_decode;
    const Layer& layer = layers_[layer_index];
    ArenaPagePool& pool = *pools_[layer_index];
    const int64_t Hkv = o.num_kv_heads, G = o.num_heads / Hkv, P = o.page_size, d = o.head_dim;
    const int64_t rows = static_cast<int64_t>(sequences.size()) * Hkv;
    std::vector<std::vector<int64_t>> read(rows);
    std::vector<int64_t> choosing, to_read(rows);
    std::vector<const HeadCache*> heads;
    int64_t widest = 0;
    for (int64_t row = 0; row < rows; ++row) {
      const HeadCache& cache = layer.heads[sequences[row / Hkv] * Hkv + row % Hkv];
      const int64_t pages = static_cast<int64_t>(cache.pages.size());
      to_read[row] = kernels::QuestPagesToRead(cache.length, pages, static_cast<int>(P),
                                               sd.token_budget, sd.start_pages, sd.recent_pages);
      if (to_read[row] >= pages) {
        for (int64_t p = 0; p < pages; ++p) read[row].push_back(p);
        continue;
      }
      choosing.push_back(row);
      heads.push_back(&cache);
      widest = std::max(widest, pages);
    }
    if (choosing.empty()) return read;
    UpdateSummaries(pool, heads);
    // The page ids [n, widest] (a row past its head's pages repeats its first page; those bounds
    // are not read), then the choosing rows: one transfer.
    const int64_t n = static_cast<int64_t>(choosing.size());
    std::vector<int64_t> index(n * widest + n);
    for (int64_t i = 0; i < n; ++i) {
      const std::vector<int32_t>& pages = heads[i]->pages;
      for (int64_t p = 0; p < widest; ++p) {
        index[i * widest + p] = pages[p < static_cast<int64_t>(pages.size()) ? p : 0];
      }
      index[n * widest + i] = choosing[i];
    }
    const at::Tensor ids = IndexTensor(index, device_);
    const at::Tensor s =
        pool.summaries().index_select(0, ids.narrow(0, 0, n * widest)).view({n, widest, 2, d});
    at::Tensor q = q_all.select(2, 0).reshape({rows, G, d});
    if (n < rows) q = q.index_select(0, ids.narrow(0, n * widest, n));
    q = q.to(at::kFloat);  // [n, G, d]
    const at::Tensor bounds = at::matmul(q.clamp_min(0), s.select(2, 1).transpose(1, 2))
                                  .add_(at::matmul(q.clamp_max(0), s.select(2, 0).transpose(1, 2)))
                                  .amax(1);  // [n, widest]
    const at::Tensor host = bounds.to(at::kCPU).contiguous();
    const float* all = host.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t row = choosing[i];
      const HeadCache& cache = *heads[i];
      const int64_t pages = static_cast<int64_t>(cache.pages.size());
      read[row] = kernels::QuestSelectPages(all + i * widest, pages, to_read[row], sd.start_pages,
                                            sd.recent_pages);
      quest_read_ += kernels::TokensInPages(read[row], cache.length, static_cast<int>(P));
      quest_held_ += cache.length;
    }
    return read;
  }

  // Exact attention of sequence b's decode query over the pages `read` (ChooseQuestPages) as
  // tensor operations on the device (row i of the result); the observation holds the
  // probabilities of the rows read, zero elsewhere.
  void QuestAttend(int layer_index, int64_t b, int64_t i, const at::Tensor& q_b, StepResult& r,
                   absl::Span<const std::vector<int64_t>> read) {
    const SessionOptions& o = *context_.options;
    const Layer& layer = layers_[layer_index];
    const ArenaPagePool& pool = *pools_[layer_index];
    const int64_t G = o.num_heads / o.num_kv_heads, P = o.page_size;
    const at::Tensor rows = pool.Rows();
    for (int64_t h = 0; h < o.num_kv_heads; ++h) {
      const HeadCache& cache = layer.heads[b * o.num_kv_heads + h];
      const at::Tensor q = q_b.narrow(0, h * G, G).select(1, 0).to(at::kFloat);  // [G, d]
      // The rows read: cache indices, and their key and value rows in the arena.
      std::vector<int64_t> positions, index;
      for (const int64_t p : read[h]) {
        for (int64_t t = p * P; t < std::min(cache.length, (p + 1) * P); ++t)
          positions.push_back(t);
      }
      const int64_t n = static_cast<int64_t>(positions.size());
      index.resize(2 * n);
      for (int64_t j = 0; j < n; ++j) {
        const int32_t page = cache.page_of(positions[j], P);
        index[j] = pool.KeyRowIndex(page, positions[j] % P);
        index[n + j] = pool.ValueRowIndex(page, positions[j] % P);
      }
      const at::Tensor kv = rows.index_select(0, IndexTensor(index, device_)).to(at::kFloat);
      const at::Tensor probs =
          at::softmax(at::matmul(q, kv.narrow(0, 0, n).t()).mul_(o.scale), -1);  // [G, n]
      r.out[i].narrow(0, h * G, G).select(1, 0).copy_(at::matmul(probs, kv.narrow(0, n, n)));
      if (r.window_rows.defined() || r.column_sums.defined()) {
        const at::Tensor where = IndexTensor(positions, device_);
        if (r.window_rows.defined()) {
          r.window_rows[i].narrow(0, h * G, G).select(1, 0).index_copy_(1, where, probs);
        }
        if (r.column_sums.defined()) {
          r.column_sums[i].narrow(0, h * G, G).index_copy_(1, where, probs);
        }
      }
    }
  }

  // Rebuilds the summaries of the pages of `heads` whose rows changed since they were taken, all
  // in one pass: their key rows gathered, the rows past each page's count masked, channel-wise
  // min and max.
  void UpdateSummaries(ArenaPagePool& pool, const std::vector<const HeadCache*>& heads) {
    const int64_t P = pool.page_size();
    std::vector<int64_t> stale, counts, index;
    for (const HeadCache* cache : heads) {
      for (size_t p = 0; p < cache->pages.size(); ++p) {
        const int32_t page = cache->pages[p];
        const int64_t count = std::min<int64_t>(P, cache->length - static_cast<int64_t>(p) * P);
        if (pool.summarized_rows(page) == count) continue;
        pool.summarized_rows(page) = static_cast<int32_t>(count);
        stale.push_back(page);
        counts.push_back(count);
        for (int64_t row = 0; row < P; ++row) index.push_back(pool.KeyRowIndex(page, row));
      }
    }
    if (stale.empty()) return;
    const int64_t m = static_cast<int64_t>(stale.size());
    // The key rows' indices, the pages' counts, then the pages: one transfer.
    index.insert(index.end(), counts.begin(), counts.end());
    index.insert(index.end(), stale.begin(), stale.end());
    const at::Tensor all = IndexTensor(index, device_);
    const at::Tensor keys = pool.Rows()
                                .index_select(0, all.narrow(0, 0, m * P))
                                .to(at::kFloat)
                                .view({m, P, pool.head_dim()});
    const at::Tensor valid = at::arange(P, at::TensorOptions().dtype(at::kLong).device(device_))
                                 .unsqueeze(0)
                                 .lt(all.narrow(0, m * P, m).unsqueeze(1))
                                 .unsqueeze(2);  // [m, P, 1]
    const at::Tensor lo = at::where(valid, keys, at::full({}, INFINITY, keys.options())).amin(1);
    const at::Tensor hi = at::where(valid, keys, at::full({}, -INFINITY, keys.options())).amax(1);
    pool.summaries().index_copy_(0, all.narrow(0, m * P + m, m), at::stack({lo, hi}, 1));
  }

  std::vector<ArenaPagePool*> pools_;               // layers_[l].pool, typed
  std::vector<ResidentTable> tables_;               // per layer, once a call used it
  absl::Status table_error_;                        // a failed table append, for the next call
  std::unique_ptr<sparse::SparseAttention> dense_;  // CUDA: the dense prefill engine
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> MakeDeviceStore(const StoreContext& context,
                                                         at::Device device) {
  // The device store's pages hold the session dtype only.
  const SessionOptions& o = *context.options;
  SessionOptions native = o;
  native.kv_format = KvFormatOptions{};
  if (o.key_type() != native.key_type() || o.value_type() != native.value_type()) {
    return absl::UnimplementedError(absl::StrCat(
        "kv_format: the device store holds keys and values in the session dtype (",
        KvDataTypeName(native.key_type()), ") only; got keys ", KvDataTypeName(o.key_type()),
        ", values ", KvDataTypeName(o.value_type()), " (use a CPU session for other formats)"));
  }
  if (o.kv_format.think()) {
    return absl::UnimplementedError(absl::StrCat(
        "kv_format.key_channel_ratio: ThinK's pruned key pages are kept by the host store only; "
        "got ",
        o.kv_format.key_channel_ratio, " on the device store (use a CPU session for ThinK)"));
  }
  auto store = std::make_unique<DeviceStore>(context, device);
  ATTNKIT_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<KvStore>(std::move(store));
}

}  // namespace attnkit::session
