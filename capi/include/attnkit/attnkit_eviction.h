/** @file
 * attnkit C ABI: KV cache eviction policies for hosts that keep their own cache and kernels.
 *
 * Per step and layer: append the new keys/values to your cache, compute attention, pass the
 * attention weights to attnkit_eviction_policy_observe(), then call
 * attnkit_eviction_policy_select(): it returns the cache positions to keep (all of them while the
 * layer is within budget). Keep exactly those, in that order, before the next step. */
#ifndef ATTNKIT_ATTNKIT_EVICTION_H_
#define ATTNKIT_ATTNKIT_EVICTION_H_

#include "attnkit/attnkit_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A policy for every layer of one sequence (or of a batch evicted together). Not thread-safe: one
 * thread at a time. */
typedef struct attnkit_eviction_policy attnkit_eviction_policy;

/** The positions a layer keeps: one row for layer-wide policies, one per kv head for per-head ones
 * (EvictionConfig.per_head or the ADAKV allocator). Owned by the caller; free with
 * attnkit_kept_positions_free(). */
typedef struct attnkit_kept_positions attnkit_kept_positions;

/** Creates a policy from a serialized attnkit.v1.EvictionConfig (`config`, `size` bytes, borrowed)
 * for a model of `num_layers` layers (1 to 1024), `num_heads` query heads (1 to 1024) and
 * `num_kv_heads` kv heads (dividing num_heads). On success *out is a new policy the caller frees
 * with attnkit_eviction_policy_free(). */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_create(const void* config, size_t size,
                                                           int32_t num_layers, int32_t num_heads,
                                                           int32_t num_kv_heads,
                                                           attnkit_eviction_policy** out);

/** As attnkit_eviction_policy_create() from textproto (`size` bytes, not necessarily
 * NUL-terminated). */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_create_from_text(const char* text, size_t size,
                                                                     int32_t num_layers,
                                                                     int32_t num_heads,
                                                                     int32_t num_kv_heads,
                                                                     attnkit_eviction_policy** out);

/** Frees `policy`. NULL is a no-op. */
ATTNKIT_API void attnkit_eviction_policy_free(attnkit_eviction_policy* policy);

/** Adds one step's attention weights of `layer` to its scores. `attention` is
 * [batch, num_heads, queries, cache_tokens] (softmax weights over the cache as it is now, the new
 * tokens included; summed over the batch). For per-head policies whose kv heads hold different
 * numbers of tokens, pass `lengths` (num_kv_heads entries, each at most cache_tokens; weights
 * past a head's length are ignored; one entry stands for every kv head; any other count is
 * INVALID_ARGUMENT), else NULL and 0. Every size of `attention` must be >= 1. Weights must be
 * finite (NaN or infinity is INVALID_ARGUMENT, as for the session's inputs), checked before the
 * scores change. */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_observe(attnkit_eviction_policy* policy,
                                                            int32_t layer,
                                                            const DLTensor* attention,
                                                            const int64_t* lengths,
                                                            size_t num_lengths);

/** Decides what `layer` keeps. `lengths`: the cache length (1 entry) or one per kv head. `keys`:
 * [num_kv_heads, cache_tokens, head_dim] or [1, num_kv_heads, cache_tokens, head_dim], needed when
 * attnkit_eviction_policy_needs_keys() says so (DIVERSEKV, KNORM, KEYDIFF), else may be NULL; given
 * keys must be finite. cache_tokens may exceed the longest length (a buffer with room for more):
 * only the first max(lengths) tokens of each head are read. Selecting from a layer that has not
 * observed every cached token (e.g. before any observe) is FAILED_PRECONDITION. On success *out
 * holds the kept positions (ascending cache indices) per row. */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_select(attnkit_eviction_policy* policy,
                                                           int32_t layer, const DLTensor* keys,
                                                           const int64_t* lengths,
                                                           size_t num_lengths,
                                                           attnkit_kept_positions** out);

/** 1 when select needs the keys, else 0 (NULL policy: 0). */
ATTNKIT_API int32_t attnkit_eviction_policy_needs_keys(const attnkit_eviction_policy* policy);

/** 1 when every kv head keeps its own tokens, else 0. */
ATTNKIT_API int32_t attnkit_eviction_policy_per_head(const attnkit_eviction_policy* policy);

/** Writes the tokens `layer` may hold per kv head after an eviction to *out. */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_layer_budget(
    const attnkit_eviction_policy* policy, int32_t layer, int64_t* out);

/** Forgets every layer's scores (a new prompt). */
ATTNKIT_API attnkit_status* attnkit_eviction_policy_reset(attnkit_eviction_policy* policy);

/** Number of rows (1, or num_kv_heads). 0 for NULL. */
ATTNKIT_API size_t attnkit_kept_positions_num_rows(const attnkit_kept_positions* kept);

/** Row `row`'s positions, valid until `kept` is freed; *size receives the count. NULL (and *size 0)
 * when `row` is out of range. */
ATTNKIT_API const int64_t* attnkit_kept_positions_row(const attnkit_kept_positions* kept,
                                                      size_t row, size_t* size);

/** Frees `kept`. NULL is a no-op. */
ATTNKIT_API void attnkit_kept_positions_free(attnkit_kept_positions* kept);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_EVICTION_H_ */
