// The host store: pages in host memory, the AVX2 paged kernel for decode-sized calls, BLAS block
// products (or the configured sparse engine) for prefill. Inputs on another device are copied to
// the host; the session writes the result back to wherever the caller's output lives.
#include <algorithm>
#include <cstring>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>

#include "cpu/paged_attention.h"
#include "session/kv_store.h"
#include "session/rope.h"

namespace attnkit::session {
namespace {

// Queries per call up to which the paged kernel runs; longer calls (prefill) gather the cache and
// use BLAS-backed block products.
constexpr int64_t kPagedKernelMaxQueries = 16;

at::Tensor OnHost(const at::Tensor& t) { return t.is_cpu() ? t : t.cpu(); }

class HostStore final : public KvStore {
 public:
  explicit HostStore(const StoreContext& context) : KvStore(context, at::Device(at::kCPU)) {
    const SessionOptions& o = *context.options;
    for (Layer& layer : layers_) {
      auto pool = std::make_unique<ChunkedPagePool>(o.page_size, o.head_dim, StorageType(o.dtype));
      pools_.push_back(pool.get());
      layer.pool = std::move(pool);
    }
  }

  void Append(int layer_index, const at::Tensor& k_in, const at::Tensor& v_in,
              const std::vector<int64_t>& first_rotated) override {
    const at::Tensor k = OnHost(k_in), v = OnHost(v_in);
    const int64_t T = k.size(2);
    Layer& layer = layers_[layer_index];
    const ChunkedPagePool& pool = *pools_[layer_index];
    const int64_t row = pool.row_bytes(), P = pool.page_size();
    const bool fast = k.scalar_type() == pool.dtype() && v.scalar_type() == pool.dtype() &&
                      k.stride(3) == 1 && v.stride(3) == 1;
    AppendEach(layer, T, first_rotated, [&](int64_t b, int64_t h, HeadCache& cache) {
      at::Tensor ks, vs;
      const char *kb, *vb;
      int64_t k_stride = row, v_stride = row;
      if (fast) {
        const int64_t es = k.element_size();
        kb = static_cast<const char*>(k.data_ptr()) + (b * k.stride(0) + h * k.stride(1)) * es;
        vb = static_cast<const char*>(v.data_ptr()) + (b * v.stride(0) + h * v.stride(1)) * es;
        k_stride = k.stride(2) * es;
        v_stride = v.stride(2) * es;
      } else {
        ks = k[b][h].to(pool.dtype()).contiguous();
        vs = v[b][h].to(pool.dtype()).contiguous();
        kb = static_cast<const char*>(ks.data_ptr());
        vb = static_cast<const char*>(vs.data_ptr());
      }
      for (int64_t t = 0; t < T; ++t) {
        const int64_t i = cache.length + t;
        std::memcpy(pool.KeyRow(cache.page_of(i, P), i % P), kb + t * k_stride, row);
        std::memcpy(pool.ValueRow(cache.page_of(i, P), i % P), vb + t * v_stride, row);
      }
    });
  }

  absl::StatusOr<StepResult> Attend(int layer_index, const at::Tensor& q_in, int64_t window,
                                    bool column_sums) override {
    const SessionOptions& o = *context_.options;
    const at::Tensor qf = OnHost(q_in).to(at::kFloat).contiguous();  // [B, H, T, d]
    const int64_t T = qf.size(2);
    const Layer& layer = layers_[layer_index];
    StepResult r = MakeResult(layer, T, window, column_sums);
    if (T <= kPagedKernelMaxQueries) {
      PagedDecode(layer_index, qf, window, r);
      return r;
    }
    const sparse::SparseAttention* sparse = context_.sparse;
    if (sparse != nullptr && EqualLengths(layer) && T >= sparse->options().min_sparse_length) {
      for (int64_t b = 0; b < o.batch_size; ++b) {
        if (absl::Status s = SparsePrefill(layer, b, *sparse, false, qf[b], window, r); !s.ok()) {
          return s;
        }
      }
      return r;
    }
    DenseGroups(layer, qf, window, r);
    return r;
  }

  void Keep(int layer_index, int64_t index, const std::vector<int64_t>& kept) override {
    Layer& layer = layers_[layer_index];
    const ChunkedPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layer.heads[index];
    const int64_t row = pool.row_bytes(), P = pool.page_size();
    cache.Keep(*layer.pool, kept, [&](int64_t from, int64_t to) {
      std::memcpy(pool.KeyRow(cache.page_of(to, P), to % P),
                  pool.KeyRow(cache.page_of(from, P), from % P), row);
      std::memcpy(pool.ValueRow(cache.page_of(to, P), to % P),
                  pool.ValueRow(cache.page_of(from, P), from % P), row);
    });
  }

