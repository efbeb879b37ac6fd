#include "eviction/scorers.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include <immintrin.h>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "cuda/kernels.h"
#include "util/status_macros.h"

namespace attnkit::eviction {
namespace {

// float32 CPU contiguous copy-or-view of an observation tensor.
at::Tensor HostFloat(const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); }

absl::Status CheckRows(const at::Tensor& t, const char* name, int num_heads, int rank) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
  if (t.dim() != rank || t.size(0) != num_heads) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected ", rank, " dimensions with ", num_heads, " heads first"));
  }
  return absl::OkStatus();
}

// Sums the [H, K] per-head vectors into rows (all heads, or the heads of each kv head), keeping
// only positions < the row's length.
std::vector<std::vector<double>> ReduceHeads(const std::vector<std::vector<double>>& per_head,
                                             const HeadLayout& layout,
                                             const std::vector<int64_t>& row_lengths, bool mean) {
  std::vector<std::vector<double>> rows(layout.rows());
  for (int r = 0; r < layout.rows(); ++r) rows[r].assign(row_lengths[r], 0.0);
  for (int h = 0; h < layout.num_heads; ++h) {
    auto& row = rows[layout.RowOfHead(h)];
    const auto& src = per_head[h];
    for (size_t k = 0; k < row.size() && k < src.size(); ++k) row[k] += src[k];
  }
  if (mean) {
    const double n = layout.HeadsPerRow();
    for (auto& row : rows)
      for (double& v : row) v /= n;
  }
  return rows;
}

// Drops the first S entries of each row (rows not longer than S become empty).
void DropStart(std::vector<std::vector<double>>& rows, int start) {
  for (auto& row : rows) {
    if (static_cast<int64_t>(row.size()) > start) {
      row.erase(row.begin(), row.begin() + start);
    } else {
      row.clear();
    }
  }
}

// dst[k] += src[j * stride + k] for j = 0, 1, ..., count - 1 in turn, k < n (float rows into
// double sums): the policy's observations of a decode step are mostly this (32 heads x the cache
// length). Each element's additions keep this order on every path, so every path gives the same
// bits; the vector paths hold a block of sums in registers across the rows, so the sums are read
// and written once per call rather than once per row. Compiled for AVX-512, AVX2 and the baseline
// and picked once at run time (a function pointer, not an ifunc: ThreadSanitizer's
// instrumentation of an ifunc resolver crashes before its runtime starts).
inline __attribute__((always_inline)) void AddRowsTail(double* dst, const float* src,
                                                       int64_t stride, int64_t count, int64_t from,
                                                       int64_t n) {
  for (int64_t k = from; k < n; ++k) {
    double sum = dst[k];
    for (int64_t j = 0; j < count; ++j) sum += static_cast<double>(src[j * stride + k]);
    dst[k] = sum;
  }
}

// GCC 12's _mm512_cvtps_pd reads an "undefined" register it declares self-initialized, which
// -Wmaybe-uninitialized reports (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) void AddRowsAvx512(double* dst, const float* src, int64_t stride,
                                                      int64_t count, int64_t n) {
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    __m512d a0 = _mm512_loadu_pd(dst + k), a1 = _mm512_loadu_pd(dst + k + 8);
    __m512d a2 = _mm512_loadu_pd(dst + k + 16), a3 = _mm512_loadu_pd(dst + k + 24);
    for (int64_t j = 0; j < count; ++j) {
      const float* row = src + j * stride + k;
      a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(row)));
      a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(row + 8)));
      a2 = _mm512_add_pd(a2, _mm512_cvtps_pd(_mm256_loadu_ps(row + 16)));
      a3 = _mm512_add_pd(a3, _mm512_cvtps_pd(_mm256_loadu_ps(row + 24)));
    }
    _mm512_storeu_pd(dst + k, a0);
    _mm512_storeu_pd(dst + k + 8, a1);
    _mm512_storeu_pd(dst + k + 16, a2);
    _mm512_storeu_pd(dst + k + 24, a3);
  }
  for (; k + 8 <= n; k += 8) {
    __m512d a = _mm512_loadu_pd(dst + k);
    for (int64_t j = 0; j < count; ++j) {
      a = _mm512_add_pd(a, _mm512_cvtps_pd(_mm256_loadu_ps(src + j * stride + k)));
    }
    _mm512_storeu_pd(dst + k, a);
  }
  AddRowsTail(dst, src, stride, count, k, n);
}
#pragma GCC diagnostic pop

