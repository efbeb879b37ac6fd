#include "visual/visual_device.h"

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <c10/core/ScalarType.h>

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "visual/visual_math.h"

namespace attnkit::visual {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// 1 when every value of `t` is finite, else 0: [1] int64 on t's device (no synchronization).
at::Tensor AllFinite(const at::Tensor& t) {
  return at::isfinite(t).all().to(at::kLong).reshape({1});
}

// The cosine similarity of the rows of `features` by one GEMM, made exactly symmetric by mirroring
// its upper triangle (the host's symmetric GEMM is): a BLAS GEMM need not round S_ab and S_ba
// alike, and exact ties such as DivPrune's between two mutual nearest neighbours must stay ties
// (first index wins) rather than be decided by rounding.
at::Tensor SymmetricSimilarity(const at::Tensor& features) {
  at::Tensor sim = CosineSimilarity(features);
  at::Tensor lower = at::triu(sim, 1).t();
  return sim.triu_().add_(lower);
}

// The one device-to-host copy of a selection: every problem's checks and picks, packed.
std::vector<int64_t> ToHost(const std::vector<at::Tensor>& packed) {
  at::Tensor host = at::cat(packed).to(at::kCPU).contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + host.numel());
}

}  // namespace

GreedyTrace DppGreedyMapSteps(const at::Tensor& kernel, int64_t k) {
  const int64_t n = kernel.size(0);
  at::Tensor d2 = at::diagonal(kernel).clone();
  at::Tensor c = at::empty({k, n}, kernel.options());  // row i: c_i, the Cholesky row of step i
  std::vector<at::Tensor> order, gains;
  order.reserve(k);
  gains.reserve(k);
  for (int64_t i = 0; i < k; ++i) {
    // j stays on the device: it only ever feeds gathers and scatters, never a host branch.
    at::Tensor j = at::argmax(d2).reshape({1});
    at::Tensor dj = d2.index_select(0, j);
    at::Tensor ci = c.narrow(0, i, 1);  // [1, N]
    at::Tensor row = kernel.index_select(0, j);
    if (i == 0) {
      ci.copy_(row);
    } else {
      // L[j] - sum_t c_t[j] c_t in one GEMM: the [1, i] row of c_t[j] times the rows c_0..c_{i-1}.
      at::Tensor prev = c.narrow(0, 0, i);
      at::addmm_out(ci, row, prev.index_select(1, j).t(), prev, /*beta=*/1, /*alpha=*/-1);
    }
    ci.div_(at::sqrt(dj + 1e-5));
    // e*e rounded before the subtraction, as the host kernel (no fused multiply-add).
    d2.sub_(at::square(ci).reshape({n}));
    d2.index_fill_(0, j, kNegInf);
    order.push_back(std::move(j));
    gains.push_back(std::move(dj));
  }
  return {at::cat(order), at::cat(gains)};
}

at::Tensor GuardedCount(const at::Tensor& gains) {
  // stop[i]: the guard ends the selection before step i (NaN included); never before step 0.
  at::Tensor stop = at::logical_not(at::ge(gains, 1e-10));  // 1e-10 compared in float32
  stop.narrow(0, 0, 1).fill_(false);
  // Steps before the first stop: those whose running count of stops is still 0.
  return at::eq(at::cumsum(stop, 0, at::kLong), 0).sum();
}

at::Tensor MaxMinDiversitySteps(const at::Tensor& similarity, int64_t k) {
  const int64_t n = similarity.size(0);
  at::Tensor dist = 1.0 - similarity;
  at::Tensor j;
  if (n == 1) {
    j = at::zeros({1}, similarity.options().dtype(at::kLong));
  } else {
    // Per column, the second-smallest distance (equal values count twice, as torch.topk).
    at::Tensor second =
        std::get<0>(at::topk(dist, 2, /*dim=*/0, /*largest=*/false, /*sorted=*/true)).select(0, 1);
    j = at::argmax(second).reshape({1});
  }
  std::vector<at::Tensor> order{j};
  order.reserve(k);
  at::Tensor nearest = at::full({n}, std::numeric_limits<double>::infinity(), dist.options());
  for (int64_t i = 1; i < k; ++i) {
    nearest = at::minimum(nearest, dist.index_select(0, j).reshape({n}));
    nearest.index_fill_(0, j, kNegInf);  // earlier picks stay -inf: min(-inf, v) = -inf
    j = at::argmax(nearest).reshape({1});
    order.push_back(j);
  }
  return at::cat(order);
}

