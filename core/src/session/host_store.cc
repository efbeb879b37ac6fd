// The host store: pages in host memory, the AVX2 paged kernel for decode-sized calls, BLAS block
// products (or the configured sparse engine) for prefill. Inputs on another device are copied to
// the host; the session writes the result back to wherever the caller's output lives.
#include <algorithm>
#include <atomic>
#include <cstring>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/paged_attention.h"
#include "cpu/quest.h"
#include "cpu/sparse_parallel.h"
#include "session/kv_store.h"
#include "session/rope.h"

namespace attnkit::session {
namespace {

// Queries per call up to which the paged kernel runs; longer calls (prefill) gather the cache and
// use BLAS-backed block products.
constexpr int64_t kPagedKernelMaxQueries = 16;

at::Tensor OnHost(const at::Tensor& t) { return t.is_cpu() ? t : t.cpu(); }

using kernels::RowFormat;

using kernels::FormatOf;

// Row `row` of a page in `format` read as floats, written from floats, copied within the pool.
// Per-channel KIVI pages (keys) are written a page at a time (WritePage).
class RowCodec {
 public:
  RowCodec(int page_size, int head_dim, int group_size)
      : P_(page_size), d_(head_dim), group_(group_size) {}

  int64_t RowBytes(RowFormat f) const {
    switch (f) {
      case RowFormat::kFloat32:
        return 4 * d_;
      case RowFormat::kInt8:
        return d_;
      case RowFormat::kInt4:
      case RowFormat::kInt2:
        return static_cast<int64_t>(d_) * kernels::KiviBits(f) / 8;
      default:
        return 2 * d_;
    }
  }
  char* Row(RowFormat f, char* page, int64_t row) const { return page + row * RowBytes(f); }
  // The float16 scales of a row (int8, KIVI values), and the KIVI minimums.
  c10::Half* Scales(RowFormat f, char* page, int64_t row) const {
    return reinterpret_cast<c10::Half*>(page + P_ * RowBytes(f)) + row * (d_ / group_);
  }
  c10::Half* Mins(RowFormat f, char* page, int64_t row) const {
    return Scales(f, page, row) + static_cast<int64_t>(P_) * (d_ / group_);
  }

  void Read(RowFormat f, const char* page, int64_t row, float* x) const {
    kernels::ReadPageRow(f, page, P_, d_, group_, row, x);
  }

  void Write(RowFormat f, char* page, int64_t row, const float* x) const {
    char* dst = Row(f, page, row);
    switch (f) {
      case RowFormat::kFloat16:
        for (int j = 0; j < d_; ++j) reinterpret_cast<c10::Half*>(dst)[j] = c10::Half(x[j]);
        return;
      case RowFormat::kBFloat16:
        for (int j = 0; j < d_; ++j) reinterpret_cast<c10::BFloat16*>(dst)[j] = c10::BFloat16(x[j]);
        return;
      case RowFormat::kInt8:
        kernels::QuantizeRowInt8(x, d_, group_, reinterpret_cast<int8_t*>(dst),
                                 Scales(f, page, row));
        return;
      case RowFormat::kInt4:
      case RowFormat::kInt2:
        for (int g = 0; g < d_ / group_; ++g) {
          kernels::QuantizeKivi(x + g * group_, group_, 1, kernels::KiviBits(f),
                                reinterpret_cast<uint8_t*>(dst), g * group_,
                                Scales(f, page, row) + g, Mins(f, page, row) + g);
        }
        return;
      default:
        std::memcpy(dst, x, d_ * sizeof(float));
    }
  }

  // A per-channel KIVI page from the float rows [n, d] of its first n tokens (n <= page size):
  // each channel quantized over those tokens.
  void WritePage(RowFormat f, char* page, const float* rows, int64_t n) const {
    const int bits = kernels::KiviBits(f);
    const int64_t channel_bytes = static_cast<int64_t>(P_) * bits / 8;
    auto* halves = reinterpret_cast<c10::Half*>(page + d_ * channel_bytes);
    for (int c = 0; c < d_; ++c) {
      kernels::QuantizeKivi(rows + c, n, d_, bits,
                            reinterpret_cast<uint8_t*>(page) + c * channel_bytes, 0, halves + c,
                            halves + d_ + c);
    }
  }

  // Writes a row given in `src_format` (a float format) into a page row of `f`.
  void WriteFrom(RowFormat f, char* page, int64_t row, RowFormat src_format, const char* src,
                 float* buffer) const {
    if (f == src_format) {
      std::memcpy(Row(f, page, row), src, RowBytes(f));
      return;
    }
    ToFloat(src_format, src, buffer);
    Write(f, page, row, buffer);
  }

  // Copies a row between pages (not for per-channel pages).
  void Copy(RowFormat f, char* from_page, int64_t from, char* to_page, int64_t to) const {
    std::memcpy(Row(f, to_page, to), Row(f, from_page, from), RowBytes(f));
    const int64_t ng = d_ / group_;
    if (f == RowFormat::kInt8 || f == RowFormat::kInt4 || f == RowFormat::kInt2) {
      std::memcpy(Scales(f, to_page, to), Scales(f, from_page, from), ng * sizeof(c10::Half));
    }
    if (f == RowFormat::kInt4 || f == RowFormat::kInt2) {
      std::memcpy(Mins(f, to_page, to), Mins(f, from_page, from), ng * sizeof(c10::Half));
    }
  }

  void ToFloat(RowFormat f, const char* src, float* x) const {
    switch (f) {
      case RowFormat::kFloat16:
        for (int j = 0; j < d_; ++j)
          x[j] = static_cast<float>(reinterpret_cast<const c10::Half*>(src)[j]);
        return;
      case RowFormat::kBFloat16:
        for (int j = 0; j < d_; ++j)
          x[j] = static_cast<float>(reinterpret_cast<const c10::BFloat16*>(src)[j]);
        return;
      default:
        std::memcpy(x, src, d_ * sizeof(float));
    }
  }

