// The one place where configuration rules live. Every message names the field by its path in the
// top-level message, e.g. "eviction.start_tokens: must be non-negative, got -4".
#include "attnkit/config_parser.h"

#include <cmath>
#include <string>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
#include "util/status_macros.h"

namespace attnkit {
namespace {

namespace pb = ::attnkit::v1;

absl::Status FieldError(absl::string_view prefix, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, field, ": ", what));
}

class CollectingErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message));
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string Text() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::vector<std::string> errors_;
};

// Parses `data` into `message` (textproto or wire format), with an error naming the message type.
absl::Status ParseMessage(absl::string_view data, bool text, google::protobuf::Message* message) {
  const std::string type = message->GetDescriptor()->full_name();
  if (text) {
    google::protobuf::TextFormat::Parser parser;
    CollectingErrors errors;
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(std::string(data), message)) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: not a valid textproto ", type, ": ", errors.Text()));
    }
    return absl::OkStatus();
  }
  if (data.size() > static_cast<size_t>(INT32_MAX) ||
      !message->ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: not a valid serialized ", type, " (", data.size(), " bytes)"));
  }
  return absl::OkStatus();
}

template <typename Enum>
absl::Status CheckEnum(bool (*is_valid)(int), int value, absl::string_view prefix,
                       absl::string_view field) {
  if (!is_valid(value)) {
    return FieldError(prefix, field, absl::StrCat("unknown enum value ", value));
  }
  return absl::OkStatus();
}

absl::Status NonNegative(int64_t value, absl::string_view prefix, absl::string_view field) {
  if (value < 0)
    return FieldError(prefix, field, absl::StrCat("must be non-negative, got ", value));
  return absl::OkStatus();
}