__attribute__((target("avx2"))) void AddRowsAvx2(double* dst, const float* src, int64_t stride,
                                                 int64_t count, int64_t n) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    __m256d a0 = _mm256_loadu_pd(dst + k), a1 = _mm256_loadu_pd(dst + k + 4);
    __m256d a2 = _mm256_loadu_pd(dst + k + 8), a3 = _mm256_loadu_pd(dst + k + 12);
    for (int64_t j = 0; j < count; ++j) {
      const float* row = src + j * stride + k;
      a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm_loadu_ps(row)));
      a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm_loadu_ps(row + 4)));
      a2 = _mm256_add_pd(a2, _mm256_cvtps_pd(_mm_loadu_ps(row + 8)));
      a3 = _mm256_add_pd(a3, _mm256_cvtps_pd(_mm_loadu_ps(row + 12)));
    }
    _mm256_storeu_pd(dst + k, a0);
    _mm256_storeu_pd(dst + k + 4, a1);
    _mm256_storeu_pd(dst + k + 8, a2);
    _mm256_storeu_pd(dst + k + 12, a3);
  }
  AddRowsTail(dst, src, stride, count, k, n);
}

void AddRowsBaseline(double* dst, const float* src, int64_t stride, int64_t count, int64_t n) {
  constexpr int64_t kBlock = 16;
  int64_t k = 0;
  for (; k + kBlock <= n; k += kBlock) {
    double sums[kBlock];
    for (int64_t i = 0; i < kBlock; ++i) sums[i] = dst[k + i];
    for (int64_t j = 0; j < count; ++j) {
      const float* row = src + j * stride + k;
      for (int64_t i = 0; i < kBlock; ++i) sums[i] += static_cast<double>(row[i]);
    }
    for (int64_t i = 0; i < kBlock; ++i) dst[k + i] = sums[i];
  }
  AddRowsTail(dst, src, stride, count, k, n);
}

using AddRowsFn = void (*)(double*, const float*, int64_t, int64_t, int64_t);

AddRowsFn PickAddRows() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return AddRowsAvx512;
  if (__builtin_cpu_supports("avx2")) return AddRowsAvx2;
  return AddRowsBaseline;
}

}  // namespace

void AddRowsInto(double* dst, const float* src, int64_t stride, int64_t count, int64_t n) {
  static const AddRowsFn fn = PickAddRows();
  fn(dst, src, stride, count, n);
}

namespace {
std::atomic<bool> scores_follow_cpu{false};
}  // namespace

bool ScoresFollowObservation(const at::Device& device) {
  if (device.is_cpu()) return scores_follow_cpu.load(std::memory_order_relaxed);
  return device.is_cuda() && cuda::Compiled();
}

std::vector<std::vector<double>> HostScoreRows(const LayerScores& state) {
  if (!state.scores_on_device) return state.scores;
  const at::Tensor host = state.device_scores.to(at::kCPU).contiguous();
  const int64_t capacity = host.size(1);
  const double* p = host.data_ptr<double>();
  std::vector<std::vector<double>> rows(state.device_sizes.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    rows[r].assign(p + r * capacity, p + r * capacity + state.device_sizes[r]);
  }
  return rows;
}

void ScoresToHost(LayerScores& state) {
  if (!state.scores_on_device) return;
  state.scores = HostScoreRows(state);
  state.scores_on_device = false;
}

namespace testing {

void SetScoresFollowObservation(bool on) { scores_follow_cpu.store(on); }

void AddRowsIntoPath(int path, double* dst, const float* src, int64_t stride, int64_t count,
                     int64_t n) {
  const AddRowsFn paths[] = {AddRowsBaseline, AddRowsAvx2, AddRowsAvx512};
  paths[path](dst, src, stride, count, n);
}

}  // namespace testing