  void Rerotate(int layer_index, int64_t index, const RopeOptions& rope) override {
    const ChunkedPagePool& pool = *pools_[layer_index];
    HeadCache& cache = layers_[layer_index].heads[index];
    const int64_t P = pool.page_size();
    for (int64_t i = 0; i < cache.length; ++i) {
      const int64_t delta = i - cache.rotated[i];
      if (delta == 0) continue;
      RotateRow(pool.KeyRow(cache.page_of(i, P), i % P), pool.dtype(), pool.head_dim(), delta,
                rope);
      cache.rotated[i] = i;
    }
  }

  int64_t max_decode_queries() const override { return kPagedKernelMaxQueries; }

 private:
  at::Tensor GatherStored(const Layer& layer, const HeadCache& cache, bool values) const override {
    const auto& pool = static_cast<const ChunkedPagePool&>(*layer.pool);
    at::Tensor out = at::empty({cache.length, pool.head_dim()}, pool.dtype());
    char* dst = static_cast<char*>(out.data_ptr());
    const int64_t P = pool.page_size();
    for (int64_t t = 0; t < cache.length; t += P) {
      const int64_t n = std::min(P, cache.length - t);
      const int32_t page = cache.page_of(t, P);
      std::memcpy(dst + t * pool.row_bytes(), values ? pool.Values(page) : pool.Keys(page),
                  n * pool.row_bytes());
    }
    return out;
  }

  // Every (sequence, kv head) group through the paged kernel, in parallel over the groups.
  void PagedDecode(int layer_index, const at::Tensor& qf, int64_t window, StepResult& r) const {
    const SessionOptions& o = *context_.options;
    const Layer& layer = layers_[layer_index];
    const ChunkedPagePool& pool = *pools_[layer_index];
    const int64_t T = qf.size(2), G = o.num_heads / o.num_kv_heads;
    const int64_t max_len = r.window_rows.defined()   ? r.window_rows.size(3)
                            : r.column_sums.defined() ? r.column_sums.size(2)
                                                      : 0;
    at::parallel_for(0, o.batch_size * o.num_kv_heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch, rows_buf, sums_buf;
      std::vector<const char*> page_keys, page_values;
      for (int64_t gi = begin; gi < end; ++gi) {
        const int64_t b = gi / o.num_kv_heads, kvh = gi % o.num_kv_heads;
        const HeadCache& cache = layer.heads[gi];
        scratch.resize(static_cast<size_t>(G * T * cache.length));
        page_keys.resize(cache.pages.size());
        page_values.resize(cache.pages.size());
        for (size_t p = 0; p < cache.pages.size(); ++p) {
          page_keys[p] = pool.Keys(cache.pages[p]);
          page_values[p] = pool.Values(cache.pages[p]);
        }
        kernels::PagedGroupArgs args;
        args.page_keys = page_keys.data();
        args.page_values = page_values.data();
        args.page_size = o.page_size;
        args.length = cache.length;
        args.dtype = pool.dtype();
        args.rows_per_query = static_cast<int>(G);
        args.queries = T;
        args.head_dim = o.head_dim;
        args.scale = static_cast<float>(o.scale);
        args.q = qf[b].narrow(0, kvh * G, G).data_ptr<float>();
        args.out = r.out[b].narrow(0, kvh * G, G).data_ptr<float>();
        // The kernel writes the observation as [G, window, length]; the buffers are [G, window,
        // max_len]: compact scratch copies, then one copy per row.
        if (window > 0) {
          rows_buf.assign(static_cast<size_t>(G * window * cache.length), 0.f);
          args.window_rows = rows_buf.data();
          args.window = window;
        }
        if (r.column_sums.defined()) {
          sums_buf.assign(static_cast<size_t>(G * cache.length), 0.f);
          args.column_sums = sums_buf.data();
        }
        args.scratch = scratch.data();
        kernels::PagedGroupAttention(args);
        const int64_t L = cache.length, H = o.num_heads;
        if (window > 0) {
          float* dst = r.window_rows.data_ptr<float>();
          for (int64_t g = 0; g < G; ++g) {
            for (int64_t w = 0; w < window; ++w) {
              std::memcpy(dst + ((b * H + kvh * G + g) * window + w) * max_len,
                          rows_buf.data() + (g * window + w) * L, L * sizeof(float));
            }
          }
        }
        if (r.column_sums.defined()) {
          float* dst = r.column_sums.data_ptr<float>();
          for (int64_t g = 0; g < G; ++g) {
            std::memcpy(dst + (b * H + kvh * G + g) * max_len, sums_buf.data() + g * L,
                        L * sizeof(float));
          }
        }
      }
    });
  }

  std::vector<const ChunkedPagePool*> pools_;  // layers_[l].pool, typed
};

}  // namespace

std::unique_ptr<KvStore> MakeHostStore(const StoreContext& context) {
  return std::make_unique<HostStore>(context);
}

}  // namespace attnkit::session
