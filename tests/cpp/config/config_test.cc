// Every rule of core/src/config/config_parser.cc, from bytes and from textproto: each one is
// INVALID_ARGUMENT with a message that starts with the field's path; legal edge values are
// accepted; unset fields resolve to the reference's defaults; garbage is rejected, never a crash.
#include "attnkit/config_parser.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/text_format.h>

#include "absl/status/status.h"
#include "attnkit/config.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnkit {
namespace {

namespace pb = ::attnkit::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename Message>
struct KindOf;
template <>
struct KindOf<pb::EvictionConfig> {
  static constexpr ConfigKind kKind = ConfigKind::kEviction;
};
template <>
struct KindOf<pb::SparseAttentionConfig> {
  static constexpr ConfigKind kKind = ConfigKind::kSparseAttention;
};
template <>
struct KindOf<pb::VisualPruningConfig> {
  static constexpr ConfigKind kKind = ConfigKind::kVisualPruning;
};
template <>
struct KindOf<pb::SessionConfig> {
  static constexpr ConfigKind kKind = ConfigKind::kSession;
};

std::string ToText(const google::protobuf::Message& message) {
  std::string text;
  EXPECT_TRUE(google::protobuf::TextFormat::PrintToString(message, &text));
  return text;
}

// Both forms of `message` are rejected with INVALID_ARGUMENT starting with "<field>: ".
template <typename Message>
void ExpectRejected(const Message& message, const std::string& field) {
  constexpr ConfigKind kind = KindOf<Message>::kKind;
  const absl::Status from_bytes =
      ValidateConfig(kind, message.SerializeAsString(), /*text=*/false).status();
  EXPECT_EQ(from_bytes.code(), absl::StatusCode::kInvalidArgument) << from_bytes;
  EXPECT_THAT(std::string(from_bytes.message()), StartsWith(field + ": "));
  const std::string text = ToText(message);
  const absl::Status from_text = ValidateConfig(kind, text, /*text=*/true).status();
  EXPECT_EQ(from_text.code(), absl::StatusCode::kInvalidArgument) << from_text;
  EXPECT_THAT(std::string(from_text.message()), StartsWith(field + ": ")) << "textproto:\n" << text;
}

template <typename Message>
void ExpectAccepted(const Message& message) {
  constexpr ConfigKind kind = KindOf<Message>::kKind;
  EXPECT_TRUE(ValidateConfig(kind, message.SerializeAsString(), false).ok())
      << ValidateConfig(kind, message.SerializeAsString(), false).status();
  EXPECT_TRUE(ValidateConfig(kind, ToText(message), true).ok())
      << ValidateConfig(kind, ToText(message), true).status() << "\n"
      << ToText(message);
}

template <typename Message>
struct Rule {
  std::string field;  // the path the error must start with
  std::function<void(Message*)> mutate;
};

template <typename Message>
void CheckRules(const Message& valid, const std::vector<Rule<Message>>& rules) {
  ExpectAccepted(valid);
  for (size_t i = 0; i < rules.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "rule " << i << " (" << rules[i].field << ")");
    Message message = valid;
    rules[i].mutate(&message);
    ExpectRejected(message, rules[i].field);
  }
}

template <typename Message>
void CheckAccepted(const Message& valid, const std::vector<std::function<void(Message*)>>& edits) {
  for (size_t i = 0; i < edits.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "legal edit " << i);
    Message message = valid;
    edits[i](&message);
    ExpectAccepted(message);
  }
}

pb::EvictionConfig ValidEviction() {
  pb::EvictionConfig c;
  c.set_enabled(true);
  c.set_algorithm(pb::SNAPKV);
  c.set_start_tokens(32);
  c.set_recent_tokens(128);
  c.set_intermediate_tokens(512);
  return c;
}

pb::SparseAttentionConfig ValidSparse() {
  pb::SparseAttentionConfig c;
  c.set_mode(pb::TRI_SHAPE);
  c.set_recent_size(256);
  return c;
}

pb::VisualPruningConfig ValidVisual() {
  pb::VisualPruningConfig c;
  c.set_num_keep_tokens(64);
  return c;
}

pb::SessionConfig ValidSession() {
  pb::SessionConfig c;
  c.set_num_layers(2);
  c.set_num_heads(8);
  c.set_num_kv_heads(4);
  c.set_head_dim(16);
  *c.mutable_eviction() = ValidEviction();
  return c;
}

// ---------------------------------------------------------------------------------------------
// EvictionConfig

