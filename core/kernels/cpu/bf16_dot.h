// AVX512-BF16 block products for the block-sparse attention kernel on bfloat16 inputs
// (VDPBF16PS: pairs of bfloat16 multiplied and added into float32 lanes). Compiled for that ISA
// alone (bf16_dot.cc) and called only where the CPU has it (Bf16DotAvailable(), checked once at
// run time); elsewhere the kernel converts to float32 and runs its float paths.
//
// Layouts (uint16 are bfloat16 bit patterns; d and n need not be even, pairs are zero-padded):
// - PackKeysBf16: keys [n, d] (rows `ldk` apart) as panels of 16 keys, each [ceil(d/2)][16] pairs:
//   the operand of ScoresBf16.
// - PackValuesBf16: values [n, dv] (rows `ldv` apart) as panels of 16 value columns, each
//   [ceil(n/2)][16] pairs of consecutive keys: the operand of AccumulatePVBf16.
#ifndef ATTNKIT_CORE_KERNELS_CPU_BF16_DOT_H_
#define ATTNKIT_CORE_KERNELS_CPU_BF16_DOT_H_

#include <cstdint>

namespace attnkit::kernels::bf16_dot {

// True when this CPU has AVX512-BF16 (and AVX512F/BW/VL), so the functions below may run.
bool Bf16DotAvailable();

// uint32 words (pairs) needed for PackKeysBf16 of n keys of d channels.
int64_t PackedKeysWords(int64_t n, int64_t d);
// uint32 words needed for PackValuesBf16 of n keys of dv channels.
int64_t PackedValuesWords(int64_t n, int64_t dv);

// Appends keys [n, d] to a packed operand that already holds `offset` keys (a multiple of 16,
// or 0), so a chunk can be packed block by block.
void PackKeysBf16(const uint16_t* k, int64_t ldk, int64_t n, int64_t d, int64_t offset,
                  int64_t total, uint32_t* packed);
void PackValuesBf16(const uint16_t* v, int64_t ldv, int64_t n, int64_t dv, uint32_t* packed);

// scores[i, j] = scale * sum_c q[i, c] k[j, c] for i < m, j < n (float32 out, rows `lds` apart);
// q [m, d] bfloat16 rows `ldq` apart; k packed by PackKeysBf16 for `n` keys.
void ScoresBf16(int64_t m, int64_t n, int64_t d, const uint16_t* q, int64_t ldq,
                const uint32_t* kpacked, float scale, float* scores, int64_t lds);

// acc[i, c] += sum_j bf16(p[i, j]) v[j, c] for i < m, c < dv: p float32 [m, n] rows `ldp` apart
// (rounded to bfloat16, as FlashAttention rounds its probabilities before the second product);
// v packed by PackValuesBf16 for `n` keys; acc rows `lda` apart.
void AccumulatePVBf16(int64_t m, int64_t n, int64_t dv, const float* p, int64_t ldp,
                      const uint32_t* vpacked, float* acc, int64_t lda);

}  // namespace attnkit::kernels::bf16_dot

#endif  // ATTNKIT_CORE_KERNELS_CPU_BF16_DOT_H_
