/** @file
 * attnkit C ABI: the attention-wrapping session. A generation loop hands every layer's attention
 * call to attnkit_session_attend(); the session owns the KV cache in fixed-size pages, computes
 * attention, applies the eviction policy and frees pages, so the bytes held follow the budget. */
#ifndef ATTNKIT_ATTNKIT_SESSION_H_
#define ATTNKIT_ATTNKIT_SESSION_H_

#include "attnkit/attnkit_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A session for one batch of sequences. Not thread-safe: one thread at a time. */
typedef struct attnkit_session attnkit_session;

/** Creates a session from a serialized attnkit.v1.SessionConfig (`config`, `size` bytes, borrowed).
 * On success *out is a new session the caller frees with attnkit_session_free(). Bounds of the
 * model shape (INVALID_ARGUMENT naming the field beyond them): num_layers and num_heads at most
 * 1024, head_dim at most 1024, batch_size at most 4096, num_kv_heads dividing num_heads. */
ATTNKIT_API attnkit_status* attnkit_session_create(const void* config, size_t size,
                                                   attnkit_session** out);

/** As attnkit_session_create() from textproto (`size` bytes, not necessarily NUL-terminated). */
ATTNKIT_API attnkit_status* attnkit_session_create_from_text(const char* text, size_t size,
                                                             attnkit_session** out);

/** Frees `session` and its cache. NULL is a no-op. */
ATTNKIT_API void attnkit_session_free(attnkit_session* session);

/** One attention call of `layer` (layers in order within a step, starting at 0):
 * q [batch, num_heads, tokens, head_dim], k and v [batch, num_kv_heads, tokens, head_dim] for the
 * new tokens (RoPE applied; finite: NaN or infinity is INVALID_ARGUMENT naming the tensor), any
 * strides (so [batch, tokens, heads, dim] buffers work without
 * copies), float32/float16/bfloat16. Writes causal softmax(q K^T * scale) V over the cache and the
 * new tokens into `out` (shape of q, any non-overlapping strides, floating dtype). A prompt of any
 * length and single-token decode steps use the same call. Afterwards the layer evicts down to its
 * budget when over it. All tensors are borrowed for the call.
 * Devices: tensors may be CPU or (in a CUDA build) CUDA DLPack tensors. A session created with
 * `device: CUDA` keeps its cache on that GPU and computes there (CPU inputs are copied over); a CPU
 * session copies CUDA inputs to the host. `out` is written where it lives. */
ATTNKIT_API attnkit_status* attnkit_session_attend(attnkit_session* session, int32_t layer,
                                                   const DLTensor* q, const DLTensor* k,
                                                   const DLTensor* v, DLTensor* out);

/** A ragged call of `layer` (continuous batching): sequence b brings new_tokens[b] new tokens
 * (0 to tokens; 0: it sits this step out, its cache and policy untouched), the first
 * new_tokens[b] rows of its q [batch, num_heads, tokens, head_dim] and k, v [batch, num_kv_heads,
 * tokens, head_dim]; the rows beyond are padding and never read (they need not be finite). One
 * sequence can prefill while the others decode. `out` (q's shape) gets each sequence's attention
 * in its first new_tokens[b] rows and zeros beyond. `num_sequences` must be the batch_size and at
 * least one count positive; every layer of a step takes the counts its layer 0 took
 * (INVALID_ARGUMENT naming new_tokens otherwise, the session unchanged). Every policy, budget,
 * schedule and position is per sequence: a sequence computes what a session of its own would.
 * Tensors and `new_tokens` are borrowed for the call; devices as for attnkit_session_attend(). */
ATTNKIT_API attnkit_status* attnkit_session_attend_ragged(attnkit_session* session, int32_t layer,
                                                          const DLTensor* q, const DLTensor* k,
                                                          const DLTensor* v, DLTensor* out,
                                                          const int64_t* new_tokens,
                                                          size_t num_sequences);

/** Retires `sequence` (a finished request of a continuous batch): its tokens in every layer are
 * dropped and its pages go back to the pool for the other sequences; its policy state, schedule
 * counters and positions restart; the other sequences are untouched. The slot then takes a new
 * sequence through attnkit_session_attend_ragged() (its first tokens are its prompt). Between
 * steps only (FAILED_PRECONDITION while a step or an observe pass is partway through its
 * layers). */