TEST(EvictionConfigTest, EveryRuleRejectedNamingTheField) {
  using M = pb::EvictionConfig;
  const std::vector<Rule<M>> rules = {
      {"algorithm", [](M* c) { c->set_algorithm(static_cast<pb::EvictionAlgorithm>(99)); }},
      {"granularity", [](M* c) { c->set_granularity(static_cast<pb::Granularity>(7)); }},
      {"refined.algorithm",
       [](M* c) { c->mutable_refined()->set_algorithm(static_cast<pb::RefinedAlgorithm>(5)); }},
      {"refined.kvcrush_anchor",
       [](M* c) { c->mutable_refined()->set_kvcrush_anchor(static_cast<pb::KvCrushAnchor>(42)); }},
      {"pooling.alignment",
       [](M* c) { c->mutable_pooling()->set_alignment(static_cast<pb::Pooling::Alignment>(3)); }},
      {"budget.allocator",
       [](M* c) {
         c->mutable_budget()->set_allocator(static_cast<pb::BudgetAllocation::Allocator>(9));
       }},
      {"normalization",
       [](M* c) { c->set_normalization(static_cast<pb::EvictionConfig::Normalization>(-3)); }},
      {"group_size", [](M* c) { c->set_group_size(-32); }},
      {"start_tokens", [](M* c) { c->set_start_tokens(-32); }},
      {"recent_tokens", [](M* c) { c->set_recent_tokens(-1); }},
      {"intermediate_tokens", [](M* c) { c->set_intermediate_tokens(-512); }},
      {"refined.refined_tokens", [](M* c) { c->mutable_refined()->set_refined_tokens(-32); }},
      {"refined.refined_tokens",
       [](M* c) {
         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
         c->mutable_refined()->set_refined_tokens(544);  // > intermediate_tokens 512
       }},
      {"start_tokens",
       [](M* c) {
         c->set_start_tokens(0);
         c->set_recent_tokens(0);
         c->set_intermediate_tokens(0);
       }},
      // The budget start + intermediate + recent must fit an int (it is summed everywhere).
      {"start_tokens",
       [](M* c) {
         c->set_granularity(pb::PER_TOKEN);
         c->set_start_tokens(2000000000);
         c->set_recent_tokens(2000000000);
         c->set_intermediate_tokens(2000000000);
       }},
      {"start_tokens", [](M* c) { c->set_start_tokens(33); }},
      {"recent_tokens", [](M* c) { c->set_recent_tokens(100); }},
      {"intermediate_tokens", [](M* c) { c->set_intermediate_tokens(500); }},
      {"intermediate_tokens",
       [](M* c) {
         c->set_group_size(64);
         c->set_start_tokens(64);
         c->set_intermediate_tokens(96);
       }},
      {"refined.refined_tokens",
       [](M* c) {
         c->mutable_refined()->set_algorithm(pb::DIVERSEKV);
         c->mutable_refined()->set_refined_tokens(16);
       }},
      {"window_size", [](M* c) { c->set_window_size(-8); }},
      {"window_size",
       [](M* c) {
         c->set_algorithm(pb::H2O);
         c->set_window_size(8);
       }},
      {"window_size",
       [](M* c) {
         c->set_algorithm(pb::TOVA);
         c->set_window_size(4);
       }},
      {"window_size",
       [](M* c) {
         c->set_algorithm(pb::STREAMING_LLM);
         c->set_window_size(1);
       }},
      {"normalize_scores",
       [](M* c) {
         c->set_algorithm(pb::RKV);
         c->set_normalize_scores(true);
       }},
      {"normalize_scores",
       [](M* c) {
         c->set_algorithm(pb::KNORM);
         c->set_normalize_scores(true);
       }},
      {"normalization", [](M* c) { c->set_normalization(pb::EvictionConfig::NORM_SUM); }},
      {"refined.kvcrush_anchor",
       [](M* c) {
         c->set_granularity(pb::PER_TOKEN);
         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
         c->mutable_refined()->set_kvcrush_anchor(pb::MEAN);
       }},
      {"refined.algorithm",
       [](M* c) {
         c->set_algorithm(pb::STREAMING_LLM);
         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
       }},
      {"refined.attention_mass_threshold",
       [](M* c) { c->mutable_refined()->set_attention_mass_threshold(1.5); }},
      {"refined.attention_mass_threshold",
       [](M* c) { c->mutable_refined()->set_attention_mass_threshold(-0.1); }},
      {"refined.attention_mass_threshold",
       [](M* c) { c->mutable_refined()->set_attention_mass_threshold(kNaN); }},
      {"pooling.kernel_size", [](M* c) { c->mutable_pooling()->set_kernel_size(-7); }},
      {"pooling.kernel_size", [](M* c) { c->mutable_pooling()->set_kernel_size(6); }},
      {"budget.pyramid_min_ratio", [](M* c) { c->mutable_budget()->set_pyramid_min_ratio(1.5); }},
      {"budget.pyramid_min_ratio", [](M* c) { c->mutable_budget()->set_pyramid_min_ratio(-0.5); }},
      {"budget.pyramid_min_ratio", [](M* c) { c->mutable_budget()->set_pyramid_min_ratio(kNaN); }},
      {"budget.adakv_floor", [](M* c) { c->mutable_budget()->set_adakv_floor(1.01); }},
      {"budget.adakv_floor", [](M* c) { c->mutable_budget()->set_adakv_floor(-0.2); }},
      {"budget.adakv_floor", [](M* c) { c->mutable_budget()->set_adakv_floor(kNaN); }},
      {"refined.algorithm",
       [](M* c) {
         c->set_per_head(true);
         c->mutable_refined()->set_algorithm(pb::DIVERSEKV);
       }},
      {"refined.algorithm",
       [](M* c) {
         c->mutable_budget()->set_allocator(pb::BudgetAllocation::ADAKV);
         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
       }},
      {"budget.allocator",
       [](M* c) {
         c->set_algorithm(pb::STREAMING_LLM);
         c->mutable_budget()->set_allocator(pb::BudgetAllocation::PYRAMIDKV);
       }},
  };
  CheckRules(ValidEviction(), rules);
}

TEST(EvictionConfigTest, LegalEdgeValuesAccepted) {
  using M = pb::EvictionConfig;
  CheckAccepted<M>(ValidEviction(),
                   {
                       [](M* c) { c->set_enabled(false); },
                       [](M* c) { c->set_start_tokens(0); },  // one area is enough
                       [](M* c) {
                         c->set_start_tokens(0);
                         c->set_intermediate_tokens(0);
                       },
                       [](M* c) {
                         c->set_granularity(pb::PER_TOKEN);  // group_size is ignored for per-token
                         c->set_group_size(7);
                         c->set_start_tokens(3);
                         c->set_recent_tokens(5);
                         c->set_intermediate_tokens(11);
                       },
                       [](M* c) {
                         c->set_algorithm(pb::RKV);
                         c->set_window_size(16);
                       },
                       [](M* c) {
                         c->set_algorithm(pb::H2O);
                         c->set_normalize_scores(true);
                         c->set_normalization(pb::EvictionConfig::NORM_SUM);
                       },
                       [](M* c) {
                         c->set_granularity(pb::PER_TOKEN);
                         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
                         c->mutable_refined()->set_kvcrush_anchor(pb::ZEROS);
                         c->mutable_refined()->set_refined_tokens(100);
                       },
                       [](M* c) {
                         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
                         c->mutable_refined()->set_kvcrush_anchor(pb::MEAN);
                         c->mutable_refined()->set_refined_tokens(512);  // == intermediate_tokens
                         c->mutable_refined()->set_attention_mass_threshold(1.0);
                       },
                       [](M* c) {
                         c->mutable_pooling()->set_kernel_size(6);
                         c->mutable_pooling()->set_alignment(pb::Pooling::FORWARD);
                       },
                       [](M* c) { c->mutable_pooling()->set_kernel_size(1); },
                       [](M* c) {
                         c->mutable_budget()->set_allocator(pb::BudgetAllocation::PYRAMIDKV);
                         c->mutable_budget()->set_pyramid_min_ratio(1.0);
                       },
                       [](M* c) {
                         c->mutable_budget()->set_allocator(pb::BudgetAllocation::ADAKV);
                         c->mutable_budget()->set_adakv_floor(1.0);
                       },
                       [](M* c) {
                         c->set_algorithm(pb::STREAMING_LLM);
                         c->set_defer_eviction_to_decode(true);
                         c->set_rerotate_keys(true);  // needs rope only inside a SessionConfig
                       },
                       [](M* c) {
                         c->set_algorithm(pb::KEYDIFF);
                         c->set_per_head(true);
                       },
                   });
}

