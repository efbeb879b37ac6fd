// Scorers: how important each cached token is. One class per family; each algorithm's row in
// ATTNKIT_EVICTION_ALGORITHMS (config/algorithms.h) names the factory Make<Scorer>Scorer that
// builds its scorer, and MakeScorer() (registry.cc) calls it. Scores cover the positions after the
// start area (position S + i has score i) and are kept per row: one row for the layer, or one per
// kv head.
#ifndef ATTNKIT_CORE_EVICTION_SCORERS_H_
#define ATTNKIT_CORE_EVICTION_SCORERS_H_

#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "attnkit/config.h"
#include "attnkit/eviction/eviction_policy.h"

namespace attnkit::eviction {

// Per-layer state a scorer keeps between steps.
struct LayerScores {
  bool observed = false;
  std::vector<std::vector<double>> scores;    // [rows][n]
  std::vector<std::vector<double>> counters;  // [rows][n] (normalize_scores)
  // H2O/SnapKV scores kept where the attention is observed (a CUDA session's device; see
  // ScoresFollowObservation) between evictions, so a decode step copies nothing to the host:
  // float64 [rows, capacity], row r's first device_sizes[r] entries are its scores. While
  // scores_on_device, `scores` is stale; ScoresToHost() brings them back.
  at::Tensor device_scores;
  std::vector<int64_t> device_sizes;
  bool scores_on_device = false;
  // R-KV: [H, rows, K] recent attention rows, float32; on the observation's device where scores
  // follow it (ScoresFollowObservation), else on the host.
  at::Tensor window;
  // Where scores follow the observation, the rows a replacing scorer reads when the layer selects,
  // kept on their device until then (TOVA: the newest query's attention [H, K]; CAKE: a decode
  // call's window rows [H, r, K]; float32), and the row lengths they were observed with;
  // `scores` is stale while it is defined.
  at::Tensor pending_last;
  std::vector<int64_t> pending_lengths;
  // EXPECTED_ATTENTION: running sums over the pre-RoPE queries past the start area, per query
  // head ([H, d] and [H, d, d], float64), their count, and the position after the newest query.
  at::Tensor query_sum, query_outer;
  int64_t query_count = 0;
  int64_t next_position = 0;
  // CaM (cache_merging): per kv head, the running sum of the decode calls' attention, averaged
  // over the kv head's query heads ([Hkv, K] float32, K the longest head's length; undefined
  // before the first decode call), and the decode calls since the layer last evicted.
  at::Tensor merge_attention;
  int64_t merge_steps = 0;
  // CAKE: the layer's preference (entropy^(1/tau1) * variance^(1/tau2) of its prompt's window
  // attention, float32 as the reference computes it), once the prompt was observed.
  bool has_preference = false;
  float preference = 0.0f;
};

// Brings scores kept on the device (LayerScores::scores_on_device) back into `scores` (one copy,
// which waits for the device); nothing when they are on the host.
void ScoresToHost(LayerScores& state);
// The score rows of `state` wherever they are (a copy; for const readers such as SaveState).
std::vector<std::vector<double>> HostScoreRows(const LayerScores& state);

// Whether accumulating scorers keep their scores beside an observation on `device` rather than on
// the host: on a CUDA device when this build has the CUDA kernels, and on the CPU only under
// testing::SetScoresFollowObservation (which runs the same bookkeeping with host arithmetic).
bool ScoresFollowObservation(const at::Device& device);

// Shape facts every scorer needs.
struct HeadLayout {
  int num_heads = 0;
  int num_kv_heads = 0;
  bool per_head = false;
  int rows() const { return per_head ? num_kv_heads : 1; }
  // The score row a query head feeds.
  int RowOfHead(int head) const { return per_head ? head / (num_heads / num_kv_heads) : 0; }
  int HeadsPerRow() const { return per_head ? num_heads / num_kv_heads : num_heads; }
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual ObservationNeeds needs() const = 0;
  virtual absl::Status Observe(LayerScores& state, const Observation& observation,
                               const std::vector<int64_t>& row_lengths) = 0;
  // Token scores of positions S.. per row (row r has row_lengths[r] - S entries, none if <= S).
  // Called only when the layer evicts; `keys` and `values` ([Hkv, Kmax, d]) are defined when
  // needs() asks for them.
  virtual absl::StatusOr<std::vector<std::vector<double>>> Scores(
      LayerScores& state, const std::vector<int64_t>& row_lengths, const at::Tensor& keys,
      const at::Tensor& values) = 0;
  // Drops the state of evicted tokens; `kept` are per-row cache positions, ascending.
  virtual void Compact(LayerScores& state, const KeptPositions& kept) = 0;
  // The score rows `state` stands for, on the host (SaveState's; a copy): those kept on the
  // device by accumulating scorers, or those a scorer defers to the layer's selection.
  virtual std::vector<std::vector<double>> HostScores(const LayerScores& state) const {
    return HostScoreRows(state);
  }
};

// A scorer whose scores each observation replaces, computed from the observed rows alone (TOVA,
// CAKE). Where scores follow the observation (ScoresFollowObservation) the rows wait on their
// device (Defer: a copy, the step's buffer is not the policy's) and are read on the host only when
// the layer selects (Scores) or the state is saved (HostScores); elsewhere Keep stores the scores
// at once. Either way the scores are FromRows of the same values, so the bits are the same.
class ReplacingScorer : public Scorer {
 public:
  ReplacingScorer(int start_tokens, int rows, const char* what)
      : start_tokens_(start_tokens), rows_(rows), what_(what) {}
  absl::StatusOr<std::vector<std::vector<double>>> Scores(LayerScores& state,
                                                          const std::vector<int64_t>& row_lengths,
                                                          const at::Tensor& keys,
                                                          const at::Tensor& values) final;
  std::vector<std::vector<double>> HostScores(const LayerScores& state) const final;
  void Compact(LayerScores& state, const KeptPositions& kept) final;