namespace {

// Per-head [H][K] vectors of a [H, r, K] tensor summed over r.
std::vector<std::vector<double>> SumRows(const at::Tensor& rows3) {
  const at::Tensor t = HostFloat(rows3);
  const int64_t H = t.size(0), R = t.size(1), K = t.size(2);
  const float* p = t.data_ptr<float>();
  std::vector<std::vector<double>> out(H, std::vector<double>(K, 0.0));
  for (int64_t h = 0; h < H; ++h) AddRowsInto(out[h].data(), p + h * R * K, K, R, K);
  return out;
}

std::vector<std::vector<double>> FromMatrix(const at::Tensor& t2) {
  const at::Tensor t = HostFloat(t2);
  const int64_t H = t.size(0), K = t.size(1);
  const float* p = t.data_ptr<float>();
  std::vector<std::vector<double>> out(H);
  for (int64_t h = 0; h < H; ++h) out[h].assign(p + h * K, p + (h + 1) * K);
  return out;
}

// H2O (no window) and SnapKV (window, pooled on the first observation): accumulated attention,
// optionally normalized by how many queries saw each token.
class AccumulatingScorer : public Scorer {
 public:
  AccumulatingScorer(const EvictionOptions& options, const HeadLayout& layout)
      : options_(options), layout_(layout) {}

  ObservationNeeds needs() const override {
    ObservationNeeds n;
    if (options_.window_size > 0) {
      n.window_rows = options_.window_size;
    } else {
      n.all_queries_sum = true;
    }
    return n;
  }

  absl::Status Observe(LayerScores& state, const Observation& obs,
                       const std::vector<int64_t>& row_lengths) override {
    const bool windowed = options_.window_size > 0;
    const at::Tensor& source = windowed ? obs.window_rows : obs.all_queries_sum;
    if (absl::Status s = CheckRows(source, windowed ? "window_rows" : "all_queries_sum",
                                   layout_.num_heads, windowed ? 3 : 2);
        !s.ok())
      return s;
    const bool first = !state.observed;
    std::vector<std::vector<double>> rows;
    if (first && windowed &&
        (options_.pool_kernel > 1 || options_.pool_kind != PoolingKind::kMax)) {
      // The prompt: pool each head's window sums before summing heads (SnapKV). With
      // before_window_only the pool covers the keys before the window's queries alone; the
      // window's own keys keep their sums.
      std::vector<std::vector<double>> per_head = SumRows(source);
      const int64_t window = source.size(1);
      for (int h = 0; h < layout_.num_heads; ++h) {
        const int64_t len =
            std::min<int64_t>(row_lengths[layout_.RowOfHead(h)], per_head[h].size());
        per_head[h].resize(len);
        if (!options_.pool_before_window) {
          per_head[h] = Pool(per_head[h], options_);
          continue;
        }
        const int64_t before = std::max<int64_t>(len - window, 0);
        std::vector<double> pooled =
            Pool(std::vector<double>(per_head[h].begin(), per_head[h].begin() + before), options_);
        std::copy(pooled.begin(), pooled.end(), per_head[h].begin());
      }
      rows = ReduceHeads(per_head, layout_, row_lengths, /*mean=*/false);
      DropStart(rows, options_.start_tokens);
    } else if (ScoresFollowObservation(source.device())) {
      if (first) state.counters.assign(layout_.rows(), {});
      std::vector<int64_t> added;
      ATTNKIT_ASSIGN_OR_RETURN(added, AccumulateBeside(state, source, row_lengths, first));
      for (int r = 0; r < layout_.rows() && options_.normalize_scores; ++r) {
        const int64_t queries = obs.observed_queries > 0 ? obs.observed_queries : added[r];
        UpdateCounters(state.counters[r], added[r], queries, first, obs.observed_queries > 0);
      }
      state.observed = true;
      return absl::OkStatus();
    } else {
      rows = SumIntoRows(source, row_lengths);
    }
    ScoresToHost(state);
    if (first) {
      state.scores.assign(layout_.rows(), {});
      state.counters.assign(layout_.rows(), {});
    }
    for (int r = 0; r < layout_.rows(); ++r) {
      auto& prev = state.scores[r];
      auto& fresh = rows[r];
      if (fresh.size() < prev.size()) return TrackingError(fresh.size(), prev.size());
      const int64_t num_new = static_cast<int64_t>(fresh.size() - prev.size());
      for (size_t i = 0; i < prev.size(); ++i) fresh[i] += prev[i];
      prev = std::move(fresh);
      if (options_.normalize_scores) {
        const int64_t queries = obs.observed_queries > 0 ? obs.observed_queries : num_new;
        UpdateCounters(state.counters[r], num_new, queries, first, obs.observed_queries > 0);
      }
    }
    state.observed = true;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores& state,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor&,
                                                          const at::Tensor&) override {
    ScoresToHost(state);
    std::vector<std::vector<double>> out = state.scores;
    out.resize(layout_.rows());
    for (int r = 0; r < layout_.rows(); ++r) {
      const int64_t n = std::max<int64_t>(row_lengths[r] - options_.start_tokens, 0);
      if (static_cast<int64_t>(out[r].size()) != n) {
        return absl::FailedPreconditionError(
            absl::StrCat("lengths: the cache holds ", row_lengths[r], " tokens (", n,
                         " after the start area) but the observed scores cover ", out[r].size(),
                         ": observe every step before selecting"));
      }
      if (options_.normalize_scores) {
        for (int64_t i = 0; i < n; ++i) out[r][i] /= state.counters[r][i];
      }
    }
    return out;
  }

