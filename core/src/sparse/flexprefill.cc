#include "sparse/flexprefill.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

namespace attnkit::sparse {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// score_cover_topk: per row, one more than the number of prefix sums of the values sorted in
// descending order that stay <= gamma (the comparison in float32, as PyTorch compares a float
// tensor with a Python float).
at::Tensor CoverCount(const at::Tensor& x, double gamma) {
  const at::Tensor sorted = std::get<0>(x.sort(-1, /*descending=*/true));
  return sorted.cumsum(-1).le(gamma).sum(-1) + 1;
}

// torch_bhn_sumpool: sums over blocks of `block` along the last dimension, zero-padded at the end.
at::Tensor SumPool(const at::Tensor& x, int64_t block) {
  const int64_t n = x.size(-1), blocks = CeilDiv(n, block);
  return at::constant_pad_nd(x, {0, blocks * block - n}, 0)
      .view({x.size(0), blocks, block})
      .sum(-1);
}

// sum_all_diagonal_matrix of mat [H, n, m] (n query rows that are the last n of the m keys): entry
// x sums the diagonal whose query-key distance is m - 1 - x, read through the same strided view of
// the left-padded matrix as the reference.
at::Tensor SumAllDiagonals(const at::Tensor& mat) {
  const int64_t h = mat.size(0), n = mat.size(1), m = mat.size(2);
  const at::Tensor padded = at::constant_pad_nd(mat, {n - 1, 0}, 0).contiguous();
  return padded.as_strided({h, m, n}, {n * (n + m - 1), 1, n + m}).sum(-1);
}

// Top `count[h]` (count <= k) indices of each row of x [H, n] as a bool set [H, n]; entries past a
// row's count are the reference's 0 padding, which the caller's always-chosen entry covers.
at::Tensor TopSet(const at::Tensor& x, const at::Tensor& count, int64_t k) {
  const at::Tensor top = std::get<1>(x.topk(k, -1));
  const at::Tensor keep = at::arange(k, count.options()).view({1, k}).lt(count.view({-1, 1}));
  return at::zeros(x.sizes(), x.options().dtype(at::kBool)).scatter_(1, top, keep);
}

}  // namespace

bool FlexPrefillDense(int64_t q_len, int64_t k_len, const SparseOptions& o) {
  if (q_len != k_len) return true;
  const int64_t block = o.block_size;
  const int64_t min_tokens = std::max(1, o.flex_min_budget);
  return q_len <= std::max<int64_t>(2 * block, CeilDiv(min_tokens, block) * block);
}

