#include "sparse/sparse_backend.h"

#include <ATen/Functions.h>

#include "attnkit/sparse/masks.h"
#include "attnkit/sparse/sparse_attention.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"
#include "cuda/kernels.h"
#include "util/status_macros.h"

namespace attnkit::sparse {
namespace {

bool HalfPrecision(at::ScalarType dtype) { return dtype == at::kBFloat16 || dtype == at::kHalf; }

// Head dims the CUDA kernels are instantiated for.
bool KernelHeadDim(int64_t d) { return d == 64 || d == 128; }

int64_t LastDim(const at::Tensor& t) { return t.defined() && t.dim() == 3 ? t.size(2) : 0; }

bool Shaped(const SparseOptions& options) {
  return options.mode == SparseMode::kAShape || options.mode == SparseMode::kTriShape;
}

}  // namespace

const char* SparseBackendName(SparseBackend backend) {
  switch (backend) {
    case SparseBackend::kCpu:
      return "cpu";
    case SparseBackend::kCuda:
      return "cuda";
    case SparseBackend::kTensorOps:
      return "tensor_ops";
  }
  return "unknown";
}

SparseInputs DescribeInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor* v) {
  SparseInputs in;
  if (!q.defined()) return in;
  in.device = q.device();
  in.dtype = q.scalar_type();
  in.head_dim = LastDim(q);
  in.value_dim = v != nullptr ? LastDim(*v) : in.head_dim;
  for (const at::Tensor* t : {&k, v}) {
    if (t == nullptr) continue;
    if (!t->defined()) {
      in.one_device = in.one_dtype = false;
      continue;
    }
    in.one_device = in.one_device && t->device() == in.device;
    in.one_dtype = in.one_dtype && t->scalar_type() == in.dtype;
  }
  return in;
}

SparseBackend ChooseAttentionBackend(const SparseInputs& in, int64_t block_size, bool cuda_built) {
  if (in.device.is_cpu()) return SparseBackend::kCpu;
  const bool cuda_takes = cuda_built && in.device.is_cuda() && in.one_device && in.one_dtype &&
                          HalfPrecision(in.dtype) && KernelHeadDim(in.head_dim) &&
                          in.value_dim == in.head_dim && block_size % 128 == 0;
  return cuda_takes ? SparseBackend::kCuda : SparseBackend::kTensorOps;
}

SparseBackend ChooseEstimateBackend(const SparseInputs& in, int64_t block_size, int64_t stride,
                                    bool cuda_built) {
  if (in.device.is_cpu()) return SparseBackend::kCpu;
  const bool cuda_takes = cuda_built && in.device.is_cuda() && in.one_device && in.one_dtype &&
                          HalfPrecision(in.dtype) && KernelHeadDim(in.head_dim) && stride >= 1 &&
                          (block_size / stride) % 8 == 0;
  return cuda_takes ? SparseBackend::kCuda : SparseBackend::kTensorOps;
}

SparseBackend ChooseShapeListsBackend(at::Device device, bool cuda_built) {
  return cuda_built && device.is_cuda() ? SparseBackend::kCuda : SparseBackend::kCpu;
}

SparseBackend ChooseSelectionBackend(at::Device device) {
  return device.is_cpu() ? SparseBackend::kCpu : SparseBackend::kTensorOps;
}

SparseBackend ChooseAttentionBackend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     int64_t block_size) {
  return ChooseAttentionBackend(DescribeInputs(q, k, &v), block_size, cuda::Compiled());
}

SparseBackend ChooseEstimateBackend(const at::Tensor& q, const at::Tensor& k, int64_t block_size,
                                    int64_t stride) {
  return ChooseEstimateBackend(DescribeInputs(q, k), block_size, stride, cuda::Compiled());
}

SparseBackend ChooseShapeListsBackend(const at::Tensor& q) {
  return ChooseShapeListsBackend(q.defined() ? q.device() : at::Device(at::kCPU), cuda::Compiled());
}