TEST(EvictionConfigTest, UnsetFieldsResolveToReferenceDefaults) {
  pb::EvictionConfig c;
  c.set_recent_tokens(64);  // the sizes have no default: at least one must be set
  auto o = ParseEvictionConfig(c.SerializeAsString(), false);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_FALSE(o->enabled);
  EXPECT_EQ(o->algorithm, EvictionAlgorithm::kSnapKV);
  EXPECT_TRUE(o->per_group);
  EXPECT_EQ(o->group_size, 32);
  EXPECT_EQ(o->start_tokens, 0);
  EXPECT_EQ(o->intermediate_tokens, 0);
  EXPECT_EQ(o->recent_tokens, 64);
  EXPECT_EQ(o->max_cache_tokens(), 64);
  EXPECT_EQ(o->window_size, 8);
  EXPECT_FALSE(o->normalize_scores);
  EXPECT_EQ(o->normalization, Normalization::kReferenceCounters);
  EXPECT_EQ(o->refined_algorithm, RefinedAlgorithm::kNone);
  EXPECT_FALSE(o->adaptive_refined());
  EXPECT_EQ(o->kvcrush_anchor, KVCrushAnchor::kAlternate);
  EXPECT_DOUBLE_EQ(o->attention_mass_threshold, 0.9);
  EXPECT_EQ(o->pool_kernel, 7);
  EXPECT_EQ(o->pool_alignment, PoolingAlignment::kCentered);
  EXPECT_EQ(o->allocator, BudgetAllocator::kUniform);
  EXPECT_DOUBLE_EQ(o->pyramid_min_ratio, 0.125);
  EXPECT_DOUBLE_EQ(o->adakv_floor, 0.2);
  EXPECT_FALSE(o->per_head);
  EXPECT_FALSE(o->defer_eviction_to_decode);
  EXPECT_FALSE(o->rerotate_keys);

  // The same from the empty-but-one-field textproto.
  auto t = ParseEvictionConfig("recent_tokens: 64", true);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->group_size, 32);
  EXPECT_EQ(t->window_size, 8);
}

TEST(EvictionConfigTest, ResolvedValues) {
  // Window-free scorers get window 0; per-token granularity means groups of one.
  auto h2o = ParseEvictionConfig(
      "algorithm: H2O granularity: PER_TOKEN group_size: 8 "
      "start_tokens: 4 recent_tokens: 4",
      true);
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  EXPECT_EQ(h2o->algorithm, EvictionAlgorithm::kH2O);
  EXPECT_EQ(h2o->window_size, 0);
  EXPECT_FALSE(h2o->per_group);
  EXPECT_EQ(h2o->group_size, 1);

  // refined_tokens without a refined algorithm means nothing; with one, 0 is adaptive.
  auto plain = ParseEvictionConfig("intermediate_tokens: 64 refined { refined_tokens: 32 }", true);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->refined_tokens, 0);
  EXPECT_FALSE(plain->adaptive_refined());
  auto adaptive = ParseEvictionConfig(
      "intermediate_tokens: 64 refined { algorithm: DIVERSEKV attention_mass_threshold: 0.5 }",
      true);
  ASSERT_TRUE(adaptive.ok()) << adaptive.status();
  EXPECT_TRUE(adaptive->adaptive_refined());
  EXPECT_DOUBLE_EQ(adaptive->attention_mass_threshold, 0.5);

  // ADAKV implies per-head selection.
  auto adakv = ParseEvictionConfig(
      "algorithm: TOVA recent_tokens: 32 budget { allocator: ADAKV adakv_floor: 0.5 }", true);
  ASSERT_TRUE(adakv.ok()) << adakv.status();
  EXPECT_TRUE(adakv->per_head);
  EXPECT_EQ(adakv->allocator, BudgetAllocator::kAdaKV);
  EXPECT_DOUBLE_EQ(adakv->adakv_floor, 0.5);

  auto forward = ParseEvictionConfig(
      "algorithm: RKV window_size: 3 start_tokens: 32 pooling { kernel_size: 4 alignment: FORWARD "
      "}",
      true);
  ASSERT_TRUE(forward.ok()) << forward.status();
  EXPECT_EQ(forward->window_size, 3);
  EXPECT_EQ(forward->pool_kernel, 4);
  EXPECT_EQ(forward->pool_alignment, PoolingAlignment::kForward);
}

// ---------------------------------------------------------------------------------------------
// SparseAttentionConfig