 protected:
  // The score rows (positions past the start area) of the observed `rows` for `row_lengths`.
  virtual std::vector<std::vector<double>> FromRows(
      const at::Tensor& rows, const std::vector<int64_t>& row_lengths) const = 0;
  // Marks the layer observed with `rows`: deferred beside them where scores follow the
  // observation (true), else not (false: the caller stores its scores).
  bool Defer(LayerScores& state, const at::Tensor& rows, const std::vector<int64_t>& row_lengths);

 private:
  int start_tokens_;
  int rows_;
  const char* what_;  // what CheckObservedRows says is missing
};

// The scorer of options.algorithm (nullptr for a value outside the enum).
std::unique_ptr<Scorer> MakeScorer(const EvictionOptions& options, const HeadLayout& layout);

// Scores of a row from per kv head scores [Hkv][K] (positions past a row's length ignored): each
// kv head's own for per-head layouts, their mean for layer-wide ones; the start area dropped.
// For scorers that score per kv head (the key-based ones, RANDOM).
std::vector<std::vector<double>> RowsFromKvHeads(const std::vector<std::vector<double>>& per_kv,
                                                 const HeadLayout& layout,
                                                 const std::vector<int64_t>& row_lengths,
                                                 int start_tokens);

// Drops the entries of evicted positions from per-row score vectors of positions start.. (`kept`:
// per-row cache positions, ascending): what Scorer::Compact does for scores kept per position.
void CompactRows(std::vector<std::vector<double>>& rows, const KeptPositions& kept, int start);

// FAILED_PRECONDITION "`what`: observe first" unless every row holds a score per position past
// the start area (scorers whose scores come from the last observation alone: TOVA, CAKE).
absl::Status CheckObservedRows(const LayerScores& state, const std::vector<int64_t>& row_lengths,
                               int rows, int start, const char* what);

// Max-pooling along a score vector: centered (padding kernel/2, padded values ignored) or forward
// (each entry takes the max of itself and the kernel-1 entries after it).
std::vector<double> MaxPool(const std::vector<double>& values, int kernel,
                            PoolingAlignment alignment);

// Average pooling with the same windows: each entry is the sum of the values its window covers
// divided by `kernel`, positions outside the vector counted as zeros (PyTorch's avg_pool1d with
// count_include_pad, as kvpress's SnapKVPress).
std::vector<double> AveragePool(const std::vector<double>& values, int kernel,
                                PoolingAlignment alignment);

// The configured pooling of `values` (options.pool_kind, pool_kernel, pool_alignment).
std::vector<double> Pool(const std::vector<double>& values, const EvictionOptions& options);

// dst[k] += src[j * stride + k] for j = 0, 1, ..., count - 1 in turn (each element's additions in
// this order, in double), k < n: an observation's attention rows summed into score rows. The
// AVX-512, AVX2 or baseline path, chosen once at run time; all give the same bits.
void AddRowsInto(double* dst, const float* src, int64_t stride, int64_t count, int64_t n);

namespace testing {
// Makes accumulating scorers keep their scores in a tensor beside CPU observations too, as they do
// beside CUDA ones (the device path's bookkeeping, checked on machines without a GPU).
void SetScoresFollowObservation(bool on);
// One path of AddRowsInto: 0 baseline, 1 AVX2, 2 AVX-512 (the caller checks the CPU has it).
void AddRowsIntoPath(int path, double* dst, const float* src, int64_t stride, int64_t count,
                     int64_t n);
}  // namespace testing

}  // namespace attnkit::eviction

#endif  // ATTNKIT_CORE_EVICTION_SCORERS_H_