  void Compact(LayerScores& state, const KeptPositions& kept) override {
    ScoresToHost(state);
    CompactRows(state.scores, kept, options_.start_tokens);
    if (options_.normalize_scores) CompactRows(state.counters, kept, options_.start_tokens);
  }

 private:
  // SumIntoRows and the addition of the previous scores, done beside the observation `source`
  // ([H, K] or [H, r, K]) in state.device_scores (ScoresFollowObservation), with the same
  // additions in the same order as the host path. Returns each row's new entries.
  absl::StatusOr<std::vector<int64_t>> AccumulateBeside(LayerScores& state,
                                                        const at::Tensor& source,
                                                        const std::vector<int64_t>& row_lengths,
                                                        bool first) const {
    const int rows = layout_.rows();
    const int64_t H = source.size(0), R = source.dim() == 3 ? source.size(1) : 1;
    const int64_t K = source.size(-1), S = options_.start_tokens;
    std::vector<int64_t> prev(rows, 0), fresh(rows), added(rows);
    for (int r = 0; r < rows; ++r) {
      if (state.scores_on_device) {
        prev[r] = state.device_sizes[r];
      } else if (!first && r < static_cast<int>(state.scores.size())) {
        prev[r] = static_cast<int64_t>(state.scores[r].size());
      }
      fresh[r] = std::max<int64_t>(std::min(row_lengths[r], K) - S, 0);
      if (fresh[r] < prev[r]) return TrackingError(fresh[r], prev[r]);
      added[r] = fresh[r] - prev[r];
    }
    const int64_t needed = *std::max_element(fresh.begin(), fresh.end());
    const int64_t capacity = needed + needed / 2 + 64;  // room to grow by decode steps
    at::Tensor& dev = state.device_scores;
    const at::TensorOptions doubles = at::TensorOptions().dtype(at::kDouble);
    if (!state.scores_on_device) {
      // The host's scores (after an eviction, the prompt's pooled observation or a load) move
      // beside the observation in one copy.
      at::Tensor host = at::zeros({rows, capacity}, doubles.pinned_memory(source.is_cuda()));
      double* p = host.data_ptr<double>();
      for (int r = 0; r < rows; ++r) {
        if (prev[r] > 0)
          std::copy(state.scores[r].begin(), state.scores[r].end(), p + r * capacity);
      }
      dev = source.is_cpu() ? host : host.to(source.device(), /*non_blocking=*/true);
      state.scores.assign(rows, {});
    } else if (dev.size(1) < needed) {
      at::Tensor grown = at::zeros({rows, capacity}, doubles.device(dev.device()));
      grown.narrow(1, 0, dev.size(1)).copy_(dev);
      dev = grown;
    }
    if (source.is_cuda()) {
      const at::Tensor flat = source.to(at::kFloat).reshape({H * R, K});
      ATTNKIT_RETURN_IF_ERROR(cuda::AccumulateScoreRows(dev, flat, H * R / rows, S, fresh, prev));
    } else {
      // The host path's sums, then the previous scores added in place.
      const std::vector<std::vector<double>> sums = SumIntoRows(source, row_lengths);
      double* p = dev.data_ptr<double>();
      for (int r = 0; r < rows; ++r) {
        double* dst = p + r * dev.size(1);
        for (int64_t i = 0; i < fresh[r]; ++i) {
          dst[i] = i < prev[r] ? sums[r][i] + dst[i] : sums[r][i];
        }
      }
    }
    state.device_sizes = fresh;
    state.scores_on_device = true;
    return added;
  }