absl::StatusOr<EvictionOptions> ConvertEviction(const pb::EvictionConfig& c, absl::string_view p) {
  EvictionOptions o;
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::EvictionAlgorithm>(pb::EvictionAlgorithm_IsValid,
                                                           c.algorithm(), p, "algorithm"));
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::Granularity>(pb::Granularity_IsValid, c.granularity(), p, "granularity"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::RefinedAlgorithm>(
      pb::RefinedAlgorithm_IsValid, c.refined().algorithm(), p, "refined.algorithm"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::KvCrushAnchor>(
      pb::KvCrushAnchor_IsValid, c.refined().kvcrush_anchor(), p, "refined.kvcrush_anchor"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::Pooling::Alignment>(
      pb::Pooling::Alignment_IsValid, c.pooling().alignment(), p, "pooling.alignment"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::BudgetAllocation::Allocator>(
      pb::BudgetAllocation::Allocator_IsValid, c.budget().allocator(), p, "budget.allocator"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::EvictionConfig::Normalization>(
      pb::EvictionConfig::Normalization_IsValid, c.normalization(), p, "normalization"));

  o.enabled = c.enabled();
  switch (c.algorithm()) {
    case pb::H2O:
      o.algorithm = EvictionAlgorithm::kH2O;
      break;
    case pb::EVICTION_ALGORITHM_UNSPECIFIED:
    case pb::SNAPKV:
      o.algorithm = EvictionAlgorithm::kSnapKV;
      break;
    case pb::RKV:
      o.algorithm = EvictionAlgorithm::kRKV;
      break;
    case pb::TOVA:
      o.algorithm = EvictionAlgorithm::kTOVA;
      break;
    case pb::KNORM:
      o.algorithm = EvictionAlgorithm::kKNorm;
      break;
    case pb::KEYDIFF:
      o.algorithm = EvictionAlgorithm::kKeyDiff;
      break;
    case pb::STREAMING_LLM:
      o.algorithm = EvictionAlgorithm::kStreamingLLM;
      break;
    default:
      break;
  }
  o.per_group = c.granularity() != pb::PER_TOKEN;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.group_size(), p, "group_size"));
  o.group_size = o.per_group ? (c.group_size() == 0 ? 32 : c.group_size()) : 1;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.start_tokens(), p, "start_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.recent_tokens(), p, "recent_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.intermediate_tokens(), p, "intermediate_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.refined().refined_tokens(), p, "refined.refined_tokens"));
  o.start_tokens = c.start_tokens();
  o.recent_tokens = c.recent_tokens();
  o.intermediate_tokens = c.intermediate_tokens();
  o.refined_tokens = c.refined().refined_tokens();
  if (o.refined_tokens > o.intermediate_tokens) {
    return FieldError(p, "refined.refined_tokens",
                      absl::StrCat("must not exceed intermediate_tokens (", o.intermediate_tokens,
                                   "), got ", o.refined_tokens));
  }
  // Summed in 64 bits: the int sum of three large sizes would overflow (undefined behaviour).
  const int64_t budget = int64_t{o.start_tokens} + o.intermediate_tokens + o.recent_tokens;
  if (budget <= 0) {
    return FieldError(p, "start_tokens",
                      "at least one of start_tokens, intermediate_tokens and recent_tokens must be "
                      "greater than zero");
  }
  if (budget > INT32_MAX) {
    return FieldError(p, "start_tokens",
                      absl::StrCat("start_tokens + intermediate_tokens + recent_tokens must be at "
                                   "most ",
                                   INT32_MAX, ", got ", budget));
  }
  const std::pair<const char*, int> sizes[] = {{"start_tokens", o.start_tokens},
                                               {"recent_tokens", o.recent_tokens},
                                               {"intermediate_tokens", o.intermediate_tokens},
                                               {"refined.refined_tokens", o.refined_tokens}};
  for (const auto& [name, value] : sizes) {
    if (value % o.group_size != 0) {
      return FieldError(
          p, name,
          absl::StrCat("must be divisible by group_size (", o.group_size, "), got ", value));
    }
  }

  const bool windowed =
      o.algorithm == EvictionAlgorithm::kSnapKV || o.algorithm == EvictionAlgorithm::kRKV;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.window_size(), p, "window_size"));
  if (!windowed && c.window_size() != 0) {
    return FieldError(p, "window_size",
                      absl::StrCat("is only supported by SNAPKV and RKV, not ",
                                   EvictionAlgorithmName(o.algorithm)));
  }
  o.window_size = windowed ? (c.window_size() == 0 ? 8 : c.window_size()) : 0;

  o.normalize_scores = c.normalize_scores();
  const bool accumulating =
      o.algorithm == EvictionAlgorithm::kH2O || o.algorithm == EvictionAlgorithm::kSnapKV;
  if (o.normalize_scores && !accumulating) {
    return FieldError(
        p, "normalize_scores",
        absl::StrCat("only applies to H2O and SNAPKV, not ", EvictionAlgorithmName(o.algorithm)));
  }
  o.normalization = c.normalization() == pb::EvictionConfig::NORM_SUM
                        ? Normalization::kNormSum
                        : Normalization::kReferenceCounters;
  if (o.normalization == Normalization::kNormSum && !o.normalize_scores) {
    return FieldError(p, "normalization", "NORM_SUM needs normalize_scores: true");
  }

  switch (c.refined().algorithm()) {
    case pb::KVCRUSH:
      o.refined_algorithm = RefinedAlgorithm::kKVCrush;
      break;
    case pb::DIVERSEKV:
      o.refined_algorithm = RefinedAlgorithm::kDiverseKV;
      break;
    default:
      o.refined_algorithm = RefinedAlgorithm::kNone;
      break;
  }
  switch (c.refined().kvcrush_anchor()) {
    case pb::ZEROS:
      o.kvcrush_anchor = KVCrushAnchor::kZeros;
      break;
    case pb::ONES:
      o.kvcrush_anchor = KVCrushAnchor::kOnes;
      break;
    case pb::MEAN:
      o.kvcrush_anchor = KVCrushAnchor::kMean;
      break;
    case pb::RANDOM:
      o.kvcrush_anchor = KVCrushAnchor::kRandom;
      break;
    default:
      o.kvcrush_anchor = KVCrushAnchor::kAlternate;
      break;
  }
  o.seed = c.refined().seed();
  if (o.refined_algorithm == RefinedAlgorithm::kKVCrush && !o.per_group &&
      o.kvcrush_anchor == KVCrushAnchor::kMean) {
    return FieldError(p, "refined.kvcrush_anchor",
                      "MEAN is not supported for KVCRUSH with PER_TOKEN granularity (use ZEROS, "
                      "ONES, ALTERNATE or RANDOM)");
  }
  if (o.refined_algorithm == RefinedAlgorithm::kNone) o.refined_tokens = 0;
  if (o.refined_algorithm != RefinedAlgorithm::kNone &&
      o.algorithm == EvictionAlgorithm::kStreamingLLM) {
    return FieldError(p, "refined.algorithm", "STREAMING_LLM has no scores to refine");
  }
  const double mass = c.refined().attention_mass_threshold();
  if (mass < 0 || mass > 1 || std::isnan(mass)) {
    return FieldError(p, "refined.attention_mass_threshold",
                      absl::StrCat("must be in (0, 1], got ", mass));
  }
  o.attention_mass_threshold = mass == 0 ? 0.9 : mass;

  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.pooling().kernel_size(), p, "pooling.kernel_size"));
  o.pool_kernel = c.pooling().kernel_size() == 0 ? 7 : c.pooling().kernel_size();
  o.pool_alignment = c.pooling().alignment() == pb::Pooling::FORWARD ? PoolingAlignment::kForward
                                                                     : PoolingAlignment::kCentered;
  if (o.pool_alignment == PoolingAlignment::kCentered && o.pool_kernel % 2 == 0) {
    return FieldError(p, "pooling.kernel_size",
                      absl::StrCat("must be odd for CENTERED pooling, got ", o.pool_kernel));
  }

  const auto& b = c.budget();
  switch (b.allocator()) {
    case pb::BudgetAllocation::PYRAMIDKV:
      o.allocator = BudgetAllocator::kPyramidKV;
      break;
    case pb::BudgetAllocation::ADAKV:
      o.allocator = BudgetAllocator::kAdaKV;
      break;
    default:
      o.allocator = BudgetAllocator::kUniform;
      break;
  }
  if (!(b.pyramid_min_ratio() >= 0 && b.pyramid_min_ratio() <= 1)) {  // NaN fails too
    return FieldError(p, "budget.pyramid_min_ratio",
                      absl::StrCat("must be in (0, 1], got ", b.pyramid_min_ratio()));
  }
  o.pyramid_min_ratio = b.pyramid_min_ratio() == 0 ? 0.125 : b.pyramid_min_ratio();
  if (!(b.adakv_floor() >= 0 && b.adakv_floor() <= 1)) {
    return FieldError(p, "budget.adakv_floor",
                      absl::StrCat("must be in [0, 1], got ", b.adakv_floor()));
  }
  o.adakv_floor = b.adakv_floor() == 0 ? 0.2 : b.adakv_floor();

  o.per_head = c.per_head() || o.allocator == BudgetAllocator::kAdaKV;
  if (o.per_head && o.refined_algorithm != RefinedAlgorithm::kNone) {
    return FieldError(p, "refined.algorithm",
                      "refined selection works on layer-wide scores; it cannot be combined with "
                      "per_head or the ADAKV allocator");
  }
  if (o.allocator != BudgetAllocator::kUniform && o.algorithm == EvictionAlgorithm::kStreamingLLM) {
    return FieldError(p, "budget.allocator", "STREAMING_LLM keeps fixed areas; use UNIFORM");
  }
  o.defer_eviction_to_decode = c.defer_eviction_to_decode();
  o.rerotate_keys = c.rerotate_keys();
  return o;
}

