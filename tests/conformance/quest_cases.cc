// Quest sparse-decode cases (kind "quest", written by cases/generate_quest.py from the reference's
// own decode attention in mit-han-lab/Quest): a multi-head cache of L tokens, one decode query, and
// the reference's output over the chunks it chose. The case passes when a session with
// sparse_decode { token_budget } and page_size = chunk_size, prefilled with the first L - 1
// tokens, gives the same output for the decode step (within 1e-5: the reference's matmul and the
// paged kernel add in different orders); a different choice of chunks moves it far more.
// Host store only (sparse decode has no CUDA path yet): these cases run on the CPU.
#include <memory>
#include <string>

#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>

#include "absl/strings/str_cat.h"
#include "attnkit/attnkit.h"
#include "conformance.h"
#include "dlpack_util.h"
#include "support/tensor_io.h"

namespace attnkit::conformance {
namespace {

using testing::DLView;

absl::Status RunQuestCase(const SafetensorsFile& file, const JsonValue& config) {
  int64_t heads = 0, dim = 0, length = 0, chunk = 0, budget = 0;
  for (auto [key, field] : {std::pair<const char*, int64_t*>{"num_heads", &heads},
                            {"head_dim", &dim},
                            {"length", &length},
                            {"chunk_size", &chunk},
                            {"token_budget", &budget}}) {
    auto v = ConfigNumber(config, key);
    if (!v.ok()) return v.status();
    *field = static_cast<int64_t>(*v);
  }
  auto q = LoadTensor(file, "q");
  auto k = LoadTensor(file, "k");
  auto v = LoadTensor(file, "v");
  auto want = LoadTensor(file, "out");
  auto selected = LoadTensor(file, "selected");
  for (const auto* t : {&q, &k, &v, &want, &selected}) {
    if (!t->ok()) return t->status();
  }
  if (q->sizes() != at::IntArrayRef{heads, dim} ||
      k->sizes() != at::IntArrayRef{heads, length, dim} || v->sizes() != k->sizes() ||
      want->sizes() != q->sizes() || selected->sizes() != at::IntArrayRef{heads, length}) {
    return absl::InvalidArgumentError(
        "q / k / v / out / selected: shapes disagree with the config");
  }
  const std::string text =
      absl::StrCat("num_layers: 1 num_heads: ", heads, " num_kv_heads: ", heads, " head_dim: ", dim,
                   " page_size: ", chunk, " sparse_decode { token_budget: ", budget, " }");
  auto created = CreateSession(text);
  if (!created.ok()) return created.status();
  SessionHandle session = std::move(*created);
  // The prompt: its queries only shape the prefill's own output, which is not compared.
  const at::Tensor prompt_q = at::zeros({1, heads, length - 1, dim});
  const at::Tensor prompt_k = k->narrow(1, 0, length - 1).unsqueeze(0).contiguous();
  const at::Tensor prompt_v = v->narrow(1, 0, length - 1).unsqueeze(0).contiguous();
  at::Tensor prompt_out = at::empty_like(prompt_q);
  {
    DLView qv(prompt_q), kv(prompt_k), vv(prompt_v), ov(prompt_out);
    if (absl::Status s = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov), "prefill");
        !s.ok()) {
      return s;
    }
  }
  const at::Tensor step_q = q->view({1, heads, 1, dim}).contiguous();
  const at::Tensor step_k = k->narrow(1, length - 1, 1).unsqueeze(0).contiguous();
  const at::Tensor step_v = v->narrow(1, length - 1, 1).unsqueeze(0).contiguous();
  at::Tensor out = at::empty_like(step_q);
  {
    DLView qv(step_q), kv(step_k), vv(step_v), ov(out);
    if (absl::Status s = FromC(attnkit_session_attend(session.get(), 0, qv, kv, vv, ov), "decode");
        !s.ok()) {
      return s;
    }
  }
  const at::Tensor got = out.view({heads, dim});
  const double diff = (got - *want).abs().max().item<double>();
  if (!(diff <= 1e-5)) {
    return absl::InternalError(absl::StrCat("decode output differs from the reference's by up to ",
                                            diff, " (reference ",
                                            selected->to(at::kLong).sum().item<int64_t>(), " of ",
                                            heads * length, " tokens attended)"));
  }
  return absl::OkStatus();
}

}  // namespace

ATTNKIT_CONFORMANCE_KIND("quest", RunQuestCase);

}  // namespace attnkit::conformance