  absl::Status TrackingError(int64_t fresh, int64_t prev) const {
    return absl::FailedPreconditionError(absl::StrCat(
        "the attention covers ", fresh + options_.start_tokens,
        " cached tokens but the policy tracks ", prev + options_.start_tokens,
        ": select after every observed step (attnkit_eviction_policy_select) and drop the "
        "tokens it evicts"));
  }

  // Sums the attention of every head of each row over the observed queries, positions S.. only,
  // straight from the float tensor ([H, K] or [H, r, K]) into the row sums.
  std::vector<std::vector<double>> SumIntoRows(const at::Tensor& source,
                                               const std::vector<int64_t>& row_lengths) const {
    const at::Tensor t = HostFloat(source);
    const int64_t H = t.size(0), R = t.dim() == 3 ? t.size(1) : 1, K = t.size(-1);
    const int64_t S = options_.start_tokens;
    const float* p = t.data_ptr<float>();
    std::vector<std::vector<double>> rows(layout_.rows());
    for (int r = 0; r < layout_.rows(); ++r) {
      rows[r].assign(std::max<int64_t>(std::min(row_lengths[r], K) - S, 0), 0.0);
    }
    // A row's heads are consecutive (HeadLayout), so its H / rows() heads x R queries are one
    // run of rows K floats apart.
    const int64_t heads_per_row = H / layout_.rows();
    for (int r = 0; r < layout_.rows(); ++r) {
      AddRowsInto(rows[r].data(), p + r * heads_per_row * R * K + S, K, heads_per_row * R,
                  static_cast<int64_t>(rows[r].size()));
    }
    return rows;
  }

  // How many queries saw each token (docs/algorithms.md 1.1). An attention call's q queries are
  // its m new tokens: the first observation counts [m, m-1, ..., 1] (window w < m: [w]*(m-w) +
  // [w, ..., 1]); each later one adds c = min(w, m) (m without a window; NORM_SUM: m) to every
  // counter and appends [c, ..., 1], with the tokens beyond the last c counted c. The q queries of
  // an observe-only call (`observe_only`, 1.6) are not in the cache: each of the c = min(w, q)
  // observed ones (q without a window; NORM_SUM: q) saw every token, so every counter grows by c,
  // and tokens not counted before (m of them) start at c.
  void UpdateCounters(std::vector<double>& counters, int64_t m, int64_t q, bool first,
                      bool observe_only) const {
    const int64_t w = options_.window_size;
    int64_t c = q;
    if (w > 0 && !(options_.normalization == Normalization::kNormSum && !first)) c = std::min(w, q);
    if (!first) {
      for (double& v : counters) v += static_cast<double>(c);
    }
    for (int64_t i = 0; i < m; ++i) {
      const int64_t from_end = observe_only ? c : m - i;  // m .. 1
      counters.push_back(static_cast<double>(std::min(from_end, c)));
    }
  }

  EvictionOptions options_;
  HeadLayout layout_;
};

// R-KV: the last w attention rows, averaged and max-pooled when the layer evicts.
class RkvScorer : public Scorer {
 public:
  RkvScorer(const EvictionOptions& options, const HeadLayout& layout)
      : options_(options), layout_(layout) {}

  ObservationNeeds needs() const override {
    ObservationNeeds n;
    n.window_rows = options_.window_size;
    return n;
  }

