#include "session/rope.h"

#include <cmath>
#include <vector>

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
  for (int64_t i = 0; i < cache.length; ++i) {
    const int64_t delta = i - cache.rotated[i];
    if (delta == 0) continue;
    RotateRow(cache.KeyRow(pool, i), pool.dtype(), head_dim, delta, rope);
    cache.rotated[i] = i;
  }
}

}  // namespace attnkit::session
