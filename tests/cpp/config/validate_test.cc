// The struct side of the config layer: the descriptor tables (config/algorithms.h) cover every
// proto enum value, the config.h structs default like omitted proto fields, and the Validate*
// functions give the parser's messages for the same mistake made in a struct.
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "attnkit/config.h"
#include "attnkit/config_parser.h"
#include "attnkit/v1/eviction.pb.h"
#include "attnkit/v1/session.pb.h"
#include "attnkit/v1/sparse_attention.pb.h"
#include "attnkit/v1/visual_pruning.pb.h"
#include "config/algorithms.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnkit {
namespace {

namespace pb = ::attnkit::v1;
using ::testing::StartsWith;

void ExpectSameEviction(const EvictionOptions& a, const EvictionOptions& b) {
  EXPECT_EQ(a.enabled, b.enabled);
  EXPECT_EQ(a.algorithm, b.algorithm);
  EXPECT_EQ(a.group_size, b.group_size);
  EXPECT_EQ(a.per_group, b.per_group);
  EXPECT_EQ(a.start_tokens, b.start_tokens);
  EXPECT_EQ(a.recent_tokens, b.recent_tokens);
  EXPECT_EQ(a.intermediate_tokens, b.intermediate_tokens);
  EXPECT_EQ(a.window_size, b.window_size);
  EXPECT_EQ(a.normalize_scores, b.normalize_scores);
  EXPECT_EQ(a.normalization, b.normalization);
  EXPECT_EQ(a.refined_algorithm, b.refined_algorithm);
  EXPECT_EQ(a.refined_tokens, b.refined_tokens);
  EXPECT_EQ(a.kvcrush_anchor, b.kvcrush_anchor);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.attention_mass_threshold, b.attention_mass_threshold);
  EXPECT_EQ(a.pool_kernel, b.pool_kernel);
  EXPECT_EQ(a.pool_alignment, b.pool_alignment);
  EXPECT_EQ(a.allocator, b.allocator);
  EXPECT_EQ(a.pyramid_min_ratio, b.pyramid_min_ratio);
  EXPECT_EQ(a.adakv_floor, b.adakv_floor);
  EXPECT_EQ(a.per_head, b.per_head);
  EXPECT_EQ(a.defer_eviction_to_decode, b.defer_eviction_to_decode);
  EXPECT_EQ(a.rerotate_keys, b.rerotate_keys);
  EXPECT_EQ(a.random_seed, b.random_seed);
  EXPECT_EQ(a.interval_steps, b.interval_steps);
}

// What CAKE needs beyond an algorithm and a recent area: its per-head, per-token shape with the
// window as the recent area.
void SetCakeShape(pb::EvictionConfig& c) {
  c.set_per_head(true);
  c.set_granularity(pb::PER_TOKEN);
  c.set_window_size(c.recent_tokens());
}

