#include "visual/cdpruner_kernel.h"

#include <ATen/Functions.h>

#include <algorithm>

#include "cpu/visual_linalg.h"

namespace attnkit::visual {

at::Tensor ExactRelevance(const at::Tensor& embeds, const at::Tensor& text, bool positive,
                          int num_threads) {
  const int64_t n = embeds.size(0), c = embeds.size(1), m = text.size(0);
  at::Tensor e = at::empty({n, c}, embeds.options());
  at::Tensor t = at::empty({m, c}, embeds.options());
  at::Tensor tt = at::empty({c, m}, embeds.options());
  kernels::NormalizeRowsExact(embeds.data_ptr<float>(), n, c, c, e.data_ptr<float>(), nullptr);
  kernels::NormalizeRowsExact(text.data_ptr<float>(), m, c, c, t.data_ptr<float>(),
                              tt.data_ptr<float>());
  at::Tensor cos = at::empty({n, m}, embeds.options());
  kernels::SequentialDotGemm(e.data_ptr<float>(), c, tt.data_ptr<float>(), m, n, m, c,
                             cos.data_ptr<float>(), m, /*symmetric=*/false, num_threads);
  at::Tensor rel = at::empty({n}, embeds.options());
  float* r = rel.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  // mean_m(-cos): negation is exact, so the sum of negated values is the negated sum.
  for (int64_t i = 0; i < n; ++i) {
    const float sum = kernels::AtenOrderSum(cp + i * m, m);
    r[i] = (positive ? sum : -sum) / static_cast<float>(m);
  }
  const float lo = *std::min_element(r, r + n), hi = *std::max_element(r, r + n);
  const float denom = (hi - lo) + 1e-6f;
  for (int64_t i = 0; i < n; ++i) r[i] = (r[i] - lo) / denom;
  return rel;
}

at::Tensor ExactSimilarity(const at::Tensor& features, int num_threads) {
  const int64_t n = features.size(0), d = features.size(1);
  at::Tensor x = at::empty({n, d}, features.options());
  at::Tensor xt = at::empty({d, n}, features.options());
  kernels::NormalizeRowsExact(features.data_ptr<float>(), n, d, d, x.data_ptr<float>(),
                              xt.data_ptr<float>());
  at::Tensor s = at::empty({n, n}, features.options());
  kernels::SequentialDotGemm(x.data_ptr<float>(), d, xt.data_ptr<float>(), n, n, n, d,
                             s.data_ptr<float>(), n, /*symmetric=*/true, num_threads);
  return s;
}

at::Tensor ExactApplyTheta(const at::Tensor& relevance, double theta) {
  if (theta == 1.0) return relevance;
  const float alpha = static_cast<float>(theta / (2 * (1 - theta)));
  const int64_t n = relevance.numel();
  at::Tensor out = at::empty({n}, relevance.options());
  const float* r = relevance.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) o[i] = r[i] * alpha;
  kernels::ExpU10(o, n, o);
  return out;
}

}  // namespace attnkit::visual
