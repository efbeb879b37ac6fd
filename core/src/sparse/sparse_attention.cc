#include "attnkit/sparse/sparse_attention.h"

#include <cmath>
#include <utility>
#include <vector>

#include <ATen/Functions.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cpu/block_sparse_attention.h"
#include "cpu/xattention_estimate.h"
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

absl::StatusOr<std::unique_ptr<SparseAttention>> SparseAttention::Create(
    const SparseOptions& options) {
  const SparseOptions& o = options;
  if (o.block_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("block_size: must be >= 1, got ", o.block_size));
  }
  if (o.last_query_size < 0 || o.recent_size < 0 || o.sink_size < 0 || o.min_sparse_length < 0) {
    return absl::InvalidArgumentError(
        "last_query_size, recent_size, sink_size, min_sparse_length: must be >= 0");
  }
  if ((o.mode == SparseMode::kAShape || o.mode == SparseMode::kTriShape) &&
      o.recent_size % o.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "recent_size: must be a multiple of block_size (", o.block_size, "), got ", o.recent_size));
  }
  if (o.mode == SparseMode::kXAttention) {
    if (o.stride < 1 || o.block_size % o.stride != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("xattention.stride: block_size (", o.block_size,
                       ") must be a multiple of stride, got ", o.stride));
    }
    if (!(o.threshold > 0 && o.threshold <= 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("xattention.threshold: must be in (0, 1], got ", o.threshold));
    }
    if (!o.per_head_thresholds.empty() && o.head_aggregation != HeadAggregation::kPerHead) {
      return absl::InvalidArgumentError(
          "xattention.per_head_thresholds: needs head_aggregation: PER_HEAD");
    }
    for (size_t i = 0; i < o.per_head_thresholds.size(); ++i) {
      const double t = o.per_head_thresholds[i];
      if (!(t > 0 && t <= 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("xattention.per_head_thresholds[", i, "]: must be in (0, 1], got ", t));
      }
    }
  }
  return std::unique_ptr<SparseAttention>(new SparseAttention(options));
}

int64_t SparseAttention::MaskHeads(int64_t num_heads) const {
  return options_.mode == SparseMode::kXAttention &&
                 options_.head_aggregation == HeadAggregation::kPerHead
             ? num_heads
             : 1;
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
      break;
  }
  return absl::FailedPreconditionError(
      "mode: XATTENTION masks depend on q and k; call BuildMask(q, k)");
}

absl::StatusOr<at::Tensor> SparseAttention::BuildMask(const at::Tensor& q,
                                                      const at::Tensor& k) const {
  ATTNKIT_RETURN_IF_ERROR(CheckQK(q, k));
  const int64_t q_len = q.size(1), k_len = k.size(1);
  if (options_.mode != SparseMode::kXAttention) return BuildStaticMask(q_len, k_len);
  ATTNKIT_ASSIGN_OR_RETURN(BlockGrid grid, BlockGrid::Make(q_len, k_len, options_.block_size));
  ATTNKIT_RETURN_IF_ERROR(
      kernels::CheckXAttentionInputs(q, k, options_.block_size, options_.stride));
  const int64_t mask_heads = MaskHeads(q.size(0));
  // Short prompts and single-query decode steps stay dense (as the reference does for q_len 1).
  if (q_len < options_.min_sparse_length || q_len <= 1) {
    return CausalBlockMask(grid).expand({mask_heads, grid.q_blocks, grid.k_blocks}).contiguous();
  }
  return XAttentionMask(q, k, grid);
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
  ATTNKIT_ASSIGN_OR_RETURN(at::Tensor scores, kernels::XAttentionEstimateCpu(
                                                  q, k, options_.block_size, options_.stride));
  if (options_.head_aggregation == HeadAggregation::kSum) scores = scores.sum(0, /*keepdim=*/true);
  return SelectXAttentionBlocks(scores, grid, thresholds, options_.last_query_size);
}

absl::StatusOr<at::Tensor> SparseAttention::Attention(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, const at::Tensor& mask,
                                                      double scale) const {
  return kernels::BlockSparseAttentionCpu(q, k, v, mask, options_.block_size, scale);
}

absl::StatusOr<at::Tensor> SparseAttention::Prefill(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale,
                                                    double* density) const {
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
