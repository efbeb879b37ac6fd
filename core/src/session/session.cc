#include "attnkit/session/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "attnkit/eviction/eviction_policy.h"
#include "attnkit/sparse/sparse_attention.h"
#include "cpu/paged_attention.h"
#include "session/page_pool.h"
#include "session/rope.h"
#include "util/status_macros.h"
#include "session/session_testing.h"
#ifdef ATTNKIT_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace attnkit {
namespace {

using session::HeadCache;
using session::PagePool;
using Clock = std::chrono::steady_clock;

// Queries per call up to which the paged kernel runs; longer calls (prefill) gather the cache and
// use BLAS-backed block products.
constexpr int64_t kPagedKernelMaxQueries = 16;

at::ScalarType StorageType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return at::kHalf;
    case DType::kBFloat16:
      return at::kBFloat16;
    default:
      return at::kFloat;
  }
}

std::string Shape(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) absl::StrAppend(&out, i ? ", " : "", s[i]);
  return out + "]";
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

struct LayerState {
  std::unique_ptr<PagePool> pool;
  std::vector<HeadCache> heads;  // [batch * num_kv_heads]
  std::vector<int64_t> seen;     // tokens appended per sequence
  int64_t steps = 0;
  int64_t evictions = 0;
  int64_t evicted_tokens = 0;
};

// Two code paths. The host path (CPU sessions): pages in separate key/value chunks, the paged
// AVX2 decode kernel, BLAS block products for prefill. The tensor path (CUDA sessions; on the CPU
// only for tests): pages in one arena on the session's device, every step as tensor operations
// there (rows appended and compacted by index), decode through the fused CUDA kernel and prefill
// through the block-sparse CUDA kernel where they apply. Both feed the policy the same
// observation; the policy's counters live on the host, so each step's observation rows (and, when
// a policy reads keys, the keys at eviction time) are copied over, while keys and values stay on
// the device.
class SessionImpl : public Session {
 public:
  SessionImpl(const SessionOptions& o, bool tensor_path) : options_(o), tensor_path_(tensor_path) {}

