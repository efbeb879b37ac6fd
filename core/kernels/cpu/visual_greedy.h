// CPU kernels of visual token selection: greedy MAP inference of a DPP (CDPruner) and greedy
// max-min diversity (DivPrune). Plain C++ over float32 buffers (no ATen), compiled for
// x86-64-v3 and written to vectorize. Reference implementations (plain ATen) are in
// core/src/visual/visual_reference.h; tests compare the two.
#ifndef ATTNKIT_KERNELS_CPU_VISUAL_GREEDY_H_
#define ATTNKIT_KERNELS_CPU_VISUAL_GREEDY_H_

#include <cstdint>

namespace attnkit::kernels {

// Floats of scratch DppGreedyMap needs for n items and k picks: the k x n Cholesky rows plus d^2.
inline int64_t DppGreedyMapWorkSize(int64_t n, int64_t k) { return (k + 1) * n; }

// Greedy MAP of the DPP with kernel L (n x n), exactly
// as the reference (docs/algorithms.md 3.4): d2 = diag(L); per step j = argmax d2 (first on ties,
// NaN counts as largest like torch.argmax); e = (L[j] - sum_t c_t[j] c_t) / sqrt(d2[j] + 1e-5) (for
// the first step L[j] / sqrt(L[j,j] + 1e-5)); c_i = e; d2 -= e*e; d2[j] = -inf. The sum over t
// adds the rounded products in pick order (no FMA), as the reference's einsum; the update rounds
// e*e before subtracting.
// With `guard`, stops before step i >= 1 when d2[j] < 1e-10.
// L is `kernel` (row-major, row stride `ld` floats) when `scale` is NULL; otherwise L is the
// conditional kernel L[a][b] = (scale[a] * kernel[a][b]) * scale[b], formed on the fly for the rows
// the greedy reads (rounded exactly as the reference's broadcast products), so the scaled n x n
// matrix is never written.
// `work` holds DppGreedyMapWorkSize(n, k) floats. Writes the picks in pick order to `order` and
// returns their number (k unless the guard stopped early). Requires 1 <= k <= n.
// `num_threads` > 1 splits every step over the items (worth it for large n).
int64_t DppGreedyMap(const float* kernel, const float* scale, int64_t n, int64_t ld, int64_t k,
                     bool guard, float* work, int64_t* order, int num_threads = 1);

// Greedy max-min diversity (DivPrune) over distances D = 1 - S, S the n x n cosine similarity
// (row stride `ld`): the first pick maximizes the second-smallest entry of its column of D (its
// nearest-neighbour distance, the smallest being itself), every later pick maximizes
// min over picked rows s of D[s][i] among the items not picked yet (first on ties).
// `work` holds 2 * n floats. Writes k picks in pick order. Requires 1 <= k <= n.
void MaxMinDiversity(const float* similarity, int64_t n, int64_t ld, int64_t k, float* work,
                     int64_t* order);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_KERNELS_CPU_VISUAL_GREEDY_H_
