// Which kernel takes a sparse-attention call, and the dispatch to it. This is the one place that
// answers "who computes this?" for core/src/sparse (as onnxruntime's GetCapability or ggml's
// supports_op do): SparseAttention asks a Choose* function for each step of a call (the mask's
// block lists, the XAttention estimate, the block selection, the attention) and hands the answer to
// the matching Run* function. Internal to core.
//
// The backends:
//  - kCpu: attnkit's CPU kernels (core/kernels/cpu) and the host loops of masks.h. They take every
//    call whose inputs are on the CPU.
//  - kCuda: attnkit's CUDA kernels (cuda/kernels.h), in a build that has them (cuda::Compiled()),
//    for CUDA inputs of the dtypes, head dims and block sizes they support (below).
//  - kTensorOps: the same semantics as plain ATen operations on the inputs' device: the fallback
//    for device inputs no kernel takes (float32, other head dims or blocks, a build without the
//    CUDA kernels, a device other than CUDA).
//
// The rules are pure functions of a few facts about the inputs (SparseInputs) and of whether the
// CUDA kernels are built, so tests can ask them for inputs they cannot allocate (CUDA tensors on a
// machine without a GPU). Thread-safe: pure functions.
#ifndef ATTNKIT_CORE_SPARSE_SPARSE_BACKEND_H_
#define ATTNKIT_CORE_SPARSE_SPARSE_BACKEND_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "attnkit/config.h"

namespace attnkit::sparse {

enum class SparseBackend { kCpu, kCuda, kTensorOps };

// "cpu", "cuda" or "tensor_ops".
const char* SparseBackendName(SparseBackend backend);

// What the choice reads from a call's inputs q [H, Lq, d], k [Hkv, Lk, d] and optionally
// v [Hkv, Lk, dv].
struct SparseInputs {
  at::Device device = at::Device(at::kCPU);  // q's device (the CPU when q is undefined)
  bool one_device = true;                    // k (and v) are on q's device
  at::ScalarType dtype = at::kFloat;         // q's dtype
  bool one_dtype = true;                     // k (and v) have q's dtype
  int64_t head_dim = 0;                      // d (0 when q is not of rank 3)
  int64_t value_dim = 0;                     // dv (d when there is no v; 0 when v is not rank 3)
};

// The facts of q, k and (when not null) v. Never fails: undefined or misshapen tensors give facts
// that no device kernel takes, and the kernel that does take the call reports the error.
SparseInputs DescribeInputs(const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor* v = nullptr);

// Block-sparse attention (RunAttention): kCpu for CPU inputs; kCuda for CUDA inputs when
// `cuda_built` and the kernel supports them: one device, bfloat16 or float16 throughout, head dim
// 64 or 128 for q and v alike, block_size a multiple of 128; kTensorOps otherwise.
SparseBackend ChooseAttentionBackend(const SparseInputs& inputs, int64_t block_size,
                                     bool cuda_built);

// The XAttention block estimate (RunEstimate): kCpu for CPU inputs; kCuda for CUDA inputs when
// `cuda_built`, one device, q and k bfloat16 or float16 alike, head dim 64 or 128 and the cell
// width block_size / stride a multiple of 8; kTensorOps (the estimate's ATen reference) otherwise.
SparseBackend ChooseEstimateBackend(const SparseInputs& inputs, int64_t block_size, int64_t stride,
                                    bool cuda_built);

// A-/Tri-shape masks and block lists built from the lengths alone (RunShapeMask) for inputs on
// `device`: kCuda (built on the device) for a CUDA device when `cuda_built`; kCpu otherwise (built
// on the host, then copied to the device).
SparseBackend ChooseShapeListsBackend(at::Device device, bool cuda_built);

// The XAttention block selection from block scores on `device` (SelectXAttentionBlocks): kCpu (the
// host loop) for the CPU, kTensorOps (SelectXAttentionBlocksTensorOps) for any other device.
SparseBackend ChooseSelectionBackend(at::Device device);

// The choices for these tensors in this build (cuda_built = cuda::Compiled()).
SparseBackend ChooseAttentionBackend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     int64_t block_size);
SparseBackend ChooseEstimateBackend(const at::Tensor& q, const at::Tensor& k, int64_t block_size,
                                    int64_t stride);
SparseBackend ChooseShapeListsBackend(const at::Tensor& q);

// Block-sparse causal attention restricted to `mask` on `backend` (as chosen above): float32
// [H, Lq, dv] on q's device. Every backend checks its inputs (CheckBlockSparseInputs) first.
absl::StatusOr<at::Tensor> RunAttention(SparseBackend backend, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& mask, int64_t block_size, double scale);

// The XAttention block estimate on `backend`: float32 [H, ceil(Lq/B), ceil(Lk/B)] on q's device.
absl::StatusOr<at::Tensor> RunEstimate(SparseBackend backend, const at::Tensor& q,
                                       const at::Tensor& k, int64_t block_size, int64_t stride);

// The A-shape or Tri-shape mask (options.mode) of q_len queries over k_len keys on `device`:
// bool [1, ceil(q_len/B), ceil(k_len/B)]. kCuda builds it on the device (cuda::ShapeBlockLists);
// kCpu on the host (masks.h), copied to `device`.
absl::StatusOr<at::Tensor> RunShapeMask(SparseBackend backend, const SparseOptions& options,
                                        int64_t q_len, int64_t k_len, at::Device device);

// A-shape or Tri-shape attention (options.mode) on the CUDA kernels straight from the lengths: the
// block lists are built on the device and no bool mask is made. For inputs whose attention and
// shape-list backends are both kCuda. Returns float32 [H, Lq, dv]; `density` (when not null)
// receives the selected share of the block-causal blocks, as MaskDensity.
absl::StatusOr<at::Tensor> RunShapeAttentionCuda(const SparseOptions& options, const at::Tensor& q,
                                                 const at::Tensor& k, const at::Tensor& v,
                                                 double scale, double* density);

}  // namespace attnkit::sparse

#endif  // ATTNKIT_CORE_SPARSE_SPARSE_BACKEND_H_