TEST(DescriptorTest, EveryProtoEnumValueHasItsRow) {
  const auto* algorithms = pb::EvictionAlgorithm_descriptor();
  int named = 0;
  for (int i = 0; i < algorithms->value_count(); ++i) {
    const auto* value = algorithms->value(i);
    if (value->number() == pb::EVICTION_ALGORITHM_UNSPECIFIED) continue;
    pb::EvictionConfig c;
    c.set_algorithm(static_cast<pb::EvictionAlgorithm>(value->number()));
    c.set_recent_tokens(64);
    if (value->number() == pb::CAKE) SetCakeShape(c);
    auto o = ParseEvictionConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << value->name() << ": " << o.status();
    EXPECT_EQ(EvictionAlgorithmName(o->algorithm), value->name());
    ++named;
  }
  EXPECT_EQ(named, static_cast<int>(std::size(kEvictionAlgorithms)));

  const auto* modes = pb::SparseAttentionMode_descriptor();
  ASSERT_EQ(modes->value_count(), static_cast<int>(std::size(kSparseModes)));
  for (int i = 0; i < modes->value_count(); ++i) {
    pb::SparseAttentionConfig c;
    c.set_mode(static_cast<pb::SparseAttentionMode>(modes->value(i)->number()));
    auto o = ParseSparseAttentionConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(FindSparseMode(o->mode)->name, modes->value(i)->name());
  }

  const auto* methods = pb::VisualPruningMethod_descriptor();
  ASSERT_EQ(methods->value_count(), static_cast<int>(std::size(kVisualMethods)));
  for (int i = 0; i < methods->value_count(); ++i) {
    pb::VisualPruningConfig c;
    c.set_method(static_cast<pb::VisualPruningMethod>(methods->value(i)->number()));
    c.set_num_keep_tokens(4);
    auto o = ParseVisualPruningConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(kVisualMethods[i].method, o->method);  // the list is in proto order
    EXPECT_EQ(kVisualMethods[i].name, methods->value(i)->name());
  }

  const auto* refined = pb::RefinedAlgorithm_descriptor();
  ASSERT_EQ(refined->value_count(), static_cast<int>(std::size(kRefinedAlgorithms)));
  for (int i = 0; i < refined->value_count(); ++i) {
    pb::EvictionConfig c;
    c.set_algorithm(pb::H2O);
    c.set_intermediate_tokens(64);
    c.mutable_refined()->set_algorithm(
        static_cast<pb::RefinedAlgorithm>(refined->value(i)->number()));
    auto o = ParseEvictionConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(FindRefinement(o->refined_algorithm)->name, refined->value(i)->name());
  }

  const auto* allocators = pb::BudgetAllocation::Allocator_descriptor();
  ASSERT_EQ(allocators->value_count(), static_cast<int>(std::size(kBudgetAllocators)));
  for (int i = 0; i < allocators->value_count(); ++i) {
    pb::EvictionConfig c;
    c.set_algorithm(pb::H2O);
    c.set_intermediate_tokens(64);
    if (allocators->value(i)->number() == pb::BudgetAllocation::CAKE) {
      c.set_algorithm(pb::CAKE);  // CAKE's budgets come from CAKE's window
      c.set_recent_tokens(64);
      SetCakeShape(c);
    }
    c.mutable_budget()->set_allocator(
        static_cast<pb::BudgetAllocation::Allocator>(allocators->value(i)->number()));
    auto o = ParseEvictionConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << o.status();
    EXPECT_EQ(FindAllocator(o->allocator)->name, allocators->value(i)->name());
  }
}

TEST(DescriptorTest, CapabilitiesDriveTheRuleMessages) {
  pb::EvictionConfig c;
  c.set_algorithm(pb::TOVA);
  c.set_recent_tokens(64);
  c.set_window_size(4);
  auto o = ParseEvictionConfig(c.SerializeAsString(), false);
  EXPECT_EQ(o.status().message(),
            "window_size: is only supported by SNAPKV, RKV and CAKE, not TOVA");
  c.set_window_size(0);
  c.set_normalize_scores(true);
  o = ParseEvictionConfig(c.SerializeAsString(), false);
  EXPECT_EQ(o.status().message(), "normalize_scores: only applies to H2O and SNAPKV, not TOVA");
}

TEST(StructDefaultsTest, EvictionOptionsDefaultLikeOmittedProtoFields) {
  // EvictionOptions{} is an EvictionConfig with every field omitted.
  EvictionOptions defaults;
  EXPECT_EQ(defaults.start_tokens, 0);
  EXPECT_EQ(defaults.intermediate_tokens, 0);
  EXPECT_EQ(defaults.recent_tokens, 0);
  EXPECT_EQ(defaults.window_size, 8);
  defaults.recent_tokens = 64;
  auto parsed = ParseEvictionConfig("recent_tokens: 64", true);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameEviction(defaults, *parsed);

  // DefaultEvictionOptions(algorithm) is the same with `algorithm` set.
  for (const auto& d : kEvictionAlgorithms) {
    SCOPED_TRACE(d.name);
    pb::EvictionAlgorithm value = pb::EVICTION_ALGORITHM_UNSPECIFIED;
    ASSERT_TRUE(pb::EvictionAlgorithm_Parse(d.name, &value));
    pb::EvictionConfig c;
    c.set_algorithm(value);
    c.set_recent_tokens(64);
    const bool cake = d.algorithm == EvictionAlgorithm::kCake;
    if (cake) SetCakeShape(c);
    auto o = ParseEvictionConfig(c.SerializeAsString(), false);
    ASSERT_TRUE(o.ok()) << o.status();
    EvictionOptions expected = DefaultEvictionOptions(d.algorithm);
    expected.recent_tokens = 64;
    if (cake) {  // the same shape on the struct
      expected.per_head = true;
      expected.per_group = false;
      expected.group_size = 1;
      expected.window_size = 64;
    }
    ExpectSameEviction(expected, *o);
    EXPECT_TRUE(ValidateEvictionOptions(expected).ok());
  }
}

