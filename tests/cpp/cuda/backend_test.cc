// The backend choices of core/src/sparse/sparse_backend.h and core/src/visual/visual_backend.h on
// real CUDA tensors: the facts read from them and the kernel each kind of input gets (the CUDA
// kernels for bfloat16/float16 with head dim 64 or 128 and blocks of 128, ATen ops otherwise).
// Skips without a GPU or without the CUDA kernels; needs no #ifdef (cuda/kernels.h answers).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "attnkit/config.h"
#include "cuda/kernels.h"
#include "sparse/sparse_backend.h"
#include "visual/visual_backend.h"

namespace attnkit {
namespace {

using sparse::SparseBackend;

#define ATTNKIT_SKIP_WITHOUT_GPU()                                                   \
  do {                                                                               \
    if (!cuda::Compiled()) GTEST_SKIP() << "attnkit was built without CUDA kernels"; \
    if (!cuda::Available()) GTEST_SKIP() << "no CUDA device present";                \
  } while (0)

at::Tensor Cuda(std::initializer_list<int64_t> shape, at::ScalarType dtype) {
  return at::randn(shape, at::TensorOptions().device(at::kCUDA).dtype(dtype));
}

TEST(CudaBackend, SparseCallsTakeTheCudaKernelsWhereTheySupportThem) {
  ATTNKIT_SKIP_WITHOUT_GPU();
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
    for (int64_t d : {64, 128}) {
      at::Tensor q = Cuda({4, 256, d}, dtype), k = Cuda({2, 256, d}, dtype);
      at::Tensor v = Cuda({2, 256, d}, dtype);
      const sparse::SparseInputs in = sparse::DescribeInputs(q, k, &v);
      EXPECT_TRUE(in.device.is_cuda());
      EXPECT_TRUE(in.one_device && in.one_dtype);
      EXPECT_EQ(in.head_dim, d);
      EXPECT_EQ(sparse::ChooseAttentionBackend(q, k, v, 128), SparseBackend::kCuda);
      EXPECT_EQ(sparse::ChooseEstimateBackend(q, k, 128, 8), SparseBackend::kCuda);
      EXPECT_EQ(sparse::ChooseShapeListsBackend(q), SparseBackend::kCuda);
      // Blocks the attention kernel does not take, and a cell width the estimate does not take.
      EXPECT_EQ(sparse::ChooseAttentionBackend(q, k, v, 64), SparseBackend::kTensorOps);
      EXPECT_EQ(sparse::ChooseEstimateBackend(q, k, 128, 32), SparseBackend::kTensorOps);
    }
  }
  at::Tensor q = Cuda({4, 256, 64}, at::kFloat), k = Cuda({2, 256, 64}, at::kFloat);
  at::Tensor v = Cuda({2, 256, 64}, at::kFloat);
  EXPECT_EQ(sparse::ChooseAttentionBackend(q, k, v, 128), SparseBackend::kTensorOps);
  EXPECT_EQ(sparse::ChooseEstimateBackend(q, k, 128, 8), SparseBackend::kTensorOps);
  EXPECT_EQ(sparse::ChooseShapeListsBackend(q), SparseBackend::kCuda);  // lengths only
  at::Tensor qb = Cuda({4, 256, 96}, at::kBFloat16), kb = Cuda({2, 256, 96}, at::kBFloat16);
  at::Tensor vb = Cuda({2, 256, 96}, at::kBFloat16);
  EXPECT_EQ(sparse::ChooseAttentionBackend(qb, kb, vb, 128), SparseBackend::kTensorOps);
  at::Tensor vmix = Cuda({2, 256, 64}, at::kHalf), q64 = Cuda({4, 256, 64}, at::kBFloat16),
             k64 = Cuda({2, 256, 64}, at::kBFloat16);
  EXPECT_EQ(sparse::ChooseAttentionBackend(q64, k64, vmix, 128), SparseBackend::kTensorOps);
  EXPECT_EQ(sparse::ChooseSelectionBackend(q64.device()), SparseBackend::kTensorOps);
}

TEST(CudaBackend, FastVisualSelectionRunsOnTheDevice) {
  ATTNKIT_SKIP_WITHOUT_GPU();
  VisualOptions o;
  o.num_keep_tokens = 4;
  const at::Device device = Cuda({2, 2}, at::kFloat).device();
  EXPECT_EQ(visual::ChooseVisualBackend(device, o), visual::VisualBackend::kCpu);
  o.fast_kernel = true;
  EXPECT_EQ(visual::ChooseVisualBackend(device, o), visual::VisualBackend::kTensorOps);
}

}  // namespace
}  // namespace attnkit