absl::StatusOr<SparseOptions> ConvertSparse(const pb::SparseAttentionConfig& c,
                                            absl::string_view p) {
  SparseOptions o;
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::SparseAttentionMode>(pb::SparseAttentionMode_IsValid, c.mode(), p, "mode"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::HeadAggregation>(pb::HeadAggregation_IsValid,
                                                         c.xattention().head_aggregation(), p,
                                                         "xattention.head_aggregation"));
  switch (c.mode()) {
    case pb::A_SHAPE:
      o.mode = SparseMode::kAShape;
      break;
    case pb::TRI_SHAPE:
      o.mode = SparseMode::kTriShape;
      break;
    case pb::XATTENTION:
      o.mode = SparseMode::kXAttention;
      break;
    default:
      o.mode = SparseMode::kDense;
      break;
  }
  if (c.block_size() < 0 || c.block_size() > 4096) {
    return FieldError(p, "block_size", absl::StrCat("must be in [1, 4096], got ", c.block_size()));
  }
  o.block_size = c.block_size() == 0 ? 128 : c.block_size();
  if (c.has_last_query_size()) {
    ATTNKIT_RETURN_IF_ERROR(NonNegative(c.last_query_size(), p, "last_query_size"));
    o.last_query_size = c.last_query_size();
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.recent_size(), p, "recent_size"));
  o.recent_size = c.recent_size() == 0 ? 1024 : c.recent_size();
  if ((o.mode == SparseMode::kTriShape || o.mode == SparseMode::kAShape) &&
      o.recent_size % o.block_size != 0) {
    return FieldError(
        p, "recent_size",
        absl::StrCat("must be a multiple of block_size (", o.block_size, "), got ", o.recent_size));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.sink_size(), p, "sink_size"));
  o.sink_size = c.sink_size();
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.min_sparse_length(), p, "min_sparse_length"));
  o.min_sparse_length = c.min_sparse_length();

  const auto& x = c.xattention();
  const double threshold = x.threshold();
  if (std::isnan(threshold) || threshold < 0 || threshold > 1) {
    return FieldError(p, "xattention.threshold",
                      absl::StrCat("must be in (0, 1], got ", threshold));
  }
  o.threshold = threshold == 0 ? 0.8 : threshold;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(x.stride(), p, "xattention.stride"));
  o.stride = x.stride() == 0 ? 8 : x.stride();
  if (o.mode == SparseMode::kXAttention && o.block_size % o.stride != 0) {
    return FieldError(p, "xattention.stride",
                      absl::StrCat("block_size (", o.block_size,
                                   ") must be a multiple of stride, got ", o.stride));
  }
  o.head_aggregation =
      x.head_aggregation() == pb::PER_HEAD ? HeadAggregation::kPerHead : HeadAggregation::kSum;
  if (x.per_head_thresholds_size() > 0 && o.head_aggregation != HeadAggregation::kPerHead) {
    return FieldError(p, "xattention.per_head_thresholds", "needs head_aggregation: PER_HEAD");
  }
  for (int i = 0; i < x.per_head_thresholds_size(); ++i) {
    const double t = x.per_head_thresholds(i);
    if (!(t > 0 && t <= 1)) {
      return FieldError(p, absl::StrCat("xattention.per_head_thresholds[", i, "]"),
                        absl::StrCat("must be in (0, 1], got ", t));
    }
    o.per_head_thresholds.push_back(t);
  }
  return o;
}

