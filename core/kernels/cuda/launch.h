// Host-side launchers of the CUDA kernels: raw device pointers, strides in elements, a stream.
// No Torch and no Abseil here, so nvcc compiles only the kernels; the ATen-facing entry points with
// their checks live in api.cc (cuda/kernels.h). Each launcher returns the launch's
// cudaError_t (cudaGetLastError after the launch). Internal to core/kernels/cuda.
#ifndef ATTNKIT_CORE_KERNELS_CUDA_LAUNCH_H_
#define ATTNKIT_CORE_KERNELS_CUDA_LAUNCH_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace attnkit::cuda_kernels {

enum class DType { kBFloat16, kFloat16 };

// Block-sparse causal attention (FlashAttention-2 style: 128 query rows per CTA, 8 warps, 64-key
// tiles double-buffered with cp.async, mma.sync m16n8k16, online softmax in fp32, nothing
// materialized). q [H, Lq, D], k/v [Hkv, Lk, D] (inner stride 1, row stride and head stride
// given), out [H, Lq, D] in the input dtype. The mask is, per (mask head, query block), a list of
// key blocks: indices [mask_heads, q_blocks, max_list] int32, counts [mask_heads, q_blocks] int32;
// mask_heads is 1 (shared) or H. Entries outside [0, k_blocks) or right of the causal diagonal are
// skipped. block_size must be a multiple of 128; D is 64 or 128.
struct AttentionArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_head_stride, q_row_stride;
  int64_t k_head_stride, k_row_stride;
  int64_t v_head_stride, v_row_stride;
  int64_t o_head_stride, o_row_stride;
  int num_heads, group;  // group = H / Hkv
  int q_len, k_len, head_dim;
  int block_size;
  const int32_t* indices;
  const int32_t* counts;
  int mask_heads, q_blocks, max_list;
  float scale;
};
cudaError_t LaunchBlockSparseAttention(const AttentionArgs& args, DType dtype, cudaStream_t stream);

// XAttention block estimate (docs/algorithms.md section 2 steps 1-4), fused: per CTA 128 reshaped
// query rows. When the cell width B/S divides 128 and `scratch` is given, one pass over the scores:
// the log2 of each (reshaped row, cell) partial sum goes to `scratch` ([H, scratch_rows, k_blocks]
// float32, scratch_rows >= EstimateScratchRows) with the rows' online max/sum in registers, and
// each warp reduces its rows' entries into the cells at the end. Otherwise two passes: row max/sum,
// then the scores again, normalized and added into the cells. One atomicAdd per warp, cell and
// block row. `out` [H, q_blocks, k_blocks] float32 must be zeroed by the caller.
struct EstimateArgs {
  const void* q;
  const void* k;
  float* out;
  int64_t q_head_stride, q_row_stride;
  int64_t k_head_stride, k_row_stride;
  int num_heads, group;
  int q_len, k_len, head_dim;
  int block_size, stride;
  int q_blocks, k_blocks;
  float* scratch;        // may be null: two passes
  int64_t scratch_rows;  // rows per head in scratch
};
// Rows per head the one-pass scratch needs (0 when the two-pass kernel is used); the scratch holds
// num_heads * rows * k_blocks floats and needs no initialization.
int64_t EstimateScratchRows(const EstimateArgs& args);
cudaError_t LaunchXAttentionEstimate(const EstimateArgs& args, DType dtype, cudaStream_t stream);

// A-shape / Tri-shape block lists built on the device: for each query block r, block 0 .. sink
// blocks, the recent window (r + off - recent_blocks, r + off], and every block-causal block
// (c <= r + off) when r is in the dense tail (rows >= q_blocks - tail_rows); when `dense`, every
// block c <= r + reach (c <= r + off in the last row), masks.h's CausalBlockMask; ascending.
// indices [q_blocks, k_blocks], counts [q_blocks]. Also writes the same as a bool mask
// [q_blocks, k_blocks] when `mask` is not null.
cudaError_t LaunchShapeBlockLists(int q_blocks, int k_blocks, int sink_blocks, int recent_blocks,
                                  int tail_rows, bool dense, int reach, int32_t* indices,
                                  int32_t* counts, bool* mask, cudaStream_t stream);

// Bool/uint8 mask [mask_heads, q_blocks, k_blocks] (contiguous) to ascending lists: indices
// [mask_heads, q_blocks, k_blocks] int32 (tail unspecified), counts [mask_heads, q_blocks].
cudaError_t LaunchMaskToLists(const uint8_t* mask, int rows, int k_blocks, int32_t* indices,
                              int32_t* counts, cudaStream_t stream);

