// H2O/SnapKV scores accumulated on the GPU (cuda::AccumulateScoreRows, issue 20): the kernel
// must give the host's AddRowsInto bits, and a policy fed CUDA observations must keep exactly what
// one fed the same observations on the CPU keeps (the CPU side: tests/cpp/eviction/
// device_scores_test.cc).
#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "../eviction/score_driver.h"
#include "eviction/scorers.h"

namespace attnkit {
namespace {

using score_driver::kConfigs;
using score_driver::Make;
using score_driver::Outcome;
using score_driver::Rows;

TEST(DeviceScoresTest, CudaAccumulationHasTheHostBits) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  const at::Device gpu(at::kCUDA, 0);
  for (int per_row : {1, 4, 32}) {
    const int rows = 3, S = 5;
    const int64_t K = 1000 + per_row;
    const at::Tensor a = Rows(rows * per_row, 1, K, per_row).view({rows * per_row, K});
    const std::vector<int64_t> fresh = {K - S, K - S - 7, 0}, prev = {K - S - 1, 100, 0};
    at::Tensor start = at::rand({rows, K + 9}, at::TensorOptions().dtype(at::kDouble));
    at::Tensor want = start.clone();
    for (int r = 0; r < rows; ++r) {
      std::vector<double> sum(fresh[r], 0.0);
      eviction::AddRowsInto(sum.data(), a.data_ptr<float>() + r * per_row * K + S, K, per_row,
                            fresh[r]);
      double* w = want.data_ptr<double>() + r * want.size(1);
      for (int64_t i = 0; i < fresh[r]; ++i) w[i] = sum[i] + (i < prev[r] ? w[i] : 0.0);
    }
    at::Tensor got = start.to(gpu);
    ASSERT_TRUE(cuda::AccumulateScoreRows(got, a.to(gpu), per_row, S, fresh, prev).ok());
    got = got.cpu();
    EXPECT_EQ(
        std::memcmp(got.data_ptr<double>(), want.data_ptr<double>(), want.numel() * sizeof(double)),
        0)
        << "per_row " << per_row;
  }
  at::Tensor bad = at::zeros({2, 4}, at::TensorOptions().dtype(at::kDouble).device(gpu));
  auto status = cuda::AccumulateScoreRows(bad, at::zeros({2, 8}, bad.options().dtype(at::kFloat)),
                                          1, 0, {5, 1}, {0, 0});
  EXPECT_FALSE(status.ok());  // fresh past the capacity
#endif
}

TEST(DeviceScoresTest, CudaObservationsKeepWhatCpuObservationsKeep) {
  ATTNKIT_REQUIRE_GPU();
#ifdef ATTNKIT_WITH_CUDA
  ASSERT_TRUE(eviction::ScoresFollowObservation(at::Device(at::kCUDA, 0)));
  std::vector<const char*> configs(std::begin(kConfigs), std::end(kConfigs));
  configs.insert(configs.end(), std::begin(score_driver::kRowConfigs),
                 std::end(score_driver::kRowConfigs));
  for (const char* config : configs) {
    SCOPED_TRACE(config);
    auto host = Make(config, 8, 2);
    const Outcome want = score_driver::Drive(*host, 8, 2, 40, 30, 2, at::kCPU);
    auto device = Make(config, 8, 2);
    const Outcome got = score_driver::Drive(*device, 8, 2, 40, 30, 2, at::Device(at::kCUDA, 0));
    ASSERT_EQ(got.kept.size(), want.kept.size());
    for (size_t i = 0; i < want.kept.size(); ++i) ASSERT_EQ(got.kept[i], want.kept[i]) << i;
    EXPECT_EQ(got.state, want.state);
  }
#endif
}

}  // namespace
}  // namespace attnkit