  absl::Status Observe(LayerScores& state, const Observation& obs,
                       const std::vector<int64_t>&) override {
    if (absl::Status s = CheckRows(obs.window_rows, "window_rows", layout_.num_heads, 3); !s.ok())
      return s;
    // Where scores follow the observation the rows stay on its device (a copy: the step's buffer
    // is not the policy's) and come to the host only when the layer selects; the same values.
    const bool beside = ScoresFollowObservation(obs.window_rows.device());
    at::Tensor rows = beside ? obs.window_rows.to(at::kFloat).clone() : HostFloat(obs.window_rows);
    if (!state.window.defined()) {
      state.window = rows;
    } else {
      if (state.window.device() != rows.device()) state.window = state.window.to(rows.device());
      const int64_t grow = rows.size(2) - state.window.size(2);
      if (grow < 0) {
        return absl::FailedPreconditionError(
            "the attention covers fewer keys than the previous step: call Select() after every "
            "observed step and drop the tokens it evicts");
      }
      at::Tensor padded = at::constant_pad_nd(state.window, {0, grow}, 0.0);
      state.window = at::cat({padded, rows}, 1);
    }
    if (state.window.size(1) > options_.window_size) {
      state.window =
          state.window.narrow(1, state.window.size(1) - options_.window_size, options_.window_size)
              .contiguous();
    }
    state.observed = true;
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores& state,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor&,
                                                          const at::Tensor&) override {
    if (!state.window.defined()) {
      return absl::FailedPreconditionError("R-KV has no attention rows: observe before selecting");
    }
    std::vector<std::vector<double>> per_head = SumRows(state.window);
    const double count = static_cast<double>(state.window.size(1));
    for (int h = 0; h < layout_.num_heads; ++h) {
      const int64_t len = row_lengths[layout_.RowOfHead(h)];
      per_head[h].resize(std::min<int64_t>(len, per_head[h].size()));
      for (double& v : per_head[h]) v /= count;
      if (options_.pool_kernel > 1 || options_.pool_kind != PoolingKind::kMax) {
        per_head[h] = Pool(per_head[h], options_);
      }
    }
    auto rows = ReduceHeads(per_head, layout_, row_lengths, /*mean=*/true);
    DropStart(rows, options_.start_tokens);
    state.window = at::Tensor();  // the reference forgets the rows once they are used
    state.observed = false;
    return rows;
  }

  void Compact(LayerScores&, const KeptPositions&) override {}

 private:
  EvictionOptions options_;
  HeadLayout layout_;
};

// TOVA: the newest query's attention, averaged over heads; replaced every step (where scores
// follow the observation, the newest row waits on its device until the layer selects).
class TovaScorer : public ReplacingScorer {
 public:
  TovaScorer(const EvictionOptions& options, const HeadLayout& layout)
      : ReplacingScorer(options.start_tokens, layout.rows(), "TOVA needs the step's attention"),
        options_(options),
        layout_(layout) {}
  ObservationNeeds needs() const override {
    ObservationNeeds n;
    n.window_rows = 1;
    return n;
  }
  absl::Status Observe(LayerScores& state, const Observation& obs,
                       const std::vector<int64_t>& row_lengths) override {
    if (absl::Status s = CheckRows(obs.window_rows, "window_rows", layout_.num_heads, 3); !s.ok())
      return s;
    const at::Tensor last = obs.window_rows.select(1, obs.window_rows.size(1) - 1);
    if (!Defer(state, last, row_lengths)) state.scores = FromRows(last, row_lengths);
    return absl::OkStatus();
  }

 private:
  // The row [H, K] averaged over each kv row's heads, the start area dropped (on the host).
  std::vector<std::vector<double>> FromRows(
      const at::Tensor& last, const std::vector<int64_t>& row_lengths) const override {
    auto rows = ReduceHeads(FromMatrix(last), layout_, row_lengths, /*mean=*/true);
    DropStart(rows, options_.start_tokens);
    return rows;
  }