// Decode attention over a paged cache, one query token per head, fused with the eviction scores.
// Page p of kv head g starts at page_ptrs[g * max_pages + p] (a device address) or, when page_ids
// is not null, at page_base + page_ids[g * max_pages + p] * page_bytes (an arena of pages whose
// table survives the arena moving): page_size key rows then page_size value rows of D elements.
// lengths [Hkv] int32 on the device; max_length an upper bound of them (sizes the grid). out
// [H, D] in the input dtype, or float32 when out_float. When `scores` is not null
// ([Hkv, scores_stride] float32), scores[g, j] += sum over the group's query heads of the
// attention probability of token j; with scores_per_head ([H, scores_stride]), scores[h, j] +=
// query head h's probability of token j. Two launches: split-K partials (online softmax), then the
// combine fused with the score accumulation. Workspace: see DecodeWorkspaceFloats.
struct DecodeArgs {
  const void* q;  // [H, D], row stride q_stride
  int64_t q_stride;
  const int64_t* page_ptrs;
  const int32_t* page_ids;  // instead of page_ptrs when not null
  const char* page_base;
  int64_t page_bytes;
  int max_pages;  // the row stride of page_ptrs / page_ids
  const int32_t* lengths;
  int max_length, page_size;
  int num_heads, group, head_dim;
  void* out;  // [H, D] contiguous
  bool out_float;
  float* scores;
  int64_t scores_stride;
  bool scores_per_head;  // scores [H, scores_stride]: each query head's own probabilities
  float scale;
  float* workspace;
  int split_tokens;  // tokens per split CTA: 0 picks from the device, else a multiple of 64 <= 1024
  // With split_tokens 0: 0 picks one split size for the call from max_length and all its kv
  // rows; n > 0 makes each run of n kv rows (a sequence) pick its own from its longest length on
  // the device, so a sequence's result does not depend on the others in the call.
  int seq_rows;
};
int64_t DecodeWorkspaceFloats(int num_heads, int head_dim, int max_length);
cudaError_t LaunchPagedDecode(const DecodeArgs& args, DType dtype, cudaStream_t stream);

// Appends T tokens to each of `rows` paged caches in place (the decode step's append, with no
// host-built index): row r's token t goes to position lengths[r] + t, i.e. row (position %
// page_size) of the key half and of the value half of page page_ids[r * ids_stride + position /
// page_size] of the arena (page p's key rows start at element p * 2 * page_size * D of
// `arena`, its value rows page_size rows later), then lengths[r] += T. k and v: element (r, t, c)
// at (r / kv_heads) * seq_stride + (r % kv_heads) * head_stride + t * token_stride + c, in the
// arena's 2-byte dtype. Every page the new positions fall in must be in the table.
struct AppendArgs {
  void* arena;
  const int32_t* page_ids;
  int64_t ids_stride;
  int32_t* lengths;
  const void* k;
  const void* v;
  int64_t k_seq_stride, k_head_stride, k_token_stride;
  int64_t v_seq_stride, v_head_stride, v_token_stride;
  int rows, kv_heads, tokens, head_dim, page_size;
};
cudaError_t LaunchAppendPagedRows(const AppendArgs& args, cudaStream_t stream);

// H2O/SnapKV score rows (cuda/kernels.h AccumulateScoreRows): rows row0 .. row0 + rows - 1 of
// `scores` (float64, row stride score_stride) take, for i < fresh[r - row0], the sum in order of
// attention rows r * sources_per_row .. + sources_per_row - 1 (float32, row stride
// attention_stride) at column start + i, plus the entry's previous value where i < prev[r - row0].
// At most kScoreRowsChunk rows per launch.
constexpr int kScoreRowsChunk = 64;
struct ScoreRowsArgs {
  double* scores;
  int64_t score_stride;
  const float* attention;
  int64_t attention_stride;
  int sources_per_row;
  int64_t start;
  int64_t fresh[kScoreRowsChunk];
  int64_t prev[kScoreRowsChunk];
};
cudaError_t LaunchAccumulateScoreRows(const ScoreRowsArgs& args, int row0, int rows,
                                      int64_t max_fresh, cudaStream_t stream);

}  // namespace attnkit::cuda_kernels

#endif  // ATTNKIT_CORE_KERNELS_CUDA_LAUNCH_H_
