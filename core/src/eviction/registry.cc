// The scorer factories of the eviction algorithms, from their rows in ATTNKIT_EVICTION_ALGORITHMS
// (config/algorithms.h): each row names the Make<Scorer>Scorer its source file defines.
#include <memory>

#include "config/algorithms.h"
#include "eviction/scorers.h"

namespace attnkit::eviction {

#define ATTNKIT_DECLARE_SCORER_FACTORY(proto, enumerator, scorer, ...) \
  std::unique_ptr<Scorer> Make##scorer##Scorer(const EvictionOptions&, const HeadLayout&);
ATTNKIT_EVICTION_ALGORITHMS(ATTNKIT_DECLARE_SCORER_FACTORY)
#undef ATTNKIT_DECLARE_SCORER_FACTORY

std::unique_ptr<Scorer> MakeScorer(const EvictionOptions& options, const HeadLayout& layout) {
#define ATTNKIT_SCORER_CASE(proto, enumerator, scorer, ...) \
  case EvictionAlgorithm::enumerator:                       \
    return Make##scorer##Scorer(options, layout);
  switch (options.algorithm) { ATTNKIT_EVICTION_ALGORITHMS(ATTNKIT_SCORER_CASE) }
#undef ATTNKIT_SCORER_CASE
  return nullptr;
}

}  // namespace attnkit::eviction