TEST(SparseAttentionConfigTest, EveryRuleRejectedNamingTheField) {
  using M = pb::SparseAttentionConfig;
  const std::vector<Rule<M>> rules = {
      {"mode", [](M* c) { c->set_mode(static_cast<pb::SparseAttentionMode>(17)); }},
      {"xattention.head_aggregation",
       [](M* c) {
         c->mutable_xattention()->set_head_aggregation(static_cast<pb::HeadAggregation>(2));
       }},
      {"block_size", [](M* c) { c->set_block_size(-128); }},
      {"block_size", [](M* c) { c->set_block_size(4097); }},
      {"last_query_size", [](M* c) { c->set_last_query_size(-1); }},
      {"recent_size", [](M* c) { c->set_recent_size(-256); }},
      {"recent_size", [](M* c) { c->set_recent_size(1000); }},  // not a multiple of 128
      {"recent_size",
       [](M* c) {
         c->set_mode(pb::A_SHAPE);
         c->set_block_size(64);
         c->set_recent_size(96);
       }},
      {"sink_size", [](M* c) { c->set_sink_size(-1); }},
      {"min_sparse_length", [](M* c) { c->set_min_sparse_length(-4096); }},
      {"xattention.threshold", [](M* c) { c->mutable_xattention()->set_threshold(1.5); }},
      {"xattention.threshold", [](M* c) { c->mutable_xattention()->set_threshold(-0.1); }},
      {"xattention.threshold", [](M* c) { c->mutable_xattention()->set_threshold(kNaN); }},
      {"xattention.stride", [](M* c) { c->mutable_xattention()->set_stride(-8); }},
      {"xattention.stride",
       [](M* c) {
         c->set_mode(pb::XATTENTION);
         c->mutable_xattention()->set_stride(48);  // 128 % 48 != 0
       }},
      {"xattention.stride",
       [](M* c) {
         c->set_mode(pb::XATTENTION);
         c->set_block_size(4);  // smaller than the default stride 8
       }},
      {"xattention.per_head_thresholds",
       [](M* c) { c->mutable_xattention()->add_per_head_thresholds(0.5); }},
      {"xattention.per_head_thresholds[1]",
       [](M* c) {
         c->mutable_xattention()->set_head_aggregation(pb::PER_HEAD);
         c->mutable_xattention()->add_per_head_thresholds(0.5);
         c->mutable_xattention()->add_per_head_thresholds(1.5);
       }},
      {"xattention.per_head_thresholds[0]",
       [](M* c) {
         c->mutable_xattention()->set_head_aggregation(pb::PER_HEAD);
         c->mutable_xattention()->add_per_head_thresholds(0.0);
       }},
      {"xattention.per_head_thresholds[2]",
       [](M* c) {
         c->mutable_xattention()->set_head_aggregation(pb::PER_HEAD);
         c->mutable_xattention()->add_per_head_thresholds(0.5);
         c->mutable_xattention()->add_per_head_thresholds(0.5);
         c->mutable_xattention()->add_per_head_thresholds(kNaN);
       }},
  };
  CheckRules(ValidSparse(), rules);
}

TEST(SparseAttentionConfigTest, LegalEdgeValuesAccepted) {
  using M = pb::SparseAttentionConfig;
  CheckAccepted<M>(ValidSparse(), {
                                      [](M* c) {
                                        c->set_mode(pb::DENSE);
                                        c->set_recent_size(1000);
                                      },  // only shapes need blocks
                                      [](M* c) {
                                        c->set_block_size(4096);
                                        c->set_recent_size(8192);
                                      },
                                      [](M* c) {
                                        c->set_block_size(1);
                                        c->set_recent_size(3);
                                      },
                                      [](M* c) { c->set_last_query_size(0); },
                                      [](M* c) {
                                        c->set_mode(pb::XATTENTION);
                                        c->set_block_size(64);
                                        c->mutable_xattention()->set_stride(16);
                                        c->mutable_xattention()->set_threshold(1.0);
                                        c->mutable_xattention()->set_head_aggregation(pb::PER_HEAD);
                                        c->mutable_xattention()->add_per_head_thresholds(1.0);
                                        c->mutable_xattention()->add_per_head_thresholds(0.01);
                                      },
                                      [](M* c) {
                                        c->set_sink_size(100);
                                        c->set_min_sparse_length(8192);
                                      },
                                  });
}

TEST(SparseAttentionConfigTest, UnsetFieldsResolveToReferenceDefaults) {
  auto o = ParseSparseAttentionConfig("", false);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->mode, SparseMode::kDense);
  EXPECT_EQ(o->block_size, 128);
  EXPECT_EQ(o->last_query_size, 100);
  EXPECT_EQ(o->recent_size, 1024);
  EXPECT_EQ(o->sink_size, 0);
  EXPECT_DOUBLE_EQ(o->threshold, 0.8);
  EXPECT_EQ(o->stride, 8);
  EXPECT_EQ(o->head_aggregation, HeadAggregation::kSum);
  EXPECT_TRUE(o->per_head_thresholds.empty());
  EXPECT_EQ(o->min_sparse_length, 0);

  // last_query_size is `optional`: an explicit 0 is 0, not the default 100.
  auto zero = ParseSparseAttentionConfig("mode: XATTENTION last_query_size: 0", true);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ(zero->mode, SparseMode::kXAttention);
  EXPECT_EQ(zero->last_query_size, 0);
  pb::SparseAttentionConfig explicit_zero;
  explicit_zero.set_last_query_size(0);
  auto from_bytes = ParseSparseAttentionConfig(explicit_zero.SerializeAsString(), false);
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_EQ(from_bytes->last_query_size, 0);
}

// ---------------------------------------------------------------------------------------------
// VisualPruningConfig

TEST(VisualPruningConfigTest, EveryRuleRejectedNamingTheField) {
  using M = pb::VisualPruningConfig;
  const std::vector<Rule<M>> rules = {
      {"method", [](M* c) { c->set_method(static_cast<pb::VisualPruningMethod>(11)); }},
      {"budget_scope", [](M* c) { c->set_budget_scope(static_cast<pb::BudgetScope>(2)); }},
      {"num_keep_tokens", [](M* c) { c->set_num_keep_tokens(-1); }},
      {"num_keep_tokens", [](M* c) { c->set_num_keep_tokens(0); }},  // neither set
      {"num_keep_tokens", [](M* c) { c->set_keep_ratio(0.5); }},     // both set
      {"keep_ratio",
       [](M* c) {
         c->set_num_keep_tokens(0);
         c->set_keep_ratio(1.5);
       }},
      {"keep_ratio",
       [](M* c) {
         c->set_num_keep_tokens(0);
         c->set_keep_ratio(-0.5);
       }},
      {"keep_ratio",
       [](M* c) {
         c->set_num_keep_tokens(0);
         c->set_keep_ratio(kNaN);
       }},
      {"theta", [](M* c) { c->set_theta(1.5); }},
      {"theta", [](M* c) { c->set_theta(-0.1); }},
      {"theta", [](M* c) { c->set_theta(kNaN); }},
  };
  CheckRules(ValidVisual(), rules);
}