  EvictionOptions options_;
  HeadLayout layout_;
};

// KNorm (-||k||) and KeyDiff (-cos(k, mean normalized key)): scores from the keys alone.
class KeyScorer : public Scorer {
 public:
  KeyScorer(const EvictionOptions& options, const HeadLayout& layout)
      : options_(options), layout_(layout) {}
  ObservationNeeds needs() const override {
    ObservationNeeds n;
    n.keys = true;
    return n;
  }
  absl::Status Observe(LayerScores& state, const Observation&,
                       const std::vector<int64_t>&) override {
    state.observed = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores&,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor& keys,
                                                          const at::Tensor&) override {
    if (!keys.defined() || keys.dim() != 3 || keys.size(0) != layout_.num_kv_heads) {
      return absl::InvalidArgumentError(absl::StrCat(
          "keys: expected [num_kv_heads=", layout_.num_kv_heads, ", tokens, head_dim]"));
    }
    const at::Tensor k = HostFloat(keys);
    const int64_t Hkv = k.size(0), K = k.size(1), d = k.size(2);
    const float* p = k.data_ptr<float>();
    std::vector<std::vector<double>> per_kv(Hkv, std::vector<double>(K, 0.0));
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t len = std::min<int64_t>(K, row_lengths[layout_.per_head ? h : 0]);
      std::vector<double> norms(len);
      for (int64_t t = 0; t < len; ++t) {
        double s = 0;
        for (int64_t j = 0; j < d; ++j)
          s += double(p[(h * K + t) * d + j]) * p[(h * K + t) * d + j];
        norms[t] = std::sqrt(s);
      }
      if (options_.algorithm == EvictionAlgorithm::kKNorm) {
        for (int64_t t = 0; t < len; ++t) per_kv[h][t] = -norms[t];
        continue;
      }
      std::vector<double> anchor(d, 0.0);
      for (int64_t t = 0; t < len; ++t) {
        if (norms[t] == 0) continue;
        for (int64_t j = 0; j < d; ++j) anchor[j] += p[(h * K + t) * d + j] / norms[t];
      }
      double anchor_norm = 0;
      for (double a : anchor) anchor_norm += a * a;
      anchor_norm = std::sqrt(anchor_norm);
      for (int64_t t = 0; t < len; ++t) {
        if (norms[t] == 0 || anchor_norm == 0) continue;  // cos undefined: neutral score 0
        double dot = 0;
        for (int64_t j = 0; j < d; ++j) dot += p[(h * K + t) * d + j] * anchor[j];
        per_kv[h][t] = -dot / (norms[t] * anchor_norm);
      }
    }
    return RowsFromKvHeads(per_kv, layout_, row_lengths, options_.start_tokens);
  }
  void Compact(LayerScores&, const KeptPositions&) override {}

 private:
  EvictionOptions options_;
  HeadLayout layout_;
};

// StreamingLLM: positions only (selection keeps the start area and the newest tokens).
class PositionScorer : public Scorer {
 public:
  ObservationNeeds needs() const override { return {}; }
  absl::Status Observe(LayerScores& state, const Observation&,
                       const std::vector<int64_t>&) override {
    state.observed = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores&, const std::vector<int64_t>&,
                                                          const at::Tensor&,
                                                          const at::Tensor&) override {
    return std::vector<std::vector<double>>{};
  }
  void Compact(LayerScores&, const KeptPositions&) override {}
};

}  // namespace

std::vector<double> MaxPool(const std::vector<double>& values, int kernel,
                            PoolingAlignment alignment) {
  const int64_t n = values.size();
  std::vector<double> out(n);
  const int64_t before = alignment == PoolingAlignment::kCentered ? kernel / 2 : 0;
  const int64_t after = kernel - 1 - before;
  for (int64_t i = 0; i < n; ++i) {
    double m = -std::numeric_limits<double>::infinity();
    const int64_t lo = std::max<int64_t>(0, i - before), hi = std::min<int64_t>(n - 1, i + after);
    for (int64_t j = lo; j <= hi; ++j) m = std::max(m, values[j]);
    out[i] = m;
  }
  return out;
}

std::vector<double> AveragePool(const std::vector<double>& values, int kernel,
                                PoolingAlignment alignment) {
  const int64_t n = values.size();
  std::vector<double> out(n);
  const int64_t before = alignment == PoolingAlignment::kCentered ? kernel / 2 : 0;
  const int64_t after = kernel - 1 - before;
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    const int64_t lo = std::max<int64_t>(0, i - before), hi = std::min<int64_t>(n - 1, i + after);
    for (int64_t j = lo; j <= hi; ++j) sum += values[j];
    out[i] = sum / kernel;
  }
  return out;
}

