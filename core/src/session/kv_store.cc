#include "session/kv_store.h"

#include <algorithm>
#include <limits>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "util/status_macros.h"

namespace attnkit::session {

KvStore::KvStore(const StoreContext& context, at::Device device)
    : context_(context), device_(device) {
  const SessionOptions& o = *context.options;
  layers_.resize(o.num_layers);
  all_sequences_.resize(o.batch_size);
  for (int64_t b = 0; b < o.batch_size; ++b) all_sequences_[b] = b;
}

KvStore::Layer& KvStore::Materialize(int layer_index) {
  const SessionOptions& o = *context_.options;
  Layer& layer = layers_[layer_index];
  if (layer.heads.empty()) {
    layer.heads.resize(static_cast<size_t>(o.batch_size) * o.num_kv_heads);
    layer.seen.assign(o.batch_size, 0);
  }
  return layer;
}

const HeadCache& KvStore::EmptyHead() {
  static const HeadCache* empty = new HeadCache();
  return *empty;
}

int64_t KvStore::heads_per_layer() const {
  return static_cast<int64_t>(context_.options->batch_size) * context_.options->num_kv_heads;
}

at::Tensor KvStore::SequenceKeys(int layer_index, int64_t b) const {
  return SequenceRows(layer_index, b, /*values=*/false);
}

at::Tensor KvStore::SequenceValues(int layer_index, int64_t b) const {
  return SequenceRows(layer_index, b, /*values=*/true);
}

at::Tensor KvStore::SequenceRows(int layer_index, int64_t b, bool values) const {
  const SessionOptions& o = *context_.options;
  const Layer& layer = layers_[layer_index];
  int64_t max_len = 0;
  for (int h = 0; h < o.num_kv_heads; ++h) {
    max_len = std::max(max_len, head(layer_index, b * o.num_kv_heads + h).length);
  }
  at::Tensor keys = at::zeros({o.num_kv_heads, max_len, o.head_dim},
                              at::TensorOptions().dtype(at::kFloat).device(device_));
  for (int h = 0; h < o.num_kv_heads; ++h) {
    const HeadCache& cache = layer.heads[b * o.num_kv_heads + h];
    keys[h].narrow(0, 0, cache.length).copy_(Gather(layer, cache, values));
  }
  return keys;
}

int64_t KvStore::LayerBytes(int layer) const {
  const PagePool& pool = *layers_[layer].pool;
  const PagePool* residual = layers_[layer].residual_pool.get();
  return pool.pages_in_use() * pool.page_bytes() +
         (residual != nullptr ? residual->pages_in_use() * residual->page_bytes() : 0);
}

int64_t KvStore::HeadBytes(int layer, int64_t index) const {
  const HeadCache& head = this->head(layer, index);
  const PagePool* residual = layers_[layer].residual_pool.get();
  return static_cast<int64_t>(head.pages.size()) * layers_[layer].pool->page_bytes() +
         (residual != nullptr
              ? static_cast<int64_t>(head.residual_pages.size()) * residual->page_bytes()
              : 0);
}

int64_t KvStore::BytesHeld() const {
  int64_t bytes = 0;
  for (size_t l = 0; l < layers_.size(); ++l) bytes += LayerBytes(static_cast<int>(l));
  return bytes;
}

std::vector<FormatBytesView> KvStore::FormatBytesHeld() const {
  const SessionOptions& o = *context_.options;
  SessionOptions session_dtype = o;
  session_dtype.kv_format = KvFormatOptions();
  const KvDataType window = session_dtype.key_type();  // the residual window's rows
  std::vector<FormatBytesView> out;
  auto add = [&](KvDataType type, bool values, int64_t bytes) {
    if (bytes == 0) return;
    for (FormatBytesView& f : out) {
      if (f.data_type == type && f.values == values) {
        f.bytes += bytes;
        return;
      }
    }
    out.push_back(FormatBytesView{type, values, bytes});
  };
  for (const Layer& layer : layers_) {
    add(o.key_type(), false, layer.pool->pages_in_use() * layer.pool->key_page_bytes());
    add(o.value_type(), true, layer.pool->pages_in_use() * layer.pool->value_page_bytes());
    if (layer.residual_pool != nullptr) {
      const PagePool& r = *layer.residual_pool;
      add(window, false, r.pages_in_use() * r.key_page_bytes());
      add(window, true, r.pages_in_use() * r.value_page_bytes());
    }
  }
  return out;
}

int64_t KvStore::BytesReserved() const {
  int64_t bytes = 0;
  for (const Layer& layer : layers_) {
    bytes += layer.pool->pages_reserved() * layer.pool->page_bytes();
    if (layer.residual_pool != nullptr) {
      bytes += layer.residual_pool->pages_reserved() * layer.residual_pool->page_bytes();
    }
  }
  return bytes;
}

void KvStore::Clear() {
  for (Layer& layer : layers_) {
    for (HeadCache& h : layer.heads) {
      if (layer.residual_pool != nullptr) h.ClearResidual(*layer.residual_pool);
      h.Clear(*layer.pool);
    }
    std::fill(layer.seen.begin(), layer.seen.end(), 0);
  }
  quest_read_ = 0;
  quest_held_ = 0;
}

void KvStore::ClearSequence(int64_t b) {
  const int64_t Hkv = context_.options->num_kv_heads;
  for (Layer& layer : layers_) {
    if (layer.heads.empty()) continue;
    for (int64_t h = 0; h < Hkv; ++h) {
      HeadCache& cache = layer.heads[b * Hkv + h];
      if (layer.residual_pool != nullptr) cache.ClearResidual(*layer.residual_pool);
      cache.Clear(*layer.pool);
    }
    layer.seen[b] = 0;
  }
}

StepResult KvStore::MakeResult(const Layer& layer, int64_t T, int64_t window, bool column_sums,
                               absl::Span<const int64_t> sequences) const {
  const SessionOptions& o = *context_.options;
  const auto floats = at::TensorOptions().dtype(at::kFloat).device(device_);
  const int64_t S = static_cast<int64_t>(sequences.size());
  int64_t max_len = 0;
  for (const int64_t b : sequences) {
    for (int64_t h = 0; h < o.num_kv_heads; ++h) {
      max_len = std::max(max_len, layer.heads[b * o.num_kv_heads + h].length);
    }
  }
  StepResult r;
  r.out = at::empty({S, o.num_heads, T, o.head_dim}, floats);
  if (window > 0) r.window_rows = at::zeros({S, o.num_heads, window, max_len}, floats);
  if (column_sums) r.column_sums = at::zeros({S, o.num_heads, max_len}, floats);
  return r;
}

bool KvStore::EqualLengths(const Layer& layer, absl::Span<const int64_t> sequences) const {
  const int64_t Hkv = context_.options->num_kv_heads;
  const int64_t first = layer.heads[sequences[0] * Hkv].length;
  for (const int64_t b : sequences) {
    for (int64_t h = 0; h < Hkv; ++h) {
      if (layer.heads[b * Hkv + h].length != first) return false;
    }
  }
  return true;
}

void KvStore::DenseGroups(const Layer& layer, const at::Tensor& qf, int64_t window, StepResult& r,
                          absl::Span<const int64_t> sequences) const {
  const SessionOptions& o = *context_.options;
  const int64_t G = o.num_heads / o.num_kv_heads;
  for (size_t i = 0; i < sequences.size(); ++i) {
    for (int64_t kvh = 0; kvh < o.num_kv_heads; ++kvh) {
      PrefillGroup(layer, sequences[i] * o.num_kv_heads + kvh, qf[i].narrow(0, kvh * G, G),
                   r.out[i].narrow(0, kvh * G, G), window,
                   r.window_rows.defined() ? r.window_rows[i].narrow(0, kvh * G, G) : at::Tensor(),
                   r.column_sums.defined() ? r.column_sums[i].narrow(0, kvh * G, G) : at::Tensor());
    }
  }
}

void KvStore::PrefillGroup(const Layer& layer, int64_t head_index, const at::Tensor& q,
                           const at::Tensor& out, int64_t window, const at::Tensor& window_rows,
                           const at::Tensor& column_sums, int64_t first_row, bool causal) const {
  const HeadCache& cache = layer.heads[head_index];
  const int64_t L = cache.length, T = q.size(1), G = q.size(0);
  const at::Tensor keys = Gather(layer, cache, false);
  const at::Tensor values = Gather(layer, cache, true);
  const int64_t block =
      std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{4} << 20) / std::max<int64_t>(1, G * L)));
  const double scale = context_.options->scale;
  for (int64_t q0 = first_row; q0 < T; q0 += block) {
    const int64_t n = std::min(block, T - q0);
    // Keys the last row of the block sees.
    const int64_t visible = causal ? L - T + q0 + n : L;
    at::Tensor scores = at::matmul(q.narrow(1, q0, n), keys.narrow(0, 0, visible).t()).mul_(scale);
    if (causal) {
      const auto longs = at::TensorOptions().dtype(at::kLong).device(q.device());
      const at::Tensor limit = at::arange(L - T + q0, L - T + q0 + n, longs).unsqueeze(1);
      scores.masked_fill_(at::arange(visible, longs).unsqueeze(0).gt(limit),
                          -std::numeric_limits<float>::infinity());
    }
    at::Tensor probs = at::softmax(scores, -1);  // [G, n, visible]
    if (out.defined()) out.narrow(1, q0, n).copy_(at::matmul(probs, values.narrow(0, 0, visible)));
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

absl::StatusOr<StepResult> KvStore::AttendCache(int layer_index, const at::Tensor& q,
                                                int64_t window, bool column_sums,
                                                absl::Span<const int64_t> sequences) const {
  const SessionOptions& o = *context_.options;
  const Layer& layer = layers_[layer_index];
  const absl::Span<const int64_t> rows = Resolve(sequences);
  const at::Tensor qf = q.to(device_, at::kFloat).contiguous();  // [S, H, T, d]
  const int64_t T = qf.size(2), G = o.num_heads / o.num_kv_heads;
  StepResult r = MakeResult(layer, T, window, column_sums, rows);
  for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) {
    for (int64_t kvh = 0; kvh < o.num_kv_heads; ++kvh) {
      const int64_t gi = rows[i] * o.num_kv_heads + kvh;
      PrefillGroup(layer, gi, qf[i].narrow(0, kvh * G, G), r.out[i].narrow(0, kvh * G, G), window,
                   r.window_rows.defined() ? r.window_rows[i].narrow(0, kvh * G, G) : at::Tensor(),
                   r.column_sums.defined() ? r.column_sums[i].narrow(0, kvh * G, G) : at::Tensor(),
                   /*first_row=*/0, /*causal=*/false);
    }
  }
  return r;
}