absl::StatusOr<VisualOptions> ConvertVisual(const pb::VisualPruningConfig& c, absl::string_view p) {
  VisualOptions o;
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::VisualPruningMethod>(pb::VisualPruningMethod_IsValid, c.method(), p, "method"));
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::BudgetScope>(pb::BudgetScope_IsValid, c.budget_scope(), p, "budget_scope"));
  switch (c.method()) {
    case pb::DIVPRUNE:
      o.method = VisualMethod::kDivPrune;
      break;
    case pb::RANDOM_SUBSET:
      o.method = VisualMethod::kRandom;
      break;
    case pb::UNIFORM_GRID:
      o.method = VisualMethod::kUniform;
      break;
    default:
      o.method = VisualMethod::kCDPruner;
      break;
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.num_keep_tokens(), p, "num_keep_tokens"));
  const double ratio = c.keep_ratio();
  if (std::isnan(ratio) || ratio < 0 || ratio > 1) {
    return FieldError(p, "keep_ratio", absl::StrCat("must be in (0, 1], got ", ratio));
  }
  if ((c.num_keep_tokens() > 0) == (ratio > 0)) {
    return FieldError(p, "num_keep_tokens",
                      "set exactly one of num_keep_tokens (> 0) and keep_ratio (in (0, 1])");
  }
  o.num_keep_tokens = c.num_keep_tokens();
  o.keep_ratio = ratio;
  if (c.has_theta()) {
    if (!(c.theta() >= 0 && c.theta() <= 1)) {
      return FieldError(p, "theta", absl::StrCat("must be in [0, 1], got ", c.theta()));
    }
    o.theta = c.theta();
  }
  o.positive_relevance = c.positive_relevance();
  o.global_budget = c.budget_scope() == pb::GLOBAL;
  o.gain_guard = c.gain_guard();
  o.seed = c.seed();
  o.fast_kernel = c.fast_kernel();
  return o;
}

