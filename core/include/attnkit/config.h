// Plain C++ views of the attnkit.v1 configuration messages. Parsing and validation
// (config_parser.h) turn the protobuf messages into these structs once; compute code sees only
// these, never protobuf (PyTorch bundles its own protobuf headers, which must not meet the
// system's).
#ifndef ATTNKIT_CONFIG_H_
#define ATTNKIT_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

namespace attnkit {

// Bounds of the model-shape fields, checked by ValidateSessionOptions (SessionConfig) and
// EvictionPolicy::Create: far above any released model, low enough that a few bytes of config
// cannot ask for millions of per-layer objects (creation allocates per layer and per head).
inline constexpr int kMaxLayers = 1024;     // num_layers
inline constexpr int kMaxHeads = 1024;      // num_heads (num_kv_heads divides it)
inline constexpr int kMaxHeadDim = 1024;    // head_dim
inline constexpr int kMaxBatchSize = 4096;  // batch_size

enum class EvictionAlgorithm {
  kH2O,
  kSnapKV,
  kRKV,
  kTOVA,
  kKNorm,
  kKeyDiff,
  kStreamingLLM,
  kRandom,
  kExpectedAttention,
  kCake,
};
enum class RefinedAlgorithm { kNone, kKVCrush, kDiverseKV };
enum class KVCrushAnchor { kAlternate, kZeros, kOnes, kMean, kRandom };
enum class PoolingAlignment { kCentered, kForward };
enum class PoolingKind { kMax, kAverage };
enum class BudgetAllocator { kUniform, kPyramidKV, kAdaKV, kCake };
enum class Normalization { kReferenceCounters, kNormSum };

const char* EvictionAlgorithmName(EvictionAlgorithm algorithm);

// The defaults are those of an EvictionConfig whose fields are all omitted (the configs are the
// public contract): no areas (set at least one of start/intermediate/recent tokens) and SNAPKV's
// window of 8. For another algorithm start from DefaultEvictionOptions(algorithm)
// (config_parser.h), which also sets its window (0 for the window-free algorithms).
struct EvictionOptions {
  bool enabled = false;
  EvictionAlgorithm algorithm = EvictionAlgorithm::kSnapKV;
  // 1 for per-token granularity.
  int group_size = 32;
  bool per_group = true;
  int start_tokens = 0;
  int recent_tokens = 0;
  int intermediate_tokens = 0;
  // Queries whose attention scores the tokens: positive for SNAPKV and RKV, 0 for the others.
  int window_size = 8;
  bool normalize_scores = false;
  Normalization normalization = Normalization::kReferenceCounters;
  RefinedAlgorithm refined_algorithm = RefinedAlgorithm::kNone;
  int refined_tokens = 0;
  KVCrushAnchor kvcrush_anchor = KVCrushAnchor::kAlternate;
  uint64_t seed = 0;
  double attention_mass_threshold = 0.9;
  int pool_kernel = 7;
  PoolingAlignment pool_alignment = PoolingAlignment::kCentered;
  PoolingKind pool_kind = PoolingKind::kMax;
  // SNAPKV: the prompt's pool covers only the keys before the observation window.
  bool pool_before_window = false;
  BudgetAllocator allocator = BudgetAllocator::kUniform;
  double pyramid_min_ratio = 0.125;
  double adakv_floor = 0.2;
  // CAKE: the indicator's variance weight, the preference's temperatures, cascading allocation.
  double cake_gamma = 200.0;
  double cake_tau1 = 1.0;
  double cake_tau2 = 1.0;
  bool cake_cascading = false;
  bool per_head = false;
  bool defer_eviction_to_decode = false;
  bool rerotate_keys = false;
  // RANDOM_SCORES's generator seed.
  uint64_t random_seed = 0;
  // EXPECTED_ATTENTION (kvpress's ExpectedAttentionPress defaults).
  int expected_future_positions = 512;
  bool expected_use_covariance = true;
  bool expected_use_vnorm = true;
  double expected_epsilon = 0.0;
  // Threshold eviction (DMS): evict every token outside the areas whose score is below
  // score_threshold; intermediate_tokens caps the survivors (0: no cap).
  bool threshold_eviction = false;
  double score_threshold = 0.0;
  // Sessions evict on every interval_steps-th decode (single-token) call of a layer (1: every one).
  int interval_steps = 1;
  // Ratio mode (schedule.compression_ratio, 0: off): a layer that has seen n tokens keeps
  // max(1, int(n * (1 - compression_ratio))); the intermediate area is what the areas leave.
  double compression_ratio = 0.0;
  // CaM (cache_merging): evicted tokens' values merged into the merge_budget kept tokens after
  // them, with draws seeded by merge_seed (docs/algorithms.md 1.9).
  bool cache_merging = false;
  int merge_budget = 32;
  uint64_t merge_seed = 0;
  // Set by a session with head_split and eviction (not a config field): per (layer, kv head),
  // layer-major, whether the head streams; a streaming head keeps its first streaming_sink and
  // last streaming_recent tokens whenever its layer evicts, and is not scored into a merge.
  std::vector<bool> streaming_heads;
  int streaming_sink = 0;
  int streaming_recent = 0;
  bool ratio_mode() const { return compression_ratio > 0; }