absl::Status KvStore::SparsePrefill(const Layer& layer, int64_t b, int64_t i,
                                    const sparse::SparseAttention& engine, bool storage_dtype,
                                    const at::Tensor& q_b, int64_t window, StepResult& r) {
  const SessionOptions& o = *context_.options;
  std::vector<at::Tensor> keys, values;
  for (int h = 0; h < o.num_kv_heads; ++h) {
    const HeadCache& cache = layer.heads[b * o.num_kv_heads + h];
    keys.push_back(storage_dtype ? GatherStored(layer, cache, false) : Gather(layer, cache, false));
    values.push_back(storage_dtype ? GatherStored(layer, cache, true) : Gather(layer, cache, true));
  }
  const at::Tensor q = storage_dtype ? q_b.to(layer.pool->dtype()) : q_b;
  double density = 1.0;
  ATTNKIT_ASSIGN_OR_RETURN(
      at::Tensor out, engine.Prefill(q, at::stack(keys), at::stack(values), o.scale, &density));
  r.out[i].copy_(out);
  if (&engine == context_.sparse) sparse_density_ = density;
  if (!r.window_rows.defined() && !r.column_sums.defined()) return absl::OkStatus();
  const int64_t G = o.num_heads / o.num_kv_heads, T = q.size(1);
  const at::Tensor qf = q_b.to(at::kFloat);
  const bool sums = r.column_sums.defined();
  for (int64_t kvh = 0; kvh < o.num_kv_heads; ++kvh) {
    PrefillGroup(layer, b * o.num_kv_heads + kvh, qf.narrow(0, kvh * G, G), at::Tensor(), window,
                 r.window_rows.defined() ? r.window_rows[i].narrow(0, kvh * G, G) : at::Tensor(),
                 sums ? r.column_sums[i].narrow(0, kvh * G, G) : at::Tensor(),
                 sums ? 0 : T - window);
  }
  return absl::OkStatus();
}

}  // namespace attnkit::session