 private:
  int P_, d_, group_;
};

class HostStore final : public KvStore {
 public:
  explicit HostStore(const StoreContext& context)
      : HostStore(context, kernels::HostLayoutOf(*context.options)) {}

  HostStore(const StoreContext& context, const kernels::HostPageLayout& layout)
      : KvStore(context, at::Device(at::kCPU)),
        dtype_(StorageType(context.options->dtype)),
        session_format_(layout.session),
        key_format_(layout.keys),
        value_format_(layout.values),
        group_(layout.group),
        residual_tokens_(layout.residual_tokens),
        channel_keys_(layout.channel_keys),
        main_page_(layout.main_page),
        think_(layout.think),
        key_dim_(layout.key_dim),
        kept_(layout.kept_channels),
        codec_(main_page_, context.options->head_dim, group_),
        key_codec_(main_page_, layout.key_dim, group_) {
    const SessionOptions& o = *context.options;
    plain_ = layout.plain;
    for (Layer& layer : layers_) {
      std::unique_ptr<ChunkedPagePool> pool;
      if (plain_) {
        pool = std::make_unique<ChunkedPagePool>(o.page_size, o.head_dim, dtype_);
        if (o.sparse_decode.enabled()) pool->EnableKeySummaries();
      } else {
        // KIVI keys: a main page is one quantization group of tokens.
        pool = std::make_unique<ChunkedPagePool>(
            main_page_, o.head_dim, kernels::PageBytes(key_format_, main_page_, key_dim_, group_),
            kernels::PageBytes(value_format_, main_page_, o.head_dim, group_));
        // Quest over quantized pages: the bounds of what attention reads (dequantized rows).
        if (o.sparse_decode.enabled()) pool->EnableKeySummaries();
      }
      pools_.push_back(pool.get());
      layer.pool = std::move(pool);
      if (layout.residual_pool()) {
        auto residual = std::make_unique<ChunkedPagePool>(o.page_size, o.head_dim, dtype_);
        residual_pools_.push_back(residual.get());
        layer.residual_pool = std::move(residual);
      }
    }
  }

  void AppendTo(int layer_index, const at::Tensor& k_in, const at::Tensor& v_in,
                const std::vector<int64_t>& first_rotated,
                absl::Span<const int64_t> sequences) override {
    Materialize(layer_index);
    if (plain_) return AppendPlain(layer_index, k_in, v_in, first_rotated, sequences);
    const SessionOptions& o = *context_.options;
    const at::Tensor k = OnHost(k_in).to(dtype_).contiguous();
    const at::Tensor v = OnHost(v_in).to(dtype_).contiguous();
    // The call's own attention (a prefill) reads these rows as given; the pages hold them
    // compressed for every later call.
    fresh_layer_ = layer_index;
    fresh_keys_ = k;
    fresh_values_ = v;
    fresh_rows_.assign(o.batch_size, -1);
    for (size_t i = 0; i < sequences.size(); ++i) fresh_rows_[sequences[i]] = i;
    const int64_t T = k.size(2), P = o.page_size, Pm = main_page_, R = residual_tokens_;
    const int64_t row = o.head_dim * c10::elementSize(dtype_);
    Layer& layer = layers_[layer_index];
    ChunkedPagePool& pool = *pools_[layer_index];
    ChunkedPagePool* res_pool =
        layer.residual_pool != nullptr ? residual_pools_[layer_index] : nullptr;
    std::vector<float> buffer(o.head_dim), key_rows;
    for (size_t i = 0; i < sequences.size(); ++i) {
      const int64_t b = sequences[i];
      for (int64_t h = 0; h < o.num_kv_heads; ++h) {
        HeadCache& cache = layer.heads[b * o.num_kv_heads + h];
        const int64_t tensor_head = static_cast<int64_t>(i) * o.num_kv_heads + h;
        const char* kb = static_cast<const char*>(k.data_ptr()) + tensor_head * T * row;
        const char* vb = static_cast<const char*>(v.data_ptr()) + tensor_head * T * row;
        const int64_t Lr = cache.residual, Q = cache.length - Lr;
        cache.UnshareFrom(pool, Q / Pm);  // the partial page this append completes, if shared
        if (res_pool != nullptr) cache.UnshareResidual(*res_pool);
        // The oldest `overflow` of [residual window, new tokens] move into the main pages: those
        // beyond the window's R tokens, and with KIVI keys only whole pages (groups) of them,
        // the first completing a partial last page (left partial by eviction).
        const int64_t beyond = std::max<int64_t>(0, Lr + T - R);
        // ThinK: a head that has not chosen its channels keeps every token in the window until
        // the call attending to them chooses (ChooseChannels).
        int64_t overflow = think_ && cache.channels.empty() ? 0 : beyond;
        const int64_t partial = channel_keys_ ? Q % Pm : 0;
        if (channel_keys_) {
          const int64_t need = Pm - partial;
          overflow = beyond < need ? 0 : need + (beyond - need) / Pm * Pm;
        }
        while (static_cast<int64_t>(cache.pages.size()) < (Q + overflow + Pm - 1) / Pm) {
          cache.pages.push_back(pool.Allocate());
        }
        if (channel_keys_ && overflow > 0) {
          // The partial page's tokens as floats, then the moved ones.
          key_rows.resize(static_cast<size_t>((partial + overflow) * o.head_dim));
          for (int64_t i = 0; i < partial; ++i) {
            codec_.Read(key_format_, pool.Keys(cache.pages[(Q - partial) / Pm]), i,
                        key_rows.data() + i * o.head_dim);
          }
        }
        for (int64_t j = 0; j < overflow; ++j) {
          const char *ks, *vs;
          if (j < Lr) {
            const int64_t slot = cache.residual_first + j;
            ks = res_pool->KeyRow(cache.residual_pages[slot / P], slot % P);
            vs = res_pool->ValueRow(cache.residual_pages[slot / P], slot % P);
          } else {
            ks = kb + (j - Lr) * row;
            vs = vb + (j - Lr) * row;
          }
          const int64_t i = Q + j;
          if (channel_keys_) {
            codec_.ToFloat(session_format_, ks, key_rows.data() + (partial + j) * o.head_dim);
          } else {
            WriteKey(cache, pool.Keys(cache.pages[i / Pm]), i % Pm, ks, buffer.data());
          }
          codec_.WriteFrom(value_format_, pool.Values(cache.pages[i / Pm]), i % Pm, session_format_,
                           vs, buffer.data());
        }
        if (channel_keys_ && overflow > 0) {
          // Whole pages from the partial one on (overflow completes every page it touches).
          for (int64_t i = 0; i < partial + overflow; i += Pm) {
            codec_.WritePage(key_format_, pool.Keys(cache.pages[(Q - partial + i) / Pm]),
                             key_rows.data() + i * o.head_dim, Pm);
          }
        }
        if (res_pool != nullptr) {
          const int64_t moved = std::min(overflow, Lr);
          cache.residual -= moved;
          cache.residual_first += moved;
          const int64_t fresh = T - std::max<int64_t>(0, overflow - Lr);  // new tokens kept there
          TrimResidual(cache, *res_pool);
          while (static_cast<int64_t>(cache.residual_pages.size()) <
                 (cache.residual_first + cache.residual + fresh + P - 1) / P) {
            cache.residual_pages.push_back(res_pool->Allocate());
          }
          for (int64_t t = T - fresh; t < T; ++t) {
            const int64_t slot = cache.residual_first + cache.residual++;
            std::memcpy(res_pool->KeyRow(cache.residual_pages[slot / P], slot % P), kb + t * row,
                        row);
            std::memcpy(res_pool->ValueRow(cache.residual_pages[slot / P], slot % P), vb + t * row,
                        row);
          }
        }
        for (int64_t t = 0; t < T; ++t) {
          cache.origin.push_back(layer.seen[b] + t);
          cache.rotated.push_back(first_rotated[i] + t);
        }
        cache.length += T;
      }
      layer.seen[b] += T;
    }
  }