TEST(VisualPruningConfigTest, LegalEdgeValuesAccepted) {
  using M = pb::VisualPruningConfig;
  CheckAccepted<M>(ValidVisual(), {
                                      [](M* c) {
                                        c->set_num_keep_tokens(0);
                                        c->set_keep_ratio(1.0);
                                      },
                                      [](M* c) { c->set_theta(0.0); },
                                      [](M* c) { c->set_theta(1.0); },
                                      [](M* c) {
                                        c->set_method(pb::RANDOM_SUBSET);
                                        c->set_seed(~uint64_t{0});
                                        c->set_budget_scope(pb::GLOBAL);
                                      },
                                  });
}

TEST(VisualPruningConfigTest, UnsetFieldsResolveToReferenceDefaults) {
  auto o = ParseVisualPruningConfig("num_keep_tokens: 64", true);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->method, VisualMethod::kCDPruner);
  EXPECT_EQ(o->num_keep_tokens, 64);
  EXPECT_DOUBLE_EQ(o->keep_ratio, 0.0);
  EXPECT_DOUBLE_EQ(o->theta, 0.5);
  EXPECT_FALSE(o->positive_relevance);
  EXPECT_FALSE(o->global_budget);
  EXPECT_FALSE(o->gain_guard);
  EXPECT_EQ(o->seed, 0u);

  // theta is `optional`: an explicit 0 is 0 (relevance only... ignored), not 0.5.
  auto zero = ParseVisualPruningConfig("keep_ratio: 0.25 theta: 0 method: DIVPRUNE", true);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_DOUBLE_EQ(zero->theta, 0.0);
  EXPECT_DOUBLE_EQ(zero->keep_ratio, 0.25);
  EXPECT_EQ(zero->method, VisualMethod::kDivPrune);
}

// ---------------------------------------------------------------------------------------------
// SessionConfig, including the nested eviction. and sparse_attention. paths

TEST(SessionConfigTest, EveryRuleRejectedNamingTheField) {
  using M = pb::SessionConfig;
  const std::vector<Rule<M>> rules = {
      {"dtype", [](M* c) { c->set_dtype(static_cast<pb::DType>(5)); }},
      {"device", [](M* c) { c->set_device(static_cast<pb::Device>(2)); }},
      {"num_layers", [](M* c) { c->set_num_layers(0); }},
      {"num_layers", [](M* c) { c->set_num_layers(-2); }},
      {"num_heads", [](M* c) { c->set_num_heads(0); }},
      {"num_kv_heads", [](M* c) { c->set_num_kv_heads(0); }},
      {"num_kv_heads", [](M* c) { c->set_num_kv_heads(-4); }},
      {"head_dim", [](M* c) { c->set_head_dim(0); }},
      {"num_kv_heads", [](M* c) { c->set_num_kv_heads(3); }},  // does not divide 8
      {"num_kv_heads", [](M* c) { c->set_num_kv_heads(16); }},
      {"head_dim", [](M* c) { c->set_head_dim(1025); }},
      {"batch_size", [](M* c) { c->set_batch_size(-1); }},
      {"page_size", [](M* c) { c->set_page_size(-16); }},
      {"page_size", [](M* c) { c->set_page_size(4097); }},
      {"device_index", [](M* c) { c->set_device_index(-1); }},
      {"scale", [](M* c) { c->set_scale(-0.125); }},
      {"scale", [](M* c) { c->set_scale(kNaN); }},
      {"scale", [](M* c) { c->set_scale(kInf); }},
      {"eviction.start_tokens", [](M* c) { c->mutable_eviction()->set_start_tokens(-1); }},
      {"eviction.algorithm",
       [](M* c) { c->mutable_eviction()->set_algorithm(static_cast<pb::EvictionAlgorithm>(99)); }},
      {"eviction.window_size",
       [](M* c) {
         c->mutable_eviction()->set_algorithm(pb::H2O);
         c->mutable_eviction()->set_window_size(8);
       }},
      {"eviction.refined.attention_mass_threshold",
       [](M* c) { c->mutable_eviction()->mutable_refined()->set_attention_mass_threshold(2); }},
      {"eviction.budget.allocator",
       [](M* c) {
         c->mutable_eviction()->set_algorithm(pb::STREAMING_LLM);
         c->mutable_eviction()->mutable_budget()->set_allocator(pb::BudgetAllocation::ADAKV);
       }},
      {"sparse_attention.block_size",
       [](M* c) { c->mutable_sparse_attention()->set_block_size(-1); }},
      {"sparse_attention.mode",
       [](M* c) {
         c->mutable_sparse_attention()->set_mode(static_cast<pb::SparseAttentionMode>(5));
       }},
      {"sparse_attention.xattention.threshold",
       [](M* c) { c->mutable_sparse_attention()->mutable_xattention()->set_threshold(7); }},
      {"sparse_attention.xattention.per_head_thresholds[0]",
       [](M* c) {
         auto* x = c->mutable_sparse_attention()->mutable_xattention();
         x->set_head_aggregation(pb::PER_HEAD);
         x->add_per_head_thresholds(-1);
       }},
      // Valid per-head thresholds, but not one per query head.
      {"sparse_attention.xattention.per_head_thresholds",
       [](M* c) {
         auto* x = c->mutable_sparse_attention()->mutable_xattention();
         x->set_head_aggregation(pb::PER_HEAD);
         for (int i = 0; i < 4; ++i) x->add_per_head_thresholds(0.9);
       }},
      {"rope.theta", [](M* c) { c->mutable_rope()->set_theta(-10000); }},
      {"rope.theta", [](M* c) { c->mutable_rope()->set_theta(kNaN); }},
      {"head_dim",
       [](M* c) {
         c->set_head_dim(15);
         c->mutable_rope()->set_interleaved(true);
       }},
      {"eviction.rerotate_keys", [](M* c) { c->mutable_eviction()->set_rerotate_keys(true); }},
      {"kv_format.keys",
       [](M* c) { c->mutable_kv_format()->set_keys(static_cast<pb::KvDataType>(99)); }},
      {"kv_format.values",
       [](M* c) { c->mutable_kv_format()->set_values(static_cast<pb::KvDataType>(-1)); }},
      {"kv_format.group_size",
       [](M* c) {
         c->mutable_kv_format()->set_keys(pb::INT8);
         c->mutable_kv_format()->set_group_size(5);  // does not divide head_dim 16
       }},
      {"kv_format.group_size",
       [](M* c) {
         c->mutable_kv_format()->set_values(pb::INT8);
         c->mutable_kv_format()->set_group_size(-8);
       }},
      {"kv_format.group_size",
       [](M* c) {
         c->mutable_kv_format()->set_keys(pb::INT2);
         c->mutable_kv_format()->set_group_size(2);  // divides 16, but not whole bytes of codes
       }},
      {"kv_format.group_size",
       [](M* c) {
         c->mutable_kv_format()->set_keys(pb::BF16);  // no quantized format
         c->mutable_kv_format()->set_group_size(8);
       }},
      {"kv_format.residual_tokens",
       [](M* c) {
         c->mutable_kv_format()->set_keys(pb::INT8);
         c->mutable_kv_format()->set_residual_tokens(-1);
       }},
      {"kv_format.residual_tokens",
       [](M* c) {
         c->mutable_kv_format()->set_keys(pb::INT8);
         c->mutable_kv_format()->set_residual_tokens(673);  // budget 32 + 512 + 128
       }},
      {"kv_format.residual_tokens",
       [](M* c) {
         c->mutable_kv_format()->set_values(pb::FP16);
         c->mutable_kv_format()->set_residual_tokens(4);
       }},
  };
  CheckRules(ValidSession(), rules);
}

