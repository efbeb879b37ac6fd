// Block masks on the device: A-shape / Tri-shape lists (and bool masks) from the lengths alone, and
// any bool block mask turned into the per-(head, query block) key-block lists the attention kernel
// takes. One warp per query-block row; the list is written in ascending order with a ballot prefix.
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kWarps = 8;

__global__ void ShapeListsKernel(int q_blocks, int k_blocks, int sink_blocks, int recent_blocks,
                                 int tail_rows, bool dense, int reach, int32_t* indices,
                                 int32_t* counts, bool* mask) {
  const int r = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= q_blocks) return;
  const int off = k_blocks - q_blocks;
  const int diag = r + off;
  const bool full = dense || r >= q_blocks - tail_rows;
  // Dense: every block with a causal pair, one past the diagonal in all rows but the last when
  // reach = off + 1 (BlockGrid::LastCausalBlock); otherwise block-causal as the reference.
  const int last = dense && r + 1 < q_blocks ? r + reach : diag;
  int n = 0;
  for (int c0 = 0; c0 < k_blocks; c0 += 32) {
    const int c = c0 + lane;
    bool keep = false;
    if (c < k_blocks && c <= last) keep = full || c < sink_blocks || c > diag - recent_blocks;
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (keep)
      indices[static_cast<int64_t>(r) * k_blocks + n + __popc(ballot & ((1u << lane) - 1))] = c;
    if (mask != nullptr && c < k_blocks) mask[static_cast<int64_t>(r) * k_blocks + c] = keep;
    n += __popc(ballot);
  }
  if (lane == 0) counts[r] = n;
}

__global__ void MaskToListsKernel(const uint8_t* mask, int rows, int k_blocks, int32_t* indices,
                                  int32_t* counts) {
  const int r = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const uint8_t* m = mask + static_cast<int64_t>(r) * k_blocks;
  int32_t* out = indices + static_cast<int64_t>(r) * k_blocks;
  int n = 0;
  for (int c0 = 0; c0 < k_blocks; c0 += 32) {
    const int c = c0 + lane;
    const bool keep = c < k_blocks && m[c] != 0;
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (keep) out[n + __popc(ballot & ((1u << lane) - 1))] = c;
    n += __popc(ballot);
  }
  if (lane == 0) counts[r] = n;
}

}  // namespace

cudaError_t LaunchShapeBlockLists(int q_blocks, int k_blocks, int sink_blocks, int recent_blocks,
                                  int tail_rows, bool dense, int reach, int32_t* indices,
                                  int32_t* counts, bool* mask, cudaStream_t stream) {
  if (q_blocks == 0) return cudaSuccess;
  ShapeListsKernel<<<(q_blocks + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(
      q_blocks, k_blocks, sink_blocks, recent_blocks, tail_rows, dense, reach, indices, counts,
      mask);
  return cudaGetLastError();
}

cudaError_t LaunchMaskToLists(const uint8_t* mask, int rows, int k_blocks, int32_t* indices,
                              int32_t* counts, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  MaskToListsKernel<<<(rows + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(mask, rows, k_blocks,
                                                                              indices, counts);
  return cudaGetLastError();
}

}  // namespace attnkit::cuda_kernels
