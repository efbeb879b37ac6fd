// Shared helpers of the CUDA kernel tests: the skip rule, random inputs, error measures.
#ifndef ATTNKIT_TESTS_CPP_CUDA_CUDA_TEST_UTIL_H_
#define ATTNKIT_TESTS_CPP_CUDA_CUDA_TEST_UTIL_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#ifdef ATTNKIT_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace attnkit::testing {

#ifdef ATTNKIT_WITH_CUDA
#define ATTNKIT_REQUIRE_GPU()                                                    \
  do {                                                                           \
    if (!::attnkit::cuda::Available()) GTEST_SKIP() << "no CUDA device present"; \
  } while (0)
#else
#define ATTNKIT_REQUIRE_GPU() GTEST_SKIP() << "attnkit was built without CUDA (ATTNKIT_CUDA=OFF)"
#endif

// ||a - b|| / ||b|| in float64.
inline double RelError(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return (x - y).norm().item<double>() / std::max(y.norm().item<double>(), 1e-30);
}
inline double MaxAbsError(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  return (x - y).abs().max().item<double>();
}

// Frees a NaN-filled block of the caching allocator the size of [n] elements of `dtype`, so an
// output allocated next of that size likely starts as NaN: unwritten elements then show.
inline void PoisonAllocator(int64_t n, at::ScalarType dtype) {
  at::Tensor t = at::full({n}, std::numeric_limits<float>::quiet_NaN(),
                          at::TensorOptions().device(at::kCUDA).dtype(dtype));
}

}  // namespace attnkit::testing

#endif  // ATTNKIT_TESTS_CPP_CUDA_CUDA_TEST_UTIL_H_
