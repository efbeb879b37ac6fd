#include "session/rope.h"

#include <cmath>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "session/page_pool.h"

namespace attnkit::session {
namespace {

template <typename T>
void Rotate(T* x, int d, int64_t delta, const RopeOptions& rope) {
  const int half = d / 2;
  for (int j = 0; j < half; ++j) {
    const double inv_freq = std::pow(rope.theta, -2.0 * j / d);
    const double angle = static_cast<double>(delta) * inv_freq;
    const double c = std::cos(angle), s = std::sin(angle);
    const int a = rope.interleaved ? 2 * j : j;
    const int b = rope.interleaved ? 2 * j + 1 : j + half;
    const double xa = static_cast<float>(x[a]), xb = static_cast<float>(x[b]);
    x[a] = static_cast<T>(static_cast<float>(xa * c - xb * s));
    x[b] = static_cast<T>(static_cast<float>(xa * s + xb * c));
  }
}

}  // namespace

void RotateRow(void* row, at::ScalarType dtype, int head_dim, int64_t delta,
               const RopeOptions& rope) {
  switch (dtype) {
    case at::kHalf:
      return Rotate(static_cast<c10::Half*>(row), head_dim, delta, rope);
    case at::kBFloat16:
      return Rotate(static_cast<c10::BFloat16*>(row), head_dim, delta, rope);
    default:
      return Rotate(static_cast<float*>(row), head_dim, delta, rope);
  }
}

void RotateRows(at::Tensor all, const std::vector<int64_t>& rows, const std::vector<double>& deltas,
                const RopeOptions& rope, int head_dim) {
  if (rows.empty()) return;
  const int half = head_dim / 2;
  std::vector<double> inv_freq(half);
  std::vector<int64_t> first(half), second(half);
  for (int j = 0; j < half; ++j) {
    inv_freq[j] = std::pow(rope.theta, -2.0 * j / head_dim);
    first[j] = rope.interleaved ? 2 * j : j;
    second[j] = rope.interleaved ? 2 * j + 1 : j + half;
  }
  const at::Device device = all.device();
  const auto doubles = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor index = IndexTensor(rows, device);
  const at::Tensor a = IndexTensor(first, device), b = IndexTensor(second, device);
  const at::Tensor x = all.index_select(0, index).to(at::kFloat);
  const at::Tensor angle = at::tensor(deltas, doubles).to(device).view({-1, 1}) *
                           at::tensor(inv_freq, doubles).to(device).view({1, half});
  const at::Tensor c = angle.cos(), sn = angle.sin();
  const at::Tensor xa = x.index_select(1, a).to(at::kDouble);
  const at::Tensor xb = x.index_select(1, b).to(at::kDouble);
  at::Tensor y = x.clone();
  y.index_copy_(1, a, (xa * c - xb * sn).to(at::kFloat));
  y.index_copy_(1, b, (xa * sn + xb * c).to(at::kFloat));
  all.index_copy_(0, index, y.to(all.scalar_type()));
}

}  // namespace attnkit::session