  absl::Status Init() {
    const SessionOptions& o = options_;
    if (o.device == DeviceKind::kCUDA) {
#ifdef ATTNKIT_WITH_CUDA
      if (!cuda::Available()) {
        return absl::FailedPreconditionError(
            "device: CUDA was requested, but no CUDA device is visible to this process");
      }
      device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(o.device_index));
      tensor_path_ = true;
      // Prefill without a sparse mode still runs on the block-sparse kernel (every causal block).
      SparseOptions dense;
      dense.mode = SparseMode::kDense;
      dense.block_size = 128;
      auto engine = sparse::SparseAttention::Create(dense);
      if (!engine.ok()) return engine.status();
      dense_ = std::move(*engine);
#else
      return absl::UnimplementedError(
          "device: CUDA sessions need a build with CUDA (ATTNKIT_CUDA=ON); this one has none");
#endif
    }
    layers_.resize(o.num_layers);
    for (auto& layer : layers_) {
      layer.pool = std::make_unique<PagePool>(o.page_size, o.head_dim, StorageType(o.dtype),
                                              device_, /*arena=*/tensor_path_);
      layer.heads.resize(static_cast<size_t>(o.batch_size) * o.num_kv_heads);
      layer.seen.assign(o.batch_size, 0);
    }
    if (o.sparse.mode != SparseMode::kDense) {
      auto sparse = sparse::SparseAttention::Create(o.sparse);
      if (!sparse.ok()) return sparse.status();
      sparse_ = std::move(*sparse);
    }
    if (o.eviction.enabled) {
      if (o.eviction.rerotate_keys && o.eviction.per_head) {
        return absl::InvalidArgumentError(
            "eviction.rerotate_keys: needs every kv head to keep the same tokens (not per_head)");
      }
      for (int b = 0; b < o.batch_size; ++b) {
        auto policy = EvictionPolicy::Create(o.eviction, o.num_layers, o.num_heads, o.num_kv_heads);
        if (!policy.ok()) return policy.status();
        policies_.push_back(std::move(*policy));
      }
    }
    seen_.assign(o.batch_size, 0);
    return absl::OkStatus();
  }

  const SessionOptions& options() const override { return options_; }

  absl::Status Attend(int layer, const at::Tensor& q_in, const at::Tensor& k_in,
                      const at::Tensor& v_in, const at::Tensor& out) override {
    if (absl::Status s = CheckCall(layer, q_in, k_in, v_in, out); !s.ok()) return s;
    if (tensor_path_) return AttendTensors(layer, q_in, k_in, v_in, out);
    // The session computes on the host: device inputs (a CUDA build's DLPack tensors) are copied
    // over, and `out.copy_` below writes back to wherever `out` lives.
    const at::Tensor q = q_in.is_cpu() ? q_in : q_in.cpu();
    const at::Tensor k = k_in.is_cpu() ? k_in : k_in.cpu();
    const at::Tensor v = v_in.is_cpu() ? v_in : v_in.cpu();
    const SessionOptions& o = options_;
    const int64_t B = o.batch_size, T = q.size(2), G = o.num_heads / o.num_kv_heads;
    LayerState& state = layers_[layer];
    auto t0 = Clock::now();
    Append(state, k, v, layer);
    const at::Tensor qf = q.to(at::kFloat).contiguous();  // [B, H, T, d]
    at::Tensor result = at::empty({B, o.num_heads, T, o.head_dim}, at::kFloat);
    const ObservationNeeds needs = policies_.empty() ? ObservationNeeds{} : policies_[0]->needs();
    int64_t max_len = 0;
    for (const HeadCache& h : state.heads) max_len = std::max(max_len, h.length);
    const int64_t window = std::min<int64_t>(needs.window_rows, T);
    at::Tensor window_rows, column_sums;
    if (window > 0) window_rows = at::zeros({B, o.num_heads, window, max_len}, at::kFloat);
    if (needs.all_queries_sum) column_sums = at::zeros({B, o.num_heads, max_len}, at::kFloat);

    const int64_t groups = B * o.num_kv_heads;
    if (T <= kPagedKernelMaxQueries) {
      at::parallel_for(0, groups, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> scratch;
        for (int64_t gi = begin; gi < end; ++gi) {
          const int64_t b = gi / o.num_kv_heads, kvh = gi % o.num_kv_heads;
          const HeadCache& cache = state.heads[gi];
          scratch.resize(static_cast<size_t>(G * T * cache.length));
          kernels::PagedGroupArgs args;
          std::vector<const char*> page_keys(cache.pages.size()), page_values(cache.pages.size());
          for (size_t p = 0; p < cache.pages.size(); ++p) {
            page_keys[p] = state.pool->Keys(cache.pages[p]);
            page_values[p] = state.pool->Values(cache.pages[p]);
          }
          args.page_keys = page_keys.data();
          args.page_values = page_values.data();
          args.page_size = o.page_size;
          args.length = cache.length;
          args.dtype = state.pool->dtype();
          args.rows_per_query = static_cast<int>(G);
          args.queries = T;
          args.head_dim = o.head_dim;
          args.scale = static_cast<float>(o.scale);
          args.q = qf[b].narrow(0, kvh * G, G).data_ptr<float>();
          args.out = result[b].narrow(0, kvh * G, G).data_ptr<float>();
          // Observation buffers are laid out [G, window, max_len]; the kernel writes [G, window,
          // length]: use a compact scratch copy when the head is shorter than max_len.
          std::vector<float> rows_buf, sums_buf;
          if (window > 0) {
            rows_buf.resize(static_cast<size_t>(G * window * cache.length));
            args.window_rows = rows_buf.data();
            args.window = window;
          }
          if (column_sums.defined()) {
            sums_buf.resize(static_cast<size_t>(G * cache.length));
            args.column_sums = sums_buf.data();
          }
          args.scratch = scratch.data();
          kernels::PagedGroupAttention(args);
          CopyObservation(rows_buf, sums_buf, window, cache.length, max_len, G, b, kvh, window_rows,
                          column_sums);
        }
      });
    } else {
      bool equal_lengths = true;
      for (const HeadCache& h : state.heads) equal_lengths &= h.length == state.heads[0].length;
      const bool sparse = sparse_ != nullptr && equal_lengths && T >= o.sparse.min_sparse_length;
      for (int64_t b = 0; sparse && b < B; ++b) {
        if (absl::Status s = SparsePrefill(state, b, *sparse_, qf[b], result[b], window,
                                           window_rows, column_sums);
            !s.ok()) {
          return s;
        }
      }
      if (!sparse) DenseGroups(state, qf, result, window, window_rows, column_sums);
    }
    out.copy_(result);
    attention_seconds_ += Seconds(t0);
    return FinishStep(layer, window_rows, column_sums, T);
  }

  // The policy's part of a step (observe, evict when over budget) and the step's bookkeeping.
  absl::Status FinishStep(int layer, const at::Tensor& window_rows, const at::Tensor& column_sums,
                          int64_t T) {
    const int64_t B = options_.batch_size;
    LayerState& state = layers_[layer];
    auto t1 = Clock::now();
    if (!policies_.empty()) {
      for (int64_t b = 0; b < B; ++b) {
        if (absl::Status s = ObserveAndEvict(layer, b, window_rows, column_sums, T); !s.ok()) {
          return s;
        }
      }
    }
    policy_seconds_ += Seconds(t1);
    ++state.steps;
    if (layer == 0) {
      for (int64_t b = 0; b < B; ++b) seen_[b] += T;
      ++steps_;
    }
    UpdatePeak();
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int64_t>> Positions(int layer, int sequence,
                                                 int kv_head) const override {
    if (layer < 0 || layer >= options_.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer: must be in [0, ", options_.num_layers, "), got ", layer));
    }
    if (sequence < 0 || sequence >= options_.batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence: must be in [0, ", options_.batch_size, "), got ", sequence));
    }
    if (kv_head < 0 || kv_head >= options_.num_kv_heads) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv_head: must be in [0, ", options_.num_kv_heads, "), got ", kv_head));
    }
    return layers_[layer].heads[sequence * options_.num_kv_heads + kv_head].origin;
  }

  absl::StatusOr<int64_t> NextPosition(int sequence) const override {
    if (sequence < 0 || sequence >= options_.batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence: must be in [0, ", options_.batch_size, "), got ", sequence));
    }
    if (options_.eviction.enabled && options_.eviction.rerotate_keys) {
      return layers_[0].heads[sequence * options_.num_kv_heads].length;
    }
    return seen_[sequence];
  }

  int64_t BytesHeld() const override {
    int64_t bytes = 0;
    for (const auto& layer : layers_)
      bytes += layer.pool->pages_in_use() * layer.pool->page_bytes();
    return bytes;
  }

  SessionStatsView Stats() const override {
    SessionStatsView s;
    s.steps = steps_;
    s.tokens_seen = seen_.empty() ? 0 : *std::max_element(seen_.begin(), seen_.end());
    s.page_size = options_.page_size;
    s.attention_seconds = attention_seconds_;
    s.policy_seconds = policy_seconds_;
    s.peak_bytes_held = peak_bytes_;
    s.sparse_density = sparse_density_;
    for (int l = 0; l < options_.num_layers; ++l) {
      const LayerState& layer = layers_[l];
      LayerStatsView ls{l, 0, layer.pool->pages_in_use() * layer.pool->page_bytes(),
                        layer.evicted_tokens, layer.evictions};
      for (size_t i = 0; i < layer.heads.size(); ++i) {
        const HeadCache& h = layer.heads[i];
        ls.tokens += h.length;
        s.heads.push_back(
            HeadStatsView{l, static_cast<int>(i / options_.num_kv_heads),
                          static_cast<int>(i % options_.num_kv_heads), h.length,
                          static_cast<int64_t>(h.pages.size()) * layer.pool->page_bytes()});
      }
      s.tokens_held += ls.tokens;
      s.bytes_held += ls.bytes;
      s.bytes_reserved += layer.pool->pages_reserved() * layer.pool->page_bytes();
      s.evictions += layer.evictions;
      s.evicted_tokens += layer.evicted_tokens;
      s.layers.push_back(ls);
    }
    return s;
  }

  void Reset() override {
    for (auto& layer : layers_) {
      for (auto& h : layer.heads) h.Clear(*layer.pool);
      std::fill(layer.seen.begin(), layer.seen.end(), 0);
      layer.steps = 0;
    }
    for (auto& p : policies_) p->Reset();
    std::fill(seen_.begin(), seen_.end(), 0);
  }

 private:
  absl::Status CheckCall(int layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& out) const {
    const SessionOptions& o = options_;
    if (layer < 0 || layer >= o.num_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer: must be in [0, ", o.num_layers, "), got ", layer));
    }
    if (q.dim() != 4)
      return absl::InvalidArgumentError(absl::StrCat(
          "q: expected rank 4 [batch, heads, tokens, head_dim], got ", Shape(q.sizes())));
    const int64_t T = q.size(2);
    const std::vector<int64_t> q_shape{o.batch_size, o.num_heads, T, o.head_dim};
    const std::vector<int64_t> kv_shape{o.batch_size, o.num_kv_heads, T, o.head_dim};
    if (q.sizes() != at::IntArrayRef(q_shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("q: expected [batch_size=", o.batch_size, ", num_heads=", o.num_heads,
                       ", tokens, head_dim=", o.head_dim, "], got ", Shape(q.sizes())));
    }
    if (T == 0) return absl::InvalidArgumentError("q: needs at least one token");
    if (k.sizes() != at::IntArrayRef(kv_shape)) {
      return absl::InvalidArgumentError(absl::StrCat("k: expected ", Shape(kv_shape),
                                                     " (num_kv_heads and the tokens of q), got ",
                                                     Shape(k.sizes())));
    }
    if (v.sizes() != at::IntArrayRef(kv_shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("v: expected ", Shape(kv_shape), ", got ", Shape(v.sizes())));
    }
    if (out.sizes() != at::IntArrayRef(q_shape)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "out: expected ", Shape(q_shape), " (the shape of q), got ", Shape(out.sizes())));
    }
    // Layers run in order within a step: layer l follows layer l-1 of the same step.
    const int64_t steps = layers_[layer].steps;
    if (layer > 0 && layers_[layer - 1].steps != steps + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer: layer ", layer, " called for step ", steps, " before layer ",
                       layer - 1, " (layers run in order within a step, starting at layer 0)"));
    }
    if (layer == 0 && layers_.back().steps != steps && o.num_layers > 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("layer: layer 0 called for step ", steps + 1, " before layer ",
                       o.num_layers - 1, " finished step ", steps));
    }
    // Small device inputs (decode steps): one reduction over the three and one round trip (each
    // launch and each wait costs a GPU caller tens of microseconds per layer); they are told apart
    // only when something is not finite. Prompts are checked one by one, without the copy.
    if (!q.is_cpu() && q.numel() + k.numel() + v.numel() <= (int64_t{1} << 20)) {
      const at::Tensor all =
          at::cat({q.reshape(-1), k.to(q.device()).reshape(-1), v.to(q.device()).reshape(-1)});
      if (at::isfinite(all).all().item<bool>()) return absl::OkStatus();
    }
    for (const auto& [t, name] :
         {std::pair<const at::Tensor*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
      if (!at::isfinite(*t).all().item<bool>()) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": contains NaN or infinity"));
      }
    }
    return absl::OkStatus();
  }

  // Copies the new tokens' keys and values into the pages.
  void Append(LayerState& state, const at::Tensor& k, const at::Tensor& v, int layer) {
    const int64_t T = k.size(2);
    PagePool& pool = *state.pool;
    const bool fast = k.scalar_type() == pool.dtype() && v.scalar_type() == pool.dtype() &&
                      k.stride(3) == 1 && v.stride(3) == 1;
    AppendEach(state, layer, T, [&](int64_t b, int64_t h, HeadCache& cache) {
      if (fast) {
        const char* kb = static_cast<const char*>(k.data_ptr());
        const char* vb = static_cast<const char*>(v.data_ptr());
        const int64_t es = k.element_size();
        for (int64_t t = 0; t < T; ++t) {
          std::memcpy(cache.KeyRow(pool, cache.length + t),
                      kb + (b * k.stride(0) + h * k.stride(1) + t * k.stride(2)) * es,
                      pool.row_bytes());
          std::memcpy(cache.ValueRow(pool, cache.length + t),
                      vb + (b * v.stride(0) + h * v.stride(1) + t * v.stride(2)) * es,
                      pool.row_bytes());
        }
      } else {
        const at::Tensor ks = k[b][h].to(pool.dtype()).contiguous();
        const at::Tensor vs = v[b][h].to(pool.dtype()).contiguous();
        for (int64_t t = 0; t < T; ++t) {
          std::memcpy(cache.KeyRow(pool, cache.length + t),
                      static_cast<const char*>(ks.data_ptr()) + t * pool.row_bytes(),
                      pool.row_bytes());
          std::memcpy(cache.ValueRow(pool, cache.length + t),
                      static_cast<const char*>(vs.data_ptr()) + t * pool.row_bytes(),
                      pool.row_bytes());
        }
      }
    });
  }

  // The bookkeeping of appending T tokens to every (sequence, kv head): pages reserved, then
  // write(b, h, cache) stores the rows at [cache.length, cache.length + T), then the tokens'
  // original and RoPE positions are recorded and the lengths advance.
  template <typename Write>
  void AppendEach(LayerState& state, int layer, int64_t T, Write write) {
    const SessionOptions& o = options_;
    for (int64_t b = 0; b < o.batch_size; ++b) {
      const int64_t rotated_base = NextRotated(layer, b);
      for (int64_t h = 0; h < o.num_kv_heads; ++h) {
        HeadCache& cache = state.heads[b * o.num_kv_heads + h];
        cache.Reserve(*state.pool, T);
        write(b, h, cache);
        for (int64_t t = 0; t < T; ++t) {
          cache.origin.push_back(state.seen[b] + t);
          cache.rotated.push_back(rotated_base + t);
        }
        cache.length += T;
      }
      state.seen[b] += T;
    }
  }

  // The RoPE position the host gave the first new token of sequence b (taken before any kv head's
  // cache grows: every kv head's new tokens carry the same positions).
  int64_t NextRotated(int layer, int64_t b) const {
    if (options_.eviction.enabled && options_.eviction.rerotate_keys) {
      return layers_[layer].heads[b * options_.num_kv_heads].length;
    }
    return layers_[layer].seen[b];
  }

  // Tensor path: the new tokens' keys and values written into their rows of the arena, one
  // index_copy_ for the keys and one for the values.
  void AppendTensors(LayerState& state, const at::Tensor& k, const at::Tensor& v, int layer) {
    const SessionOptions& o = options_;
    const int64_t T = k.size(2), P = o.page_size;
    PagePool& pool = *state.pool;
    int64_t new_pages = 0;
    for (const HeadCache& h : state.heads) {
      new_pages +=
          std::max<int64_t>(0, (h.length + T + P - 1) / P - static_cast<int64_t>(h.pages.size()));
    }
    pool.EnsureFree(new_pages);
    // The keys' row indices, then the values': [B, Hkv, T] each, in AppendEach's order.
    const int64_t n = static_cast<int64_t>(state.heads.size()) * T;
    std::vector<int64_t> rows_index(2 * n);
    int64_t next = 0;
    AppendEach(state, layer, T, [&](int64_t, int64_t, HeadCache& cache) {
      for (int64_t t = 0; t < T; ++t, ++next) {
        const int64_t i = cache.length + t;
        rows_index[next] = pool.KeyRowIndex(cache.pages[i / P], i % P);
        rows_index[n + next] = pool.ValueRowIndex(cache.pages[i / P], i % P);
      }
    });
    const at::Tensor index = session::IndexTensor(rows_index, device_);
    at::Tensor rows = pool.Rows();
    // [B, Hkv, T, d] in storage dtype, flattened in the order the row indices were listed.
    rows.index_copy_(0, index.narrow(0, 0, n),
                     k.to(device_, pool.dtype()).contiguous().view({-1, o.head_dim}));
    rows.index_copy_(0, index.narrow(0, n, n),
                     v.to(device_, pool.dtype()).contiguous().view({-1, o.head_dim}));
  }

  // Tensor path of Attend: everything on device_ (inputs elsewhere are copied there once).
  absl::Status AttendTensors(int layer, const at::Tensor& q_in, const at::Tensor& k_in,
                             const at::Tensor& v_in, const at::Tensor& out) {
    const SessionOptions& o = options_;
    const int64_t B = o.batch_size, T = q_in.size(2);
    LayerState& state = layers_[layer];
    auto t0 = Clock::now();
    AppendTensors(state, k_in, v_in, layer);
    const auto floats = at::TensorOptions().dtype(at::kFloat).device(device_);
    const at::Tensor q = q_in.to(device_);
    at::Tensor result = at::empty({B, o.num_heads, T, o.head_dim}, floats);
    const ObservationNeeds needs = policies_.empty() ? ObservationNeeds{} : policies_[0]->needs();
    int64_t max_len = 0;
    for (const HeadCache& h : state.heads) max_len = std::max(max_len, h.length);
    const int64_t window = std::min<int64_t>(needs.window_rows, T);
    at::Tensor window_rows, column_sums;
    if (window > 0) window_rows = at::zeros({B, o.num_heads, window, max_len}, floats);
    if (needs.all_queries_sum) column_sums = at::zeros({B, o.num_heads, max_len}, floats);
    bool equal_lengths = true;
    for (const HeadCache& h : state.heads) equal_lengths &= h.length == state.heads[0].length;
    const sparse::SparseAttention* engine = sparse_ != nullptr && T >= o.sparse.min_sparse_length
                                                ? sparse_.get()
                                            : T > kPagedKernelMaxQueries ? dense_.get()
                                                                         : nullptr;
    bool done = false;
#ifdef ATTNKIT_WITH_CUDA
    if (T == 1 && DecodeKernelTakes()) {
      for (int64_t b = 0; b < B; ++b) {
        ATTNKIT_RETURN_IF_ERROR(DecodeCuda(state, b, q[b], result[b], window_rows, column_sums));
      }
      done = true;
    }
#endif
    if (!done && engine != nullptr && equal_lengths && T > 1) {
      for (int64_t b = 0; b < B; ++b) {
        ATTNKIT_RETURN_IF_ERROR(
            SparsePrefill(state, b, *engine, q[b], result[b], window, window_rows, column_sums));
      }
      done = true;
    }
    if (!done) DenseGroups(state, q.to(at::kFloat), result, window, window_rows, column_sums);
    out.copy_(result);
    attention_seconds_ += Seconds(t0);
    return FinishStep(layer, window_rows, column_sums, T);
  }

