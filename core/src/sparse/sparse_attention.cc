#include "attnkit/sparse/sparse_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "attnkit/config_parser.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"
#include "sparse/flexprefill.h"
#include "sparse/sparse_backend.h"
#include "util/status_macros.h"

namespace attnkit::sparse {
namespace {

std::string Shape(at::IntArrayRef s) { return absl::StrCat("[", absl::StrJoin(s, ", "), "]"); }

absl::Status CheckQK(const at::Tensor& q, const at::Tensor& k) {
  const std::pair<const at::Tensor*, const char*> inputs[] = {{&q, "q"}, {&k, "k"}};
  for (const auto& [t, name] : inputs) {
    if (!t->defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": undefined tensor"));
    if (t->dim() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": expected rank 3 [heads, tokens, head_dim], got shape ", Shape(t->sizes())));
    }
  }
  if (q.size(1) > k.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("q: q_len (", q.size(1), ") must be <= k_len (", k.size(1),
                     "): the queries are the last positions of the keys"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<at::Tensor> BlockSparseAttentionTensorOps(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v,
                                                         const at::Tensor& mask_in,
                                                         int64_t block_size, double scale) {
  ATTNKIT_RETURN_IF_ERROR(kernels::CheckBlockSparseInputs(q, k, v, mask_in, block_size, scale));
  const int64_t H = q.size(0), Lq = q.size(1), Lk = k.size(1), G = H / k.size(0);
  const at::Device device = q.device();
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor kf = k.to(at::kFloat).repeat_interleave(G, 0);
  const at::Tensor vf = v.to(at::kFloat).repeat_interleave(G, 0);
  const at::Tensor mask = mask_in.to(at::kBool);
  at::Tensor out = at::empty({H, Lq, v.size(2)}, q.options().dtype(at::kFloat));
  // Query chunks of whole blocks whose scores stay under about 256 MiB.
  const int64_t budget_rows = (int64_t{64} << 20) / std::max<int64_t>(1, H * Lk);
  const int64_t chunk = std::max<int64_t>(1, budget_rows / block_size) * block_size;
  const at::Tensor cols = at::arange(Lk, longs).view({1, Lk});
  for (int64_t q0 = 0; q0 < Lq; q0 += chunk) {
    const int64_t n = std::min(chunk, Lq - q0);
    const int64_t r0 = q0 / block_size, r1 = (q0 + n + block_size - 1) / block_size;
    const at::Tensor allowed =
        mask.narrow(1, r0, r1 - r0)
            .repeat_interleave(block_size, 1)
            .narrow(1, 0, n)
            .repeat_interleave(block_size, 2)
            .narrow(2, 0, Lk)
            .logical_and(
                cols.le(at::arange(q0, q0 + n, longs).view({n, 1}) + (Lk - Lq)).unsqueeze(0));
    at::Tensor scores = at::matmul(q.narrow(1, q0, n).to(at::kFloat), kf.transpose(1, 2));
    scores.mul_(scale).masked_fill_(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    at::Tensor probs = at::softmax(scores, -1);
    probs.masked_fill_(probs.isnan(), 0.0f);  // rows that see no key give zeros
    out.narrow(1, q0, n).copy_(at::matmul(probs, vf));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SparseAttention>> SparseAttention::Create(
    const SparseOptions& options) {
  if (absl::Status s = ValidateSparseOptions(options); !s.ok()) return s;
  return std::unique_ptr<SparseAttention>(new SparseAttention(options));
}

int64_t SparseAttention::MaskHeads(int64_t num_heads) const {
  const bool per_head = options_.mode == SparseMode::kFlexPrefill ||
                        (options_.mode == SparseMode::kXAttention &&
                         options_.head_aggregation == HeadAggregation::kPerHead);
  return per_head ? num_heads : 1;
}

absl::StatusOr<at::Tensor> SparseAttention::BuildStaticMask(int64_t q_len, int64_t k_len) const {
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options_.block_size));
  if (q_len < options_.min_sparse_length) return CausalBlockMask(grid);
  switch (options_.mode) {
    case SparseMode::kDense:
      return CausalBlockMask(grid);
    case SparseMode::kAShape:
      return AShapeMask(grid, options_.sink_size, options_.recent_size);
    case SparseMode::kTriShape:
      return TriShapeMask(grid, options_.sink_size, options_.recent_size, options_.last_query_size);
    case SparseMode::kXAttention:
    case SparseMode::kFlexPrefill:
      break;
  }
  return absl::FailedPreconditionError(
      "mode: XATTENTION and FLEXPREFILL masks depend on q and k; call BuildMask(q, k)");
}

absl::StatusOr<at::Tensor> SparseAttention::BuildMask(const at::Tensor& q,
                                                      const at::Tensor& k) const {
  ATTNKIT_RETURN_IF_ERROR(CheckQK(q, k));
  const int64_t q_len = q.size(1), k_len = k.size(1);
  if (options_.mode == SparseMode::kFlexPrefill) return FlexPrefillMask(q, k);
  if (options_.mode != SparseMode::kXAttention) {
    const bool shaped =
        options_.mode == SparseMode::kAShape || options_.mode == SparseMode::kTriShape;
    if (shaped && q_len >= options_.min_sparse_length) {
      // Built from the lengths where the backend puts it (on a CUDA device: there).
      return RunShapeMask(ChooseShapeListsBackend(q), options_, q_len, k_len, q.device());
    }
    ATTNKIT_ASSIGN_OR_RETURN(at::Tensor mask, BuildStaticMask(q_len, k_len));
    return mask.to(q.device());
  }
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options_.block_size));
  ATTNKIT_RETURN_IF_ERROR(
      kernels::CheckXAttentionInputs(q, k, options_.block_size, options_.stride));
  const int64_t mask_heads = MaskHeads(q.size(0));
  // Short prompts and single-query decode steps stay dense (as the reference does for q_len 1).
  if (q_len < options_.min_sparse_length || q_len <= 1) {
    return CausalBlockMask(grid)
        .expand({mask_heads, grid.q_blocks, grid.k_blocks})
        .contiguous()
        .to(q.device());
  }
  return XAttentionMask(q, k, grid);
}

absl::StatusOr<at::Tensor> SparseAttention::FlexPrefillMask(const at::Tensor& q,
                                                            const at::Tensor& k) const {
  const int64_t q_len = q.size(1), k_len = k.size(1), heads = q.size(0);
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options_.block_size));
  if (k.size(0) < 1 || heads % k.size(0) != 0 || q.size(2) != k.size(2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("k: expected [kv_heads, tokens, head_dim] with kv_heads dividing q's ", heads,
                     " heads and q's head_dim ", q.size(2), ", got shape ", Shape(k.sizes())));
  }
  // Short prompts, prompts continuing a cache (the reference takes q_len == k_len only) and the
  // reference's own dense range attend to every causal block.
  if (q_len < options_.min_sparse_length || FlexPrefillDense(q_len, k_len, options_)) {
    return CausalBlockMask(grid)
        .expand({heads, grid.q_blocks, grid.k_blocks})
        .contiguous()
        .to(q.device());
  }
  return FlexPrefillBlocks(q, k, options_);
}