absl::StatusOr<at::Tensor> RunAttention(SparseBackend backend, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& mask, int64_t block_size, double scale) {
  switch (backend) {
    case SparseBackend::kCpu:
      // bfloat16 inputs through AVX512-BF16 where the CPU has it, float32 otherwise.
      return kernels::BlockSparseAttentionCpu(q, k, v, mask, block_size, scale,
                                              kernels::SparseGemm::kBf16Dot);
    case SparseBackend::kCuda: {
      ATTNKIT_RETURN_IF_ERROR(kernels::CheckBlockSparseInputs(q, k, v, mask, block_size, scale));
      ATTNKIT_ASSIGN_OR_RETURN(cuda::BlockLists lists, cuda::MaskToBlockLists(mask, q.device()));
      ATTNKIT_ASSIGN_OR_RETURN(at::Tensor out,
                               cuda::BlockSparseAttention(q, k, v, lists, block_size, scale));
      return out.to(at::kFloat);
    }
    case SparseBackend::kTensorOps:
      return BlockSparseAttentionTensorOps(q, k, v, mask, block_size, scale);
  }
  return absl::InternalError("RunAttention: unknown backend");
}

absl::StatusOr<at::Tensor> RunEstimate(SparseBackend backend, const at::Tensor& q,
                                       const at::Tensor& k, int64_t block_size, int64_t stride) {
  switch (backend) {
    case SparseBackend::kCpu:
      return kernels::XAttentionEstimateCpu(q, k, block_size, stride);
    case SparseBackend::kCuda:
      return cuda::XAttentionEstimate(q, k, block_size, stride);
    case SparseBackend::kTensorOps:
      return kernels::XAttentionEstimateReference(q, k, block_size, stride);
  }
  return absl::InternalError("RunEstimate: unknown backend");
}

absl::StatusOr<at::Tensor> RunShapeMask(SparseBackend backend, const SparseOptions& options,
                                        int64_t q_len, int64_t k_len, at::Device device) {
  if (!Shaped(options)) {
    return absl::InternalError("RunShapeMask: the mode is neither A_SHAPE nor TRI_SHAPE");
  }
  const bool tri = options.mode == SparseMode::kTriShape;
  if (backend == SparseBackend::kCuda) {
    at::Tensor mask;
    ATTNKIT_RETURN_IF_ERROR(cuda::ShapeBlockLists(q_len, k_len, options.block_size,
                                                  options.sink_size, options.recent_size,
                                                  options.last_query_size, tri, device, &mask)
                                .status());
    return mask;
  }
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options.block_size));
  const at::Tensor mask =
      tri ? TriShapeMask(grid, options.sink_size, options.recent_size, options.last_query_size)
          : AShapeMask(grid, options.sink_size, options.recent_size);
  return mask.to(device);
}

absl::StatusOr<at::Tensor> RunShapeAttentionCuda(const SparseOptions& options, const at::Tensor& q,
                                                 const at::Tensor& k, const at::Tensor& v,
                                                 double scale, double* density) {
  if (!Shaped(options)) {
    return absl::InternalError("RunShapeAttentionCuda: the mode is neither A_SHAPE nor TRI_SHAPE");
  }
  const int64_t q_len = q.size(1), k_len = k.size(1);
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options.block_size));
  ATTNKIT_ASSIGN_OR_RETURN(
      cuda::BlockLists lists,
      cuda::ShapeBlockLists(q_len, k_len, options.block_size, options.sink_size,
                            options.recent_size, options.last_query_size,
                            options.mode == SparseMode::kTriShape, q.device(), nullptr));
  ATTNKIT_ASSIGN_OR_RETURN(at::Tensor out,
                           cuda::BlockSparseAttention(q, k, v, lists, options.block_size, scale));
  if (density != nullptr) {
    const int64_t causal = grid.CausalBlocks();
    *density = causal == 0 ? 1.0
                           : static_cast<double>(lists.counts.sum().item<int64_t>()) /
                                 static_cast<double>(causal);
  }
  return out.to(at::kFloat);
}

}  // namespace attnkit::sparse
