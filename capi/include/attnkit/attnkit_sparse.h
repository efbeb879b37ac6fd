/** @file
 * attnkit C ABI: sparse prefill attention (block masks and the block-sparse attention kernel).
 *
 * Configured by an attnkit.v1.SparseAttentionConfig (proto/attnkit/v1/sparse_attention.proto):
 * mode DENSE, A_SHAPE, TRI_SHAPE, XATTENTION or FLEXPREFILL, block_size B (default 128), ...
 *
 * Tensor layout (DLPack, borrowed for the call, any strides, CPU; CUDA tensors are computed on CPU
 * copies where the library has CUDA):
 * - q:    [batch, heads, q_len, head_dim]       float32, float16 or bfloat16
 * - k, v: [batch, kv_heads, k_len, head_dim]    same dtypes; kv_heads divides heads (GQA);
 *                                               v's last dimension may differ from q's (dv)
 *   q_len <= k_len: the queries are the last q_len positions of the k_len keys (a prefill chunk
 *   appended to a cache of k_len - q_len tokens); causal masking is aligned bottom-right.
 * - mask: [batch, mask_heads, q_blocks, k_blocks] uint8 (DLPack kDLUInt, 8 bits; kDLBool 8 bits is
 *   also accepted), 0 = skip the block, anything else = compute it; q_blocks = ceil(q_len / B),
 *   k_blocks = ceil(k_len / B), mask_heads = 1 (one mask shared by every head) or heads.
 *   attnkit_sparse_attention_attention() also accepts a rank-3 mask [mask_heads, q_blocks,
 * k_blocks] shared by every sequence of the batch.
 * - out:  [batch, heads, q_len, dv], float32, float16 or bfloat16 (computed in float32, converted).
 *
 * Thread safety: an attnkit_sparse_attention is immutable after creation; it may be used from
 * several threads at once. Distinct objects are independent.
 */
#ifndef ATTNKIT_ATTNKIT_SPARSE_H_
#define ATTNKIT_ATTNKIT_SPARSE_H_

#include "attnkit/attnkit_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A configured sparse attention policy. Opaque; create with attnkit_sparse_attention_create*(),
 * free with attnkit_sparse_attention_free(). */
typedef struct attnkit_sparse_attention attnkit_sparse_attention;

/** Creates a policy from a serialized attnkit.v1.SparseAttentionConfig (`data`, `size` bytes,
 * borrowed; size 0 means all defaults). On success *out is a new object owned by the caller.
 * Invalid configs give INVALID_ARGUMENT whose message starts with the field's path. */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_create(const void* data, size_t size,
                                                            attnkit_sparse_attention** out);

/** As attnkit_sparse_attention_create() from textproto (`text`, `size` bytes, need not be
 * NUL-terminated). */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_create_from_text(
    const char* text, size_t size, attnkit_sparse_attention** out);

/** Frees `sparse`. NULL is a no-op. */
ATTNKIT_API void attnkit_sparse_attention_free(attnkit_sparse_attention* sparse);

/** The mask shape build_mask() writes for `num_heads` query heads, q_len queries and k_len keys:
 * *mask_heads (num_heads for FLEXPREFILL and for XATTENTION with PER_HEAD aggregation, else 1),
 * *q_blocks, *k_blocks.
 * Every output pointer must be non-NULL. Thread-safe. */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_mask_shape(
    const attnkit_sparse_attention* sparse, int64_t num_heads, int64_t q_len, int64_t k_len,
    int64_t* mask_heads, int64_t* q_blocks, int64_t* k_blocks);

/** Builds the block mask of every sequence of the batch into the caller's `mask_out`, a uint8
 * tensor [batch, mask_heads, q_blocks, k_blocks] (see attnkit_sparse_attention_mask_shape());
 * written as 0/1. Dense (every block holding a causal query-key pair, docs/algorithms.md section 2)
 * below min_sparse_length and in DENSE mode; A_SHAPE and TRI_SHAPE only read the lengths of q and
 * k; XATTENTION estimates block scores from q and k. */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_build_mask(
    const attnkit_sparse_attention* sparse, const DLTensor* q, const DLTensor* k,
    DLTensor* mask_out);

/** Block-sparse causal attention: out = softmax(scale * q k^T restricted to `mask` and causal) v,
 * per sequence and head; blocks whose mask entry is 0 contribute nothing and a query that sees no
 * key gets a zero row. `scale` 0 means 1 / sqrt(head_dim); otherwise it must be finite. `out` must
 * not overlap itself (nor alias q, k, v or mask). q, k and v are not scanned for NaN or infinity
 * (that would cost a pass over them on the prefill path): non-finite inputs give non-finite rows
 * of `out`, as dense attention does, and never an error or a crash. */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_attention(
    const attnkit_sparse_attention* sparse, const DLTensor* q, const DLTensor* k, const DLTensor* v,
    const DLTensor* mask, double scale, DLTensor* out);

/** build_mask + attention in one call, the mask kept internal. When `density` is non-NULL it
 * receives the fraction of block-causal blocks computed, averaged over the batch (1.0 when dense).
 */
ATTNKIT_API attnkit_status* attnkit_sparse_attention_prefill(const attnkit_sparse_attention* sparse,
                                                             const DLTensor* q, const DLTensor* k,
                                                             const DLTensor* v, double scale,
                                                             DLTensor* out, double* density);

#ifdef __cplusplus
}
#endif

#endif /* ATTNKIT_ATTNKIT_SPARSE_H_ */