at::Tensor FlexPrefillBlocks(const at::Tensor& q, const at::Tensor& k, const SparseOptions& o) {
  const int64_t H = q.size(0), L = q.size(1), d = q.size(2), group = H / k.size(0);
  const int64_t B = o.block_size, nb = CeilDiv(L, B);
  // Budgets in blocks: ceil(min_budget / B) and min(ceil(max_budget / B), nb) as
  // flex_prefill_attention passes them (max_budget None: 2^31 - 1 tokens, so nb).
  const int64_t min_blocks = CeilDiv(std::max(1, o.flex_min_budget), B);
  const int64_t max_blocks =
      o.flex_max_budget > 0 ? std::min(CeilDiv(o.flex_max_budget, B), nb) : nb;
  const double root_d = std::sqrt(static_cast<double>(d));
  const float inf = std::numeric_limits<float>::infinity();
  const auto bools = q.options().dtype(at::kBool);
  const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat);

  // The last block of queries' attention over every key, causal inside the last block.
  const at::Tensor last_q = qf.narrow(1, L - B, B).div(root_d);  // [H, B, d]
  const at::Tensor keys = kf.repeat_interleave(group, 0);        // [H, L, d]
  at::Tensor qk = at::matmul(last_q, keys.transpose(1, 2));      // [H, B, L]
  qk.narrow(2, L - B, B).masked_fill_(at::ones({B, B}, bools).triu(1), -inf);
  qk = at::softmax(qk, -1);
  at::Tensor slash = SumAllDiagonals(qk).div(static_cast<double>(B));  // [H, L]
  at::Tensor vertical = qk.mean(1);                                    // [H, L]

  // Vertical and slash counts: the tokens covering gamma, divided by 128 whatever the block size
  // (the reference's quirk), plus one; then clamped to [min_blocks, max_blocks].
  at::Tensor num_v = CoverCount(vertical, o.flex_gamma)
                         .div(128, "floor")
                         .add(1)
                         .clamp_min(min_blocks)
                         .clamp_max(max_blocks);
  at::Tensor num_s = CoverCount(slash, o.flex_gamma)
                         .div(128, "floor")
                         .add(1)
                         .clamp_min(min_blocks)
                         .clamp_max(max_blocks);
  at::Tensor vpool = SumPool(vertical, B), spool = SumPool(slash, B);  // [H, nb]

  // Query-aware heads: the last block's mean query against the keys' block means, softmax over
  // blocks, within tau (square-root Jensen-Shannon) of the pooled vertical distribution.
  const int64_t pad = nb * B - L;
  at::Tensor counts = at::full({nb}, static_cast<double>(B), qf.options());
  counts[nb - 1] = static_cast<double>(B - pad);
  const at::Tensor avg_k = at::constant_pad_nd(kf, {0, 0, 0, pad}, 0)
                               .view({kf.size(0), nb, B, d})
                               .sum(2)
                               .div(counts.view({1, nb, 1}))
                               .repeat_interleave(group, 0);  // [H, nb, d]
  const at::Tensor avg_qk = at::softmax(
      at::matmul(last_q.mean(1, /*keepdim=*/true), avg_k.transpose(1, 2)).squeeze(1), -1);
  const at::Tensor mid = (avg_qk + vpool) / 2;
  const at::Tensor js =
      (0.5 * (avg_qk * (avg_qk / mid).log()).sum(-1) + 0.5 * (vpool * (vpool / mid).log()).sum(-1))
          .sqrt();
  const at::Tensor aware = js.lt(o.flex_tau);  // NaN: not query-aware, as in the reference
  num_v.masked_fill_(aware, min_blocks);
  num_s.masked_fill_(aware, min_blocks);

  // The first column block and the main diagonal always; then each head's top blocks.
  vpool.select(1, 0).fill_(inf);
  spool.select(1, nb - 1).fill_(inf);
  const at::Tensor v_set = TopSet(vpool, num_v, std::min(num_v.max().item<int64_t>(), nb));
  // Slash block x is the diagonal nb - 1 - x blocks below the main one.
  const at::Tensor s_set = TopSet(spool, num_s, std::min(num_s.max().item<int64_t>(), nb)).flip(1);
  const at::Tensor rows = at::arange(nb, q.options().dtype(at::kLong)).view({nb, 1});
  const at::Tensor cols = rows.view({1, nb});
  const at::Tensor causal = cols.le(rows);
  at::Tensor mask = v_set.unsqueeze(1).logical_and(causal);
  const at::Tensor offsets = (rows - cols).clamp_min(0).flatten();
  mask.logical_or_(s_set.index_select(1, offsets).view({H, nb, nb}).logical_and(causal));

  if (aware.any().item<bool>()) {
    // The blocks whose block attention (block-mean queries against block-mean keys, block-causal,
    // softmax per row) covers gamma * nb in descending order: score_cover_idx keeps those whose
    // prefix sum stays <= the target (the others become the reference's 0 padding, block (0, 0)).
    at::Tensor avg_q = at::constant_pad_nd(qf, {0, 0, 0, pad}, 0).view({H, nb, B, d}).mean(2);
    avg_q.select(1, nb - 1).mul_(static_cast<double>(B)).div_(static_cast<double>(B - pad));
    at::Tensor attn = at::matmul(avg_q.div(root_d), avg_k.transpose(1, 2));
    attn.masked_fill_(causal.logical_not(), -inf);
    attn = at::softmax(attn, -1).view({H, nb * nb});
    const auto [sorted, order] = attn.sort(-1, /*descending=*/true);
    const at::Tensor keep = sorted.cumsum(-1).le(o.flex_gamma * static_cast<double>(nb));
    const at::Tensor chosen =
        at::zeros({H, nb * nb}, bools).scatter_(1, order, keep).view({H, nb, nb});
    mask.logical_or_(chosen.logical_and(aware.view({H, 1, 1})));
  }
  mask.select(1, 0).select(1, 0).fill_(true);  // block (0, 0): the reference's padding index
  return mask;
}

}  // namespace attnkit::sparse
