// The ATen pieces of CDPruner shared by the fast path and the reference: row normalization,
// relevance, the theta transform and the conditional kernel. Internal to core.
#ifndef ATTNKIT_CORE_VISUAL_VISUAL_MATH_H_
#define ATTNKIT_CORE_VISUAL_VISUAL_MATH_H_

#include <ATen/core/Tensor.h>

namespace attnkit::visual {

// x / ||x||_2 per row (x float32 [.., N, D]); zero rows stay zero (cosine 0 with everything).
at::Tensor NormalizeRows(const at::Tensor& x);

// Reference relevance: rel = mean_m(-cos(embeds[n], text[m])) (+cos when `positive`), then
// (rel - min) / (max - min + 1e-6). embeds [N, C], text [M, C] float32; returns [N] float32.
at::Tensor Relevance(const at::Tensor& embeds, const at::Tensor& text, bool positive);

// Relevance by the same formula evaluated as one GEMV against the mean normalized text embedding
// (the fast_kernel path; equal up to rounding).
at::Tensor RelevanceFast(const at::Tensor& embeds, const at::Tensor& text, bool positive);

// exp(alpha * rel) with alpha = theta / (2 (1 - theta)) when theta != 1; rel itself otherwise.
at::Tensor ApplyTheta(const at::Tensor& relevance, double theta);

// Cosine similarity of the rows of features [N, D] (float32): one GEMM, [N, N].
at::Tensor CosineSimilarity(const at::Tensor& features);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_VISUAL_MATH_H_