  absl::StatusOr<StepResult> AttendTo(int layer_index, const at::Tensor& q_in, int64_t window,
                                      bool column_sums,
                                      absl::Span<const int64_t> sequences) override {
    const at::Tensor qf = OnHost(q_in).to(at::kFloat).contiguous();  // [B, H, T, d]
    const int64_t T = qf.size(2);
    const Layer& layer = layers_[layer_index];
    // The full-precision rows of the tokens just appended serve this call only.
    struct ForgetFresh {
      HostStore* store;
      ~ForgetFresh() { store->ForgetFreshRows(); }
    } forget{this};
    if (fresh_layer_ != layer_index) ForgetFreshRows();
    attending_ = true;
    StepResult r = MakeResult(layer, T, window, column_sums, sequences);
    const sparse::SparseAttention* sparse = context_.sparse;
    if (T <= kPagedKernelMaxQueries) {
      PagedDecode(layer_index, qf, window, r, sequences);
    } else if (sparse != nullptr && EqualLengths(layer, sequences) &&
               T >= sparse->options().min_sparse_length) {
      for (size_t i = 0; i < sequences.size(); ++i) {
        if (absl::Status s =
                SparsePrefill(layer, sequences[i], i, *sparse, Bf16Prefill(), qf[i], window, r);
            !s.ok()) {
          return s;
        }
      }
    } else {
      DenseGroups(layer, qf, window, r, sequences);
    }
    if (think_) ChooseChannels(layer_index, qf, sequences);
    return r;
  }

  void Keep(int layer_index, int64_t index, const std::vector<int64_t>& kept) override {
    ForgetFreshRows();  // rows move: the last Append's tokens are no longer the last rows
    Layer& layer = layers_[layer_index];
    ChunkedPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layer.heads[index];
    if (plain_) {
      const int64_t row = pool.row_bytes();
      cache.KeepPages(pool, kept, [&](int32_t src, int64_t src_row, int32_t dst, int64_t dst_row) {
        pool.TouchRow(dst, dst_row);
        std::memcpy(pool.KeyRow(dst, dst_row), pool.KeyRow(src, src_row), row);
        std::memcpy(pool.ValueRow(dst, dst_row), pool.ValueRow(src, src_row), row);
      });
      return;
    }
    // Quantized tokens stay in the main pages, residual ones in the window: kept main tokens
    // compact to the front of the main pages, kept residual ones to the front of the window.
    const int64_t Pm = main_page_, Pr = context_.options->page_size;
    const int64_t old_q = cache.length - cache.residual;
    const int64_t new_q = std::lower_bound(kept.begin(), kept.end(), old_q) - kept.begin();
    const int64_t new_residual = static_cast<int64_t>(kept.size()) - new_q;
    ChunkedPagePool* res_pool =
        layer.residual_pool != nullptr ? residual_pools_[layer_index] : nullptr;
    const int64_t row = res_pool != nullptr ? res_pool->row_bytes() : 0;
    // KIVI keys: the pages from the first moved token on are quantized again over their new
    // tokens (read back as floats first); the pages before it keep their groups.
    int64_t first_moved = new_q;
    for (int64_t i = 0; i < new_q; ++i) {
      if (kept[i] != i) {
        first_moved = i;
        break;
      }
    }
    const int64_t requantize_from = first_moved / Pm * Pm;
    std::vector<float> key_rows;
    if (channel_keys_ && first_moved < new_q) {
      const int d = pool.head_dim();
      key_rows.resize(static_cast<size_t>((new_q - requantize_from) * d));
      for (int64_t i = requantize_from; i < new_q; ++i) {
        codec_.Read(key_format_, pool.Keys(cache.pages[kept[i] / Pm]), kept[i] % Pm,
                    key_rows.data() + (i - requantize_from) * d);
      }
    }
    cache.UnshareFrom(pool, first_moved / Pm);
    if (res_pool != nullptr) cache.UnshareResidual(*res_pool);
    cache.residual = new_residual;  // Keep releases the main pages beyond new_q
    cache.Keep(pool, kept, [&](int64_t from, int64_t to) {
      if (from < old_q) {
        pool.TouchRow(cache.pages[to / Pm], to % Pm);  // Quest's summary of the page, if any
        if (!channel_keys_) {
          key_codec_.Copy(key_format_, pool.Keys(cache.pages[from / Pm]), from % Pm,
                          pool.Keys(cache.pages[to / Pm]), to % Pm);
        }
        codec_.Copy(value_format_, pool.Values(cache.pages[from / Pm]), from % Pm,
                    pool.Values(cache.pages[to / Pm]), to % Pm);
      } else {
        const int64_t f = cache.residual_first + from - old_q;
        const int64_t t = cache.residual_first + to - new_q;
        std::memcpy(res_pool->KeyRow(cache.residual_pages[t / Pr], t % Pr),
                    res_pool->KeyRow(cache.residual_pages[f / Pr], f % Pr), row);
        std::memcpy(res_pool->ValueRow(cache.residual_pages[t / Pr], t % Pr),
                    res_pool->ValueRow(cache.residual_pages[f / Pr], f % Pr), row);
      }
    });
    if (!key_rows.empty()) {
      const int d = pool.head_dim();
      for (int64_t i = requantize_from; i < new_q; i += Pm) {
        pool.TouchRow(cache.pages[i / Pm], 0);
        codec_.WritePage(key_format_, pool.Keys(cache.pages[i / Pm]),
                         key_rows.data() + (i - requantize_from) * d, std::min(Pm, new_q - i));
      }
    }
    if (res_pool != nullptr) TrimResidual(cache, *res_pool);
  }

