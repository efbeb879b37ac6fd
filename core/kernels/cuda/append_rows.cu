// The decode step's append on the device (cuda/kernels.h AppendPagedRows): one CTA per cache row,
// its threads copying the new tokens' key and value rows (16 bytes at a time where the rows are
// aligned for it) to the slots the page table and the row's length give; then the length grows.
// The host builds no index and transfers nothing, so the step needs no copy from the host.
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kThreads = 128;

// Unit: the bytes one thread moves at a time (uint4 = 16 bytes, or uint16_t = one element).
template <typename Unit>
__global__ void __launch_bounds__(kThreads) AppendPagedRowsKernel(AppendArgs a) {
  constexpr int kPerUnit = sizeof(Unit) / 2;  // elements per unit
  const int r = blockIdx.x;
  const int units = a.head_dim / kPerUnit;
  __shared__ int s_length;
  if (threadIdx.x == 0) s_length = a.lengths[r];
  __syncthreads();
  const int length = s_length;
  const int64_t seq = r / a.kv_heads, head = r % a.kv_heads;
  const Unit* k = reinterpret_cast<const Unit*>(static_cast<const uint16_t*>(a.k) +
                                                seq * a.k_seq_stride + head * a.k_head_stride);
  const Unit* v = reinterpret_cast<const Unit*>(static_cast<const uint16_t*>(a.v) +
                                                seq * a.v_seq_stride + head * a.v_head_stride);
  const int64_t k_tok = a.k_token_stride / kPerUnit, v_tok = a.v_token_stride / kPerUnit;
  const int32_t* ids = a.page_ids + static_cast<int64_t>(r) * a.ids_stride;
  Unit* arena = static_cast<Unit*>(a.arena);
  for (int i = threadIdx.x; i < a.tokens * units; i += kThreads) {
    const int t = i / units, c = i - t * units;
    const int pos = length + t;
    const int64_t page = ids[pos / a.page_size];
    const int64_t key_row = page * 2 * a.page_size + pos % a.page_size;
    arena[key_row * units + c] = k[t * k_tok + c];
    arena[(key_row + a.page_size) * units + c] = v[t * v_tok + c];
  }
  __syncthreads();  // every thread read the old length
  if (threadIdx.x == 0) a.lengths[r] = length + a.tokens;
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

cudaError_t LaunchAppendPagedRows(const AppendArgs& args, cudaStream_t stream) {
  if (args.rows <= 0 || args.tokens <= 0) return cudaSuccess;
  const bool wide =
      args.head_dim % 8 == 0 && Aligned16(args.k) && Aligned16(args.v) && Aligned16(args.arena) &&
      args.k_seq_stride % 8 == 0 && args.k_head_stride % 8 == 0 && args.k_token_stride % 8 == 0 &&
      args.v_seq_stride % 8 == 0 && args.v_head_stride % 8 == 0 && args.v_token_stride % 8 == 0;
  if (wide) {
    AppendPagedRowsKernel<uint4><<<args.rows, kThreads, 0, stream>>>(args);
  } else {
    AppendPagedRowsKernel<uint16_t><<<args.rows, kThreads, 0, stream>>>(args);
  }
  return cudaGetLastError();
}

}  // namespace attnkit::cuda_kernels
