// Dense float32 building blocks of CDPruner's kernel, with the reference's rounding spelled out so
// that results are bit-identical on every machine and libtorch build (the reference's greedy picks
// past the kernel's rank are decided by rounding, so the conformance cases need every bit):
// - row norms accumulate x*x in 8 lanes with fused multiply-adds (lane l takes elements
//   l, l+8, ...), then add the lanes in order, then the tail (fused), then sqrt;
// - dot products run sequentially over k, each product rounded before it is added (no FMA).
// Reference implementations: at::linalg_vector_norm and at::matmul (equal up to rounding); the
// tests also check the exact rounding against scalar loops.
#ifndef ATTNKIT_KERNELS_CPU_VISUAL_LINALG_H_
#define ATTNKIT_KERNELS_CPU_VISUAL_LINALG_H_

#include <cstdint>
#include <functional>

namespace attnkit::kernels {

// Threads for visual selection: ATen's intra-op count, or one per hardware thread when ATen runs
// single-threaded (e.g. a libtorch built without OpenMP, where BLAS still uses every core).
int VisualThreads();

// Runs body(0) .. body(num_threads - 1), body(0) on the calling thread, the others on new threads
// (inline when a thread cannot be started); returns when all are done.
void RunOnThreads(int num_threads, const std::function<void(int)>& body);

// out[i] = x[i] / ||x[i]|| for the n rows of x (d floats each, row stride `ldx`); a zero row stays
// zero. `out` is n x d (row stride d); `out_t`, when not NULL, receives the transpose (d x n).
void NormalizeRowsExact(const float* x, int64_t n, int64_t d, int64_t ldx, float* out,
                        float* out_t);

// C[a][b] = sum over k in order of (A[a][k] * B[b][k]) for a < m, b < n: A is m x k (row stride
// `lda`), B is given transposed, `bt` k x n (row stride `ldbt`), C is m x n (row stride `ldc`).
// With `symmetric` (A and B the same matrix, m == n) only the upper triangle is computed and
// mirrored (the products commute, so the result is the same). B is packed into 16-column
// panels; k is split into passes that resume from C's partial sums (the same rounding). Splits
// rows over `num_threads` threads.
void SequentialDotGemm(const float* a, int64_t lda, const float* bt, int64_t ldbt, int64_t m,
                       int64_t n, int64_t k, float* c, int64_t ldc, bool symmetric,
                       int num_threads);

// sum(x[0..n)) in the order of ATen's CPU sum of a contiguous row with 8-float vectors (as the
// reference's mean): vectors of 8 go to 4 interleaved vector accumulators (vector v to v % 4,
// leftovers to accumulator 0), which are added in order; the scalar tail is summed first, then the
// 8 lanes. Rows shorter than 8 are summed as scalars with the same 4-way interleave.
float AtenOrderSum(const float* x, int64_t n);

// out[i] = exp(x[i]) for i < n (out may alias x), rounded as ATen's vectorized CPU exp of the
// reference (SLEEF's expf_u10 with fused multiply-adds: q = rint(x / ln 2), s = x - q ln 2 in two
// fused steps, a degree-5 polynomial by Horner's rule in fused steps, 1 + (s*s * u + s), times
// 2^q; 0 below -104, +inf above 100), so that the result does not depend on the libtorch build.
// Within 1 ulp of the true exp. Reference implementation: at::exp.
void ExpU10(const float* x, int64_t n, float* out);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_KERNELS_CPU_VISUAL_LINALG_H_
