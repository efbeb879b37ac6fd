// One descriptor per algorithm, one table per family: the identity (proto enum value, C++ enum,
// name), capabilities and defaults of every eviction scorer, refinement, budget allocator, sparse
// mask mode and visual pruning method. The config layer validates through these tables, the
// eviction policy builds its scorer and picks its selection from them; nothing else lists
// algorithms.
//
// Each family is an X-macro list so that one row feeds every place that needs it: the tables
// below (Torch- and protobuf-free, so both the config library and the compute code include this
// header), the parser's proto-to-C++ maps (config_parser.cc expands the proto names against the
// generated enums) and the eviction scorer factories (eviction/registry.cc expands the scorer
// names into Make<Scorer>Scorer calls). Adding an eviction algorithm: its proto enum value, its C++
// enumerator, one row in ATTNKIT_EVICTION_ALGORITHMS and one source file in core/src/eviction/ that
// defines its eviction::Make<Scorer>Scorer (and its tests).
#ifndef ATTNKIT_CORE_CONFIG_ALGORITHMS_H_
#define ATTNKIT_CORE_CONFIG_ALGORITHMS_H_

#include <cstdint>

#include "attnkit/config.h"

namespace attnkit {

// ---- Eviction scorers -------------------------------------------------------------------------

// What an eviction algorithm supports (bit set).
enum EvictionCapability : uint32_t {
  // Scores from the last window_size queries (default_window when the config says 0); the other
  // algorithms reject a window.
  kTakesWindow = 1u << 0,
  // normalize_scores applies (accumulated scores divided by how many queries saw each token).
  kNormalizable = 1u << 1,
  // Has token scores a refinement (KVCrush, DiverseKV) can work on.
  kRefinable = 1u << 2,
  // Works with the PYRAMIDKV and ADAKV allocators (UNIFORM always works).
  kAllocatable = 1u << 3,
  // Scores from the cached keys: Select() needs them.
  kNeedsKeys = 1u << 4,
  // Pools its scores along the keys (pooling.kernel_size, alignment and kind apply).
  kPooled = 1u << 5,
  // Pools the prompt's window sums, so pooling.before_window_only applies.
  kPoolsPrompt = 1u << 6,
  // Scores from the statistics of the pre-RoPE queries: needs SessionConfig.rope, and the
  // expected_attention options apply.
  kQueryStatistics = 1u << 7,
};

// How the kept positions follow from the scores.
enum class EvictionSelection {
  // Start and recent areas plus the best-scored intermediate tokens (docs/algorithms.md 1.2).
  kTopScores,
  // Start area plus the newest intermediate + recent tokens, no scores (StreamingLLM).
  kStartAndNewest,
};

// X(proto name, C++ enumerator, scorer, selection, default window, capabilities)
// `scorer` names the factory eviction::Make<scorer>Scorer (several algorithms may share one).
// The list is in proto order; the proto's EVICTION_ALGORITHM_UNSPECIFIED means SNAPKV.
#define ATTNKIT_EVICTION_ALGORITHMS(X)                                                 \
  X(H2O, kH2O, Accumulating, kTopScores, 0, kNormalizable | kRefinable | kAllocatable) \
  X(SNAPKV, kSnapKV, Accumulating, kTopScores, 8,                                      \
    kTakesWindow | kNormalizable | kRefinable | kAllocatable | kPooled | kPoolsPrompt) \
  X(RKV, kRKV, Rkv, kTopScores, 8, kTakesWindow | kRefinable | kAllocatable | kPooled) \
  X(TOVA, kTOVA, Tova, kTopScores, 0, kRefinable | kAllocatable)                       \
  X(KNORM, kKNorm, Key, kTopScores, 0, kRefinable | kAllocatable | kNeedsKeys)         \
  X(KEYDIFF, kKeyDiff, Key, kTopScores, 0, kRefinable | kAllocatable | kNeedsKeys)     \
  X(STREAMING_LLM, kStreamingLLM, Position, kStartAndNewest, 0, 0u)                    \
  X(RANDOM_SCORES, kRandom, Random, kTopScores, 0, kRefinable | kAllocatable)          \
  X(EXPECTED_ATTENTION, kExpectedAttention, ExpectedAttention, kTopScores, 0,          \
    kRefinable | kAllocatable | kNeedsKeys | kQueryStatistics)                         \
  X(CAKE, kCake, Cake, kTopScores, 32, kTakesWindow | kAllocatable)

struct EvictionAlgorithmDescriptor {
  EvictionAlgorithm algorithm;
  const char* name;  // the proto enum value's name
  EvictionSelection selection;
  int default_window;  // window_size when the config says 0 (kTakesWindow only)
  uint32_t capabilities;
  constexpr bool Has(EvictionCapability c) const { return (capabilities & c) != 0; }
};

#define ATTNKIT_EVICTION_DESCRIPTOR_ROW(proto, enumerator, scorer, selection, window, caps)        \
  EvictionAlgorithmDescriptor{EvictionAlgorithm::enumerator, #proto, EvictionSelection::selection, \
                              window, static_cast<uint32_t>(caps)},
inline constexpr EvictionAlgorithmDescriptor kEvictionAlgorithms[] = {
    ATTNKIT_EVICTION_ALGORITHMS(ATTNKIT_EVICTION_DESCRIPTOR_ROW)};
#undef ATTNKIT_EVICTION_DESCRIPTOR_ROW

// The row of `algorithm`, or nullptr for a value outside the enum.
inline const EvictionAlgorithmDescriptor* FindEvictionAlgorithm(EvictionAlgorithm algorithm) {
  for (const auto& d : kEvictionAlgorithms)
    if (d.algorithm == algorithm) return &d;
  return nullptr;
}

// ---- Refinements ------------------------------------------------------------------------------

enum RefinementCapability : uint32_t {
  // Select() needs the cached keys.
  kRefinementNeedsKeys = 1u << 0,
  // Has anchors (refined.kvcrush_anchor applies).
  kRefinementAnchored = 1u << 1,
};

// X(proto name, C++ enumerator, capabilities)
#define ATTNKIT_REFINED_ALGORITHMS(X)       \
  X(REFINED_NONE, kNone, 0u)                \
  X(KVCRUSH, kKVCrush, kRefinementAnchored) \
  X(DIVERSEKV, kDiverseKV, kRefinementNeedsKeys)

struct RefinementDescriptor {
  RefinedAlgorithm algorithm;
  const char* name;
  uint32_t capabilities;
  constexpr bool Has(RefinementCapability c) const { return (capabilities & c) != 0; }
};

#define ATTNKIT_REFINEMENT_DESCRIPTOR_ROW(proto, enumerator, caps) \
  RefinementDescriptor{RefinedAlgorithm::enumerator, #proto, static_cast<uint32_t>(caps)},
inline constexpr RefinementDescriptor kRefinedAlgorithms[] = {
    ATTNKIT_REFINED_ALGORITHMS(ATTNKIT_REFINEMENT_DESCRIPTOR_ROW)};
#undef ATTNKIT_REFINEMENT_DESCRIPTOR_ROW

inline const RefinementDescriptor* FindRefinement(RefinedAlgorithm algorithm) {
  for (const auto& d : kRefinedAlgorithms)
    if (d.algorithm == algorithm) return &d;
  return nullptr;
}

// ---- Budget allocators ------------------------------------------------------------------------

enum AllocatorCapability : uint32_t {
  // Layers get different intermediate budgets (same mean).
  kAllocatorPerLayer = 1u << 0,
  // One selection over all kv heads of a layer: every kv head keeps its own tokens (per_head).
  kAllocatorPerHead = 1u << 1,
  // Layer budgets decided at run time from each layer's prompt attention (CAKE).
  kAllocatorFromAttention = 1u << 2,
};

// X(proto name inside BudgetAllocation, C++ enumerator, capabilities)
#define ATTNKIT_BUDGET_ALLOCATORS(X)           \
  X(UNIFORM, kUniform, 0u)                     \
  X(PYRAMIDKV, kPyramidKV, kAllocatorPerLayer) \
  X(ADAKV, kAdaKV, kAllocatorPerHead)          \
  X(CAKE, kCake, kAllocatorFromAttention)

struct AllocatorDescriptor {
  BudgetAllocator allocator;
  const char* name;
  uint32_t capabilities;
  constexpr bool Has(AllocatorCapability c) const { return (capabilities & c) != 0; }
};

#define ATTNKIT_ALLOCATOR_DESCRIPTOR_ROW(proto, enumerator, caps) \
  AllocatorDescriptor{BudgetAllocator::enumerator, #proto, static_cast<uint32_t>(caps)},
inline constexpr AllocatorDescriptor kBudgetAllocators[] = {
    ATTNKIT_BUDGET_ALLOCATORS(ATTNKIT_ALLOCATOR_DESCRIPTOR_ROW)};
#undef ATTNKIT_ALLOCATOR_DESCRIPTOR_ROW

inline const AllocatorDescriptor* FindAllocator(BudgetAllocator allocator) {
  for (const auto& d : kBudgetAllocators)
    if (d.allocator == allocator) return &d;
  return nullptr;
}

// ---- Sparse attention mask modes --------------------------------------------------------------

enum SparseModeCapability : uint32_t {
  // The recent area is whole blocks (recent_size a multiple of block_size).
  kSparseRecentInBlocks = 1u << 0,
  // Estimates block scores with a stride (block_size a multiple of xattention.stride).
  kSparseStrided = 1u << 1,
};

// X(proto name, C++ enumerator, capabilities)
#define ATTNKIT_SPARSE_MODES(X)                  \
  X(DENSE, kDense, 0u)                           \
  X(A_SHAPE, kAShape, kSparseRecentInBlocks)     \
  X(TRI_SHAPE, kTriShape, kSparseRecentInBlocks) \
  X(XATTENTION, kXAttention, kSparseStrided)     \
  X(FLEXPREFILL, kFlexPrefill, 0u)

struct SparseModeDescriptor {
  SparseMode mode;
  const char* name;
  uint32_t capabilities;
  constexpr bool Has(SparseModeCapability c) const { return (capabilities & c) != 0; }
};

#define ATTNKIT_SPARSE_MODE_DESCRIPTOR_ROW(proto, enumerator, caps) \
  SparseModeDescriptor{SparseMode::enumerator, #proto, static_cast<uint32_t>(caps)},
inline constexpr SparseModeDescriptor kSparseModes[] = {
    ATTNKIT_SPARSE_MODES(ATTNKIT_SPARSE_MODE_DESCRIPTOR_ROW)};
#undef ATTNKIT_SPARSE_MODE_DESCRIPTOR_ROW

inline const SparseModeDescriptor* FindSparseMode(SparseMode mode) {
  for (const auto& d : kSparseModes)
    if (d.mode == mode) return &d;
  return nullptr;
}

// ---- Visual pruning methods -------------------------------------------------------------------

// X(proto name, C++ enumerator). Every method takes the same options (theta and relevance only
// matter to CDPRUNER, seed only to RANDOM_SUBSET; neither is rejected elsewhere, as in the
// reference).
#define ATTNKIT_VISUAL_METHODS(X) \
  X(CDPRUNER, kCDPruner)          \
  X(DIVPRUNE, kDivPrune)          \
  X(RANDOM_SUBSET, kRandom)       \
  X(UNIFORM_GRID, kUniform)

struct VisualMethodDescriptor {
  VisualMethod method;
  const char* name;
};

#define ATTNKIT_VISUAL_METHOD_DESCRIPTOR_ROW(proto, enumerator) \
  VisualMethodDescriptor{VisualMethod::enumerator, #proto},
inline constexpr VisualMethodDescriptor kVisualMethods[] = {
    ATTNKIT_VISUAL_METHODS(ATTNKIT_VISUAL_METHOD_DESCRIPTOR_ROW)};
#undef ATTNKIT_VISUAL_METHOD_DESCRIPTOR_ROW

}  // namespace attnkit

#endif  // ATTNKIT_CORE_CONFIG_ALGORITHMS_H_