absl::StatusOr<SessionOptions> ConvertSession(const pb::SessionConfig& c) {
  SessionOptions o;
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::DType>(pb::DType_IsValid, c.dtype(), "", "dtype"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::Device>(pb::Device_IsValid, c.device(), "", "device"));
  auto positive = [](int64_t v, const char* field) -> absl::Status {
    if (v <= 0) return FieldError("", field, absl::StrCat("must be positive, got ", v));
    return absl::OkStatus();
  };
  ATTNKIT_RETURN_IF_ERROR(positive(c.num_layers(), "num_layers"));
  ATTNKIT_RETURN_IF_ERROR(positive(c.num_heads(), "num_heads"));
  ATTNKIT_RETURN_IF_ERROR(positive(c.num_kv_heads(), "num_kv_heads"));
  ATTNKIT_RETURN_IF_ERROR(positive(c.head_dim(), "head_dim"));
  if (c.num_heads() % c.num_kv_heads() != 0) {
    return FieldError(
        "", "num_kv_heads",
        absl::StrCat("must divide num_heads (", c.num_heads(), "), got ", c.num_kv_heads()));
  }
  if (c.head_dim() > 1024) {
    return FieldError("", "head_dim", absl::StrCat("must be at most 1024, got ", c.head_dim()));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.batch_size(), "", "batch_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.page_size(), "", "page_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.device_index(), "", "device_index"));
  if (c.page_size() > 4096) {
    return FieldError("", "page_size", absl::StrCat("must be at most 4096, got ", c.page_size()));
  }
  if (!(c.scale() >= 0 && std::isfinite(c.scale()))) {
    return FieldError("", "scale",
                      absl::StrCat("must be finite and non-negative, got ", c.scale()));
  }
  o.num_layers = c.num_layers();
  o.num_heads = c.num_heads();
  o.num_kv_heads = c.num_kv_heads();
  o.head_dim = c.head_dim();
  o.batch_size = c.batch_size() == 0 ? 1 : c.batch_size();
  o.dtype = c.dtype() == pb::FLOAT16    ? DType::kFloat16
            : c.dtype() == pb::BFLOAT16 ? DType::kBFloat16
                                        : DType::kFloat32;
  o.device = c.device() == pb::CUDA ? DeviceKind::kCUDA : DeviceKind::kCPU;
  o.device_index = c.device_index();
  o.page_size = c.page_size() == 0 ? 16 : c.page_size();
  o.scale = c.scale() == 0 ? 1.0 / std::sqrt(static_cast<double>(c.head_dim())) : c.scale();
  // No eviction message: the session keeps the whole cache. (An empty message would fail the
  // budget rule, which is about eviction configs, not about sessions that have none.)
  if (c.has_eviction()) {
    auto eviction = ConvertEviction(c.eviction(), "eviction.");
    if (!eviction.ok()) return eviction.status();
    o.eviction = *eviction;
  }
  auto sparse = ConvertSparse(c.sparse_attention(), "sparse_attention.");
  if (!sparse.ok()) return sparse.status();
  o.sparse = *sparse;
  o.has_rope = c.has_rope();
  if (o.has_rope) {
    if (!(c.rope().theta() >= 0 && std::isfinite(c.rope().theta()))) {
      return FieldError("", "rope.theta", absl::StrCat("must be positive, got ", c.rope().theta()));
    }
    o.rope.theta = c.rope().theta() == 0 ? 10000.0 : c.rope().theta();
    o.rope.interleaved = c.rope().interleaved();
    if (o.head_dim % 2 != 0) return FieldError("", "head_dim", "must be even to use rope");
  }
  if (o.eviction.enabled && o.eviction.rerotate_keys && !o.has_rope) {
    return FieldError("", "eviction.rerotate_keys", "needs the rope message (theta, layout)");
  }
  if (!o.sparse.per_head_thresholds.empty() &&
      static_cast<int>(o.sparse.per_head_thresholds.size()) != o.num_heads) {
    return FieldError("", "sparse_attention.xattention.per_head_thresholds",
                      absl::StrCat("must have num_heads (", o.num_heads, ") entries, got ",
                                   o.sparse.per_head_thresholds.size()));
  }
  return o;
}

template <typename Message, typename Converter>
auto ParseAndConvert(absl::string_view data, bool text, Converter convert)
    -> decltype(convert(std::declval<const Message&>())) {
  Message message;
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(data, text, &message));
  return convert(message);
}

std::unique_ptr<google::protobuf::Message> NewMessage(ConfigKind kind) {
  switch (kind) {
    case ConfigKind::kEviction:
      return std::make_unique<pb::EvictionConfig>();
    case ConfigKind::kSparseAttention:
      return std::make_unique<pb::SparseAttentionConfig>();
    case ConfigKind::kVisualPruning:
      return std::make_unique<pb::VisualPruningConfig>();
    case ConfigKind::kSession:
      return std::make_unique<pb::SessionConfig>();
  }
  return nullptr;
}

}  // namespace