  void WriteValueRows(int layer_index, int64_t index, const std::vector<int64_t>& rows,
                      const at::Tensor& values) override {
    if (rows.empty()) return;
    ForgetFreshRows();
    ChunkedPagePool& pool = *pools_[layer_index];
    Layer& layer = layers_[layer_index];
    HeadCache& cache = layer.heads[index];
    const int64_t P = pool.page_size(), Q = cache.length - cache.residual;
    const int64_t Pr = context_.options->page_size;
    const int d = pool.head_dim();
    const at::Tensor v = OnHost(values).to(at::kFloat).contiguous();
    const float* x = v.data_ptr<float>();
    const int64_t lowest = *std::min_element(rows.begin(), rows.end());
    if (lowest < Q) cache.UnshareFrom(pool, lowest / P);  // shared pages are copied first
    if (layer.residual_pool != nullptr) cache.UnshareResidual(*residual_pools_[layer_index]);
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t i = rows[r];
      if (plain_) {
        codec_.Write(session_format_, pool.Values(cache.page_of(i, P)), i % P, x + r * d);
      } else if (i < Q) {
        codec_.Write(value_format_, pool.Values(cache.pages[i / P]), i % P, x + r * d);
      } else {
        ChunkedPagePool& res = *residual_pools_[layer_index];
        const int64_t slot = cache.residual_first + i - Q;
        codec_.Write(session_format_, res.Values(cache.residual_pages[slot / Pr]), slot % Pr,
                     x + r * d);
      }
    }
  }

  // Not with ThinK (validation refuses eviction.rerotate_keys with key_channel_ratio).
  void Rerotate(int layer_index, int64_t index, const RopeOptions& rope) override {
    ChunkedPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layers_[layer_index].heads[index];
    const int64_t P = pool.page_size(), Q = cache.length - cache.residual;
    const int64_t Pr = context_.options->page_size;
    const int d = pool.head_dim();
    std::vector<float> buffer(d);
    for (int64_t i = 0; i < cache.length; ++i) {
      if (cache.rotated[i] == i) continue;
      if (i < Q) cache.UnshareFrom(pool, i / P);  // the pages from the first turning key on
      if (layers_[layer_index].residual_pool != nullptr) {
        cache.UnshareResidual(*residual_pools_[layer_index]);
      }
      break;
    }
    if (channel_keys_) {
      // A KIVI key page is quantized again when any of its tokens turns.
      std::vector<float> rows(static_cast<size_t>(P * d));
      for (int64_t p0 = 0; p0 < Q; p0 += P) {
        const int64_t n = std::min(P, Q - p0);
        bool turns = false;
        for (int64_t i = p0; i < p0 + n; ++i) turns = turns || cache.rotated[i] != i;
        if (!turns) continue;
        pool.TouchRow(cache.pages[p0 / P], 0);
        char* page = pool.Keys(cache.pages[p0 / P]);
        for (int64_t i = 0; i < n; ++i) {
          codec_.Read(key_format_, page, i, rows.data() + i * d);
          const int64_t delta = p0 + i - cache.rotated[p0 + i];
          if (delta != 0) RotateRow(rows.data() + i * d, at::kFloat, d, delta, rope);
          cache.rotated[p0 + i] = p0 + i;
        }
        codec_.WritePage(key_format_, page, rows.data(), n);
      }
    }
    for (int64_t i = 0; i < cache.length; ++i) {
      const int64_t delta = i - cache.rotated[i];
      if (delta == 0) continue;
      if (plain_) {
        pool.TouchRow(cache.page_of(i, P), i % P);
        RotateRow(pool.KeyRow(cache.page_of(i, P), i % P), pool.dtype(), d, delta, rope);
      } else if (i < Q) {
        pool.TouchRow(cache.pages[i / P], i % P);
        char* page = pool.Keys(cache.pages[i / P]);
        codec_.Read(key_format_, page, i % P, buffer.data());
        RotateRow(buffer.data(), at::kFloat, d, delta, rope);
        codec_.Write(key_format_, page, i % P, buffer.data());
      } else {
        ChunkedPagePool& res = *residual_pools_[layer_index];
        const int64_t slot = cache.residual_first + i - Q;
        RotateRow(res.KeyRow(cache.residual_pages[slot / Pr], slot % Pr), dtype_, d, delta, rope);
      }
      cache.rotated[i] = i;
    }
  }

