// Which backend takes a sparse-attention call (core/src/sparse/sparse_backend.h): the CPU decision
// for CPU tensors, the CUDA and fallback decisions from the facts of inputs that cannot be
// allocated here (CUDA tensors), the facts read from tensors, and the dispatch of the CPU and
// tensor-op backends, which must agree.
#include "sparse/sparse_backend.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <cmath>

#include "attnkit/sparse/masks.h"
#include "cuda/kernels.h"

namespace attnkit::sparse {
namespace {

constexpr SparseBackend kCpu = SparseBackend::kCpu;
constexpr SparseBackend kCuda = SparseBackend::kCuda;
constexpr SparseBackend kTensorOps = SparseBackend::kTensorOps;

// The facts of inputs the CUDA kernels take: one CUDA device, bfloat16, head dim 64.
SparseInputs CudaInputs() {
  SparseInputs in;
  in.device = at::Device(at::kCUDA, 0);
  in.dtype = at::kBFloat16;
  in.head_dim = in.value_dim = 64;
  return in;
}

TEST(SparseBackend, CpuTensorsTakeTheCpuKernels) {
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    at::Tensor q = at::randn({4, 64, 64}).to(dtype), k = at::randn({2, 128, 64}).to(dtype);
    at::Tensor v = at::randn({2, 128, 64}).to(dtype);
    EXPECT_EQ(ChooseAttentionBackend(q, k, v, 128), kCpu);
    EXPECT_EQ(ChooseEstimateBackend(q, k, 128, 8), kCpu);
    EXPECT_EQ(ChooseShapeListsBackend(q), kCpu);
  }
  EXPECT_EQ(ChooseSelectionBackend(at::Device(at::kCPU)), kCpu);
  // Whether the CUDA kernels are built does not matter for CPU inputs.
  SparseInputs cpu = CudaInputs();
  cpu.device = at::Device(at::kCPU);
  for (bool built : {false, true}) {
    EXPECT_EQ(ChooseAttentionBackend(cpu, 128, built), kCpu);
    EXPECT_EQ(ChooseEstimateBackend(cpu, 128, 8, built), kCpu);
    EXPECT_EQ(ChooseShapeListsBackend(cpu.device, built), kCpu);
  }
}

TEST(SparseBackend, CudaInputsTakeTheCudaKernelsWhereTheySupportThem) {
  const SparseInputs in = CudaInputs();
  EXPECT_EQ(ChooseAttentionBackend(in, 128, /*cuda_built=*/true), kCuda);
  EXPECT_EQ(ChooseAttentionBackend(in, 256, true), kCuda);
  EXPECT_EQ(ChooseEstimateBackend(in, 128, 8, true), kCuda);   // cell width 16
  EXPECT_EQ(ChooseEstimateBackend(in, 128, 16, true), kCuda);  // cell width 8
  EXPECT_EQ(ChooseShapeListsBackend(in.device, true), kCuda);
  SparseInputs half = in;
  half.dtype = at::kHalf;
  half.head_dim = half.value_dim = 128;
  EXPECT_EQ(ChooseAttentionBackend(half, 128, true), kCuda);
  EXPECT_EQ(ChooseEstimateBackend(half, 128, 8, true), kCuda);
}

TEST(SparseBackend, OtherDeviceInputsFallBackToTensorOps) {
  const SparseInputs in = CudaInputs();
  // A build without the CUDA kernels: every device input runs as ATen ops, and the A-/Tri-shape
  // masks are built on the host.
  EXPECT_EQ(ChooseAttentionBackend(in, 128, /*cuda_built=*/false), kTensorOps);
  EXPECT_EQ(ChooseEstimateBackend(in, 128, 8, false), kTensorOps);
  EXPECT_EQ(ChooseShapeListsBackend(in.device, false), kCpu);
  // Inputs the kernels do not support.
  auto attention = [&](auto change, int64_t block_size = 128) {
    SparseInputs changed = in;
    change(changed);
    return ChooseAttentionBackend(changed, block_size, true);
  };
  EXPECT_EQ(attention([](SparseInputs& s) { s.dtype = at::kFloat; }), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs& s) { s.head_dim = s.value_dim = 96; }), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs& s) { s.value_dim = 128; }), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs& s) { s.one_dtype = false; }), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs& s) { s.one_device = false; }), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs&) {}, /*block_size=*/64), kTensorOps);
  EXPECT_EQ(attention([](SparseInputs& s) { s.device = at::Device(c10::DeviceType::Meta); }),
            kTensorOps);
  // The estimate: dtype, head dim and cell width (block_size / stride a multiple of 8); the value
  // head dim and the attention's block rule do not matter.
  SparseInputs estimate = in;
  estimate.value_dim = 32;
  EXPECT_EQ(ChooseEstimateBackend(estimate, 64, 8, true), kCuda);   // cell width 8
  EXPECT_EQ(ChooseEstimateBackend(in, 128, 32, true), kTensorOps);  // cell width 4
  estimate = in;
  estimate.dtype = at::kFloat;
  EXPECT_EQ(ChooseEstimateBackend(estimate, 128, 8, true), kTensorOps);
  estimate = in;
  estimate.head_dim = 32;
  EXPECT_EQ(ChooseEstimateBackend(estimate, 128, 8, true), kTensorOps);
  // The block selection runs as tensor ops wherever the scores are not on the CPU.
  EXPECT_EQ(ChooseSelectionBackend(in.device), kTensorOps);
}