TEST(StructDefaultsTest, SparseVisualSessionDefaultLikeOmittedProtoFields) {
  auto sparse = ParseSparseAttentionConfig("", true);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  SparseOptions s;
  EXPECT_EQ(s.mode, sparse->mode);
  EXPECT_EQ(s.block_size, sparse->block_size);
  EXPECT_EQ(s.last_query_size, sparse->last_query_size);
  EXPECT_EQ(s.recent_size, sparse->recent_size);
  EXPECT_EQ(s.sink_size, sparse->sink_size);
  EXPECT_EQ(s.threshold, sparse->threshold);
  EXPECT_EQ(s.stride, sparse->stride);
  EXPECT_EQ(s.head_aggregation, sparse->head_aggregation);
  EXPECT_EQ(s.min_sparse_length, sparse->min_sparse_length);
  EXPECT_TRUE(ValidateSparseOptions(s).ok());

  auto visual = ParseVisualPruningConfig("num_keep_tokens: 4", true);
  ASSERT_TRUE(visual.ok()) << visual.status();
  VisualOptions v;
  v.num_keep_tokens = 4;
  EXPECT_EQ(v.method, visual->method);
  EXPECT_EQ(v.keep_ratio, visual->keep_ratio);
  EXPECT_EQ(v.theta, visual->theta);
  EXPECT_EQ(v.positive_relevance, visual->positive_relevance);
  EXPECT_EQ(v.global_budget, visual->global_budget);
  EXPECT_EQ(v.gain_guard, visual->gain_guard);
  EXPECT_EQ(v.seed, visual->seed);
  EXPECT_EQ(v.fast_kernel, visual->fast_kernel);
  EXPECT_TRUE(ValidateVisualOptions(v).ok());

  auto session =
      ParseSessionConfig("num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16", true);
  ASSERT_TRUE(session.ok()) << session.status();
  SessionOptions o;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 16;
  EXPECT_EQ(o.batch_size, session->batch_size);
  EXPECT_EQ(o.page_size, session->page_size);
  EXPECT_EQ(o.dtype, session->dtype);
  EXPECT_EQ(o.device, session->device);
  EXPECT_EQ(o.eviction.enabled, session->eviction.enabled);
  EXPECT_EQ(o.has_rope, session->has_rope);
  // The one resolved field: scale 0 means 1/sqrt(head_dim), which the parser writes out.
  EXPECT_EQ(o.scale, 0.0);
  EXPECT_DOUBLE_EQ(session->scale, 0.25);
  EXPECT_TRUE(ValidateSessionOptions(o).ok());
}

// A valid parsed config, the same mistake made in the proto and in the struct.
struct EvictionMistake {
  std::function<void(pb::EvictionConfig*)> proto;
  std::function<void(EvictionOptions*)> options;
};