  int64_t max_decode_queries() const override { return kPagedKernelMaxQueries; }

  std::unique_ptr<KvStore> ShareForFork(const StoreContext& context) override {
    auto fork = std::make_unique<HostStore>(context);
    for (size_t l = 0; l < layers_.size(); ++l) {
      Layer& mine = layers_[l];
      Layer& theirs = fork->layers_[l];
      auto pool = pools_[l]->ShareFrozen();
      fork->pools_[l] = pool.get();
      theirs.pool = std::move(pool);
      if (mine.residual_pool != nullptr) {
        auto residual = residual_pools_[l]->ShareFrozen();
        fork->residual_pools_[l] = residual.get();
        theirs.residual_pool = std::move(residual);
      }
      theirs.heads = mine.heads;
      theirs.seen = mine.seen;
    }
    fork->sparse_density_ = sparse_density_;
    return fork;
  }

 private:
  // A main page's key row `row` as head_dim floats (ThinK: the kept channels in place, the
  // dropped ones 0, as ThinKPress's zeroed keys read).
  void ReadKey(const HeadCache& cache, const char* page, int64_t row, float* x) const {
    if (!think_) return codec_.Read(key_format_, page, row, x);
    key_codec_.Read(key_format_, page, row, x);  // the kept channels, packed at the front
    // Spread backwards: kept channel c (>= c) moves to its place, the others become 0.
    int c = kept_ - 1;
    for (int j = context_.options->head_dim - 1; j >= 0; --j) {
      if (c >= 0 && cache.channels[c] == j) {
        x[j] = x[c--];
      } else {
        x[j] = 0.0f;
      }
    }
  }

  // Writes a key row given in the session format (head_dim channels) into a main page row:
  // converted, and with ThinK only the head's kept channels. `buffer` holds head_dim floats.
  void WriteKey(const HeadCache& cache, char* page, int64_t row, const char* src,
                float* buffer) const {
    if (!think_) return codec_.WriteFrom(key_format_, page, row, session_format_, src, buffer);
    codec_.ToFloat(session_format_, src, buffer);
    for (int c = 0; c < kept_; ++c) buffer[c] = buffer[cache.channels[c]];  // ascending: safe
    std::fill(buffer + kept_, buffer + key_dim_, 0.0f);  // the padding to whole vectors
    key_codec_.Write(key_format_, page, row, buffer);
  }

