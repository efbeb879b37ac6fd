#include "session/rope.h"

#include <cmath>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

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

// Arena pools: the rows to rotate gathered on the pool's device, rotated there with the host
// formula's arithmetic (angles, cos and sin in double, each result rounded to float, then to the
// storage dtype), and written back.
void RerotateArenaKeys(const PagePool& pool, HeadCache& cache, const RopeOptions& rope,
                       int head_dim) {
  std::vector<int64_t> rows;
  std::vector<double> deltas;
  const int64_t P = pool.page_size();
  for (int64_t i = 0; i < cache.length; ++i) {
    const int64_t delta = i - cache.rotated[i];
    if (delta == 0) continue;
    rows.push_back(pool.KeyRowIndex(cache.pages[i / P], i % P));
    deltas.push_back(static_cast<double>(delta));
    cache.rotated[i] = i;
  }
  if (rows.empty()) return;
  const int half = head_dim / 2;
  std::vector<double> inv_freq(half);
  std::vector<int64_t> first(half), second(half);
  for (int j = 0; j < half; ++j) {
    inv_freq[j] = std::pow(rope.theta, -2.0 * j / head_dim);
    first[j] = rope.interleaved ? 2 * j : j;
    second[j] = rope.interleaved ? 2 * j + 1 : j + half;
  }
  const at::Device device = pool.device();
  const auto doubles = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor index = IndexTensor(rows, device);
  const at::Tensor a = IndexTensor(first, device), b = IndexTensor(second, device);
  at::Tensor all = pool.Rows();
  const at::Tensor x = all.index_select(0, index).to(at::kFloat);
  const at::Tensor angle = at::tensor(deltas, doubles).to(device).view({-1, 1}) *
                           at::tensor(inv_freq, doubles).to(device).view({1, half});
  const at::Tensor c = angle.cos(), sn = angle.sin();
  const at::Tensor xa = x.index_select(1, a).to(at::kDouble);
  const at::Tensor xb = x.index_select(1, b).to(at::kDouble);
  at::Tensor y = x.clone();
  y.index_copy_(1, a, (xa * c - xb * sn).to(at::kFloat));
  y.index_copy_(1, b, (xa * sn + xb * c).to(at::kFloat));
  all.index_copy_(0, index, y.to(pool.dtype()));
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

void RerotateKeys(const PagePool& pool, HeadCache& cache, const RopeOptions& rope, int head_dim) {
  if (pool.arena()) return RerotateArenaKeys(pool, cache, rope, head_dim);
  for (int64_t i = 0; i < cache.length; ++i) {
    const int64_t delta = i - cache.rotated[i];
    if (delta == 0) continue;
    RotateRow(cache.KeyRow(pool, i), pool.dtype(), head_dim, delta, rope);
    cache.rotated[i] = i;
  }
}

}  // namespace attnkit::session
