#include "visual/visual_math.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>

namespace attnkit::visual {

at::Tensor NormalizeRows(const at::Tensor& x) {
  at::Tensor norm = at::linalg_vector_norm(x, 2, at::IntArrayRef{-1}, /*keepdim=*/true);
  // A zero row divided by 1 stays zero; every other row is divided by its norm as the reference.
  return x / at::where(norm == 0, at::ones_like(norm), norm);
}

at::Tensor Relevance(const at::Tensor& embeds, const at::Tensor& text, bool positive) {
  at::Tensor e = NormalizeRows(embeds).unsqueeze(0);      // [1, N, C]
  at::Tensor t = NormalizeRows(text);                     // [M, C]
  at::Tensor rel = at::matmul(e, t.t());                  // [1, N, M]
  rel = positive ? rel.mean(-1) : at::neg(rel).mean(-1);  // [1, N]
  at::Tensor lo = std::get<0>(rel.min(1, /*keepdim=*/true));
  at::Tensor hi = std::get<0>(rel.max(1, /*keepdim=*/true));
  rel = (rel - lo) / (hi - lo + 1e-6);
  return rel.squeeze(0);
}

at::Tensor RelevanceFast(const at::Tensor& embeds, const at::Tensor& text, bool positive) {
  // mean_m cos(e_n, t_m) = (e_n . mean_m t_m/|t_m|) / |e_n|: one pass for the norms and one GEMV,
  // no normalized copy of the [N, C] embeddings.
  at::Tensor mean_text = NormalizeRows(text).mean(0);                                // [C]
  at::Tensor norms = at::linalg_vector_norm(embeds, 2, at::IntArrayRef{-1}, false);  // [N]
  at::Tensor rel = at::mv(embeds, mean_text) / at::where(norms == 0, at::ones_like(norms), norms);
  if (!positive) rel = at::neg(rel);
  return (rel - rel.min()) / (rel.max() - rel.min() + 1e-6);
}

at::Tensor ApplyTheta(const at::Tensor& relevance, double theta) {
  if (theta == 1.0) return relevance;
  const double alpha = theta / (2 * (1 - theta));
  return at::exp(alpha * relevance);
}

at::Tensor CosineSimilarity(const at::Tensor& features) {
  at::Tensor x = NormalizeRows(features);
  return at::matmul(x, x.t());
}

}  // namespace attnkit::visual