  // ThinK (kvpress's ThinKPress.compress): every kv head of `sequences` that has not chosen its
  // channels and holds more than the window's tokens scores each channel by the mean over the
  // last ThinkWindow() queries of qf (and over the head's query heads) of q^2 times the mean over
  // its cached keys of k^2, keeps all but the floor(head_dim * (1 - ratio)) lowest (ties: the
  // lower channel is dropped first), then moves the tokens beyond the window into main pages of
  // the kept channels.
  void ChooseChannels(int layer_index, const at::Tensor& qf, absl::Span<const int64_t> sequences) {
    const SessionOptions& o = *context_.options;
    Layer& layer = layers_[layer_index];
    const ChunkedPagePool& res = *residual_pools_[layer_index];
    const int64_t H = o.num_heads, Hkv = o.num_kv_heads, G = H / Hkv, d = o.head_dim;
    const int64_t T = qf.size(2), W = std::min<int64_t>(T, o.kv_format.ThinkWindow());
    const int64_t Pr = o.page_size;
    const float* qd = qf.data_ptr<float>();
    std::vector<double> qn(d), kn(d);
    std::vector<float> row(d);
    std::vector<int32_t> order(d);
    for (size_t i = 0; i < sequences.size(); ++i) {
      for (int64_t h = 0; h < Hkv; ++h) {
        HeadCache& cache = layer.heads[sequences[i] * Hkv + h];
        if (!cache.channels.empty() || cache.length <= residual_tokens_) continue;
        std::fill(qn.begin(), qn.end(), 0.0);
        std::fill(kn.begin(), kn.end(), 0.0);
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t t = T - W; t < T; ++t) {
            const float* q = qd + ((static_cast<int64_t>(i) * H + h * G + g) * T + t) * d;
            for (int64_t c = 0; c < d; ++c) qn[c] += static_cast<double>(q[c]) * q[c];
          }
        }
        // Every token of a head that has not chosen is in the window.
        for (int64_t t = 0; t < cache.residual; ++t) {
          const int64_t slot = cache.residual_first + t;
          codec_.ToFloat(session_format_, res.KeyRow(cache.residual_pages[slot / Pr], slot % Pr),
                         row.data());
          for (int64_t c = 0; c < d; ++c) kn[c] += static_cast<double>(row[c]) * row[c];
        }
        for (int64_t c = 0; c < d; ++c) {
          qn[c] = qn[c] / static_cast<double>(G * W) * (kn[c] / static_cast<double>(cache.length));
        }
        for (int32_t c = 0; c < d; ++c) order[c] = c;
        std::stable_sort(order.begin(), order.end(),
                         [&](int32_t a, int32_t b) { return qn[a] < qn[b]; });
        cache.channels.assign(order.begin() + (d - kept_), order.end());
        std::sort(cache.channels.begin(), cache.channels.end());
        SpillWindow(layer_index, cache, cache.residual - residual_tokens_);
      }
    }
  }

  // Moves the `count` oldest tokens of the window into the main pages (ThinK, once a head has
  // chosen its channels).
  void SpillWindow(int layer_index, HeadCache& cache, int64_t count) {
    if (count <= 0) return;
    ChunkedPagePool& pool = *pools_[layer_index];
    ChunkedPagePool& res = *residual_pools_[layer_index];
    const int64_t Pm = main_page_, Pr = context_.options->page_size;
    const int64_t Q = cache.length - cache.residual;
    cache.UnshareFrom(pool, Q / Pm);
    cache.UnshareResidual(res);
    while (static_cast<int64_t>(cache.pages.size()) < (Q + count + Pm - 1) / Pm) {
      cache.pages.push_back(pool.Allocate());
    }
    std::vector<float> buffer(context_.options->head_dim);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t slot = cache.residual_first + j, i = Q + j;
      const int32_t page = cache.residual_pages[slot / Pr];
      WriteKey(cache, pool.Keys(cache.pages[i / Pm]), i % Pm, res.KeyRow(page, slot % Pr),
               buffer.data());
      codec_.WriteFrom(value_format_, pool.Values(cache.pages[i / Pm]), i % Pm, session_format_,
                       res.ValueRow(page, slot % Pr), buffer.data());
    }
    cache.residual -= count;
    cache.residual_first += count;
    TrimResidual(cache, res);
  }

  // Drops the window's leading pages no token uses any more, and its trailing ones.
  static void TrimResidual(HeadCache& cache, PagePool& res_pool) {
    const int64_t P = res_pool.page_size();
    if (cache.residual == 0) {
      for (int32_t page : cache.residual_pages) res_pool.Release(page);
      cache.residual_pages.clear();
      cache.residual_first = 0;
      return;
    }
    int64_t drop = cache.residual_first / P;
    for (int64_t p = 0; p < drop; ++p) res_pool.Release(cache.residual_pages[p]);
    cache.residual_pages.erase(cache.residual_pages.begin(), cache.residual_pages.begin() + drop);
    cache.residual_first -= drop * P;
    const size_t needed = (cache.residual_first + cache.residual + P - 1) / P;
    while (cache.residual_pages.size() > needed) {
      res_pool.Release(cache.residual_pages.back());
      cache.residual_pages.pop_back();
    }
  }

  // The plain layout (keys and values in the session dtype, no window): rows copied as given.
  void AppendPlain(int layer_index, const at::Tensor& k_in, const at::Tensor& v_in,
                   const std::vector<int64_t>& first_rotated, absl::Span<const int64_t> sequences) {
    const at::Tensor k = OnHost(k_in), v = OnHost(v_in);
    const int64_t T = k.size(2);
    Layer& layer = layers_[layer_index];
    ChunkedPagePool& pool = *pools_[layer_index];
    const int64_t row = pool.row_bytes(), P = pool.page_size();
    const bool fast = k.scalar_type() == pool.dtype() && v.scalar_type() == pool.dtype() &&
                      k.stride(3) == 1 && v.stride(3) == 1;
    AppendEach(layer, T, first_rotated, sequences, [&](int64_t i, int64_t h, HeadCache& cache) {
      at::Tensor ks, vs;
      const char *kb, *vb;
      int64_t k_stride = row, v_stride = row;
      if (fast) {
        const int64_t es = k.element_size();
        kb = static_cast<const char*>(k.data_ptr()) + (i * k.stride(0) + h * k.stride(1)) * es;
        vb = static_cast<const char*>(v.data_ptr()) + (i * v.stride(0) + h * v.stride(1)) * es;
        k_stride = k.stride(2) * es;
        v_stride = v.stride(2) * es;
      } else {
        ks = k[i][h].to(pool.dtype()).contiguous();
        vs = v[i][h].to(pool.dtype()).contiguous();
        kb = static_cast<const char*>(ks.data_ptr());
        vb = static_cast<const char*>(vs.data_ptr());
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = cache.length + t;
        pool.TouchRow(cache.page_of(i, P), i % P);
        std::memcpy(pool.KeyRow(cache.page_of(i, P), i % P), kb + t * k_stride, row);
        std::memcpy(pool.ValueRow(cache.page_of(i, P), i % P), vb + t * v_stride, row);
      }
    });
  }

  at::Tensor GatherStored(const Layer& layer, const HeadCache& cache, bool values) const override {
    const auto& pool = static_cast<const ChunkedPagePool&>(*layer.pool);
    const int64_t P = pool.page_size();
    if (!plain_) {
      // Dequantized floats: the main pages, then the window; during a prefill the rows of the
      // tokens it appended as they were given (full precision, as KIVI's prefill attends).
      at::Tensor out = at::empty({cache.length, pool.head_dim()}, at::kFloat);
      float* dst = out.data_ptr<float>();
      const int64_t Q = cache.length - cache.residual, d = pool.head_dim();
      for (int64_t i = 0; i < Q; ++i) {
        if (values) {
          codec_.Read(value_format_, pool.Values(cache.pages[i / P]), i % P, dst + i * d);
        } else {
          ReadKey(cache, pool.Keys(cache.pages[i / P]), i % P, dst + i * d);
        }
      }
      const int64_t Pr = context_.options->page_size;
      for (int64_t i = Q; i < cache.length; ++i) {
        const auto& res = static_cast<const ChunkedPagePool&>(*layer.residual_pool);
        const int64_t slot = cache.residual_first + i - Q;
        const int32_t page = cache.residual_pages[slot / Pr];
        codec_.ToFloat(session_format_,
                       values ? res.ValueRow(page, slot % Pr) : res.KeyRow(page, slot % Pr),
                       dst + i * d);
      }
      const int64_t layer_index = &layer - layers_.data();
      const at::Tensor& fresh = values ? fresh_values_ : fresh_keys_;
      if (attending_ && layer_index == fresh_layer_ && fresh.defined() &&
          cache.length >= fresh.size(2)) {
        const int64_t index = &cache - layer.heads.data(), T = fresh.size(2);
        const int64_t Hkv = context_.options->num_kv_heads;
        const int64_t row = fresh_rows_[index / Hkv];  // -1: not in the last Append
        if (row >= 0) out.narrow(0, cache.length - T, T).copy_(fresh[row][index % Hkv]);
      }
      return out;
    }
    at::Tensor out = at::empty({cache.length, pool.head_dim()}, pool.dtype());
    char* dst = static_cast<char*>(out.data_ptr());
    for (int64_t t = 0; t < cache.length; t += P) {
      const int64_t n = std::min(P, cache.length - t);
      const int32_t page = cache.page_of(t, P);
      std::memcpy(dst + t * pool.row_bytes(), values ? pool.Values(page) : pool.Keys(page),
                  n * pool.row_bytes());
    }
    return out;
  }

  // Every kv head of `sequences` through the paged kernel, in parallel over the (sequence, kv
  // head) groups; row i of qf and of the result is sequence sequences[i].
  void PagedDecode(int layer_index, const at::Tensor& qf, int64_t window, StepResult& r,
                   absl::Span<const int64_t> sequences) const {
    const SessionOptions& o = *context_.options;
    const Layer& layer = layers_[layer_index];
    ChunkedPagePool& pool = *pools_[layer_index];
    const int64_t T = qf.size(2), G = o.num_heads / o.num_kv_heads;
    const bool quest = QuestStep(layer_index, T);
    const int64_t max_len = r.window_rows.defined()   ? r.window_rows.size(3)
                            : r.column_sums.defined() ? r.column_sums.size(2)
                                                      : 0;
    // Groups are handed out one at a time rather than split evenly up front, so a thread slowed
    // by another process on its core takes fewer of them instead of holding the step back.
    const int64_t groups = static_cast<int64_t>(sequences.size()) * o.num_kv_heads;
    std::atomic<int64_t> next{0};
    namespace workers = kernels::sparse_parallel;
    workers::RunWorkers(workers::Workers(groups), [&](int64_t) {
      std::vector<float> scratch, rows_buf, sums_buf, kept_q;
      std::vector<const char*> page_keys, page_values, res_keys, res_values;
      std::vector<int64_t> read;  // Quest: the pages read (slots of cache.pages), else empty
      int64_t quest_read = 0, quest_held = 0;
      for (int64_t gi; (gi = next.fetch_add(1)) < groups;) {
        const int64_t b = gi / o.num_kv_heads, kvh = gi % o.num_kv_heads;  // b: the row
        const HeadCache& cache = layer.heads[sequences[b] * o.num_kv_heads + kvh];
        const float* q = qf[b].narrow(0, kvh * G, G).data_ptr<float>();
        read.clear();
        if (quest) QuestPages(pool, cache, q, static_cast<int>(G), &read);
        // The tokens read: every cached one, or those of the pages Quest chose.
        // With a kv_format Quest chooses among the main (quantized) pages; the residual window,
        // the newest tokens, is always read.
        const int64_t main_tokens = cache.length - cache.residual;
        int64_t length = cache.length;
        if (!read.empty()) {
          length = kernels::TokensInPages(read, main_tokens, main_page_) + cache.residual;
          quest_read += length;
          quest_held += cache.length;
        }
        scratch.resize(static_cast<size_t>(G * T * length));
        const size_t pages = read.empty() ? cache.pages.size() : read.size();
        page_keys.resize(pages);
        page_values.resize(pages);
        for (size_t p = 0; p < pages; ++p) {
          const int32_t page = cache.pages[read.empty() ? p : read[p]];
          page_keys[p] = pool.Keys(page);
          page_values[p] = pool.Values(page);
        }
        kernels::PagedGroupArgs args;
        args.main.keys = page_keys.data();
        args.main.values = page_values.data();
        args.main.key_format = key_format_;
        args.main.value_format = value_format_;
        args.main.page_size = main_page_;
        if (think_ && !cache.channels.empty()) {
          // The query rows on the channels the head's main pages kept (0 on the padding).
          const int64_t rows = G * T, kd = key_dim_;
          kept_q.assign(static_cast<size_t>(rows * kd), 0.0f);
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < kept_; ++c) {
              kept_q[r * kd + c] = q[r * o.head_dim + cache.channels[c]];
            }
          }
          args.main.key_dim = key_dim_;
          args.main.q = kept_q.data();
        }
        if (cache.residual > 0) {
          const ChunkedPagePool& res = *residual_pools_[layer_index];
          res_keys.resize(cache.residual_pages.size());
          res_values.resize(cache.residual_pages.size());
          for (size_t p = 0; p < cache.residual_pages.size(); ++p) {
            res_keys[p] = res.Keys(cache.residual_pages[p]);
            res_values[p] = res.Values(cache.residual_pages[p]);
          }
          args.residual.keys = res_keys.data();
          args.residual.values = res_values.data();
          args.residual.first = cache.residual_first;
          args.residual.length = cache.residual;
          args.residual.key_format = args.residual.value_format = session_format_;
        }
        args.page_size = o.page_size;
        args.group_size = group_;
        args.length = length;
        args.rows_per_query = static_cast<int>(G);
        args.queries = T;
        args.head_dim = o.head_dim;
        args.scale = static_cast<float>(o.scale);
        args.q = q;
        args.out = r.out[b].narrow(0, kvh * G, G).data_ptr<float>();
        // The kernel writes the observation as [G, window, length]; the buffers are [G, window,
        // max_len]: compact scratch copies, then one copy per row.
        if (window > 0) {
          rows_buf.assign(static_cast<size_t>(G * window * length), 0.f);
          args.window_rows = rows_buf.data();
          args.window = window;
        }
        if (r.column_sums.defined()) {
          sums_buf.assign(static_cast<size_t>(G * length), 0.f);
          args.column_sums = sums_buf.data();
        }
        args.scratch = scratch.data();
        kernels::PagedGroupAttention(args);
        const int64_t L = length, H = o.num_heads;
        // A compact row of the kernel's into the result's row (zero-filled): whole, or page by
        // page at the cache indices of the pages Quest read (the others got no attention).
        auto place = [&](const float* src, float* dst) {
          if (read.empty()) {
            std::memcpy(dst, src, L * sizeof(float));
            return;
          }
          for (int64_t p : read) {
            const int64_t n = std::min<int64_t>(main_page_, main_tokens - p * main_page_);
            std::memcpy(dst + p * main_page_, src, n * sizeof(float));
            src += n;
          }
          std::memcpy(dst + main_tokens, src, cache.residual * sizeof(float));
        };
        if (window > 0) {
          float* dst = r.window_rows.data_ptr<float>();
          for (int64_t g = 0; g < G; ++g) {
            for (int64_t w = 0; w < window; ++w) {
              place(rows_buf.data() + (g * window + w) * L,
                    dst + ((b * H + kvh * G + g) * window + w) * max_len);
            }
          }
        }
        if (r.column_sums.defined()) {
          float* dst = r.column_sums.data_ptr<float>();
          for (int64_t g = 0; g < G; ++g) {
            place(sums_buf.data() + g * L, dst + (b * H + kvh * G + g) * max_len);
          }
        }
      }
      if (quest_held > 0) {
        quest_read_ += quest_read;
        quest_held_ += quest_held;
      }
    });
  }

  // Quest's choice for one kv head's decode query rows q [G, d]: the slots of cache.pages to read
  // (ascending) into `read`, left empty when every page is to be read. The summaries of pages
  // written since the last step are brought up to date first (only this head's pages: safe beside
  // the other heads' workers).
  void QuestPages(ChunkedPagePool& pool, const HeadCache& cache, const float* q, int G,
                  std::vector<int64_t>* read) const {
    const SparseDecodeOptions& sd = context_.options->sparse_decode;
    const int P = pool.page_size(), d = pool.head_dim();
    const int64_t main_tokens = cache.length - cache.residual;  // the pages Quest chooses among
    const int64_t pages = (main_tokens + P - 1) / P;
    const int64_t to_read = kernels::QuestPagesToRead(main_tokens, pages, P, sd.token_budget,
                                                      sd.start_pages, sd.recent_pages);
    if (to_read >= pages) return;
    std::vector<const float*> summaries(static_cast<size_t>(pages));
    std::vector<float> dequantized;  // a quantized page's rows as floats
    for (int64_t p = 0; p < pages; ++p) {
      const int32_t page = cache.pages[p];
      const int64_t rows = std::min<int64_t>(P, main_tokens - p * P);
      int32_t& done = pool.summarized_rows(page);
      if (done != rows) {  // more: a page cut short (its summary had rows it no longer holds)
        const int64_t from = done < rows ? done : 0;
        float* summary = pool.key_summary(page);
        if (plain_) {
          kernels::ExtendKeySummary(session_format_, pool.Keys(page), d, from, rows, summary);
        } else {
          // Quantized keys: the bounds of the rows as attention reads them (dequantized).
          dequantized.resize(static_cast<size_t>(rows * d));
          for (int64_t r = from; r < rows; ++r) {
            ReadKey(cache, pool.Keys(page), r, dequantized.data() + r * d);
          }
          kernels::ExtendKeySummary(RowFormat::kFloat32,
                                    reinterpret_cast<const char*>(dequantized.data()), d, from,
                                    rows, summary);
        }
        done = static_cast<int32_t>(rows);
      }
      summaries[p] = pool.key_summary(page);
    }
    std::vector<float> bounds(static_cast<size_t>(pages));
    kernels::QuestPageBounds(q, G, d, summaries.data(), pages, bounds.data());
    *read =
        kernels::QuestSelectPages(bounds.data(), pages, to_read, sd.start_pages, sd.recent_pages);
  }

  std::vector<ChunkedPagePool*> pools_;           // layers_[l].pool, typed
  std::vector<ChunkedPagePool*> residual_pools_;  // layers_[l].residual_pool, typed
  at::ScalarType dtype_;                          // the session dtype (the window's rows)
  RowFormat session_format_, key_format_, value_format_;
  int group_;
  int64_t residual_tokens_;
  bool channel_keys_;   // KIVI keys: per channel over a page (group) of tokens
  int main_page_;       // tokens per main page (group_ with KIVI keys, else the session's)
  bool think_;          // ThinK: main key rows hold each head's kept channels only
  int key_dim_;         // channels of a main key row: head_dim, or ThinK's kept ones padded
  int kept_;            // ThinK's kept channels (head_dim without ThinK)
  RowCodec codec_;      // rows of head_dim channels (values; keys but with ThinK)
  RowCodec key_codec_;  // main key rows (key_dim_ channels)
  bool plain_ = true;   // keys and values in the session dtype, no window
  // bfloat16 pages on a CPU with AVX512-BF16: the sparse prefill reads q, k and v as bfloat16
  // (the block-sparse kernel's kBf16Dot path) instead of converting them to float32.
  bool Bf16Prefill() const {
    return plain_ && dtype_ == at::kBFloat16 &&
           kernels::Bf16PathTaken(at::kBFloat16, at::kBFloat16, at::kBFloat16);
  }
  // The last Append's keys and values [B, Hkv, T, d] (session dtype) until the Attend of that
  // layer ends: a prefill attends to its own tokens in full precision (not plain_ stores).
  int fresh_layer_ = -1;
  at::Tensor fresh_keys_, fresh_values_;
  std::vector<int64_t> fresh_rows_;  // per sequence: its row of the fresh tensors, or -1

  bool attending_ = false;  // inside Attend: the only reader of the fresh rows

  void ForgetFreshRows() {
    attending_ = false;
    fresh_layer_ = -1;
    fresh_keys_ = at::Tensor();
    fresh_values_ = at::Tensor();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvStore>> MakeHostStore(const StoreContext& context) {
  return std::unique_ptr<KvStore>(std::make_unique<HostStore>(context));
}

}  // namespace attnkit::session