TEST(ValidateTest, EvictionStructMistakesGiveTheParsersMessages) {
  pb::EvictionConfig base;
  base.set_enabled(true);
  base.set_algorithm(pb::SNAPKV);
  base.set_start_tokens(32);
  base.set_recent_tokens(128);
  base.set_intermediate_tokens(512);
  const std::vector<EvictionMistake> mistakes = {
      {[](auto* c) { c->set_start_tokens(-32); }, [](auto* o) { o->start_tokens = -32; }},
      {[](auto* c) { c->set_recent_tokens(100); }, [](auto* o) { o->recent_tokens = 100; }},
      {[](auto* c) {
         c->set_start_tokens(0);
         c->set_recent_tokens(0);
         c->set_intermediate_tokens(0);
       },
       [](auto* o) { o->start_tokens = o->recent_tokens = o->intermediate_tokens = 0; }},
      {[](auto* c) { c->set_window_size(-1); }, [](auto* o) { o->window_size = -1; }},
      {[](auto* c) {
         c->set_algorithm(pb::H2O);
         c->set_window_size(4);
       },
       [](auto* o) {
         o->algorithm = EvictionAlgorithm::kH2O;
         o->window_size = 4;
       }},
      {[](auto* c) {
         c->set_algorithm(pb::RKV);
         c->set_normalize_scores(true);
       },
       [](auto* o) {
         o->algorithm = EvictionAlgorithm::kRKV;
         o->normalize_scores = true;
       }},
      {[](auto* c) { c->set_normalization(pb::EvictionConfig::NORM_SUM); },
       [](auto* o) { o->normalization = Normalization::kNormSum; }},
      {[](auto* c) { c->mutable_refined()->set_refined_tokens(1024); },
       [](auto* o) { o->refined_tokens = 1024; }},
      {[](auto* c) {
         c->set_algorithm(pb::STREAMING_LLM);
         c->set_window_size(0);
         c->mutable_refined()->set_algorithm(pb::KVCRUSH);
       },
       [](auto* o) {
         o->algorithm = EvictionAlgorithm::kStreamingLLM;
         o->window_size = 0;
         o->refined_algorithm = RefinedAlgorithm::kKVCrush;
       }},
      {[](auto* c) {
         c->set_algorithm(pb::STREAMING_LLM);
         c->mutable_budget()->set_allocator(pb::BudgetAllocation::PYRAMIDKV);
       },
       [](auto* o) {
         o->algorithm = EvictionAlgorithm::kStreamingLLM;
         o->window_size = 0;
         o->allocator = BudgetAllocator::kPyramidKV;
       }},
      {[](auto* c) { c->mutable_refined()->set_attention_mass_threshold(2); },
       [](auto* o) { o->attention_mass_threshold = 2; }},
      {[](auto* c) { c->mutable_pooling()->set_kernel_size(4); },
       [](auto* o) { o->pool_kernel = 4; }},
      {[](auto* c) { c->mutable_budget()->set_pyramid_min_ratio(-1); },
       [](auto* o) { o->pyramid_min_ratio = -1; }},
      {[](auto* c) { c->mutable_budget()->set_adakv_floor(3); },
       [](auto* o) { o->adakv_floor = 3; }},
      {[](auto* c) {
         c->set_per_head(true);
         c->mutable_refined()->set_algorithm(pb::DIVERSEKV);
       },
       [](auto* o) {
         o->per_head = true;
         o->refined_algorithm = RefinedAlgorithm::kDiverseKV;
       }},
  };
  auto valid = ParseEvictionConfig(base.SerializeAsString(), false);
  ASSERT_TRUE(valid.ok()) << valid.status();
  ASSERT_TRUE(ValidateEvictionOptions(*valid).ok());
  for (size_t i = 0; i < mistakes.size(); ++i) {
    SCOPED_TRACE(i);
    pb::EvictionConfig c = base;
    mistakes[i].proto(&c);
    const absl::Status parsed = ParseEvictionConfig(c.SerializeAsString(), false).status();
    ASSERT_EQ(parsed.code(), absl::StatusCode::kInvalidArgument);
    EvictionOptions o = *valid;
    mistakes[i].options(&o);
    const absl::Status validated = ValidateEvictionOptions(o);
    EXPECT_EQ(validated, parsed);
    // Inside a session the same rule names the field by its path.
    EXPECT_EQ(ValidateEvictionOptions(o, "eviction.").message(),
              absl::StrCat("eviction.", parsed.message()));
  }
}

TEST(ValidateTest, EvictionStatesOnlyAStructCanHold) {
  EvictionOptions o;
  o.recent_tokens = 64;
  ASSERT_TRUE(ValidateEvictionOptions(o).ok());
  EvictionOptions g = o;
  g.group_size = 0;  // the proto's 0 means 32
  EXPECT_EQ(ValidateEvictionOptions(g).message(), "group_size: must be positive, got 0");
  EvictionOptions w = o;
  w.window_size = 0;  // the proto's 0 means 8
  EXPECT_EQ(ValidateEvictionOptions(w).message(),
            "window_size: must be positive for SNAPKV, got 0");
  EvictionOptions k = o;
  k.pool_kernel = 0;
  EXPECT_EQ(ValidateEvictionOptions(k).message(), "pooling.kernel_size: must be positive, got 0");
  EvictionOptions a = o;
  a.allocator = BudgetAllocator::kAdaKV;  // the parser sets per_head for ADAKV
  EXPECT_THAT(std::string(ValidateEvictionOptions(a).message()),
              StartsWith("per_head: must be true with the ADAKV allocator"));
  EvictionOptions e = o;
  e.algorithm = static_cast<EvictionAlgorithm>(99);
  EXPECT_EQ(ValidateEvictionOptions(e).message(), "algorithm: unknown enum value 99");
}

