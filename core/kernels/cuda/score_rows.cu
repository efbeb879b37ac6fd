// H2O/SnapKV score rows accumulated on the device (cuda/kernels.h AccumulateScoreRows): one thread
// per (row, token), the row's attention rows added in order in float64, then the previous score.
// These are the additions of the host's AddRowsInto followed by `fresh[i] += prev[i]`, so the bits
// are the host's and CUDA and CPU sessions keep the same tokens.
#include "launch.h"

namespace attnkit::cuda_kernels {
namespace {

constexpr int kThreads = 256;

__global__ void AccumulateScoreRowsKernel(ScoreRowsArgs a, int row0) {
  const int r = row0 + static_cast<int>(blockIdx.y);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.fresh[r - row0]) return;
  const float* src =
      a.attention + static_cast<int64_t>(r) * a.sources_per_row * a.attention_stride + a.start + i;
  double acc = 0.0;
  for (int j = 0; j < a.sources_per_row; ++j) {
    acc += static_cast<double>(src[static_cast<int64_t>(j) * a.attention_stride]);
  }
  double* dst = a.scores + static_cast<int64_t>(r) * a.score_stride + i;
  if (i < a.prev[r - row0]) acc += *dst;
  *dst = acc;
}

}  // namespace

cudaError_t LaunchAccumulateScoreRows(const ScoreRowsArgs& args, int row0, int rows,
                                      int64_t max_fresh, cudaStream_t stream) {
  if (rows <= 0 || max_fresh <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((max_fresh + kThreads - 1) / kThreads),
                  static_cast<unsigned>(rows));
  AccumulateScoreRowsKernel<<<grid, kThreads, 0, stream>>>(args, row0);
  return cudaGetLastError();
}

}  // namespace attnkit::cuda_kernels
