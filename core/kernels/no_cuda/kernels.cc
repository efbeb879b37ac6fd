// The CUDA kernel entry points (cuda/kernels.h) in a build without CUDA: CMake compiles this unit
// instead of core/kernels/cuda/. Nothing is compiled in, no device is available, and every kernel
// answers UNIMPLEMENTED, so callers choose a backend at run time with no #ifdef.
#include "cuda/kernels.h"

#include <string>

namespace attnkit::cuda {
namespace {

absl::Status NotBuilt(const char* kernel) {
  return absl::UnimplementedError(
      std::string(kernel) +
      ": this attnkit was built without CUDA (configure with ATTNKIT_CUDA=ON)");
}

}  // namespace

bool Compiled() { return false; }

bool Available() { return false; }

absl::StatusOr<BlockLists> MaskToBlockLists(const at::Tensor&, at::Device) {
  return NotBuilt("MaskToBlockLists");
}

absl::StatusOr<BlockLists> ShapeBlockLists(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                           bool, at::Device, at::Tensor*) {
  return NotBuilt("ShapeBlockLists");
}

absl::StatusOr<at::Tensor> BlockSparseAttention(const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const BlockLists&, int64_t,
                                                double) {
  return NotBuilt("BlockSparseAttention");
}

absl::StatusOr<at::Tensor> BlockSparseAttentionReference(const at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&,
                                                         int64_t, double) {
  return NotBuilt("BlockSparseAttentionReference");
}

absl::StatusOr<at::Tensor> XAttentionEstimate(const at::Tensor&, const at::Tensor&, int64_t,
                                              int64_t) {
  return NotBuilt("XAttentionEstimate");
}

absl::StatusOr<at::Tensor> PagedDecodeAttention(const at::Tensor&, const PagedCache&, double,
                                                at::Tensor*, int64_t, const at::Tensor*) {
  return NotBuilt("PagedDecodeAttention");
}

absl::Status AppendPagedRows(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                             const at::Tensor&, const at::Tensor&) {
  return NotBuilt("AppendPagedRows");
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> DenseDecodeReference(const at::Tensor&,
                                                                       const at::Tensor&,
                                                                       const at::Tensor&, double) {
  return NotBuilt("DenseDecodeReference");
}

absl::Status AccumulateScoreRows(const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                                 const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return NotBuilt("AccumulateScoreRows");
}

}  // namespace attnkit::cuda
