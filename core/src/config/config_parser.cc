// The one place where configuration rules live. Every message names the field by its path in the
// top-level message, e.g. "eviction.start_tokens: must be non-negative, got -4".
#include "attnkit/config_parser.h"
#include "attnkit/config_messages.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/message_differencer.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
#include "config/algorithms.h"
#include "util/status_macros.h"

namespace attnkit {
namespace {

namespace pb = ::attnkit::v1;

absl::Status FieldError(absl::string_view prefix, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, field, ": ", what));
}

// The textproto parser's errors, each with its line and column (1-based) and the field it was
// reading ("line 1 column 40 (eviction.window_size): Expected integer, got: abc").
class CollectingErrors : public google::protobuf::io::ErrorCollector {
 public:
  CollectingErrors(const std::string& text, const google::protobuf::Descriptor* type)
      : text_(text), type_(type) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    const std::string path = TextFieldPath(text_, line, column, type_);
    errors_.push_back(absl::StrCat("line ", line + 1, " column ", column + 1,
                                   path.empty() ? "" : absl::StrCat(" (", path, ")"), ": ",
                                   message));
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string Text() const { return absl::StrJoin(errors_, "; "); }

 private:
  const std::string& text_;
  const google::protobuf::Descriptor* type_;
  std::vector<std::string> errors_;
};

// The first field of `message` (recursively) that this version's schema does not know, as an
// error naming its number and where it sits ("eviction: field number 99 ..."); OK when none. The
// wire format keeps such fields silently; a config written for a newer attnkit would otherwise
// run with its new settings ignored.
absl::Status RejectUnknownFields(const google::protobuf::Message& message,
                                 const std::string& path) {
  const google::protobuf::Reflection* reflection = message.GetReflection();
  const google::protobuf::UnknownFieldSet& unknown = reflection->GetUnknownFields(message);
  if (!unknown.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "config" : path, ": field number ", unknown.field(0).number(),
                     " is not a field of ", message.GetDescriptor()->full_name(),
                     " in this attnkit version (a config from a newer version, or not a ",
                     message.GetDescriptor()->full_name(), ")"));
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const google::protobuf::FieldDescriptor* field : fields) {
    if (field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    const std::string prefix =
        path.empty() ? field->name() : absl::StrCat(path, ".", field->name());
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(message, field); ++i) {
        ATTNKIT_RETURN_IF_ERROR(RejectUnknownFields(
            reflection->GetRepeatedMessage(message, field, i), absl::StrCat(prefix, "[", i, "]")));
      }
    } else {
      ATTNKIT_RETURN_IF_ERROR(RejectUnknownFields(reflection->GetMessage(message, field), prefix));
    }
  }
  return absl::OkStatus();
}