absl::StatusOr<at::Tensor> SparseAttention::XAttentionMask(const at::Tensor& q, const at::Tensor& k,
                                                           const BlockGrid& grid) const {
  const int64_t heads = q.size(0);
  std::vector<double> thresholds{options_.threshold};
  if (options_.head_aggregation == HeadAggregation::kPerHead &&
      !options_.per_head_thresholds.empty()) {
    if (static_cast<int64_t>(options_.per_head_thresholds.size()) != heads) {
      return absl::InvalidArgumentError(absl::StrCat("xattention.per_head_thresholds: has ",
                                                     options_.per_head_thresholds.size(),
                                                     " entries but q has ", heads, " heads"));
    }
    thresholds = options_.per_head_thresholds;
  }
  ATTNKIT_ASSIGN_OR_RETURN(
      at::Tensor scores,
      RunEstimate(ChooseEstimateBackend(q, k, options_.block_size, options_.stride), q, k,
                  options_.block_size, options_.stride));
  if (options_.head_aggregation == HeadAggregation::kSum) scores = scores.sum(0, /*keepdim=*/true);
  return SelectXAttentionBlocks(scores, grid, thresholds, options_.last_query_size);
}

absl::StatusOr<at::Tensor> SparseAttention::Attention(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, const at::Tensor& mask,
                                                      double scale) const {
  return RunAttention(ChooseAttentionBackend(q, k, v, options_.block_size), q, k, v, mask,
                      options_.block_size, scale);
}

absl::StatusOr<at::Tensor> SparseAttention::Prefill(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale,
                                                    double* density) const {
  // A-shape and Tri-shape on the CUDA kernels: the lists come straight from the lengths.
  const bool shaped =
      options_.mode == SparseMode::kAShape || options_.mode == SparseMode::kTriShape;
  if (shaped && ChooseAttentionBackend(q, k, v, options_.block_size) == SparseBackend::kCuda &&
      ChooseShapeListsBackend(q) == SparseBackend::kCuda &&
      q.size(1) >= options_.min_sparse_length) {
    ATTNKIT_RETURN_IF_ERROR(CheckQK(q, k));
    return RunShapeAttentionCuda(options_, q, k, v, scale, density);
  }
  ATTNKIT_ASSIGN_OR_RETURN(at::Tensor mask, BuildMask(q, k));
  ATTNKIT_ASSIGN_OR_RETURN(at::Tensor out, Attention(q, k, v, mask.to(q.device()), scale));
  if (density != nullptr) {
    ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid,
                             BlockGrid::Make(q.size(1), k.size(1), options_.block_size));
    *density = MaskDensity(mask, grid);
  }
  return out;
}

}  // namespace attnkit::sparse