TEST(SparseBackend, DescribesTheInputs) {
  at::Tensor q = at::zeros({4, 8, 64}, at::kBFloat16), k = at::zeros({2, 8, 64}, at::kBFloat16);
  at::Tensor v = at::zeros({2, 8, 32}, at::kBFloat16);
  SparseInputs in = DescribeInputs(q, k, &v);
  EXPECT_TRUE(in.device.is_cpu());
  EXPECT_EQ(in.dtype, at::kBFloat16);
  EXPECT_TRUE(in.one_dtype);
  EXPECT_TRUE(in.one_device);
  EXPECT_EQ(in.head_dim, 64);
  EXPECT_EQ(in.value_dim, 32);
  EXPECT_EQ(DescribeInputs(q, k).value_dim, 64);  // no v: the head dim
  EXPECT_FALSE(DescribeInputs(q, k.to(at::kFloat), &v).one_dtype);
  const at::Tensor v_half = v.to(at::kHalf);
  EXPECT_FALSE(DescribeInputs(q, k, &v_half).one_dtype);
  // Undefined or misshapen tensors give facts no device kernel takes (the kernel that takes the
  // call reports the error).
  const at::Tensor undefined;
  EXPECT_FALSE(DescribeInputs(q, undefined, &v).one_device);
  EXPECT_EQ(DescribeInputs(q.view({4, 512}), k, &v).head_dim, 0);
  EXPECT_EQ(DescribeInputs(q, k, &undefined).value_dim, 0);
  EXPECT_TRUE(DescribeInputs(undefined, k).device.is_cpu());
  EXPECT_EQ(ChooseAttentionBackend(undefined, k, v, 128), kCpu);
}

TEST(SparseBackend, CpuAndTensorOpsGiveTheSameAttention) {
  at::manual_seed(3);
  at::Tensor q = at::randn({4, 80, 16}), k = at::randn({2, 112, 16}), v = at::randn({2, 112, 8});
  auto grid = BlockGrid::Make(80, 112, 16);
  ASSERT_TRUE(grid.ok());
  const at::Tensor mask = AShapeMask(*grid, 16, 32);
  auto cpu = RunAttention(kCpu, q, k, v, mask, 16, 0.25);
  auto ops = RunAttention(kTensorOps, q, k, v, mask, 16, 0.25);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  ASSERT_TRUE(ops.ok()) << ops.status();
  EXPECT_EQ(cpu->sizes(), (std::vector<int64_t>{4, 80, 8}));
  EXPECT_LE((*cpu - *ops).abs().max().item<double>(), 1e-5);
  // Both backends check their inputs.
  EXPECT_FALSE(RunAttention(kCpu, q, k, v, mask, 16, NAN).ok());
  EXPECT_FALSE(RunAttention(kTensorOps, q, k, v, mask, 16, NAN).ok());

  auto est_cpu = RunEstimate(kCpu, q, k, 16, 4);
  auto est_ops = RunEstimate(kTensorOps, q, k, 16, 4);
  ASSERT_TRUE(est_cpu.ok()) << est_cpu.status();
  ASSERT_TRUE(est_ops.ok()) << est_ops.status();
  EXPECT_LE((*est_cpu - *est_ops).abs().max().item<double>(), 2e-5);
}

TEST(SparseBackend, ShapeMaskOnTheHostIsTheMasksOfMasksH) {
  SparseOptions o;
  o.mode = SparseMode::kTriShape;
  o.block_size = 16;
  o.sink_size = 16;
  o.recent_size = 32;
  o.last_query_size = 20;
  auto grid = BlockGrid::Make(100, 130, 16);
  ASSERT_TRUE(grid.ok());
  auto tri = RunShapeMask(kCpu, o, 100, 130, at::Device(at::kCPU));
  ASSERT_TRUE(tri.ok()) << tri.status();
  EXPECT_TRUE(tri->equal(TriShapeMask(*grid, 16, 32, 20)));
  o.mode = SparseMode::kAShape;
  auto a = RunShapeMask(kCpu, o, 100, 130, at::Device(at::kCPU));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->equal(AShapeMask(*grid, 16, 32)));
  o.mode = SparseMode::kDense;
  EXPECT_FALSE(RunShapeMask(kCpu, o, 100, 130, at::Device(at::kCPU)).ok());
}

TEST(SparseBackend, TheCudaBackendOfABuildWithoutCudaSaysSo) {
  if (cuda::Compiled()) GTEST_SKIP() << "this build has the CUDA kernels";
  at::Tensor q = at::randn({2, 32, 64}), k = at::randn({2, 32, 64}), v = at::randn({2, 32, 64});
  const at::Tensor mask = at::ones({1, 1, 1}, at::kBool);
  auto out = RunAttention(kCuda, q, k, v, mask, 128, 0.125);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnimplemented) << out.status();
  EXPECT_EQ(RunEstimate(kCuda, q, k, 128, 8).status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace attnkit::sparse
