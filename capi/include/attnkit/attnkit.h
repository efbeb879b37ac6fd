/** @file
 * attnkit: KV cache eviction, sparse prefill attention and visual token pruning behind a C ABI.
 * The umbrella header; see each included header for its objects. Conventions (status, ownership,
 * tensors, threads) are in attnkit_common.h. */
#ifndef ATTNKIT_ATTNKIT_H_
#define ATTNKIT_ATTNKIT_H_

#include "attnkit/attnkit_common.h"
#include "attnkit/attnkit_config.h"
#include "attnkit/attnkit_eviction.h"
#include "attnkit/attnkit_session.h"
#include "attnkit/attnkit_sparse.h"
#include "attnkit/attnkit_visual.h"

#endif /* ATTNKIT_ATTNKIT_H_ */