TEST(SessionConfigTest, LegalEdgeValuesAccepted) {
  using M = pb::SessionConfig;
  CheckAccepted<M>(
      ValidSession(),
      {
          [](M* c) { c->clear_eviction(); },  // a session without eviction keeps the whole cache
          [](M* c) { c->set_head_dim(15); },  // odd head_dim is fine without rope
          [](M* c) {
            c->set_num_kv_heads(8);
            c->set_head_dim(1024);
            c->set_page_size(4096);
            c->set_batch_size(3);
            c->set_dtype(pb::BFLOAT16);
            c->set_device(pb::CUDA);
            c->set_device_index(1);
            c->set_scale(0.5);
          },
          [](M* c) {
            c->mutable_rope();  // present, theta 0 = default
            c->mutable_eviction()->set_rerotate_keys(true);
          },
          [](M* c) {
            c->mutable_eviction()->set_enabled(false);
            c->mutable_eviction()->set_rerotate_keys(true);  // only checked when eviction is on
          },
          [](M* c) {
            auto* x = c->mutable_sparse_attention()->mutable_xattention();
            c->mutable_sparse_attention()->set_mode(pb::XATTENTION);
            x->set_head_aggregation(pb::PER_HEAD);
            for (int i = 0; i < 8; ++i) x->add_per_head_thresholds(0.1 * (i + 1) + 0.05);
          },
          [](M* c) {
            auto* f = c->mutable_kv_format();
            f->set_keys(pb::INT8);
            f->set_values(pb::INT8);
            f->set_group_size(16);        // = head_dim
            f->set_residual_tokens(672);  // = the budget
          },
          [](M* c) {
            c->mutable_eviction()->set_enabled(false);  // no budget: any window
            c->mutable_kv_format()->set_values(pb::INT8);
            c->mutable_kv_format()->set_residual_tokens(100000);
          },
          [](M* c) {
            c->mutable_kv_format()->set_keys(pb::FP16);
            c->mutable_kv_format()->set_values(pb::BF16);
          },
          // Valid configs (the host store holds INT4/INT2; the device store refuses them).
          [](M* c) { c->mutable_kv_format()->set_keys(pb::INT4); },
          [](M* c) { c->mutable_kv_format()->set_values(pb::INT2); },
      });
}

TEST(SessionConfigTest, KvFormatResolvesDefaults) {
  auto o = ParseSessionConfig(
      "num_layers: 1 num_heads: 8 num_kv_heads: 4 head_dim: 64 dtype: BFLOAT16 "
      "kv_format { keys: INT8 residual_tokens: 128 }",
      true);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->kv_format.keys, KvDataType::kInt8);
  EXPECT_EQ(o->kv_format.values, KvDataType::kDefault);
  EXPECT_EQ(o->key_type(), KvDataType::kInt8);
  EXPECT_EQ(o->value_type(), KvDataType::kBFloat16);  // DEFAULT: the session dtype
  EXPECT_EQ(o->kv_format.group_size, 32);             // 0: 32 where it divides head_dim
  EXPECT_EQ(o->kv_format.residual_tokens, 128);
  auto odd = ParseSessionConfig(
      "num_layers: 1 num_heads: 2 num_kv_heads: 2 head_dim: 24 kv_format { values: INT8 }", true);
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_EQ(odd->kv_format.group_size, 24);  // else head_dim
  EXPECT_EQ(odd->key_type(), KvDataType::kFloat32);
  auto none = ParseSessionConfig("num_layers: 1 num_heads: 2 num_kv_heads: 2 head_dim: 24", true);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->kv_format.quantized());
  EXPECT_EQ(none->kv_format.group_size, 0);
  EXPECT_EQ(none->key_type(), KvDataType::kFloat32);
  EXPECT_STREQ(KvDataTypeName(KvDataType::kInt4), "INT4");
}