#ifdef ATTNKIT_WITH_CUDA
  // The fused CUDA decode kernel takes the step: bfloat16/float16 storage, head dim 64 or 128, at
  // most 8 query heads per kv head.
  bool DecodeKernelTakes() const {
    const SessionOptions& o = options_;
    const at::ScalarType dtype = StorageType(o.dtype);
    return device_.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf) &&
           (o.head_dim == 64 || o.head_dim == 128) && o.num_heads / o.num_kv_heads <= 8 &&
           o.scale > 0;
  }

  // One decode token of sequence b through cuda::PagedDecodeAttention over the arena's pages.
  // With a policy observing, every query head gets its own row of page pointers (its kv head's
  // pages), so the kernel's score rows are the per-head probabilities the policy reads.
  absl::Status DecodeCuda(const LayerState& state, int64_t b, const at::Tensor& q_b,
                          const at::Tensor& result_b, const at::Tensor& window_rows,
                          const at::Tensor& column_sums) {
    const SessionOptions& o = options_;
    const PagePool& pool = *state.pool;
    const int64_t G = o.num_heads / o.num_kv_heads;
    const bool observe = window_rows.defined() || column_sums.defined();
    const int64_t rows = observe ? o.num_heads : o.num_kv_heads;
    int64_t max_pages = 1, max_len = 0;
    for (int64_t h = 0; h < o.num_kv_heads; ++h) {
      const HeadCache& cache = state.heads[b * o.num_kv_heads + h];
      max_pages = std::max<int64_t>(max_pages, cache.pages.size());
      max_len = std::max(max_len, cache.length);
    }
    // The page pointers [rows, max_pages], then the lengths [rows]: one transfer.
    std::vector<int64_t> table(rows * (max_pages + 1), 0);
    for (int64_t r = 0; r < rows; ++r) {
      const HeadCache& cache = state.heads[b * o.num_kv_heads + (observe ? r / G : r)];
      for (size_t p = 0; p < cache.pages.size(); ++p) {
        table[r * max_pages + p] = reinterpret_cast<int64_t>(pool.Keys(cache.pages[p]));
      }
      table[rows * max_pages + r] = cache.length;
    }
    const at::Tensor device_table = session::IndexTensor(table, device_);
    cuda::PagedCache cache;
    cache.page_ptrs = device_table.narrow(0, 0, rows * max_pages).view({rows, max_pages});
    cache.lengths = device_table.narrow(0, rows * max_pages, rows).to(at::kInt);
    cache.max_length = max_len;
    cache.page_size = o.page_size;
    cache.head_dim = o.head_dim;
    cache.dtype = pool.dtype();
    at::Tensor scores;
    if (observe) {
      scores = at::zeros({rows, max_len}, at::TensorOptions().dtype(at::kFloat).device(device_));
    }
    auto step = cuda::PagedDecodeAttention(q_b.select(1, 0).to(pool.dtype()), cache, o.scale,
                                           observe ? &scores : nullptr);
    if (!step.ok()) return step.status();
    result_b.select(1, 0).copy_(*step);
    if (window_rows.defined()) window_rows[b].select(1, 0).narrow(1, 0, max_len).copy_(scores);
    if (column_sums.defined()) column_sums[b].narrow(1, 0, max_len).copy_(scores);
    return absl::OkStatus();
  }