const char* EvictionAlgorithmName(EvictionAlgorithm algorithm) {
  switch (algorithm) {
    case EvictionAlgorithm::kH2O:
      return "H2O";
    case EvictionAlgorithm::kSnapKV:
      return "SNAPKV";
    case EvictionAlgorithm::kRKV:
      return "RKV";
    case EvictionAlgorithm::kTOVA:
      return "TOVA";
    case EvictionAlgorithm::kKNorm:
      return "KNORM";
    case EvictionAlgorithm::kKeyDiff:
      return "KEYDIFF";
    case EvictionAlgorithm::kStreamingLLM:
      return "STREAMING_LLM";
  }
  return "?";
}

absl::StatusOr<EvictionOptions> ParseEvictionConfig(absl::string_view data, bool text) {
  return ParseAndConvert<pb::EvictionConfig>(
      data, text, [](const pb::EvictionConfig& c) { return ConvertEviction(c, ""); });
}

absl::StatusOr<SparseOptions> ParseSparseAttentionConfig(absl::string_view data, bool text) {
  return ParseAndConvert<pb::SparseAttentionConfig>(
      data, text, [](const pb::SparseAttentionConfig& c) { return ConvertSparse(c, ""); });
}

absl::StatusOr<VisualOptions> ParseVisualPruningConfig(absl::string_view data, bool text) {
  return ParseAndConvert<pb::VisualPruningConfig>(
      data, text, [](const pb::VisualPruningConfig& c) { return ConvertVisual(c, ""); });
}

absl::StatusOr<SessionOptions> ParseSessionConfig(absl::string_view data, bool text) {
  return ParseAndConvert<pb::SessionConfig>(data, text, ConvertSession);
}

absl::StatusOr<std::string> ValidateConfig(ConfigKind kind, absl::string_view data, bool text) {
  absl::Status status;
  switch (kind) {
    case ConfigKind::kEviction:
      status = ParseEvictionConfig(data, text).status();
      break;
    case ConfigKind::kSparseAttention:
      status = ParseSparseAttentionConfig(data, text).status();
      break;
    case ConfigKind::kVisualPruning:
      status = ParseVisualPruningConfig(data, text).status();
      break;
    case ConfigKind::kSession:
      status = ParseSessionConfig(data, text).status();
      break;
  }
  if (!status.ok()) return status;
  return text ? ConfigTextToBinary(kind, data) : std::string(data);
}

absl::StatusOr<std::string> ConfigTextToBinary(ConfigKind kind, absl::string_view text) {
  auto message = NewMessage(kind);
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(text, true, message.get()));
  std::string out;
  message->SerializeToString(&out);
  return out;
}

absl::StatusOr<std::string> ConfigBinaryToText(ConfigKind kind, absl::string_view bytes) {
  auto message = NewMessage(kind);
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(bytes, false, message.get()));
  std::string out;
  google::protobuf::TextFormat::PrintToString(*message, &out);
  return out;
}

std::string SerializeSessionStats(const SessionStatsView& s) {
  pb::SessionStats m;
  m.set_steps(s.steps);
  m.set_tokens_seen(s.tokens_seen);
  m.set_tokens_held(s.tokens_held);
  m.set_bytes_held(s.bytes_held);
  m.set_bytes_reserved(s.bytes_reserved);
  m.set_peak_bytes_held(s.peak_bytes_held);
  m.set_evictions(s.evictions);
  m.set_evicted_tokens(s.evicted_tokens);
  m.set_attention_seconds(s.attention_seconds);
  m.set_policy_seconds(s.policy_seconds);
  m.set_sparse_density(s.sparse_density);
  m.set_page_size(s.page_size);
  for (const auto& l : s.layers) {
    auto* lm = m.add_layers();
    lm->set_layer(l.layer);
    lm->set_tokens(l.tokens);
    lm->set_bytes(l.bytes);
    lm->set_evicted_tokens(l.evicted_tokens);
    lm->set_evictions(l.evictions);
  }
  for (const auto& h : s.heads) {
    auto* hm = m.add_heads();
    hm->set_layer(h.layer);
    hm->set_sequence(h.sequence);
    hm->set_kv_head(h.kv_head);
    hm->set_tokens(h.tokens);
    hm->set_bytes(h.bytes);
  }
  std::string out;
  m.SerializeToString(&out);
  return out;
}

}  // namespace attnkit