TEST(SessionConfigTest, UnsetFieldsResolveToReferenceDefaults) {
  auto o = ParseSessionConfig("num_layers: 5 num_heads: 8 num_kv_heads: 4 head_dim: 8", true);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->num_layers, 5);
  EXPECT_EQ(o->num_heads, 8);
  EXPECT_EQ(o->num_kv_heads, 4);
  EXPECT_EQ(o->head_dim, 8);
  EXPECT_EQ(o->batch_size, 1);
  EXPECT_EQ(o->dtype, DType::kFloat32);
  EXPECT_EQ(o->device, DeviceKind::kCPU);
  EXPECT_EQ(o->device_index, 0);
  EXPECT_EQ(o->page_size, 16);
  EXPECT_DOUBLE_EQ(o->scale, 1.0 / std::sqrt(8.0));
  EXPECT_FALSE(o->has_rope);
  EXPECT_FALSE(o->eviction.enabled);
  EXPECT_EQ(o->sparse.mode, SparseMode::kDense);
  EXPECT_EQ(o->sparse.block_size, 128);

  auto rope = ParseSessionConfig(
      "num_layers: 1 num_heads: 2 num_kv_heads: 1 head_dim: 4 rope { interleaved: true } "
      "eviction { enabled: true algorithm: STREAMING_LLM start_tokens: 4 recent_tokens: 60 "
      "granularity: PER_TOKEN rerotate_keys: true }",
      true);
  ASSERT_TRUE(rope.ok()) << rope.status();
  EXPECT_TRUE(rope->has_rope);
  EXPECT_DOUBLE_EQ(rope->rope.theta, 10000.0);
  EXPECT_TRUE(rope->rope.interleaved);
  EXPECT_TRUE(rope->eviction.enabled);
  EXPECT_TRUE(rope->eviction.rerotate_keys);
  EXPECT_EQ(rope->eviction.max_cache_tokens(), 64);
  EXPECT_EQ(rope->eviction.window_size, 0);
}

// ---------------------------------------------------------------------------------------------
// Round trips and garbage

TEST(ConfigRoundTripTest, TextBinaryText) {
  const std::string text =
      "num_layers: 5 num_heads: 8 num_kv_heads: 4 head_dim: 8 page_size: 32 dtype: FLOAT16 "
      "scale: 0.25 eviction { enabled: true algorithm: H2O normalize_scores: true "
      "start_tokens: 32 recent_tokens: 64 intermediate_tokens: 128 "
      "refined { algorithm: KVCRUSH refined_tokens: 64 kvcrush_anchor: MEAN seed: 7 } "
      "budget { allocator: PYRAMIDKV pyramid_min_ratio: 0.25 } } "
      "sparse_attention { mode: XATTENTION block_size: 64 last_query_size: 0 "
      "xattention { threshold: 0.9 stride: 16 } } rope { theta: 500000 }";
  auto binary = ConfigTextToBinary(ConfigKind::kSession, text);
  ASSERT_TRUE(binary.ok()) << binary.status();
  pb::SessionConfig expected;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &expected));
  EXPECT_EQ(*binary, expected.SerializeAsString());

  // ValidateConfig returns the canonical binary form for either input form.
  auto validated_text = ValidateConfig(ConfigKind::kSession, text, true);
  ASSERT_TRUE(validated_text.ok()) << validated_text.status();
  EXPECT_EQ(*validated_text, *binary);
  auto validated_bytes = ValidateConfig(ConfigKind::kSession, *binary, false);
  ASSERT_TRUE(validated_bytes.ok()) << validated_bytes.status();
  EXPECT_EQ(*validated_bytes, *binary);

  auto back = ConfigBinaryToText(ConfigKind::kSession, *binary);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(*back, HasSubstr("algorithm: H2O"));
  EXPECT_THAT(*back, HasSubstr("last_query_size: 0"));  // explicit presence survives
  auto again = ConfigTextToBinary(ConfigKind::kSession, *back);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *binary);

  // Both forms parse to the same options.
  auto from_text = ParseSessionConfig(text, true);
  auto from_bytes = ParseSessionConfig(*binary, false);
  ASSERT_TRUE(from_text.ok() && from_bytes.ok());
  EXPECT_EQ(from_text->page_size, from_bytes->page_size);
  EXPECT_EQ(from_bytes->dtype, DType::kFloat16);
  EXPECT_EQ(from_bytes->eviction.refined_algorithm, RefinedAlgorithm::kKVCrush);
  EXPECT_EQ(from_bytes->eviction.kvcrush_anchor, KVCrushAnchor::kMean);
  EXPECT_EQ(from_bytes->eviction.seed, 7u);
  EXPECT_DOUBLE_EQ(from_bytes->eviction.pyramid_min_ratio, 0.25);
  EXPECT_EQ(from_bytes->sparse.last_query_size, 0);
  EXPECT_EQ(from_bytes->sparse.stride, 16);
  EXPECT_DOUBLE_EQ(from_bytes->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(from_bytes->scale, 0.25);
}

TEST(ConfigRoundTripTest, EveryKind) {
  const std::pair<ConfigKind, std::string> cases[] = {
      {ConfigKind::kEviction, ToText(ValidEviction())},
      {ConfigKind::kSparseAttention, ToText(ValidSparse())},
      {ConfigKind::kVisualPruning, "method: UNIFORM_GRID keep_ratio: 0.5 theta: 0.75"},
      {ConfigKind::kSession, ToText(ValidSession())},
  };
  for (const auto& [kind, text] : cases) {
    SCOPED_TRACE(text);
    auto binary = ConfigTextToBinary(kind, text);
    ASSERT_TRUE(binary.ok()) << binary.status();
    EXPECT_FALSE(binary->empty());
    auto back = ConfigBinaryToText(kind, *binary);
    ASSERT_TRUE(back.ok()) << back.status();
    auto again = ConfigTextToBinary(kind, *back);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(*again, *binary);
  }
}

