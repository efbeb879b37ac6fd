// Block-sparse causal attention on CPU (the prefill kernel of sparse attention) and its plain ATen
// reference. Internal to core: the public entry is attnkit/sparse/sparse_attention.h.
//
// Shapes: q [H, Lq, d], k [Hkv, Lk, d], v [Hkv, Lk, dv] with Hkv dividing H (GQA: query head h
// reads kv head h / (H / Hkv)) and Lq <= Lk: the queries are the last Lq positions of the Lk keys.
// mask: bool [1 or H, ceil(Lq / B), ceil(Lk / B)]; blocks are counted from query 0 and key 0.
// Inside a selected block attention is exact token-level causal attention aligned bottom-right
// (query i sees key j iff j <= i + Lk - Lq); unselected blocks contribute nothing. A query that
// sees no key gets a zero output row. Inputs may be float32, float16 or bfloat16 with any strides;
// accumulation is float32 and the output is float32 [H, Lq, dv].
#ifndef ATTNKIT_CORE_KERNELS_CPU_BLOCK_SPARSE_ATTENTION_H_
#define ATTNKIT_CORE_KERNELS_CPU_BLOCK_SPARSE_ATTENTION_H_

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnkit::kernels {

// How the kernels compute their block products:
// - kBlas (default): at::mm_out / addmm_ on block views; tasks run on the calling thread and the
//   BLAS threads each product itself (OpenBLAS called from several threads at once serializes and
//   oversubscribes: measured 3-5x slower than this).
// - kVectorized: the packed 6x16 AVX2/FMA micro-kernel of sparse_gemm.h, tasks spread over
//   at::get_num_threads() workers (sparse_parallel.h); no BLAS involved.
// On this 2-core Zen 4 machine with OpenBLAS, kBlas measured about 1.5-3x faster end to end
// (`attnkit-bench prefill` times both). Both are tested against the references.
// - kBf16Dot: bfloat16 q, k and v multiplied as they are with AVX512-BF16 dot products
//   (bf16_dot.h), float32 accumulation, the probabilities rounded to bfloat16 before the second
//   product as FlashAttention does; chosen at run time where the CPU has AVX512-BF16 and every
//   input is bfloat16, otherwise the kernel runs as kBlas.
enum class SparseGemm { kVectorized, kBlas, kBf16Dot };

// Whether a kBf16Dot call on these dtypes takes the bfloat16 path on this CPU.
bool Bf16PathTaken(at::ScalarType q, at::ScalarType k, at::ScalarType v);

// Checks the shapes, dtypes and devices above; InvalidArgumentError naming the argument otherwise.
absl::Status CheckBlockSparseInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask, int64_t block_size, double scale);

// The fused kernel: per (head, query block) only the selected key blocks, online softmax over
// chunks of key blocks (memory O(block_size * chunk) per thread), parallel over heads and query
// blocks.
absl::StatusOr<at::Tensor> BlockSparseAttentionCpu(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, const at::Tensor& mask,
                                                   int64_t block_size, double scale,
                                                   SparseGemm gemm = SparseGemm::kBlas);

// The reference: materializes the [H, Lq, Lk] scores, masks them and applies softmax. For tests.
absl::StatusOr<at::Tensor> BlockSparseAttentionReference(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask, int64_t block_size,
                                                         double scale);

}  // namespace attnkit::kernels

#endif  // ATTNKIT_CORE_KERNELS_CPU_BLOCK_SPARSE_ATTENTION_H_