// Parses `data` into `message` (textproto or wire format), with an error naming the message type.
absl::Status ParseMessage(absl::string_view data, bool text, google::protobuf::Message* message) {
  const std::string type = message->GetDescriptor()->full_name();
  if (text) {
    google::protobuf::TextFormat::Parser parser;
    const std::string text_data(data);
    CollectingErrors errors(text_data, message->GetDescriptor());
    parser.RecordErrorsTo(&errors);
    if (!parser.ParseFromString(text_data, message)) {
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
  return RejectUnknownFields(*message, "");
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

absl::Status Positive(int64_t value, absl::string_view prefix, absl::string_view field) {
  if (value <= 0) return FieldError(prefix, field, absl::StrCat("must be positive, got ", value));
  return absl::OkStatus();
}

// "A", "A and B", "A, B and C": the names of the eviction algorithms with `capability`.
std::string AlgorithmsWith(EvictionCapability capability) {
  std::vector<std::string> names;
  for (const auto& d : kEvictionAlgorithms)
    if (d.Has(capability)) names.push_back(d.name);
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += i + 1 == names.size() ? " and " : ", ";
    out += names[i];
  }
  return out;
}

// Proto enum value -> C++ enum, one entry per row of the family's list (config/algorithms.h).
#define ATTNKIT_PROTO_EVICTION(proto, enumerator, scorer, selection, window, caps) \
  case pb::proto:                                                                  \
    return EvictionAlgorithm::enumerator;
EvictionAlgorithm FromProto(pb::EvictionAlgorithm value) {
  switch (value) {
    ATTNKIT_EVICTION_ALGORITHMS(ATTNKIT_PROTO_EVICTION)
    default:
      return EvictionAlgorithm::kSnapKV;  // EVICTION_ALGORITHM_UNSPECIFIED
  }
}
#undef ATTNKIT_PROTO_EVICTION

#define ATTNKIT_PROTO_REFINED(proto, enumerator, caps) \
  case pb::proto:                                      \
    return RefinedAlgorithm::enumerator;
RefinedAlgorithm FromProto(pb::RefinedAlgorithm value) {
  switch (value) {
    ATTNKIT_REFINED_ALGORITHMS(ATTNKIT_PROTO_REFINED)
    default:
      return RefinedAlgorithm::kNone;
  }
}
#undef ATTNKIT_PROTO_REFINED

#define ATTNKIT_PROTO_ALLOCATOR(proto, enumerator, caps) \
  case pb::BudgetAllocation::proto:                      \
    return BudgetAllocator::enumerator;
BudgetAllocator FromProto(pb::BudgetAllocation::Allocator value) {
  switch (value) {
    ATTNKIT_BUDGET_ALLOCATORS(ATTNKIT_PROTO_ALLOCATOR)
    default:
      return BudgetAllocator::kUniform;
  }
}
#undef ATTNKIT_PROTO_ALLOCATOR

#define ATTNKIT_PROTO_SPARSE_MODE(proto, enumerator, caps) \
  case pb::proto:                                          \
    return SparseMode::enumerator;
SparseMode FromProto(pb::SparseAttentionMode value) {
  switch (value) {
    ATTNKIT_SPARSE_MODES(ATTNKIT_PROTO_SPARSE_MODE)
    default:
      return SparseMode::kDense;
  }
}
#undef ATTNKIT_PROTO_SPARSE_MODE

#define ATTNKIT_PROTO_VISUAL_METHOD(proto, enumerator) \
  case pb::proto:                                      \
    return VisualMethod::enumerator;
VisualMethod FromProto(pb::VisualPruningMethod value) {
  switch (value) {
    ATTNKIT_VISUAL_METHODS(ATTNKIT_PROTO_VISUAL_METHOD)
    default:
      return VisualMethod::kCDPruner;
  }
}
#undef ATTNKIT_PROTO_VISUAL_METHOD

// The struct of an EvictionConfig: proto defaults resolved (0 means the default), enums mapped.
// Checks only what the struct cannot show (enum values, a negative group_size of PER_TOKEN); the
// rules are ValidateEvictionOptions'.
absl::StatusOr<EvictionOptions> ToEvictionOptions(const pb::EvictionConfig& c,
                                                  absl::string_view p) {
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
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::Pooling::Kind>(pb::Pooling::Kind_IsValid,
                                                       c.pooling().kind(), p, "pooling.kind"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::BudgetAllocation::Allocator>(
      pb::BudgetAllocation::Allocator_IsValid, c.budget().allocator(), p, "budget.allocator"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::EvictionConfig::Normalization>(
      pb::EvictionConfig::Normalization_IsValid, c.normalization(), p, "normalization"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.group_size(), p, "group_size"));

  EvictionOptions o = DefaultEvictionOptions(FromProto(c.algorithm()));
  o.enabled = c.enabled();
  o.per_group = c.granularity() != pb::PER_TOKEN;
  o.group_size = o.per_group ? (c.group_size() == 0 ? o.group_size : c.group_size()) : 1;
  o.start_tokens = c.start_tokens();
  o.recent_tokens = c.recent_tokens();
  o.intermediate_tokens = c.intermediate_tokens();
  o.refined_tokens = c.refined().refined_tokens();
  if (c.window_size() != 0) o.window_size = c.window_size();
  o.normalize_scores = c.normalize_scores();
  o.normalization = c.normalization() == pb::EvictionConfig::NORM_SUM
                        ? Normalization::kNormSum
                        : Normalization::kReferenceCounters;
  o.refined_algorithm = FromProto(c.refined().algorithm());
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
  const double mass = c.refined().attention_mass_threshold();
  if (mass != 0) o.attention_mass_threshold = mass;
  if (c.pooling().kernel_size() != 0) o.pool_kernel = c.pooling().kernel_size();
  o.pool_alignment = c.pooling().alignment() == pb::Pooling::FORWARD ? PoolingAlignment::kForward
                                                                     : PoolingAlignment::kCentered;
  o.pool_kind =
      c.pooling().kind() == pb::Pooling::AVERAGE ? PoolingKind::kAverage : PoolingKind::kMax;
  o.pool_before_window = c.pooling().before_window_only();
  const auto& b = c.budget();
  o.allocator = FromProto(b.allocator());
  if (b.pyramid_min_ratio() != 0) o.pyramid_min_ratio = b.pyramid_min_ratio();
  if (b.adakv_floor() != 0) o.adakv_floor = b.adakv_floor();
  if (b.cake_tau1() != 0) o.cake_tau1 = b.cake_tau1();
  if (b.cake_tau2() != 0) o.cake_tau2 = b.cake_tau2();
  o.cake_cascading = b.cake_cascading();
  if (c.has_cake()) {
    if (o.algorithm != EvictionAlgorithm::kCake) {
      return FieldError(
          p, "cake",
          absl::StrCat("only applies to CAKE, not ", EvictionAlgorithmName(o.algorithm)));
    }
    if (c.cake().has_gamma()) o.cake_gamma = c.cake().gamma();
  }
  const AllocatorDescriptor* allocator = FindAllocator(o.allocator);
  o.per_head = c.per_head() || (allocator != nullptr && allocator->Has(kAllocatorPerHead));
  o.defer_eviction_to_decode = c.defer_eviction_to_decode();
  o.rerotate_keys = c.rerotate_keys();
  o.random_seed = c.random_seed();
  ATTNKIT_RETURN_IF_ERROR(NonNegative(c.schedule().interval_steps(), p, "schedule.interval_steps"));
  o.interval_steps = std::max(1, c.schedule().interval_steps());
  o.compression_ratio = c.schedule().compression_ratio();
  o.threshold_eviction = c.has_score_threshold();
  o.score_threshold = c.score_threshold();
  o.cache_merging = c.has_cache_merging();
  ATTNKIT_RETURN_IF_ERROR(
      NonNegative(c.cache_merging().merge_budget(), p, "cache_merging.merge_budget"));
  if (c.cache_merging().merge_budget() != 0) o.merge_budget = c.cache_merging().merge_budget();
  o.merge_seed = c.cache_merging().seed();
  if (c.has_expected_attention()) {
    const pb::ExpectedAttention& e = c.expected_attention();
    const EvictionAlgorithmDescriptor* d = FindEvictionAlgorithm(o.algorithm);
    if (d == nullptr || !d->Has(kQueryStatistics)) {
      return FieldError(p, "expected_attention",
                        absl::StrCat("only applies to ", AlgorithmsWith(kQueryStatistics), ", not ",
                                     EvictionAlgorithmName(o.algorithm)));
    }
    if (e.n_future_positions() != 0) o.expected_future_positions = e.n_future_positions();
    if (e.has_use_covariance()) o.expected_use_covariance = e.use_covariance();
    if (e.has_use_vnorm()) o.expected_use_vnorm = e.use_vnorm();
    o.expected_epsilon = e.epsilon();
  }
  return o;
}

absl::StatusOr<EvictionOptions> ConvertEviction(const pb::EvictionConfig& c, absl::string_view p) {
  auto o = ToEvictionOptions(c, p);
  if (!o.ok()) return o.status();
  ATTNKIT_RETURN_IF_ERROR(ValidateEvictionOptions(*o, p));
  if (o->refined_algorithm == RefinedAlgorithm::kNone) o->refined_tokens = 0;
  return o;
}

absl::StatusOr<SparseOptions> ToSparseOptions(const pb::SparseAttentionConfig& c,
                                              absl::string_view p) {
  SparseOptions o;
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::SparseAttentionMode>(pb::SparseAttentionMode_IsValid, c.mode(), p, "mode"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::HeadAggregation>(pb::HeadAggregation_IsValid,
                                                         c.xattention().head_aggregation(), p,
                                                         "xattention.head_aggregation"));
  o.mode = FromProto(c.mode());
  if (c.block_size() != 0) o.block_size = c.block_size();
  if (c.has_last_query_size()) o.last_query_size = c.last_query_size();
  if (c.recent_size() != 0) o.recent_size = c.recent_size();
  o.sink_size = c.sink_size();
  o.min_sparse_length = c.min_sparse_length();
  const auto& x = c.xattention();
  if (x.threshold() != 0) o.threshold = x.threshold();
  if (x.stride() != 0) o.stride = x.stride();
  o.head_aggregation =
      x.head_aggregation() == pb::PER_HEAD ? HeadAggregation::kPerHead : HeadAggregation::kSum;
  o.per_head_thresholds.assign(x.per_head_thresholds().begin(), x.per_head_thresholds().end());
  const auto& f = c.flexprefill();
  if (f.gamma() != 0) o.flex_gamma = f.gamma();
  o.flex_tau = f.tau();
  if (f.min_budget() != 0) o.flex_min_budget = f.min_budget();
  o.flex_max_budget = f.max_budget();
  return o;
}

absl::StatusOr<SparseOptions> ConvertSparse(const pb::SparseAttentionConfig& c,
                                            absl::string_view p) {
  auto o = ToSparseOptions(c, p);
  if (!o.ok()) return o.status();
  ATTNKIT_RETURN_IF_ERROR(ValidateSparseOptions(*o, p));
  return o;
}

absl::StatusOr<VisualOptions> ConvertVisual(const pb::VisualPruningConfig& c, absl::string_view p) {
  VisualOptions o;
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::VisualPruningMethod>(pb::VisualPruningMethod_IsValid, c.method(), p, "method"));
  ATTNKIT_RETURN_IF_ERROR(
      CheckEnum<pb::BudgetScope>(pb::BudgetScope_IsValid, c.budget_scope(), p, "budget_scope"));
  o.method = FromProto(c.method());
  o.num_keep_tokens = c.num_keep_tokens();
  o.keep_ratio = c.keep_ratio();
  if (c.has_theta()) o.theta = c.theta();
  o.positive_relevance = c.positive_relevance();
  o.global_budget = c.budget_scope() == pb::GLOBAL;
  o.gain_guard = c.gain_guard();
  o.seed = c.seed();
  o.fast_kernel = c.fast_kernel();
  ATTNKIT_RETURN_IF_ERROR(ValidateVisualOptions(o));
  return o;
}

pb::KvDataType ToProto(KvDataType t) {
  switch (t) {
    case KvDataType::kFloat32:
      return pb::FP32;
    case KvDataType::kFloat16:
      return pb::FP16;
    case KvDataType::kBFloat16:
      return pb::BF16;
    case KvDataType::kInt8:
      return pb::INT8;
    case KvDataType::kInt4:
      return pb::INT4;
    case KvDataType::kInt2:
      return pb::INT2;
    default:
      return pb::DEFAULT;
  }
}

KvDataType FromProto(pb::KvDataType t) {
  switch (t) {
    case pb::FP32:
      return KvDataType::kFloat32;
    case pb::FP16:
      return KvDataType::kFloat16;
    case pb::BF16:
      return KvDataType::kBFloat16;
    case pb::INT8:
      return KvDataType::kInt8;
    case pb::INT4:
      return KvDataType::kInt4;
    case pb::INT2:
      return KvDataType::kInt2;
    default:
      return KvDataType::kDefault;
  }
}

absl::Status ValidateResidualBudget(const SessionOptions& o) {
  const KvFormatOptions& f = o.kv_format;
  if (f.residual_tokens > 1 << 20) {
    return FieldError("", "kv_format.residual_tokens",
                      absl::StrCat("must be at most 1048576, got ", f.residual_tokens));
  }
  if (o.eviction.enabled && f.residual_tokens > o.eviction.max_cache_tokens()) {
    return FieldError("", "kv_format.residual_tokens",
                      absl::StrCat("must be at most the eviction budget (start + intermediate + "
                                   "recent tokens = ",
                                   o.eviction.max_cache_tokens(), "), got ", f.residual_tokens));
  }
  return absl::OkStatus();
}

// ThinK (key_channel_ratio, key_channel_window): a share in (0, 1] (0: off), float keys, no
// re-rotation.
absl::Status ValidateThink(const SessionOptions& o) {
  const KvFormatOptions& f = o.kv_format;
  if (!(f.key_channel_ratio >= 0.0 && f.key_channel_ratio <= 1.0)) {
    return FieldError("", "kv_format.key_channel_ratio",
                      absl::StrCat("must be in (0, 1] (the share of key channels kept; 0 turns "
                                   "ThinK off), got ",
                                   f.key_channel_ratio));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(f.key_channel_window, "", "kv_format.key_channel_window"));
  if (!f.think()) {
    if (f.key_channel_window != 0) {
      return FieldError("", "kv_format.key_channel_window",
                        "only applies with ThinK (a key_channel_ratio in (0, 1))");
    }
    return absl::OkStatus();
  }
  if (IsQuantized(f.keys)) {
    return FieldError(
        "", "kv_format.key_channel_ratio",
        absl::StrCat("ThinK keeps keys as floats; kv_format.keys is ", KvDataTypeName(f.keys),
                     " (use FLOAT32, FLOAT16, BFLOAT16 or the session dtype)"));
  }
  if (o.eviction.enabled && o.eviction.rerotate_keys) {
    return FieldError("", "kv_format.key_channel_ratio",
                      "ThinK cannot be combined with eviction.rerotate_keys: RoPE mixes channel "
                      "pairs, and the pruned channels are not stored");
  }
  return absl::OkStatus();
}

absl::Status ValidateKvFormat(const SessionOptions& o) {
  const KvFormatOptions& f = o.kv_format;
  for (const auto& [type, field] : {std::pair<KvDataType, const char*>{f.keys, "kv_format.keys"},
                                    {f.values, "kv_format.values"}}) {
    if (static_cast<int>(type) < static_cast<int>(KvDataType::kDefault) ||
        static_cast<int>(type) > static_cast<int>(KvDataType::kInt2)) {
      return FieldError("", field,
                        absl::StrCat("unknown data type value ", static_cast<int>(type)));
    }
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(f.group_size, "", "kv_format.group_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(f.residual_tokens, "", "kv_format.residual_tokens"));
  ATTNKIT_RETURN_IF_ERROR(ValidateThink(o));
  if (!f.quantized()) {
    if (f.group_size != 0) {
      return FieldError("", "kv_format.group_size",
                        "only applies to a quantized format (INT8, INT4, INT2) of keys or values");
    }
    if (f.residual_tokens != 0 && !f.think()) {
      return FieldError("", "kv_format.residual_tokens",
                        "only applies to a quantized format (INT8, INT4, INT2) of keys or values "
                        "or to ThinK (key_channel_ratio)");
    }
    return ValidateResidualBudget(o);
  }
  if (f.group_size != 0 && o.head_dim > 0 && o.head_dim % f.group_size != 0) {
    return FieldError("", "kv_format.group_size",
                      absl::StrCat("must divide head_dim (", o.head_dim, "), got ", f.group_size));
  }
  const bool kivi = f.keys == KvDataType::kInt4 || f.keys == KvDataType::kInt2 ||
                    f.values == KvDataType::kInt4 || f.values == KvDataType::kInt2;
  const int group = f.group_size != 0 ? f.group_size : o.kv_group_size();
  if (kivi && group % 4 != 0) {
    return FieldError(
        "", "kv_format.group_size",
        absl::StrCat("must be a multiple of 4 with INT4 or INT2 (whole bytes of "
                     "codes per group), got ",
                     group, f.group_size == 0 ? " (the default for this head_dim)" : ""));
  }
  return ValidateResidualBudget(o);
}

absl::Status ValidateSparseDecode(const SessionOptions& o) {
  const SparseDecodeOptions& q = o.sparse_decode;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(q.token_budget, "", "sparse_decode.token_budget"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(q.start_pages, "", "sparse_decode.start_pages"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(q.recent_pages, "", "sparse_decode.recent_pages"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(q.dense_layers, "", "sparse_decode.dense_layers"));
  // With a kv_format the host store chooses among the quantized pages (their bounds taken from
  // the dequantized keys) and always reads the residual window; the device store refuses every
  // kv_format at creation.
  return absl::OkStatus();
}

// ValidateSessionOptions, where `check_eviction` says whether the eviction options are validated
// (a config validates a present eviction message even when it is disabled).
// The resolved split: one label per (layer, kv head), tokens kept by streaming heads, and no
// eviction policy beside it (retrieval heads keep the full cache).
absl::Status ValidateHeadSplit(const SessionOptions& o) {
  const HeadSplitOptions& h = o.head_split;
  if (!h.enabled()) return absl::OkStatus();
  const int64_t heads = static_cast<int64_t>(o.num_layers) * o.num_kv_heads;
  if (static_cast<int64_t>(h.streaming.size()) != heads) {
    return FieldError("", "head_split.streaming",
                      absl::StrCat("must have num_layers * num_kv_heads (", heads, ") labels, got ",
                                   h.streaming.size()));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(h.sink_tokens, "", "head_split.sink_tokens"));
  if (h.recent_tokens < 1) {
    return FieldError("", "head_split.recent_tokens",
                      absl::StrCat("must be at least 1, got ", h.recent_tokens,
                                   " (kvpress's recent_size 0 would keep every token)"));
  }
  if (o.eviction.enabled && !o.eviction.per_head) {
    return FieldError("", "eviction.per_head",
                      "must be true with head_split (streaming and retrieval kv heads keep "
                      "different tokens)");
  }
  if (o.eviction.enabled && o.eviction.allocator == BudgetAllocator::kAdaKV) {
    return FieldError("", "eviction.budget.allocator",
                      "ADAKV does not compose with head_split (its top-k over the layer's kv "
                      "heads would give streaming heads a share they never use)");
  }
  return absl::OkStatus();
}

// HeadSplit -> labels, as kvpress's DuoAttentionPress.post_init_from_model derives them from
// head scores: n = round(count * streaming_ratio) (Python's round: half to even), the n lowest
// scores stream (np.argsort; ties, which its unstable sort leaves open, go to the lower index).
absl::Status ConvertHeadSplit(const pb::HeadSplit& c, int64_t heads, HeadSplitOptions* out) {
  const bool scores = c.head_scores_size() > 0, labels = c.streaming_size() > 0;
  if (scores && labels) {
    return FieldError("", "head_split.streaming", "give either streaming or head_scores, not both");
  }
  if (!scores && !labels) {
    return FieldError("", "head_split",
                      "needs head_scores (with streaming_ratio) or streaming labels");
  }
  out->sink_tokens = c.sink_tokens();
  out->recent_tokens = c.recent_tokens();
  if (labels) {
    if (c.streaming_ratio() != 0) {
      return FieldError("", "head_split.streaming_ratio", "applies to head_scores only");
    }
    out->streaming.assign(c.streaming().begin(), c.streaming().end());
    return absl::OkStatus();
  }
  if (c.head_scores_size() != heads) {
    return FieldError("", "head_split.head_scores",
                      absl::StrCat("must have num_layers * num_kv_heads (", heads, ") scores, got ",
                                   c.head_scores_size()));
  }
  for (int i = 0; i < c.head_scores_size(); ++i) {
    if (!std::isfinite(c.head_scores(i))) {
      return FieldError("", absl::StrCat("head_split.head_scores[", i, "]"),
                        absl::StrCat("must be finite, got ", c.head_scores(i)));
    }
  }
  const double ratio = c.streaming_ratio();
  if (!(ratio >= 0 && ratio <= 1)) {
    return FieldError("", "head_split.streaming_ratio",
                      absl::StrCat("must be in [0, 1], got ", ratio));
  }
  const int64_t n = static_cast<int64_t>(std::nearbyint(static_cast<double>(heads) * ratio));
  std::vector<int64_t> order(static_cast<size_t>(heads));
  for (int64_t i = 0; i < heads; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return c.head_scores(static_cast<int>(a)) < c.head_scores(static_cast<int>(b));
  });
  out->streaming.assign(static_cast<size_t>(heads), false);
  for (int64_t i = 0; i < n; ++i) out->streaming[order[i]] = true;
  return absl::OkStatus();
}

absl::Status ValidateSession(const SessionOptions& o, bool check_eviction) {
  ATTNKIT_RETURN_IF_ERROR(Positive(o.num_layers, "", "num_layers"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.num_heads, "", "num_heads"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.num_kv_heads, "", "num_kv_heads"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.head_dim, "", "head_dim"));
  if (o.num_heads % o.num_kv_heads != 0) {
    return FieldError(
        "", "num_kv_heads",
        absl::StrCat("must divide num_heads (", o.num_heads, "), got ", o.num_kv_heads));
  }
  for (const auto& [value, limit, field] :
       {std::tuple<int64_t, int, const char*>{o.num_layers, kMaxLayers, "num_layers"},
        {o.num_heads, kMaxHeads, "num_heads"},
        {o.head_dim, kMaxHeadDim, "head_dim"},
        {o.batch_size, kMaxBatchSize, "batch_size"}}) {
    if (value > limit) {
      return FieldError("", field, absl::StrCat("must be at most ", limit, ", got ", value));
    }
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.batch_size, "", "batch_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.page_size, "", "page_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.device_index, "", "device_index"));
  if (o.page_size > 4096) {
    return FieldError("", "page_size", absl::StrCat("must be at most 4096, got ", o.page_size));
  }
  ATTNKIT_RETURN_IF_ERROR(Positive(o.batch_size, "", "batch_size"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.page_size, "", "page_size"));
  // 0: 1/sqrt(head_dim).
  if (!(o.scale >= 0 && std::isfinite(o.scale))) {
    return FieldError("", "scale", absl::StrCat("must be finite and non-negative, got ", o.scale));
  }
  if (check_eviction) ATTNKIT_RETURN_IF_ERROR(ValidateEvictionOptions(o.eviction, "eviction."));
  ATTNKIT_RETURN_IF_ERROR(ValidateSparseOptions(o.sparse, "sparse_attention."));
  if (o.has_rope) {
    if (!(o.rope.theta > 0 && std::isfinite(o.rope.theta))) {
      return FieldError("", "rope.theta", absl::StrCat("must be positive, got ", o.rope.theta));
    }
    if (o.head_dim % 2 != 0) return FieldError("", "head_dim", "must be even to use rope");
  }
  const EvictionAlgorithmDescriptor* algorithm = FindEvictionAlgorithm(o.eviction.algorithm);
  if (o.eviction.enabled && algorithm != nullptr && algorithm->Has(kQueryStatistics) &&
      !o.has_rope) {
    return FieldError("", "eviction.algorithm",
                      absl::StrCat(algorithm->name,
                                   " needs the rope message (theta, layout): it un-rotates the "
                                   "queries to take their statistics"));
  }
  if (o.eviction.enabled && o.eviction.rerotate_keys) {
    if (!o.has_rope) {
      return FieldError("", "eviction.rerotate_keys", "needs the rope message (theta, layout)");
    }
    if (o.eviction.per_head) {
      return FieldError("", "eviction.rerotate_keys",
                        "needs every kv head to keep the same tokens (not per_head)");
    }
  }
  ATTNKIT_RETURN_IF_ERROR(ValidateKvFormat(o));
  ATTNKIT_RETURN_IF_ERROR(ValidateHeadSplit(o));
  ATTNKIT_RETURN_IF_ERROR(ValidateSparseDecode(o));
  if (!o.sparse.per_head_thresholds.empty() &&
      static_cast<int>(o.sparse.per_head_thresholds.size()) != o.num_heads) {
    return FieldError("", "sparse_attention.xattention.per_head_thresholds",
                      absl::StrCat("must have num_heads (", o.num_heads, ") entries, got ",
                                   o.sparse.per_head_thresholds.size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionOptions> ConvertSession(const pb::SessionConfig& c) {
  SessionOptions o;
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::DType>(pb::DType_IsValid, c.dtype(), "", "dtype"));
  ATTNKIT_RETURN_IF_ERROR(CheckEnum<pb::Device>(pb::Device_IsValid, c.device(), "", "device"));
  o.num_layers = c.num_layers();
  o.num_heads = c.num_heads();
  o.num_kv_heads = c.num_kv_heads();
  o.head_dim = c.head_dim();
  if (c.batch_size() != 0) o.batch_size = c.batch_size();
  o.dtype = c.dtype() == pb::FLOAT16    ? DType::kFloat16
            : c.dtype() == pb::BFLOAT16 ? DType::kBFloat16
                                        : DType::kFloat32;
  o.device = c.device() == pb::CUDA ? DeviceKind::kCUDA : DeviceKind::kCPU;
  o.device_index = c.device_index();
  if (c.page_size() != 0) o.page_size = c.page_size();
  o.scale = c.scale();
  // No eviction message: the session keeps the whole cache. (An empty message would fail the
  // budget rule, which is about eviction configs, not about sessions that have none.)
  if (c.has_eviction()) {
    auto eviction = ToEvictionOptions(c.eviction(), "eviction.");
    if (!eviction.ok()) return eviction.status();
    o.eviction = *eviction;
  }
  auto sparse = ToSparseOptions(c.sparse_attention(), "sparse_attention.");
  if (!sparse.ok()) return sparse.status();
  o.sparse = *sparse;
  o.has_rope = c.has_rope();
  if (o.has_rope) {
    o.rope.theta = c.rope().theta() == 0 ? o.rope.theta : c.rope().theta();
    o.rope.interleaved = c.rope().interleaved();
  }
  if (c.has_kv_format()) {
    const pb::KvFormat& f = c.kv_format();
    ATTNKIT_RETURN_IF_ERROR(
        CheckEnum<pb::KvDataType>(pb::KvDataType_IsValid, f.keys(), "kv_format.", "keys"));
    ATTNKIT_RETURN_IF_ERROR(
        CheckEnum<pb::KvDataType>(pb::KvDataType_IsValid, f.values(), "kv_format.", "values"));
    o.kv_format.keys = FromProto(f.keys());
    o.kv_format.values = FromProto(f.values());
    o.kv_format.group_size = f.group_size();
    o.kv_format.residual_tokens = f.residual_tokens();
    o.kv_format.key_channel_ratio = f.key_channel_ratio();
    o.kv_format.key_channel_window = f.key_channel_window();
  }
  o.sparse_decode.token_budget = c.sparse_decode().token_budget();
  o.sparse_decode.start_pages = c.sparse_decode().start_pages();
  o.sparse_decode.recent_pages = c.sparse_decode().recent_pages();
  o.sparse_decode.dense_layers = c.sparse_decode().dense_layers();
  o.skip_finite_check = c.skip_finite_check();
  if (c.has_head_split()) {
    // The shape first: the split's counts are checked against it.
    ATTNKIT_RETURN_IF_ERROR(ValidateSession(o, /*check_eviction=*/c.has_eviction()));
    ATTNKIT_RETURN_IF_ERROR(ConvertHeadSplit(
        c.head_split(), static_cast<int64_t>(o.num_layers) * o.num_kv_heads, &o.head_split));
  }
  ATTNKIT_RETURN_IF_ERROR(ValidateSession(o, /*check_eviction=*/c.has_eviction()));
  if (o.eviction.refined_algorithm == RefinedAlgorithm::kNone) o.eviction.refined_tokens = 0;
  // Resolved here, after validation, so a non-finite scale is reported as given.
  if (o.scale == 0) o.scale = 1.0 / std::sqrt(static_cast<double>(o.head_dim));
  if (o.kv_format.quantized()) o.kv_format.group_size = o.kv_group_size();
  return o;
}

template <typename Message, typename Converter>
auto ParseAndConvert(absl::string_view data, bool text, Converter convert)
    -> decltype(convert(std::declval<const Message&>())) {
  Message message;
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(data, text, &message));
  return convert(message);
}

}  // namespace

std::string TextFieldPath(const std::string& text, int line, int column,
                          const google::protobuf::Descriptor* type) {
  size_t end = 0;  // the offset of (line, column)
  for (int l = 0; l < line && end < text.size(); ++end) {
    if (text[end] == '\n') ++l;
  }
  for (int c = 0; c < column && end < text.size() && text[end] != '\n'; ++end) {
    c = text[end] == '\t' ? c + 8 - c % 8 : c + 1;
  }
  struct Level {
    const google::protobuf::Descriptor* type;
    std::string name;                               // the field that opened it, with its index
    std::vector<std::pair<std::string, int>> seen;  // field names seen at this level, and counts
    std::string key;                                // the last field name at this level
  };
  auto index_of = [](Level& level, const std::string& name) {
    for (auto& [n, count] : level.seen) {
      if (n == name) return count++;
    }
    level.seen.emplace_back(name, 1);
    return 0;
  };
  auto qualified = [](const Level& level, const std::string& name, int index) {
    const google::protobuf::FieldDescriptor* field =
        level.type != nullptr ? level.type->FindFieldByName(name) : nullptr;
    return field != nullptr && field->is_repeated() ? absl::StrCat(name, "[", index, "]") : name;
  };
  std::vector<Level> stack{{type, "", {}, ""}};
  auto is_ident = [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_';
  };
  size_t i = 0;
  while (i < text.size() && i <= end) {
    const char ch = text[i];
    if (ch == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (ch == '"' || ch == '\'') {
      for (++i; i < text.size() && text[i] != ch && text[i] != '\n'; ++i) {
        if (text[i] == '\\') ++i;
      }
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(ch)) != 0 || ch == '_') {
      const size_t start = i;
      while (i < text.size() && is_ident(text[i])) ++i;
      size_t next = i;
      while (next < text.size() && std::isspace(static_cast<unsigned char>(text[next])) != 0) {
        ++next;
      }
      const bool colon = next < text.size() && text[next] == ':';
      if (colon) {
        ++next;
        while (next < text.size() && std::isspace(static_cast<unsigned char>(text[next])) != 0) {
          ++next;
        }
      }
      const bool opens = next < text.size() && (text[next] == '{' || text[next] == '<');
      if (colon || opens) {
        Level& level = stack.back();
        const std::string name = text.substr(start, i - start);
        level.key = qualified(level, name, index_of(level, name));
        if (opens && next < end) {
          const google::protobuf::FieldDescriptor* field =
              level.type != nullptr ? level.type->FindFieldByName(name) : nullptr;
          stack.push_back({field != nullptr ? field->message_type() : nullptr, level.key, {}, ""});
          i = next + 1;
        }
      }
    } else if ((ch == '}' || ch == '>') && stack.size() > 1 && i < end) {
      stack.pop_back();
      stack.back().key.clear();
      ++i;
    } else {
      ++i;
    }
  }
  std::vector<std::string> parts;
  for (size_t l = 1; l < stack.size(); ++l) parts.push_back(stack[l].name);
  if (!stack.back().key.empty()) parts.push_back(stack.back().key);
  return absl::StrJoin(parts, ".");
}

std::unique_ptr<google::protobuf::Message> NewConfigMessage(ConfigKind kind) {
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

const char* KvDataTypeName(KvDataType type) {
  switch (type) {
    case KvDataType::kDefault:
      return "DEFAULT";
    case KvDataType::kFloat32:
      return "FP32";
    case KvDataType::kFloat16:
      return "FP16";
    case KvDataType::kBFloat16:
      return "BF16";
    case KvDataType::kInt8:
      return "INT8";
    case KvDataType::kInt4:
      return "INT4";
    case KvDataType::kInt2:
      return "INT2";
  }
  return "?";
}

const char* EvictionAlgorithmName(EvictionAlgorithm algorithm) {
  const EvictionAlgorithmDescriptor* d = FindEvictionAlgorithm(algorithm);
  return d != nullptr ? d->name : "?";
}

EvictionOptions DefaultEvictionOptions(EvictionAlgorithm algorithm) {
  EvictionOptions o;
  o.algorithm = algorithm;
  const EvictionAlgorithmDescriptor* d = FindEvictionAlgorithm(algorithm);
  o.window_size = d != nullptr && d->Has(kTakesWindow) ? d->default_window : 0;
  return o;
}

absl::Status ValidateEvictionOptions(const EvictionOptions& o, absl::string_view p) {
  const EvictionAlgorithmDescriptor* algorithm = FindEvictionAlgorithm(o.algorithm);
  if (algorithm == nullptr) {
    return FieldError(p, "algorithm",
                      absl::StrCat("unknown enum value ", static_cast<int>(o.algorithm)));
  }
  const RefinementDescriptor* refinement = FindRefinement(o.refined_algorithm);
  if (refinement == nullptr) {
    return FieldError(p, "refined.algorithm",
                      absl::StrCat("unknown enum value ", static_cast<int>(o.refined_algorithm)));
  }
  const AllocatorDescriptor* allocator = FindAllocator(o.allocator);
  if (allocator == nullptr) {
    return FieldError(p, "budget.allocator",
                      absl::StrCat("unknown enum value ", static_cast<int>(o.allocator)));
  }
  const char* name = algorithm->name;
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.group_size, p, "group_size"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.group_size, p, "group_size"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.interval_steps, p, "schedule.interval_steps"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.start_tokens, p, "start_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.recent_tokens, p, "recent_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.intermediate_tokens, p, "intermediate_tokens"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.refined_tokens, p, "refined.refined_tokens"));
  if (o.refined_tokens > o.intermediate_tokens) {
    return FieldError(p, "refined.refined_tokens",
                      absl::StrCat("must not exceed intermediate_tokens (", o.intermediate_tokens,
                                   "), got ", o.refined_tokens));
  }
  const double ratio = o.compression_ratio;
  if (!(ratio >= 0 && ratio < 1)) {  // NaN fails too
    return FieldError(p, "schedule.compression_ratio",
                      absl::StrCat("must be in [0, 1) (the share of the tokens seen that is "
                                   "evicted; 0: off), got ",
                                   ratio));
  }
  if (o.ratio_mode() && o.intermediate_tokens != 0) {
    return FieldError(p, "intermediate_tokens",
                      absl::StrCat("must be 0 with schedule.compression_ratio (the ratio sizes the "
                                   "intermediate area), got ",
                                   o.intermediate_tokens));
  }
  if (o.ratio_mode() && o.threshold_eviction) {
    return FieldError(p, "schedule.compression_ratio",
                      "does not compose with score_threshold (a threshold keeps no fixed share)");
  }
  // Summed in 64 bits: the int sum of three large sizes would overflow (undefined behaviour).
  const int64_t budget = int64_t{o.start_tokens} + o.intermediate_tokens + o.recent_tokens;
  if (budget <= 0 && !o.ratio_mode()) {
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
  for (const auto& [field, value] : sizes) {
    if (value % o.group_size != 0) {
      // Say where 32 came from when the config never set group_size (a common surprise).
      const bool is_default = o.group_size == EvictionOptions{}.group_size;
      return FieldError(p, field,
                        absl::StrCat("must be divisible by group_size (", o.group_size,
                                     is_default ? ", the default when group_size is not set" : "",
                                     "), got ", value));
    }
  }

  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.window_size, p, "window_size"));
  if (!algorithm->Has(kTakesWindow) && o.window_size != 0) {
    return FieldError(
        p, "window_size",
        absl::StrCat("is only supported by ", AlgorithmsWith(kTakesWindow), ", not ", name));
  }
  if (algorithm->Has(kTakesWindow) && o.window_size == 0) {
    return FieldError(p, "window_size", absl::StrCat("must be positive for ", name, ", got 0"));
  }
  if (o.normalize_scores && !algorithm->Has(kNormalizable)) {
    return FieldError(
        p, "normalize_scores",
        absl::StrCat("only applies to ", AlgorithmsWith(kNormalizable), ", not ", name));
  }
  if (o.normalization == Normalization::kNormSum && !o.normalize_scores) {
    return FieldError(p, "normalization", "NORM_SUM needs normalize_scores: true");
  }
  if (refinement->Has(kRefinementAnchored) && !o.per_group &&
      o.kvcrush_anchor == KVCrushAnchor::kMean) {
    return FieldError(p, "refined.kvcrush_anchor",
                      "MEAN is not supported for KVCRUSH with PER_TOKEN granularity (use ZEROS, "
                      "ONES, ALTERNATE or RANDOM)");
  }
  if (o.refined_algorithm != RefinedAlgorithm::kNone && !algorithm->Has(kRefinable)) {
    return FieldError(p, "refined.algorithm", absl::StrCat(name, " has no scores to refine"));
  }
  const double mass = o.attention_mass_threshold;
  if (!(mass > 0 && mass <= 1)) {  // NaN fails too
    return FieldError(p, "refined.attention_mass_threshold",
                      absl::StrCat("must be in (0, 1], got ", mass));
  }

  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.pool_kernel, p, "pooling.kernel_size"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.pool_kernel, p, "pooling.kernel_size"));
  if (o.pool_alignment == PoolingAlignment::kCentered && o.pool_kernel % 2 == 0) {
    return FieldError(p, "pooling.kernel_size",
                      absl::StrCat("must be odd for CENTERED pooling, got ", o.pool_kernel));
  }
  if (o.pool_kind != PoolingKind::kMax && !algorithm->Has(kPooled)) {
    return FieldError(
        p, "pooling.kind",
        absl::StrCat("AVERAGE only applies to ", AlgorithmsWith(kPooled), ", not ", name));
  }
  if (o.pool_before_window && !algorithm->Has(kPoolsPrompt)) {
    return FieldError(
        p, "pooling.before_window_only",
        absl::StrCat("only applies to ", AlgorithmsWith(kPoolsPrompt), ", not ", name));
  }
  if (o.threshold_eviction) {
    if (!std::isfinite(o.score_threshold)) {
      return FieldError(p, "score_threshold",
                        absl::StrCat("must be finite, got ", o.score_threshold));
    }
    if (o.per_group) {
      return FieldError(p, "score_threshold",
                        "needs granularity: PER_TOKEN (tokens are compared one by one)");
    }
    if (algorithm->selection != EvictionSelection::kTopScores) {
      return FieldError(p, "score_threshold", absl::StrCat(name, " has no scores to compare"));
    }
    if (o.refined_algorithm != RefinedAlgorithm::kNone) {
      return FieldError(p, "refined.algorithm", "does not compose with score_threshold");
    }
    if (o.allocator != BudgetAllocator::kUniform) {
      return FieldError(p, "budget.allocator",
                        absl::StrCat(allocator->name,
                                     " does not compose with score_threshold "
                                     "(a threshold has no budget to allocate)"));
    }
  }
  const bool cake_allocator = o.allocator == BudgetAllocator::kCake;
  if (cake_allocator && o.algorithm != EvictionAlgorithm::kCake) {
    return FieldError(p, "budget.allocator",
                      absl::StrCat("CAKE needs algorithm CAKE (its budgets come from CAKE's window "
                                   "attention), not ",
                                   name));
  }
  if (!cake_allocator && (o.cake_tau1 != 1.0 || o.cake_tau2 != 1.0 || o.cake_cascading)) {
    return FieldError(p, "budget.cake_tau1",
                      "cake_tau1, cake_tau2 and cake_cascading need the "
                      "CAKE allocator");
  }
  for (const auto& [field, tau] : {std::pair<const char*, double>{"budget.cake_tau1", o.cake_tau1},
                                   {"budget.cake_tau2", o.cake_tau2}}) {
    if (!(tau > 0 && std::isfinite(tau))) {
      return FieldError(p, field, absl::StrCat("must be positive and finite, got ", tau));
    }
  }
  if (!std::isfinite(o.cake_gamma)) {
    return FieldError(p, "cake.gamma", absl::StrCat("must be finite, got ", o.cake_gamma));
  }
  if (o.algorithm == EvictionAlgorithm::kCake) {
    if (!o.per_head) {
      return FieldError(p, "per_head",
                        "must be true for CAKE (every kv head keeps its own tokens)");
    }
    if (o.per_group) {
      return FieldError(p, "granularity", "CAKE needs PER_TOKEN (tokens are ranked one by one)");
    }
    if (o.recent_tokens != o.window_size) {
      return FieldError(
          p, "recent_tokens",
          absl::StrCat("must equal window_size (", o.window_size,
                       ") for CAKE: the observation window is always kept, got ", o.recent_tokens));
    }
    if (o.ratio_mode() || o.threshold_eviction) {
      return FieldError(p, o.ratio_mode() ? "schedule.compression_ratio" : "score_threshold",
                        "does not compose with CAKE");
    }
  }
  if (o.cache_merging) {
    ATTNKIT_RETURN_IF_ERROR(Positive(o.merge_budget, p, "cache_merging.merge_budget"));
    if (algorithm->selection != EvictionSelection::kTopScores) {
      return FieldError(p, "cache_merging",
                        absl::StrCat(name,
                                     " has no scores to choose the tokens to merge (CaM needs a "
                                     "scoring algorithm)"));
    }
  }
  if (o.expected_future_positions <= 0) {
    return FieldError(p, "expected_attention.n_future_positions",
                      absl::StrCat("must be positive, got ", o.expected_future_positions));
  }
  if (!(o.expected_epsilon >= 0 && std::isfinite(o.expected_epsilon))) {
    return FieldError(p, "expected_attention.epsilon",
                      absl::StrCat("must be finite and non-negative, got ", o.expected_epsilon));
  }
  if (!(o.pyramid_min_ratio > 0 && o.pyramid_min_ratio <= 1)) {
    return FieldError(p, "budget.pyramid_min_ratio",
                      absl::StrCat("must be in (0, 1], got ", o.pyramid_min_ratio));
  }
  if (!(o.adakv_floor >= 0 && o.adakv_floor <= 1)) {
    return FieldError(p, "budget.adakv_floor",
                      absl::StrCat("must be in [0, 1], got ", o.adakv_floor));
  }
  if (allocator->Has(kAllocatorPerHead) && !o.per_head) {
    return FieldError(p, "per_head",
                      absl::StrCat("must be true with the ", allocator->name,
                                   " allocator (its selection is per kv head)"));
  }
  if (o.per_head && o.refined_algorithm != RefinedAlgorithm::kNone) {
    return FieldError(p, "refined.algorithm",
                      "refined selection works on layer-wide scores; it cannot be combined with "
                      "per_head or the ADAKV allocator");
  }
  if (o.allocator != BudgetAllocator::kUniform && !algorithm->Has(kAllocatable)) {
    return FieldError(p, "budget.allocator", absl::StrCat(name, " keeps fixed areas; use UNIFORM"));
  }
  return absl::OkStatus();
}

absl::Status ValidateSparseOptions(const SparseOptions& o, absl::string_view p) {
  const SparseModeDescriptor* mode = FindSparseMode(o.mode);
  if (mode == nullptr) {
    return FieldError(p, "mode", absl::StrCat("unknown enum value ", static_cast<int>(o.mode)));
  }
  if (o.block_size < 1 || o.block_size > 4096) {
    return FieldError(p, "block_size", absl::StrCat("must be in [1, 4096], got ", o.block_size));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.last_query_size, p, "last_query_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.recent_size, p, "recent_size"));
  if (mode->Has(kSparseRecentInBlocks) && o.recent_size % o.block_size != 0) {
    return FieldError(
        p, "recent_size",
        absl::StrCat("must be a multiple of block_size (", o.block_size, "), got ", o.recent_size));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.sink_size, p, "sink_size"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.min_sparse_length, p, "min_sparse_length"));
  if (!(o.threshold > 0 && o.threshold <= 1)) {  // NaN fails too
    return FieldError(p, "xattention.threshold",
                      absl::StrCat("must be in (0, 1], got ", o.threshold));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.stride, p, "xattention.stride"));
  ATTNKIT_RETURN_IF_ERROR(Positive(o.stride, p, "xattention.stride"));
  if (mode->Has(kSparseStrided) && o.block_size % o.stride != 0) {
    return FieldError(p, "xattention.stride",
                      absl::StrCat("block_size (", o.block_size,
                                   ") must be a multiple of stride, got ", o.stride));
  }
  if (!(o.flex_gamma > 0 && o.flex_gamma <= 1)) {
    return FieldError(p, "flexprefill.gamma",
                      absl::StrCat("must be in (0, 1], got ", o.flex_gamma));
  }
  if (!(o.flex_tau >= 0 && o.flex_tau <= 1)) {
    return FieldError(p, "flexprefill.tau", absl::StrCat("must be in [0, 1], got ", o.flex_tau));
  }
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.flex_min_budget, p, "flexprefill.min_budget"));
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.flex_max_budget, p, "flexprefill.max_budget"));
  if (!o.per_head_thresholds.empty() && o.head_aggregation != HeadAggregation::kPerHead) {
    return FieldError(p, "xattention.per_head_thresholds", "needs head_aggregation: PER_HEAD");
  }
  for (size_t i = 0; i < o.per_head_thresholds.size(); ++i) {
    const double t = o.per_head_thresholds[i];
    if (!(t > 0 && t <= 1)) {
      return FieldError(p, absl::StrCat("xattention.per_head_thresholds[", i, "]"),
                        absl::StrCat("must be in (0, 1], got ", t));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateVisualOptions(const VisualOptions& o) {
  ATTNKIT_RETURN_IF_ERROR(NonNegative(o.num_keep_tokens, "", "num_keep_tokens"));
  const double ratio = o.keep_ratio;
  if (!(ratio >= 0 && ratio <= 1)) {  // NaN fails too
    return FieldError("", "keep_ratio", absl::StrCat("must be in (0, 1], got ", ratio));
  }
  if ((o.num_keep_tokens > 0) == (ratio > 0)) {
    return FieldError("", "num_keep_tokens",
                      "set exactly one of num_keep_tokens (> 0) and keep_ratio (in (0, 1])");
  }
  if (!(o.theta >= 0 && o.theta <= 1)) {
    return FieldError("", "theta", absl::StrCat("must be in [0, 1], got ", o.theta));
  }
  return absl::OkStatus();
}

absl::Status ValidateSessionOptions(const SessionOptions& options) {
  return ValidateSession(options, /*check_eviction=*/options.eviction.enabled);
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
  pb::SessionConfig message;
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(data, text, &message));
  ATTNKIT_ASSIGN_OR_RETURN(SessionOptions options, ConvertSession(message));
  {
    google::protobuf::io::StringOutputStream stream(&options.config_binary);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }  // the streams trim the string when they go
  return options;
}

absl::Status CheckSavedSessionConfig(absl::string_view saved, absl::string_view current) {
  pb::SessionConfig a, b;
  if (!a.ParseFromArray(saved.data(), static_cast<int>(saved.size()))) {
    return absl::InvalidArgumentError("blob: the saved SessionConfig does not parse");
  }
  if (!b.ParseFromArray(current.data(), static_cast<int>(current.size()))) {
    return absl::InternalError("the session's own SessionConfig does not parse");
  }
  for (pb::SessionConfig* c : {&a, &b}) {
    c->clear_device();
    c->clear_device_index();
  }
  google::protobuf::util::MessageDifferencer differ;
  std::string report;
  differ.ReportDifferencesToString(&report);
  if (differ.Compare(a, b)) return absl::OkStatus();
  // One line per difference, e.g. `modified: eviction.budget: 64 -> 128`; the first one is enough.
  const std::string first = report.substr(0, report.find('\n'));
  return absl::InvalidArgumentError(absl::StrCat(
      "blob: saved from a session with another configuration (saved -> this session): ", first));
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
  auto message = NewConfigMessage(kind);
  ATTNKIT_RETURN_IF_ERROR(ParseMessage(text, true, message.get()));
  std::string out;
  message->SerializeToString(&out);
  return out;
}

absl::StatusOr<std::string> ConfigBinaryToText(ConfigKind kind, absl::string_view bytes) {
  auto message = NewConfigMessage(kind);
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
  m.set_peak_bytes_within_calls(s.peak_bytes_within_calls);
  m.set_evictions(s.evictions);
  m.set_evicted_tokens(s.evicted_tokens);
  m.set_attention_seconds(s.attention_seconds);
  m.set_policy_seconds(s.policy_seconds);
  m.set_sparse_density(s.sparse_density);
  m.set_sparse_decode_tokens_read(s.sparse_decode_tokens_read);
  m.set_sparse_decode_tokens_held(s.sparse_decode_tokens_held);
  m.set_page_size(s.page_size);
  for (const auto& l : s.layers) {
    auto* lm = m.add_layers();
    lm->set_layer(l.layer);
    lm->set_tokens(l.tokens);
    lm->set_bytes(l.bytes);
    lm->set_evicted_tokens(l.evicted_tokens);
    lm->set_evictions(l.evictions);
  }
  for (const auto& f : s.format_bytes) {
    auto* fm = m.add_format_bytes();
    fm->set_data_type(ToProto(f.data_type));
    fm->set_values(f.values);
    fm->set_bytes(f.bytes);
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