std::vector<double> Pool(const std::vector<double>& values, const EvictionOptions& options) {
  if (options.pool_kind == PoolingKind::kAverage) {
    return AveragePool(values, options.pool_kernel, options.pool_alignment);
  }
  return MaxPool(values, options.pool_kernel, options.pool_alignment);
}

std::vector<std::vector<double>> RowsFromKvHeads(const std::vector<std::vector<double>>& per_kv,
                                                 const HeadLayout& layout,
                                                 const std::vector<int64_t>& row_lengths,
                                                 int start_tokens) {
  std::vector<std::vector<double>> rows(layout.rows());
  for (int r = 0; r < layout.rows(); ++r) rows[r].assign(row_lengths[r], 0.0);
  for (size_t h = 0; h < per_kv.size(); ++h) {
    auto& row = rows[layout.per_head ? h : 0];
    for (size_t t = 0; t < row.size() && t < per_kv[h].size(); ++t) row[t] += per_kv[h][t];
  }
  if (!layout.per_head) {
    for (double& v : rows[0]) v /= static_cast<double>(per_kv.size());
  }
  DropStart(rows, start_tokens);
  return rows;
}

std::unique_ptr<Scorer> MakeAccumulatingScorer(const EvictionOptions& options,
                                               const HeadLayout& layout) {
  return std::make_unique<AccumulatingScorer>(options, layout);
}

std::unique_ptr<Scorer> MakeRkvScorer(const EvictionOptions& options, const HeadLayout& layout) {
  return std::make_unique<RkvScorer>(options, layout);
}

std::unique_ptr<Scorer> MakeTovaScorer(const EvictionOptions& options, const HeadLayout& layout) {
  return std::make_unique<TovaScorer>(options, layout);
}

std::unique_ptr<Scorer> MakeKeyScorer(const EvictionOptions& options, const HeadLayout& layout) {
  return std::make_unique<KeyScorer>(options, layout);
}

std::unique_ptr<Scorer> MakePositionScorer(const EvictionOptions&, const HeadLayout&) {
  return std::make_unique<PositionScorer>();
}

void CompactRows(std::vector<std::vector<double>>& rows, const KeptPositions& kept, int start) {
  for (size_t r = 0; r < rows.size() && r < kept.size(); ++r) {
    std::vector<double> next;
    next.reserve(kept[r].size());
    for (int64_t p : kept[r]) {
      const int64_t i = p - start;
      if (i >= 0 && i < static_cast<int64_t>(rows[r].size())) next.push_back(rows[r][i]);
    }
    rows[r] = std::move(next);
  }
}

absl::StatusOr<std::vector<std::vector<double>>> ReplacingScorer::Scores(
    LayerScores& state, const std::vector<int64_t>& row_lengths, const at::Tensor&,
    const at::Tensor&) {
  if (state.pending_last.defined()) {
    state.scores = FromRows(state.pending_last, state.pending_lengths);
    state.pending_last = at::Tensor();
  }
  ATTNKIT_RETURN_IF_ERROR(CheckObservedRows(state, row_lengths, rows_, start_tokens_, what_));
  return state.scores;
}

std::vector<std::vector<double>> ReplacingScorer::HostScores(const LayerScores& state) const {
  if (state.pending_last.defined()) return FromRows(state.pending_last, state.pending_lengths);
  return state.scores;
}

void ReplacingScorer::Compact(LayerScores& state, const KeptPositions& kept) {
  CompactRows(state.scores, kept, start_tokens_);
}

bool ReplacingScorer::Defer(LayerScores& state, const at::Tensor& rows,
                            const std::vector<int64_t>& row_lengths) {
  state.observed = true;
  if (!ScoresFollowObservation(rows.device())) {
    state.pending_last = at::Tensor();
    return false;
  }
  state.pending_last = rows.to(at::kFloat).clone();
  state.pending_lengths = row_lengths;
  return true;
}

absl::Status CheckObservedRows(const LayerScores& state, const std::vector<int64_t>& row_lengths,
                               int rows, int start, const char* what) {
  for (int r = 0; r < rows; ++r) {
    const size_t n = std::max<int64_t>(row_lengths[r] - start, 0);
    if (r >= static_cast<int>(state.scores.size()) || state.scores[r].size() != n) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": observe first"));
    }
  }
  return absl::OkStatus();
}

}  // namespace attnkit::eviction
