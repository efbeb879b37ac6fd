// CDPruner's relevance and similarity with the reference's exact rounding (built on
// core/kernels/cpu/visual_linalg.h), so that greedy picks match the reference bit for bit.
// Internal to core; visual_math.h holds the plain ATen versions the tests compare against.
#ifndef ATTNKIT_CORE_VISUAL_CDPRUNER_KERNEL_H_
#define ATTNKIT_CORE_VISUAL_CDPRUNER_KERNEL_H_

#include <ATen/core/Tensor.h>

namespace attnkit::visual {

// Relevance [N] of embeds [N, C] to text [M, C] (contiguous float32 CPU): the mean over m of
// -cos (+cos when `positive`), min-max normalized with 1e-6 in the denominator.
at::Tensor ExactRelevance(const at::Tensor& embeds, const at::Tensor& text, bool positive,
                          int num_threads);

// Cosine similarity [N, N] of the rows of features [N, Dv] (contiguous float32 CPU): one
// (symmetric) GEMM of the normalized rows.
at::Tensor ExactSimilarity(const at::Tensor& features, int num_threads);

// exp(alpha * relevance) with alpha = theta / (2 (1 - theta)) rounded to float, as the
// reference's scalar product and exp (kernels::ExpU10); `relevance` itself when theta is 1.
// Contiguous float32 CPU [N].
at::Tensor ExactApplyTheta(const at::Tensor& relevance, double theta);

}  // namespace attnkit::visual

#endif  // ATTNKIT_CORE_VISUAL_CDPRUNER_KERNEL_H_