TEST(ValidateTest, SparseAndVisualStructMistakesGiveTheParsersMessages) {
  auto expect_same = [](const std::string& text, const std::function<void(SparseOptions*)>& edit) {
    SCOPED_TRACE(text);
    const absl::Status parsed = ParseSparseAttentionConfig(text, true).status();
    ASSERT_FALSE(parsed.ok());
    SparseOptions o;
    edit(&o);
    EXPECT_EQ(ValidateSparseOptions(o), parsed);
  };
  expect_same("block_size: -1", [](SparseOptions* o) { o->block_size = -1; });
  expect_same("block_size: 8192", [](SparseOptions* o) { o->block_size = 8192; });
  expect_same("mode: A_SHAPE recent_size: 100", [](SparseOptions* o) {
    o->mode = SparseMode::kAShape;
    o->recent_size = 100;
  });
  expect_same("mode: XATTENTION xattention { stride: 5 }", [](SparseOptions* o) {
    o->mode = SparseMode::kXAttention;
    o->stride = 5;
  });
  expect_same("xattention { threshold: 1.5 }", [](SparseOptions* o) { o->threshold = 1.5; });
  expect_same("xattention { per_head_thresholds: 0.5 }",
              [](SparseOptions* o) { o->per_head_thresholds = {0.5}; });
  expect_same("sink_size: -1", [](SparseOptions* o) { o->sink_size = -1; });
  EXPECT_EQ(ValidateSparseOptions(SparseOptions{}, "sparse_attention.").ok(), true);

  auto expect_same_visual = [](const std::string& text,
                               const std::function<void(VisualOptions*)>& edit) {
    SCOPED_TRACE(text);
    const absl::Status parsed = ParseVisualPruningConfig(text, true).status();
    ASSERT_FALSE(parsed.ok());
    VisualOptions o;
    edit(&o);
    EXPECT_EQ(ValidateVisualOptions(o), parsed);
  };
  expect_same_visual("", [](VisualOptions*) {});
  expect_same_visual("num_keep_tokens: -3", [](VisualOptions* o) { o->num_keep_tokens = -3; });
  expect_same_visual("keep_ratio: 2", [](VisualOptions* o) { o->keep_ratio = 2; });
  expect_same_visual("num_keep_tokens: 4 keep_ratio: 0.5", [](VisualOptions* o) {
    o->num_keep_tokens = 4;
    o->keep_ratio = 0.5;
  });
  expect_same_visual("num_keep_tokens: 4 theta: 1.5", [](VisualOptions* o) {
    o->num_keep_tokens = 4;
    o->theta = 1.5;
  });
}

TEST(ValidateTest, SessionRulesLiveInTheConfigLayer) {
  const std::string shape = "num_layers: 2 num_heads: 4 num_kv_heads: 2 head_dim: 16 ";
  // rerotate_keys with per-head selection: rejected when the config is parsed, and by
  // ValidateSessionOptions for a struct.
  const std::string text = shape +
                           "rope { theta: 10000 } eviction { enabled: true algorithm: H2O "
                           "recent_tokens: 32 per_head: true rerotate_keys: true }";
  const absl::Status parsed = ParseSessionConfig(text, true).status();
  EXPECT_EQ(parsed.message(),
            "eviction.rerotate_keys: needs every kv head to keep the same tokens (not per_head)");
  SessionOptions o;
  o.num_layers = 2;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 16;
  o.has_rope = true;
  o.eviction = DefaultEvictionOptions(EvictionAlgorithm::kH2O);
  o.eviction.recent_tokens = 32;
  o.eviction.per_head = true;
  o.eviction.rerotate_keys = true;
  // Disabled eviction: its options are not the session's business.
  EXPECT_TRUE(ValidateSessionOptions(o).ok());
  o.eviction.enabled = true;
  EXPECT_EQ(ValidateSessionOptions(o), parsed);
  o.eviction.per_head = false;
  EXPECT_TRUE(ValidateSessionOptions(o).ok());
  o.has_rope = false;
  EXPECT_EQ(ValidateSessionOptions(o).message(),
            "eviction.rerotate_keys: needs the rope message (theta, layout)");
  o.has_rope = true;
  o.eviction.recent_tokens = 0;  // the eviction rules, with their path
  EXPECT_THAT(std::string(ValidateSessionOptions(o).message()),
              StartsWith("eviction.start_tokens"));
  o.eviction.recent_tokens = 32;
  o.sparse.mode = SparseMode::kXAttention;
  o.sparse.head_aggregation = HeadAggregation::kPerHead;
  o.sparse.per_head_thresholds = {0.5, 0.5};
  EXPECT_EQ(ValidateSessionOptions(o).message(),
            "sparse_attention.xattention.per_head_thresholds: must have num_heads (4) entries, "
            "got 2");
  o.sparse.per_head_thresholds.assign(4, 0.5);
  EXPECT_TRUE(ValidateSessionOptions(o).ok());
  o.num_kv_heads = 3;
  EXPECT_EQ(ValidateSessionOptions(o).message(), "num_kv_heads: must divide num_heads (4), got 3");
  o.num_kv_heads = 2;
  o.batch_size = 0;  // the proto's 0 means 1
  EXPECT_EQ(ValidateSessionOptions(o).message(), "batch_size: must be positive, got 0");
}

}  // namespace
}  // namespace attnkit