TEST(ConfigGarbageTest, MalformedTextRejectedWithPosition) {
  const std::string texts[] = {
      "num_layers: ",
      "num_layers: five",
      "{{{{",
      "no_such_field: 1",
      "eviction { start_tokens: 1",
      "algorithm: NOT_AN_ALGORITHM",
      "num_layers: 99999999999999999999",
      "\xff\xfe\x00garbage",
  };
  for (const std::string& text : texts) {
    SCOPED_TRACE(text);
    for (ConfigKind kind : {ConfigKind::kEviction, ConfigKind::kSparseAttention,
                            ConfigKind::kVisualPruning, ConfigKind::kSession}) {
      const absl::Status status = ValidateConfig(kind, text, true).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(status.message()), StartsWith("config: not a valid textproto"));
      EXPECT_THAT(std::string(status.message()), HasSubstr("line 1 column"));
      EXPECT_EQ(ConfigTextToBinary(kind, text).status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  // Unknown enum numbers in text name the field (proto3 enums are open on the wire, not in text).
  const absl::Status enum_number =
      ValidateConfig(ConfigKind::kEviction, "algorithm: 99", true).status();
  EXPECT_EQ(enum_number.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(enum_number.message()), HasSubstr("algorithm"));
}

// A textproto error names the field being read, by its path in the top-level message (repeated
// fields with the occurrence's index), beside the line and column.
TEST(ConfigGarbageTest, MalformedTextNamesTheField) {
  const std::pair<std::string, std::string> cases[] = {
      {"num_layers: 2 eviction { enabled: true window_size: abc }",
       "line 1 column 53 (eviction.window_size): "},
      {"num_layers: 2\neviction {\n  enabled: true\n  no_such_field: 3\n}",
       "line 4 column 16 (eviction.no_such_field): "},
      {"eviction: 5", "line 1 column 11 (eviction): "},
      {"rope { theta: 10000 } kv_format { keys: INT8 values: INT9 }",
       "line 1 column 59 (kv_format.values): "},
      {"head_split { head_scores: 0.5 head_scores: 0.25 head_scores: x }",
       "(head_split.head_scores[2]): "},
      {"# a comment with eviction { in it\n\tnum_heads: \"4\"", "line 2 column 20 (num_heads): "},
      {"eviction { window_size: 4 } num_layers: {", "(num_layers): "},
  };
  for (const auto& [text, want] : cases) {
    SCOPED_TRACE(text);
    const absl::Status status = ValidateConfig(ConfigKind::kSession, text, true).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr(want));
  }
  // Before any field: no path.
  const absl::Status top = ValidateConfig(ConfigKind::kSession, "{{{{", true).status();
  EXPECT_THAT(std::string(top.message()), HasSubstr("line 1 column 1: "));
}

TEST(ConfigGarbageTest, MalformedBytesRejected) {
  const std::string bytes[] = {
      std::string("\x08", 1),              // varint tag without its value
      std::string("\x5a\x05\x08\x01", 4),  // sub-message longer than the input
      std::string("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11),  // 11-byte varint
      std::string("\x00\x00", 2),                                       // field number 0
      std::string("\x0f", 1),                                           // wire type 7
  };
  for (const std::string& data : bytes) {
    for (ConfigKind kind : {ConfigKind::kEviction, ConfigKind::kSparseAttention,
                            ConfigKind::kVisualPruning, ConfigKind::kSession}) {
      const absl::Status status = ValidateConfig(kind, data, false).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      EXPECT_THAT(std::string(status.message()),
                  StartsWith("config: not a valid serialized attnkit.v1."));
      EXPECT_EQ(ConfigBinaryToText(kind, data).status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

// A field number the schema does not know (a config from a newer attnkit) is an error naming it and
// where it sits, at the top level and inside a sub-message, never silently dropped.
TEST(ConfigGarbageTest, UnknownFieldsRejectedWithTheirPlace) {
  pb::SessionConfig config;
  config.set_num_layers(2);
  config.set_num_heads(4);
  config.set_num_kv_heads(2);
  config.set_head_dim(8);
  config.mutable_eviction()->set_enabled(true);
  config.mutable_eviction()->set_intermediate_tokens(64);
  const std::string valid = config.SerializeAsString();
  ASSERT_TRUE(ValidateConfig(ConfigKind::kSession, valid, false).ok());

  // Field 900, varint 1: tag (900 << 3) = 7200 = 0xa0 0x38.
  const std::string unknown_field("\xa0\x38\x01", 3);
  const absl::Status top =
      ValidateConfig(ConfigKind::kSession, valid + unknown_field, false).status();
  EXPECT_EQ(top.code(), absl::StatusCode::kInvalidArgument) << top;
  EXPECT_THAT(std::string(top.message()),
              StartsWith("config: field number 900 is not a field of attnkit.v1.SessionConfig"));
  EXPECT_FALSE(ParseSessionConfig(valid + unknown_field, false).ok());

  // The same field inside `eviction` (field 11, length-delimited).
  const std::string eviction = config.eviction().SerializeAsString() + unknown_field;
  std::string nested = valid;
  nested += static_cast<char>((11 << 3) | 2);
  nested += static_cast<char>(eviction.size());
  nested += eviction;
  const absl::Status inner = ValidateConfig(ConfigKind::kSession, nested, false).status();
  EXPECT_EQ(inner.code(), absl::StatusCode::kInvalidArgument) << inner;
  EXPECT_THAT(std::string(inner.message()),
              StartsWith("eviction: field number 900 is not a field of attnkit.v1.EvictionConfig"));

  for (ConfigKind kind :
       {ConfigKind::kEviction, ConfigKind::kSparseAttention, ConfigKind::kVisualPruning}) {
    EXPECT_EQ(ValidateConfig(kind, unknown_field, false).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(ConfigGarbageTest, RandomInputsNeverCrash) {
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string data(rng() % 48, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    const bool text = i % 2 == 1;
    if (text) {
      for (char& c : data) c = " {}:eviction_start0123456789\n-.#\""[static_cast<uint8_t>(c) % 34];
    }
    const ConfigKind kind = static_cast<ConfigKind>(i % 4);
    const absl::Status status = ValidateConfig(kind, data, text).status();
    EXPECT_TRUE(status.ok() || status.code() == absl::StatusCode::kInvalidArgument) << status;
    if (!status.ok()) ++rejected;
    if (!text) {
      auto as_text = ConfigBinaryToText(kind, data);
      EXPECT_TRUE(as_text.ok() || as_text.status().code() == absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_GT(rejected, 1000);  // random data is mostly not a valid config
}

}  // namespace
}  // namespace attnkit
