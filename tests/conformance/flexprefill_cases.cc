// FlexPrefill cases (kind "flexprefill", written by cases/generate_flexprefill.py from the authors'
// own get_active_blocks and torch_block_wise_attention, bytedance/FlexPrefill): structured q / k /
// v of one prompt, the active blocks of every query head [H, nb, nb] and the attention over them.
// The case passes when a SparseAttention with mode FLEXPREFILL and the case's gamma, tau, budgets
// and block size builds the same causal blocks for every head (through the C ABI, on the runner's
// device) and its attention over them matches the reference's output within 1e-4.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "attnkit/attnkit_sparse.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

absl::Status RunFlexPrefillCase(const SafetensorsFile& file, const JsonValue& config) {
  double number[6];
  const char* keys[] = {"block_size", "gamma", "tau", "min_budget", "max_budget", "num_heads"};
  for (int i = 0; i < 6; ++i) {
    auto v = ConfigNumber(config, keys[i]);
    if (!v.ok()) return v.status();
    number[i] = *v;
  }
  const int64_t block = static_cast<int64_t>(number[0]), heads = static_cast<int64_t>(number[5]);
  const std::string text = absl::StrFormat(
      "mode: FLEXPREFILL block_size: %d flexprefill { gamma: %.17g tau: %.17g min_budget: %d "
      "max_budget: %d }",
      block, number[1], number[2], static_cast<int64_t>(number[3]),
      static_cast<int64_t>(number[4]));
  attnkit_sparse_attention* raw = nullptr;
  if (absl::Status s =
          FromC(attnkit_sparse_attention_create_from_text(text.data(), text.size(), &raw));
      !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("create: ", s.message()));
  }
  std::unique_ptr<attnkit_sparse_attention, void (*)(attnkit_sparse_attention*)> sparse(
      raw, attnkit_sparse_attention_free);
  auto q = LoadTensor(file, "q");
  auto k = LoadTensor(file, "k");
  auto v = LoadTensor(file, "v");
  auto expected = LoadTensor(file, "block_mask");
  auto want = LoadTensor(file, "output");
  for (const auto* t : {&q, &k, &v, &expected, &want}) {
    if (!t->ok()) return t->status();
  }
  const int64_t n = q->size(1), nb = (n + block - 1) / block;
  if (q->dim() != 3 || q->size(0) != heads || k->dim() != 3 || k->size(1) != n ||
      v->sizes() != k->sizes() || expected->sizes() != at::IntArrayRef{heads, nb, nb} ||
      want->sizes() != q->sizes()) {
    return absl::InvalidArgumentError("q / k / v / block_mask / output: shapes disagree");
  }
  const at::Tensor qd = OnCaseDevice(q->unsqueeze(0).contiguous());
  const at::Tensor kd = OnCaseDevice(k->unsqueeze(0).contiguous());
  const at::Tensor vd = OnCaseDevice(v->unsqueeze(0).contiguous());
  int64_t mask_heads = 0, q_blocks = 0, k_blocks = 0;
  if (absl::Status s = FromC(attnkit_sparse_attention_mask_shape(
          sparse.get(), heads, n, n, &mask_heads, &q_blocks, &k_blocks));
      !s.ok()) {
    return s;
  }
  if (mask_heads != heads || q_blocks != nb || k_blocks != nb) {
    return absl::InternalError(absl::StrCat("mask_shape: [", mask_heads, ", ", q_blocks, ", ",
                                            k_blocks, "], expected [", heads, ", ", nb, ", ", nb,
                                            "]"));
  }
  at::Tensor mask =
      at::zeros({1, heads, nb, nb}, at::TensorOptions().dtype(at::kBool).device(CaseDevice()));
  {
    DLView qv(qd), kv(kd), mv(mask);
    if (absl::Status s = FromC(attnkit_sparse_attention_build_mask(sparse.get(), qv, kv, mv));
        !s.ok()) {
      return absl::InternalError(absl::StrCat("build_mask: ", s.message()));
    }
  }
  // Attention reads the causal blocks only: those are compared.
  const at::Tensor causal = at::ones({nb, nb}, at::kBool).tril();
  const at::Tensor got = mask.cpu()[0].logical_and(causal);
  const at::Tensor ref = expected->to(at::kBool).logical_and(causal);
  for (int64_t h = 0; h < heads; ++h) {
    if (!got[h].equal(ref[h])) {
      const at::Tensor diff = got[h].ne(ref[h]).nonzero();
      const int64_t r = diff[0][0].item<int64_t>(), c = diff[0][1].item<int64_t>();
      return absl::InternalError(absl::StrCat(
          "block_mask differs in ", diff.size(0), " blocks of head ", h, ", first at (", r, ", ", c,
          "): got ", got[h][r][c].item<bool>(), "; got ", got[h].sum().item<int64_t>(),
          " blocks, expected ", ref[h].sum().item<int64_t>()));
    }
  }
  at::Tensor out = at::zeros({1, heads, n, q->size(2)},
                             at::TensorOptions().dtype(at::kFloat).device(CaseDevice()));
  {
    DLView qv(qd), kv(kd), vv(vd), mv(mask), ov(out);
    if (absl::Status s = FromC(
            attnkit_sparse_attention_attention(sparse.get(), qv, kv, vv, mv, /*scale=*/0.0, ov));
        !s.ok()) {
      return absl::InternalError(absl::StrCat("attention: ", s.message()));
    }
  }
  const double err = (out.cpu()[0] - *want).abs().max().item<double>();
  if (!(err <= 1e-4)) {
    return absl::InternalError(absl::StrCat("output: max abs error ", err, " > 1e-4"));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("flexprefill", RunFlexPrefillCase);

}  // namespace attnkit::conformance
