// Borrowed DLTensor views of at::Tensor for tests and tools that call the C ABI.
#ifndef ATTNKIT_TESTS_COMMON_DLPACK_UTIL_H_
#define ATTNKIT_TESTS_COMMON_DLPACK_UTIL_H_

#include <vector>

#include <ATen/core/Tensor.h>
#include <dlpack/dlpack.h>

namespace attnkit::testing {

// Keeps shape/strides alive for the DLTensor it hands out; `tensor` must outlive it.
class DLView {
 public:
  explicit DLView(const at::Tensor& tensor) : tensor_(tensor) {
    shape_.assign(tensor.sizes().begin(), tensor.sizes().end());
    strides_.assign(tensor.strides().begin(), tensor.strides().end());
    dl_.data = tensor.data_ptr();
    dl_.device = {tensor.is_cuda() ? kDLCUDA : kDLCPU,
                  tensor.is_cuda() ? static_cast<int32_t>(tensor.device().index()) : 0};
    dl_.ndim = static_cast<int32_t>(tensor.dim());
    switch (tensor.scalar_type()) {
      case at::kFloat:
        dl_.dtype = {kDLFloat, 32, 1};
        break;
      case at::kHalf:
        dl_.dtype = {kDLFloat, 16, 1};
        break;
      case at::kBFloat16:
        dl_.dtype = {kDLBfloat, 16, 1};
        break;
      case at::kLong:
        dl_.dtype = {kDLInt, 64, 1};
        break;
      case at::kInt:
        dl_.dtype = {kDLInt, 32, 1};
        break;
      case at::kDouble:
        dl_.dtype = {kDLFloat, 64, 1};
        break;
      case at::kBool:
        dl_.dtype = {kDLUInt, 8, 1};
        break;
      default:
        dl_.dtype = {kDLUInt, 8, 1};
        break;
    }
    dl_.shape = shape_.data();
    dl_.strides = strides_.data();
    dl_.byte_offset = 0;
  }
  DLView(const DLView&) = delete;
  DLView& operator=(const DLView&) = delete;
  DLTensor* get() { return &dl_; }
  operator DLTensor*() { return &dl_; }

 private:
  at::Tensor tensor_;
  std::vector<int64_t> shape_, strides_;
  DLTensor dl_{};
};

}  // namespace attnkit::testing

#endif  // ATTNKIT_TESTS_COMMON_DLPACK_UTIL_H_