  int max_cache_tokens() const { return start_tokens + intermediate_tokens + recent_tokens; }
  // True when the refined size is decided per eviction by the attention-mass rule.
  bool adaptive_refined() const {
    return refined_algorithm != RefinedAlgorithm::kNone && refined_tokens == 0;
  }
};

enum class SparseMode { kDense, kAShape, kTriShape, kXAttention, kFlexPrefill };
enum class HeadAggregation { kSum, kPerHead };

struct SparseOptions {
  SparseMode mode = SparseMode::kDense;
  int block_size = 128;
  int last_query_size = 100;
  int recent_size = 1024;
  int sink_size = 0;  // 0: one block
  double threshold = 0.8;
  int stride = 8;
  HeadAggregation head_aggregation = HeadAggregation::kSum;
  std::vector<double> per_head_thresholds;
  int min_sparse_length = 0;
  // FLEXPREFILL (FlexPrefillConfig): budgets in tokens, 0 max_budget: unlimited.
  double flex_gamma = 0.9;
  double flex_tau = 0.0;
  int flex_min_budget = 1;
  int flex_max_budget = 0;
};

enum class VisualMethod { kCDPruner, kDivPrune, kRandom, kUniform };

struct VisualOptions {
  VisualMethod method = VisualMethod::kCDPruner;
  int num_keep_tokens = 0;  // > 0, or keep_ratio > 0
  double keep_ratio = 0.0;
  double theta = 0.5;
  bool positive_relevance = false;
  bool global_budget = false;
  bool gain_guard = false;
  uint64_t seed = 0;
  bool fast_kernel = false;  // BLAS GEMMs instead of the reference's exact rounding
};

enum class DType { kFloat32, kFloat16, kBFloat16 };
enum class DeviceKind { kCPU, kCUDA };

struct RopeOptions {
  double theta = 10000.0;
  bool interleaved = false;
};

// How the cache stores keys or values. kDefault is the session's dtype.
enum class KvDataType { kDefault, kFloat32, kFloat16, kBFloat16, kInt8, kInt4, kInt2 };
const char* KvDataTypeName(KvDataType type);
inline bool IsQuantized(KvDataType t) {
  return t == KvDataType::kInt8 || t == KvDataType::kInt4 || t == KvDataType::kInt2;
}

// The page format of keys and values (KvFormat in session.proto).
struct KvFormatOptions {
  KvDataType keys = KvDataType::kDefault;
  KvDataType values = KvDataType::kDefault;
  // Channels per quantization group; 0: 32, or head_dim when 32 does not divide it.
  int group_size = 0;
  // The most recent tokens kept in the session's dtype.
  int residual_tokens = 0;
  // ThinK: the share of key channels kept per (sequence, layer, kv head); 0 or 1: every channel.
  double key_channel_ratio = 0.0;
  // Queries that score the channels; 0: 32.
  int key_channel_window = 0;

  bool quantized() const { return IsQuantized(keys) || IsQuantized(values); }
  bool think() const { return key_channel_ratio > 0.0 && key_channel_ratio < 1.0; }
  // Key channels kept of head_dim: all of them, or (ThinK) head_dim less ThinKPress's
  // int(head_dim * compression_ratio) with compression_ratio = 1 - key_channel_ratio.
  int KeptKeyChannels(int head_dim) const {
    if (!think()) return head_dim;
    return head_dim - static_cast<int>(head_dim * (1.0 - key_channel_ratio));
  }
  int ThinkWindow() const { return key_channel_window > 0 ? key_channel_window : 32; }
};

// DuoAttention's head split, resolved (the proto's HeadSplit): `streaming` has num_layers *
// num_kv_heads labels (layer-major) when the split is on, none otherwise.
struct HeadSplitOptions {
  std::vector<bool> streaming;
  int sink_tokens = 0;
  int recent_tokens = 0;
  bool enabled() const { return !streaming.empty(); }
  bool Streams(int layer, int kv_head, int num_kv_heads) const {
    return enabled() && streaming[static_cast<size_t>(layer) * num_kv_heads + kv_head];
  }
};

// Quest-style sparse decode, resolved (the proto's SparseDecode): off while token_budget is 0.
struct SparseDecodeOptions {
  int64_t token_budget = 0;
  int start_pages = 0;
  int recent_pages = 0;
  int dense_layers = 0;
  bool enabled() const { return token_budget > 0; }
};

struct SessionOptions {
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int batch_size = 1;
  DType dtype = DType::kFloat32;
  DeviceKind device = DeviceKind::kCPU;
  int device_index = 0;
  int page_size = 16;
  double scale = 0.0;  // resolved: 1/sqrt(head_dim) when the config says 0
  EvictionOptions eviction;
  SparseOptions sparse;
  RopeOptions rope;
  bool has_rope = false;
  KvFormatOptions kv_format;
  HeadSplitOptions head_split;
  SparseDecodeOptions sparse_decode;
  // Attention calls skip the NaN/infinity check of q, k and v (SessionConfig.skip_finite_check).
  bool skip_finite_check = false;
  // The binary attnkit.v1.SessionConfig these options were parsed from (ParseSessionConfig sets
  // it): what Session::Save() writes into a blob and Load() compares with. Empty for options built
  // in code; such sessions can be forked but not saved or loaded.
  std::string config_binary;

  // kv_format's keys or values with kDefault resolved to dtype, and its group size resolved.
  KvDataType key_type() const { return Resolve(kv_format.keys); }
  KvDataType value_type() const { return Resolve(kv_format.values); }
  int kv_group_size() const {
    if (kv_format.group_size > 0) return kv_format.group_size;
    return head_dim % 32 == 0 ? 32 : head_dim;
  }

 private:
  KvDataType Resolve(KvDataType t) const {
    if (t != KvDataType::kDefault) return t;
    return dtype == DType::kFloat16    ? KvDataType::kFloat16
           : dtype == DType::kBFloat16 ? KvDataType::kBFloat16
                                       : KvDataType::kFloat32;
  }
};

}  // namespace attnkit

#endif  // ATTNKIT_CONFIG_H_
