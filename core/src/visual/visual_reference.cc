#include "visual/visual_reference.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include <limits>

#include "visual/visual_math.h"

namespace attnkit::visual {

at::Tensor ReferenceKernel(const at::Tensor& embeds, const at::Tensor& features,
                           const at::Tensor& text, double theta, bool positive) {
  at::Tensor rel =
      ApplyTheta(Relevance(embeds.to(at::kFloat), text.to(at::kFloat), positive), theta);
  at::Tensor x = NormalizeRows(features.to(at::kFloat)).unsqueeze(0);  // [1, N, D]
  at::Tensor sim = at::matmul(x, x.transpose(1, 2));                   // [1, N, N]
  rel = rel.unsqueeze(0);
  return (rel.unsqueeze(2) * sim * rel.unsqueeze(1)).squeeze(0);
}

std::vector<int64_t> ReferenceGreedyMap(const at::Tensor& kernel_2d, int64_t k, bool guard) {
  at::Tensor kernel = kernel_2d.unsqueeze(0);  // [B = 1, N, N]
  at::Tensor d2 = at::diagonal(kernel, 0, 1, 2).clone();
  const int64_t n = d2.size(1);
  at::Tensor cis = at::zeros({k, 1, n}, kernel.options());
  std::vector<int64_t> order;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = at::argmax(d2, -1).item<int64_t>();
    if (guard && i > 0 && !(d2.select(1, j).item<float>() >= 1e-10f)) break;
    order.push_back(j);
    at::Tensor row = kernel.select(1, j);  // [1, N]
    at::Tensor e;
    if (i == 0) {
      e = row / at::sqrt(row.select(1, j).unsqueeze(1) + 1e-5);
    } else {
      at::Tensor prev = cis.narrow(0, 0, i);  // [i, 1, N]
      at::Tensor proj = at::einsum("tb,tbn->bn", {prev.select(2, j), prev});
      e = (row - proj) / at::sqrt(d2.select(1, j).unsqueeze(-1) + 1e-5);
    }
    cis.select(0, i).copy_(e);
    d2 -= e * e;
    d2.select(1, j).fill_(-std::numeric_limits<float>::infinity());
  }
  return order;
}

std::vector<int64_t> ReferenceDivPrune(const at::Tensor& features, int64_t k) {
  at::Tensor x = NormalizeRows(features.to(at::kFloat));
  at::Tensor dist = 1.0 - at::mm(x, x.t());
  const int64_t n = dist.size(0);
  std::vector<int64_t> order;
  at::Tensor picked = at::zeros({n}, dist.options().dtype(at::kBool));
  for (int64_t i = 0; i < k; ++i) {
    at::Tensor scores;
    if (i == 0) {
      scores = std::get<0>(at::topk(dist, std::min<int64_t>(2, n), 0, /*largest=*/false))
                   .select(0, std::min<int64_t>(1, n - 1));
    } else {
      at::Tensor idx = at::tensor(order, dist.options().dtype(at::kLong));
      scores = std::get<0>(at::index_select(dist, 0, idx).min(0));
      scores = scores.masked_fill(picked, -std::numeric_limits<float>::infinity());
    }
    const int64_t j = at::argmax(scores).item<int64_t>();
    order.push_back(j);
    picked.select(0, j).fill_(true);
  }
  return order;
}

}  // namespace attnkit::visual