absl::StatusOr<std::vector<std::vector<int64_t>>> SelectCdprunerOnDevice(
    absl::Span<const SelectionProblem> problems, const at::Tensor& text,
    const VisualOptions& options) {
  // Per problem: [relevance finite, similarity finite, kernel finite, count, picks (k)], after the
  // text's flag. Everything is queued on the device and read back in one copy: the gain guard
  // cannot stop the loop early without a host check per step, so all k steps run and the count
  // of the steps the guard keeps (GuardedCount) truncates the picks on the host.
  std::vector<at::Tensor> packed{AllFinite(text)};
  for (const SelectionProblem& p : problems) {
    at::Tensor rel =
        ApplyTheta(options.fast_kernel ? RelevanceFast(p.embeds, text, options.positive_relevance)
                                       : Relevance(p.embeds, text, options.positive_relevance),
                   options.theta);
    at::Tensor kernel = SymmetricSimilarity(p.features);  // a new [N, N] tensor, scaled in place
    at::Tensor sim_finite = AllFinite(at::diagonal(kernel));
    // L = (r_a * S_ab) * r_b, rounded as the host kernel forms it.
    kernel.mul_(rel.unsqueeze(1)).mul_(rel.unsqueeze(0));
    GreedyTrace trace = DppGreedyMapSteps(kernel, p.k);
    at::Tensor count = options.gain_guard ? GuardedCount(trace.gains).reshape({1})
                                          : at::full({1}, p.k, trace.order.options());
    packed.push_back(
        at::cat({AllFinite(rel), sim_finite, AllFinite(at::diagonal(kernel)), count, trace.order}));
  }
  const std::vector<int64_t> host = ToHost(packed);
  if (host[0] == 0) return NonFiniteError("text_embeds");
  std::vector<std::vector<int64_t>> picks(problems.size());
  size_t offset = 1;
  for (size_t i = 0; i < problems.size(); ++i) {
    if (host[offset] == 0) return NonFiniteError("relevance (image_embeds)");
    if (host[offset + 1] == 0) return NonFiniteError("similarity (image_features)");
    if (host[offset + 2] == 0) return NonFiniteError("kernel");
    const int64_t count = host[offset + 3];
    picks[i].assign(host.begin() + offset + 4, host.begin() + offset + 4 + count);
    offset += 4 + problems[i].k;
  }
  return picks;
}

absl::StatusOr<std::vector<std::vector<int64_t>>> SelectDivPruneOnDevice(
    absl::Span<const SelectionProblem> problems) {
  // Per problem: [similarity finite, picks (k)], read back in one copy.
  std::vector<at::Tensor> packed;
  for (const SelectionProblem& p : problems) {
    at::Tensor sim = SymmetricSimilarity(p.features);
    packed.push_back(at::cat({AllFinite(at::diagonal(sim)), MaxMinDiversitySteps(sim, p.k)}));
  }
  const std::vector<int64_t> host = ToHost(packed);
  std::vector<std::vector<int64_t>> picks(problems.size());
  size_t offset = 0;
  for (size_t i = 0; i < problems.size(); ++i) {
    if (host[offset] == 0) return NonFiniteError("similarity (image_features)");
    picks[i].assign(host.begin() + offset + 1, host.begin() + offset + 1 + problems[i].k);
    offset += 1 + problems[i].k;
  }
  return picks;
}

}  // namespace attnkit::visual