#endif

  // Contiguous float keys or values [length, d] of a head, on the pool's device.
  at::Tensor Gather(const PagePool& pool, const HeadCache& cache, bool values) const {
    return GatherStored(pool, cache, values).to(at::kFloat);
  }

  // The same in the storage dtype.
  at::Tensor GatherStored(const PagePool& pool, const HeadCache& cache, bool values) const {
    if (pool.arena()) {
      return pool.Rows().index_select(
          0, session::IndexTensor(cache.RowIndices(pool, values), pool.device()));
    }
    at::Tensor out = at::empty({cache.length, options_.head_dim}, pool.dtype());
    char* dst = static_cast<char*>(out.data_ptr());
    const int64_t P = pool.page_size();
    for (int64_t t = 0; t < cache.length; t += P) {
      const int64_t n = std::min(P, cache.length - t);
      const char* src = values ? cache.ValueRow(pool, t) : cache.KeyRow(pool, t);
      std::memcpy(dst + t * pool.row_bytes(), src, n * pool.row_bytes());
    }
    return out;
  }

  // PrefillGroup over every (sequence, kv head): qf float32 [B, H, T, d], result [B, H, T, d].
  void DenseGroups(const LayerState& state, const at::Tensor& qf, const at::Tensor& result,
                   int64_t window, const at::Tensor& window_rows, const at::Tensor& column_sums) {
    const SessionOptions& o = options_;
    const int64_t G = o.num_heads / o.num_kv_heads;
    for (int64_t gi = 0; gi < o.batch_size * o.num_kv_heads; ++gi) {
      const int64_t b = gi / o.num_kv_heads, kvh = gi % o.num_kv_heads;
      PrefillGroup(state, gi, qf[b].narrow(0, kvh * G, G), result[b].narrow(0, kvh * G, G), window,
                   window_rows.defined() ? window_rows[b].narrow(0, kvh * G, G) : at::Tensor(),
                   column_sums.defined() ? column_sums[b].narrow(0, kvh * G, G) : at::Tensor());
    }
  }

  // Causal attention of a long query chunk, block by block of queries with BLAS products over the
  // keys each block can see; only the observation the policy needs is kept. Rows before
  // `first_row` are skipped, and `out` may be undefined (observation only, after sparse prefill).
  void PrefillGroup(const LayerState& state, int64_t head_index, const at::Tensor& q,
                    const at::Tensor& out, int64_t window, const at::Tensor& window_rows,
                    const at::Tensor& column_sums, int64_t first_row = 0) {
    const HeadCache& cache = state.heads[head_index];
    const int64_t L = cache.length, T = q.size(1), G = q.size(0);
    const at::Tensor keys = Gather(*state.pool, cache, false);
    const at::Tensor values = Gather(*state.pool, cache, true);
    const int64_t block = std::max<int64_t>(
        16, std::min<int64_t>(T, (int64_t{4} << 20) / std::max<int64_t>(1, G * L)));
    for (int64_t q0 = first_row; q0 < T; q0 += block) {
      const int64_t n = std::min(block, T - q0);
      const int64_t visible = L - T + q0 + n;  // keys the last row of the block sees
      at::Tensor scores =
          at::matmul(q.narrow(1, q0, n), keys.narrow(0, 0, visible).t()).mul_(options_.scale);
      const auto longs = at::TensorOptions().dtype(at::kLong).device(q.device());
      const at::Tensor limit = at::arange(L - T + q0, L - T + q0 + n, longs).unsqueeze(1);
      scores.masked_fill_(at::arange(visible, longs).unsqueeze(0).gt(limit),
                          -std::numeric_limits<float>::infinity());
      at::Tensor probs = at::softmax(scores, -1);  // [G, n, visible]
      if (out.defined())
        out.narrow(1, q0, n).copy_(at::matmul(probs, values.narrow(0, 0, visible)));
      if (window_rows.defined()) {
        const int64_t first_window = T - window;
        const int64_t lo = std::max(q0, first_window), hi = q0 + n;
        if (lo < hi) {
          window_rows.narrow(1, lo - first_window, hi - lo)
              .narrow(2, 0, visible)
              .copy_(probs.narrow(1, lo - q0, hi - lo));
        }
      }
      if (column_sums.defined()) column_sums.narrow(1, 0, visible).add_(probs.sum(1));
    }
  }

  // Sparse prefill of sequence b (every kv head holding the same tokens): the block-sparse kernel
  // computes the output; the policy's observation is computed densely for the rows it needs (the
  // window's last queries, or every row for column sums).
  // `engine` is the configured sparse attention, or (tensor path) the dense one on the device's
  // block-sparse kernel. The tensor path hands it q, keys and values in the storage dtype (what
  // the CUDA kernels read); the host path in float32.
  absl::Status SparsePrefill(const LayerState& state, int64_t b,
                             const sparse::SparseAttention& engine, const at::Tensor& q_in,
                             const at::Tensor& out, int64_t window, const at::Tensor& window_rows,
                             const at::Tensor& column_sums) {
    const SessionOptions& o = options_;
    const PagePool& pool = *state.pool;
    std::vector<at::Tensor> keys, values;
    for (int h = 0; h < o.num_kv_heads; ++h) {
      const HeadCache& cache = state.heads[b * o.num_kv_heads + h];
      keys.push_back(tensor_path_ ? GatherStored(pool, cache, false) : Gather(pool, cache, false));
      values.push_back(tensor_path_ ? GatherStored(pool, cache, true) : Gather(pool, cache, true));
    }
    const at::Tensor q = tensor_path_ ? q_in.to(pool.dtype()) : q_in;
    double density = 1.0;
    auto result = engine.Prefill(q, at::stack(keys), at::stack(values), o.scale, &density);
    if (!result.ok()) return result.status();
    out.copy_(*result);
    if (&engine == sparse_.get()) sparse_density_ = density;
    if (!window_rows.defined() && !column_sums.defined()) return absl::OkStatus();
    const int64_t G = o.num_heads / o.num_kv_heads, T = q.size(1);
    const at::Tensor qf = q_in.to(at::kFloat);
    for (int64_t kvh = 0; kvh < o.num_kv_heads; ++kvh) {
      PrefillGroup(state, b * o.num_kv_heads + kvh, qf.narrow(0, kvh * G, G), at::Tensor(), window,
                   window_rows.defined() ? window_rows[b].narrow(0, kvh * G, G) : at::Tensor(),
                   column_sums.defined() ? column_sums[b].narrow(0, kvh * G, G) : at::Tensor(),
                   column_sums.defined() ? 0 : T - window);
    }
    return absl::OkStatus();
  }

  void CopyObservation(const std::vector<float>& rows, const std::vector<float>& sums,
                       int64_t window, int64_t length, int64_t max_len, int64_t G, int64_t b,
                       int64_t kvh, const at::Tensor& window_rows, const at::Tensor& column_sums) {
    if (window_rows.defined()) {
      float* dst = window_rows.data_ptr<float>();
      for (int64_t g = 0; g < G; ++g)
        for (int64_t w = 0; w < window; ++w) {
          const int64_t head = kvh * G + g;
          std::memcpy(dst + ((b * options_.num_heads + head) * window + w) * max_len,
                      rows.data() + (g * window + w) * length, length * sizeof(float));
        }
    }
    if (column_sums.defined()) {
      float* dst = column_sums.data_ptr<float>();
      for (int64_t g = 0; g < G; ++g) {
        const int64_t head = kvh * G + g;
        std::memcpy(dst + (b * options_.num_heads + head) * max_len, sums.data() + g * length,
                    length * sizeof(float));
      }
    }
  }

  absl::Status ObserveAndEvict(int layer, int64_t b, const at::Tensor& window_rows,
                               const at::Tensor& column_sums, int64_t T) {
    const SessionOptions& o = options_;
    EvictionPolicy& policy = *policies_[b];
    LayerState& state = layers_[layer];
    std::vector<int64_t> lengths(o.num_kv_heads);
    for (int h = 0; h < o.num_kv_heads; ++h)
      lengths[h] = state.heads[b * o.num_kv_heads + h].length;
    const int64_t max_len = *std::max_element(lengths.begin(), lengths.end());
    Observation obs;
    if (window_rows.defined()) obs.window_rows = window_rows[b].narrow(2, 0, max_len);
    if (column_sums.defined()) obs.all_queries_sum = column_sums[b].narrow(1, 0, max_len);
    if (policy.per_head()) obs.lengths = lengths;
    if (absl::Status s = policy.Observe(layer, obs); !s.ok()) return s;
    if (o.eviction.defer_eviction_to_decode && T > 1) return absl::OkStatus();
    const std::vector<int64_t> select_lengths =
        policy.per_head() ? lengths : std::vector<int64_t>{lengths[0]};
    if (!policy.OverBudget(layer, select_lengths)) return absl::OkStatus();
    at::Tensor keys;
    if (policy.needs().keys) {
      keys = at::zeros({o.num_kv_heads, max_len, o.head_dim},
                       at::TensorOptions().dtype(at::kFloat).device(device_));
      for (int h = 0; h < o.num_kv_heads; ++h) {
        const HeadCache& cache = state.heads[b * o.num_kv_heads + h];
        keys[h].narrow(0, 0, cache.length).copy_(Gather(*state.pool, cache, false));
      }
    }
    auto kept = policy.Select(layer, select_lengths, keys);
    if (!kept.ok()) return kept.status();
    for (int h = 0; h < o.num_kv_heads; ++h) {
      HeadCache& cache = state.heads[b * o.num_kv_heads + h];
      const std::vector<int64_t>& row = (*kept)[policy.per_head() ? h : 0];
      const int64_t before = cache.length;
      cache.Compact(*state.pool, row);
      state.evicted_tokens += before - cache.length;
    }
    state.pool->FlushMoves();  // arena pools: every head's rows in one gather and one scatter
    for (int h = 0; o.eviction.rerotate_keys && h < o.num_kv_heads; ++h) {
      session::RerotateKeys(*state.pool, state.heads[b * o.num_kv_heads + h], o.rope, o.head_dim);
    }
    ++state.evictions;
    return absl::OkStatus();
  }

  void UpdatePeak() { peak_bytes_ = std::max(peak_bytes_, BytesHeld()); }

  SessionOptions options_;
  std::vector<LayerState> layers_;
  std::vector<std::unique_ptr<EvictionPolicy>> policies_;
  std::vector<int64_t> seen_;
  int64_t steps_ = 0;
  int64_t peak_bytes_ = 0;
  double attention_seconds_ = 0, policy_seconds_ = 0;
  std::unique_ptr<sparse::SparseAttention> sparse_;
  std::unique_ptr<sparse::SparseAttention> dense_;  // tensor path on CUDA: dense prefill engine
  double sparse_density_ = 1.0;
  bool tensor_path_ = false;
  at::Device device_{at::kCPU};
};

absl::StatusOr<std::unique_ptr<Session>> MakeSession(const SessionOptions& options,
                                                     bool tensor_path) {
  auto session = std::make_unique<SessionImpl>(options, tensor_path);
  if (absl::Status s = session->Init(); !s.ok()) return s;
  return std::unique_ptr<Session>(std::move(session));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Session>> Session::Create(const SessionOptions& options) {
  return MakeSession(options, /*tensor_path=*/false);
}

namespace session {

absl::StatusOr<std::unique_ptr<Session>> CreateTensorPathSessionForTesting(
    const SessionOptions& options) {
  if (options.device != DeviceKind::kCPU) {
    return absl::InvalidArgumentError("device: the testing entry runs the tensor path on the CPU");
  }
  return MakeSession(options, /*tensor_path=*/true);
}

}  // namespace session

}  // namespace attnkit