ATTNKIT_API attnkit_status* attnkit_session_reset_sequence(attnkit_session* session,
                                                           int32_t sequence);

/** An observe-only call of `layer`: the queries q [batch, num_heads, tokens >= 1, head_dim]
 * (float32/float16/bfloat16, any strides, finite; RoPE applied at the positions that follow the
 * sequence, attnkit_session_next_position() + t) attend to the layer's cache as it is, every query
 * seeing every cached token, and feed the eviction policy's scores as the queries of an
 * attnkit_session_attend() call would (docs/algorithms.md 1.6): the question of a query-aware
 * compression, or a "repeat the context" prompt scoring the cache by how much it is attended
 * (KVzip). Nothing is appended and nothing is evicted: the next call that may evict uses the
 * scores (configure defer_eviction_to_decode to keep the prompt whole until the first decode step).
 * `out` (NULL, or q's shape, any non-overlapping strides, floating dtype) receives
 * softmax(q K^T * scale) V over the cache. A sequence that holds no token (a slot not started
 * yet, or retired with attnkit_session_reset_sequence()) sits the pass out: its rows of q are not
 * read (they may hold anything) and its rows of `out` get zeros. Observe passes run the layers in
 * order from 0 and only between steps (FAILED_PRECONDITION otherwise, or when no sequence holds a
 * token); a call refused by these checks or the tensor checks leaves the session unchanged. Tensors
 * are borrowed for the call; devices as for attnkit_session_attend(). */
ATTNKIT_API attnkit_status* attnkit_session_observe(attnkit_session* session, int32_t layer,
                                                    const DLTensor* q, DLTensor* out);

/** The session's statistics as a serialized attnkit.v1.SessionStats. *out is a new buffer the
 * caller frees with attnkit_buffer_free(). */
ATTNKIT_API attnkit_status* attnkit_session_stats(const attnkit_session* session,
                                                  attnkit_buffer** out);

/** Bytes of KV pages in use (keys and values, every layer) written to *out. */
ATTNKIT_API attnkit_status* attnkit_session_bytes_held(const attnkit_session* session,
                                                       int64_t* out);

/** Original positions (0 = first prompt token) of the tokens cached for (layer, sequence, kv_head),
 * in cache order. *out is a new array the caller frees with attnkit_int64_array_free(). */
ATTNKIT_API attnkit_status* attnkit_session_positions(const attnkit_session* session, int32_t layer,
                                                      int32_t sequence, int32_t kv_head,
                                                      attnkit_int64_array** out);

/** The RoPE position the host should give the next token of `sequence` (tokens seen, or the cache
 * length when eviction.rerotate_keys is on). */
ATTNKIT_API attnkit_status* attnkit_session_next_position(const attnkit_session* session,
                                                          int32_t sequence, int64_t* out);

/** Drops every cached token and policy state to start a new prompt; reserved pages are reused. */
ATTNKIT_API attnkit_status* attnkit_session_reset(attnkit_session* session);

/** The session's whole state (its config, every layer's pages, positions and counters, the
 * eviction policies' scores) as one versioned, checksummed blob (docs/algorithms.md 1.7). *out is
 * a new buffer the caller frees with attnkit_buffer_free(). A session created with the same config
 * that loads the blob computes exactly what this one would have. */
ATTNKIT_API attnkit_status* attnkit_session_save(const attnkit_session* session,
                                                 attnkit_buffer** out);

/** Replaces the session's state with a blob from attnkit_session_save() of a session with the same
 * config (device and device_index aside). A blob that is truncated, altered, of another format
 * version or from another config is ATTNKIT_INVALID_ARGUMENT naming what is wrong, and the
 * session is left exactly as it was. `blob` is read during the call only. */
ATTNKIT_API attnkit_status* attnkit_session_load(attnkit_session* session, const void* blob,
                                                 size_t size);

/** A new session with the session's config and state: a compressed context that several
 * continuations go on from. On the CPU the pages are shared copy-on-write (nothing is copied until
 * one of the sessions writes a page; the two may then be used from different threads); a CUDA
 * session's pages are copied. Forking counts as a call on `session` (one thread at a time).
 * *out is freed with attnkit_session_free(). */
ATTNKIT_API attnkit_status* attnkit_session_fork(const attnkit_session* session,
                                                 attnkit_session** out);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_SESSION_H_ */
